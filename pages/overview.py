"""Overview: per-layer MACs and params, and each layer's share of MACs vs its share of measured time."""

import streamlit as st

from analysis.report import charts, cost_vs_time
from pages import _routing, _shared, _state

_routing.routed()

st.title("Overview")
wb = _shared.workbench()
spec = wb.spec
runs = st.slider(
    "Timed runs per layer",
    5,
    50,
    step=5,
    **_state.kept("overview_runs", 10),
    help="More runs give steadier shares; slower.",
)

slot, on_wait = _shared.waiting_notice()
with _shared.guard("Measuring cost and time per layer"):
    # cost_vs_time hooks a private copy of the model (layer_times and summarize copy): the cached model that
    # every session shares is never hooked.
    frame = _shared.cached(
        "cost_vs_time",
        spec.timing_key(),
        {"runs": runs},
        lambda progress: cost_vs_time(
            wb.model, wb.input_shape, spec.batch_size, spec.threads, runs, on_wait=on_wait
        ),
        progress="Timing every layer",
    )
slot.empty()

total_macs, total_params = int(frame["macs"].sum()), int(frame["params"].sum())
c = st.columns(3)
c[0].metric("MACs per sample", f"{total_macs:,}")
c[1].metric("FLOPs per sample", f"{2 * total_macs:,}", help="FLOPs = 2 x MACs")
c[2].metric("Parameters (in layers)", f"{total_params:,}")

left, right = st.columns(2)
with left:
    _shared.chart(charts.sorted_bar(frame, "macs", title="MACs per layer (one sample)"), key="overview_macs")
with right:
    _shared.chart(charts.sorted_bar(frame, "params", title="Parameters per layer"), key="overview_params")

_shared.chart(charts.share_comparison(frame), key="overview_shares")
st.caption(
    f"Time per layer from hooks around each module's forward, median of {runs} runs at batch "
    f"{spec.batch_size}, {spec.threads or 'default'} threads, eager PyTorch on the CPU; hooks add a little per call, so read shares, not totals. Layers whose share of time "
    "is far above their share of MACs (norms, activations, pooling) are memory-bound: pruning the MAC-heavy "
    "layers speeds those up less than the MAC count suggests."
)

shown = frame.assign(
    macs_share=(frame["macs_share"] * 100).round(2),
    time_share=(frame["time_share"] * 100).round(2),
    time_ms=frame["time_ms"].round(4),
).drop(columns=["params_share"])
shown = shown.rename(columns={"macs_share": "MACs %", "time_share": "time %"})
_shared.table(shown, "layers.csv", key="overview_csv")
