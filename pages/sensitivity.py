"""Sensitivity: accuracy per layer (or coupled group) as it is pruned or quantized alone."""

import streamlit as st

from analysis import (
    DEFAULT_BITS,
    DEFAULT_RATIOS,
    SENSITIVITY_KINDS,
    charts,
    parse_values,
    prunable_layers,
    safe_points,
    sensitivity_sweep,
    to_json,
)
from pages import _shared

st.title("Sensitivity")
wb = _shared.workbench()
key = wb.spec.model_key()

with st.form("sweep"):
    c = st.columns([2, 3, 3])
    kind = c[0].radio(
        "Kind", SENSITIVITY_KINDS, key="sens_kind", help="structured: coupled layers lose channels together"
    )
    ratios = c[1].text_input(
        "Ratios (pruning)", ", ".join(f"{r:g}" for r in DEFAULT_RATIOS), key="sens_ratios"
    )
    bits = c[2].text_input("Bits (quant)", ", ".join(map(str, DEFAULT_BITS)), key="sens_bits")
    layers = _shared.layer_picker(
        "Layers (none chosen = all)",
        list(prunable_layers(wb.model)),
        key="sens_layers",
        default=[],
        help="For structured, a layer stands for the group of layers coupled to it; the final classifier "
        "keeps its outputs, so it is in no group.",
    )
    c = st.columns([2, 3])
    early = c[0].number_input("Stop a layer after a drop of (points, 0 = never)", 0.0, 100.0, 0.0, 0.5)
    run = c[1].form_submit_button("Run sweep", type="primary")

if run:
    with _shared.guard("The sensitivity sweep"):
        params = {
            "kind": kind,
            "ratios": parse_values(ratios) if kind != "quant" else None,
            "bits": parse_values(bits, int) if kind == "quant" else None,
            "layers": layers or None,
            "max_drop": early / 100 if early > 0 else None,
        }
        result = _shared.cached(
            "sensitivity",
            key,
            params,
            lambda progress: sensitivity_sweep(wb.model, wb.data, progress=progress, **params),
            progress=f"Sweeping ({kind})",
        )
    _shared.keep_result("sensitivity", key, result, params)
    _shared.keep_result(f"sensitivity:{kind}", key, result, params)  # the report takes one sweep per kind

result = _shared.session_result("sensitivity", key)
if result is None:
    st.info("Choose what to sweep and press **Run sweep**.")
    st.stop()

st.caption(
    f"{result.kind} sweep over {len(result.layers)} {'groups' if result.kind == 'structured' else 'layers'} "
    f"in {result.seconds:.1f} s; baseline accuracy {result.baseline_accuracy:.2%} "
    f"on {result.samples:,} samples."
)
for note in result.notes:
    st.info(note)
frame = result.to_frame()
_shared.chart(charts.sensitivity_curves(frame, result.baseline_accuracy), key="sens_curves")
_shared.chart(charts.sensitivity_heatmap(frame, result.baseline_accuracy), key="sens_heatmap")

st.subheader("Safe settings per layer")
_shared.table(safe_points(result), "safe_settings.csv", key="sens_safe_csv")
c = st.columns(2)
with c[0]:
    _shared.download(
        "Download all points (CSV)", frame.to_csv(index=False), "sensitivity.csv", "text/csv", "sens_csv"
    )
with c[1]:
    _shared.download(
        "Download JSON", to_json(result.to_dict()), "sensitivity.json", "application/json", "sens_json"
    )
