"""Compress: per-layer ratios, bits and transforms, or a pruning method; a preview of what Apply will do;
Apply with a live chart and Stop; before/after on the chosen runtime; every applied plan against its own
baseline on one scatter; downloads; each result recorded in the results store.

The helpers above `main()` never call streamlit, so tests import them (`import pages.compress`); the page
runs `main()` only when Streamlit executes it as a page (`__name__ == "__main__"`).

`apply_plan` writes against the agreed `compress(..., runtimes=, on_step=, should_stop=)` (plans with a
`schedule`, per-layer `rank`/`share_bits`/`weights` and `huffman`). Where the library's `compress` does not
take those yet, it runs the same steps from the pieces that exist (run_schedule, compress, apply_transforms,
the runtime layer) and times the original and the final model together in alternating rounds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from torch import nn

from analysis import (
    IMPORTANCE_CRITERIA,
    NORMALIZATIONS,
    SCHEDULE_METHODS,
    SCHEDULE_TARGETS,
    ModelMetrics,
    ResultsStore,
    ScheduleSettings,
    WorkbenchError,
    apply_transforms,
    charts,
    compare_runtime_latency,
    comparison_frame,
    compress,
    copy_model,
    evaluate_runtime,
    first_line,
    log_compression,
    model_bytes,
    model_fingerprint,
    prepare,
    prune_structured,
    pruning_groups,
    run_schedule,
    save_artifact,
    size_bytes,
    suggest,
    summarize,
    uniform_layer_table,
    validate_transform_settings,
)
from pages import _shared

BITS = [*range(2, 17), 32]
SHARE_BITS = [0, 1, 2, 3, 4, 5, 6, 7, 8]  # 0: no weight sharing
WEIGHT_KINDS = ["float", "binary", "ternary", "pow2"]
TRANSFORM_KEYS = ("rank", "rank_energy", "share_bits", "weights")
METHOD_LABELS = {"oneshot": "one-shot (per-layer ratios)", "iterative": "iterative (global ranking)",
                 "agp": "AGP (gradual)", "slimming": "network slimming", "group-lasso": "group lasso"}  # fmt: skip
COLLAPSE_POINTS = 10.0  # a predicted drop above this many points is called a collapse before Apply
KEPT = "_kept::compress"
KEPT_PREFIXES = (
    "prune::",
    "bits::",
    "rank::",
    "share::",
    "wts::",
    "plan_",
    "meth_",
    "uni_",
    "budget_",
    "rt_",
)


# --------------------------------------------------------------------------- helpers (no streamlit here)


def layer_groups(groups: list) -> dict[str, Any]:
    """Layer name -> the coupled group whose output channels it loses (only layers in some group)."""
    return {layer: g for g in groups for layer in g.out_layers}


def group_ratios(groups: list, layer_ratio: Mapping[str, float]) -> dict[str, float]:
    """Group name -> the ratio Apply will use: the largest of its members' (coupled sliders are equal)."""
    out = {}
    for g in groups:
        r = max((float(layer_ratio.get(m, 0.0)) for m in g.out_layers), default=0.0)
        if r > 0:
            out[g.name] = r
    return out


def predicted_drop_points(sweep: Any, ratios: Mapping[str, float]) -> tuple[float | None, list[str]]:
    """Predicted accuracy drop in points of pruning each group at its ratio: the sum of the groups'
    single-group drops from a structured sweep (linear between swept ratios, the last point beyond),
    bounded to [0, 100]. An estimate: groups interact. Also the groups the sweep lacks. None without a sweep."""
    if sweep is None:
        return None, []
    total, missing = 0.0, []
    for name, r in ratios.items():
        curve = sweep.layers.get(name)
        if curve is None:
            missing.append(name)
            continue
        order = np.argsort(curve.values)
        xs = np.concatenate([[0.0], np.asarray(curve.values, dtype=float)[order]])
        accs = np.concatenate([[sweep.baseline_accuracy], np.asarray(curve.accuracy, dtype=float)[order]])
        total += max(sweep.baseline_accuracy - float(np.interp(r, xs, accs)), 0.0)
    return min(max(total * 100.0, 0.0), 100.0), missing


def preview_cost(
    model: nn.Module,
    input_shape: tuple[int, ...],
    ratios: Mapping[str, float],
    transforms: Mapping[str, dict],
) -> dict[str, int]:
    """MACs per sample and params after structured pruning at `ratios` (group -> ratio) and the layers'
    low-rank transforms, counted on a pruned copy (the channels chosen do not change the counts)."""
    work = copy_model(model).eval()
    if ratios:
        prune_structured(work, dict(ratios), input_shape)
    if transforms:
        work = apply_transforms(work, transforms).model
    cost = summarize(work, input_shape)
    return {"macs": int(cost.total_macs), "params": int(cost.total_params)}


def new_compress() -> bool:
    """Whether the library's `compress` takes runtimes, on_step and should_stop (PHASE2 interface 1)."""
    return {"runtimes", "on_step", "should_stop"} <= set(inspect.signature(compress).parameters)


def _metrics(ev: Any, counts: Mapping[str, int], timing: Any) -> ModelMetrics:
    return ModelMetrics(
        accuracy=ev.accuracy,
        loss=ev.loss,
        params=counts["params"],
        nonzero_params=counts["nonzero"],
        macs=counts["macs"],
        size_bytes=counts["size"],
        latency_ms=timing.median_ms,
        latency_p10_ms=timing.p10_ms,
        latency_p90_ms=timing.p90_ms,
        latency_label=timing.kind,
    )


def _counts(model: nn.Module, input_shape: tuple[int, ...], size: int | None = None) -> dict[str, int]:
    cost = summarize(model, input_shape)
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {"params": int(cost.total_params), "nonzero": nonzero, "macs": int(cost.total_macs),
            "size": int(size if size is not None else size_bytes(model))}  # fmt: skip


def measure_runtimes(
    original: nn.Module,
    final: nn.Module,
    data: Any,
    runtimes: tuple[str, ...],
    after_counts: Mapping[str, int],
    batch_size: int,
    threads: int | None,
    rounds: int = 10,
) -> tuple[dict[str, dict[str, ModelMetrics]], dict[str, dict[str, Any]]]:
    """Before and after on each runtime, timed together in alternating rounds and evaluated through the
    runtime; also each latency's labels (runtime, version, kind, spread, warning)."""
    shape = data.input_shape
    before_counts = _counts(original, shape)
    metrics, timing = {}, {}
    for runtime in runtimes:
        prepared = {
            "before": prepare(original, runtime, shape, threads),
            "after": prepare(final, runtime, shape, threads),
        }
        times = compare_runtime_latency(
            prepared, shape, batch_size=batch_size, threads=threads, rounds=rounds
        )
        evals = {k: evaluate_runtime(p, data) for k, p in prepared.items()}
        counts = {"before": before_counts, "after": after_counts}
        metrics[runtime] = {k: _metrics(evals[k], counts[k], times[k]) for k in prepared}
        timing[runtime] = {k: t.to_dict() for k, t in times.items()}
    return metrics, timing


def split_plan(plan: Mapping[str, Any]) -> tuple[dict, dict | None, dict[str, dict], bool]:
    """The plan without schedule/transforms (what the current `compress` takes), its schedule, its
    per-layer transforms and its huffman flag."""
    plan = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in plan.items()}
    schedule = plan.pop("schedule", None)
    huffman = bool(plan.pop("huffman", False))
    layers = {name: dict(s) for name, s in (plan.get("layers") or {}).items()}
    transforms = {}
    for name, settings in layers.items():
        moved = {k: settings.pop(k) for k in TRANSFORM_KEYS if k in settings}
        if moved:
            transforms[name] = moved
    plan["layers"] = {n: s for n, s in layers.items() if s}
    return plan, schedule, transforms, huffman


def apply_plan(
    model: nn.Module,
    data: Any,
    plan: Mapping[str, Any],
    *,
    batch_size: int,
    threads: int | None,
    runtimes: tuple[str, ...] = ("eager",),
    progress: Callable[[int, int], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    latency_rounds: int = 10,
) -> tuple[Any, dict[str, Any]]:
    """Compress a copy of `model` by `plan` (dict, CONTRACT sections 4 and 8) and measure before and after
    on each of `runtimes`; returns the CompressionResult and its extras {runtimes, timing, trajectory,
    stopped, onnx_bytes, transforms}. `model` is never changed."""
    if new_compress():
        result = compress(model, dict(plan), data, progress, batch_size, threads=threads, runtimes=tuple(runtimes),
                          latency_rounds=latency_rounds, on_step=on_step, should_stop=should_stop)  # fmt: skip
        extras = {
            k: getattr(result, k, None)
            for k in ("runtimes", "trajectory", "stopped", "onnx_bytes", "transforms")
        }
        extras["stopped"] = bool(extras["stopped"])
        extras["trajectory"] = extras["trajectory"] or []
        return result, extras
    base, schedule, transforms, huffman = split_plan(plan)
    staged, trajectory, stopped, notes = model, [], False, []
    if schedule and schedule.get("method", "oneshot") != "oneshot":
        sched = run_schedule(
            model, data, schedule, on_step=on_step, should_stop=should_stop, progress=progress
        )
        staged, trajectory, stopped, notes = sched.model, sched.trajectory, sched.stopped, list(sched.notes)
        for settings in base["layers"].values():  # the schedule chose the channels
            settings.pop("prune", None)
    rebase = staged is not model or bool(transforms) or tuple(runtimes) != ("eager",)
    quick = (
        {"latency_rounds": 1, "runs_per_round": 1, "warmup": 1}
        if rebase
        else {"latency_rounds": latency_rounds}
    )
    result = compress(
        staged, base, data, None if trajectory else progress, batch_size, threads=threads, **quick
    )
    if not rebase:
        return result, {
            "runtimes": None,
            "trajectory": [],
            "stopped": False,
            "onnx_bytes": None,
            "transforms": None,
        }
    final, sizes, after_size = result.model, None, result.after.size_bytes
    if transforms:
        applied = apply_transforms(final, transforms, huffman=huffman)
        final, sizes, after_size = (
            applied.model,
            applied.sizes,
            int(applied.sizes.get("size_bytes", after_size)),
        )
        notes += list(applied.notes)
    try:
        after_counts = _counts(final, data.input_shape, after_size)
    except Exception:  # an int8 module thop cannot count: compress counted its float twin
        after_counts = {"params": result.after.params, "nonzero": result.after.nonzero_params,
                        "macs": result.after.macs, "size": after_size}  # fmt: skip
    metrics, timing = measure_runtimes(model, final, data, tuple(runtimes), after_counts, batch_size, threads,
                                       rounds=latency_rounds)  # fmt: skip
    first = metrics[runtimes[0]]
    result = dataclasses.replace(result, before=first["before"], after=first["after"], model=final,
                                 notes=[*result.notes, *notes])  # fmt: skip
    return result, {"runtimes": metrics, "timing": timing, "trajectory": trajectory, "stopped": stopped,
                    "onnx_bytes": None, "transforms": sizes}  # fmt: skip


def _spread(m: ModelMetrics, timing: Mapping | None) -> tuple[float, str | None]:
    spread = getattr(m, "latency_spread", None)
    warning = getattr(m, "latency_warning", None)
    if spread is None and timing:
        spread, warning = timing.get("spread"), timing.get("warning")
    if spread is None:
        spread = m.latency_p90_ms / m.latency_p10_ms if m.latency_p10_ms > 0 else float("nan")
        warning = f"noisy timing: p90/p10 = {spread:.1f}" if spread > 1.5 else None
    return float(spread), warning


def run_points(result: Any, extras: Mapping[str, Any], label: str, run: int) -> list[dict]:
    """Scatter rows of one applied plan: per runtime, its baseline and its plan, both from this run."""
    per_runtime = extras.get("runtimes") or {
        getattr(result.before, "runtime", None) or "eager": {"before": result.before, "after": result.after}
    }
    rows = []
    for runtime, pair in per_runtime.items():
        for role, key in (("baseline", "before"), ("plan", "after")):
            m = pair[key]
            spread, warning = _spread(m, ((extras.get("timing") or {}).get(runtime) or {}).get(key))
            rows.append({
                "label": f"original (run {run})" if role == "baseline" else label, "run": run, "role": role,
                "runtime": runtime, "kind": getattr(m, "latency_kind", None) or m.latency_label,
                "latency_ms": m.latency_ms, "accuracy": m.accuracy, "macs": m.macs, "params": m.params,
                "size_bytes": m.size_bytes, "batch_size": result.batch_size, "threads": result.threads,
                "spread": spread, "warning": warning,
            })  # fmt: skip
    return rows


def artifact_bytes(model: nn.Module, suffix: str, *, spec: str | None, input_shape, onnx_bytes=None) -> bytes:
    """The model saved by `analysis.save_artifact` as `suffix` (.onnx, .pt2, .pruned.safetensors), as bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_artifact(model, Path(tmp) / f"compressed{suffix}", spec=spec,
                             input_shape=tuple(input_shape[1:]), onnx_bytes=onnx_bytes)  # fmt: skip
        return Path(path).read_bytes()


# ------------------------------------------------------------------------------------------------- page


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """`_shared.guard`, with a WorkbenchError shown as text (underscores and brackets stay as written)."""
    with _shared.guard(what):
        try:
            yield
        except WorkbenchError as exc:
            st.error(_shared.plain(first_line(exc)))
            st.stop()


def _restore(model_key: str) -> dict:
    """The page's settings kept across navigation (Streamlit drops a widget's state when its page is left)."""
    kept = st.session_state.get(KEPT)
    if not kept or kept.get("model") != model_key:
        kept = st.session_state[KEPT] = {"model": model_key, "values": {}}
    for k, v in kept["values"].items():
        if k not in st.session_state:
            st.session_state[k] = v
    return kept


def _save(kept: dict) -> None:
    kept["values"] = {k: st.session_state[k] for k in list(st.session_state.keys())
                      if isinstance(k, str) and k.startswith(KEPT_PREFIXES)}  # fmt: skip


def _couple(layer: str, members: list[str]) -> None:
    value = st.session_state[f"prune::{layer}"]
    for m in members:
        st.session_state[f"prune::{m}"] = value


def _record(spec: Any, model: nn.Module, plan: Mapping, result: Any, extras: Mapping) -> int | None:
    payload = result.to_dict() | {
        "trajectory": extras.get("trajectory") or [],
        "stopped": bool(extras.get("stopped")),
    }
    if extras.get("runtimes"):
        payload["runtimes"] = {
            rt: {k: m.to_dict() for k, m in pair.items()} for rt, pair in extras["runtimes"].items()
        }
    params = {"plan": dict(plan), "batch_size": spec.batch_size, "threads": spec.threads}
    try:
        return ResultsStore().record("compression", spec.model, spec.data, params, payload,
                                     status="partial" if extras.get("stopped") else "complete",
                                     fingerprint=model_fingerprint(spec.model, model))  # fmt: skip
    except Exception as exc:  # a full disk must not lose the result on screen
        st.warning(_shared.plain(f"the result was not recorded in the results store: {first_line(exc)}"))
        return None


def main() -> None:  # noqa: C901 (one page, read top to bottom)
    st.title("Compress")
    wb = _shared.workbench()
    spec, key = wb.spec, wb.spec.model_key()
    kept = _restore(key)
    runtime = getattr(spec, "runtime", None) or "eager"
    with guard("Listing the layers"):
        table = _shared.cached(
            "layer_table", key, {}, lambda p: uniform_layer_table(wb.model, wb.input_shape)
        )
        groups = _shared.cached("pruning_groups", key, {}, lambda p: pruning_groups(wb.model, wb.input_shape))
        base_cost = _shared.cached("summary", key, {}, lambda p: summarize(wb.model, wb.input_shape))
    rows = list(table.itertuples(index=False))
    coupled = layer_groups(groups)
    for r in rows:
        st.session_state.setdefault(f"prune::{r.layer}", 0.0)
        st.session_state.setdefault(f"bits::{r.layer}", 32)
        st.session_state.setdefault(f"rank::{r.layer}", 0.0)
        st.session_state.setdefault(f"share::{r.layer}", 0)
        st.session_state.setdefault(f"wts::{r.layer}", "float")
    defaults = {"uni_prune": 0.25, "uni_bits": 32, "budget_kind": "macs", "budget_value": 0.5, "plan_criterion": "l1",
                "plan_structured": True, "plan_epochs": 0, "plan_distill": False, "plan_huffman": False,
                "meth_method": "oneshot", "meth_criterion": "taylor", "meth_normalize": "l2", "meth_target": "macs",
                "meth_target_value": 0.5, "meth_steps": 3, "meth_epochs_per_step": 1.0, "meth_strength": 1e-4,
                "meth_epochs": 3, "meth_finetune": 0, "rt_both": False}  # fmt: skip
    for k, v in defaults.items():
        st.session_state.setdefault(k, v)
    sweep = _shared.session_result("sensitivity:structured", key)

    # --- method
    st.subheader("Method")
    c = st.columns(4)
    method = c[0].selectbox("Method", SCHEDULE_METHODS, key="meth_method", format_func=METHOD_LABELS.get)
    schedule = None
    if method != "oneshot":
        crit = c[1].selectbox("Criterion (global ranking)", IMPORTANCE_CRITERIA, key="meth_criterion")
        norm = c[2].selectbox("Normalization within a layer", NORMALIZATIONS, key="meth_normalize")
        target = c[3].selectbox("Target", SCHEDULE_TARGETS, key="meth_target",
                                help="fraction to keep (MACs, params, latency) or channels (fraction or count)")  # fmt: skip
        c = st.columns(5)
        value = c[0].number_input("Target value", 0.01, 10000.0, step=0.05, key="meth_target_value")
        steps = c[1].number_input("Steps", 1, 100, key="meth_steps")
        eps = c[2].number_input("Epochs per step", 0.0, 50.0, step=0.5, key="meth_epochs_per_step")
        strength = c[3].number_input("Strength (penalty)", 0.0, 1.0, step=1e-5, format="%.5f", key="meth_strength",
                                     disabled=method not in ("slimming", "group-lasso"))  # fmt: skip
        epochs = c[4].number_input("Sparsity epochs", 0, 100, key="meth_epochs",
                                   disabled=method not in ("slimming", "group-lasso"))  # fmt: skip
        ft_epochs = st.number_input("Recovery epochs after the last step", 0, 50, key="meth_finetune")
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
        ratio = c[0].slider("Uniform prune ratio", 0.0, 0.9, step=0.05, key="uni_prune")
        bits = c[1].select_slider("Uniform bits (32 = float)", BITS, key="uni_bits")
        if c[2].button("Set every layer"):
            for r in rows:
                st.session_state[f"prune::{r.layer}"] = 0.0 if r.final else ratio
                st.session_state[f"bits::{r.layer}"] = bits
        c = st.columns([2, 2, 1])
        kind = c[0].selectbox("Budget", ["macs", "latency", "drop"], key="budget_kind",
                              help="macs, latency: the fraction to keep; drop: the accuracy points you accept")  # fmt: skip
        value = c[1].number_input("Budget value", 0.0, 100.0, step=0.05, key="budget_value")
        no_sweep = "Run a structured sweep on the Sensitivity page first" if sweep is None else None
        if c[2].button("Suggest", disabled=sweep is None, help=no_sweep):
            budget = f"{kind}={value / 100 if kind == 'drop' else value}"
            with guard("Suggesting a plan"):
                hint = _shared.cached(
                    "suggest", spec.timing_key(), {"budget": budget, "sweep": sweep.to_dict()},
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
            drop = min(max(hint.predicted_drop * 100, 0.0), 100.0)
            lat = f", {hint.latency_fraction:.0%} of the latency" if hint.latency_fraction is not None else ""
            text = (f"Suggested for {budget}: {hint.mac_fraction:.0%} of the MACs{lat}, predicted drop {drop:.2f} "
                    "points (an estimate: the sum of the groups' single-group drops from the sweep, capped at "
                    "100; groups interact)")  # fmt: skip
            st.session_state["_suggested"] = {"met": hint.met, "text": text, "drop": drop, "key": key}
        said = st.session_state.get("_suggested")
        if said and said["key"] == key:
            if said["met"]:
                st.success(_shared.plain(said["text"] + "."))
            else:
                st.warning(
                    _shared.plain("Budget not met. " + said["text"] + ": the closest the curves allow.")
                )
            if said["drop"] > COLLAPSE_POINTS:
                st.warning(_shared.plain(f"Predicted to lose {said['drop']:.0f} points: accuracy would collapse. "
                                         "Choose a looser budget, fine-tune, or an iterative method."))  # fmt: skip

    # --- per-layer settings
    st.subheader("Per layer")
    c = st.columns(4)
    criterion = c[0].selectbox("Criterion", IMPORTANCE_CRITERIA, key="plan_criterion")
    structured = c[1].toggle("Structured (remove channels)", key="plan_structured")
    huffman = c[2].toggle("Huffman-code shared weights", key="plan_huffman")
    both = c[3].checkbox("Time on eager and ONNX Runtime", key="rt_both", help=f"sidebar runtime: {runtime}")
    refused: dict[str, str] = {}
    layer_plan: dict[str, dict] = {}
    for r in rows:
        group = coupled.get(r.layer)
        members = [m for m in group.out_layers if m != r.layer] if group else []
        c = st.columns([2, 3, 3, 2, 2, 2])
        c[0].markdown(
            f"**{_shared.plain(r.layer)}**  \n{r.type}, {r.channels} outputs{' (classifier)' if r.final else ''}"
        )
        c[1].slider("prune ratio", 0.0, 0.95, step=0.05, key=f"prune::{r.layer}", disabled=bool(r.final) or method != "oneshot",
                    on_change=_couple, args=(r.layer, members),
                    help=f"coupled with {', '.join(members)}: they lose the same channels" if members else None)  # fmt: skip
        c[2].select_slider("bits", BITS, key=f"bits::{r.layer}")
        c[3].number_input("rank fraction (0 = off)", 0.0, 1.0, step=0.05, key=f"rank::{r.layer}")
        c[4].selectbox("share bits (0 = off)", SHARE_BITS, key=f"share::{r.layer}")
        c[5].selectbox("weights", WEIGHT_KINDS, key=f"wts::{r.layer}")
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
    c = st.columns(2)
    epochs = c[0].number_input("Fine-tune epochs", 0, 50, key="plan_epochs")
    distill = c[1].checkbox("Distill from the original", key="plan_distill")
    _save(kept)

    plan: dict[str, Any] = {
        "default": {"prune": 0.0, "criterion": criterion, "structured": bool(structured), "bits": 32},
        "layers": layer_plan,
        "finetune": {"epochs": int(epochs), "distill": bool(distill)},
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
    with guard("Counting the plan's cost"):
        cost = _shared.cached("preview_cost", key, {"ratios": ratios, "rank": rank_only},
                              lambda p: preview_cost(wb.model, wb.input_shape, ratios, rank_only))  # fmt: skip
    drop, missing = predicted_drop_points(sweep, ratios)
    c = st.columns(3)
    c[0].metric("MACs per sample", f"{cost['macs'] / 1e6:.2f} M", f"{cost['macs'] / base_cost.total_macs:.0%} of the original",
                delta_color="off")  # fmt: skip
    c[1].metric(
        "Params",
        f"{cost['params']:,}",
        f"{cost['params'] - base_cost.total_params:+,}",
        delta_color="inverse",
    )
    if method != "oneshot":
        c[2].metric("Predicted drop", "n/a", help="the schedule chooses the channels as it runs")
    elif drop is None:
        c[2].metric(
            "Predicted drop", "n/a", help="run a structured sweep on the Sensitivity page for an estimate"
        )
    else:
        c[2].metric("Predicted drop (estimate)", f"{drop:.2f} points",
                    help="sum of the groups' single-group drops from the structured sweep, capped at 100 points; "
                         "groups interact, so this is an estimate")  # fmt: skip
        if missing:
            st.caption(_shared.plain(f"not in the sweep, not counted: {', '.join(missing)}"))
        if drop > COLLAPSE_POINTS:
            st.warning(f"These settings are predicted to lose {drop:.0f} points: accuracy would collapse.")
    if method != "oneshot":
        st.caption(
            "MACs and params above are of the per-layer settings; the schedule's target decides the pruning."
        )
    if not structured and layer_ratios:
        st.caption("Unstructured pruning zeroes weights: MACs and params stay, only the nonzero count falls.")

    mlflow_uri = ""
    if not _shared.shared():  # a shared server writes nowhere a browser user names
        mlflow_uri = st.text_input(
            "Also log to MLflow (tracking URI, optional)",
            key=_shared.persist("cmp_mlflow"),
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
    if apply or _shared.job_running(job_key):
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
                    charts.trajectory_chart(records), key=f"live_{job_key}_{len(records)}"
                )

        def work(progress, should_stop):
            return apply_plan(wb.model, wb.data, pending, batch_size=spec.batch_size, threads=spec.threads,
                              runtimes=runtimes, progress=progress, on_step=on_step, should_stop=should_stop)  # fmt: skip

        with guard("Compressing"):
            (result, extras), _ = _shared.run_stoppable("Compressing and measuring", job_key, work, tick)
        placeholder.empty()
        _shared.keep_result("compress", key, result, {"extras": extras})
        runs = st.session_state.setdefault(f"_runs::{key}", [])
        n = 1 + max((p["run"] for p in runs), default=0)
        label = f"plan {n}" + (" (stopped)" if extras.get("stopped") else "")
        runs.extend(run_points(result, extras, label, n))
        _record(spec, wb.model, pending, result, extras)
        if mlflow_uri:
            with guard("Logging to MLflow"):
                run_id = log_compression(mlflow_uri, pending, result.to_dict(), run_name=label)
            st.caption(_shared.plain(f"logged to MLflow as run {run_id}"))

    result = _shared.session_result("compress", key)
    if result is None:
        st.info("Set ratios, bits and transforms per layer (or a preset, or a method) and press **Apply**.")
        st.stop()
    extras = _shared.result_params("compress").get("extras", {})

    st.subheader(f"Before and after ({runtime})" if not extras.get("runtimes") else "Before and after")
    if extras.get("stopped"):
        st.warning("Stopped: the result is the model after the last whole step.")
    _shared.compression_metrics(result)
    for rt, pair in (extras.get("runtimes") or {}).items():
        b, a = pair["before"], pair["after"]
        st.caption(f"{rt}: accuracy {b.accuracy:.2%} -> {a.accuracy:.2%}, latency {b.latency_ms:.2f} -> "
                   f"{a.latency_ms:.2f} ms ({a.latency_label})")  # fmt: skip
    _shared.table(comparison_frame(result), "before_after.csv", key="cmp_csv")
    for note in result.notes:
        st.info(_shared.plain(note))
    if extras.get("trajectory"):
        _shared.chart(charts.trajectory_chart(extras["trajectory"]), key="cmp_trajectory")
    points = pd.DataFrame(st.session_state.get(f"_runs::{key}", []))
    for w in points.loc[points["warning"].notna(), "warning"].unique() if not points.empty else []:
        st.warning(_shared.plain(w))
    _shared.chart(charts.runs_scatter(points), key="cmp_pareto")
    _shared.table(points, "applied_plans.csv", key="cmp_runs_csv")

    c = st.columns(5)
    with c[4]:
        _shared.download("Download the compressed model (.pt)", lambda: model_bytes(result.model), "compressed.pt",
                         "application/octet-stream", "cmp_model")  # fmt: skip
        st.caption("A pickle: loading it runs code (`--trust-pickle`).")
    with c[0]:
        _shared.download(
            "Download the plan (JSON)", result.plan.to_json(), "plan.json", "application/json", "cmp_plan"
        )
    shape = wb.input_shape
    with c[1]:
        _shared.download("Download ONNX (.onnx)", lambda: artifact_bytes(result.model, ".onnx", spec=None, input_shape=shape,
                         onnx_bytes=extras.get("onnx_bytes")), "compressed.onnx", "application/octet-stream", "cmp_onnx")  # fmt: skip
    with c[2]:
        _shared.download("Download torch.export (.pt2)", lambda: artifact_bytes(result.model, ".pt2", spec=None, input_shape=shape),
                         "compressed.pt2", "application/octet-stream", "cmp_pt2")  # fmt: skip
    with c[3]:
        if spec.model.startswith(("zoo:", "torchvision:")) and not spec.weights:
            _shared.download("Download safe pruned (.pruned.safetensors)",
                             lambda: artifact_bytes(result.model, ".pruned.safetensors", spec=spec.model, input_shape=shape),
                             "compressed.pruned.safetensors", "application/octet-stream", "cmp_safe")  # fmt: skip
        else:
            st.caption("The safe pruned format needs a rebuildable spec (a zoo or torchvision model).")
    st.caption(
        "Files are made when you click; `.onnx` is int8 where the plan quantized to 8 bits and ONNX Runtime ran."
    )


if __name__ == "__main__":
    main()
