"""Home: the model card and a map of the pages."""

import streamlit as st

from analysis import RUNTIMES, WorkbenchError, summarize
from analysis.report import charts, model_card
from analysis.runtime import compare_runtime_latency, prepare
from pages import _routing, _serving, _shared

_routing.routed()

PAGES = [
    (
        "pages/overview.py",
        "Where the cost is: MACs and params per layer, and each layer's share of MACs next to "
        "its share of measured time.",
    ),
    (
        "pages/sensitivity.py",
        "How much accuracy each layer loses when pruned (structured or not) or quantized, "
        "and the largest safe ratio per layer.",
    ),
    (
        "pages/weights.py",
        "Weight histograms, sparsity, spread and outliers per layer, and what a bit width does to them.",
    ),
    (
        "pages/rankings.py",
        "How the importance criteria rank each layer's channels, and how well each agrees with the oracle.",
    ),
    (
        "pages/compress.py",
        "Choose ratios and bits per layer, apply, and compare accuracy, latency, params, MACs "
        "and size before and after.",
    ),
    ("pages/report.py", "Download everything as HTML, CSV, JSON and Markdown."),
    (
        "pages/history.py",
        "Every recorded run (the command line's too): filter, compare compressions side by side, re-open a "
        "sweep or ranking without recomputing.",
    ),
]
TAKE = "_home_take"  # which measurement of the runtimes' latency this session shows (Measure again: the next)


def _measure_again() -> None:
    st.session_state[TAKE] = st.session_state.get(TAKE, 1) + 1


@st.cache_resource(max_entries=8, show_spinner="Preparing the model on each runtime (ONNX export)...")
def _prepared(model_key: str, runtime: str, threads: int | None, _model, _shape) -> object:
    """The model prepared on `runtime` (ONNX export once per model and threads), shared read-only; a failed
    export is kept as its one-line message."""
    try:
        return prepare(_model, runtime, _shape, threads)
    except WorkbenchError as exc:
        return exc


st.title("Compression workbench")
wb = _shared.workbench()
spec = wb.spec
st.caption(
    f"Model `{_serving.shown_spec(spec.model)}` on data `{_serving.shown_spec(wb.data.spec)}`, input {wb.shape_text}"
)

slot, on_wait = _shared.waiting_notice()
with _shared.guard("Measuring the model"):
    card = _shared.cached(
        "model_card",
        spec.timing_key(),
        {"metric": spec.metric},
        lambda progress: model_card(
            wb.model,
            wb.data,
            wb.input_shape,
            spec.batch_size,
            spec.threads,
            on_wait=on_wait,
            metric=spec.metric,
        ),
        progress="Evaluating and timing the model",
    )
    summary = _shared.cached("summary", spec.model_key(), {}, lambda p: summarize(wb.model, wb.input_shape))
    prepared, notes = {}, {}
    for name in RUNTIMES:
        found = _prepared(spec.model_key(), name, spec.threads, wb.model, wb.input_shape)
        if isinstance(found, Exception):
            notes[name] = str(found)
        else:
            prepared[name] = found
    take = st.session_state.get(TAKE, 1)
    latencies = _shared.cached(
        "runtime_latency",
        spec.timing_key(),
        {"runtimes": sorted(prepared), "take": take},
        lambda progress: compare_runtime_latency(
            prepared, wb.input_shape, spec.batch_size, spec.threads, progress=progress, on_wait=on_wait
        ),
        progress="Timing the model on each runtime (alternating rounds)",
    )
slot.empty()
chosen = spec.runtime if spec.runtime in latencies else "eager"
latency = latencies[chosen]

c = st.columns(4)
c[0].metric("Parameters", f"{card.metrics.params:,}")
c[1].metric(
    "MACs per sample", f"{card.metrics.macs / 1e6:,.2f} M", help="Multiply-accumulates; FLOPs = 2 x MACs"
)
c[2].metric("FLOPs per sample", f"{card.metrics.flops / 1e6:,.2f} M")
c[3].metric("Weights size", f"{card.metrics.size_bytes / 1024:,.1f} KiB")
c = st.columns(4)
score = card.metrics.metric
if score.name == "accuracy":
    c[0].metric(
        "Accuracy (top-1)", f"{card.metrics.accuracy:.2%}", help=f"on {card.samples:,} evaluation samples"
    )
    c[1].metric("Loss (cross-entropy)", f"{card.metrics.loss:.4f}")
else:
    better = "higher" if score.higher_is_better else "lower"
    c[0].metric(
        score.title,
        score.format(card.metrics.accuracy),
        help=f"metric {score.name} ({better} is better) on {card.samples:,} evaluation samples"
        + ("" if score.needs_labels else "; it compares with the original model, which scores its best here"),
    )
    c[1].metric("Loss", f"{card.metrics.loss:.4f}")
c[2].metric(
    "Latency (median)",
    _shared.ms(latency.median_ms, latency.p10_ms, latency.p90_ms),
    f"noisy: median {latency.median_ms:.2f} ms" if latency.noisy else None,
    delta_color="off",
    delta_arrow="off",
    help=_shared.latency_line(latency, chosen),
)
c[3].metric("Prunable layers", f"{card.prunable_layers} of {card.layers}")

c = st.columns([4, 1])
c[0].subheader("Latency on each runtime")
c[1].button("Measure again", on_click=_measure_again, help="Time every runtime again, in one alternating run")
rows = [
    {
        "runtime": name,
        "version": getattr(r, "runtime_version", ""),
        "provider": getattr(r, "provider", ""),
        "median ms": round(r.median_ms, 3),
        "p10 ms": round(r.p10_ms, 3),
        "p90 ms": round(r.p90_ms, 3),
        "p90/p10": round(r.spread, 2),
        "batch": r.batch_size,
        "threads": r.threads,
        "device": "cpu",
        "kind": r.kind,
    }
    for name, r in latencies.items()
]
rows += [{"runtime": name, "note": note} for name, note in notes.items()]
st.dataframe(rows, hide_index=True)
noisy = [
    f"{name} p90/p10 = {r.spread:.1f} ({r.p10_ms:.2f}-{r.p90_ms:.2f} ms)"
    for name, r in latencies.items()
    if r.noisy
]
if noisy:  # one box for this measurement, replaced by the next
    st.warning(
        _shared.plain(
            f"Noisy timing in measurement {take} (batch {latency.batch_size}, {latency.threads} "
            f"threads): {'; '.join(noisy)}. The machine was busy: read the ranges, or Measure again."
        )
    )
for name, note in notes.items():
    st.caption(_shared.plain(f"{name}: {note} (eager still shown)"))
st.caption(
    f"Latency: one forward pass of a batch of {latency.batch_size} under inference mode, timed in alternating "
    f"rounds on each runtime (same input, threads and warm-up), median of {latency.runs} runs; "
    f"{latency.threads} threads, {card.cpu}, torch {card.torch_version}."
)
if card.extra.get("differences"):
    st.info(
        "The two MAC counters disagree by more than 1%:\n\n"
        + "\n".join(f"- {_shared.plain(d)}" for d in card.extra["differences"])
    )

frame = summary.to_frame()
_shared.chart(charts.sorted_bar(frame, "macs", title="Where the MACs are (per sample)"), key="home_macs")

st.subheader("Pages")
for path, text in PAGES:
    st.page_link(path)
    st.caption(text)
