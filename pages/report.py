"""Report: build this session's results (and any sweeps still missing) into HTML, CSV, JSON and Markdown."""

import pandas as pd
import streamlit as st

from analysis import WorkbenchError, sensitivity_sweep, sweep_kinds
from analysis.errors import first_line
from analysis.report import report_files
from analysis.runtime import measure_runtime_latency, prepare
from pages import _records, _shared, _state

st.title("Report")
wb = _shared.workbench()
spec, key = wb.spec, wb.spec.model_key()
info = _shared.metric_info(wb)
have = {kind: _shared.session_result(f"sensitivity:{kind}", key) for kind in sweep_kinds()}
have = {k: r if r is None or r.metric.name == info.name else None for k, r in have.items()}
rankings = _shared.session_result("rankings", key)
compression = _shared.session_result("compress", key)

st.markdown(
    "In the report: the model summary, latency and baseline, then "
    + (", ".join(f"the **{k}** sweep" for k, r in have.items() if r) or "no sensitivity sweep yet")
    + (", the **rankings**" if rankings else "")
    + (", the last **compression**" if compression else "")
    + f". Scores are in the metric **{info.name}** ({info.title}, "
    + ("higher" if info.higher_is_better else "lower")
    + " is better). Sweeps and rankings come from their pages; the sweeps missing can be run here with "
    "default settings."
)
with st.form("report"):
    missing = [k for k, r in have.items() if r is None]
    run = st.multiselect(
        "Also run these sweeps (default ratios and bits, all layers)",
        missing,
        key="report_run",
        persist_state=_state.KEEP,
    )
    build = st.form_submit_button("Build report", type="primary")


def _latency(runtime: str):
    """The model's latency on `runtime`, or the line saying why that runtime cannot run it."""
    try:
        prepared = prepare(wb.model, runtime, wb.input_shape, spec.threads)
    except WorkbenchError as exc:
        return f"{runtime}: not measured: {first_line(exc)}"
    return measure_runtime_latency(prepared, wb.input_shape, spec.batch_size, spec.threads)


if build:
    with _shared.guard("Building the report"):
        for kind in run:
            have[kind] = _shared.cached(
                "sensitivity",
                key,
                {
                    "kind": kind,
                    "ratios": None,
                    "bits": None,
                    "layers": None,
                    "max_drop": None,
                    "metric": spec.metric,
                },
                lambda progress, kind=kind: sensitivity_sweep(
                    wb.model, wb.data, kind=kind, progress=progress, metric=spec.metric
                ),
                progress=f"Sweeping ({kind})",
            )
            _shared.keep_result(f"sensitivity:{kind}", key, have[kind])
        # The sidebar's runtime, and any other the last compression was timed on.
        runtimes = list(
            dict.fromkeys([spec.runtime or "eager", *(getattr(compression, "runtimes", None) or {})])
        )
        latency = _shared.cached(
            "latency", spec.timing_key(), {"runtimes": runtimes},
            lambda p: {rt: _latency(rt) for rt in runtimes}, progress="Timing the model",
        )  # fmt: skip
        sweeps = [r for r in have.values() if r is not None]
        applied = st.session_state.get(f"_runs::{key}", [])  # every plan applied on the Compress page
        files = report_files(
            wb.model, wb.data, wb.input_shape, sweeps, rankings, latency, compression, spec.model, applied,
            metric=spec.metric,
        )  # fmt: skip
    _shared.keep_result("report", key, files)
    _shared.keep_result("report_latency", key, latency)
    _records.record_run("report", wb, {"sweeps": [r.kind for r in sweeps], "rankings": rankings is not None,
                                      "compression": compression is not None}, {"md": files["md"]})  # fmt: skip

files = _shared.session_result("report", key)
if files is None:
    st.info("Press **Build report**.")
    st.stop()

latency = _shared.session_result("report_latency", key) or {}
noisy = [f"{rt}: {r.warning}" for rt, r in latency.items() if not isinstance(r, str) and r.warning]
if noisy:
    st.warning(_shared.plain("Latency: " + "; ".join(noisy)))
for note in (r for r in latency.values() if isinstance(r, str)):
    st.caption(_shared.plain(note))
if compression is not None:
    trajectory = getattr(compression, "trajectory", None) or []
    runtimes = getattr(compression, "runtimes", None) or {}
    if runtimes:
        st.subheader("Last compression: runtimes")
        rows = [
            {"runtime": name, "when": when, "latency_ms": m.latency_ms, m.metric.name: m.accuracy,
             "kind": getattr(m, "latency_kind", ""), "warning": getattr(m, "latency_warning", None) or ""}
            for name, pair in runtimes.items() for when, m in pair.items()
        ]  # fmt: skip
        _shared.table(pd.DataFrame(rows), "runtimes.csv", key="report_runtimes_csv")
    if trajectory:
        st.subheader("Last compression: trajectory")
        frame = pd.DataFrame(trajectory).drop(columns=["channels"], errors="ignore")
        _shared.table(frame, "trajectory.csv", key="report_trajectory_csv")

FORMATS = [("html", "text/html", "HTML"), ("csv", "text/csv", "CSV"), ("json", "application/json", "JSON"),
           ("md", "text/markdown", "Markdown")]  # fmt: skip
for col, (ext, mime, label) in zip(st.columns(4), FORMATS, strict=True):
    with col:
        _shared.download(f"Download {label}", files[ext], f"report.{ext}", mime, f"report_{ext}")
st.caption(
    f"The HTML report is self-contained ({len(files['html']) / 1e6:.1f} MB, plotly inlined): it opens offline."
)
with st.expander("Markdown summary"):
    st.markdown(files["md"])
st.subheader("Preview")
st.iframe(files["html"], height=900)
