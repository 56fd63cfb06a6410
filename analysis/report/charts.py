"""Plotly figures of the workbench's results: the ONE place a figure is drawn (the app's pages, the HTML
report and the notebooks all call these functions).

Each function takes plain results (data frames, histograms) and returns a `plotly.graph_objects.Figure`;
none computes anything expensive. Axis titles carry units. Every figure carries an explicit template
(`TEMPLATE`: plotly_white with the workbench's palette as colorway), so an export never inherits whatever
theme or default template the caller has set (the app's theme once turned every exported line near-black).

One module by design: it is the only place figures are drawn, so every chart shares one layout and template.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from analysis.metrics import ACCURACY, MetricInfo
from analysis.report.weights import Histogram, QuantizationView

MAX_GRID_LINES = 64  # beyond this many quantization levels the grid is too fine to draw as lines
PALETTE = (
    "#4C78A8",
    "#F58518",
    "#54A24B",
    "#E45756",
    "#72B7B2",
    "#B279A2",
    "#FF9DA6",
    "#9D755D",
    "#BAB0AC",
    "#EECA3B",
)

TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.colorway = PALETTE


def _axis(score: MetricInfo) -> tuple[float, str, str]:
    """How a metric is drawn: (scale, axis title, hover format): accuracy-like fractions in %, others in
    their unit (`PSNR (dB)`), each title saying whether higher or lower is better."""
    better = "higher is better" if score.higher_is_better else "lower is better"
    if score.percent:
        return 100.0, f"{score.label or score.name} (%, {better})", ".2f"
    return 1.0, f"{score.title}, {better}", ".4g"


def _drop_unit(score: MetricInfo) -> str:
    return "points" if score.percent else (score.unit or score.name)


def _layout(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    if height:
        fig.update_layout(height=height)
    return fig


def sorted_bar(
    frame: pd.DataFrame, value: str, label: str = "name", title: str = "", unit: str = ""
) -> go.Figure:
    """Horizontal bars of `value` per `label`, largest on top; rows with a zero value are left out."""
    rows = frame[frame[value] > 0].sort_values(value)
    fig = go.Figure(
        go.Bar(
            x=rows[value],
            y=rows[label],
            orientation="h",
            text=[f"{v:,.0f}" if float(v).is_integer() else f"{v:,.3g}" for v in rows[value]],
            textposition="auto",
            marker_color=PALETTE[0],
            customdata=rows[["type"]] if "type" in rows else None,
            hovertemplate="%{y} (%{customdata[0]}): %{x:,}<extra></extra>" if "type" in rows else None,
        )
    )
    fig.update_xaxes(title=f"{value}{f' ({unit})' if unit else ''}")
    return _layout(fig, title or f"{value} per layer", height=max(260, 28 * len(rows) + 120))


def share_comparison(
    frame: pd.DataFrame, title: str = "Share of MACs vs share of measured time"
) -> go.Figure:
    """Per layer, its share of the model's MACs next to its share of measured forward time.

    Layers with neither MACs nor measurable time are left out; sorted by time share, largest on top.
    """
    rows = frame[(frame["macs_share"] > 0) | (frame["time_share"] > 0.005)].sort_values("time_share")
    fig = go.Figure(
        [
            go.Bar(
                x=rows["macs_share"] * 100,
                y=rows["name"],
                orientation="h",
                name="share of MACs (%)",
                marker_color=PALETTE[0],
            ),
            go.Bar(
                x=rows["time_share"] * 100,
                y=rows["name"],
                orientation="h",
                name="share of time (%)",
                marker_color=PALETTE[1],
            ),
        ]
    )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title="share of the model (%)")
    return _layout(fig, title, height=max(300, 36 * len(rows) + 140))


def histogram_overlay(hists: list[Histogram], title: str = "Weight distributions (density)") -> go.Figure:
    """Each layer's weight histogram as a density step line on one axis, so shapes compare directly."""
    fig = go.Figure()
    for i, h in enumerate(hists):
        fig.add_trace(
            go.Scatter(
                x=h.centers,
                y=h.density,
                mode="lines",
                line={"shape": "hvh", "color": PALETTE[i % len(PALETTE)]},
                name=h.layer,
            )
        )
    fig.update_xaxes(title="weight value")
    fig.update_yaxes(title="density")
    return _layout(fig, title, height=420)


def histogram_grid(hists: list[Histogram], cols: int = 3, title: str = "Weights per layer") -> go.Figure:
    """Small multiples: one bar histogram per layer, each on its own axes."""
    cols = max(1, min(cols, len(hists)))
    rows = max(1, math.ceil(len(hists) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[h.layer for h in hists])
    for i, h in enumerate(hists):
        fig.add_trace(
            go.Bar(
                x=h.centers,
                y=h.counts,
                width=np.diff(h.edges),
                marker_color=PALETTE[i % len(PALETTE)],
                name=h.layer,
                showlegend=False,
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_layout(bargap=0)
    return _layout(fig, title, height=220 * rows + 80)


def quantization_figure(view: QuantizationView) -> go.Figure:
    """The layer's histogram, the histogram after fake quantization, and the grid of levels (dotted lines)
    of the widest channel; a grid too fine to draw is described in the title instead."""
    fig = go.Figure(
        [
            go.Bar(
                x=view.before.centers,
                y=view.before.counts,
                width=np.diff(view.before.edges),
                name="float weights",
                marker_color=PALETTE[0],
                opacity=0.6,
            ),
            go.Bar(
                x=view.after.centers,
                y=view.after.counts,
                width=np.diff(view.after.edges),
                name=f"at {view.bits} bits",
                marker_color=PALETTE[1],
                opacity=0.6,
            ),
        ]
    )
    lo, hi = view.before.edges[0], view.before.edges[-1]
    shown = view.grid[(view.grid >= lo) & (view.grid <= hi)]
    step = float(view.grid[1] - view.grid[0]) if len(view.grid) > 1 else 0.0
    if len(shown) <= MAX_GRID_LINES:
        for level in shown:
            fig.add_vline(x=float(level), line={"width": 1, "dash": "dot", "color": "#666"})
        grid_note = f"{len(view.grid)} levels, step {step:.3g} (widest channel)"
    else:
        grid_note = f"{len(view.grid)} levels, step {step:.3g}: too fine to draw"
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title="weight value")
    fig.update_yaxes(title="weights")
    title = f"{view.layer} at {view.bits} bits: {grid_note}; SQNR {view.sqnr_db:.1f} dB"
    return _layout(fig, title, height=420)


def pareto_scatter(points: pd.DataFrame, title: str = "", score: MetricInfo = ACCURACY) -> go.Figure:
    """Applied configurations as points (columns label, latency_ms, accuracy (the score in `score`),
    pareto), the Pareto front (best score for its latency) joined by a line and drawn larger."""
    scale, axis, fmt = _axis(score)
    title = title or f"{score.title} vs latency of every applied plan"
    fig = go.Figure()
    front = points[points["pareto"]].sort_values("latency_ms")
    rest = points[~points["pareto"]]
    fig.add_trace(
        go.Scatter(
            x=rest["latency_ms"],
            y=rest["accuracy"] * scale,
            mode="markers",
            name="dominated",
            text=rest["label"],
            marker={"size": 9, "color": PALETTE[8]},
            hovertemplate=f"%{{text}}<br>%{{x:.2f}} ms, %{{y:{fmt}}}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=front["latency_ms"],
            y=front["accuracy"] * scale,
            mode="lines+markers",
            name="Pareto front",
            text=front["label"],
            marker={"size": 13, "color": PALETTE[3], "symbol": "star"},
            line={"dash": "dash"},
            hovertemplate=f"%{{text}}<br>%{{x:.2f}} ms, %{{y:{fmt}}}<extra></extra>",
        )
    )
    fig.update_xaxes(title="measured latency (ms per batch)")
    fig.update_yaxes(title=axis)
    return _layout(fig, title, height=420)


def sensitivity_curves(
    frame: pd.DataFrame,
    baseline: float,
    title: str = "",
    metric: str = "accuracy",
    score: MetricInfo = ACCURACY,
) -> go.Figure:
    """The score in `score` (accuracy in %, PSNR in dB, ...; `metric="accuracy"`) or the loss
    (`metric="loss"`) against ratio or bits, one line per layer (long-form frame of `SensitivityResult`),
    with the uncompressed `baseline` (of that column) dashed. A lowrank frame (column `kept_rank`) has the
    kept rank fraction on x, largest first, and each point's rank and MACs saved in the hover."""
    x = _x_column(frame)
    is_score = metric != "loss"
    column = score.name if is_score else "loss"
    scale, axis, fmt = _axis(score) if is_score else (1.0, "loss (mean)", ".4f")
    fig = go.Figure()
    extra = [c for c in ("rank", "macs_saved") if c in frame.columns]
    for i, (layer, rows) in enumerate(frame.groupby("layer", sort=False)):
        rows = rows.sort_values(x)
        more = "".join(f", {c.replace('_', ' ')} %{{customdata[{j + 2}]:,}}" for j, c in enumerate(extra))
        fig.add_trace(
            go.Scatter(
                x=rows[x],
                y=rows[column] * scale,
                mode="lines+markers",
                name=str(layer),
                line={"color": PALETTE[i % len(PALETTE)]},
                customdata=rows[[score.name, "loss", *extra]],
                hovertemplate=f"{layer}<br>{x} %{{x}}: {score.name} %{{customdata[0]:{'.2%' if score.percent else '.4g'}}}, "
                f"loss %{{customdata[1]:.4f}}{more}<extra></extra>",
            )
        )
    label = f"baseline {score.format(baseline)}" if is_score else f"baseline {baseline:.4f}"
    fig.add_hline(y=baseline * scale, line={"dash": "dash", "color": "#444"}, annotation_text=label)
    fig.update_xaxes(title=_X_TITLES[x])
    if x in ("bits", "kept_rank"):
        fig.update_xaxes(autorange="reversed")  # more compressed to the right, as for ratios
    fig.update_yaxes(title=axis)
    name = score.title if is_score else "Loss"
    return _layout(fig, title or f"{name} per layer", height=460)


_X_TITLES = {
    "bits": "bits per weight",
    "ratio": "pruning ratio (fraction removed)",
    "kept_rank": "kept rank fraction (of the full rank)",
}


def _x_column(frame: pd.DataFrame) -> str:
    """The swept value's column of a sensitivity frame: bits, kept_rank (lowrank) or ratio."""
    return next((c for c in ("bits", "kept_rank") if c in frame.columns), "ratio")


def sensitivity_heatmap(
    frame: pd.DataFrame, baseline_accuracy: float, title: str = "", score: MetricInfo = ACCURACY
) -> go.Figure:
    """The drop in `score` (worse than the baseline, in points for accuracy, in the metric's unit
    otherwise), layers x ratios (or bits)."""
    x = _x_column(frame)
    scale = 100.0 if score.percent else 1.0
    unit = _drop_unit(score)
    drop = frame.assign(drop=[score.drop(baseline_accuracy, v) * scale for v in frame[score.name]])
    grid = drop.pivot_table(index="layer", columns=x, values="drop", sort=False)
    grid = grid.reindex(list(dict.fromkeys(frame["layer"])))
    if x in ("bits", "kept_rank"):
        grid = grid[sorted(grid.columns, reverse=True)]
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=[f"{c:g}" for c in grid.columns],  # bits 8, not 8.0
            y=list(grid.index),
            colorscale="Reds",
            zmin=0,
            colorbar={"title": f"drop ({unit})"},
            text=np.round(grid.values, 1),
            texttemplate="%{text}",
            hovertemplate=f"%{{y}} at %{{x}}: %{{z:.2f}} {unit}<extra></extra>",
        )
    )
    fig.update_xaxes(title=_X_TITLES[x], type="category")
    fig.update_yaxes(autorange="reversed")
    label = score.label or score.name
    default = f"{label[0].upper()}{label[1:]} drop ({unit})"
    return _layout(fig, title or default, height=max(300, 34 * len(grid) + 140))


def criterion_distributions(frame: pd.DataFrame, criteria: list[str], title: str = "") -> go.Figure:
    """Small multiples, one per criterion: a box with every channel's score as a point, per layer
    (frame: `RankingResult.to_frame()`, one row per channel). Each criterion keeps its own units."""
    cols = min(2, max(len(criteria), 1))
    rows = max(1, math.ceil(len(criteria) / cols))
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=criteria, vertical_spacing=0.12 / max(rows / 3, 1)
    )
    layers = list(dict.fromkeys(frame["layer"]))
    for i, criterion in enumerate(criteria):
        for j, layer in enumerate(layers):
            values = frame.loc[frame["layer"] == layer, criterion]
            fig.add_trace(
                go.Box(
                    y=values,
                    name=layer,
                    boxpoints="all",
                    jitter=0.4,
                    pointpos=0,
                    marker={"size": 3, "color": PALETTE[j % len(PALETTE)]},
                    line={"width": 1},
                    showlegend=False,
                ),
                row=i // cols + 1,
                col=i % cols + 1,
            )
    return _layout(fig, title or "Channel scores per layer, by criterion", height=300 * rows + 80)


def matrix_heatmap(
    matrix: pd.DataFrame, title: str, colorbar: str, zmin: float = -1.0, zmax: float = 1.0
) -> go.Figure:
    """A labelled heatmap of a small matrix (correlations, overlaps), values printed in the cells."""
    values = matrix.to_numpy(dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[str(c) for c in matrix.columns],
            y=[str(i) for i in matrix.index],
            colorscale="RdBu" if zmin < 0 else "Blues",
            zmin=zmin,
            zmax=zmax,
            colorbar={"title": colorbar},
            text=np.round(values, 2),
            texttemplate="%{text}",
            hovertemplate="%{y} / %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, height=max(320, 40 * len(matrix) + 160))


def grouped_bars(
    categories: list[str],
    series: dict[str, list[float | None]],
    title: str,
    y_title: str,
    y_range: tuple[float, float] | None = None,
) -> go.Figure:
    """One bar per category for each named series, side by side (e.g. Spearman pooled and per layer)."""
    fig = go.Figure(
        [
            go.Bar(x=categories, y=values, name=name, marker_color=PALETTE[i % len(PALETTE)])
            for i, (name, values) in enumerate(series.items())
        ]
    )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title=y_title, range=list(y_range) if y_range else None)
    return _layout(fig, title, height=380)


def value_histograms(
    before: dict[str, list[float]], after: dict[str, list[float]] | None, x_title: str, title: str = ""
) -> go.Figure:
    """Values pooled over layers (BatchNorm |gamma| or filter norms), before and, when given, after sparsity
    training, as overlaid histograms: a mass near zero after training is the penalty's evidence."""
    fig = go.Figure()
    for i, (name, values) in enumerate((("before", before), ("after", after))):
        if not values:
            continue
        pooled = [v for vs in values.values() for v in vs]
        fig.add_trace(go.Histogram(x=pooled, name=name, opacity=0.6, marker_color=PALETTE[i], nbinsx=60))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="channels")
    return _layout(fig, title, height=380)


def recorded_plans_scatter(table: pd.DataFrame, title: str = "") -> go.Figure:
    """Every recorded compression of a model (rows of `analysis.store.compare`, index = run id): the score
    after (`score after`, in the runs' metric: accuracy in %) against latency after (ms per batch), one
    marker series per runtime measured, and each run's original model (before) as a grey cross. Runs in
    another metric than the first run's are left out (their scores are not comparable)."""
    fig = go.Figure()
    table = _one_metric(table)
    name = str(table["metric"].iloc[0]) if "metric" in table.columns and len(table) else "accuracy"
    score = MetricInfo.from_dict({"name": name})
    scale, axis, fmt = _axis(score)
    after_col = "score after" if "score after" in table.columns else "accuracy after"
    before_col = "score before" if "score before" in table.columns else "accuracy before"
    runtimes = [
        c[len("latency_ms[") : -len("] after")]
        for c in table.columns
        if c.startswith("latency_ms[") and c.endswith("] after")
    ]
    for i, runtime in enumerate(runtimes):
        col = f"latency_ms[{runtime}] after"
        rows = table[table[col].notna() & table[after_col].notna()]
        fig.add_trace(
            go.Scatter(
                x=rows[col], y=rows[after_col] * scale, mode="markers", name=runtime,
                text=[f"run {i}" for i in rows.index], marker={"size": 11, "color": PALETTE[i % len(PALETTE)]},
                hovertemplate=f"%{{text}}<br>%{{x:.2f}} ms, %{{y:{fmt}}}<extra>" + runtime + "</extra>",
            )
        )  # fmt: skip
        before = table[table[f"latency_ms[{runtime}] before"].notna() & table[before_col].notna()]
        fig.add_trace(
            go.Scatter(
                x=before[f"latency_ms[{runtime}] before"], y=before[before_col] * scale, mode="markers",
                name=f"original ({runtime})", text=[f"run {i}" for i in before.index],
                marker={"size": 9, "symbol": "x", "color": PALETTE[8]},
                hovertemplate=f"original, %{{text}}<br>%{{x:.2f}} ms, %{{y:{fmt}}}<extra></extra>",
            )
        )  # fmt: skip
    fig.update_xaxes(title="measured latency (ms per batch)")
    fig.update_yaxes(title=axis)
    return _layout(fig, title or f"{score.title} vs latency of every recorded plan", height=440)


def _one_metric(table: pd.DataFrame) -> pd.DataFrame:
    """The rows scored in the first row's metric (all of them for tables without a `metric` column)."""
    if "metric" not in table.columns or table.empty:
        return table
    return table[table["metric"].fillna("accuracy") == table["metric"].fillna("accuracy").iloc[0]]


_KIND_SYMBOLS = {"real": "circle", "simulated": "diamond-open"}


def runs_scatter(points: pd.DataFrame, title: str = "", score: MetricInfo = ACCURACY) -> go.Figure:
    """Each applied plan against the baseline timed in the same run (columns label, run, role
    'baseline'|'plan', latency_ms, accuracy (the score in `score`; accuracy in [0, 1]), runtime, kind
    real|simulated, batch_size, threads, spread, warning). A thin line joins a plan to its own baseline:
    numbers from different runs are never compared. Colour = runtime, marker = real (filled circle) or
    simulated (open diamond); baselines are drawn smaller and grey-edged."""
    scale, axis, fmt = _axis(score)
    title = title or f"{score.title} vs latency of every applied plan"
    fig = go.Figure()
    runtimes = list(dict.fromkeys(points["runtime"]))
    for (_run, runtime), rows in points.groupby(["run", "runtime"], sort=False):
        colour = PALETTE[runtimes.index(runtime) % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=rows["latency_ms"],
                y=rows["accuracy"] * scale,
                mode="lines",
                line={"color": colour, "width": 1, "dash": "dot"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
    for (runtime, kind, role), rows in points.groupby(["runtime", "kind", "role"], sort=False):
        colour = PALETTE[runtimes.index(runtime) % len(PALETTE)]
        symbol = _KIND_SYMBOLS.get(kind, "x")
        warn = rows["warning"].fillna("").map(lambda w: f"<br>{w}" if w else "")
        fig.add_trace(
            go.Scatter(
                x=rows["latency_ms"],
                y=rows["accuracy"] * scale,
                mode="markers",
                name=f"{runtime}, {kind}{' baseline' if role == 'baseline' else ''}",
                text=rows["label"],
                customdata=np.stack(
                    [
                        rows["runtime"],
                        rows["batch_size"],
                        rows["threads"],
                        rows["spread"],
                        warn,
                        rows["kind"],
                    ],
                    axis=1,
                ),
                marker={
                    "size": 8 if role == "baseline" else 12,
                    "color": colour,
                    "symbol": symbol,
                    "line": {"color": "#777" if role == "baseline" else colour, "width": 1},
                    "opacity": 0.6 if role == "baseline" else 1.0,
                },
                hovertemplate=(
                    f"%{{text}}<br>%{{x:.2f}} ms (%{{customdata[5]}}), %{{y:{fmt}}}<br>runtime %{{customdata[0]}}, "
                    "batch %{customdata[1]}, %{customdata[2]} threads<br>spread p90/p10 %{customdata[3]:.2f}"
                    "%{customdata[4]}<extra></extra>"
                ),
            )
        )
    fig.update_xaxes(title="measured latency (ms per batch)")
    fig.update_yaxes(title=axis)
    return _layout(fig, title, height=440)


def lowrank_tradeoff(
    frame: pd.DataFrame, baseline_accuracy: float, title: str = "", score: MetricInfo = ACCURACY
) -> go.Figure:
    """A lowrank sweep (frame with kept_rank, the score, macs_saved): the score per layer against the kept
    rank fraction above, the MACs per sample that point saves below (same x, one color and one legend
    entry per layer), so each panel has one y-axis."""
    scale, axis, fmt = _axis(score)
    saved = "macs_saved" in frame.columns
    fig = make_subplots(rows=2 if saved else 1, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for i, (layer, rows) in enumerate(frame.groupby("layer", sort=False)):
        rows = rows.sort_values("kept_rank")
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=rows["kept_rank"], y=rows[score.name] * scale, mode="lines+markers", name=str(layer),
                legendgroup=str(layer), line={"color": color},
                hovertemplate=f"{layer}<br>kept %{{x}}: %{{y:{fmt}}}<extra></extra>",
            ),
            row=1, col=1,
        )  # fmt: skip
        if saved:
            fig.add_trace(
                go.Scatter(
                    x=rows["kept_rank"], y=rows["macs_saved"], mode="lines+markers", name=str(layer),
                    legendgroup=str(layer), showlegend=False, line={"color": color},
                    hovertemplate=f"{layer}<br>kept %{{x}}: %{{y:,}} MACs saved<extra></extra>",
                ),
                row=2, col=1,
            )  # fmt: skip
    fig.add_hline(y=baseline_accuracy * scale, line={"dash": "dash", "color": "#444"}, row=1, col=1)
    fig.update_xaxes(autorange="reversed")
    fig.update_xaxes(title=_X_TITLES["kept_rank"], row=2 if saved else 1, col=1)
    fig.update_yaxes(title=axis, row=1, col=1)
    if saved:
        fig.update_yaxes(title="MACs saved per sample", row=2, col=1)
    return _layout(
        fig, title or f"Low-rank: {score.name} (top) and MACs saved (bottom) per layer", height=620
    )


def trajectory_chart(trajectory: list[dict], title: str = "", score: MetricInfo = ACCURACY) -> go.Figure:
    """A schedule's steps (`CompressionResult.trajectory`): the score (accuracy in %, or the metric its
    records name), MACs per sample and loss, one panel each, against the step; step 0 is the original."""
    frame = pd.DataFrame(trajectory)
    if score is ACCURACY and "metric" in frame.columns and len(frame):
        named = str(frame["metric"].iloc[0])
        score = MetricInfo.from_dict({"name": named})
    scale, axis, _ = _axis(score)
    panels = [
        ("accuracy", axis, scale),
        ("macs", "MACs per sample", 1.0),
        ("loss", "loss (nats)", 1.0),
    ]
    panels = [p for p in panels if p[0] in frame.columns]
    if not panels:  # no step yet (a live chart before the first record)
        return _layout(go.Figure(), title or "Schedule: accuracy, MACs and loss per step", height=300)
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[p[1] for p in panels],
        vertical_spacing=0.08,
    )
    phase = frame["phase"].astype(str) if "phase" in frame.columns else pd.Series([""] * len(frame))
    for i, (column, label, scale) in enumerate(panels):
        fig.add_trace(
            go.Scatter(
                x=frame["step"] if "step" in frame.columns else frame.index,
                y=frame[column] * scale,
                mode="lines+markers",
                name=label,
                line={"color": PALETTE[i % len(PALETTE)]},
                text=phase,
                hovertemplate=f"step %{{x}} (%{{text}}): %{{y:,.4g}} {label}<extra></extra>",
                showlegend=False,
            ),
            row=i + 1,
            col=1,
        )
    fig.update_xaxes(title="step", row=len(panels), col=1)
    return _layout(fig, title or "Schedule: accuracy, MACs and loss per step", height=220 * len(panels) + 100)
