"""Compress: per-layer ratios, bits and transforms, or a pruning method; a preview of what Apply will do;
Apply with a live chart and Stop; before/after on the chosen runtime, timed again on request; every applied
plan against its own baseline on one scatter; files made when asked; each result recorded in the store.

What the page computes without streamlit (group ratios, predicted drop, Suggest's verdict, preview cost,
Apply, timing again, scatter rows, the store's record, files) lives in `analysis/app_support/preview.py`.
The page runs `main()` only when Streamlit executes it as a page (`__name__ == "__main__"`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pandas as pd
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
from analysis.app_support import (
    apply_plan,
    artifact_bytes,
    compression_record,
    group_ratios,
    layer_groups,
    noisy_timings,
    predicted_drop_points,
    preview_cost,
    remeasure,
    run_points,
    suggestion_verdict,
)
from analysis.compression import recovery_epochs
from analysis.errors import first_line
from analysis.report import charts, comparison_frame, uniform_layer_table
from analysis.store import log_compression
from analysis.transforms import pruning_groups, validate_transform_settings
from pages import _jobs, _records, _serving, _shared, _state

BITS = [*range(2, 17), 32]
SHARE_BITS = [0, 1, 2, 3, 4, 5, 6, 7, 8]  # 0: no weight sharing
WEIGHT_KINDS = ["float", "binary", "ternary", "pow2"]
METHOD_LABELS = {"oneshot": "one-shot (per-layer ratios)", "iterative": "iterative (global ranking)",
                 "agp": "AGP (gradual)", "slimming": "network slimming", "group-lasso": "group lasso"}  # fmt: skip
COLLAPSE_POINTS = 10.0  # a predicted drop above this many points is called a collapse before Apply


# ------------------------------------------------------------------------------------------------- page


def _couple(layer: str, members: list[str]) -> None:
    value = st.session_state[f"prune::{layer}"]
    for m in members:
        st.session_state[f"prune::{m}"] = value


def _recovery(n_train: int) -> None:
    """The recovery recipe in the fine-tune settings (one click from Suggest's warning)."""
    st.session_state.update(plan_epochs=recovery_epochs(n_train), plan_distill=True, plan_recipe=True)


def main() -> None:  # noqa: C901 (one page, read top to bottom)
    st.title("Compress")
    wb = _shared.workbench()
    spec, key = wb.spec, wb.spec.model_key()
    runtime = getattr(spec, "runtime", None) or "eager"
    with _shared.guard("Listing the layers"):
        table = _shared.cached(
            "layer_table", key, {}, lambda p: uniform_layer_table(wb.model, wb.input_shape)
        )
        groups = _shared.cached("pruning_groups", key, {}, lambda p: pruning_groups(wb.model, wb.input_shape))
        base_cost = _shared.cached("summary", key, {}, lambda p: summarize(wb.model, wb.input_shape))
    rows = list(table.itertuples(index=False))
    coupled = layer_groups(groups)
    for r in rows:
        for prefix, first in (("prune", 0.0), ("bits", 32), ("rank", 0.0), ("share", 0), ("wts", "float")):
            _state.sticky(f"{prefix}::{r.layer}", first)
    defaults = {"uni_prune": 0.25, "uni_bits": 32, "budget_kind": "macs", "budget_value": 0.5, "plan_criterion": "l1",
                "plan_structured": True, "plan_epochs": 0, "plan_distill": False, "plan_huffman": False,
                "meth_method": "oneshot", "meth_criterion": "taylor", "meth_normalize": "l2", "meth_target": "macs",
                "meth_target_value": 0.5, "meth_steps": 3, "meth_epochs_per_step": 1.0, "meth_strength": 1e-4,
                "meth_epochs": 3, "meth_finetune": 0, "rt_both": False, "budget_tolerance": 1.0, "plan_recipe": False}  # fmt: skip
    for k, v in defaults.items():
        _state.sticky(k, v)
    sweep = _shared.session_result("sensitivity:structured", key)
    info = _shared.metric_info(wb)
    if sweep is not None and sweep.metric.name != info.name:
        sweep = None  # a sweep in another metric does not predict drops in this one
    points_unit = "points" if info.percent else (info.unit or info.name)

    # --- method
    st.subheader("Method")
    c = st.columns(4)
    method = c[0].selectbox(
        "Method",
        SCHEDULE_METHODS,
        key="meth_method",
        persist_state=_state.KEEP,
        format_func=METHOD_LABELS.get,
    )
    schedule = None
    if method != "oneshot":
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

    # --- presets and suggest
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
                                   f"({points_unit})")  # fmt: skip
        value = c[1].number_input(
            "Budget value", 0.0, 100.0, step=0.05, key="budget_value", persist_state=_state.KEEP
        )
        tolerance = c[2].number_input(f"Accept a drop of ({points_unit})", 0.0, 100.0, step=0.5, key="budget_tolerance",
                                      persist_state=_state.KEEP, help="a plan predicted to lose more is a warning")  # fmt: skip
        no_sweep = "Run a structured sweep on the Sensitivity page first" if sweep is None else None
        if c[3].button("Suggest", disabled=sweep is None, help=no_sweep):
            budget = f"{kind}={value / _shared.drop_scale(info) if kind == 'drop' else value}"
            with _shared.guard("Suggesting a plan"):
                hint = _shared.cached(
                    "suggest", spec.timing_key(), {"budget": budget, "sweep": sweep.to_dict(), "metric": info.name},
                    lambda p: suggest(sweep, budget, model=wb.model, data=wb.data, progress=p,
                                      batch_size=spec.batch_size, threads=spec.threads),
                    progress="Suggesting",
                )  # fmt: skip
            by_name = {g.name: g for g in groups}
            for r in rows:
                st.session_state[f"prune::{r.layer}"] = 0.0
            for name, rr in hint.ratios.items():
                for layer in by_name[name].out_layers if name in by_name else [name]:
                    st.session_state[f"prune::{layer}"] = float(rr)
            st.session_state["_suggested"] = {
                "hint": hint,
                "drop": predicted_drop_points(sweep, hint.ratios)[0],
                "key": key,
            }
        said = st.session_state.get("_suggested")
        if said and said["key"] == key and sweep is not None:
            ok, text = suggestion_verdict(said["hint"], said["drop"], tolerance, sweep)
            (st.success if ok else st.warning)(_shared.plain(text))
            if said["drop"] > tolerance:
                st.button("Fine-tune with the recovery recipe", on_click=_recovery, args=(len(wb.data.x_train),),
                          help="distillation from the original, Adam at 1e-3 with cosine decay, epochs for the data size")  # fmt: skip

    # --- per-layer settings
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
        help=f"sidebar runtime: {runtime}",
    )
    refused: dict[str, str] = {}
    layer_plan: dict[str, dict] = {}
    for r in rows:
        group = coupled.get(r.layer)
        members = [m for m in group.out_layers if m != r.layer] if group else []
        c = st.columns([2, 3, 3, 2, 2, 2])
        c[0].markdown(
            f"**{_shared.breakable(r.layer)}**  \n{r.type}, {r.channels} outputs{' (classifier)' if r.final else ''}"
        )
        c[1].slider("prune ratio", 0.0, 0.95, step=0.05, key=f"prune::{r.layer}", persist_state=_state.KEEP, disabled=bool(r.final) or method != "oneshot",
                    on_change=_couple, args=(r.layer, members),
                    help=f"coupled with {', '.join(members)}: they lose the same channels" if members else None)  # fmt: skip
        c[2].select_slider("bits", BITS, key=f"bits::{r.layer}", persist_state=_state.KEEP)
        c[3].number_input(
            "rank fraction (0 = off)", 0.0, 1.0, step=0.05, key=f"rank::{r.layer}", persist_state=_state.KEEP
        )
        c[4].selectbox("share bits (0 = off)", SHARE_BITS, key=f"share::{r.layer}", persist_state=_state.KEEP)
        c[5].selectbox("weights", WEIGHT_KINDS, key=f"wts::{r.layer}", persist_state=_state.KEEP)
        if members:
            c[0].caption(_shared.plain(f"group {group.name}: moves with {', '.join(members)}"))
        settings = {"prune": 0.0 if r.final or method != "oneshot" else float(st.session_state[f"prune::{r.layer}"]),
                    "bits": int(st.session_state[f"bits::{r.layer}"]), "structured": bool(structured)}  # fmt: skip
        rank, share, wts = (st.session_state[f"{p}::{r.layer}"] for p in ("rank", "share", "wts"))
        transforms = {k: v for k, v in (("rank", rank or None), ("share_bits", share or None),
                                        ("weights", None if wts == "float" else wts)) if v is not None}  # fmt: skip
        try:
            validate_transform_settings(r.layer, settings | transforms)
        except WorkbenchError as exc:
            refused[r.layer] = first_line(exc)
            st.error(_shared.plain(refused[r.layer]))
        if settings["prune"] > 0 or settings["bits"] != 32 or transforms:
            layer_plan[r.layer] = {k: v for k, v in settings.items() if k != "structured"} | transforms
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

    # --- preview: what Apply will do
    st.subheader("What Apply will do")
    layer_ratios = {n: s["prune"] for n, s in layer_plan.items() if structured and s.get("prune", 0) > 0}
    ratios = group_ratios(groups, layer_ratios)
    rank_only = {n: {"rank": s["rank"]} for n, s in layer_plan.items() if "rank" in s and n not in refused}
    with _shared.guard("Counting the plan's cost"):
        cost = _shared.cached("preview_cost", key, {"ratios": ratios, "rank": rank_only},
                              lambda p: preview_cost(wb.model, wb.input_shape, ratios, rank_only))  # fmt: skip
    drop, missing = predicted_drop_points(sweep, ratios)
    c = st.columns(3)
    c[0].metric("MACs per sample", f"{cost['macs'] / 1e6:.2f} M", f"{cost['macs'] / base_cost.total_macs:.0%} of the original",
                delta_color="off", delta_arrow="off")  # fmt: skip
    fewer = base_cost.total_params - cost["params"]
    c[1].metric("Params", f"{cost['params']:,}", f"{fewer:,} fewer" if fewer else None, delta_color="off",
                delta_arrow="down")  # fmt: skip
    if method != "oneshot":
        c[2].metric("Predicted drop", "n/a", help="the schedule chooses the channels as it runs")
    elif drop is None:
        c[2].metric(
            "Predicted drop", "n/a", help="run a structured sweep on the Sensitivity page for an estimate"
        )
    else:
        c[2].metric(f"Predicted {info.name} drop (estimate)", f"{drop:.2f} {points_unit}",
                    help="sum of the groups' single-group drops from the structured sweep; "
                         "groups interact, so this is an estimate")  # fmt: skip
        if missing:
            st.caption(_shared.plain(f"not in the sweep, not counted: {', '.join(missing)}"))
        if drop > tolerance:
            collapse = f": {info.name} would collapse" if info.percent and drop > COLLAPSE_POINTS else ""
            st.warning(f"These settings are predicted to lose {drop:.1f} {points_unit} of {info.name} (an estimate), "
                       f"more than the {tolerance:g} you accept{collapse}. Fine-tune (the recovery recipe) or prune less.")  # fmt: skip
    if method != "oneshot":
        st.caption(
            "MACs and params above are of the per-layer settings; the schedule's target decides the pruning."
        )
    if not structured and layer_ratios:
        st.caption("Unstructured pruning zeroes weights: MACs and params stay, only the nonzero count falls.")

    mlflow_uri = ""
    if not _serving.shared():  # a shared server writes nowhere a browser user names
        mlflow_uri = st.text_input(
            "Also log to MLflow (tracking URI, optional)",
            **_state.kept("cmp_mlflow", ""),
            placeholder="file:/path/to/mlruns or http://host:5000",
            help="Each Apply is also logged as an MLflow run (params = the plan, metrics = before/after); "
            "needs mlflow-skinny installed. The results store records it either way.",
        ).strip()
    apply = st.button(
        "Apply", type="primary", disabled=bool(refused) or (method != "oneshot" and schedule is None)
    )
    if refused:
        st.caption("Fix the refused combinations above to apply.")
    job_key = f"compress::{key}"
    if apply or _jobs.job_running(job_key):
        if apply:
            st.session_state[f"_pending::{job_key}"] = plan
            st.session_state[f"_live::{job_key}"] = []
        pending = st.session_state.get(f"_pending::{job_key}", plan)
        live: list = st.session_state.setdefault(f"_live::{job_key}", [])
        lock = threading.Lock()
        runtimes = ("eager", "onnxruntime") if both else (runtime,)
        if both and runtime != "eager":
            runtimes = (runtime, "eager")
        placeholder = st.empty()

        def on_step(record: dict) -> None:
            with lock:
                live.append(dict(record))

        drawn = [0]

        def tick() -> None:
            with lock:
                records = list(live)
            if len(records) > drawn[0]:  # a new step: redraw (each drawing needs its own element id)
                drawn[0] = len(records)
                placeholder.plotly_chart(
                    charts.trajectory_chart(records, score=info), key=f"live_{job_key}_{len(records)}"
                )

        def work(progress, should_stop):
            return apply_plan(wb.model, wb.data, pending, batch_size=spec.batch_size, threads=spec.threads,
                              runtimes=runtimes, progress=progress, on_step=on_step, should_stop=should_stop,
                              metric=spec.metric)  # fmt: skip

        with _shared.guard("Compressing"):
            (result, extras), _ = _jobs.run_stoppable("Compressing", job_key, work, tick, None)
        placeholder.empty()
        runs = st.session_state.setdefault(f"_runs::{key}", [])
        n = 1 + max((p["run"] for p in runs), default=0)
        _shared.keep_result("compress", key, result, {"extras": extras | {"run": n}})
        _shared.forget_built("cmp")  # the last result's files
        label = f"plan {n}" + (" (stopped)" if extras.get("stopped") else "")
        runs.extend(run_points(result, extras, label, n))
        _records.record_run("compression", wb, *compression_record(pending, result, extras, batch_size=spec.batch_size,
                                                                   threads=spec.threads))  # fmt: skip
        if mlflow_uri:
            with _shared.guard("Logging to MLflow"):
                run_id = log_compression(mlflow_uri, pending, result.to_dict(), run_name=label)
            st.caption(_shared.plain(f"logged to MLflow as run {run_id}"))

    result = _shared.session_result("compress", key)
    if result is None:
        st.info("Set ratios, bits and transforms per layer (or a preset, or a method) and press **Apply**.")
        st.stop()
    extras = _shared.result_params("compress").get("extras", {})

    c = st.columns([4, 1])
    c[0].subheader(
        "Before and after" + ("" if extras.get("runtimes") else f" ({result.before.runtime or 'eager'})")
    )
    if c[1].button("Measure again", help="Time the original and this plan again, in one alternating run"):
        result, extras = _measure_again(result, extras, wb, key)
    if extras.get("stopped"):
        st.warning("Stopped: the result is the model after the last whole step.")
    _shared.compression_metrics(result)
    for rt, pair in (extras.get("runtimes") or {}).items():
        b, a = pair["before"], pair["after"]
        st.caption(f"{rt}: {b.metric.name} {b.metric.format(b.accuracy)} -> {a.metric.format(a.accuracy)}, "
                   f"latency {b.latency_ms:.2f} -> {a.latency_ms:.2f} ms ({a.latency_label})")  # fmt: skip
    _shared.table(comparison_frame(result), "before_after.csv", key="cmp_csv")
    for note in result.notes:
        st.info(_shared.plain(note))
    if extras.get("trajectory"):
        _shared.chart(
            charts.trajectory_chart(extras["trajectory"], score=result.metric), key="cmp_trajectory"
        )
    points = pd.DataFrame(st.session_state.get(f"_runs::{key}", []))
    if noisy := noisy_timings(
        points.to_dict("records")
    ):  # the last run's, one box: earlier ones are in the table
        st.warning(_shared.plain(noisy))
    _shared.chart(charts.runs_scatter(points, score=result.metric), key="cmp_pareto")
    _shared.table(points, "applied_plans.csv", key="cmp_runs_csv")

    _files(result, extras, spec, wb)


def _measure_again(result: Any, extras: dict, wb: Any, key: str) -> tuple[Any, dict]:
    """The last plan timed again with the original in one alternating run; its scatter rows replaced."""
    slot, on_wait = _shared.waiting_notice()
    bar, update = _shared.progress_bar("Timing the original and the plan again")
    with _shared.guard("Timing again"):
        result = remeasure(result, wb.model, wb.input_shape, batch_size=wb.spec.batch_size, threads=wb.spec.threads,
                           progress=update, on_wait=on_wait)  # fmt: skip
    bar.empty(), slot.empty()
    extras = extras | {"runtimes": result.runtimes}
    n = extras.get("run", 0)
    runs = [p for p in st.session_state.get(f"_runs::{key}", []) if p["run"] != n]
    st.session_state[f"_runs::{key}"] = runs + run_points(result, extras, f"plan {n} (timed again)", n)
    _shared.keep_result("compress", key, result, {"extras": extras})
    return result, extras


def _files(result: Any, extras: Mapping, spec: Any, wb: Any) -> None:
    """The plan and the compressed model in each format, each made when asked, its error said beside it."""
    st.subheader("Files")
    run = extras.get("run", 0)
    shape, data = tuple(wb.input_shape), wb.data
    rebuildable = spec.model.startswith(("zoo:", "torchvision:")) and not spec.weights
    _shared.download("Download plan.json", result.plan.to_json(), "plan.json", "application/json", "cmp_plan")
    formats = [
        (".onnx", "ONNX"),
        (".pt2", "torch.export"),
        (".pruned.safetensors", "safetensors"),
        (".pt", "pickle"),
    ]
    cells = [*st.columns(2), *st.columns(2)]  # two a row: each label and what its file holds fit
    for col, (suffix, name) in zip(cells, formats, strict=True):
        if suffix == ".pruned.safetensors" and not rebuildable:
            col.caption("The safe pruned format needs a rebuildable spec (a zoo or torchvision model).")
            continue

        def build(suffix: str = suffix) -> tuple[bytes, str]:
            return artifact_bytes(result, suffix, spec=spec.model, input_shape=shape, data=data)

        _shared.built_download(
            f"Make {suffix} ({name})", build, f"compressed{suffix}", f"cmp{suffix}_{run}", col
        )
    st.caption(
        "Each file is made when you ask for it. `.onnx`: int8 where the plan has 8-bit layers; `.pt2` and "
        "`.pruned.safetensors`: the float model; `.pt`: a pickle, loading it runs code (`--trust-pickle`)."
    )


if __name__ == "__main__":
    main()
