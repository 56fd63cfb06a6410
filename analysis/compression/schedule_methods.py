"""The pruning schedule methods (`schedule.method` of a plan), one class each in `SCHEDULE_REGISTRY`:
`oneshot`, `iterative`, `agp`, `slimming`, `group-lasso` (see `schedules.py` for what each does).

A method says what the settings and the runner need to know by class attributes and methods, never by its
name: `progress_steps` (the steps the progress bar counts), `training_epochs` (its training budget),
`unstructured` (whether it can prune single weights, `structured: false`), `sparsity` (it trains with a
penalty first and records the penalized values as evidence), `check` (its own settings rules) and `run`
(the steps themselves, on the schedule's `_Run` state). Adding a method = one class and one registration.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from analysis.compression.agp import agp_structured, agp_unstructured
from analysis.compression.sparsity import (
    channel_values,
    group_lasso_penalty,
    slimming_penalty,
    sparsity_values,
)
from analysis.errors import WorkbenchError
from analysis.registry import Registry

if TYPE_CHECKING:
    from analysis.compression.schedule_settings import ScheduleSettings

LATENCY_EXTRA_STEPS = 3  # a measured latency can miss the goal the MACs promised: this many more steps


class ScheduleMethod:
    """One way to schedule pruning (see the module docstring). `run(run, report, evidence)` steps the
    schedule's `_Run`; `report(done)` counts `progress_steps`."""

    name: ClassVar[str]
    unstructured: ClassVar[bool] = False
    sparsity: ClassVar[bool] = False

    def progress_steps(self, settings: ScheduleSettings) -> int:
        return settings.steps

    def training_epochs(self, settings: ScheduleSettings) -> float:
        return settings.steps * settings.epochs_per_step

    def check(self, settings: ScheduleSettings, kind: str, value: float) -> None:
        """Raise a one-line WorkbenchError for a setting this method cannot take."""

    def run(self, run: Any, report, evidence: dict[str, Any]) -> None:
        raise NotImplementedError


SCHEDULE_REGISTRY: Registry[type[ScheduleMethod]] = Registry("method")


def _structured_steps(run: Any, report, plan_steps: int, gradual: bool) -> None:
    """Rank, remove, (train) for `plan_steps` steps; `gradual`: the same share of the channels each step,
    with training after each, else all of them at once."""
    s = run.s
    kind, value = s.target_kind, run.target_fraction
    per_step = None
    limit = plan_steps + (LATENCY_EXTRA_STEPS if kind == "latency" else 0)
    t = 0
    while t < limit:
        run.check_stop()
        t += 1
        run.step = t
        groups, order = run.order(s.criterion, s.normalize)
        needed = run.channels_for(groups, order, value)
        if gradual:
            if per_step is None:
                per_step = max(1, math.ceil(needed / plan_steps))
            k = needed if t >= plan_steps else min(per_step, needed)
        else:
            k = needed
        removed = run.remove(groups, order, k)
        loss = run.train_epochs(s.epochs_per_step) if gradual else None
        run.record(s.method, loss, removed)
        report(t)
        if t >= plan_steps and run.met():
            break
        if removed == 0 and t >= plan_steps:
            run.notes.append("no channel left to remove: the target cannot be met (every group at its floor)")
            break


@SCHEDULE_REGISTRY.register
class OneShot(ScheduleMethod):
    """One global ranking, the channels for the target removed at once, then recovery."""

    name = "oneshot"

    def progress_steps(self, settings: ScheduleSettings) -> int:
        return 1

    def training_epochs(self, settings: ScheduleSettings) -> float:
        return 0

    def run(self, run: Any, report, evidence: dict[str, Any]) -> None:
        _structured_steps(run, report, 1, gradual=False)


@SCHEDULE_REGISTRY.register
class Iterative(ScheduleMethod):
    """Rank, remove a constant share, fine-tune; repeated for `steps` steps (Molchanov et al. 2017)."""

    name = "iterative"

    def run(self, run: Any, report, evidence: dict[str, Any]) -> None:
        _structured_steps(run, report, run.s.steps, gradual=True)


@SCHEDULE_REGISTRY.register
class AGP(ScheduleMethod):
    """Automated gradual pruning: the pruned fraction follows a cubic curve (Zhu & Gupta 2017)."""

    name = "agp"
    unstructured = True

    def check(self, settings: ScheduleSettings, kind: str, value: float) -> None:
        final = value if kind != "channels" or value <= 1 else 0.0
        if settings.initial_sparsity >= 1 - final:
            raise WorkbenchError(
                f"schedule: initial_sparsity {settings.initial_sparsity} must be below the final sparsity "
                f"{1 - value:g} (1 - target)"
            )

    def run(self, run: Any, report, evidence: dict[str, Any]) -> None:
        s = run.s
        if not s.structured:
            agp_unstructured(run, report)
        else:
            agp_structured(run, report, LATENCY_EXTRA_STEPS if s.target_kind == "latency" else 0)


class _SparsityTraining(ScheduleMethod):
    """Train with a sparsity penalty, then prune the channels it drove down (subclasses: the penalty)."""

    sparsity = True
    evidence_kind: ClassVar[str]

    def progress_steps(self, settings: ScheduleSettings) -> int:
        return 2

    def training_epochs(self, settings: ScheduleSettings) -> float:
        return settings.epochs

    def penalty(self, run: Any):
        raise NotImplementedError

    def run(self, run: Any, report, evidence: dict[str, Any]) -> None:
        s = run.s
        groups = run.groups
        evidence["before"] = sparsity_values(run.work, s.method, groups)
        evidence["kind"] = self.evidence_kind
        penalty = self.penalty(run)
        run.step = 1
        loss = run.train_epochs(s.epochs, penalty)
        evidence["after"] = sparsity_values(run.work, s.method, groups)
        run.record("sparsity-training", loss, 0)
        report(1)
        run.check_stop()
        run.step = 2
        current, order = run.order(s.method, s.normalize)
        if s.threshold is not None:
            values = channel_values(run.work, s.method, current)
            k = sum(1 for name, c in order if float(values[name][c]) < s.threshold)
            run.notes.append(f"pruned the {k} channels whose {evidence['kind']} is below {s.threshold:g}")
        else:
            k = run.channels_for(current, order, run.target_fraction)
        removed = run.remove(current, order, k)
        run.record("prune", None, removed)
        report(2)


@SCHEDULE_REGISTRY.register
class Slimming(_SparsityTraining):
    """Network slimming: an L1 penalty on the BatchNorm scales, then the smallest pruned (Liu et al. 2017)."""

    name = "slimming"
    evidence_kind = "bn_scale"

    def penalty(self, run: Any):
        if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in run.work.modules()):
            raise WorkbenchError(
                "slimming needs BatchNorm layers (it penalizes their scales): use group-lasso"
            )
        strength = run.s.strength
        return lambda model: slimming_penalty(model, strength)


@SCHEDULE_REGISTRY.register
class GroupLasso(_SparsityTraining):
    """Group lasso: an L2 penalty per channel group, then the smallest groups pruned."""

    name = "group-lasso"
    evidence_kind = "filter_norm"

    def penalty(self, run: Any):
        groups, strength = run.groups, run.s.strength
        names = [g.name for g in groups]

        def penalty(model):  # the groups are fixed during sparsity training (no channel goes yet)
            return group_lasso_penalty(model, [g for g in groups if g.name in names], strength)

        return penalty


def schedule_method(name: str) -> ScheduleMethod:
    """The method registered as `name` (one line listing the known ones otherwise)."""
    return SCHEDULE_REGISTRY.get(name)()


__all__ = ["LATENCY_EXTRA_STEPS", "SCHEDULE_REGISTRY", "ScheduleMethod", "schedule_method"]
