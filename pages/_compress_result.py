"""The Compress page's result sections: Apply (a stoppable job with a live chart), before and after, the
scatter of every applied plan, Measure again, and the files made when asked.

Not a page: `pages/compress.py` calls these in order.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st

from analysis.app_support import (
    apply_plan,
    artifact_bytes,
    compression_record,
    noisy_timings,
    remeasure,
    run_points,
)
from analysis.report import charts, comparison_frame
from analysis.store import log_compression
from pages import _jobs, _records, _shared


def apply_section(page: Any, plan: dict, both: bool, mlflow_uri: str, apply: bool) -> None:
    """Run the plan when Apply was pressed (or keep showing the job that runs it): live trajectory chart,
    the result kept and recorded, its scatter points added, and MLflow logged when asked."""
    wb, spec, key, info = page.wb, page.wb.spec, page.key, page.info
    job_key = f"compress::{key}"
    if not (apply or _jobs.job_running(job_key)):
        return
    if apply:
        st.session_state[f"_pending::{job_key}"] = plan
        st.session_state[f"_live::{job_key}"] = []
    pending = st.session_state.get(f"_pending::{job_key}", plan)
    live: list = st.session_state.setdefault(f"_live::{job_key}", [])
    lock = threading.Lock()
    runtimes = ("eager", "onnxruntime") if both else (page.runtime,)
    if both and page.runtime != "eager":
        runtimes = (page.runtime, "eager")
    placeholder = st.empty()

    def on_step(record: dict) -> None:
        with lock:
            live.append(dict(record))

    drawn = [0]

    def tick() -> None:
        with lock:
            records = list(live)
        if len(records) > drawn[0]:  # a new step: redraw (each drawing needs its own element id)
            drawn[0] = len(records)
            placeholder.plotly_chart(
                charts.trajectory_chart(records, score=info), key=f"live_{job_key}_{len(records)}"
            )

    def work(progress, should_stop):
        return apply_plan(wb.model, wb.data, pending, batch_size=spec.batch_size, threads=spec.threads,
                          runtimes=runtimes, progress=progress, on_step=on_step, should_stop=should_stop,
                          metric=spec.metric)  # fmt: skip

    with _shared.guard("Compressing"):
        (result, extras), _ = _jobs.run_stoppable("Compressing", job_key, work, tick, None)
    placeholder.empty()
    runs = st.session_state.setdefault(f"_runs::{key}", [])
    n = 1 + max((p["run"] for p in runs), default=0)
    _shared.keep_result("compress", key, result, {"extras": extras | {"run": n}})
    _shared.forget_built("cmp")  # the last result's files
    label = f"plan {n}" + (" (stopped)" if extras.get("stopped") else "")
    runs.extend(run_points(result, extras, label, n))
    _records.record_run("compression", wb, *compression_record(pending, result, extras, batch_size=spec.batch_size,
                                                               threads=spec.threads))  # fmt: skip
    if mlflow_uri:
        with _shared.guard("Logging to MLflow"):
            run_id = log_compression(mlflow_uri, pending, result.to_dict(), run_name=label)
        st.caption(_shared.plain(f"logged to MLflow as run {run_id}"))


def result_section(page: Any) -> None:
    """The last result: before and after (per runtime), notes, trajectory, every applied plan on one
    scatter, and the files; a hint and a stop when there is none yet."""
    key = page.key
    result = _shared.session_result("compress", key)
    if result is None:
        st.info("Set ratios, bits and transforms per layer (or a preset, or a method) and press **Apply**.")
        st.stop()
    extras = _shared.result_params("compress").get("extras", {})

    c = st.columns([4, 1])
    c[0].subheader(
        "Before and after" + ("" if extras.get("runtimes") else f" ({result.before.runtime or 'eager'})")
    )
    if c[1].button("Measure again", help="Time the original and this plan again, in one alternating run"):
        result, extras = _measure_again(result, extras, page.wb, key)
    if extras.get("stopped"):
        st.warning("Stopped: the result is the model after the last whole step.")
    _shared.compression_metrics(result)
    for rt, pair in (extras.get("runtimes") or {}).items():
        b, a = pair["before"], pair["after"]
        st.caption(f"{rt}: {b.metric.name} {b.metric.format(b.accuracy)} -> {a.metric.format(a.accuracy)}, "
                   f"latency {b.latency_ms:.2f} -> {a.latency_ms:.2f} ms ({a.latency_label})")  # fmt: skip
    _shared.table(comparison_frame(result), "before_after.csv", key="cmp_csv")
    for note in result.notes:
        st.info(_shared.plain(note))
    if extras.get("trajectory"):
        _shared.chart(
            charts.trajectory_chart(extras["trajectory"], score=result.metric), key="cmp_trajectory"
        )
    points = pd.DataFrame(st.session_state.get(f"_runs::{key}", []))
    if noisy := noisy_timings(
        points.to_dict("records")
    ):  # the last run's, one box: earlier ones in the table
        st.warning(_shared.plain(noisy))
    _shared.chart(charts.runs_scatter(points, score=result.metric), key="cmp_pareto")
    _shared.table(points, "applied_plans.csv", key="cmp_runs_csv")

    _files(result, extras, page.wb.spec, page.wb)


def _measure_again(result: Any, extras: dict, wb: Any, key: str) -> tuple[Any, dict]:
    """The last plan timed again with the original in one alternating run; its scatter rows replaced."""
    slot, on_wait = _shared.waiting_notice()
    bar, update = _shared.progress_bar("Timing the original and the plan again")
    with _shared.guard("Timing again"):
        result = remeasure(result, wb.model, wb.input_shape, batch_size=wb.spec.batch_size, threads=wb.spec.threads,
                           progress=update, on_wait=on_wait)  # fmt: skip
    bar.empty(), slot.empty()
    extras = extras | {"runtimes": result.runtimes}
    n = extras.get("run", 0)
    runs = [p for p in st.session_state.get(f"_runs::{key}", []) if p["run"] != n]
    st.session_state[f"_runs::{key}"] = runs + run_points(result, extras, f"plan {n} (timed again)", n)
    _shared.keep_result("compress", key, result, {"extras": extras})
    return result, extras


def _files(result: Any, extras: Mapping, spec: Any, wb: Any) -> None:
    """The plan and the compressed model in each format, each made when asked, its error said beside it."""
    st.subheader("Files")
    run = extras.get("run", 0)
    shape, data = tuple(wb.input_shape), wb.data
    rebuildable = spec.model.startswith(("zoo:", "torchvision:")) and not spec.weights
    _shared.download("Download plan.json", result.plan.to_json(), "plan.json", "application/json", "cmp_plan")
    formats = [
        (".onnx", "ONNX"),
        (".pt2", "torch.export"),
        (".pruned.safetensors", "safetensors"),
        (".pt", "pickle"),
    ]
    cells = [*st.columns(2), *st.columns(2)]  # two a row: each label and what its file holds fit
    for col, (suffix, name) in zip(cells, formats, strict=True):
        if suffix == ".pruned.safetensors" and not rebuildable:
            col.caption("The safe pruned format needs a rebuildable spec (a zoo or torchvision model).")
            continue

        def build(suffix: str = suffix) -> tuple[bytes, str]:
            return artifact_bytes(result, suffix, spec=spec.model, input_shape=shape, data=data)

        _shared.built_download(
            f"Make {suffix} ({name})", build, f"compressed{suffix}", f"cmp{suffix}_{run}", col
        )
    st.caption(
        "Each file is made when you ask for it. `.onnx`: int8 where the plan has 8-bit layers; `.pt2` and "
        "`.pruned.safetensors`: the float model; `.pt`: a pickle, loading it runs code (`--trust-pickle`)."
    )
