"""Input and result checks shared by data loading, evaluation and the command line.

Each check raises `WorkbenchError` with one line that says what is wrong and what to do, so bad input
fails at load time with a message instead of deep inside torch (an IndexError, a reduction over zero
samples) or, worse, as a NaN written into a result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from analysis.errors import WorkbenchError
from analysis.model.inputs import InputBatch, InputSpec

SCAN_BYTES = 4 * 2**20


def check_batch_size(batch_size: int, what: str = "batch size") -> int:
    """`batch_size` if it is a whole number of at least 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WorkbenchError(f"{what} must be a whole number of at least 1, got {batch_size!r}")
    return batch_size


def check_split(
    x: torch.Tensor | InputBatch,
    y: torch.Tensor | None,
    where: str,
    names: tuple[str, str] = ("x", "y"),
) -> None:
    """One split: at least one sample, as many labels as inputs (where there are labels), float finite
    inputs (integer ids allowed for named inputs), integer labels >= 0."""
    xn, yn = names
    tensors = x.parts.items() if isinstance(x, InputBatch) and isinstance(x.parts, dict) else None
    if isinstance(x, InputBatch):
        for name, t in tensors or [(f"{xn}[{i}]", t) for i, t in enumerate(x.tensors())]:
            _check_inputs(t, where, name, allow_ids=True)
    else:
        _check_inputs(x, where, xn, allow_ids=False)
    if y is None:
        return
    if y.ndim != 1:
        raise WorkbenchError(
            f"{where}: {yn!r} must be one integer label per sample (shape N), got {tuple(y.shape)}"
        )
    if len(x) != len(y):
        raise WorkbenchError(
            f"{where}: {len(x)} samples in {xn!r} but {len(y)} labels in {yn!r}: they must match"
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise WorkbenchError(f"{where}: {yn!r} must hold integer class labels, got {y.dtype}")
    if len(y) and int(y.min()) < 0:
        raise WorkbenchError(
            f"{where}: {yn!r} holds a negative label ({int(y.min())}): labels are 0..classes-1"
        )


def _check_inputs(x: torch.Tensor, where: str, xn: str, allow_ids: bool) -> None:
    """One input tensor: samples, float (or integer ids where `allow_ids`), no NaN/Inf."""
    if x.ndim < 1 or len(x) == 0:
        raise WorkbenchError(f"{where}: {xn!r} has no samples: give at least one")
    if not x.dtype.is_floating_point:
        if allow_ids and not x.dtype.is_complex:
            return
        raise WorkbenchError(f"{where}: {xn!r} must be floating point, got {x.dtype} (convert it to float32)")
    # A file larger than this is memory-mapped for a reason: scanning it here would read it all into RAM.
    # Only its first samples are scanned; later NaN/Inf still surface as a non-finite loss in `evaluate`.
    scanned = (
        x
        if x.numel() * x.element_size() <= SCAN_BYTES
        else x[: max(1, SCAN_BYTES // max(1, x[0].numel() * x.element_size()))]
    )
    bad = ~torch.isfinite(scanned)
    if bool(bad.any()):
        first = int(bad.reshape(len(scanned), -1).any(dim=1).nonzero()[0, 0])
        raise WorkbenchError(
            f"{where}: {xn!r} holds {int(bad.sum())} NaN or infinite values (first in sample {first}): "
            "clean the data first"
        )


def check_labels_tensor(y: torch.Tensor | None, num_outputs: int, where: str = "the data") -> None:
    """Every label in `y` is a valid index into `num_outputs` model outputs (nothing to check without)."""
    if y is None or len(y) == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_outputs:
        bad = high if high >= num_outputs else low
        raise WorkbenchError(
            f"{where} has label {bad} but the model has {num_outputs} outputs (labels 0..{num_outputs - 1}): "
            "use data made for this model"
        )


def check_labels(data: Any, num_outputs: int | None) -> None:
    """Labels of both splits of `data` lie in 0..num_outputs-1 (skipped where `num_outputs` is unknown)."""
    if num_outputs is None:
        return
    check_labels_tensor(data.y, num_outputs, data.spec)
    check_labels_tensor(data.y_train, num_outputs, f"{data.spec} (training split)")


def model_outputs(model: torch.nn.Module, input_shape: tuple[int, ...] | InputSpec) -> int | None:
    """Number of classes a classifier outputs (its one output is (N, C)), or None if not a classifier."""
    from analysis.concurrency import eval_view
    from analysis.model.inputs import as_input_spec
    from analysis.model.layers import call_model
    from analysis.model.outputs import flatten_outputs

    try:
        with torch.inference_mode():
            out = flatten_outputs(call_model(eval_view(model), as_input_spec(input_shape).zeros(1)))
    except Exception:  # not our job to diagnose here: the analysis that runs it will say what broke
        return None
    if len(out) != 1:
        return None
    (t,) = out.values()
    return int(t.shape[1]) if t.is_floating_point() and t.ndim == 2 else None


def non_finite_keys(payload: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every NaN or infinite float in a nested dict/list payload."""
    found: list[str] = []
    if isinstance(payload, float):
        if not math.isfinite(payload):
            found.append(prefix or "(value)")
    elif isinstance(payload, Mapping):
        for k, v in payload.items():
            found += non_finite_keys(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(payload, (list, tuple)):
        for i, v in enumerate(payload):
            found += non_finite_keys(v, f"{prefix}[{i}]")
    return found


def check_finite_result(payload: Any, what: str = "result") -> None:
    """Raise if a result holds NaN or infinite numbers (a diverged model or broken input, never a value)."""
    bad = non_finite_keys(payload)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise WorkbenchError(
            f"the {what} is not a finite number ({shown}): check the data and the model for NaN/Inf"
        )


__all__ = [
    "check_batch_size",
    "check_finite_result",
    "check_labels",
    "check_labels_tensor",
    "check_split",
    "model_outputs",
    "non_finite_keys",
]
