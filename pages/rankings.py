"""Rankings: how each importance criterion scores each layer's channels, and how well it agrees with the oracle.

Every ranking is recorded in the results store; one already recorded for this model, data and parameters is
shown instead of computed again (Recompute runs it anyway). Ranking runs in a worker with a Stop button.
"""

import streamlit as st

from analysis import RankingResult, rank_channels
from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.distributed import ray_rank_channels
from analysis.importance import default_criteria
from analysis.io import to_json
from analysis.model import out_channels, prunable_layers
from analysis.report import charts
from pages import _records, _shared, _state

st.title("Rankings")
wb = _shared.workbench()
key = wb.spec.model_key()
measured = list(default_criteria())  # the expensive ones (the oracle) have their own checkbox
for name, default in [
    ("rank_criteria", measured),
    ("rank_layers", list(prunable_layers(wb.model))),
    ("rank_oracle", True),
    ("rank_samples", DEFAULT_MAX_SAMPLES),
    ("rank_osamples", DEFAULT_MAX_SAMPLES),
    ("rank_topk", 0.25),
]:
    _state.sticky(name, default)

with st.form("rank"):
    criteria = st.multiselect("Criteria", measured, key="rank_criteria", persist_state=_state.KEEP)
    layers = _shared.layer_picker("Layers", list(prunable_layers(wb.model)), key="rank_layers")
    c = st.columns(4)
    oracle = c[0].checkbox(
        "Oracle", key="rank_oracle", persist_state=_state.KEEP, help="|loss change| with each channel zeroed"
    )
    samples = c[1].number_input(
        "Calibration samples", 32, 100_000, step=256, key="rank_samples", persist_state=_state.KEEP
    )
    oracle_samples = c[2].number_input(
        "Oracle samples", 32, 100_000, step=256, key="rank_osamples", persist_state=_state.KEEP
    )
    topk = c[3].slider(
        "Top-k fraction",
        0.05,
        1.0,
        step=0.05,
        key="rank_topk",
        persist_state=_state.KEEP,
        help="k = fraction x channels",
    )
    run = st.form_submit_button("Rank channels", type="primary")
channels = sum(out_channels(m) for m in prunable_layers(wb.model, layers).values())
if oracle:
    st.caption(
        f"The oracle costs one evaluation per channel: {channels:,} channels x up to {oracle_samples:,} samples."
    )


def _work(params: dict, model, data, where: dict):
    """The ranking as `work(progress, should_stop)` for `run_stoppable` (runs in a worker thread), on the
    sidebar's device or Ray cluster (`_records.where_to_run`)."""

    def work(progress, should_stop):
        kwargs = dict(params)
        if "address" in where:  # Ray stops at the next task
            return ray_rank_channels(
                model, data, progress=progress, should_stop=should_stop, **kwargs, **where
            )
        return rank_channels(model, data, progress=progress, **kwargs, **where)

    return work


def _keep(result, params: dict, payload: dict, run_id: int | None) -> None:
    _shared.keep_result("rankings", key, result, params)


def _unit(params: dict, where: dict) -> str:
    return (
        "layers" if "address" in where else "channels (oracle)" if params["oracle"] else "calibration samples"
    )


FLOW = _records.Flow(
    kind="ranking",
    name="rankings",
    job="rankings",
    prefix="_rank",
    what="Ranking the channels",
    from_dict=RankingResult.from_dict,
    keep=_keep,
)
if run and not (criteria or oracle):
    st.warning("Choose at least one criterion or the oracle.")
    run = False
outcome = _records.reuse_or_run(
    FLOW,
    wb,
    run=run,
    params=lambda: {
        "criteria": criteria,
        "layers": layers or None,
        "max_samples": int(samples),
        "oracle": oracle,
        "oracle_max_samples": int(oracle_samples),
        "topk_fraction": float(topk),
    },
    label=lambda params: "Scoring channels",
    work=lambda params, where: _work(params, wb.model, wb.data, where),
    unit=_unit,
)
if outcome is not None and outcome.stopped:
    st.warning("Stopped: the layers scored so far were kept (recorded as partial)." if outcome.partial
               else "Stopped after the last unit had started: the ranking finished.")  # fmt: skip

result = _shared.session_result("rankings", key)
if result is None:
    st.info("Choose criteria and layers and press **Rank channels**.")
    st.stop()

_records.recorded_notice(FLOW, "ranking")
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
    st.caption(
        "Spearman's rho of each criterion's ranking with the oracle's (|loss change| with the channel zeroed): 1 = "
        "the same order, 0 = unrelated, below 0 = the opposite order (the channels it would prune first are the "
        "ones whose loss the oracle finds costly). Every criterion is taken as higher = keep, so APoZ enters as "
        "-APoZ (fewer zeros = keep): a negative rho for it means this model's channels with many zeros matter. "
        "**mean per layer**: the average of the per-layer rhos, how well it orders channels within a layer "
        "(what per-layer pruning needs). **pooled**: one rho over every channel of every layer, each criterion's "
        "scores divided by their L2 norm within the layer, how well it also compares channels across layers "
        "(what a global ranking needs)."
    )
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
