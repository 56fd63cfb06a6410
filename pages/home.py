"""Home: the model card and a map of the pages."""

import streamlit as st

from analysis import charts, model_card, summarize
from pages import _shared

_shared.routed()

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
]

st.title("Compression workbench")
wb = _shared.workbench()
spec = wb.spec
st.caption(f"Model `{spec.model}` on data `{wb.data.spec}`, input {'x'.join(map(str, wb.input_shape))}")

with _shared.guard("Measuring the model"):
    card = _shared.cached(
        "model_card",
        spec.timing_key(),
        {},
        lambda progress: model_card(wb.model, wb.data, wb.input_shape, spec.batch_size, spec.threads),
        progress="Evaluating and timing the model",
    )
    summary = _shared.cached("summary", spec.model_key(), {}, lambda p: summarize(wb.model, wb.input_shape))

c = st.columns(4)
c[0].metric("Parameters", f"{card.params:,}")
c[1].metric("MACs per sample", f"{card.macs / 1e6:,.2f} M", help="Multiply-accumulates; FLOPs = 2 x MACs")
c[2].metric("FLOPs per sample", f"{card.flops / 1e6:,.2f} M")
c[3].metric("Weights size", f"{card.size_bytes / 1024:,.1f} KiB")
c = st.columns(4)
c[0].metric("Accuracy (top-1)", f"{card.accuracy:.2%}", help=f"on {card.samples:,} evaluation samples")
c[1].metric("Loss (cross-entropy)", f"{card.loss:.4f}")
c[2].metric(
    "Latency (median)",
    f"{card.latency_ms:.2f} ms",
    help=f"p10 {card.latency_p10_ms:.2f} ms, p90 {card.latency_p90_ms:.2f} ms",
)
c[3].metric("Prunable layers", f"{card.prunable_layers} of {card.layers}")
st.caption(
    f"Latency: one forward pass of a batch of {card.batch_size} under inference mode, median of repeated runs "
    f"(p10 {card.latency_p10_ms:.2f} ms, p90 {card.latency_p90_ms:.2f} ms), {card.threads} threads, "
    f"{card.cpu}, torch {card.torch_version}."
)
if card.extra.get("differences"):
    st.info(
        "The two MAC counters disagree by more than 1%:\n\n"
        + "\n".join(f"- {d}" for d in card.extra["differences"])
    )

frame = summary.to_frame()
_shared.chart(charts.sorted_bar(frame, "macs", title="Where the MACs are (per sample)"), key="home_macs")

st.subheader("Pages")
for path, text in PAGES:
    st.page_link(path)
    st.caption(text)
