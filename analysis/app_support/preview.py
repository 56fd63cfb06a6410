"""What the Compress page shows before and after Apply, without streamlit: the coupled groups and their
ratios, the predicted drop from a structured sweep, the cost of the settings, Apply itself (a thin call of
`compress`), the scatter rows of an applied plan, its record for the results store and its files.

Moved from pages/compress.py so the page stays the thin part; the app's page imports these from `analysis`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from analysis.compression.compress import compress
from analysis.compression.result import CompressionResult, ModelMetrics
from analysis.cost import summarize
from analysis.metrics import ACCURACY
from analysis.model.inputs import InputSpec
from analysis.model.layers import copy_model
from analysis.runtime import save_compressed
from analysis.transforms.fields import apply_transforms
from analysis.transforms.pruning import prune_structured
from analysis.transforms.registry import TRANSFORMS


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
    """Predicted drop of pruning each group at its ratio, in the sweep's metric: the sum of the groups'
    single-group drops from a structured sweep. A group's drop is the worst measured at or below its ratio
    (a curve that wiggles back up is noise), linear between swept ratios, the last point beyond: at swept
    ratios this is the number `suggest` predicts. For a fraction (accuracy, agreement) in points, bounded to
    [0, 100]; otherwise in the metric's units (dB for PSNR), at least 0. An estimate: groups interact. Also
    the groups the sweep lacks. None without a sweep."""
    if sweep is None:
        return None, []
    metric = getattr(sweep, "metric", ACCURACY)
    total, missing = 0.0, []
    for name, r in ratios.items():
        curve = sweep.layers.get(name)
        if curve is None:
            missing.append(name)
            continue
        order = np.argsort(curve.values)
        xs = np.concatenate([[0.0], np.asarray(curve.values, dtype=float)[order]])
        scores = np.asarray(curve.accuracy, dtype=float)[order]
        drops = [max(metric.drop(sweep.baseline_accuracy, float(s)), 0.0) for s in scores]
        worst = np.maximum.accumulate(np.concatenate([[0.0], drops]))
        total += float(np.interp(r, xs, worst))
    if not metric.percent:
        return max(total, 0.0), missing
    return min(max(total * 100.0, 0.0), 100.0), missing


def suggestion_verdict(
    suggestion: Any, drop_points: float, tolerance_points: float, sweep: Any
) -> tuple[bool, str]:
    """Whether a suggested plan may be shown as a success, and the sentence that says what it does: one
    predicted drop (`drop_points`, from `predicted_drop_points` on the suggested ratios, the number the
    preview shows too), labelled an estimate, with its basis. A success needs the budget met and the
    predicted drop within the user's `tolerance_points`; beyond it, the sentence says fine-tuning is needed."""
    metric = getattr(sweep, "metric", ACCURACY)
    scale, unit = (100.0, "points") if metric.percent else (1.0, metric.unit or metric.name)
    lat = "" if suggestion.latency_fraction is None else f", {suggestion.latency_fraction:.0%} of the latency"
    samples = getattr(sweep, "samples", 0)
    basis = (f"the sum of each group's drop when pruned alone in the structured sweep"
             f"{f' ({samples:,} samples)' if samples else ''}; groups interact, so the real drop can be larger")  # fmt: skip
    text = (f"Suggested for {suggestion.budget}: {suggestion.mac_fraction:.0%} of the MACs{lat}; predicted drop "
            f"{drop_points:.2f} {unit} (an estimate in {metric.name}: {basis})")  # fmt: skip
    if suggestion.measured_drop is not None:
        text += f"; measured without fine-tuning: {suggestion.measured_drop * scale:.2f} {unit}"
    worst = max(drop_points, (suggestion.measured_drop or 0.0) * scale)
    within = worst <= tolerance_points + 1e-9
    if not suggestion.met:
        text = f"Budget not met: the closest the curves allow. {text}"
    if not within:
        text += (f". That is more than the {tolerance_points:g} {unit} you accept: this plan needs fine-tuning "
                 "to come back within it (or a looser budget)")  # fmt: skip
    return suggestion.met and within, text + "."


def preview_transforms(layer_plan: Mapping[str, Mapping], refused: Mapping[str, str]) -> dict[str, dict]:
    """The per-layer transform fields the preview's cost must apply (those whose handler `changes_cost`:
    the low rank), of the layers not refused."""
    out: dict[str, dict] = {}
    for name, settings in layer_plan.items():
        fields = {k: v for k, v in settings.items() if k in TRANSFORMS and TRANSFORMS[k].changes_cost}
        if fields and name not in refused:
            out[name] = fields
    return out


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
    metric: str = "auto",
) -> tuple[CompressionResult, dict[str, Any]]:
    """Compress a copy of `model` by `plan` (dict, docs/contract.md sections 4 and 8) and measure before and after
    on each of `runtimes` (latency in ms); returns the CompressionResult and its extras {runtimes,
    trajectory, stopped, onnx_bytes, transforms}, scored in `metric`. `model` is never changed."""
    result = compress(model, dict(plan), data, progress, batch_size, threads=threads, runtimes=tuple(runtimes),
                      latency_rounds=latency_rounds, on_step=on_step, should_stop=should_stop,
                      metric=metric)  # fmt: skip
    extras = {
        k: getattr(result, k, None) for k in ("runtimes", "trajectory", "stopped", "onnx_bytes", "transforms")
    }
    extras["stopped"] = bool(extras["stopped"])
    extras["trajectory"] = extras["trajectory"] or []
    return result, extras


def remeasure(
    result: CompressionResult,
    reference: nn.Module,
    input_shape: tuple[int, ...],
    *,
    batch_size: int,
    threads: int | None,
    rounds: int = 10,
    progress: Callable[[int, int], None] | None = None,
    on_wait: Callable[[], None] | None = None,
) -> CompressionResult:
    """`result` with its latencies measured again: the original (`reference`) and the compressed model in
    one alternating run on each runtime it was measured on, so before and after always share a run.
    Accuracy, counts and everything else stay; `reference` is not changed (eager times a private copy)."""
    from analysis.runtime.base import EagerPrepared, compare_runtime_latency, prepare
    from analysis.runtime.measure import paired_speedup
    from analysis.runtime.onnx import load_onnx

    pairs = result.runtimes or {
        result.before.runtime or "eager": {"before": result.before, "after": result.after}
    }
    prepared: dict[str, Any] = {}
    for rt, pair in pairs.items():
        kind = pair["after"].latency_kind or pair["after"].latency_label
        if rt == "eager":
            prepared["eager:before"] = EagerPrepared(copy_model(reference).eval())
            prepared["eager:after"] = EagerPrepared(result.model, kind=kind)
            continue
        prepared[f"{rt}:before"] = prepare(reference, rt, input_shape, threads)
        after = load_onnx(result.onnx_bytes, threads) if result.onnx_bytes else None
        prepared[f"{rt}:after"] = after or prepare(
            result.float_model or result.model, rt, input_shape, threads
        )
        prepared[f"{rt}:after"].kind = kind
    timings = compare_runtime_latency(prepared, input_shape, batch_size, threads, rounds, progress=progress,
                                      on_wait=on_wait)  # fmt: skip

    def timed(m: ModelMetrics, t: Any) -> ModelMetrics:
        spread = t.spread if np.isfinite(t.spread) else None
        return dataclasses.replace(m, latency_ms=t.median_ms, latency_p10_ms=t.p10_ms, latency_p90_ms=t.p90_ms,
                                   latency_spread=spread, latency_warning=t.warning)  # fmt: skip

    runtimes = {
        rt: {w: timed(pair[w], timings[f"{rt}:{w}"]) for w in ("before", "after")}
        for rt, pair in pairs.items()
    }
    first = next(iter(runtimes))
    paired = paired_speedup(timings[f"{first}:before"], timings[f"{first}:after"], 5)  # 5: runs per round
    return dataclasses.replace(result, before=runtimes[first]["before"], after=runtimes[first]["after"],
                               runtimes=runtimes if result.runtimes else result.runtimes, speedup_paired=paired)  # fmt: skip


def _spread(m: ModelMetrics) -> tuple[float, str | None]:
    """The timing's p90/p10 and its warning; from p10 and p90 where the metrics carry no spread."""
    spread = getattr(m, "latency_spread", None)
    warning = getattr(m, "latency_warning", None)
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
            spread, warning = _spread(m)
            rows.append({
                "label": f"original (run {run})" if role == "baseline" else label, "run": run, "role": role,
                "runtime": runtime, "kind": getattr(m, "latency_kind", None) or m.latency_label,
                "latency_ms": m.latency_ms, "accuracy": m.accuracy, "macs": m.macs, "params": m.params,
                "size_bytes": m.size_bytes, "batch_size": result.batch_size, "threads": result.threads,
                "spread": spread, "warning": warning,
            })  # fmt: skip
    return rows


def noisy_timings(rows: list[Mapping[str, Any]]) -> str | None:
    """One line naming each noisy timing (p90/p10 above 1.5) of the newest run among scatter `rows`
    (`run_points`): which run, runtime and model, and the spread; None when its timings were steady."""
    if not rows:
        return None
    run = max(r["run"] for r in rows)
    noisy = [r for r in rows if r["run"] == run and r.get("warning")]
    if not noisy:
        return None
    parts = [f"{r['runtime']} {'original' if r['role'] == 'baseline' else 'plan'} p90/p10 = {r['spread']:.1f}"
             for r in noisy]  # fmt: skip
    return (f"Noisy timing in run {run} ({noisy[0]['label'] if noisy[0]['role'] != 'baseline' else 'plan ' + str(run)}): "
            f"{'; '.join(parts)}. The numbers show their p10-p90 range; Measure again on a quieter machine.")  # fmt: skip


def compression_record(
    plan: Mapping, result: Any, extras: Mapping, *, batch_size: int, threads: int | None
) -> tuple[dict, dict, str]:
    """The results store's (params, payload, status) of one applied plan: `partial` when it was stopped."""
    payload = result.to_dict() | {
        "trajectory": extras.get("trajectory") or [],
        "stopped": bool(extras.get("stopped")),
    }
    if extras.get("runtimes"):
        payload["runtimes"] = {
            rt: {k: m.to_dict() for k, m in pair.items()} for rt, pair in extras["runtimes"].items()
        }
    params = {"plan": dict(plan), "batch_size": batch_size, "threads": threads}
    return params, payload, "partial" if extras.get("stopped") else "complete"


def artifact_bytes(
    result: CompressionResult,
    suffix: str,
    *,
    spec: str | None,
    input_shape: tuple[int, ...] | InputSpec,
    data: Any = None,
) -> tuple[bytes, str]:
    """A compression result's model as a `suffix` file (.onnx, .pt2, .pruned.safetensors, .pt) and one line
    saying what it holds (`analysis.runtime.save_compressed`); `input_shape` is per sample (no batch), an
    `InputSpec` for several inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        path, what = save_compressed(result, Path(tmp) / f"compressed{suffix}", spec=spec,
                                     input_shape=input_shape, data=data)  # fmt: skip
        return Path(path).read_bytes(), what
