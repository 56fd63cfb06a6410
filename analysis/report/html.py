"""The HTML report: one self-contained file (plotly's JS inlined once; opens offline, loads nothing from
the network), written atomically. Every figure comes from `analysis.report.charts`, the functions the app
draws with, so the report shows the same colors and labels as the app.

    build_report(model, data, out_path, sensitivity=None, rankings=None, summary=None, latency=None,
                 compression=None, applied=None, ...)
        renders what it is given (computing the cheap parts, model summary and baseline, if missing);
    build_full_report(model, data, out_path, kinds=KINDS, ...)
        runs every available analysis first (summary, latency, sensitivity of each kind, rankings).

The plain files (CSV, JSON, Markdown) are `analysis.report.files`.

One module: its sections share the figure embedding and table helpers and make one document.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.io import write_text_atomic
from analysis.metrics import ACCURACY, MetricInfo
from analysis.model.inputs import InputSpec
from analysis.progress import Progress
from analysis.report import charts
from analysis.report.files import as_list, environment, safe_drops, safe_points
from analysis.sensitivity.sweep import BASIC_KINDS, KINDS, SensitivityResult

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.env{color:#555;font-size:.9rem} .note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4rem .8rem}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0} th,td{border:1px solid #ddd;padding:.25rem .55rem}
th{background:#f4f4f4} td{text-align:right} td:first-child{text-align:left}
.kpi{display:inline-block;margin-right:2rem} .kpi b{font-size:1.3rem;display:block}
"""


class _Figures:
    """Turns plotly figures into HTML, inlining plotly's JS with the first one only."""

    def __init__(self) -> None:
        self.js_included = False

    def html(self, fig) -> str:
        out = fig.to_html(
            full_html=False, include_plotlyjs=not self.js_included, config={"displaylogo": False}
        )
        self.js_included = True
        return out


def _table(frame, float_format: str = "{:.4g}") -> str:
    return frame.to_html(index=False, border=0, na_rep="-", float_format=lambda v: float_format.format(v))


def _section_environment(
    env: dict, model_spec: str | None, data_spec: str | None, samples: int | None
) -> str:
    parts = [
        f"torch {env['torch']}",
        env["cpu"],
        f"{env['threads']} threads",
        env["date"],
        f"Python {env['python']}",
    ]
    what = [f"model <code>{html.escape(model_spec)}</code>" if model_spec else "",
            f"data <code>{html.escape(data_spec)}</code>" if data_spec else "",
            f"{samples} evaluation samples" if samples else ""]  # fmt: skip
    return (
        f'<p class="env">{" · ".join(html.escape(str(p)) for p in parts)}</p>'
        f'<p class="env">{" · ".join(w for w in what if w)}</p>'
    )


def _section_summary(summary) -> str:
    if summary is None:
        return "<h2>Model</h2><p>No model summary (analysis.cost is not available).</p>"
    head = (
        f'<div class="kpi">parameters<b>{summary.total_params:,}</b></div>'
        f'<div class="kpi">MACs per sample<b>{summary.total_macs:,}</b></div>'
        f'<div class="kpi">FLOPs per sample (= 2 x MACs)<b>{summary.total_flops:,}</b></div>'
    )
    frame = summary.to_frame() if hasattr(summary, "to_frame") else None
    table = _table(frame, "{:.3g}") if frame is not None else ""
    return f"<h2>Model</h2>{head}{table}"


def _runtime_label(item) -> str:
    """`eager (torch 2.x, CPU)` / `onnxruntime 1.x (CPUExecutionProvider)` from a latency result or metrics."""
    runtime = getattr(item, "runtime", "eager") or "eager"
    version = getattr(item, "runtime_version", "") or ""
    provider = getattr(item, "provider", "") or ""
    if runtime == "eager":
        return f"eager (torch {version or 'unknown'}, {provider or 'CPU'})"
    return f"{runtime} {version}".strip() + (f" ({provider})" if provider else "")


def _spread_note(spread, warning) -> str:
    """The p90/p10 spread, and the noisy-timing warning (p90/p10 > 1.5) when there is one."""
    text = f"p90/p10 = {spread:.2f}" if spread is not None and math.isfinite(spread) else "p90/p10 = -"
    if warning:
        return f'{text}</p><p class="note">{html.escape(warning)}'
    return text


def _section_latency(latency) -> str:
    """One block per latency result (a LatencyResult, or several: one per runtime): median, p10 - p90,
    the runtime with its version and execution provider, the spread and the noisy warning."""
    if latency is None:
        return ""
    if isinstance(latency, dict):
        results = list(latency.values())
    else:
        results = list(latency) if isinstance(latency, (list, tuple)) else [latency]
    out = ["<h2>Latency</h2>"]
    for item in results:
        if isinstance(item, str):  # a runtime that could not run the model: its one-line reason
            out.append(f'<p class="note">{html.escape(item)}</p>')
            continue
        kind = getattr(item, "kind", "real")
        out.append(
            f"<h3>{html.escape(_runtime_label(item))}</h3>"
            f'<div class="kpi">median<b>{item.median_ms:.2f} ms</b></div>'
            f'<div class="kpi">p10 - p90<b>{item.p10_ms:.2f} - {item.p90_ms:.2f} ms</b></div>'
            f"<p>{item.runs} runs, batch size {item.batch_size}, {item.threads} threads, {html.escape(kind)} "
            f"kernels, after warm-up; {_spread_note(item.spread, item.warning)}.</p>"
        )
    return "\n".join(out)


def _section_baseline(accuracy: float, loss: float, samples: int | None, score: MetricInfo = ACCURACY) -> str:
    n = f" on {samples} samples" if samples else ""
    if score.name == "accuracy":
        return (
            f"<h2>Baseline</h2><div class='kpi'>accuracy<b>{accuracy * 100:.2f}%</b></div>"
            f"<div class='kpi'>loss (mean cross-entropy)<b>{loss:.4f}</b></div><p>Top-1 accuracy{n}.</p>"
        )
    better = "higher" if score.higher_is_better else "lower"
    return (
        f"<h2>Baseline</h2><div class='kpi'>{html.escape(score.title)}<b>{html.escape(score.format(accuracy))}"
        f"</b></div><div class='kpi'>loss<b>{loss:.4f}</b></div><p>Metric: {html.escape(score.name)} "
        f"({better} is better){n}; it compares each output with the original model's on the same inputs, so "
        "the original scores its best here and every drop below is measured from it.</p>"
    )


def _section_sensitivity(result: SensitivityResult, figures: _Figures) -> str:
    unit = "groups" if result.kind == "structured" else "layers"
    out = [
        f"<h2>Sensitivity: {html.escape(result.kind)}</h2>",
        f"<p>{len(result.layers)} {unit}, each compressed alone; {result.samples} samples; "
        f"{result.seconds:.1f} s. {_KIND_TEXT[result.kind]}</p>",
    ]
    out += [f'<p class="note">{html.escape(note)}</p>' for note in result.notes]
    frame = result.to_frame()
    score = result.metric
    curves = charts.sensitivity_curves(
        frame, result.baseline_accuracy, f"{score.title} per {unit[:-1]}", score=score
    )
    out.append(figures.html(curves))
    out.append(figures.html(charts.sensitivity_heatmap(frame, result.baseline_accuracy, score=score)))
    if result.kind == "lowrank":
        out.append(figures.html(charts.lowrank_tradeoff(frame, result.baseline_accuracy, score=score)))
    what = (
        "smallest bit width"
        if result.kind in ("quant", "share")
        else "smallest kept rank fraction"
        if result.kind == "lowrank"
        else "largest ratio"
    )
    budgets = " and ".join(score.format_drop(d) for d in safe_drops(score))
    out.append(
        f"<h3>Safe points</h3><p>Per {unit[:-1]}: the {what} up to which every swept point stays within "
        f"{html.escape(budgets)} of the baseline {html.escape(score.name)} (columns as in the app).</p>"
    )
    out.append(_table(safe_points(result)))
    return "\n".join(out)


_KIND_TEXT = {
    "structured": "Each group's lowest-L1 output channels are removed with every layer coupled to them "
    "(residual adds, concatenations, norms, the next layers' inputs), simulated exactly by zeroing.",
    "unstructured": "Each layer's smallest-magnitude weights are zeroed.",
    "quant": "Each layer's weights are fake-quantized: symmetric, per output channel, 2^(b-1) - 1 levels each "
    "side; activations stay float.",
    "lowrank": "Each Linear / Conv2d layer is replaced by its truncated SVD at the kept fraction of its full "
    "rank (before fine-tuning); the dotted lines give the MACs per sample each point saves.",
    "share": "Each layer's weights are shared by k-means (2^bits centroids, linear initialization), as in "
    "Deep Compression; before centroid fine-tuning.",
}


def _section_rankings(rankings, figures: _Figures) -> str:
    """Filter-importance rankings (an `analysis.importance.RankingResult`): how the criteria agree with the
    oracle (table and bars), each criterion's score distribution per layer, and top-k overlaps."""
    if rankings is None:
        return ""
    criteria = list(rankings.criteria)
    oracle = (f", oracle on {rankings.oracle_samples} training samples (one evaluation per channel)"
              if "oracle" in criteria and rankings.oracle_samples else ", no oracle")  # fmt: skip
    out = [
        "<h2>Filter importance rankings</h2>",
        f"<p>{len(criteria)} criteria over {len(rankings.layers)} prunable layers; activation criteria on "
        f"{rankings.samples} training samples (one pass){oracle}; {rankings.seconds:.1f} s. Scores are per "
        "output channel, measured "
        "after the layer's norm (and its activation for APoZ and mean activation). Higher = more important, "
        "except APoZ (the fraction of zeros), which every comparison below negates.</p>",
    ]
    out += [f'<p class="note">{html.escape(note)}</p>' for note in rankings.notes]
    if rankings.spearman_vs_oracle:
        table = rankings.spearman_frame()
        table.index.name = "layer"
        out.append(
            "<h3>Agreement with the oracle</h3><p>Spearman's rank correlation of each criterion with the "
            "oracle (|loss change| when the channel is zeroed), per layer, averaged over layers, and pooled "
            "over all channels (each criterion L2-normalised within its layer first, as Molchanov et al. "
            "2017). 1 = same order as the oracle; 0 = unrelated; - = undefined (no norm for bn-scale, or "
            "constant scores).</p>"
        )
        out.append(_table(table.reset_index(), "{:.3f}"))
        names = [c for c in criteria if c != "oracle"]
        series = {
            "pooled": [rankings.spearman_vs_oracle.get(c) for c in names],
            "mean per layer": [rankings.spearman_mean_per_layer.get(c) for c in names],
        }
        out.append(figures.html(charts.grouped_bars(names, series, "Spearman vs oracle", "rho", (-1, 1))))
    frame = rankings.to_frame()
    if len(frame):
        out.append("<h3>Distributions</h3>" + figures.html(charts.criterion_distributions(frame, criteria)))
    if rankings.topk_overlap:
        title = (
            f"Top-k overlap (Jaccard of the {rankings.topk_fraction:.0%} of channels each would prune first)"
        )
        out.append(figures.html(charts.matrix_heatmap(rankings.topk_frame(), title, "Jaccard", 0.0, 1.0)))
    return "\n".join(out)


def _section_compression(compression, applied: Sequence[dict] | None, figures: _Figures) -> str:
    """The last compression (a `CompressionResult`): before/after table and, with the applied plans'
    rows (`run_point`), their accuracy-vs-latency scatter with the Pareto front."""
    if compression is None:
        return ""
    from analysis.report.tables import comparison_frame, pareto_table

    out = [
        "<h2>Compression</h2>",
        f"<p>The last applied plan: {compression.speedup:.2f}x speedup "
        f"({html.escape(compression.after.latency_label)}) on {html.escape(_runtime_label(compression.after))}"
        ".</p>",
        _table(comparison_frame(compression), "{:,.4g}"),
        _runtimes_table(compression),
    ]
    out += [f'<p class="note">{html.escape(note)}</p>' for note in compression.notes]
    trajectory = getattr(compression, "trajectory", None)
    if trajectory:
        stopped = (
            " (stopped by request: the model is the one after the last step)" if compression.stopped else ""
        )
        out.append(f"<h3>Schedule</h3><p>{len(trajectory) - 1} steps{stopped}.</p>")
        out.append(figures.html(charts.trajectory_chart(trajectory, score=compression.metric)))
    points = pareto_table(compression, list(applied or []))
    out.append(figures.html(charts.pareto_scatter(points, score=compression.metric)))
    out.append(_table(points.drop(columns=["plan", "warning"], errors="ignore"), "{:,.4g}"))
    noisy = dict.fromkeys(f"{r['label']} ({r.get('runtime', 'eager')}): {r['warning']}" for r in points.to_dict(
        "records") if isinstance(r.get("warning"), str) and r["warning"])  # fmt: skip
    out += [f'<p class="note">{html.escape(w)}</p>' for w in noisy]  # notes: a cell would outgrow the page
    if trajectory:  # schedule steps: accuracy, MACs, params, loss per step
        import pandas as pd

        steps = pd.DataFrame(trajectory).drop(columns=["channels"], errors="ignore")
        out.append("<h3>Trajectory</h3>" + _table(steps, "{:,.4g}"))
    out.append(f"<h3>Plan</h3><pre>{html.escape(compression.plan.to_json())}</pre>")
    return "\n".join(out)


def _score_column(m) -> dict:
    """A `ModelMetrics`' score as one table column: `accuracy (%)`, else `psnr (dB)` and the like."""
    score = m.metric
    if score.percent:
        return {f"{score.name} (%)": m.accuracy * 100}
    return {f"{score.name}{f' ({score.unit})' if score.unit else ''}": m.accuracy}


def _runtimes_table(compression) -> str:
    """Before and after latency and accuracy on each runtime, with the runtime's version, execution
    provider, real/simulated, the spread and any noisy-timing warning."""
    import pandas as pd

    runtimes = getattr(compression, "runtimes", None) or {
        "eager": {"before": compression.before, "after": compression.after}
    }
    rows, warnings = [], []
    for name, pair in runtimes.items():
        for which, m in pair.items():
            rows.append(
                {
                    "runtime": name,
                    "model": which,
                    "version": getattr(m, "runtime_version", ""),
                    "provider": getattr(m, "provider", ""),
                    "kind": getattr(m, "latency_kind", m.latency_label),
                    **_score_column(m),
                    "latency (ms)": m.latency_ms,
                    "p10 (ms)": m.latency_p10_ms,
                    "p90 (ms)": m.latency_p90_ms,
                    "p90/p10": getattr(m, "latency_spread", None),
                }
            )
            if getattr(m, "latency_warning", None):
                warnings.append(f"{name} {which}: {m.latency_warning}")
    notes = "".join(f'<p class="note">{html.escape(w)}</p>' for w in warnings)
    return "<h3>Runtimes</h3>" + _table(pd.DataFrame(rows), "{:,.4g}") + notes


def build_report(
    model: nn.Module,
    data: Dataset | None,
    out_path: str | Path,
    sensitivity: SensitivityResult | Sequence[SensitivityResult] | None = None,
    rankings=None,
    summary=None,
    latency=None,
    title: str = "Compression workbench report",
    model_spec: str | None = None,
    data_spec: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    compression=None,
    applied: Sequence[dict] | None = None,
    metric: str = "auto",
) -> Path:
    """Write one self-contained HTML report to `out_path` (atomically) and return its path.

    Sections: environment, model summary (computed with analysis.cost if not given), latency (if given),
    baseline (from the sensitivity results, or evaluated), one sensitivity section per result (a curve per
    layer, a heatmap layers x ratios, the safe-point table at 1 and 2 points), rankings (if given), the last
    compression (if given: before/after and `applied`, the applied plans' `run_point` rows, on a scatter).
    Scores are in the sweeps' metric (or `metric` where the baseline is evaluated here).
    """
    results = as_list(sensitivity)
    shape = input_shape or (data.input_shape if data is not None else getattr(model, "input_shape", None))
    if summary is None and shape is not None:
        try:
            from analysis.cost import summarize

            summary = summarize(model, shape if isinstance(shape, InputSpec) else tuple(shape))
        except ImportError:
            summary = None
    score = ACCURACY
    if results:
        base_acc, base_loss, samples = (
            results[0].baseline_accuracy,
            results[0].baseline_loss,
            results[0].samples,
        )
        score = results[0].metric
    elif data is not None:
        from analysis.evaluate import evaluate

        ev = evaluate(model, data, metric=metric)
        base_acc, base_loss, samples, score = ev.accuracy, ev.loss, ev.samples, ev.metric
    else:
        base_acc = base_loss = float("nan")
        samples = None
    figures = _Figures()
    body = [
        f"<h1>{html.escape(title)}</h1>",
        _section_environment(
            environment(), model_spec, data_spec or (data.spec if data is not None else None), samples
        ),
        _section_summary(summary),
        _section_latency(latency),
        _section_baseline(base_acc, base_loss, samples, score) if not math.isnan(base_acc) else "",
        *[_section_sensitivity(r, figures) for r in results],
        _section_rankings(rankings, figures),
        _section_compression(compression, applied, figures),
    ]
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(b for b in body if b)
        + "\n<script type='application/json' id='report-data'>"
        + html.escape(json.dumps({"sensitivity": [r.to_dict() for r in results]}), quote=False)
        + "</script>\n</body></html>\n"
    )
    return write_text_atomic(out_path, page)


def build_full_report(
    model: nn.Module,
    data: Dataset,
    out_path: str | Path,
    kinds: Sequence[str] = BASIC_KINDS,
    with_latency: bool = True,
    with_rankings: bool = True,
    progress: Progress | None = None,
    model_spec: str | None = None,
    rankings_options: dict | None = None,
    runtimes: Sequence[str] | None = None,
    threads: int | None = None,
    **sweep_options,
) -> tuple[Path, dict]:
    """Run every available analysis (summary, latency, a sensitivity sweep per kind, rankings where
    analysis.importance provides them), write the HTML report, and return (path, what ran).

    `runtimes` (e.g. `("eager", "onnxruntime")`): the latency is measured on each, labelled with the
    runtime, its version and execution provider; a runtime that cannot run the model gets its one-line
    reason in the report and in `ran["latency_errors"]`."""
    for kind in kinds:
        if kind not in KINDS:
            raise WorkbenchError(f"unknown sensitivity kind {kind!r}: use one of {', '.join(KINDS)}")
    from analysis.sensitivity.sweep import sensitivity_sweep

    ran: dict = {"sections": ["environment", "summary", "baseline"]}
    latency = None
    if with_latency and runtimes:
        latency = runtime_latencies(model, data.input_shape, runtimes, threads, ran)
        ran["sections"].append("latency")
    elif with_latency:
        from analysis.latency import measure_latency

        latency = measure_latency(model, data.input_shape, threads=threads)
        ran["sections"].append("latency")
        ran["latency"] = {"eager": latency.to_dict()}
    results = []
    for i, kind in enumerate(kinds):
        step = (lambda done, total, i=i: progress(i * total + done, len(kinds) * total)) if progress else None
        results.append(sensitivity_sweep(model, data, kind=kind, progress=step, **sweep_options))
        ran["sections"].append(f"sensitivity:{kind}")
    rankings = None
    if with_rankings:
        rankings = _try_rankings(model, data, rankings_options)
        if rankings is not None:
            ran["sections"].append("rankings")
    path = build_report(
        model, data, out_path, sensitivity=results, rankings=rankings, latency=latency, model_spec=model_spec
    )
    ran["sensitivity"] = {r.kind: r.to_dict() for r in results}
    return path, ran


def runtime_latencies(model, input_shape, runtimes, threads, ran: dict) -> dict:
    """Latency on each runtime (name -> LatencyResult, or the one-line reason it could not run)."""
    from analysis.errors import first_line
    from analysis.runtime.base import measure_runtime_latency, prepare

    out: dict = {}
    ran["latency"], ran["latency_errors"] = {}, {}
    for name in dict.fromkeys(runtimes):
        try:
            prepared = prepare(model, name, input_shape, threads)
        except WorkbenchError as exc:
            out[name] = ran["latency_errors"][name] = f"{name}: not measured: {first_line(exc)}"
            continue
        out[name] = measure_runtime_latency(prepared, input_shape, threads=threads)
        ran["latency"][name] = out[name].to_dict()
    return out


def _try_rankings(model: nn.Module, data: Dataset, options: dict | None = None):
    """Rankings from analysis.importance where that module provides `rank_channels`; None otherwise."""
    try:
        from analysis.importance.rankings import rank_channels
    except ImportError:
        return None
    return rank_channels(model, data, **(options or {}))
