"""Figures of runs and plans: the Pareto scatter, recorded plans, runs on each runtime, a schedule's trajectory."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.metrics import ACCURACY, MetricInfo
from analysis.report.charts.style import PALETTE, score_axis, styled


def pareto_scatter(points: pd.DataFrame, title: str = "", score: MetricInfo = ACCURACY) -> go.Figure:
    """Applied configurations as points (columns label, latency_ms, accuracy (the score in `score`),
    pareto), the Pareto front (best score for its latency) joined by a line and drawn larger."""
    scale, axis, fmt = score_axis(score)
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
    return styled(fig, title, height=420)


def recorded_plans_scatter(table: pd.DataFrame, title: str = "") -> go.Figure:
    """Every recorded compression of a model (rows of `analysis.store.compare`, index = run id): the score
    after (`score after`, in the runs' metric: accuracy in %) against latency after (ms per batch), one
    marker series per runtime measured, and each run's original model (before) as a grey cross. Runs in
    another metric than the first run's are left out (their scores are not comparable)."""
    fig = go.Figure()
    table = _one_metric(table)
    name = str(table["metric"].iloc[0]) if "metric" in table.columns and len(table) else "accuracy"
    score = MetricInfo.from_dict({"name": name})
    scale, axis, fmt = score_axis(score)
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
    return styled(fig, title or f"{score.title} vs latency of every recorded plan", height=440)


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
    scale, axis, fmt = score_axis(score)
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
    return styled(fig, title, height=440)


def trajectory_chart(trajectory: list[dict], title: str = "", score: MetricInfo = ACCURACY) -> go.Figure:
    """A schedule's steps (`CompressionResult.trajectory`): the score (accuracy in %, or the metric its
    records name), MACs per sample and loss, one panel each, against the step; step 0 is the original."""
    frame = pd.DataFrame(trajectory)
    if score is ACCURACY and "metric" in frame.columns and len(frame):
        named = str(frame["metric"].iloc[0])
        score = MetricInfo.from_dict({"name": named})
    scale, axis, _ = score_axis(score)
    panels = [
        ("accuracy", axis, scale),
        ("macs", "MACs per sample", 1.0),
        ("loss", "loss (nats)", 1.0),
    ]
    panels = [p for p in panels if p[0] in frame.columns]
    if not panels:  # no step yet (a live chart before the first record)
        return styled(go.Figure(), title or "Schedule: accuracy, MACs and loss per step", height=300)
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
    return styled(fig, title or "Schedule: accuracy, MACs and loss per step", height=220 * len(panels) + 100)
