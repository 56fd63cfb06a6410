"""Mixed suggestions: per layer at most one of structured pruning (of its group), SVD rank or weight bits,
chosen greedily to meet a `macs=F` or `size=F` budget from the structured, lowrank and quant sensitivity
sweeps (`suggest_mixed`). The pruning-only suggestions are in `analysis.compression.suggest`.

One module (the options are in `mixed_options`): the greedy, its fitting and the result share the choice
space.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from analysis.compression.budget import Budget, MacModel, pruned_copy, structured_curves
from analysis.compression.mixed_greedy import best_greedy
from analysis.compression.mixed_options import (
    NONE,
    UNTOUCHED_BITS,
    Option,
    layer_options,
    method_kinds,
    run_sweep,
    sweeps_by_method,
)
from analysis.compression.plan import CompressionPlan, FinetuneSettings
from analysis.cost import size_bytes, summarize
from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.progress import Progress
from analysis.transforms.groups import find_groups

MIXED_METHODS = ("prune", "rank", "bits")


@dataclass(frozen=True)
class MixedSuggestion:
    """A per-layer choice among structured pruning, SVD rank and weight bits that meets a budget.

    `plan_dict`: the plan as JSON-ready data ({"default", "layers": {name: {"prune"|"rank"|"bits": v}},
    "finetune"}); `plan`: the same as a `CompressionPlan` where that class accepts the keys used (per-layer
    `rank` needs the extended plan), else None. `choices`: one row per transformed layer or group (layer,
    method, level, macs_saved and bytes_saved alone, predicted_drop, members). `predicted_drop`: the sum
    of the choices' single-transform drops from the sweeps, in their metric (a fraction's clipped to [0, 1]) (an
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
    # a method's name, "pruning", or the kind whose sweep guides it (lowrank -> rank, quant -> bits)
    aliases = {m: m for m in MIXED_METHODS} | {"pruning": "prune"} | method_kinds()
    unknown = [m for m in items if m not in aliases]
    if unknown:
        raise WorkbenchError(
            f"unknown method {unknown[0]!r}: choose from prune, rank, bits (e.g. prune,rank,bits)"
        )
    chosen = {aliases[m] for m in items}
    if not chosen:
        raise WorkbenchError("no methods given: choose from prune, rank, bits (e.g. prune,rank,bits)")
    return tuple(m for m in MIXED_METHODS if m in chosen)


def suggest_mixed(
    model: nn.Module,
    data: Dataset | None,
    budget: Budget | str,
    sweeps=None,
    *,
    methods: str | Sequence[str] = MIXED_METHODS,
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
    metric: str = "auto",
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
    notes = [
        "predicted drop = sum of each choice's drop measured alone in its sweep (an estimate: choices interact; "
        "in the sweeps' metric, a fraction's drop clipped to [0, 1], before any fine-tuning)"
    ]
    given = _gather_sweeps(
        work, data, sweeps, methods, notes, (ratios, rank_fractions, bits, limit, progress, metric)
    )
    space = _build_space(work, input_shape, given, methods, max_ratio, budget.kind == "macs", notes)
    names = {s.metric.name for s in given.values()}
    if len(names) > 1:
        raise WorkbenchError(
            f"the sweeps use different metrics ({', '.join(sorted(names))}): run them in one"
        )
    space.percent = all(s.metric.percent for s in given.values())
    pos, steps, met, mac_fraction, size_fraction, measured = _fit(
        space, budget, methods, notes, measure, (work, input_shape, criterion, data)
    )
    return _result(space, pos, budget, criterion, finetune, (steps, notes, met, measured),
                   (mac_fraction, size_fraction))  # fmt: skip


def _gather_sweeps(work, data, sweeps, methods, notes, sweep_args) -> dict[str, Any]:
    """The given sweeps by method, with each method's missing sweep run on `data` (notes say which)."""
    ratios, rank_fractions, bits, limit, progress, metric = sweep_args
    given = sweeps_by_method(sweeps)
    unused = [m for m in given if m not in methods]
    if unused:
        notes.append(f"sweeps for {', '.join(unused)} given but not among the methods: ignored")
    todo = [m for m in methods if m not in given]
    if todo and data is None:
        raise WorkbenchError(f"no {todo[0]} sweep given and no data to run it: pass sweeps or data")
    for m in todo:
        given[m] = run_sweep(m, work, data, ratios, rank_fractions, bits, limit, progress, metric)
        notes.append(f"{m}: sweep run here ({given[m].kind}, {given[m].samples} samples)")
    return given


@dataclass
class _Space:
    """The choices: units (("group", name) or ("layer", name)) with their options, which units block which
    (a pruned group blocks rank and bits on the layers it touches), and the model's totals."""

    units: dict[tuple[str, str], list[Option]]
    occupied: dict[str, set[str]]
    conflicts: dict[tuple[str, str], set]
    macs: MacModel
    elem: int
    by_macs: bool
    total_macs: float
    total_bytes: float
    pruned_base: float
    percent: bool = True  # the metric is a fraction (accuracy, agreement): drops clip at 1

    @property
    def whole(self) -> float:
        return self.total_macs if self.by_macs else self.total_bytes

    def ratios_of(self, pos) -> dict[str, float]:
        return {u[1]: self.units[u][i].level for u, i in pos.items() if u[0] == "group" and i}

    def saving(self, pos) -> float:
        """MACs (or bytes) saved at `pos`, as the greedy counts them."""
        r = self.ratios_of(pos)
        total = 0.0
        if r:
            macs = self.macs
            total += self.pruned_base - (macs.macs(r) if self.by_macs else macs.params(r) * self.elem)
        for u, i in pos.items():
            if u[0] == "layer" and i:
                total += self.units[u][i].macs_saved if self.by_macs else self.units[u][i].bytes_saved
        return total

    def predicted(self, pos) -> tuple[float, float]:
        """MACs and bytes after / before at `pos`, predicted from the sweeps."""
        saved_macs = _predicted_saving(self.units, self.macs, pos, self.ratios_of, True, self.elem)
        saved_bytes = _predicted_saving(self.units, self.macs, pos, self.ratios_of, False, self.elem)
        return (self.total_macs - saved_macs) / self.total_macs, (
            self.total_bytes - saved_bytes
        ) / self.total_bytes


def _build_space(work, input_shape, given, methods, max_ratio: float, by_macs: bool, notes) -> _Space:
    groups = find_groups(work, input_shape) if "prune" in methods else []
    macs = MacModel(work, input_shape, groups)
    elem = next((p.element_size() for p in work.parameters()), 4)
    total_macs = float(macs.total)
    total_bytes = float(size_bytes(work))
    units: dict[tuple[str, str], list[Option]] = {}
    occupied: dict[str, set[str]] = {g.name: set() for g in groups}
    for layer, links in macs.links.items():
        for group, _dim, _count in links:
            occupied[group].add(layer)
    if "prune" in given and "prune" in methods:
        _, curves = structured_curves(given["prune"], groups, max_ratio)
        for name, points in curves.items():
            opts = [NONE]
            for r, drop, loss in points[1:]:
                saved_macs = macs.macs({}) - macs.macs({name: r})
                saved_bytes = (macs.params({}) - macs.params({name: r})) * elem
                opts.append(Option("prune", r, drop, loss, saved_macs, saved_bytes))
            units[("group", name)] = opts
    for name, opts in layer_options(work, given, methods, notes).items():
        units[("layer", name)] = [NONE, *opts]
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
    pruned_base = macs.macs({}) if by_macs else macs.params({}) * elem
    return _Space(units, occupied, conflicts, macs, elem, by_macs, total_macs, total_bytes, pruned_base)


def _fit(space: _Space, budget: Budget, methods, notes, measure: bool, counting):
    """Greedy to the budget; with `measure`, counted on the transformed model and rerun for a shortfall (up
    to four times). Returns pos, steps, met, mac_fraction, size_fraction, measured."""
    work, input_shape, criterion, data = counting
    units, saving, conflicts, by_macs, whole = (
        space.units,
        space.saving,
        space.conflicts,
        space.by_macs,
        space.whole,
    )
    need = (1.0 - budget.value) * whole
    pos, steps, met = best_greedy(units, saving, need, conflicts, methods, notes)
    mac_fraction, size_fraction = space.predicted(pos)
    measured = False
    if measure:
        for attempt in range(5):
            mac_fraction, size_fraction = _measure(
                work, input_shape, units, pos, space.ratios_of, criterion, data
            )
            measured = True
            fraction = mac_fraction if by_macs else size_fraction
            met = fraction <= budget.value + 1e-9
            if met or attempt == 4:
                break
            # The sweeps' savings differ from the transformed model's counts: ask for the shortfall more.
            shortfall = (fraction - budget.value) * whole
            need = saving(pos) + shortfall
            pos, steps, ok = best_greedy(units, saving, need, conflicts, methods, notes)
            notes.append(
                f"counted {fraction:.4f} on the transformed model: greedy rerun for {shortfall:.0f} more"
            )
            if not ok:
                mac_fraction, size_fraction = _measure(
                    work, input_shape, units, pos, space.ratios_of, criterion, data
                )
                fraction = mac_fraction if by_macs else size_fraction
                met = fraction <= budget.value + 1e-9
                break
    else:
        met = (mac_fraction if by_macs else size_fraction) <= budget.value + 1e-9
    return pos, steps, met, mac_fraction, size_fraction, measured


def _result(
    space: _Space, pos, budget: Budget, criterion: str, finetune, outcome, fractions
) -> MixedSuggestion:
    """The suggestion at `pos`: the choice table (cheapest drop per unit saved first) and the plan."""
    steps, notes, met, measured = outcome
    mac_fraction, size_fraction = fractions
    by_macs = space.by_macs
    if not met:
        notes.append(
            f"budget {budget} NOT met: the closest the curves allow keeps "
            f"{(mac_fraction if by_macs else size_fraction):.3f} of the {'MACs' if by_macs else 'bytes'}"
        )
    choices, layers = [], {}
    for u, i in pos.items():
        if not i:
            continue
        opt = space.units[u][i]
        level = int(opt.level) if opt.method == "bits" else float(opt.level)
        row = {"layer": u[1], "method": opt.method, "level": level, "macs_saved": opt.macs_saved,
               "bytes_saved": opt.bytes_saved, "predicted_drop": opt.drop}  # fmt: skip
        if u[0] == "group":
            row["members"] = sorted(space.occupied.get(u[1], ()))
        choices.append(row)
        layers[u[1]] = {opt.method: level}
    choices.sort(
        key=lambda row: row["predicted_drop"] / max(row["macs_saved" if by_macs else "bytes_saved"], 1)
    )
    drop = max(0.0, sum(row["predicted_drop"] for row in choices))
    if space.percent:  # a fraction (accuracy, agreement) cannot drop by more than all of it
        drop = min(1.0, drop)
    plan_dict = {
        "default": {"prune": 0.0, "criterion": criterion, "structured": True, "bits": UNTOUCHED_BITS},
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


def _measure(work, input_shape, units, pos, ratios_of, criterion, data) -> tuple[float, float]:
    """MACs and stored bytes (bits at b bits plus a float32 scale per output channel) after / before,
    counted on a copy pruned, then factored."""
    from analysis.transforms.fields import apply_transforms
    from analysis.transforms.quantization import quantized_size_bytes

    ratios = ratios_of(pos)
    model = pruned_copy(work, ratios, input_shape, criterion, data) if ratios else copy.deepcopy(work)
    rank = {u[1]: {"rank": units[u][i].level} for u, i in pos.items() if u[0] == "layer" and i
            and units[u][i].method == "rank"}  # fmt: skip
    bits = {u[1]: int(units[u][i].level) for u, i in pos.items() if u[0] == "layer" and i
            and units[u][i].method == "bits"}  # fmt: skip
    if rank:
        model = apply_transforms(model, rank).model
    macs = summarize(model, input_shape).total_macs / summarize(work, input_shape).total_macs
    return macs, quantized_size_bytes(model, bits) / size_bytes(work)


__all__ = ["MIXED_METHODS", "MixedSuggestion", "parse_methods", "suggest_mixed"]
