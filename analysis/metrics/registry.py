"""Metrics by name: a registry name, `auto`, or the user's own `module:callable`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch

from analysis.errors import WorkbenchError, first_line
from analysis.metrics.base import AUTO, HIGHER, LOWER, Metric
from analysis.metrics.builtin import METRICS
from analysis.model.outputs import is_class_scores


def metric_choices() -> tuple[str, ...]:
    """`auto` and every registered metric's name."""
    return (AUTO, *METRICS.names())


class _CallableMetric(Metric):
    """A user's `module:callable`: called per batch as `fn(outputs, reference, labels)` (a single output is
    passed as a tensor, several as a dict), returning one score per sample or the batch's mean."""

    fn: ClassVar[Callable[..., Any]]

    def update(self, outputs, labels, reference) -> None:
        single = len(outputs) == 1
        out = next(iter(outputs.values())) if single else dict(outputs)
        ref = None if reference is None else (next(iter(reference.values())) if single else dict(reference))
        try:
            score = torch.as_tensor(type(self).fn(out, ref, labels), dtype=torch.float64).detach().cpu()
        except WorkbenchError:
            raise
        except Exception as exc:
            raise WorkbenchError(
                f"metric {self.name} failed: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        n = len(next(iter(outputs.values())))
        self.total += float(score.sum().item()) if score.ndim else float(score.item()) * n
        self.count += n


def _import_metric(spec: str) -> type[Metric]:
    module_name, _, attr = spec.rpartition(":")
    top = module_name.split(".")[0]
    if not module_name or not attr or top in sys.stdlib_module_names or top in ("builtins", "analysis"):
        raise WorkbenchError(
            f"unknown metric {spec!r}: use one of {', '.join(metric_choices())} or your own module:callable"
        )
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise WorkbenchError(f"cannot load metric {spec!r}: {first_line(exc)}") from exc
    if isinstance(target, type) and issubclass(target, Metric):
        return target
    if not callable(target):
        raise WorkbenchError(f"metric {spec!r} is not callable")
    direction = getattr(target, "direction", HIGHER)
    if direction not in (HIGHER, LOWER):
        raise WorkbenchError(f"metric {spec!r}: direction must be 'higher' or 'lower', got {direction!r}")
    attrs = {"name": spec, "label": attr, "direction": direction, "fn": staticmethod(target)}
    return type(f"Metric_{attr}", (_CallableMetric,), attrs)


def get_metric(name: str) -> type[Metric]:
    """The metric class called `name` (a registry name or `module:callable`); unknown names are one line
    listing the known ones. `auto` is resolved by `Scoring`, not here."""
    key = name.strip()
    if key.lower() in METRICS:
        return METRICS[key.lower()]
    if ":" in key:
        return _import_metric(key)
    raise WorkbenchError(
        f"unknown metric {name!r}: use one of {', '.join(metric_choices())} or module:callable"
    )


def check_metric_name(name: str | None) -> str:
    """`name` if it is `auto`, a registry name or looks like `module:callable` (loaded later)."""
    key = (name or AUTO).strip()
    if key.lower() in metric_choices():
        return key.lower()
    if ":" in key:
        return key
    raise WorkbenchError(
        f"unknown metric {name!r}: use one of {', '.join(metric_choices())} or module:callable"
    )


def auto_metric(outputs: Mapping[str, torch.Tensor], has_labels: bool) -> str:
    """What `auto` means for a model with these outputs (one batch) and data with or without labels."""
    tensors = list(outputs.values())
    if has_labels and len(tensors) == 1 and is_class_scores(tensors[0]):
        return "accuracy"
    if tensors and all(is_class_scores(t) for t in tensors):
        return "agreement"
    return "psnr"
