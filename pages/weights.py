"""Weights: per-layer histograms, sparsity, spread and outliers, the grid a bit width puts on them, uniform
quantization against k-means sharing at the same bits, and the BN-scale / filter-norm histograms that show
what sparsity training did."""

import streamlit as st

from analysis import find_groups
from analysis.compression import sparsity_values
from analysis.model import example_input, prunable_layers
from analysis.report import charts, quantization_view, weight_histograms, weight_stats
from analysis.sensitivity import quant_vs_kmeans
from pages import _shared, _state

st.title("Weights")
wb = _shared.workbench()
key = wb.spec.model_key()
names = list(prunable_layers(wb.model))

layers = _shared.layer_picker("Layers", names, key="weights_layers")
c = st.columns(3)
view = c[0].radio(
    "Histograms", ["Overlay", "Small multiples"], horizontal=True, **_state.kept("weights_view")
)
standardize = c[1].checkbox(
    "Standardize ((w - mean) / std)", **_state.kept("weights_std", False), help="Compare shapes, not scales."
)
sigma = c[2].number_input("Outlier threshold (std)", 1.0, 10.0, step=0.5, **_state.kept("weights_sigma", 3.0))

if not layers:
    st.info("Choose at least one layer.")
    st.stop()

with _shared.guard("Reading the weights"):
    stats = _shared.cached(
        "weight_stats",
        key,
        {"layers": layers, "sigma": sigma},
        lambda p: weight_stats(wb.model, layers, sigma),
    )
    hists = _shared.cached(
        "weight_hists",
        key,
        {"layers": layers, "std": standardize},
        lambda p: weight_histograms(wb.model, layers, standardize=standardize),
    )

if view == "Overlay":
    _shared.chart(charts.histogram_overlay(hists), key="weights_overlay")
else:
    _shared.chart(charts.histogram_grid(hists), key="weights_grid")

_shared.table(stats.round(6), "weight_stats.csv", key="weights_csv")
st.caption(
    f"Sparsity: fraction of weights exactly zero. Outliers: weights more than {sigma:g} std from the mean."
)

st.subheader("Quantization")
c = st.columns([2, 3])
layer = c[0].selectbox("Layer", layers, **_state.kept("weights_qlayer"))
bits = c[1].select_slider("Bits", list(range(2, 17)), **_state.kept("weights_bits", 8))
with _shared.guard("Quantizing the weights"):
    qview = _shared.cached(
        "quant_view", key, {"layer": layer, "bits": bits}, lambda p: quantization_view(wb.model, layer, bits)
    )
m = st.columns(3)
m[0].metric("SQNR", f"{qview.sqnr_db:.1f} dB", help="10 log10(sum w^2 / sum (w - q(w))^2) over the layer")
m[1].metric("Distinct values per channel (max)", f"{qview.distinct_values_max:,}")
m[2].metric("Scale per channel", f"{qview.scale_min:.3g} .. {qview.scale_max:.3g}")
_shared.chart(charts.quantization_figure(qview), key="weights_quant")
st.caption(
    "Symmetric, per-output-channel, uniform: each channel's grid is 2^(b-1) - 1 levels either side of zero, "
    "scaled to that channel's largest |w|. Dotted lines: the grid of the widest channel."
)

st.subheader("Uniform quantization vs k-means sharing")
c = st.columns([2, 3])
kbits = c[0].select_slider("Bits (both)", list(range(2, 9)), **_state.kept("weights_kbits", 4))
compare = c[1].button("Compare on the chosen layers", key="weights_kmeans")
params = {"layers": layers, "bits": kbits, "metric": wb.spec.metric}
if compare:
    with _shared.guard("Comparing uniform and k-means"):
        qk = _shared.cached(
            "quant_vs_kmeans", key, params,
            lambda p: quant_vs_kmeans(wb.model, wb.data, kbits, layers, progress=p, metric=wb.spec.metric),
            progress="Evaluating both per layer",
        )  # fmt: skip
    _shared.keep_result("quant_vs_kmeans", key, qk, params)
qk = _shared.session_result("quant_vs_kmeans", key)
if qk is None:
    st.caption(
        "Each layer alone (and all together) at the same bits: uniform, symmetric per-channel grid vs "
        "2^bits k-means centroids per layer. Two evaluations per layer."
    )
else:
    frame = qk.to_frame()
    sign = 1.0 if qk.metric.higher_is_better else -1.0
    frame["better"] = [
        "k-means" if sign * k > sign * u else "uniform" if sign * u > sign * k else "tie"
        for u, k in zip(frame["accuracy_uniform"], frame["accuracy_kmeans"], strict=True)
    ]
    names = [n for n in frame.index if n != "(all layers)"]
    series = {
        "uniform": [frame.loc[n, "sqnr_uniform_db"] for n in names],
        "k-means": [frame.loc[n, "sqnr_kmeans_db"] for n in names],
    }
    _shared.chart(
        charts.grouped_bars(names, series, f"SQNR at {qk.bits} bits (higher = closer to float)", "SQNR (dB)"),
        key="weights_kmeans_sqnr",
    )
    _shared.table(frame.reset_index().round(4), "quant_vs_kmeans.csv", key="weights_kmeans_csv")
    st.caption(
        f"Metric {qk.metric.name}: baseline {qk.metric.format(qk.baseline_accuracy)} (the `accuracy_*` columns hold "
        f"the {qk.metric.name}). " + " ".join(n[:1].upper() + n[1:].rstrip(".") + "." for n in qk.notes)
        + f" `better`: the better {qk.metric.name} at these bits."
    )  # fmt: skip


def _evidence(result) -> dict | None:
    """The before/after sparsity values of the last compression with sparsity training, if it has them."""
    for holder in (result, getattr(result, "schedule", None), getattr(result, "schedule_result", None)):
        evidence = getattr(holder, "evidence", None)
        if isinstance(evidence, dict) and evidence.get("before"):
            return evidence
    return None


st.subheader("BatchNorm scales and filter norms")
evidence = _evidence(_shared.session_result("compress", key))
if evidence is not None:
    label = "|gamma| of BatchNorm" if evidence.get("kind") == "bn_scale" else "filter-group L2 norm"
    _shared.chart(
        charts.value_histograms(
            evidence["before"], evidence.get("after"), label, f"{label}: before and after sparsity training"
        ),
        key="weights_sparsity",
    )
    st.caption("From the last compression on the Compress page. A mass near zero after training is the "
               "penalty's work: those channels are what the method prunes.")  # fmt: skip
else:
    with _shared.guard("Reading BN scales and filter norms"):
        values = _shared.cached(
            "sparsity_values", key, {},
            lambda p: {
                "bn": sparsity_values(wb.model, "slimming", []),
                "norms": sparsity_values(
                    wb.model, "group-lasso", find_groups(wb.model, example_input(wb.input_shape))
                ),
            },
        )  # fmt: skip
    c = st.columns(2)
    with c[0]:
        if values["bn"]:
            _shared.chart(
                charts.value_histograms(values["bn"], None, "|gamma|", "BatchNorm scales (this model)"),
                key="weights_bn",
            )
        else:
            st.caption("The model has no affine BatchNorm.")
    with c[1]:
        _shared.chart(
            charts.value_histograms(values["norms"], None, "L2 norm", "Filter-group norms (this model)"),
            key="weights_norms",
        )
    st.caption("Run slimming or group lasso on the Compress page to see these before and after training.")
