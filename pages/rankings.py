"""Rankings: how each importance criterion scores each layer's channels, and how well it agrees with the oracle."""

import streamlit as st

from analysis import (
    DEFAULT_MAX_SAMPLES,
    IMPORTANCE_CRITERIA,
    charts,
    out_channels,
    prunable_layers,
    rank_channels,
    to_json,
)
from pages import _shared

st.title("Rankings")
wb = _shared.workbench()
key = wb.spec.model_key()
measured = [c for c in IMPORTANCE_CRITERIA if c != "oracle"]

with st.form("rank"):
    criteria = st.multiselect("Criteria", measured, default=measured, key="rank_criteria")
    layers = _shared.layer_picker("Layers", list(prunable_layers(wb.model)), key="rank_layers")
    c = st.columns(4)
    oracle = c[0].checkbox("Oracle", True, key="rank_oracle", help="|loss change| with each channel zeroed")
    samples = c[1].number_input(
        "Calibration samples", 32, 100_000, DEFAULT_MAX_SAMPLES, 256, key="rank_samples"
    )
    oracle_samples = c[2].number_input(
        "Oracle samples", 32, 100_000, DEFAULT_MAX_SAMPLES, 256, key="rank_osamples"
    )
    topk = c[3].slider(
        "Top-k fraction", 0.05, 1.0, 0.25, 0.05, key="rank_topk", help="k = fraction x channels"
    )
    run = st.form_submit_button("Rank channels", type="primary")
channels = sum(out_channels(m) for m in prunable_layers(wb.model, layers).values())
st.caption(
    f"The oracle costs one evaluation per channel: {channels:,} channels x up to {oracle_samples:,} samples."
)

if run and not (criteria or oracle):
    st.warning("Choose at least one criterion or the oracle.")
elif run:
    with _shared.guard("Ranking the channels"):
        params = {
            "criteria": criteria,
            "layers": layers or None,
            "max_samples": int(samples),
            "oracle": oracle,
            "oracle_max_samples": int(oracle_samples),
            "topk_fraction": float(topk),
        }
        result = _shared.cached(
            "rankings",
            key,
            params,
            lambda progress: rank_channels(wb.model, wb.data, progress=progress, **params),
            progress="Scoring channels",
        )
    _shared.keep_result("rankings", key, result, params)

result = _shared.session_result("rankings", key)
if result is None:
    st.info("Choose criteria and layers and press **Rank channels**.")
    st.stop()

st.caption(f"{len(result.layers)} layers, {result.samples:,} calibration samples, {result.seconds:.1f} s.")
for note in result.notes:
    st.info(note)
frame = result.to_frame()
_shared.chart(charts.criterion_distributions(frame, list(result.criteria)), key="rank_distributions")
if result.spearman_per_layer:
    rho = result.spearman_frame()
    _shared.chart(
        charts.matrix_heatmap(rho, "Spearman's rho with the oracle (per layer, mean, pooled)", "rho"),
        key="rank_rho",
    )
    _shared.table(rho.reset_index(names="layer").round(4), "spearman_vs_oracle.csv", key="rank_rho_csv")
else:
    st.info("Tick **Oracle** to see how each criterion agrees with it.")
overlap = result.topk_frame()
title = f"Top-k overlap (Jaccard of the {result.topk_fraction:.0%} of channels each would prune first)"
_shared.chart(charts.matrix_heatmap(overlap, title, "Jaccard", zmin=0.0), key="rank_overlap")

c = st.columns(2)
with c[0]:
    _shared.download(
        "Download scores (CSV)", frame.to_csv(index=False), "rankings.csv", "text/csv", "rank_csv"
    )
with c[1]:
    _shared.download(
        "Download JSON", to_json(result.to_dict()), "rankings.json", "application/json", "rank_json"
    )
