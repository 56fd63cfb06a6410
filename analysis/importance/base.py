"""The `Importance` protocol, the registry of criteria, and the prunable-layer helpers they share.

A criterion is one class in its own file (`l1.py`, `taylor.py`, ...) with three class attributes and a
`__call__` that returns one float score per output channel for each prunable layer. It only returns
numbers: pruning is a separate step. Adding a criterion = writing one file and listing it once in
`_REGISTRY` below; the contract test (tests/test_importance_contract.py) then covers it.

Scores and directions (CONTRACT section 5): higher = more important for every criterion except `apoz`,
which reports the raw fraction of zeros (pruning removes the highest). `bn-scale` gives NaN for every
channel of a layer with no following per-channel norm (there is no gamma to read); callers that prune by
it must refuse such a layer (`has_nan_scores` helps).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.sensitivity.groups import is_prunable

if TYPE_CHECKING:
    from analysis.data import Dataset

Progress = Callable[[int, int], None]

DEFAULT_MAX_SAMPLES = 2048

# Criterion name -> "module:Class". Listing order is the order of CRITERIA (and of tables and plots).
_REGISTRY: dict[str, str] = {
    "l1": "analysis.importance.l1:L1Importance",
    "l2": "analysis.importance.l2:L2Importance",
    "fpgm": "analysis.importance.fpgm:FPGMImportance",
    "bn-scale": "analysis.importance.bn_scale:BNScaleImportance",
    "apoz": "analysis.importance.apoz:APoZImportance",
    "mean-activation": "analysis.importance.mean_activation:MeanActivationImportance",
    "taylor": "analysis.importance.taylor:TaylorImportance",
    "oracle": "analysis.importance.oracle:OracleImportance",
}

CRITERIA: tuple[str, ...] = tuple(_REGISTRY)


@runtime_checkable
class Importance(Protocol):
    """One filter-importance criterion.

    `name` is the registry name; `data_driven` says whether it needs `data` (its train split is used,
    capped at `max_samples`); `higher_is_important` is False only for `apoz`.
    Calling it never changes `model` (not its weights, buffers, mode or hooks).
    """

    name: ClassVar[str]
    data_driven: ClassVar[bool]
    higher_is_important: ClassVar[bool]

    def __call__(
        self,
        model: nn.Module,
        data: Dataset | None = None,
        layers: Iterable[str] | None = None,
        *,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per prunable layer (all of them, or those named in `layers`), a float tensor of one score per
        output channel, keyed by `model.named_modules()` name, in module order."""
        ...


def get_importance(name: str) -> Importance:
    """A fresh instance of the criterion registered as `name` (see `CRITERIA`)."""
    key = str(name).strip().lower()
    if key not in _REGISTRY:
        raise WorkbenchError(f"unknown importance criterion {name!r}: use one of {', '.join(CRITERIA)}")
    module_name, class_name = _REGISTRY[key].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()


def out_channels(module: nn.Module) -> int:
    """Number of output channels (conv filters, linear neurons) of a prunable layer."""
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def prunable_layers(model: nn.Module, layers: Iterable[str] | None = None) -> dict[str, nn.Module]:
    """The prunable layers of `model` by name, in module order; only those in `layers` when given.

    Raises WorkbenchError for a name that is not a module of the model or is not prunable.
    """
    found = {name: m for name, m in model.named_modules() if name and is_prunable(m)}
    if layers is None:
        return found
    wanted = [layers] if isinstance(layers, str) else list(layers)
    modules = dict(model.named_modules())
    for name in wanted:
        if name not in modules:
            close = ", ".join(list(found)[:8])
            raise WorkbenchError(f"no layer named {name!r} in the model: prunable layers are {close}")
        if name not in found:
            raise WorkbenchError(
                f"layer {name!r} is a {type(modules[name]).__name__}, not a prunable layer "
                "(Conv*d with groups 1 or depthwise, or Linear)"
            )
    keep = set(wanted)
    return {name: m for name, m in found.items() if name in keep}


def has_nan_scores(scores: dict[str, torch.Tensor]) -> list[str]:
    """Names of layers whose scores contain NaN (e.g. `bn-scale` on a layer without a following norm)."""
    return [name for name, s in scores.items() if torch.isnan(s).any()]


def require_data(criterion: str, data: Dataset | None) -> Dataset:
    """`data`, or a WorkbenchError saying that this criterion is data-driven."""
    if data is None:
        raise WorkbenchError(f"criterion {criterion!r} is data-driven: give a dataset (--data)")
    return data


def check_max_samples(max_samples: int) -> int:
    if int(max_samples) < 1:
        raise WorkbenchError(f"max_samples must be at least 1, got {max_samples}")
    return int(max_samples)


def filters(module: nn.Module) -> torch.Tensor:
    """The layer's weights as one row per output channel (C_out x rest), detached, float32."""
    return module.weight.detach().float().flatten(1)


def weight_scores(
    model: nn.Module,
    layers: Iterable[str] | None,
    score: Callable[[torch.Tensor], torch.Tensor],
    progress: Progress | None,
) -> dict[str, torch.Tensor]:
    """Apply `score` (C_out x rest filter matrix -> C_out scores) to every selected prunable layer."""
    selected = prunable_layers(model, layers)
    result: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for i, (name, module) in enumerate(selected.items()):
            result[name] = score(filters(module)).float()
            if progress:
                progress(i + 1, len(selected))
    return result


class WeightCriterion:
    """A criterion read off each layer's filters alone (data is ignored): subclasses define `filter_scores`."""

    data_driven: ClassVar[bool] = False
    higher_is_important: ClassVar[bool] = True

    def filter_scores(self, filters: torch.Tensor) -> torch.Tensor:
        """C_out x rest filter matrix -> one score per output channel."""
        raise NotImplementedError

    def __call__(
        self,
        model: nn.Module,
        data: Dataset | None = None,
        layers: Iterable[str] | None = None,
        *,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        return weight_scores(model, layers, self.filter_scores, progress)


class ActivationCriterion:
    """A criterion measured in the shared calibration pass (`calibration.activation_scores`) under `name`."""

    data_driven: ClassVar[bool] = True
    higher_is_important: ClassVar[bool] = True
    name: ClassVar[str]

    def __call__(
        self,
        model: nn.Module,
        data: Dataset | None = None,
        layers: Iterable[str] | None = None,
        *,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        from analysis.importance.calibration import activation_scores  # calibration imports this module

        result = activation_scores(
            model, data, layers, (self.name,), max_samples=max_samples, progress=progress
        )
        return result.scores[self.name]
