"""The Compress page's plan sections: the method, the presets and Suggest, and the per-layer editor.

Not a page. Each section draws its widgets and returns what the next one needs; the per-layer editor's
transform columns come from the transforms registry (`transform_columns`), so a registered transform gets
its column with no edit here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from analysis import (
    IMPORTANCE_CRITERIA,
    NORMALIZATIONS,
    SCHEDULE_METHODS,
    SCHEDULE_TARGETS,
    ScheduleSettings,
    WorkbenchError,
    suggest,
    summarize,
)
from analysis.app_support import layer_groups, predicted_drop_points, suggestion_verdict
from analysis.compression import recovery_epochs
from analysis.errors import first_line
from analysis.report import uniform_layer_table
from analysis.transforms import find_groups, transform_columns, validate_transform_settings
from pages import _shared, _state

BITS = [*range(2, 17), 32]
METHOD_LABELS = {"oneshot": "one-shot (per-layer ratios)", "iterative": "iterative (global ranking)",
                 "agp": "AGP (gradual)", "slimming": "network slimming", "group-lasso": "group lasso"}  # fmt: skip
DEFAULTS = {"uni_prune": 0.25, "uni_bits": 32, "budget_kind": "macs", "budget_value": 0.5, "plan_criterion": "l1",
            "plan_structured": True, "plan_epochs": 0, "plan_distill": False, "plan_huffman": False,
            "meth_method": "oneshot", "meth_criterion": "taylor", "meth_normalize": "l2", "meth_target": "macs",
            "meth_target_value": 0.5, "meth_steps": 3, "meth_epochs_per_step": 1.0, "meth_strength": 1e-4,
            "meth_epochs": 3, "meth_finetune": 0, "rt_both": False, "budget_tolerance": 1.0, "plan_recipe": False}  # fmt: skip


@dataclass
class Page:
    """What every section reads: the workbench, its layers and groups, and the structured sweep."""

    wb: Any
    key: str
    runtime: str
    rows: list
    groups: list
    coupled: dict
    base_cost: Any
    sweep: Any
    info: Any
    points_unit: str


@dataclass
class LayerPlan:
    """The per-layer editor's outcome: the plan as JSON data, its layer entries, the refused layers (one
    line each), and the switches the preview and Apply read."""

    plan: dict
    layers: dict
    refused: dict
    structured: bool
    both: bool


def _couple(layer: str, members: list[str]) -> None:
    value = st.session_state[f"prune::{layer}"]
    for m in members:
        st.session_state[f"prune::{m}"] = value


def _recovery(n_train: int) -> None:
    """The recovery recipe in the fine-tune settings (one click from Suggest's warning)."""
    st.session_state.update(plan_epochs=recovery_epochs(n_train), plan_distill=True, plan_recipe=True)


def load_page() -> Page:
    """The model's layers, groups and cost (cached), every widget's first value, and the structured sweep
    in the page's metric (None if there is none)."""
    wb = _shared.workbench()
    spec, key = wb.spec, wb.spec.model_key()
    with _shared.guard("Listing the layers"):
        table = _shared.cached(
            "layer_table", key, {}, lambda p: uniform_layer_table(wb.model, wb.input_shape)
        )
        groups = _shared.cached("find_groups", key, {}, lambda p: find_groups(wb.model, wb.input_shape))
        base_cost = _shared.cached("summary", key, {}, lambda p: summarize(wb.model, wb.input_shape))
    rows = list(table.itertuples(index=False))
    firsts = [("prune", 0.0), ("bits", 32)] + [(c.state_key, c.off) for c in transform_columns().values()]
    for r in rows:
        for prefix, first in firsts:
            _state.sticky(f"{prefix}::{r.layer}", first)
    for k, v in DEFAULTS.items():
        _state.sticky(k, v)
    sweep = _shared.session_result("sensitivity:structured", key)
    info = _shared.metric_info(wb)
    if sweep is not None and sweep.metric.name != info.name:
        sweep = None  # a sweep in another metric does not predict drops in this one
    points_unit = "points" if info.percent else (info.unit or info.name)
    runtime = getattr(spec, "runtime", None) or "eager"
    return Page(wb, key, runtime, rows, groups, layer_groups(groups), base_cost, sweep, info, points_unit)


def method_section() -> tuple[str, dict | None]:
    """The pruning method and, for a schedule, its settings: (method, the schedule as JSON data or None)."""
    st.subheader("Method")
    c = st.columns(4)
    method = c[0].selectbox(
        "Method",
        SCHEDULE_METHODS,
        key="meth_method",
        persist_state=_state.KEEP,
        format_func=METHOD_LABELS.get,
    )
    if method == "oneshot":
        return method, None
    schedule = None
    crit = c[1].selectbox(
        "Criterion (global ranking)",
        IMPORTANCE_CRITERIA,
        key="meth_criterion",
        persist_state=_state.KEEP,
    )
    norm = c[2].selectbox(
        "Normalization within a layer", NORMALIZATIONS, key="meth_normalize", persist_state=_state.KEEP
    )
    target = c[3].selectbox("Target", SCHEDULE_TARGETS, key="meth_target", persist_state=_state.KEEP,
                            help="fraction to keep (MACs, params, latency) or channels (fraction or count)")  # fmt: skip
    c = st.columns(5)
    value = c[0].number_input(
        "Target value", 0.01, 10000.0, step=0.05, key="meth_target_value", persist_state=_state.KEEP
    )
    steps = c[1].number_input("Steps", 1, 100, key="meth_steps", persist_state=_state.KEEP)
    eps = c[2].number_input(
        "Epochs per step", 0.0, 50.0, step=0.5, key="meth_epochs_per_step", persist_state=_state.KEEP
    )
    strength = c[3].number_input("Strength (penalty)", 0.0, 1.0, step=1e-5, format="%.5f", key="meth_strength", persist_state=_state.KEEP,
                                 disabled=method not in ("slimming", "group-lasso"))  # fmt: skip
    epochs = c[4].number_input("Sparsity epochs", 0, 100, key="meth_epochs", persist_state=_state.KEEP,
                               disabled=method not in ("slimming", "group-lasso"))  # fmt: skip
    ft_epochs = st.number_input(
        "Recovery epochs after the last step", 0, 50, key="meth_finetune", persist_state=_state.KEEP
    )
    try:
        schedule = ScheduleSettings(method=method, criterion=crit, normalize=norm, target={target: float(value)},
                                    steps=int(steps), epochs_per_step=float(eps), strength=float(strength),
                                    epochs=int(epochs), finetune_epochs=int(ft_epochs)).to_dict()  # fmt: skip
    except WorkbenchError as exc:
        st.error(_shared.plain(first_line(exc)))
    st.caption("The schedule chooses the channels; the per-layer prune ratios below are not used. Bits and "
               "transforms still apply.")  # fmt: skip
    return method, schedule


def presets_section(page: Page, method: str) -> float:
    """Uniform presets and Suggest (from the structured sweep); returns the drop the user accepts."""
    wb, rows, sweep, info = page.wb, page.rows, page.sweep, page.info
    with st.expander("Presets", expanded=method == "oneshot"):
        c = st.columns([2, 2, 1])
        ratio = c[0].slider(
            "Uniform prune ratio", 0.0, 0.9, step=0.05, key="uni_prune", persist_state=_state.KEEP
        )
        bits = c[1].select_slider(
            "Uniform bits (32 = float)", BITS, key="uni_bits", persist_state=_state.KEEP
        )
        if c[2].button("Set every layer"):
            for r in rows:
                st.session_state[f"prune::{r.layer}"] = 0.0 if r.final else ratio
                st.session_state[f"bits::{r.layer}"] = bits
        c = st.columns([2, 2, 2, 1])
        kind = c[0].selectbox("Budget", ["macs", "latency", "drop"], key="budget_kind", persist_state=_state.KEEP,
                              help=f"macs, latency: the fraction to keep; drop: the {info.name} you accept to lose "
                                   f"({page.points_unit})")  # fmt: skip
        value = c[1].number_input(
            "Budget value", 0.0, 100.0, step=0.05, key="budget_value", persist_state=_state.KEEP
        )
        tolerance = c[2].number_input(f"Accept a drop of ({page.points_unit})", 0.0, 100.0, step=0.5, key="budget_tolerance",
                                      persist_state=_state.KEEP, help="a plan predicted to lose more is a warning")  # fmt: skip
        no_sweep = "Run a structured sweep on the Sensitivity page first" if sweep is None else None
        if c[3].button("Suggest", disabled=sweep is None, help=no_sweep):
            _suggest(page, f"{kind}={value / _shared.drop_scale(info) if kind == 'drop' else value}")
        said = st.session_state.get("_suggested")
        if said and said["key"] == page.key and sweep is not None:
            ok, text = suggestion_verdict(said["hint"], said["drop"], tolerance, sweep)
            (st.success if ok else st.warning)(_shared.plain(text))
            if said["drop"] > tolerance:
                st.button("Fine-tune with the recovery recipe", on_click=_recovery, args=(len(wb.data.x_train),),
                          help="distillation from the original, Adam at 1e-3 with cosine decay, epochs for the data size")  # fmt: skip
    return tolerance


def _suggest(page: Page, budget: str) -> None:
    """Suggest's ratios set on the prune sliders (each group's on all its layers), its verdict kept."""
    wb, spec, sweep = page.wb, page.wb.spec, page.sweep
    with _shared.guard("Suggesting a plan"):
        hint = _shared.cached(
            "suggest", spec.timing_key(), {"budget": budget, "sweep": sweep.to_dict(), "metric": page.info.name},
            lambda p: suggest(sweep, budget, model=wb.model, data=wb.data, progress=p,
                              batch_size=spec.batch_size, threads=spec.threads),
            progress="Suggesting",
        )  # fmt: skip
    by_name = {g.name: g for g in page.groups}
    for r in page.rows:
        st.session_state[f"prune::{r.layer}"] = 0.0
    for name, rr in hint.ratios.items():
        for layer in by_name[name].out_layers if name in by_name else [name]:
            st.session_state[f"prune::{layer}"] = float(rr)
    st.session_state["_suggested"] = {
        "hint": hint,
        "drop": predicted_drop_points(sweep, hint.ratios)[0],
        "key": page.key,
    }


def _column_widget(cell: Any, column: Any, key: str) -> None:
    """One registered transform's widget for one layer (`Column.widget`: number or select)."""
    if column.widget == "select":
        cell.selectbox(column.label, list(column.options), key=key, persist_state=_state.KEEP)
    else:
        cell.number_input(
            column.label, column.low, column.high, step=column.step, key=key, persist_state=_state.KEEP
        )


def layers_section(page: Page, method: str, schedule: dict | None) -> LayerPlan:
    """The per-layer editor (prune, bits, then one column per registered transform) and the fine-tune
    settings: the plan they make, each refused combination shown as one line."""
    st.subheader("Per layer")
    c = st.columns(4)
    criterion = c[0].selectbox(
        "Criterion", IMPORTANCE_CRITERIA, key="plan_criterion", persist_state=_state.KEEP
    )
    structured = c[1].toggle("Structured (remove channels)", key="plan_structured", persist_state=_state.KEEP)
    huffman = c[2].toggle("Huffman-code shared weights", key="plan_huffman", persist_state=_state.KEEP)
    both = c[3].checkbox(
        "Time on both runtimes",
        key="rt_both",
        persist_state=_state.KEEP,
        help=f"sidebar runtime: {page.runtime}",
    )
    refused: dict[str, str] = {}
    layer_plan: dict[str, dict] = {}
    for r in page.rows:
        entry = _layer_row(page, r, method, bool(structured), refused)
        if entry:
            layer_plan[r.layer] = entry
    c = st.columns(3)
    epochs = c[0].number_input("Fine-tune epochs", 0, 50, key="plan_epochs", persist_state=_state.KEEP)
    distill = c[1].checkbox("Distill from the original", key="plan_distill", persist_state=_state.KEEP)
    recipe = c[2].checkbox(
        "Recovery recipe (Adam 1e-3, cosine decay)", key="plan_recipe", persist_state=_state.KEEP
    )
    plan: dict[str, Any] = {
        "default": {"prune": 0.0, "criterion": criterion, "structured": bool(structured), "bits": 32},
        "layers": layer_plan,
        "finetune": {"epochs": int(epochs), "distill": bool(distill)}
        | ({"recipe": "recovery"} if recipe else {}),
    }
    if huffman:
        plan["huffman"] = True
    if schedule is not None:
        plan["schedule"] = schedule
    return LayerPlan(plan, layer_plan, refused, bool(structured), bool(both))


def _layer_row(page: Page, r: Any, method: str, structured: bool, refused: dict[str, str]) -> dict:
    """One layer's widgets; its plan entry ({} when it leaves the layer alone). A refused combination is
    shown under it and kept in `refused`."""
    group = page.coupled.get(r.layer)
    members = [m for m in group.out_layers if m != r.layer] if group else []
    columns = transform_columns()
    c = st.columns([2, 3, 3] + [2] * len(columns))
    c[0].markdown(
        f"**{_shared.breakable(r.layer)}**  \n{r.type}, {r.channels} outputs{' (classifier)' if r.final else ''}"
    )
    c[1].slider("prune ratio", 0.0, 0.95, step=0.05, key=f"prune::{r.layer}", persist_state=_state.KEEP, disabled=bool(r.final) or method != "oneshot",
                on_change=_couple, args=(r.layer, members),
                help=f"coupled with {', '.join(members)}: they lose the same channels" if members else None)  # fmt: skip
    c[2].select_slider("bits", BITS, key=f"bits::{r.layer}", persist_state=_state.KEEP)
    for cell, column in zip(c[3:], columns.values(), strict=True):
        _column_widget(cell, column, f"{column.state_key}::{r.layer}")
    if members:
        c[0].caption(_shared.plain(f"group {group.name}: moves with {', '.join(members)}"))
    settings = {"prune": 0.0 if r.final or method != "oneshot" else float(st.session_state[f"prune::{r.layer}"]),
                "bits": int(st.session_state[f"bits::{r.layer}"]), "structured": structured}  # fmt: skip
    transforms = {}
    for name, column in columns.items():
        value = column.value(st.session_state[f"{column.state_key}::{r.layer}"])
        if value is not None:
            transforms[name] = value
    try:
        validate_transform_settings(r.layer, settings | transforms)
    except WorkbenchError as exc:
        refused[r.layer] = first_line(exc)
        st.error(_shared.plain(refused[r.layer]))
    if settings["prune"] > 0 or settings["bits"] != 32 or transforms:
        return {k: v for k, v in settings.items() if k != "structured"} | transforms
    return {}
