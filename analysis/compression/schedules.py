"""Pruning schedules: global one-shot, iterative (constant step), AGP, network slimming and group lasso
(docs/contract.md section 8, `schedule`). Each prunes a private copy of the model until a target is met, trains
between steps, and records the trajectory.

- `oneshot`: one global ranking (`global_rank`), the channels to meet the target removed at once, then
  `finetune_epochs` of recovery.
- `iterative` (Molchanov et al. 2017): repeat {rank on the training split, remove N channels, fine-tune
  `epochs_per_step`} for `steps` steps; N = the channels the first ranking needs for the target / steps
  (the last step removes whatever is still needed, so the target is met).
- `agp` (Zhu & Gupta 2017, "To prune, or not to prune"; `agp.py`): the pruned fraction follows
  s_t = s_f + (s_i - s_f)(1 - t/n)^3, t = 1..n, per layer as in the paper. Structured: every group loses
  s_t of its original channels (s_f uniform, meeting the target); unstructured (`structured: false`): s is
  the fraction of prunable weights zeroed by global magnitude, target `params` = the fraction kept.
- `slimming` / `group-lasso` (`sparsity.py`): `epochs` of training with the penalty at `strength`, then the
  channels below `threshold` (or the smallest, to the target) pruned globally, then `finetune_epochs`.

Targets are fractions of the original to keep: `macs` and `params` counted exactly on the pruned model
(`count_macs`, `count_params`), `latency` measured (`measure_latency`; MACs guide each step, then the
measured ratio corrects the goal), `channels` (a fraction in (0, 1], or a whole count > 1, of the prunable
channels). The channels to remove for a goal are found by bisection over the global order, each candidate
pruned for real on a copy and counted.

One module (settings are in `schedule_settings`): the five schedules share the `_Run` state they step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from analysis.compression.agp import agp_sparsity
from analysis.compression.finetune_settings import (  # noqa: F401  (recovery_* re-exported)
    RECOVERY_BATCHES,
    RECOVERY_LR,
    RECOVERY_LR_SCHEDULE,
    RECOVERY_MAX_EPOCHS,
    RECOVERY_MIN_EPOCHS,
    FinetuneSettings,
    recovery_epochs,
    recovery_finetune,
)
from analysis.compression.global_rank import keep_at_least, rank_globally, select
from analysis.compression.schedule_methods import SCHEDULE_REGISTRY, schedule_method
from analysis.compression.schedule_settings import (  # noqa: F401  (re-exported)
    MAX_EPOCHS,
    MAX_STEPS,
    SCHEDULE_KEYS,
    SCHEDULE_TARGETS,
    ScheduleSettings,
)
from analysis.compression.sparsity import (
    SPARSITY_METHODS,
    channel_values,
)
from analysis.compression.training import batches_for, recalibrate_bn, train
from analysis.cost import count_macs, count_params
from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.importance import group_scores
from analysis.metrics import Scoring, scoring
from analysis.model.inputs import InputSpec
from analysis.model.layers import copy_model, example_input
from analysis.progress import Progress
from analysis.transforms.groups import PruningGroup, find_groups, is_prunable, remove_channels
from analysis.transforms.pruning import make_permanent

SCHEDULE_METHODS = SCHEDULE_REGISTRY.names()  # the registered schedule methods (schedule_methods.py)
LATENCY_RUNS = 20


# --- result ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleResult:
    """The pruned (and trained) model, the trajectory (one record per step, step 0 = the original), notes,
    and whether `should_stop` ended the run early (the model is then the one after the last whole step).
    `evidence`: for sparsity methods, the penalized values (`before`/`after` training) for histograms."""

    model: nn.Module = field(repr=False)
    trajectory: list[dict[str, Any]]
    notes: list[str]
    stopped: bool
    settings: ScheduleSettings
    met: bool = False
    seconds: float = 0.0
    evidence: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.settings.to_dict(),
            "trajectory": self.trajectory,
            "notes": self.notes,
            "stopped": self.stopped,
            "met": self.met,
            "seconds": self.seconds,
            "evidence": self.evidence,
        }


# --- the loop -------------------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised inside a step when `should_stop` says so; the step is discarded."""


class _Run:
    """State of one schedule run: the working model, its reference numbers and the trajectory."""

    def __init__(
        self, model, data, settings, input_shape, finetune, progress, on_step, should_stop, eval_limit,
        metric="auto",
    ):  # fmt: skip
        shape = input_shape if isinstance(input_shape, InputSpec) else tuple(input_shape)
        self.data, self.s, self.input_shape = data, settings, shape
        self.ft = finetune
        self.progress, self.on_step, self.should_stop = progress, on_step, should_stop
        self.eval_limit = eval_limit
        self.teacher = copy_model(model).eval()
        self.work = copy_model(model).eval()
        self.score = scoring(metric, self.teacher, data)  # every step is scored against the original
        self.notes: list[str] = []
        self.trajectory: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.base_macs = count_macs(self.work, self.input_shape)
        self.base_params = count_params(self.work)
        self.groups = find_groups(self.work, self.input_shape)
        if not self.groups and settings.structured:
            raise WorkbenchError(
                "the model has no prunable channel groups (the final classifier keeps its outputs)"
            )
        self.base_channels = sum(g.channels for g in self.groups)
        # Floors are fractions of the original widths: taken of the current width, every step lowered them
        # (digits-resnet's layer3 went 64 -> 6 channels under AGP, and the accuracy with it).
        self.floors = {g.name: keep_at_least(g.channels, 1, settings.min_fraction) for g in self.groups}
        self.original_channels = {g.name: g.channels for g in self.groups}
        value = settings.target_value
        # A channel count becomes the fraction of the prunable channels it keeps.
        self.target_fraction = value if value <= 1 else min(1.0, value / max(self.base_channels, 1))
        self.base_latency = None
        if settings.target_kind == "latency":
            from analysis.latency import measure_latency

            self.base_latency = measure_latency(self.work, self.input_shape, runs=LATENCY_RUNS).median_ms
        self.latency_correction = 1.0  # measured latency fraction / MACs fraction, updated per step
        self.step = 0
        self.last_good = copy_model(self.work)

    # measurements
    def channels(self, model: nn.Module) -> dict[str, int]:
        return {
            n: (m.out_features if isinstance(m, nn.Linear) else m.out_channels)
            for n, m in model.named_modules()
            if n and is_prunable(m)
        }

    def fraction(self, model: nn.Module, kind: str) -> float:
        """The kept fraction of the target quantity (latency: the MACs fraction times the correction)."""
        if kind == "params" and not self.s.structured:
            return self.nonzero_fraction(model)
        if kind == "params":
            return count_params(model) / self.base_params
        if kind == "channels":
            total = sum(g.channels for g in find_groups(model, self.input_shape))
            return total / self.base_channels
        macs = count_macs(model, self.input_shape) / self.base_macs
        return macs * (self.latency_correction if kind == "latency" else 1.0)

    def nonzero_fraction(self, model: nn.Module) -> float:
        total = nonzero = 0
        for _name, w in self.prunable_weights(model):
            total += w.numel()
            nonzero += int((w != 0).sum())
        return nonzero / max(total, 1)

    def prunable_weights(self, model: nn.Module):
        return [(n, m.weight) for n, m in model.named_modules() if n and is_prunable(m)]

    def record(self, phase: str, train_loss: float | None = None, removed: int = 0) -> dict[str, Any]:
        ev = evaluate(self.work, self.data, limit=self.eval_limit, metric=self.score)
        counted = self.work
        if not self.s.structured:  # summarize deep-copies the model, which prune masks' cached weights refuse
            counted = copy_model(self.work)
            make_permanent(counted)
        rec = {
            "step": self.step,
            "phase": phase,
            "removed": removed,
            "channels": self.channels(self.work),
            "macs": count_macs(counted, self.input_shape),
            "params": count_params(self.work),
            "nonzero_fraction": self.nonzero_fraction(self.work),
            "accuracy": ev.accuracy,
            "loss": ev.loss,
            "metric": ev.metric.name,
            "train_loss": train_loss,
            "seconds": time.perf_counter() - self.started,
        }
        if self.base_latency is not None:
            from analysis.latency import measure_latency

            lat = measure_latency(self.work, self.input_shape, runs=LATENCY_RUNS).median_ms
            rec["latency_fraction"] = lat / self.base_latency
            macs_frac = rec["macs"] / self.base_macs
            if macs_frac > 0:
                self.latency_correction = rec["latency_fraction"] / macs_frac
        self.trajectory.append(rec)
        self.last_good = copy_model(self.work)
        if self.on_step:
            self.on_step(rec)
        return rec

    def met(self) -> bool:
        if self.s.target_kind == "latency":
            last = self.trajectory[-1]
            return last.get("latency_fraction", 1.0) <= self.s.target_value + 1e-9
        # Unstructured amounts are whole weights: allow the rounding of round(s x total) (one weight).
        total = sum(w.numel() for _, w in self.prunable_weights(self.work))
        tol = 1e-9 if self.s.structured else 1.0 / max(total, 1)
        return self.fraction(self.work, self.s.target_kind) <= self.target_fraction + tol

    def check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise _Stop

    # training
    def train_epochs(self, epochs: float, penalty=None) -> float | None:
        batches = batches_for(epochs, len(self.data.x_train), self.ft.batch_size)
        if batches <= 0:
            return None
        log = train(
            self.work, self.data, batches, self.ft,
            teacher=self.teacher if self.ft.distill or self.data.y_train is None else None,
            penalty=penalty, lr_schedule=self.s.lr_schedule, seed=self.step, should_stop=self.should_stop,
        )  # fmt: skip
        if log.stopped:
            raise _Stop
        return log.loss

    # structured pruning
    def current_groups(self) -> list[PruningGroup]:
        return find_groups(self.work, self.input_shape)

    def order(self, criterion: str, normalize: str) -> tuple[list[PruningGroup], list[tuple[str, int]]]:
        """The current groups and their global removal order (least important first)."""
        groups = find_groups(self.work, self.input_shape)
        if criterion in SPARSITY_METHODS:
            scores = channel_values(self.work, criterion, groups)
        else:
            scores = group_scores(self.work, groups, criterion, self.data, self.s.max_samples)
        _, order = rank_globally(
            scores,
            {g.name: g.channels for g in groups},
            normalize=normalize,
            min_fraction=self.s.min_fraction,
            floors=self.floors,
        )
        return groups, order

    def pruned_copy(self, groups, order, k: int) -> nn.Module:
        model = copy_model(self.work)
        removal = {n: c for n, c in select(order, k, [g.name for g in groups]).items() if c}
        if removal:
            remove_channels(model, example_input(self.input_shape), groups, removal)
        return model

    def channels_for(self, groups, order, goal: float) -> int:
        """The fewest channels, taken in `order`, whose removal brings the target quantity to `goal` (all
        removable channels if none does)."""
        kind = self.s.target_kind
        if kind == "channels":
            total = sum(g.channels for g in groups)
            keep = goal * self.base_channels
            return max(0, min(len(order), math.ceil(total - keep - 1e-9)))
        low, high = 0, len(order)
        if self.fraction(self.pruned_copy(groups, order, high), kind) > goal + 1e-9:
            return high
        while low < high:  # the quantity falls as channels go: bisect for the first k that meets the goal
            mid = (low + high) // 2
            if self.fraction(self.pruned_copy(groups, order, mid), kind) <= goal + 1e-9:
                high = mid
            else:
                low = mid + 1
        return low

    def remove(self, groups, order, k: int) -> int:
        """Remove the first `k` channels of `order`, then re-estimate the BatchNorm statistics (the inputs
        of every norm after a removed channel changed; `recalibrate_bn`) before any training."""
        removal = {n: c for n, c in select(order, k, [g.name for g in groups]).items() if c}
        if removal:
            remove_channels(self.work, example_input(self.input_shape), groups, removal)
            recalibrate_bn(self.work, self.data)
        return sum(len(c) for c in removal.values())


def run_schedule(
    model: nn.Module,
    data: Dataset,
    settings: ScheduleSettings | Mapping[str, Any],
    input_shape: tuple[int, ...] | None = None,
    *,
    finetune: FinetuneSettings | None = None,
    progress: Progress | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    eval_limit: int | None = None,
    metric: str | Scoring = "auto",
) -> ScheduleResult:
    """Run `settings`' schedule on a copy of `model` (never changed) and return the result.

    `finetune` supplies the training settings (learning rate, batch size, distillation from the original
    model, seed; its `epochs` is not used: the schedule says how long to train); default
    `recovery_finetune`. `progress(done, total)` counts steps; `on_step(record)` gets each trajectory record
    as it is made (a live chart); `should_stop()` is polled between batches and steps: the run then ends and
    returns the model as it was after the last whole step. `eval_limit` caps the evaluation samples per step.
    Each step is scored in `metric` against the original model (`accuracy` in the trajectory holds the
    score, `metric` names it); without labels, training learns the original model's outputs.
    """
    settings = ScheduleSettings.from_dict(settings)
    input_shape = input_shape if input_shape is not None else data.input_shape
    ft = finetune if finetune is not None else recovery_finetune(len(data.x_train))
    run = _Run(model, data, settings, input_shape, ft, progress, on_step, should_stop, eval_limit, metric)
    method = schedule_method(settings.method)
    total = method.progress_steps(settings) + (1 if settings.finetune_epochs else 0)

    def report(done: int) -> None:
        if progress:
            progress(min(done, total), total)

    evidence: dict[str, Any] = {}
    run.record("original")
    stopped = False
    try:
        method.run(run, report, evidence)
        if settings.finetune_epochs:
            run.check_stop()
            run.step += 1
            loss = run.train_epochs(settings.finetune_epochs)
            run.record("finetune", loss, 0)
            report(total)
    except _Stop:
        stopped = True
        run.work = run.last_good
        make_permanent(run.work)
        run.notes.append(f"stopped by request: the model is the one after step {run.trajectory[-1]['step']}")
    met = run.met()
    if not met and not stopped:
        run.notes.append(f"target {settings.target_kind}={settings.target_value:g} not met")
    return ScheduleResult(
        model=run.work.eval(),
        trajectory=run.trajectory,
        notes=run.notes,
        stopped=stopped,
        settings=settings,
        met=met,
        seconds=time.perf_counter() - run.started,
        evidence=evidence if method.sparsity else None,
    )


__all__ = [
    "RECOVERY_LR",
    "RECOVERY_LR_SCHEDULE",
    "SCHEDULE_METHODS",
    "ScheduleResult",
    "ScheduleSettings",
    "SCHEDULE_TARGETS",
    "agp_sparsity",
    "recovery_epochs",
    "recovery_finetune",
    "run_schedule",
]
