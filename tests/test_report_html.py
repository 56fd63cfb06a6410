"""The HTML report as the app builds it (`report_files` with sweeps, a compression and the applied plans):
its figures come from `analysis.report.charts` with their own template, so a theme the caller set does
not leak into the export, and the compression section is there."""

from __future__ import annotations

import json
import re

import plotly.graph_objects as go
import plotly.io as pio
import pytest

from analysis import CompressionPlan, compress, load_model, sensitivity_sweep
from analysis.report import report_files, run_point

LEAKED = [f"#0000{i:02d}" for i in range(1, 11)]  # what an app theme's colorway once put in every export


def _figures(page: str) -> list[tuple[list[dict], dict]]:
    """(traces, layout) of every plotly figure in the page, read from its `Plotly.newPlot` calls."""
    decoder = json.JSONDecoder()
    out = []
    for match in re.finditer(r"Plotly\.newPlot\(\s*", page):
        pos = match.end()
        values = []
        for _ in range(3):  # the div id, the traces, the layout
            value, pos = decoder.raw_decode(page, pos)
            values.append(value)
            pos = re.compile(r"\s*,\s*").match(page, pos).end()
        out.append((values[1], values[2]))
    return out


def _colors(traces: list[dict], layout: dict) -> list[str]:
    """The color each legend entry is drawn in: its own line/marker color, else the template's colorway."""
    colorway = layout.get("template", {}).get("layout", {}).get("colorway") or layout.get("colorway")
    colors = []
    for i, trace in enumerate(traces):
        own = (trace.get("line") or {}).get("color") or (trace.get("marker") or {}).get("color")
        colors.append(own if isinstance(own, str) else colorway[i % len(colorway)] if colorway else None)
    return colors


@pytest.fixture(scope="module")
def app_report():
    dark = go.layout.Template(layout={"colorway": LEAKED, "paper_bgcolor": "#0e1117"})
    previous = pio.templates.default
    pio.templates["leaky-theme"] = dark
    pio.templates.default = "leaky-theme"  # what a themed app leaves behind for everything drawn after
    try:
        model = load_model("zoo:digits-mlp")
        from analysis import load_data

        data = load_data("digits").subset(96)
        sweeps = [
            sensitivity_sweep(model, data, kind="structured", ratios=[0.25, 0.5]),
            sensitivity_sweep(model, data, kind="quant", bits=[8, 4]),
        ]
        timing = {"latency_rounds": 2, "runs_per_round": 2, "warmup": 1}
        first = compress(model, CompressionPlan.from_dict({"default": {"prune": 0.25}}), data, **timing)
        last = compress(model, CompressionPlan.from_dict({"default": {"prune": 0.5}}), data, **timing)
        noisy = "noisy timing: p90/p10 = 3.0 (p10 1.00 ms, p90 3.00 ms); the machine was busy"
        applied = [run_point(first, "plan 1"), dict(run_point(last, "plan 2"), warning=noisy)]
        files = report_files(
            model, data, data.input_shape, sweeps, None, None, last, "zoo:digits-mlp", applied
        )
    finally:
        pio.templates.default = previous
    return files, sweeps


def test_figures_carry_distinct_colors_of_their_own(app_report):
    files, sweeps = app_report
    figures = _figures(files["html"])
    assert len(figures) >= 5  # two per sweep and the compression scatter
    legend_figures = 0
    for traces, layout in figures:
        shown = [t for t in traces if t.get("showlegend", True) and t.get("type") in ("scatter", "bar")]
        if len(shown) < 2:
            continue
        legend_figures += 1
        colors = _colors(shown, layout)
        assert None not in colors and len(set(colors)) == len(colors), colors
        assert not set(colors) & set(LEAKED), colors
        assert layout.get("paper_bgcolor") != "#0e1117"
    assert legend_figures >= 2  # the sensitivity curves (one line per layer) and the Pareto scatter


def test_compression_section_with_before_after_and_the_applied_plans(app_report):
    files, _ = app_report
    page = files["html"]
    assert "<h2>Compression</h2>" in page
    section = page[page.index("<h2>Compression</h2>") :]
    assert "accuracy (%)" in section and "MACs per sample" in section  # the before/after table
    assert "plan 1" in section and "plan 2" in section and "original" in section  # every applied plan
    scatter = [t for t, _ in _figures(section) if any(tr.get("name") == "Pareto front" for tr in t)]
    labels = sorted(label for tr in scatter[0] for label in tr["text"])
    assert labels == ["original", "plan 1", "plan 2"]  # every applied plan is a point
    assert "max ratio @ 1 pt" in page and "min bits @ 1 pt" in page  # the app's labels
    # A noisy timing's warning is a note under the plans' table, not a cell that stretches its row.
    assert ">warning<" not in section
    assert '<p class="note">plan 2 (eager): noisy timing: p90/p10 = 3.0' in section
