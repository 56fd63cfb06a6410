"""Figures of weights: bars per layer, weight-sharing comparisons, weight histograms, the quantization view."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.report.charts.style import MAX_GRID_LINES, PALETTE, styled
from analysis.report.weights import Histogram, QuantizationView


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
    return styled(fig, title or f"{value} per layer", height=max(260, 28 * len(rows) + 120))


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
    return styled(fig, title, height=max(300, 36 * len(rows) + 140))


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
    return styled(fig, title, height=420)


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
    return styled(fig, title, height=220 * rows + 80)


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
    return styled(fig, title, height=420)


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
    return styled(fig, title, height=380)
