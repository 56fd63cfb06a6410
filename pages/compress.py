"""Compress: per-layer ratios and bits, Apply, then before/after and every applied plan on one scatter."""

import streamlit as st

from analysis import (
    IMPORTANCE_CRITERIA,
    charts,
    comparison_frame,
    compress,
    model_bytes,
    pareto_table,
    plan_from_table,
    run_point,
    suggest,
    uniform_layer_table,
)
from pages import _shared

BITS = [*range(2, 17), 32]
st.title("Compress")
wb = _shared.workbench()
spec, key = wb.spec, wb.spec.model_key()
with _shared.guard("Listing the layers"):
    table = _shared.cached("layer_table", key, {}, lambda p: uniform_layer_table(wb.model, wb.input_shape))
rows = list(table.itertuples(index=False))
for r in rows:
    st.session_state.setdefault(f"prune::{r.layer}", 0.0)
    st.session_state.setdefault(f"bits::{r.layer}", 32)

with st.expander("Presets", expanded=True):
    c = st.columns([2, 2, 1])
    ratio = c[0].slider("Uniform prune ratio", 0.0, 0.9, 0.25, 0.05, key="uni_prune")
    bits = c[1].select_slider("Uniform bits (32 = float)", BITS, 32, key="uni_bits")
    if c[2].button("Set every layer"):
        for r in rows:
            st.session_state[f"prune::{r.layer}"] = 0.0 if r.final else ratio
            st.session_state[f"bits::{r.layer}"] = bits
    sweep = _shared.session_result("sensitivity:structured", key)
    c = st.columns([2, 2, 1])
    kind = c[0].selectbox("Budget", ["macs", "latency", "drop"], key="budget_kind",
                          help="macs, latency: the fraction to keep; drop: the accuracy points you accept")  # fmt: skip
    value = c[1].number_input("Budget value", 0.0, 100.0, 0.5, 0.05, key="budget_value")
    no_sweep = "Run a structured sweep on the Sensitivity page first" if sweep is None else None
    if c[2].button("Suggest", disabled=sweep is None, help=no_sweep):
        budget = f"{kind}={value / 100 if kind == 'drop' else value}"
        with _shared.guard("Suggesting a plan"):
            hint = _shared.cached(
                "suggest", spec.timing_key(), {"budget": budget, "sweep": sweep.to_dict()},
                lambda p: suggest(sweep, budget, model=wb.model, data=wb.data, progress=p,
                                  batch_size=spec.batch_size, threads=spec.threads),
                progress="Suggesting",
            )  # fmt: skip
        for r in rows:
            st.session_state[f"prune::{r.layer}"] = float(hint.ratios.get(r.layer, 0.0))
        met = "" if hint.met else " (budget not met)"
        st.success(f"Suggested for {budget}: {hint.mac_fraction:.0%} of the MACs, predicted drop "
                   f"{hint.predicted_drop * 100:.2f} points{met}.")  # fmt: skip

with st.form("plan"):
    for r in rows:
        c = st.columns([2, 3, 3])
        c[0].markdown(f"**{r.layer}**  \n{r.type}, {r.channels} outputs{' (classifier)' if r.final else ''}")
        c[1].slider("prune ratio", 0.0, 0.95, step=0.05, key=f"prune::{r.layer}", disabled=bool(r.final))
        c[2].select_slider("bits", BITS, key=f"bits::{r.layer}")
    c = st.columns(4)
    criterion = c[0].selectbox("Criterion", IMPORTANCE_CRITERIA, key="plan_criterion")
    structured = c[1].toggle("Structured (remove channels)", True, key="plan_structured")
    epochs = c[2].number_input("Fine-tune epochs", 0, 50, 0, key="plan_epochs")
    distill = c[3].checkbox("Distill from the original", key="plan_distill")
    apply = st.form_submit_button("Apply", type="primary")

if apply:
    chosen = table.assign(prune=[st.session_state[f"prune::{r.layer}"] for r in rows],
                          bits=[st.session_state[f"bits::{r.layer}"] for r in rows])  # fmt: skip
    with _shared.guard("Compressing"):
        plan = plan_from_table(chosen, criterion, structured, {"epochs": epochs, "distill": distill})
        result = _shared.cached(
            "compress", spec.timing_key(), {"plan": plan.to_dict()},
            lambda p: compress(wb.model, plan, wb.data, p, spec.batch_size, threads=spec.threads),
            progress="Compressing and measuring",
        )  # fmt: skip
    _shared.keep_result("compress", key, result)
    runs = st.session_state.setdefault(f"_runs::{key}", [])
    if not runs or runs[-1]["plan"] != result.plan.to_json():
        runs.append(run_point(result, f"plan {len(runs) + 1}"))

result = _shared.session_result("compress", key)
if result is None:
    st.info("Set ratios and bits per layer (or use a preset) and press **Apply**.")
    st.stop()

st.subheader("Before and after")
_shared.compression_metrics(result)
_shared.table(comparison_frame(result), "before_after.csv", key="cmp_csv")
for note in result.notes:
    st.info(note)
points = pareto_table(result, st.session_state.get(f"_runs::{key}", []))
_shared.chart(charts.pareto_scatter(points), key="cmp_pareto")
_shared.table(points.drop(columns=["plan"]), "applied_plans.csv", key="cmp_runs_csv")
c = st.columns(2)
with c[0]:
    _shared.download(
        "Download the plan (JSON)", result.plan.to_json(), "plan.json", "application/json", "cmp_plan"
    )
with c[1]:
    _shared.download("Download the compressed model (.pt)", lambda: model_bytes(result.model), "compressed.pt",
                     "application/octet-stream", "cmp_model")  # fmt: skip
st.caption("The .pt file is a whole pickled module: loading it runs code, so it needs `--trust-pickle`.")
