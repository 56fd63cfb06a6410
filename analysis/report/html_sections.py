"""The sections of the HTML report (`html.py` puts them together): environment, summary, latency, baseline,
sensitivity, rankings, compression; each a function of plain results that returns HTML."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from analysis.metrics import ACCURACY, MetricInfo
from analysis.report import charts
from analysis.report.files import safe_drops, safe_points
from analysis.sensitivity.kinds import get_sweep_kind
from analysis.sensitivity.sweep import SensitivityResult


class Figures:
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


def section_environment(env: dict, model_spec: str | None, data_spec: str | None, samples: int | None) -> str:
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


def section_summary(summary) -> str:
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


def section_latency(latency) -> str:
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


def section_baseline(accuracy: float, loss: float, samples: int | None, score: MetricInfo = ACCURACY) -> str:
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


def section_sensitivity(result: SensitivityResult, figures: Figures) -> str:
    spec = get_sweep_kind(result.kind)  # what its values are and the sentence on what one point does
    unit = spec.unit
    out = [
        f"<h2>Sensitivity: {html.escape(result.kind)}</h2>",
        f"<p>{len(result.layers)} {unit}, each compressed alone; {result.samples} samples; "
        f"{result.seconds:.1f} s. {html.escape(spec.text, quote=False)}</p>",
    ]
    out += [f'<p class="note">{html.escape(note)}</p>' for note in result.notes]
    frame = result.to_frame()
    score = result.metric
    curves = charts.sensitivity_curves(
        frame, result.baseline_accuracy, f"{score.title} per {unit[:-1]}", score=score
    )
    out.append(figures.html(curves))
    out.append(figures.html(charts.sensitivity_heatmap(frame, result.baseline_accuracy, score=score)))
    if spec.saves_cost:
        out.append(figures.html(charts.lowrank_tradeoff(frame, result.baseline_accuracy, score=score)))
    budgets = " and ".join(score.format_drop(d) for d in safe_drops(score))
    out.append(
        f"<h3>Safe points</h3><p>Per {unit[:-1]}: the {html.escape(spec.safe_text)} up to which every swept "
        f"point stays within {html.escape(budgets)} of the baseline {html.escape(score.name)} (columns as in "
        "the app).</p>"
    )
    out.append(_table(safe_points(result)))
    return "\n".join(out)


def section_rankings(rankings, figures: Figures) -> str:
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


def section_compression(compression, applied: Sequence[dict] | None, figures: Figures) -> str:
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
