"""Sensitivity: the score (the sidebar's metric) per layer (or coupled group) as it is pruned, quantized,
factored or shared alone.

Every sweep is recorded in the results store; one already recorded for this model, data and parameters is
shown instead of computed again (Recompute runs it anyway). A sweep runs in a worker with a Stop button;
stopped, it keeps (and records, as partial) the layers that finished.
"""

import streamlit as st

from analysis import SensitivityResult, sensitivity_sweep, sweep_kinds
from analysis.distributed import ray_sensitivity_sweep
from analysis.io import to_json
from analysis.model import prunable_layers
from analysis.report import charts, safe_points
from analysis.sensitivity import SWEEP_KINDS, get_sweep_kind
from analysis.validate import parse_values
from pages import _records, _shared, _state

PAYLOAD = "_sens_payload"  # the sweep's JSON (lowrank keeps its MACs saved there)

st.title("Sensitivity")
wb = _shared.workbench()
key = wb.spec.model_key()

KINDS = sweep_kinds()  # read on every run: a kind registered late is offered too
# Each values field starts at the defaults of the first kind that reads it (ratios: structured's).
FIELDS = {p: get_sweep_kind(next(k for k in KINDS if get_sweep_kind(k).parameter == p)).defaults
          for p in ("ratios", "bits", "ranks")}  # fmt: skip
ADDED = [k for k in KINDS if k not in SWEEP_KINDS]  # the kinds registered transforms add


def _label(text: str, parameter: str) -> str:
    """A values field's label, naming the added kinds that read it too."""
    also = [k for k in ADDED if get_sweep_kind(k).parameter == parameter]
    return text[:-1] + "".join(f", {k}" for k in also) + ")"


for name, default in [
    ("sens_kind", KINDS[0]),
    *((f"sens_{p}", ", ".join(f"{v:g}" for v in values)) for p, values in FIELDS.items()),
    ("sens_layers", []),
    ("sens_early", 0.0),
]:
    _state.sticky(name, default)

with st.form("sweep"):
    c = st.columns([2, 3, 3, 3])
    kind = c[0].radio(
        "Kind",
        list(KINDS),
        key="sens_kind",
        persist_state=_state.KEEP,
        help="structured: coupled layers lose channels together; lowrank: SVD at a kept rank fraction; "
        "share: k-means weight sharing with 2^bits centroids"
        + "".join(f"; {k}: {get_sweep_kind(k).description}" for k in ADDED),  # fmt: skip
    )
    ratios = c[1].text_input(
        _label("Ratios (pruning)", "ratios"), key="sens_ratios", persist_state=_state.KEEP
    )
    bits = c[2].text_input(_label("Bits (quant, share)", "bits"), key="sens_bits", persist_state=_state.KEEP)
    ranks = c[3].text_input(
        _label("Kept rank fractions (lowrank)", "ranks"), key="sens_ranks", persist_state=_state.KEEP
    )
    layers = _shared.layer_picker(
        "Layers (none chosen = all)",
        list(prunable_layers(wb.model)),
        key="sens_layers",
        default=[],
        help="For structured, a layer stands for the group of layers coupled to it; the final classifier "
        "keeps its outputs, so it is in no group.",
    )
    c = st.columns([2, 3])
    info = _shared.metric_info(wb)
    unit = "points" if info.percent else (info.unit or info.name)
    early = c[0].number_input(
        f"Stop a layer after a drop of ({unit}, 0 = never)",
        0.0,
        100.0,
        step=0.5,
        key="sens_early",
        help=f"Metric {info.name}: in points (hundredths) for accuracy and agreement; in the metric's own "
        "units otherwise (dB for PSNR)",
        persist_state=_state.KEEP,
    )
    run = c[1].form_submit_button("Run sweep", type="primary")


def _params() -> dict:
    spec = get_sweep_kind(kind)  # which field its values come from
    values = {"ratios": None, "bits": None}
    if spec.bits:
        values["bits"] = parse_values(bits, int)
    else:
        values["ratios"] = parse_values(ranks if spec.parameter == "ranks" else ratios)
    pruning = spec.stops_early
    scale = _shared.drop_scale(info)
    return {"kind": kind, **values, "layers": layers or None, "metric": wb.spec.metric,
            "max_drop": early / scale if early > 0 and pruning else None}  # fmt: skip


def _work(params: dict, model, data, where: dict):
    """The sweep as `work(progress, should_stop)` for `run_stoppable` (runs in a worker thread); the library
    dispatches every kind, lowrank and share included, and returns the finished layers when stopped.
    `where`: the sidebar's device, or a Ray address (`_records.where_to_run`)."""

    def work(progress, should_stop):
        kwargs = {k: v for k, v in params.items() if v is not None or k in ("ratios", "bits")}
        if "address" in where:  # on Ray: same numbers; layers whose tasks failed are listed
            return ray_sensitivity_sweep(
                model, data, progress=progress, should_stop=should_stop, **kwargs, **where
            )
        return sensitivity_sweep(model, data, progress=progress, should_stop=should_stop, **kwargs, **where)

    return work


def _show(result, params: dict, payload: dict, run_id: int | None) -> None:
    _shared.keep_result("sensitivity", key, result, params)
    _shared.keep_result(f"sensitivity:{result.kind}", key, result, params)  # the report takes one per kind
    st.session_state[PAYLOAD] = payload


def _unit(params: dict, where: dict) -> str:
    """What the sweep's progress counts: evaluations (each layer or group at each value), or on Ray the
    layers (groups) as their tasks finish."""
    spec = get_sweep_kind(params["kind"])
    if "address" in where:
        return spec.unit
    return f"evaluations ({spec.unit} x {spec.values})"


FLOW = _records.Flow(
    kind="sensitivity",
    name="sensitivity",
    job="sensitivity",
    prefix="_sens",
    what="The sensitivity sweep",
    from_dict=SensitivityResult.from_dict,
    keep=_show,
)
outcome = _records.reuse_or_run(
    FLOW,
    wb,
    run=run,
    params=_params,
    label=lambda params: f"Sweeping ({params['kind']})",
    work=lambda params, where: _work(params, wb.model, wb.data, where),
    unit=_unit,
)
if outcome is not None and outcome.stopped:
    st.warning(
        f"Stopped: {len(outcome.result.layers)} layers finished and were kept (recorded as partial)."
        if outcome.partial
        else "Stopped after the last layer had started: the sweep finished."
    )

result = _shared.session_result("sensitivity", key)
if result is None:
    st.info("Choose what to sweep and press **Run sweep**.")
    st.stop()

_records.recorded_notice(FLOW, "sweeping")
spec = get_sweep_kind(result.kind)
score = result.metric
better = "higher" if score.higher_is_better else "lower"
st.caption(
    f"{result.kind} sweep over {len(result.layers)} {spec.unit} "
    f"in {result.seconds:.1f} s; metric {score.name} ({score.title}, {better} is better): baseline "
    f"{score.format(result.baseline_accuracy)} on {result.samples:,} samples."
    + (
        ""
        if score.needs_labels
        else " It compares each output with the original model's, so the baseline is its best."
    )
)
for note in result.notes:
    st.info(note)
for name, why in result.failed_layers.items():
    st.warning(_shared.plain(f"{name} could not be computed on Ray: {why}"))
frame = result.to_frame()
if spec.saves_cost:  # kept rank fraction on x, MACs saved on the second axis
    _shared.chart(charts.lowrank_tradeoff(frame, result.baseline_accuracy, score=score), key="sens_lowrank")
else:
    _shared.chart(charts.sensitivity_curves(frame, result.baseline_accuracy, score=score), key="sens_curves")
_shared.chart(charts.sensitivity_heatmap(frame, result.baseline_accuracy, score=score), key="sens_heatmap")

if spec.all_points:
    st.subheader("All points")
    _shared.table(frame, "sensitivity_points.csv", key="sens_points_csv")
else:
    st.subheader("Safe settings per layer")
    _shared.table(safe_points(result), "safe_settings.csv", key="sens_safe_csv")
c = st.columns(2)
with c[0]:
    _shared.download(
        "Download all points (CSV)", frame.to_csv(index=False), "sensitivity.csv", "text/csv", "sens_csv"
    )
with c[1]:
    _shared.download(
        "Download JSON",
        to_json(st.session_state.get(PAYLOAD) or result.to_dict()),
        "sensitivity.json",
        "application/json",
        "sens_json",
    )
