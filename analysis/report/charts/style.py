"""The look every figure shares: the palette, the template (plotly_white with the workbench's colorway), the
layout and the score axes."""

from __future__ import annotations

import plotly.graph_objects as go
import plotly.io as pio

from analysis.metrics import MetricInfo

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


def score_axis(score: MetricInfo) -> tuple[float, str, str]:
    """How a metric is drawn: (scale, axis title, hover format): accuracy-like fractions in %, others in
    their unit (`PSNR (dB)`), each title saying whether higher or lower is better."""
    better = "higher is better" if score.higher_is_better else "lower is better"
    if score.percent:
        return 100.0, f"{score.label or score.name} (%, {better})", ".2f"
    return 1.0, f"{score.title}, {better}", ".4g"


def drop_unit(score: MetricInfo) -> str:
    return "points" if score.percent else (score.unit or score.name)


def styled(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.2},
    )
    if height:
        fig.update_layout(height=height)
    return fig
