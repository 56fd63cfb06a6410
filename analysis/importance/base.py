"""The criterion type (`Criterion`), its one call signature, and the registry:
`get_importance(name, **config)` is the only way to a criterion (rankings, pruning and the app all go
through it).

A criterion is one class in its own file (`l1.py`, `taylor.py`, ...), registered once with
`@CRITERIA_REGISTRY.register` over the class; its configuration is in `__init__` (`max_samples`) and it
returns one float score per output channel for each prunable layer from `scores(model, data, layers,
max_samples, context)`. It only returns numbers: pruning is a separate step. What a caller must know about
it is said by class attributes, never by its name:

- `data_driven`: needs `data` (its train split, capped at `max_samples`);
- `needs`: the activation statistics it reads (`calibration.STATISTICS`), which the caller gathers for
  every criterion at once in ONE calibration pass (`context.calibration`);
- `expensive`: costs far more than the others (the oracle: one evaluation per channel), so it is left out
  of the default set and, when asked for, is what the progress bar counts;
- `may_be_nan` with `nan_note`: NaN scores are by design for some layers (`bn-scale` without a norm);
  callers that prune by it must refuse those layers (`has_nan_scores`);
- `higher_is_important`: False only for `apoz`, which reports the raw fraction of zeros.

The contract test (tests/test_importance_contract.py) then covers a new criterion at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError
from analysis.importance.calibration import Calibration, calibrate
from analysis.importance.features import FeatureGraph
from analysis.model.layers import filter_rows, is_prunable, prunable_layers
from analysis.progress import Progress
from analysis.registry import Registry
from analysis.validate import require_data, whole

if TYPE_CHECKING:
    from analysis.data import Dataset
    from analysis.importance.groups import ChannelGroup


class Stopped(Exception):
    """Raised by `ScoringContext.report` once `should_stop()` says so: the caller keeps what finished."""


@dataclass
class ScoringContext:
    """What one call of a criterion may use besides the model and data: where layers are measured
    (`features`), the shared calibration pass's statistics (`calibration`), the device to run on, the class
    that evaluates edits (`runner`: the oracle's; None is the eager `DownstreamRunner`), progress and stopping; and what the criterion reports back (`notes`, `details`: e.g. the oracle's
    samples and baseline loss). Criteria report progress through `report`, which honours `should_stop`."""

    features: FeatureGraph | None = None
    calibration: Calibration | None = None
    device: str | torch.device | None = None
    runner: type | None = None
    progress: Progress | None = None
    should_stop: Callable[[], bool] | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def report(self, done: int, total: int) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Stopped  # unwinds the pass; its hooks and edits live on private copies
        if self.progress is not None:
            self.progress(done, total)


class Criterion:
    """One filter-importance criterion, configured when built (`get_importance(name, max_samples=...)`,
    as captum's attribution classes take their settings in `__init__`) and called on a model; a subclass
    says what it scores (`scores`) and describes itself by the class attributes of the module docstring.

    Calling it returns, per prunable layer (all of them, or those named in `layers`), a float tensor of
    one score per output channel, keyed by `model.named_modules()` name, in module order (`max_samples`
    overrides the configured cap for one call; `context` carries features, a calibration already run,
    device, runner, progress). It never changes `model` (not its weights, buffers, mode or hooks).
    """

    name: ClassVar[str]
    data_driven: ClassVar[bool] = False
    higher_is_important: ClassVar[bool] = True
    needs: ClassVar[tuple[str, ...]] = ()
    expensive: ClassVar[bool] = False
    may_be_nan: ClassVar[bool] = False
    nan_note: ClassVar[str] = ""

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
        context: ScoringContext | None = None,
    ) -> dict[str, torch.Tensor]:
        cap = self.max_samples if max_samples is None else whole(max_samples, "max_samples")
        context = context or ScoringContext(progress=progress)
        if self.data_driven:
            require_data(self.name, data)
        if self.needs and (
            context.calibration is None or not set(self.needs) <= set(context.calibration.statistics)
        ):
            layer_list = None if layers is None else list(layers)
            context.calibration = calibrate(
                model, data, layer_list, self.needs, max_samples=cap, progress=context.report,
                features=context.features, device=context.device,
            )  # fmt: skip
        return self.scores(model, data, layers, cap, context)

    def score_groups(
        self, model: nn.Module, groups: Sequence[ChannelGroup], data: Dataset | None = None
    ) -> dict[str, torch.Tensor]:
        """Per coupled group (by name), one float64 score per unit, higher = more important: the sum, over
        every prunable layer whose outputs the group removes, of that layer's scores (negated where
        `higher_is_important` is False, as for APoZ). One call scores every layer of `groups`. A layer this
        criterion cannot score (NaN: `bn-scale` without a following norm) is refused in one line."""
        if self.data_driven:
            require_data(self.name, data)
        layers = sorted({n for g in groups for n in g.out_layers if is_prunable(model.get_submodule(n))})
        found = self(model, data if self.data_driven else None, layers)
        sign = 1.0 if self.higher_is_important else -1.0
        scores: dict[str, torch.Tensor] = {}
        for g in groups:
            total = torch.zeros(g.channels, dtype=torch.float64)
            for m in g.members:
                if m.dim != "out" or m.name not in found:
                    continue
                layer_scores = found[m.name].detach().double().flatten()
                if torch.isnan(layer_scores).any():
                    raise WorkbenchError(
                        f"criterion {self.name!r} has no score for layer {m.name!r} (no following norm for "
                        "bn-scale?): choose another criterion for it"
                    )
                total.index_add_(
                    0, torch.tensor(m.root_idxs, dtype=torch.long), sign * layer_scores[list(m.idxs)]
                )
            scores[g.name] = total
        return scores

    def scores(
        self,
        model: nn.Module,
        data: Dataset | None,
        layers: Iterable[str] | None,
        max_samples: int,
        context: ScoringContext,
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


CRITERIA_REGISTRY: Registry[type[Criterion]] = Registry("importance criterion")


def criterion_names() -> tuple[str, ...]:
    """Every registered criterion, in registration order (the order of tables and plots)."""
    return CRITERIA_REGISTRY.names()


def default_criteria() -> tuple[str, ...]:
    """The criteria a ranking computes unless told: every one whose class is not `expensive`."""
    return tuple(n for n, cls in CRITERIA_REGISTRY.items() if not cls.expensive)


def get_importance(name: str, **config: Any) -> Criterion:
    """A fresh instance of the criterion registered as `name` (see `criterion_names()`), built with
    `config` (`max_samples` for the data-driven ones)."""
    return CRITERIA_REGISTRY.get(name)(**config)


def has_nan_scores(scores: dict[str, torch.Tensor]) -> list[str]:
    """Names of layers whose scores contain NaN (e.g. `bn-scale` on a layer without a following norm)."""
    return [name for name, s in scores.items() if torch.isnan(s).any()]


def filters(module: nn.Module) -> torch.Tensor:
    """The layer's weights as one row per output channel (C_out x rest), detached, float32 (a transposed
    conv's rows are its weight's columns)."""
    return filter_rows(module).detach().float().flatten(1)


class WeightCriterion(Criterion):
    """A criterion read off each layer's filters alone (data is ignored): subclasses define `filter_scores`."""

    def filter_scores(self, filters: torch.Tensor) -> torch.Tensor:
        """C_out x rest filter matrix -> one score per output channel."""
        raise NotImplementedError

    def scores(self, model, data, layers, max_samples, context) -> dict[str, torch.Tensor]:
        selected = prunable_layers(model, layers)
        result: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for i, (name, module) in enumerate(selected.items()):
                result[name] = self.filter_scores(filters(module)).float()
                context.report(i + 1, len(selected))
        return result


class ActivationCriterion(Criterion):
    """A criterion computed from activation statistics (`needs`) of the shared calibration pass:
    subclasses define `from_statistics`."""

    data_driven: ClassVar[bool] = True

    def from_statistics(self, statistics: dict[str, torch.Tensor], samples: int) -> torch.Tensor:
        """One layer's statistics (float64 per channel) over `samples` samples -> its scores."""
        raise NotImplementedError

    def scores(self, model, data, layers, max_samples, context) -> dict[str, torch.Tensor]:
        calibration = context.calibration
        return {
            name: self.from_statistics(
                {s: calibration.statistics[s][name] for s in self.needs}, calibration.samples
            ).float()
            for name in calibration.features.layers
        }


def __getattr__(name: str) -> Any:
    # `CRITERIA` stays a tuple of the registered names, read when asked, so a criterion registered after
    # this module loaded (a plugin, a test's toy) is listed too.
    if name == "CRITERIA":
        return criterion_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
