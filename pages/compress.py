"""Compress: per-layer ratios, bits and transforms, or a pruning method; a preview of what Apply will do;
Apply with a live chart and Stop; before/after on the chosen runtime, timed again on request; every applied
plan against its own baseline on one scatter; files made when asked; each result recorded in the store.

What the page computes without streamlit (group ratios, predicted drop, Suggest's verdict, preview cost,
Apply, timing again, scatter rows, the store's record, files) lives in `analysis/app_support/preview.py`.
The sections live beside it: the method, presets and per-layer editor in `pages/_compress_plan.py` (its
transform columns come from the transforms registry), Apply and the result in `pages/_compress_result.py`.
The page runs `main()` only when Streamlit executes it as a page (`__name__ == "__main__"`).
"""

from __future__ import annotations

import streamlit as st

from analysis.app_support import group_ratios, predicted_drop_points, preview_cost, preview_transforms
from pages import _compress_plan, _compress_result, _serving, _shared, _state

COLLAPSE_POINTS = 10.0  # a predicted drop above this many points is called a collapse before Apply


def main() -> None:
    st.title("Compress")
    page = _compress_plan.load_page()
    method, schedule = _compress_plan.method_section()
    tolerance = _compress_plan.presets_section(page, method)
    edited = _compress_plan.layers_section(page, method, schedule)
    _preview_section(page, method, edited, tolerance)
    mlflow_uri = ""
    if not _serving.shared():  # a shared server writes nowhere a browser user names
        mlflow_uri = st.text_input(
            "Also log to MLflow (tracking URI, optional)",
            **_state.kept("cmp_mlflow", ""),
            placeholder="file:/path/to/mlruns or http://host:5000",
            help="Each Apply is also logged as an MLflow run (params = the plan, metrics = before/after); "
            "needs mlflow-skinny installed. The results store records it either way.",
        ).strip()
    apply = st.button(
        "Apply", type="primary", disabled=bool(edited.refused) or (method != "oneshot" and schedule is None)
    )
    if edited.refused:
        st.caption("Fix the refused combinations above to apply.")
    _compress_result.apply_section(page, edited.plan, edited.both, mlflow_uri, apply)
    _compress_result.result_section(page)


def _preview_section(page, method: str, edited, tolerance: float) -> None:
    """What Apply will do: MACs and params after the plan's structured ratios and ranks, and the drop the
    structured sweep predicts (a warning past the accepted drop)."""
    st.subheader("What Apply will do")
    wb, info, unit, base_cost = page.wb, page.info, page.points_unit, page.base_cost
    layer_plan, refused, structured = edited.layers, edited.refused, edited.structured
    layer_ratios = {n: s["prune"] for n, s in layer_plan.items() if structured and s.get("prune", 0) > 0}
    ratios = group_ratios(page.groups, layer_ratios)
    counted = preview_transforms(layer_plan, refused)  # the transforms that change MACs or params
    with _shared.guard("Counting the plan's cost"):
        cost = _shared.cached("preview_cost", page.key, {"ratios": ratios, "rank": counted},
                              lambda p: preview_cost(wb.model, wb.input_shape, ratios, counted))  # fmt: skip
    drop, missing = predicted_drop_points(page.sweep, ratios)
    c = st.columns(3)
    c[0].metric("MACs per sample", f"{cost['macs'] / 1e6:.2f} M", f"{cost['macs'] / base_cost.total_macs:.0%} of the original",
                delta_color="off", delta_arrow="off")  # fmt: skip
    fewer = base_cost.total_params - cost["params"]
    c[1].metric("Params", f"{cost['params']:,}", f"{fewer:,} fewer" if fewer else None, delta_color="off",
                delta_arrow="down")  # fmt: skip
    if method != "oneshot":
        c[2].metric("Predicted drop", "n/a", help="the schedule chooses the channels as it runs")
    elif drop is None:
        c[2].metric(
            "Predicted drop", "n/a", help="run a structured sweep on the Sensitivity page for an estimate"
        )
    else:
        c[2].metric(f"Predicted {info.name} drop (estimate)", f"{drop:.2f} {unit}",
                    help="sum of the groups' single-group drops from the structured sweep; "
                         "groups interact, so this is an estimate")  # fmt: skip
        if missing:
            st.caption(_shared.plain(f"not in the sweep, not counted: {', '.join(missing)}"))
        if drop > tolerance:
            collapse = f": {info.name} would collapse" if info.percent and drop > COLLAPSE_POINTS else ""
            st.warning(f"These settings are predicted to lose {drop:.1f} {unit} of {info.name} (an estimate), "
                       f"more than the {tolerance:g} you accept{collapse}. Fine-tune (the recovery recipe) or prune less.")  # fmt: skip
    if method != "oneshot":
        st.caption(
            "MACs and params above are of the per-layer settings; the schedule's target decides the pruning."
        )
    if not structured and layer_ratios:
        st.caption("Unstructured pruning zeroes weights: MACs and params stay, only the nonzero count falls.")


if __name__ == "__main__":
    main()
