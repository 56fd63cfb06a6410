"""The whole report as text in four formats (HTML, CSV, JSON, Markdown), for a download button."""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import nn

from analysis.cost import summarize
from analysis.data import Dataset
from analysis.io import to_json
from analysis.report import files, html


def report_files(
    model: nn.Module,
    data: Dataset,
    input_shape: tuple[int, ...],
    sensitivity: list | tuple = (),
    rankings=None,
    latency=None,
    compression=None,
    model_spec: str | None = None,
    applied: list[dict] | None = None,
    metric: str = "auto",
) -> dict[str, str]:
    """The report in four formats, as text: `html` (self-contained, `analysis.report.html.build_report`),
    `csv` (sensitivity points in long form, or the per-layer cost table where no sweep ran), `json`
    (every result given) and `md` (a short summary). `applied`: the applied plans' `run_point` rows, for
    the compression section's scatter. `metric` scores the baseline where no sweep gives it. `latency`: a
    LatencyResult, or one per runtime ({name: result or the line saying why that runtime could not run the
    model})."""

    sweeps = list(sensitivity)
    summary = summarize(model, input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        page = html.build_report(
            model,
            data,
            Path(tmp) / "report.html",
            sensitivity=sweeps or None,
            rankings=rankings,
            summary=summary,
            latency=latency,
            model_spec=model_spec,
            data_spec=data.spec,
            input_shape=input_shape,
            compression=compression,
            applied=applied,
            metric=metric,
        ).read_text(encoding="utf-8")
        csv = files.write_csv(sweeps, Path(tmp) / "s.csv").read_text() if sweeps else None
    if csv is None:
        csv = summary.to_frame().to_csv(index=False)
    payload = {
        "environment": files.environment(),
        "model": model_spec,
        "data": data.spec,
        "summary": summary.to_dict(),
        "latency": _latency_dict(latency),
        "sensitivity": [r.to_dict() for r in sweeps],
        "rankings": rankings.to_dict() if rankings is not None else None,
        "compression": compression.to_dict() if compression is not None else None,
    }
    if sweeps:
        md = files.markdown_summary(sweeps, title=f"Compression workbench report: {model_spec or 'model'}")
    else:
        md = (
            f"# Compression workbench report: {model_spec or 'model'}\n\n"
            f"{summary.total_params:,} parameters, {summary.total_macs:,} MACs per sample "
            f"(FLOPs = 2 x MACs = {summary.total_flops:,}).\n\nNo sensitivity sweep was included.\n"
        )
    if compression is not None:
        b, a = compression.before, compression.after
        score = compression.metric
        md += (
            f"\n## Compression\n\n{score.title} {score.format(b.accuracy)} -> {score.format(a.accuracy)}, "
            f"latency {b.latency_ms:.2f} -> "
            f"{a.latency_ms:.2f} ms ({compression.speedup:.2f}x, {a.latency_label}), MACs {b.macs:,} -> "
            f"{a.macs:,}, size {b.size_bytes:,} -> {a.size_bytes:,} bytes.\n"
        )
    return {"html": page, "csv": csv, "json": to_json(payload), "md": md}


def _latency_dict(latency):
    """A LatencyResult, or {runtime: LatencyResult or its one-line reason}, as JSON values."""
    if isinstance(latency, dict):
        return {name: r if isinstance(r, str) else r.to_dict() for name, r in latency.items()}
    return latency.to_dict() if latency is not None else None
