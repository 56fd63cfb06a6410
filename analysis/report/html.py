"""The HTML report: one self-contained file (plotly's JS inlined once; opens offline, loads nothing from
the network), written atomically. Every figure comes from `analysis.report.charts`, the functions the app
draws with, so the report shows the same colors and labels as the app.

    build_report(model, data, out_path, sensitivity=None, rankings=None, summary=None, latency=None,
                 compression=None, applied=None, ...)
        renders what it is given (computing the cheap parts, model summary and baseline, if missing);
    build_full_report(model, data, out_path, kinds=basic_kinds(), ...)
        runs every available analysis first (summary, latency, sensitivity of each kind, rankings).

The plain files (CSV, JSON, Markdown) are `analysis.report.files`.

One module: its sections share the figure embedding and table helpers and make one document.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.io import write_text_atomic
from analysis.metrics import ACCURACY
from analysis.model.inputs import InputSpec
from analysis.progress import Progress
from analysis.report.files import as_list, environment
from analysis.report.html_sections import (
    Figures,
    section_baseline,
    section_compression,
    section_environment,
    section_latency,
    section_rankings,
    section_sensitivity,
    section_summary,
)
from analysis.sensitivity.kinds import basic_kinds, get_sweep_kind
from analysis.sensitivity.sweep import SensitivityResult

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
.env{color:#555;font-size:.9rem} .note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4rem .8rem}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0} th,td{border:1px solid #ddd;padding:.25rem .55rem}
th{background:#f4f4f4} td{text-align:right} td:first-child{text-align:left}
.kpi{display:inline-block;margin-right:2rem} .kpi b{font-size:1.3rem;display:block}
"""


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
    compression=None,
    applied: Sequence[dict] | None = None,
    metric: str = "auto",
) -> Path:
    """Write one self-contained HTML report to `out_path` (atomically) and return its path.

    Sections: environment, model summary (computed with analysis.cost if not given), latency (if given),
    baseline (from the sensitivity results, or evaluated), one sensitivity section per result (a curve per
    layer, a heatmap layers x ratios, the safe-point table at 1 and 2 points), rankings (if given), the last
    compression (if given: before/after and `applied`, the applied plans' `run_point` rows, on a scatter).
    Scores are in the sweeps' metric (or `metric` where the baseline is evaluated here).
    """
    results = as_list(sensitivity)
    shape = input_shape or (data.input_shape if data is not None else getattr(model, "input_shape", None))
    if summary is None and shape is not None:
        try:
            from analysis.cost import summarize

            summary = summarize(model, shape if isinstance(shape, InputSpec) else tuple(shape))
        except ImportError:
            summary = None
    score = ACCURACY
    if results:
        base_acc, base_loss, samples = (
            results[0].baseline_accuracy,
            results[0].baseline_loss,
            results[0].samples,
        )
        score = results[0].metric
    elif data is not None:
        from analysis.evaluate import evaluate

        ev = evaluate(model, data, metric=metric)
        base_acc, base_loss, samples, score = ev.accuracy, ev.loss, ev.samples, ev.metric
    else:
        base_acc = base_loss = float("nan")
        samples = None
    figures = Figures()
    body = [
        f"<h1>{html.escape(title)}</h1>",
        section_environment(
            environment(), model_spec, data_spec or (data.spec if data is not None else None), samples
        ),
        section_summary(summary),
        section_latency(latency),
        section_baseline(base_acc, base_loss, samples, score) if not math.isnan(base_acc) else "",
        *[section_sensitivity(r, figures) for r in results],
        section_rankings(rankings, figures),
        section_compression(compression, applied, figures),
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
    kinds: Sequence[str] | None = None,
    with_latency: bool = True,
    with_rankings: bool = True,
    progress: Progress | None = None,
    model_spec: str | None = None,
    rankings_options: dict | None = None,
    runtimes: Sequence[str] | None = None,
    threads: int | None = None,
    **sweep_options,
) -> tuple[Path, dict]:
    """Run every available analysis (summary, latency, a sensitivity sweep per kind, rankings where
    analysis.importance provides them), write the HTML report, and return (path, what ran).

    `runtimes` (e.g. `("eager", "onnxruntime")`): the latency is measured on each, labelled with the
    runtime, its version and execution provider; a runtime that cannot run the model gets its one-line
    reason in the report and in `ran["latency_errors"]`. `kinds` defaults to `basic_kinds()`."""
    kinds = basic_kinds() if kinds is None else kinds
    for kind in kinds:
        get_sweep_kind(kind)  # an unknown kind is one line listing the known ones, before any work
    from analysis.sensitivity.sweep import sensitivity_sweep

    ran: dict = {"sections": ["environment", "summary", "baseline"]}
    latency = None
    if with_latency and runtimes:
        latency = runtime_latencies(model, data.input_shape, runtimes, threads, ran)
        ran["sections"].append("latency")
    elif with_latency:
        from analysis.latency import measure_latency

        latency = measure_latency(model, data.input_shape, threads=threads)
        ran["sections"].append("latency")
        ran["latency"] = {"eager": latency.to_dict()}
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


def runtime_latencies(model, input_shape, runtimes, threads, ran: dict) -> dict:
    """Latency on each runtime (name -> LatencyResult, or the one-line reason it could not run)."""
    from analysis.errors import first_line
    from analysis.runtime.base import measure_runtime_latency, prepare

    out: dict = {}
    ran["latency"], ran["latency_errors"] = {}, {}
    for name in dict.fromkeys(runtimes):
        try:
            prepared = prepare(model, name, input_shape, threads)
        except WorkbenchError as exc:
            out[name] = ran["latency_errors"][name] = f"{name}: not measured: {first_line(exc)}"
            continue
        out[name] = measure_runtime_latency(prepared, input_shape, threads=threads)
        ran["latency"][name] = out[name].to_dict()
    return out


def _try_rankings(model: nn.Module, data: Dataset, options: dict | None = None):
    """Rankings from analysis.importance where that module provides `rank_channels`; None otherwise."""
    try:
        from analysis.importance.rankings import rank_channels
    except ImportError:
        return None
    return rank_channels(model, data, **(options or {}))
