"""Plotly figures of the workbench's results: the ONE place a figure is drawn (the app's pages, the HTML
report and the notebooks all call these functions).

Each function takes plain results (data frames, histograms) and returns a `plotly.graph_objects.Figure`;
none computes anything expensive. Axis titles carry units. Every figure carries an explicit template
(`TEMPLATE`: plotly_white with the workbench's palette as colorway), so an export never inherits whatever
theme or default template the caller has set (the app's theme once turned every exported line near-black).

One package by design: it is the only place figures are drawn, and every chart shares one layout and
template (`style.py`). `weights.py`, `layers.py` (per-layer analyses) and `runs.py` hold the figures.
"""

from analysis.report.charts.layers import (
    criterion_distributions,
    grouped_bars,
    lowrank_tradeoff,
    matrix_heatmap,
    sensitivity_curves,
    sensitivity_heatmap,
)
from analysis.report.charts.runs import pareto_scatter, recorded_plans_scatter, runs_scatter, trajectory_chart
from analysis.report.charts.style import MAX_GRID_LINES, PALETTE, TEMPLATE
from analysis.report.charts.weights import (
    histogram_grid,
    histogram_overlay,
    quantization_figure,
    share_comparison,
    sorted_bar,
    value_histograms,
)

__all__ = [
    "MAX_GRID_LINES",
    "PALETTE",
    "TEMPLATE",
    "criterion_distributions",
    "grouped_bars",
    "histogram_grid",
    "histogram_overlay",
    "lowrank_tradeoff",
    "matrix_heatmap",
    "pareto_scatter",
    "quantization_figure",
    "recorded_plans_scatter",
    "runs_scatter",
    "sensitivity_curves",
    "sensitivity_heatmap",
    "share_comparison",
    "sorted_bar",
    "trajectory_chart",
    "value_histograms",
]
