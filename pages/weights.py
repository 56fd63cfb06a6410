"""Weights: per-layer histograms, sparsity, spread and outliers, and the grid a bit width puts on them."""

import streamlit as st

from analysis import charts, prunable_layers, quantization_view, weight_histograms, weight_stats
from pages import _shared

st.title("Weights")
wb = _shared.workbench()
key = wb.spec.model_key()
names = list(prunable_layers(wb.model))

layers = _shared.layer_picker("Layers", names, key="weights_layers")
c = st.columns(3)
view = c[0].radio("Histograms", ["Overlay", "Small multiples"], horizontal=True, key="weights_view")
standardize = c[1].checkbox(
    "Standardize ((w - mean) / std)", key="weights_std", help="Compare shapes, not scales."
)
sigma = c[2].number_input("Outlier threshold (std)", 1.0, 10.0, 3.0, 0.5, key="weights_sigma")

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
layer = c[0].selectbox("Layer", layers, key="weights_qlayer")
bits = c[1].select_slider("Bits", list(range(2, 17)), value=8, key="weights_bits")
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
