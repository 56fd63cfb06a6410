"""Suggested plans: per-group pruning ratios that meet a budget, chosen from structured sensitivity curves.

Greedy, by accuracy lost per MAC saved: starting from nothing pruned, each step moves one group to a higher
ratio on its sensitivity curve, picking the step that loses the least accuracy per MAC it saves (loss
increase per MAC breaks ties, since accuracy moves in whole samples). A step that alone meets the budget
is preferred by its absolute cost, so the last step does not overshoot. The accuracy of several pruned
groups is predicted as the sum of their single-group drops (the sweep measured each group alone); that
sum is an estimate, and the notes say so.

Budgets (`Budget.parse`): `macs=0.5` (keep at most half the MACs), `latency=0.6` (at most 60% of the
measured latency; MACs are the guide, then the pruned model is timed against the original in alternating
rounds and tightened until it meets the target), `drop=0.01` (predicted accuracy drop at most one point,
in the sweep's metric and units (accuracy: 0.01 = one point); with data, the pruned model is evaluated and steps undone
until the measured drop fits).

MACs of a candidate are computed from the layer costs and the groups' channel maps: a Conv/Linear's MACs
scale with the fraction of output channels and the fraction of input channels it keeps (a depthwise conv
with its channel fraction once); the final plan is checked by pruning a copy for real and counting.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from analysis.compression.budget import BUDGET_KINDS, Budget, MacModel  # noqa: F401  (part of this API)
from analysis.compression.budget import pruned_copy as _pruned
from analysis.compression.budget import structured_curves as _curves
from analysis.compression.plan import CompressionPlan, FinetuneSettings
from analysis.compression.suggest_mixed import MIXED_METHODS, MixedSuggestion, parse_methods, suggest_mixed  # noqa: F401  (re-exported)
from analysis.cost import summarize
from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.metrics import scoring
from analysis.progress import Progress
from analysis.transforms.groups import find_groups


@dataclass(frozen=True)
class PlanSuggestion:
    """A suggested plan and what it is expected to do.

    `ratios`: group name -> ratio; `predicted_drop`: sum of the groups' single-group accuracy drops;
    `mac_fraction`: MACs after / before, counted on the really pruned model; `latency_fraction`: measured
    after / before (latency budgets only); `measured_drop`: evaluated drop where data was given.
    """

    plan: CompressionPlan
    budget: Budget
    ratios: dict[str, float]
    predicted_drop: float
    mac_fraction: float
    met: bool
    latency_fraction: float | None = None
    measured_drop: float | None = None
    steps: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "budget": str(self.budget),
            "ratios": self.ratios,
            "predicted_drop": self.predicted_drop,
            "measured_drop": self.measured_drop,
            "mac_fraction": self.mac_fraction,
            "latency_fraction": self.latency_fraction,
            "met": self.met,
            "steps": self.steps,
            "notes": self.notes,
        }


def _greedy(
    macs: MacModel,
    curves: dict[str, list[tuple[float, float, float]]],
    target_macs: float | None,
    max_drop: float | None,
    start: Mapping[str, int] | None = None,
) -> tuple[dict[str, int], list[dict]]:
    """Positions on each curve after greedy steps until MACs <= target (or no step fits `max_drop`).

    Each step may jump to any higher point of one group's curve (curves are not convex), choosing the
    least accuracy drop per MAC saved, then loss increase per MAC. Once the target is met, groups are
    stepped back down while the target still holds, undoing any overshoot of the last jump.
    """
    pos = {name: 0 for name in curves} | dict(start or {})

    def ratios_of(p: Mapping[str, int]) -> dict[str, float]:
        return {name: curves[name][i][0] for name, i in p.items()}

    def cost(p: Mapping[str, int]) -> tuple[float, float]:
        return (sum(curves[n][i][1] for n, i in p.items()), sum(curves[n][i][2] for n, i in p.items()))

    steps = []
    current = macs.macs(ratios_of(pos))
    while target_macs is None or current > target_macs:
        total_drop = cost(pos)[0]
        best, best_key = None, None
        for name, points in curves.items():
            for j in range(pos[name] + 1, len(points)):
                trial = dict(pos, **{name: j})
                saved = current - macs.macs(ratios_of(trial))
                if saved <= 0:
                    continue
                d_drop = points[j][1] - points[pos[name]][1]
                d_loss = points[j][2] - points[pos[name]][2]
                if max_drop is not None and total_drop + d_drop > max_drop + 1e-9:
                    continue
                key = (d_drop / saved, d_loss / saved, -saved)
                if best_key is None or key < best_key:
                    best, best_key = (name, j, saved, d_drop), key
        if best is None:
            break
        name, j, saved, d_drop = best
        pos[name] = j
        current -= saved
        steps.append({"group": name, "ratio": curves[name][j][0], "macs": current, "drop": d_drop})
    if target_macs is not None and current <= target_macs:
        while True:  # undo overshoot: step a group back where the target still holds and it costs less
            best, best_cost = None, cost(pos)
            for name, i in pos.items():
                for j in range(i):
                    trial = dict(pos, **{name: j})
                    if macs.macs(ratios_of(trial)) <= target_macs and cost(trial) < best_cost:
                        best, best_cost = trial, cost(trial)
            if best is None:
                break
            changed = next(n for n in pos if pos[n] != best[n])
            pos = best
            steps.append({"group": changed, "ratio": curves[changed][pos[changed]][0], "step_back": True})
    return pos, steps


def _plan_from(ratios: Mapping[str, float], criterion: str, finetune: FinetuneSettings | Mapping | None):
    return CompressionPlan(
        default={"prune": 0.0, "criterion": criterion, "structured": True, "bits": 32},
        layers={name: {"prune": r} for name, r in ratios.items() if r > 0},
        finetune=finetune,
    )


def suggest(
    sensitivity,
    budget: Budget | str,
    *,
    model: nn.Module,
    input_shape: tuple[int, ...] | None = None,
    data: Dataset | None = None,
    criterion: str = "l1",
    max_ratio: float = 0.9,
    finetune: FinetuneSettings | Mapping[str, Any] | None = None,
    batch_size: int = 32,
    threads: int | None = None,
    progress: Progress | None = None,
) -> PlanSuggestion:
    """Per-group structured ratios meeting `budget`, greedily by accuracy lost per MAC saved.

    `sensitivity`: a structured `SensitivityResult` (or its dict form) of this `model`; `max_ratio` caps
    any group's ratio. `input_shape` defaults to `data`'s. Latency budgets are timed at `batch_size` with
    `threads`. `model` is not changed.
    """
    budget = Budget.parse(budget)
    input_shape = _checked(budget, input_shape, data, max_ratio)
    work = copy.deepcopy(model).eval()
    groups = find_groups(work, input_shape)
    sens, curves = _curves(sensitivity, groups, max_ratio)
    macs = MacModel(work, input_shape, groups)
    notes = [
        "accuracy after pruning several groups is predicted as the sum of their single-group drops "
        "from the sweep (an estimate: groups interact)"
    ]
    missing = [g.name for g in groups if g.name not in curves]
    if missing:
        notes.append(f"not in the sweep, left unpruned: {', '.join(missing)}")

    def ratios_of(p):
        return {name: curves[name][i][0] for name, i in p.items()}

    def pruned_copy(ratios) -> nn.Module:
        return _pruned(work, ratios, input_shape, criterion, data)

    def exact_fraction(ratios) -> float:
        return summarize(pruned_copy(ratios), input_shape).total_macs / macs.total

    if budget.kind == "macs":
        pos, steps, fraction, met = _fit_macs(budget, macs, curves, ratios_of, exact_fraction)
        latency_fraction = measured_drop = None
    elif budget.kind == "latency":
        timing = {"batch_size": batch_size, "threads": threads}
        pos, steps, latency_fraction = _fit_latency(budget, macs, curves, ratios_of, pruned_copy, work, input_shape,
                                                    timing, progress, notes)  # fmt: skip
        fraction, measured_drop = exact_fraction(ratios_of(pos)), None
        met = latency_fraction is not None and latency_fraction <= budget.value
    else:
        pos, steps, measured_drop = _fit_drop(
            budget, macs, curves, ratios_of, pruned_copy, sens, data, notes, work
        )
        fraction, latency_fraction = exact_fraction(ratios_of(pos)), None
        met = measured_drop is None or measured_drop <= budget.value + 1e-9
    ratios = {name: r for name, r in ratios_of(pos).items() if r > 0}
    if not met:
        notes.append(
            f"budget {budget} not met within max_ratio {max_ratio}: this is the closest the curves allow"
        )
    predicted = sum(curves[name][i][1] for name, i in pos.items())
    return PlanSuggestion(
        plan=_plan_from(ratios, criterion, finetune),
        budget=budget,
        ratios=ratios,
        predicted_drop=predicted,
        mac_fraction=fraction,
        met=met,
        latency_fraction=latency_fraction,
        measured_drop=measured_drop,
        steps=steps,
        notes=notes,
    )


def _checked(budget: Budget, input_shape, data: Dataset | None, max_ratio: float):
    """The input shape to count MACs at (`data`'s unless given); a bad ratio cap or a size budget (which
    pruning alone does not fit) is one line."""
    if input_shape is None:
        if data is None:
            raise WorkbenchError("give the input shape or the data, to count MACs")
        input_shape = data.input_shape
    if not 0.0 < max_ratio < 1.0:
        raise WorkbenchError(f"max_ratio must be in (0, 1), got {max_ratio}")
    if budget.kind == "size":
        raise WorkbenchError(
            "size budgets are met by bits and rank as well as pruning: use suggest_mixed "
            "(plan suggest --methods prune,rank,bits)"
        )
    return input_shape


def _fit_macs(budget: Budget, macs: MacModel, curves, ratios_of, exact_fraction):
    """Greedy steps to the MAC budget, tightened until the really pruned model's MACs meet it."""
    pos, steps = _greedy(macs, curves, budget.value * macs.total, None)
    fraction = exact_fraction(ratios_of(pos))
    for _ in range(5):  # the analytic count is exact for plain layers; tighten if anything differs
        if fraction <= budget.value + 1e-9:
            break
        pos, more = _greedy(macs, curves, macs.macs(ratios_of(pos)) * budget.value / fraction, None, pos)
        steps += more
        fraction = exact_fraction(ratios_of(pos))
    return pos, steps, fraction, fraction <= budget.value + 1e-9


def _fit_latency(budget: Budget, macs: MacModel, curves, ratios_of, pruned_copy, work, input_shape, timing,
                 progress, notes):  # fmt: skip
    """Greedy steps to a MAC target, then timed against the original and tightened until the measured
    latency fraction meets the budget (at most six timings)."""
    from analysis.latency import compare_latency

    target, latency_fraction = budget.value, None
    pos, steps = _greedy(macs, curves, target * macs.total, None)
    for i in range(6):
        models = {"before": work, "after": pruned_copy(ratios_of(pos))}
        measured = compare_latency(models, input_shape, rounds=6, **timing)
        latency_fraction = measured["after"].median_ms / measured["before"].median_ms
        if progress:
            progress(i + 1, 6)
        if latency_fraction <= budget.value:
            break
        target *= budget.value / latency_fraction
        pos, more = _greedy(macs, curves, target * macs.total, None, pos)
        if not more:
            notes.append("no further step on the curves: the latency target cannot be met within max_ratio")
            break
        steps += more
    notes.append(
        f"latency measured at batch {timing['batch_size']} in alternating rounds (noisy on a busy machine)"
    )
    return pos, steps, latency_fraction


def _fit_drop(budget: Budget, macs: MacModel, curves, ratios_of, pruned_copy, sens, data, notes, original):
    """Greedy steps within the predicted accuracy drop; with data, steps undone until the evaluated drop
    of the pruned model fits."""
    pos, steps = _greedy(macs, curves, None, budget.value)
    measured_drop = None
    if data is not None:
        while True:
            score = scoring(sens.metric.name, original, data)  # scored against the unpruned model
            measured = evaluate(pruned_copy(ratios_of(pos)), data, metric=score).accuracy
            measured_drop = sens.metric.drop(sens.baseline_accuracy, measured)
            if measured_drop <= budget.value + 1e-9 or not steps:
                break
            last = steps.pop()  # undo the last step: go back to the group's previous point
            name = last["group"]
            earlier = [s for s in steps if s["group"] == name]
            pos[name] = (
                next(i for i, p in enumerate(curves[name]) if p[0] == earlier[-1]["ratio"]) if earlier else 0
            )
        notes.append(
            f"the {sens.metric.name} budget was checked by evaluating the pruned model (no fine-tuning)"
        )
    return pos, steps, measured_drop


def suggest_plan(sensitivity, budget: Budget | str, **kwargs: Any) -> CompressionPlan:
    """The plan of `suggest(sensitivity, budget, model=..., ...)`: per-group ratios meeting the budget."""
    return suggest(sensitivity, budget, **kwargs).plan


def uniform_plan(
    model: nn.Module,
    input_shape: tuple[int, ...],
    mac_fraction: float,
    *,
    criterion: str = "l1",
    finetune: FinetuneSettings | Mapping[str, Any] | None = None,
) -> tuple[CompressionPlan, float]:
    """The smallest uniform ratio (to 0.001) whose really pruned model keeps at most `mac_fraction` of the
    MACs; returns the plan and the ratio. For comparing suggested plans at the same MACs."""
    Budget("macs", mac_fraction)
    work = copy.deepcopy(model).eval()
    groups = find_groups(work, input_shape)
    macs = MacModel(work, input_shape, groups)
    target = mac_fraction * macs.total

    def fraction_at(r: float, exact: bool = False) -> float:
        ratios = {g.name: r for g in groups}
        if exact:
            pruned = _pruned(work, ratios, input_shape, criterion, None)
            return summarize(pruned, input_shape).total_macs / macs.total
        return macs.macs(ratios) / macs.total

    low, high = 0.0, 0.999
    if macs.macs({g.name: high for g in groups}) > target:
        raise WorkbenchError(f"no uniform ratio below 1 keeps only {mac_fraction:g} of the MACs")
    for _ in range(30):
        mid = (low + high) / 2
        if macs.macs({g.name: mid for g in groups}) <= target:
            high = mid
        else:
            low = mid
    ratio = math.ceil(high * 1000) / 1000
    while ratio < 0.999 and fraction_at(ratio, exact=True) > mac_fraction + 1e-9:
        ratio = round(ratio + 0.001, 3)
    plan = CompressionPlan(
        default={"prune": ratio, "criterion": criterion, "structured": True, "bits": 32},
        finetune=finetune,
    )
    return plan, ratio


__all__ = [
    "MIXED_METHODS",
    "Budget",
    "MacModel",
    "MixedSuggestion",
    "PlanSuggestion",
    "parse_methods",
    "suggest",
    "suggest_mixed",
    "suggest_plan",
    "uniform_plan",
]
