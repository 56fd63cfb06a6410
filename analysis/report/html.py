"""Reports: one self-contained HTML file (plotly's JS inlined once; opens offline, loads nothing from the
network), plus CSV (long form), JSON and a short Markdown summary. Every file is written atomically.

    build_report(model, data, out_path, sensitivity=None, rankings=None, summary=None, latency=None, ...)
        renders what it is given (computing the cheap parts, model summary and baseline, if missing);
    build_full_report(model, data, out_path, kinds=KINDS, ...)
        runs every available analysis first (summary, latency, sensitivity of each kind, rankings);
    write_csv / write_json / write_markdown(results, path); safe_ratio_table(result, drops);
    environment() -> {torch, cpu, threads, date, python}.

Each section is its own `_section_*` function returning HTML; `_section_rankings` is the hook the
importance-rankings work fills in (it gets an object with `to_frame()` and `spearman`).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.io import to_json, write_text_atomic
from analysis.sensitivity.sweep import KINDS, SensitivityResult

SAFE_DROPS = (0.01, 0.02)
Progress = Callable[[int, int], None]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.env{color:#555;font-size:.9rem} .note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4rem .8rem}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0} th,td{border:1px solid #ddd;padding:.25rem .55rem}
th{background:#f4f4f4} td{text-align:right} td:first-child{text-align:left}
.kpi{display:inline-block;margin-right:2rem} .kpi b{font-size:1.3rem;display:block}
"""


def environment() -> dict[str, str | int]:
    """Where the numbers were measured: torch version, CPU, torch threads, date (UTC), Python."""
    try:
        from analysis.latency import cpu_name

        cpu = cpu_name()
    except ImportError:
        cpu = platform.processor() or platform.machine()
    return {
        "torch": torch.__version__,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
    }


def _as_list(sensitivity) -> list[SensitivityResult]:
    if sensitivity is None:
        return []
    if isinstance(sensitivity, SensitivityResult):
        return [sensitivity]
    return list(sensitivity)


def _fmt_drop(drop: float) -> str:
    return f"{drop * 100:g}%"


def safe_ratio_table(result: SensitivityResult, drops: Sequence[float] = SAFE_DROPS):
    """Per layer: the largest safe ratio (pruning) or smallest safe bits (quant) at each accuracy drop
    (0.01 = one point), plus the worst drop seen. A pandas DataFrame."""
    import pandas as pd

    what = "min safe bits" if result.kind == "quant" else "max safe ratio"
    rows = []
    for name, curve in result.layers.items():
        row: dict = {"layer": name}
        if curve.members is not None:
            row["members"] = len(curve.members)
        for d in drops:
            row[f"{what} @ {_fmt_drop(d)} drop"] = result.safe_point(name, d)
        row["worst drop (points)"] = max(result.drops(name)) * 100 if curve.accuracy else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- writers


def _long_frame(results: Sequence[SensitivityResult]):
    import pandas as pd

    frames = [r.to_frame() for r in results]
    if not frames:
        return pd.DataFrame(columns=["layer", "kind", "ratio", "accuracy", "loss"])
    frame = pd.concat(frames, ignore_index=True)
    columns = ["layer", "kind"] + [c for c in ("ratio", "bits") if c in frame.columns] + ["accuracy", "loss"]
    return frame[columns]


def write_csv(results: SensitivityResult | Sequence[SensitivityResult], path: str | Path) -> Path:
    """Long form CSV: layer, kind, ratio (and/or bits), accuracy, loss; one row per swept point."""
    frame = _long_frame(_as_list(results))
    return write_text_atomic(path, frame.to_csv(index=False))


def write_json(results: SensitivityResult | Sequence[SensitivityResult], path: str | Path) -> Path:
    """One result: its CONTRACT JSON; several: {"results": [...]}."""
    items = _as_list(results)
    payload = items[0].to_dict() if len(items) == 1 else {"results": [r.to_dict() for r in items]}
    return write_text_atomic(path, to_json(payload))


def _md_table(frame) -> str:
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def markdown_summary(
    results: SensitivityResult | Sequence[SensitivityResult], title: str = "Sensitivity", top: int = 5
) -> str:
    """A short Markdown summary: baseline, the most sensitive layers, the safe-ratio table per kind."""
    env = environment()
    lines = [
        f"# {title}",
        "",
        f"torch {env['torch']}, {env['cpu']}, {env['threads']} threads, {env['date']}",
        "",
    ]
    for r in _as_list(results):
        lines += [
            f"## {r.kind} ({len(r.layers)} {'groups' if r.kind == 'structured' else 'layers'}, {r.seconds:.1f} s)",
            "",
            f"Baseline: accuracy {r.baseline_accuracy:.4f}, loss {r.baseline_loss:.4f} ({r.samples} samples).",
            "",
        ]
        worst = sorted(r.layers, key=lambda n: -max(r.drops(n), default=0.0))[:top]
        if worst:
            lines.append(
                "Most sensitive: "
                + ", ".join(f"{n} (worst drop {max(r.drops(n)) * 100:.1f} points)" for n in worst)
            )
            lines.append("")
        lines += [_md_table(safe_ratio_table(r)), ""]
        lines += [f"> {note}" for note in r.notes]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(
    results: SensitivityResult | Sequence[SensitivityResult], path: str | Path, title: str = "Sensitivity"
) -> Path:
    return write_text_atomic(path, markdown_summary(results, title))


# ------------------------------------------------------------------------------------------------ HTML


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


def _section_latency(latency) -> str:
    if latency is None:
        return ""
    kind = getattr(latency, "kind", "real")
    return (
        "<h2>Latency</h2>"
        f'<div class="kpi">median<b>{latency.median_ms:.2f} ms</b></div>'
        f'<div class="kpi">p10 - p90<b>{latency.p10_ms:.2f} - {latency.p90_ms:.2f} ms</b></div>'
        f"<p>{latency.runs} runs, batch size {latency.batch_size}, {latency.threads} threads, {html.escape(kind)} "
        "kernels, under torch.inference_mode() after warm-up.</p>"
    )


def _section_baseline(accuracy: float, loss: float, samples: int | None) -> str:
    n = f" on {samples} samples" if samples else ""
    return (
        f"<h2>Baseline</h2><div class='kpi'>accuracy<b>{accuracy * 100:.2f}%</b></div>"
        f"<div class='kpi'>loss (mean cross-entropy)<b>{loss:.4f}</b></div><p>Top-1 accuracy{n}.</p>"
    )


def _section_sensitivity(result: SensitivityResult, figures: _Figures) -> str:
    import plotly.graph_objects as go

    x_title = "bits" if result.kind == "quant" else "ratio removed"
    unit = "groups" if result.kind == "structured" else "layers"
    out = [
        f"<h2>Sensitivity: {html.escape(result.kind)}</h2>",
        f"<p>{len(result.layers)} {unit}, each compressed alone; {result.samples} samples; "
        f"{result.seconds:.1f} s. {_KIND_TEXT[result.kind]}</p>",
    ]
    out += [f'<p class="note">{html.escape(note)}</p>' for note in result.notes]
    curves = go.Figure()
    for name, curve in result.layers.items():
        curves.add_trace(
            go.Scatter(
                x=list(curve.values), y=[a * 100 for a in curve.accuracy], mode="lines+markers", name=name
            )
        )
    curves.add_hline(y=result.baseline_accuracy * 100, line_dash="dash", annotation_text="baseline")
    curves.update_layout(
        title=f"Accuracy per {unit[:-1]}", xaxis_title=x_title, yaxis_title="accuracy (%)", height=480
    )
    if result.kind == "quant":
        curves.update_xaxes(autorange="reversed")
    out.append(figures.html(curves))
    xs = sorted({v for c in result.layers.values() for v in c.values}, reverse=result.kind == "quant")
    z = []
    for curve in result.layers.values():
        point = dict(zip(curve.values, curve.accuracy, strict=True))
        z.append([(result.baseline_accuracy - point[x]) * 100 if x in point else None for x in xs])
    heat = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(x) for x in xs],
            y=list(result.layers),
            colorscale="Reds",
            colorbar={"title": "drop (points)"},
            hovertemplate="%{y} @ %{x}: drop %{z:.2f} points<extra></extra>",
        )
    )
    heat.update_layout(
        title=f"Accuracy drop (percentage points), {unit} x {x_title}",
        xaxis_title=x_title,
        height=max(300, 28 * len(result.layers) + 140),
        yaxis={"autorange": "reversed"},
    )
    out.append(figures.html(heat))
    what = "smallest bit width" if result.kind == "quant" else "largest ratio"
    out.append(
        f"<h3>Safe points</h3><p>Per {unit[:-1]}: the {what} up to which every swept point stays within 1 and "
        "2 accuracy points of the baseline.</p>"
    )
    out.append(_table(safe_ratio_table(result)))
    if result.kind == "structured":
        rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td style='text-align:left'>{html.escape(', '.join(c.members or ()))}</td></tr>"
            for n, c in result.layers.items()
        )
        out.append(f"<h3>Groups</h3><table><tr><th>group</th><th>members</th></tr>{rows}</table>")
    return "\n".join(out)


_KIND_TEXT = {
    "structured": "Each group's lowest-L1 output channels are removed with every layer coupled to them "
    "(residual adds, concatenations, norms, the next layers' inputs), simulated exactly by zeroing.",
    "unstructured": "Each layer's smallest-magnitude weights are zeroed.",
    "quant": "Each layer's weights are fake-quantized: symmetric, per output channel, 2^(b-1) - 1 levels each "
    "side; activations stay float.",
}


def _section_rankings(rankings, figures: _Figures) -> str:
    """Filter-importance rankings (an `analysis.importance.RankingResult`): how the criteria agree with the
    oracle (table and bars), each criterion's score distribution per layer, and top-k overlaps."""
    if rankings is None:
        return ""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    criteria = list(rankings.criteria)
    n_layers = len(rankings.layers)
    out = [
        "<h2>Filter importance rankings</h2>",
        f"<p>{len(criteria)} criteria over {n_layers} prunable layers; activation criteria on "
        f"{rankings.samples} training samples (one pass), oracle on {rankings.oracle_samples} training samples "
        f"(one evaluation per channel); {rankings.seconds:.1f} s. Scores are per output channel, measured "
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
        bars = go.Figure()
        names = [c for c in criteria if c != "oracle"]
        for label, values in (
            ("pooled", rankings.spearman_vs_oracle),
            ("mean per layer", rankings.spearman_mean_per_layer),
        ):
            bars.add_trace(go.Bar(x=names, y=[values.get(c) for c in names], name=label))
        bars.update_layout(
            title="Spearman vs oracle", yaxis_title="rho", yaxis_range=[-1, 1], barmode="group", height=380
        )
        out.append(figures.html(bars))
    frame = rankings.to_frame()
    if len(frame):
        fig = make_subplots(
            rows=len(criteria), cols=1, subplot_titles=criteria, vertical_spacing=0.25 / len(criteria)
        )
        for row, c in enumerate(criteria, start=1):
            fig.add_trace(
                go.Box(x=frame["layer"], y=frame[c], name=c, boxpoints="all", jitter=0.4, pointpos=0,
                       marker={"size": 3}, showlegend=False),
                row=row, col=1,
            )  # fmt: skip
        fig.update_layout(title="Score distribution per layer, by criterion", height=230 * len(criteria) + 80)
        out.append("<h3>Distributions</h3>" + figures.html(fig))
    if rankings.topk_overlap:
        z = [[rankings.topk_overlap[a].get(b) for b in criteria] for a in criteria]
        heat = go.Figure(
            go.Heatmap(z=z, x=criteria, y=criteria, zmin=0, zmax=1, colorscale="Blues",
                       text=[[f"{v:.2f}" if v is not None and v == v else "" for v in row] for row in z],
                       texttemplate="%{text}", colorbar={"title": "Jaccard"})
        )  # fmt: skip
        heat.update_layout(
            title=f"Top-k overlap: Jaccard of the {rankings.topk_fraction:.0%} of channels each criterion "
            "would prune first (mean over layers)",
            height=480,
            yaxis={"autorange": "reversed"},
        )
        out.append(figures.html(heat))
    return "\n".join(out)


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
) -> Path:
    """Write one self-contained HTML report to `out_path` (atomically) and return its path.

    Sections: environment, model summary (computed with analysis.cost if not given), latency (if given),
    baseline (from the sensitivity results, or evaluated), one sensitivity section per result (a curve per
    layer, a heatmap layers x ratios, the safe-ratio table at 1% and 2% drop), rankings (if given).
    """
    results = _as_list(sensitivity)
    shape = input_shape or (data.input_shape if data is not None else getattr(model, "input_shape", None))
    if summary is None and shape is not None:
        try:
            from analysis.cost import summarize

            summary = summarize(model, tuple(shape))
        except ImportError:
            summary = None
    if results:
        base_acc, base_loss, samples = (
            results[0].baseline_accuracy,
            results[0].baseline_loss,
            results[0].samples,
        )
    elif data is not None:
        from analysis.evaluate import evaluate

        ev = evaluate(model, data)
        base_acc, base_loss, samples = ev.accuracy, ev.loss, ev.samples
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
        _section_baseline(base_acc, base_loss, samples) if not math.isnan(base_acc) else "",
        *[_section_sensitivity(r, figures) for r in results],
        _section_rankings(rankings, figures),
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
    kinds: Sequence[str] = KINDS,
    with_latency: bool = True,
    with_rankings: bool = True,
    progress: Progress | None = None,
    model_spec: str | None = None,
    rankings_options: dict | None = None,
    **sweep_options,
) -> tuple[Path, dict]:
    """Run every available analysis (summary, latency, a sensitivity sweep per kind, rankings where
    analysis.importance provides them), write the HTML report, and return (path, what ran)."""
    for kind in kinds:
        if kind not in KINDS:
            raise WorkbenchError(f"unknown sensitivity kind {kind!r}: use structured, unstructured or quant")
    from analysis.sensitivity.sweep import sensitivity_sweep

    ran: dict = {"sections": ["environment", "summary", "baseline"]}
    latency = None
    if with_latency:
        try:
            from analysis.latency import measure_latency

            latency = measure_latency(model, data.input_shape)
            ran["sections"].append("latency")
        except ImportError:
            pass
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


def _try_rankings(model: nn.Module, data: Dataset, options: dict | None = None):
    """Rankings from analysis.importance where that module provides `rank_channels`; None otherwise."""
    try:
        from analysis.importance.rankings import rank_channels
    except ImportError:
        return None
    return rank_channels(model, data, **(options or {}))
