"""The criterion type (`Criterion`, public name `Importance`), its weight and activation bases, and the
registry: `get_importance(name, **config)` is the only way to a criterion (rankings, pruning and the app
all go through it).

A criterion is one class in its own file (`l1.py`, `taylor.py`, ...) with three class attributes, its
configuration in `__init__` (`max_samples`), and a `scores` method that returns one float score per output
channel for each prunable layer. It only returns numbers: pruning is a separate step. Adding a criterion =
writing one file and listing it once in `_REGISTRY` below (an activation statistic also needs its line in
`calibration.py`, which measures all of them in one pass); the contract test
(tests/test_importance_contract.py) then covers it.

Scores and directions (CONTRACT section 5): higher = more important for every criterion except `apoz`,
which reports the raw fraction of zeros (pruning removes the highest). `bn-scale` gives NaN for every
channel of a layer with no following per-channel norm (there is no gamma to read); callers that prune by
it must refuse such a layer (`has_nan_scores` helps).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.importance.calibration import CalibrationScores, activation_scores
from analysis.importance.features import FeatureGraph
from analysis.model.layers import filter_rows, prunable_layers
from analysis.progress import Progress
from analysis.validate import criterion as check_criterion
from analysis.validate import whole

if TYPE_CHECKING:
    from analysis.data import Dataset


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


def get_importance(name: str, **config: Any) -> Criterion:
    """A fresh instance of the criterion registered as `name` (see `CRITERIA`), built with `config`
    (`max_samples` for the data-driven ones)."""
    key = check_criterion(name, CRITERIA)
    module_name, class_name = _REGISTRY[key].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**config)


def has_nan_scores(scores: dict[str, torch.Tensor]) -> list[str]:
    """Names of layers whose scores contain NaN (e.g. `bn-scale` on a layer without a following norm)."""
    return [name for name, s in scores.items() if torch.isnan(s).any()]


def filters(module: nn.Module) -> torch.Tensor:
    """The layer's weights as one row per output channel (C_out x rest), detached, float32 (a transposed
    conv's rows are its weight's columns)."""
    return filter_rows(module).detach().float().flatten(1)


class Criterion:
    """One filter-importance criterion, configured when built (`get_importance(name, max_samples=...)`,
    as captum's attribution classes take their settings in `__init__`) and called on a model; a subclass
    says only what it scores (`scores`).

    `name` is the registry name; `data_driven` says whether it needs `data` (its train split is used,
    capped at `max_samples`); `higher_is_important` is False only for `apoz`. Calling it returns, per
    prunable layer (all of them, or those named in `layers`), a float tensor of one score per output
    channel, keyed by `model.named_modules()` name, in module order (`max_samples` overrides the configured
    cap for one call). It never changes `model` (not its weights, buffers, mode or hooks).
    """

    name: ClassVar[str]
    data_driven: ClassVar[bool] = False
    higher_is_important: ClassVar[bool] = True

    def __init__(self, max_samples: int = DEFAULT_MAX_SAMPLES) -> None:
        self.max_samples = whole(max_samples, "max_samples")

    def __call__(
        self,
        model: nn.Module,
        data: Dataset | None = None,
        layers: Iterable[str] | None = None,
        *,
        max_samples: int | None = None,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        cap = self.max_samples if max_samples is None else whole(max_samples, "max_samples")
        return self.scores(model, data, layers, cap, progress)

    def scores(
        self,
        model: nn.Module,
        data: Dataset | None,
        layers: Iterable[str] | None,
        max_samples: int,
        progress: Progress | None,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class WeightCriterion(Criterion):
    """A criterion read off each layer's filters alone (data is ignored): subclasses define `filter_scores`."""

    def filter_scores(self, filters: torch.Tensor) -> torch.Tensor:
        """C_out x rest filter matrix -> one score per output channel."""
        raise NotImplementedError

    def scores(self, model, data, layers, max_samples, progress) -> dict[str, torch.Tensor]:
        selected = prunable_layers(model, layers)
        result: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for i, (name, module) in enumerate(selected.items()):
                result[name] = self.filter_scores(filters(module)).float()
                if progress:
                    progress(i + 1, len(selected))
        return result


class ActivationCriterion(Criterion):
    """A criterion measured in the shared calibration pass (`calibration.activation_scores`) under `name`."""

    data_driven: ClassVar[bool] = True

    def scores(self, model, data, layers, max_samples, progress) -> dict[str, torch.Tensor]:
        result = activation_scores(
            model, data, layers, (self.name,), max_samples=max_samples, progress=progress
        )
        return result.scores[self.name]

    @staticmethod
    def measure_together(
        criteria: Sequence[ActivationCriterion],
        model: nn.Module,
        data: Dataset | None,
        layers: Iterable[str] | None = None,
        *,
        progress: Progress | None = None,
        features: FeatureGraph | None = None,
        device: str | torch.device | None = None,
    ) -> CalibrationScores:
        """Several activation criteria in ONE pass over the data (the first one's `max_samples`), on
        `device` (a private copy there) where given."""
        return activation_scores(
            model,
            data,
            layers,
            [c.name for c in criteria],
            max_samples=criteria[0].max_samples,
            progress=progress,
            features=features,
            device=device,
        )


Importance = Criterion  # the public name of the criterion type
