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
accuracy units as in the sensitivity sweep; with data, the pruned model is evaluated and steps undone
until the measured drop fits).

MACs of a candidate are computed from the layer costs and the groups' channel maps: a Conv/Linear's MACs
scale with the fraction of output channels and the fraction of input channels it keeps (a depthwise conv
with its channel fraction once); the final plan is checked by pruning a copy for real and counting.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from analysis.compression.budget import BUDGET_KINDS, Budget, MacModel  # noqa: F401  (part of this API)
from analysis.compression.plan import CompressionPlan, FinetuneSettings
from analysis.compression.pruning import prune_structured, pruning_groups
from analysis.cost import size_bytes, summarize
from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.progress import Progress
from analysis.sensitivity.groups import PruningGroup


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


def _curves(sensitivity, groups: list[PruningGroup], max_ratio: float):
    """Per group: [(ratio, cumulative max drop, cumulative max loss increase)], starting at (0, 0, 0)."""
    from analysis.sensitivity.sweep import SensitivityResult

    if isinstance(sensitivity, Mapping):
        sensitivity = SensitivityResult.from_dict(sensitivity)
    if sensitivity.kind != "structured":
        raise WorkbenchError(
            f"suggested plans need a structured sensitivity sweep, got kind {sensitivity.kind!r}: "
            "run `sensitivity --kind structured`"
        )
    known = {g.name for g in groups}
    unknown = [name for name in sensitivity.layers if name not in known]
    if unknown:
        raise WorkbenchError(
            f"the sensitivity sweep has group {unknown[0]!r}, which this model does not: "
            "was it run on another model?"
        )
    curves = {}
    for name, curve in sensitivity.layers.items():
        points = [(0.0, 0.0, 0.0)]
        worst_drop = worst_loss = 0.0
        for r, acc, loss in sorted(zip(curve.values, curve.accuracy, curve.loss, strict=True)):
            if r <= 0 or r > max_ratio + 1e-12:
                continue
            # A curve that wiggles back up is noise: never predict that pruning more helps.
            worst_drop = max(worst_drop, sensitivity.baseline_accuracy - acc)
            worst_loss = max(worst_loss, loss - sensitivity.baseline_loss)
            points.append((float(r), worst_drop, worst_loss))
        curves[name] = points
    return sensitivity, curves


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
        finetune=finetune if finetune is not None else {},
    )


def _pruned(model: nn.Module, ratios: Mapping[str, float], input_shape, criterion: str, data):
    pruned = copy.deepcopy(model).eval()
    active = {name: r for name, r in ratios.items() if r > 0}
    prune_structured(pruned, active, input_shape, criteria=dict.fromkeys(active, criterion), data=data)
    return pruned


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
    work = copy.deepcopy(model).eval()
    groups = pruning_groups(work, input_shape)
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
        pos, steps, measured_drop = _fit_drop(budget, macs, curves, ratios_of, pruned_copy, sens, data, notes)
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


def _fit_drop(budget: Budget, macs: MacModel, curves, ratios_of, pruned_copy, sens, data, notes):
    """Greedy steps within the predicted accuracy drop; with data, steps undone until the evaluated drop
    of the pruned model fits."""
    pos, steps = _greedy(macs, curves, None, budget.value)
    measured_drop = None
    if data is not None:
        while True:
            measured_drop = sens.baseline_accuracy - evaluate(pruned_copy(ratios_of(pos)), data).accuracy
            if measured_drop <= budget.value + 1e-9 or not steps:
                break
            last = steps.pop()  # undo the last step: go back to the group's previous point
            name = last["group"]
            earlier = [s for s in steps if s["group"] == name]
            pos[name] = (
                next(i for i, p in enumerate(curves[name]) if p[0] == earlier[-1]["ratio"]) if earlier else 0
            )
        notes.append("the accuracy budget was checked by evaluating the pruned model (no fine-tuning)")
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
    groups = pruning_groups(work, input_shape)
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
        finetune=finetune if finetune is not None else {},
    )
    return plan, ratio


# ------------------------------------------------------------------ mixed: pruning, rank or bits per layer

METHODS = ("prune", "rank", "bits")
_SWEEP_METHOD = {"structured": "prune", "lowrank": "rank", "quant": "bits"}
_UNTOUCHED = 32


@dataclass(frozen=True)
class _Option:
    """One point of one unit's curve; method "" is the unit untouched. `drop`/`loss`: predicted accuracy
    drop / loss increase (accuracy units, nats), made non-decreasing along the curve; savings are alone."""

    method: str
    level: float
    drop: float = 0.0
    loss: float = 0.0
    macs_saved: float = 0.0
    bytes_saved: float = 0.0


_NONE = _Option("", 0.0)


@dataclass(frozen=True)
class MixedSuggestion:
    """A per-layer choice among structured pruning, SVD rank and weight bits that meets a budget.

    `plan_dict`: the plan as JSON-ready data ({"default", "layers": {name: {"prune"|"rank"|"bits": v}},
    "finetune"}); `plan`: the same as a `CompressionPlan` where that class accepts the keys used (per-layer
    `rank` needs the extended plan), else None. `choices`: one row per transformed layer or group (layer,
    method, level, macs_saved and bytes_saved alone, predicted_drop, members). `predicted_drop`: the sum
    of the choices' single-transform drops from the sweeps, clipped to [0, 1] accuracy units (an
    estimate). `mac_fraction` / `size_fraction`: after / before, counted on the really transformed model
    when `measured`, else predicted from the sweeps. `met`: whether the budget holds (by those counts).
    """

    plan_dict: dict
    plan: CompressionPlan | None
    budget: Budget
    choices: list[dict]
    predicted_drop: float
    mac_fraction: float
    size_fraction: float
    met: bool
    measured: bool
    steps: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan_dict,
            "budget": str(self.budget),
            "choices": self.choices,
            "predicted_drop": self.predicted_drop,
            "mac_fraction": self.mac_fraction,
            "size_fraction": self.size_fraction,
            "met": self.met,
            "measured": self.measured,
            "steps": self.steps,
            "notes": self.notes,
        }

    def to_frame(self):
        """The choice table as a pandas DataFrame, one row per choice."""
        import pandas as pd

        columns = ["layer", "method", "level", "macs_saved", "bytes_saved", "predicted_drop"]
        return pd.DataFrame([{k: row[k] for k in columns} for row in self.choices], columns=columns)


def parse_methods(methods: str | Sequence[str]) -> tuple[str, ...]:
    """`"prune,rank bits"` or a sequence -> the methods in canonical order; unknown names are refused."""
    items = methods.replace(",", " ").split() if isinstance(methods, str) else [str(m) for m in methods]
    items = [m.strip().lower() for m in items if str(m).strip()]
    aliases = {"prune": "prune", "pruning": "prune", "rank": "rank", "lowrank": "rank", "bits": "bits",
               "quant": "bits"}  # fmt: skip
    unknown = [m for m in items if m not in aliases]
    if unknown:
        raise WorkbenchError(
            f"unknown method {unknown[0]!r}: choose from prune, rank, bits (e.g. prune,rank,bits)"
        )
    chosen = {aliases[m] for m in items}
    if not chosen:
        raise WorkbenchError("no methods given: choose from prune, rank, bits (e.g. prune,rank,bits)")
    return tuple(m for m in METHODS if m in chosen)


def _as_sweep(obj):
    """A SensitivityResult from a result or its JSON dict (lowrank dicts keep rank/macs/params saved)."""
    from analysis.compression.transforms import LowRankSensitivity
    from analysis.sensitivity.sweep import SensitivityCurve, SensitivityResult

    if isinstance(obj, SensitivityResult):
        return obj
    if not isinstance(obj, Mapping):
        raise WorkbenchError(
            f"not a sensitivity result: {type(obj).__name__}; give a sweep result or its JSON"
        )
    if obj.get("kind") != "lowrank":
        return SensitivityResult.from_dict(obj)
    try:
        layers, ranks, macs, params = {}, {}, {}, {}
        for name, entry in obj["layers"].items():
            values = tuple(float(v) for v in entry["ratios"])
            layers[name] = SensitivityCurve(
                values, tuple(map(float, entry["accuracy"])), tuple(map(float, entry["loss"]))
            )
            ranks[name] = tuple(int(v) for v in entry.get("rank", ()))
            macs[name] = tuple(int(v) for v in entry["macs_saved"])
            params[name] = tuple(int(v) for v in entry["params_saved"])
        return LowRankSensitivity(
            kind="lowrank",
            baseline_accuracy=float(obj["baseline"]["accuracy"]),
            baseline_loss=float(obj["baseline"]["loss"]),
            seconds=float(obj.get("seconds", 0.0)),
            layers=layers,
            notes=tuple(obj.get("notes", ())),
            samples=int(obj.get("samples", 0)),
            ranks=ranks,
            macs_saved=macs,
            params_saved=params,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkbenchError(f"not a lowrank sensitivity result: missing or bad {exc}") from exc


def _sweeps_by_method(sweeps) -> dict[str, Any]:
    if sweeps is None:
        return {}
    items = list(sweeps.values()) if isinstance(sweeps, Mapping) and "kind" not in sweeps else (
        [sweeps] if isinstance(sweeps, Mapping) or not isinstance(sweeps, Sequence) else list(sweeps)
    )  # fmt: skip
    out: dict[str, Any] = {}
    for item in items:
        result = _as_sweep(item)
        method = _SWEEP_METHOD.get(result.kind)
        if method is None:
            raise WorkbenchError(
                f"a {result.kind!r} sweep cannot guide a mixed plan: give structured, lowrank or quant sweeps"
            )
        if method in out:
            raise WorkbenchError(f"two {result.kind!r} sweeps given: give one per kind")
        out[method] = result
    return out


def _monotone(points, baseline_acc: float, baseline_loss: float):
    """[(x, drop, loss increase)] in the given order (least to most compressed), never predicting that
    compressing more helps (a curve that wiggles back up is noise)."""
    worst_drop = worst_loss = 0.0
    out = []
    for x, acc, loss in points:
        worst_drop = max(worst_drop, baseline_acc - acc)
        worst_loss = max(worst_loss, loss - baseline_loss)
        out.append((x, worst_drop, worst_loss))
    return out


def _layer_options(model: nn.Module, sweeps: Mapping[str, Any], methods, notes: list[str]):
    """Per layer: the rank and bits options from the lowrank and quant sweeps."""
    from analysis.compression.quantization import SCALE_BYTES

    modules = dict(model.named_modules())
    options: dict[str, list[_Option]] = {}

    def weight_of(name: str, kind: str):
        module = modules.get(name) if name else None
        if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise WorkbenchError(
                f"the {kind} sweep has layer {name!r}, which this model lacks: another model?"
            )
        return module.weight

    if "rank" in methods and "rank" in sweeps:
        sens = sweeps["rank"]
        for name, curve in sens.layers.items():
            w = weight_of(name, "lowrank")
            macs = sens.macs_saved.get(name, ())
            params = sens.params_saved.get(name, ())
            if len(macs) != len(curve.values) or len(params) != len(curve.values):
                raise WorkbenchError(
                    f"the lowrank sweep of {name!r} lacks MACs/params saved per point: rerun it"
                )
            rows = sorted(
                zip(curve.values, curve.accuracy, curve.loss, macs, params, strict=True), reverse=True
            )
            mono = _monotone([(r[0], r[1], r[2]) for r in rows], sens.baseline_accuracy, sens.baseline_loss)
            for (f, drop, loss), row in zip(mono, rows, strict=True):
                options.setdefault(name, []).append(
                    _Option("rank", float(f), drop, loss, float(row[3]), float(row[4]) * w.element_size())
                )
    if "bits" in methods and "bits" in sweeps:
        sens = sweeps["bits"]
        for name, curve in sens.layers.items():
            w = weight_of(name, "quant")
            rows = sorted(zip(curve.values, curve.accuracy, curve.loss, strict=True), reverse=True)
            rows = [r for r in rows if r[0] < _UNTOUCHED]
            for b, drop, loss in _monotone(rows, sens.baseline_accuracy, sens.baseline_loss):
                stored = math.ceil(w.numel() * b / 8) + w.shape[0] * SCALE_BYTES
                saved = w.numel() * w.element_size() - stored
                if saved > 0:
                    options.setdefault(name, []).append(
                        _Option("bits", int(b), drop, loss, 0.0, float(saved))
                    )
    return options


def _mixed_greedy(units, saving, need: float, conflicts, allowed: set[str]):
    """Greedy moves until `saving(pos) >= need`: each move sets one unit to another of its options (and
    clears the units it conflicts with), choosing the least accuracy drop per unit saved, then loss
    increase per unit saved, then the larger saving. Once met, units are moved to cheaper options while
    the budget still holds (undoing the overshoot of the last jump)."""

    def cost(p):
        return (sum(units[u][i].drop for u, i in p.items()), sum(units[u][i].loss for u, i in p.items()))

    def move(p, u, j):
        trial = {**p, u: j}
        if j:
            for other in conflicts[u]:
                trial[other] = 0
        return trial

    pos = dict.fromkeys(units, 0)
    current, steps = saving(pos), []
    while current < need - 1e-9:
        (drop0, loss0), best, best_key = cost(pos), None, None
        for u, opts in units.items():
            for j, opt in enumerate(opts):
                if j == pos[u] or (j and opt.method not in allowed):
                    continue
                trial = move(pos, u, j)
                gained = saving(trial) - current
                if gained <= 1e-9:
                    continue
                drop1, loss1 = cost(trial)
                key = ((drop1 - drop0) / gained, (loss1 - loss0) / gained, -gained)
                if best_key is None or key < best_key:
                    best, best_key = (u, j, trial, gained), key
        if best is None:
            break
        u, j, pos, gained = best
        current += gained
        steps.append(
            {"unit": u[1], "method": units[u][j].method, "level": units[u][j].level, "saved": current}
        )
    if current >= need - 1e-9:
        while True:
            best, best_cost = None, cost(pos)
            for u, opts in units.items():
                for j in range(len(opts)):
                    if j == pos[u] or (j and opts[j].method not in allowed):
                        continue
                    trial = move(pos, u, j)
                    if saving(trial) >= need - 1e-9 and cost(trial) < best_cost:
                        best, best_cost = (u, j, trial), cost(trial)
            if best is None:
                break
            u, j, pos = best
            steps.append({"unit": u[1], "method": units[u][j].method or "none", "level": units[u][j].level,
                          "step_back": True})  # fmt: skip
    return pos, steps, saving(pos) >= need - 1e-9


def suggest_mixed(
    model: nn.Module,
    data: Dataset | None,
    budget: Budget | str,
    sweeps=None,
    *,
    methods: str | Sequence[str] = METHODS,
    input_shape: tuple[int, ...] | None = None,
    criterion: str = "l1",
    max_ratio: float = 0.9,
    ratios: Sequence[float] | None = None,
    rank_fractions: Sequence[float] | None = None,
    bits: Sequence[int] | None = None,
    limit: int | None = None,
    finetune: FinetuneSettings | Mapping[str, Any] | None = None,
    measure: bool = True,
    progress: Progress | None = None,
) -> MixedSuggestion:
    """Per layer at most one of structured pruning (of its group), SVD rank or weight bits, chosen greedily
    by accuracy lost per MAC saved (`macs=F` budget) or per stored byte saved (`size=F`; bytes = params x
    bits / 8, so bits save bytes but not MACs, rank and pruning save both).

    `sweeps`: sensitivity results (or their JSON dicts) of kind structured (per group), lowrank (per layer,
    `analysis.lowrank_sensitivity`) and quant (per layer); a method in `methods` without its sweep has it
    run on `data` (with `ratios`, `rank_fractions`, `bits`, `limit` samples). A group that is pruned blocks
    rank and bits on every Conv/Linear layer it touches (outputs or inputs), and a layer takes rank or bits,
    not both (`validate_transform_settings` refuses rank with bits < 32). With `measure`, the plan is applied
    to a copy (pruned, then factored) and its MACs and bytes counted; a MAC shortfall tightens the target
    (up to four times). An unmet budget is reported (`met` False, with a note). `model` is not changed.
    """
    budget = Budget.parse(budget)
    if budget.kind not in ("macs", "size"):
        raise WorkbenchError(
            f"mixed suggestions take a macs=F or size=F budget, got {budget}: use suggest for latency/drop"
        )
    methods = parse_methods(methods)
    if not 0.0 < max_ratio < 1.0:
        raise WorkbenchError(f"max_ratio must be in (0, 1), got {max_ratio}")
    if input_shape is None:
        if data is None:
            raise WorkbenchError("give the input shape or the data, to count MACs")
        input_shape = data.input_shape
    work = copy.deepcopy(model).eval()
    given = _sweeps_by_method(sweeps)
    notes = [
        "predicted drop = sum of each choice's drop measured alone in its sweep (an estimate: choices interact; "
        "clipped to [0, 1] accuracy units, before any fine-tuning)"
    ]
    unused = [m for m in given if m not in methods]
    if unused:
        notes.append(f"sweeps for {', '.join(unused)} given but not among the methods: ignored")
    todo = [m for m in methods if m not in given]
    if todo and data is None:
        raise WorkbenchError(f"no {todo[0]} sweep given and no data to run it: pass sweeps or data")
    for m in todo:
        given[m] = _run_sweep(m, work, data, ratios, rank_fractions, bits, limit, progress)
        notes.append(f"{m}: sweep run here ({given[m].kind}, {given[m].samples} samples)")

    groups = pruning_groups(work, input_shape) if "prune" in methods else []
    macs = MacModel(work, input_shape, groups)
    elem = next((p.element_size() for p in work.parameters()), 4)
    total_macs = float(macs.total)
    total_bytes = float(size_bytes(work))
    by_macs = budget.kind == "macs"
    units: dict[tuple[str, str], list[_Option]] = {}
    occupied: dict[str, set[str]] = {g.name: set() for g in groups}
    for layer, links in macs.links.items():
        for group, _dim, _count in links:
            occupied[group].add(layer)
    if "prune" in given and "prune" in methods:
        _, curves = _curves(given["prune"], groups, max_ratio)
        for name, points in curves.items():
            opts = [_NONE]
            for r, drop, loss in points[1:]:
                saved_macs = macs.macs({}) - macs.macs({name: r})
                saved_bytes = (macs.params({}) - macs.params({name: r})) * elem
                opts.append(_Option("prune", r, drop, loss, saved_macs, saved_bytes))
            units[("group", name)] = opts
    for name, opts in _layer_options(work, given, methods, notes).items():
        units[("layer", name)] = [_NONE, *opts]
    if not units:
        raise WorkbenchError("the sweeps hold no layer or group to choose from: check the methods and sweeps")
    conflicts: dict[tuple[str, str], set] = {u: set() for u in units}
    for g, layers in occupied.items():
        if ("group", g) not in units:
            continue
        for layer in layers:
            if ("layer", layer) in units:
                conflicts[("group", g)].add(("layer", layer))
                conflicts[("layer", layer)].add(("group", g))

    def ratios_of(pos) -> dict[str, float]:
        return {u[1]: units[u][i].level for u, i in pos.items() if u[0] == "group" and i}

    pruned_base = macs.macs({}) if by_macs else macs.params({}) * elem

    def saving(pos) -> float:
        r = ratios_of(pos)
        total = 0.0
        if r:
            total += pruned_base - (macs.macs(r) if by_macs else macs.params(r) * elem)
        for u, i in pos.items():
            if u[0] == "layer" and i:
                total += units[u][i].macs_saved if by_macs else units[u][i].bytes_saved
        return total

    whole = total_macs if by_macs else total_bytes
    need = (1.0 - budget.value) * whole
    pos, steps, met = _best_greedy(units, saving, need, conflicts, methods, notes)

    def predicted(p) -> tuple[float, float]:
        saved_macs = _predicted_saving(units, macs, p, ratios_of, True, elem)
        saved_bytes = _predicted_saving(units, macs, p, ratios_of, False, elem)
        return (total_macs - saved_macs) / total_macs, (total_bytes - saved_bytes) / total_bytes

    mac_fraction, size_fraction = predicted(pos)
    measured = False
    if measure:
        for attempt in range(5):
            mac_fraction, size_fraction = _measure(work, input_shape, units, pos, ratios_of, criterion, data)
            measured = True
            fraction = mac_fraction if by_macs else size_fraction
            met = fraction <= budget.value + 1e-9
            if met or attempt == 4:
                break
            # The sweeps' savings differ from the transformed model's counts: ask for the shortfall more.
            shortfall = (fraction - budget.value) * whole
            need = saving(pos) + shortfall
            pos, steps, ok = _best_greedy(units, saving, need, conflicts, methods, notes)
            notes.append(
                f"counted {fraction:.4f} on the transformed model: greedy rerun for {shortfall:.0f} more"
            )
            if not ok:
                mac_fraction, size_fraction = _measure(
                    work, input_shape, units, pos, ratios_of, criterion, data
                )
                fraction = mac_fraction if by_macs else size_fraction
                met = fraction <= budget.value + 1e-9
                break
    else:
        met = (mac_fraction if by_macs else size_fraction) <= budget.value + 1e-9
    if not met:
        notes.append(
            f"budget {budget} NOT met: the closest the curves allow keeps "
            f"{(mac_fraction if by_macs else size_fraction):.3f} of the {'MACs' if by_macs else 'bytes'}"
        )
    choices, layers = [], {}
    for u, i in pos.items():
        if not i:
            continue
        opt = units[u][i]
        level = int(opt.level) if opt.method == "bits" else float(opt.level)
        row = {"layer": u[1], "method": opt.method, "level": level, "macs_saved": opt.macs_saved,
               "bytes_saved": opt.bytes_saved, "predicted_drop": opt.drop}  # fmt: skip
        if u[0] == "group":
            row["members"] = sorted(occupied.get(u[1], ()))
        choices.append(row)
        layers[u[1]] = {opt.method: level}
    choices.sort(
        key=lambda row: row["predicted_drop"] / max(row["macs_saved" if by_macs else "bytes_saved"], 1)
    )
    drop = min(1.0, max(0.0, sum(row["predicted_drop"] for row in choices)))
    plan_dict = {
        "default": {"prune": 0.0, "criterion": criterion, "structured": True, "bits": _UNTOUCHED},
        "layers": layers,
        "finetune": dict(
            finetune if isinstance(finetune, Mapping) else (finetune.to_dict() if finetune else {})
        ),
    }
    try:
        plan = CompressionPlan.from_dict(plan_dict)
    except WorkbenchError:
        plan = None
        notes.append("this CompressionPlan does not take per-layer rank yet: the plan is in plan_dict")
    return MixedSuggestion(plan_dict, plan, budget, choices, drop, mac_fraction, size_fraction, met, measured,
                           steps, notes)  # fmt: skip


def _predicted_saving(units, macs: MacModel, pos, ratios_of, by_macs: bool, elem: int) -> float:
    """MACs (or bytes) saved by the choices at `pos`, predicted from the sweeps and the group maps."""
    r = ratios_of(pos)
    total = (macs.macs({}) - macs.macs(r)) if by_macs else (macs.params({}) - macs.params(r)) * elem
    for u, i in pos.items():
        if u[0] == "layer" and i:
            total += units[u][i].macs_saved if by_macs else units[u][i].bytes_saved
    return total


def _best_greedy(units, saving, need, conflicts, methods, notes):
    """The greedy over all methods; if it stalls short of the budget (a transform on a layer can block a
    group that would save more), rerun with each smaller set of methods and keep the best: the met run
    with the least predicted drop, or else the run that saves most."""
    import itertools

    runs = []
    for size in range(len(methods), 0, -1):
        for subset in itertools.combinations(methods, size):
            pos, steps, met = _mixed_greedy(units, saving, need, conflicts, set(subset))
            runs.append((met, pos, steps, subset))
            if met and size == len(methods):
                return pos, steps, True
    met_runs = [r for r in runs if r[0]]
    if met_runs:
        best = min(met_runs, key=lambda r: sum(units[u][i].drop for u, i in r[1].items()))
        notes.append(
            f"the greedy over all methods stalled; methods {', '.join(best[3])} alone meet the budget"
        )
    else:
        best = max(runs, key=lambda r: saving(r[1]))
    return best[1], best[2], best[0]


def _measure(work, input_shape, units, pos, ratios_of, criterion, data) -> tuple[float, float]:
    """MACs and stored bytes (bits at b bits plus a float32 scale per output channel) after / before,
    counted on a copy pruned, then factored."""
    from analysis.compression.quantization import quantized_size_bytes
    from analysis.compression.transforms import apply_transforms

    ratios = ratios_of(pos)
    model = _pruned(work, ratios, input_shape, criterion, data) if ratios else copy.deepcopy(work)
    rank = {u[1]: {"rank": units[u][i].level} for u, i in pos.items() if u[0] == "layer" and i
            and units[u][i].method == "rank"}  # fmt: skip
    bits = {u[1]: int(units[u][i].level) for u, i in pos.items() if u[0] == "layer" and i
            and units[u][i].method == "bits"}  # fmt: skip
    if rank:
        model = apply_transforms(model, rank).model
    macs = summarize(model, input_shape).total_macs / summarize(work, input_shape).total_macs
    return macs, quantized_size_bytes(model, bits) / size_bytes(work)


def _run_sweep(method, model, data, ratios, rank_fractions, bits, limit, progress):
    from analysis.sensitivity.sweep import sensitivity_sweep

    if method == "prune":
        return sensitivity_sweep(
            model, data, kind="structured", ratios=ratios, limit=limit, progress=progress
        )
    if method == "bits":
        return sensitivity_sweep(model, data, kind="quant", bits=bits, limit=limit, progress=progress)
    from analysis.compression.transforms import DEFAULT_RANK_FRACTIONS, lowrank_sensitivity

    fractions = DEFAULT_RANK_FRACTIONS if rank_fractions is None else rank_fractions
    return lowrank_sensitivity(model, data, fractions, limit=limit, progress=progress)


__all__ = [
    "METHODS",
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
