"""Figures of per-layer analyses: sensitivity curves and heatmaps, criterion distributions and agreement,
the low-rank trade-off."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.metrics import ACCURACY, MetricInfo
from analysis.report.charts.style import PALETTE, drop_unit, score_axis, styled


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
    x, x_title, reverse = _x_axis(frame)
    is_score = metric != "loss"
    column = score.name if is_score else "loss"
    scale, axis, fmt = score_axis(score) if is_score else (1.0, "loss (mean)", ".4f")
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
    fig.update_xaxes(title=x_title)
    if reverse:
        fig.update_xaxes(autorange="reversed")  # more compressed to the right, as for ratios
    fig.update_yaxes(title=axis)
    name = score.title if is_score else "Loss"
    return styled(fig, title or f"{name} per layer", height=460)


_X_TITLES = {
    "bits": "bits per weight",
    "ratio": "pruning ratio (fraction removed)",
    "kept_rank": "kept rank fraction (of the full rank)",
}


def _x_axis(frame: pd.DataFrame) -> tuple[str, str, bool]:
    """The swept value's column of a sensitivity frame, its axis title, and whether smaller values compress
    more (the axis then runs largest first): from the frame's kind (`analysis.sensitivity.kinds`), else
    from its columns (bits, kept_rank or ratio)."""
    from analysis.sensitivity.kinds import get_sweep_kind

    kinds = set(frame["kind"]) if "kind" in frame.columns else set()
    if len(kinds) == 1:
        spec = get_sweep_kind(str(kinds.pop()))
        if spec.column in frame.columns:
            return spec.column, spec.axis, spec.lower_compresses_more
    x = next((c for c in ("bits", "kept_rank") if c in frame.columns), "ratio")
    return x, _X_TITLES[x], x != "ratio"


def sensitivity_heatmap(
    frame: pd.DataFrame, baseline_accuracy: float, title: str = "", score: MetricInfo = ACCURACY
) -> go.Figure:
    """The drop in `score` (worse than the baseline, in points for accuracy, in the metric's unit
    otherwise), layers x ratios (or bits)."""
    x, x_title, reverse = _x_axis(frame)
    scale = 100.0 if score.percent else 1.0
    unit = drop_unit(score)
    drop = frame.assign(drop=[score.drop(baseline_accuracy, v) * scale for v in frame[score.name]])
    grid = drop.pivot_table(index="layer", columns=x, values="drop", sort=False)
    grid = grid.reindex(list(dict.fromkeys(frame["layer"])))
    if reverse:
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
    fig.update_xaxes(title=x_title, type="category")
    fig.update_yaxes(autorange="reversed")
    label = score.label or score.name
    default = f"{label[0].upper()}{label[1:]} drop ({unit})"
    return styled(fig, title or default, height=max(300, 34 * len(grid) + 140))


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
    return styled(fig, title or "Channel scores per layer, by criterion", height=300 * rows + 80)


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
    return styled(fig, title, height=max(320, 40 * len(matrix) + 160))


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
    return styled(fig, title, height=380)


def lowrank_tradeoff(
    frame: pd.DataFrame, baseline_accuracy: float, title: str = "", score: MetricInfo = ACCURACY
) -> go.Figure:
    """A lowrank sweep (frame with kept_rank, the score, macs_saved): the score per layer against the kept
    rank fraction above, the MACs per sample that point saves below (same x, one color and one legend
    entry per layer), so each panel has one y-axis."""
    scale, axis, fmt = score_axis(score)
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
    return styled(fig, title or f"Low-rank: {score.name} (top) and MACs saved (bottom) per layer", height=620)
