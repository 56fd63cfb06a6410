"""What the downstream runner takes and gives: an `Edit` to evaluate, the running `Tally` a stop callback
sees, and the `RunnerResult`."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from torch import nn

from analysis.evaluate import EvalResult
from analysis.metrics import MetricTally


@dataclass(frozen=True)
class Edit:
    """A change to evaluate: `apply(model)` changes parameters/buffers of `modules` in place.

    The runner restores every parameter and buffer of `modules` (recursively) after the edit, so `apply`
    needs no undo; it must not change anything outside `modules`. `key` is for the caller.
    """

    modules: tuple[str, ...]
    apply: Callable[[nn.Module], None]
    key: Hashable = None


@dataclass
class Tally:
    """Running sums after some batches: what a `stop` callback sees (read-only by convention).

    `correct` / `baseline_correct` are the sums of per-sample scores of a bounded metric (each sample 0..1:
    accuracy's correct counts, agreement's agreeing samples), so a caller can bound what the remaining
    samples could still do; `scores` / `baseline_score` are the metric tallies themselves.
    """

    total: int
    seen: int = 0
    baseline_correct: float = 0
    baseline_loss_sum: float = 0.0
    correct: list[float] = field(default_factory=list)
    loss_sum: list[float] = field(default_factory=list)
    active: list[bool] = field(default_factory=list)
    scores: list[MetricTally] = field(default_factory=list)
    baseline_score: MetricTally | None = None

    @property
    def remaining(self) -> int:
        return self.total - self.seen


@dataclass(frozen=True)
class RunnerResult:
    """The unedited baseline and one `EvalResult` per edit (None where a `stop` callback dropped it)."""

    baseline: EvalResult
    results: list[EvalResult | None]
    notes: tuple[str, ...] = ()
