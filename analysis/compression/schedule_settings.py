"""Pruning schedule settings (docs/contract.md section 8, `schedule`): the methods and target kinds, and
`ScheduleSettings` with its validation and JSON form. The schedules themselves run in
`analysis.compression.schedules`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from analysis.compression.finetune_settings import LR_SCHEDULES
from analysis.compression.global_rank import NORMALIZATIONS
from analysis.compression.schedule_methods import SCHEDULE_REGISTRY
from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError
from analysis.importance.base import CRITERIA

SCHEDULE_TARGETS = ("macs", "params", "latency", "channels")
MAX_STEPS = 1000
MAX_EPOCHS = 1000
SCHEDULE_KEYS = (
    "method", "criterion", "normalize", "target", "steps", "epochs_per_step", "strength", "epochs",
    "threshold", "finetune_epochs", "structured", "initial_sparsity", "min_fraction", "max_samples",
    "lr_schedule",
)  # fmt: skip


def _is_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


@dataclass(frozen=True)
class ScheduleSettings:
    """A pruning schedule (docs/contract.md section 8). Epochs are passes over the training split; fractions of an
    epoch are allowed for `epochs_per_step`. `strength` and `epochs` are the sparsity penalty's weight and
    training length (slimming, group-lasso); `threshold` prunes the channels whose |gamma| or group norm is
    below it instead of pruning to the target. `finetune_epochs` of recovery follow the last step.
    `min_fraction`: every group keeps at least this fraction of its channels (and always one); the default
    0.1 stops global weight-norm rankings from cutting a wide layer down to one channel (measured: AGP with
    L1 on digits-cnn left `classifier.0` 1 of 128 neurons and fell to 8% accuracy). `normalize` defaults to
    `mean` (each group's scores over their mean, Torch-Pruning's default): with `l2` (Molchanov et al.'s
    choice, still available) a group's normalized scores shrink as 1/sqrt(width), so a global ranking cut
    the widest groups first; at half the MACs a one-shot Taylor cut left digits-resnet at 64% after two
    epochs (measured). Slimming and group lasso prune by their values normalized the same way (`none`:
    one global threshold, as Liu et al. 2017)."""

    method: str = "oneshot"
    criterion: str = "taylor"
    normalize: str = "mean"
    target: dict[str, float] = field(default_factory=lambda: {"macs": 0.33})
    steps: int = 5
    epochs_per_step: float = 1.0
    strength: float = 1e-4
    epochs: int = 3
    threshold: float | None = None
    finetune_epochs: int = 0
    structured: bool = True
    initial_sparsity: float = 0.0
    min_fraction: float = 0.1
    max_samples: int = DEFAULT_MAX_SAMPLES
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a one-line WorkbenchError for the first bad value."""
        try:
            method = SCHEDULE_REGISTRY.get(self.method)()
        except WorkbenchError as exc:
            raise WorkbenchError(f"schedule: {exc}") from None
        if self.criterion not in CRITERIA:
            raise WorkbenchError(
                f"schedule: unknown criterion {self.criterion!r}: use one of {', '.join(CRITERIA)}"
            )
        if self.normalize not in NORMALIZATIONS:
            raise WorkbenchError(
                f"schedule: unknown normalize {self.normalize!r}: use one of {', '.join(NORMALIZATIONS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise WorkbenchError(
                f"schedule: unknown lr_schedule {self.lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}"
            )
        if not isinstance(self.target, Mapping) or len(self.target) != 1:
            raise WorkbenchError(
                f'schedule: target must be one of {", ".join(SCHEDULE_TARGETS)} with a value, e.g. {{"macs": 0.33}}, '
                f"got {self.target!r}"
            )
        ((kind, value),) = self.target.items()
        if kind not in SCHEDULE_TARGETS:
            raise WorkbenchError(
                f"schedule: unknown target {kind!r}: use one of {', '.join(SCHEDULE_TARGETS)}"
            )
        if not _is_number(value) or value <= 0:
            raise WorkbenchError(f"schedule: target {kind} must be a positive number, got {value!r}")
        if kind == "channels" and value > 1 and float(value) != int(value):
            raise WorkbenchError(
                f"schedule: target channels must be a fraction in (0, 1] or a whole count, got {value}"
            )
        if kind != "channels" and value > 1:
            raise WorkbenchError(
                f"schedule: target {kind}={value} must be the fraction to keep, in (0, 1], e.g. 0.33"
            )
        for name, low, high in (("steps", 1, MAX_STEPS), ("epochs", 0, MAX_EPOCHS),
                                ("finetune_epochs", 0, MAX_EPOCHS), ("max_samples", 1, 10**9)):  # fmt: skip
            v = getattr(self, name)
            if not _is_number(v) or float(v) != int(v) or not low <= v <= high:
                raise WorkbenchError(f"schedule: {name} must be a whole number in [{low}, {high}], got {v!r}")
        if not _is_number(self.epochs_per_step) or not 0 <= self.epochs_per_step <= MAX_EPOCHS:
            raise WorkbenchError(
                f"schedule: epochs_per_step must be a number in [0, {MAX_EPOCHS}], got {self.epochs_per_step!r}"
            )
        if not _is_number(self.strength) or not 0 <= self.strength <= 10:
            raise WorkbenchError(f"schedule: strength must be a number in [0, 10], got {self.strength!r}")
        if self.threshold is not None and (not _is_number(self.threshold) or self.threshold < 0):
            raise WorkbenchError(f"schedule: threshold must be a number >= 0 or null, got {self.threshold!r}")
        for name in ("initial_sparsity", "min_fraction"):
            v = getattr(self, name)
            if not _is_number(v) or not 0 <= v < 1:
                raise WorkbenchError(f"schedule: {name} must be a number in [0, 1), got {v!r}")
        if not isinstance(self.structured, bool):
            raise WorkbenchError(f"schedule: structured must be true or false, got {self.structured!r}")
        if not self.structured and not method.unstructured:
            by = ", ".join(n for n, cls in SCHEDULE_REGISTRY.items() if cls.unstructured)
            raise WorkbenchError(
                f"schedule: unstructured pruning is scheduled by {by} only, not {self.method!r}"
            )
        if not self.structured and kind != "params":
            raise WorkbenchError(
                'schedule: unstructured agp saves no MACs or latency: give target {"params": F}, '
                "the fraction of prunable weights kept"
            )
        method.check(self, kind, value)

    @property
    def target_kind(self) -> str:
        return next(iter(self.target))

    @property
    def target_value(self) -> float:
        return float(next(iter(self.target.values())))

    @property
    def total_epochs(self) -> float:
        """Passes over the training split the schedule trains for, in all (the training budget)."""
        return SCHEDULE_REGISTRY.get(self.method)().training_epochs(self) + self.finetune_epochs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target"] = dict(self.target)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | ScheduleSettings) -> ScheduleSettings:
        """From the plan's `schedule` object; unknown keys are refused."""
        if isinstance(raw, ScheduleSettings):
            return raw
        if not isinstance(raw, Mapping):
            raise WorkbenchError(
                f'plan "schedule" must be an object like {{"method": "iterative"}}, got {raw!r}'
            )
        unknown = sorted(set(raw) - set(SCHEDULE_KEYS))
        if unknown:
            raise WorkbenchError(f"schedule: unknown key {unknown[0]!r}: use {', '.join(SCHEDULE_KEYS)}")
        values = dict(raw)
        if isinstance(values.get("target"), Mapping):
            values["target"] = dict(values["target"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ScheduleSettings:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"schedule: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(raw)


__all__ = ["MAX_EPOCHS", "MAX_STEPS", "SCHEDULE_KEYS", "SCHEDULE_TARGETS", "ScheduleSettings"]
