"""History: the runs of the results store (app and CLI), compared side by side, re-opened, exported, deleted.

Runs are keyed by the model's fingerprint (its spec and a hash of its weights), so "this model" means these
exact weights. The store is `results.sqlite3` under $WORKBENCH_DATA_DIR (see docs/guides/results-store.md).

On a shared server the page shows only the runs this browser session made, no store path, no server paths
in specs, only the software versions of the environment, and no Delete (the operator deletes from the CLI).
"""

import json

import pandas as pd
import streamlit as st

from analysis import RankingResult, SensitivityResult
from analysis.app_support import strip_paths
from analysis.metrics import METRICS
from analysis.report import charts
from analysis.sensitivity import get_sweep_kind
from analysis.store import compare as compare_runs
from analysis.store import plan_diff, public_environment
from pages import _records, _serving, _shared, _state

# Where a re-opened run goes: the page, the session-state result names that page reads.
REOPEN = {
    "sensitivity": ("pages/sensitivity.py", "Sensitivity"),
    "ranking": ("pages/rankings.py", "Rankings"),
}
COMPRESSION_KINDS = ("compression", "compress")

st.title("History")
wb = _shared.workbench()
key = wb.spec.model_key()
with _shared.guard("Opening the results store"):
    store = _records.results_store()
    if store is None:
        st.stop()
    fp = _records.fingerprint(wb)
shared = _serving.shared()
mine = _records.visible_runs()  # None: every run; on a shared server, this session's only
if shared:
    st.caption("This server is shared: you see the runs you made in this browser session.")
else:
    st.caption(f"Results store: `{store.path}`")

scope = st.radio(
    "Runs of", ["This model", "All models"], horizontal=True, key="hist_scope", persist_state=_state.KEEP
)
with _shared.guard("Reading the results store"):
    infos = store.list(fingerprint=fp if scope == "This model" else None, ids=mine)
if not infos:
    where = (
        "in this browser session"
        if shared
        else "in the app and on the command line (`python -m analysis ...`)"
    )
    st.info(
        "No recorded runs"
        + (" for this model (these exact weights)" if scope == "This model" else "")
        + f" yet: sweeps, rankings and compressions are recorded as they finish, {where}."
    )
    st.stop()


def _shown(run_dict: dict) -> dict:
    """A run as this server may show it: on a shared server, no paths and only the software versions."""
    if not shared:
        return run_dict
    safe = json.loads(strip_paths(json.dumps(run_dict)))
    if "environment" in safe:
        safe["environment"] = public_environment(run_dict["environment"])
    return safe


def _valid_time(text: str) -> bool:
    try:
        pd.Timestamp(text)
    except (ValueError, TypeError):
        return False  # a damaged row: listed, without a date
    return True


def _headline(info) -> str:
    s = info.summary
    for name in [m for m in METRICS if m != "accuracy"]:  # runs scored in another metric name it
        if f"after.{name}" in s:
            return f"{name} {s.get(f'before.{name}', float('nan')):.4g} -> {s[f'after.{name}']:.4g}"
        if f"baseline.{name}" in s:
            return f"baseline {name} {s[f'baseline.{name}']:.4g}"
        if isinstance(s.get(name), (int, float)):
            return f"{name} {s[name]:.4g}"
    if "after.accuracy" in s:
        text = f"accuracy {s.get('before.accuracy', float('nan')):.2%} -> {s['after.accuracy']:.2%}"
        return text + (f", {s['speedup']:.2f}x" if isinstance(s.get("speedup"), (int, float)) else "")
    if "baseline.accuracy" in s:
        return f"baseline {s['baseline.accuracy']:.2%}"
    if isinstance(s.get("accuracy"), (int, float)):
        return f"accuracy {s['accuracy']:.2%}"
    return ""


runs = pd.DataFrame(
    [
        {
            "id": r.id,
            "kind": r.kind,
            "model": _serving.shown_spec(r.model),
            "data": None if r.data is None else _serving.shown_spec(r.data),
            "created": pd.Timestamp(r.created) if _valid_time(r.created) else pd.NaT,
            "status": r.status,
            "this model": r.fingerprint == fp,
            "headline": _headline(r),
            "params": json.dumps(r.params, sort_keys=True),
        }
        for r in infos
    ]
)


def _label(run_id: int) -> str:
    """What a picker shows for a run: its id, kind, model, when, and its headline numbers."""
    row = runs.loc[runs["id"] == run_id].iloc[0]
    parts = [
        f"#{run_id} {row['kind']}",
        _serving.shown_spec(row["model"]),
        f"{row['created']:%Y-%m-%d %H:%M}",
    ]
    return " · ".join(parts + ([row["headline"]] if row["headline"] else []))


c = st.columns(4)
kinds = c[0].multiselect(
    "Kind",
    sorted(runs["kind"].unique()),
    key="hist_kinds",
    persist_state=_state.KEEP,
    placeholder="all kinds",
)
models = c[1].multiselect(
    "Model",
    sorted(runs["model"].unique()),
    key="hist_models",
    persist_state=_state.KEEP,
    placeholder="all models",
)
statuses = c[2].multiselect(
    "Status",
    ["complete", "partial", "failed", "unreadable"],
    key="hist_status",
    placeholder="any status",
    persist_state=_state.KEEP,
)
known = runs["created"].dropna()
first, last = (known.min().date(), known.max().date()) if len(known) else (None, None)
dates = (
    c[3].date_input("Recorded between", (first, last), key="hist_dates", persist_state=_state.KEEP)
    if first
    else None
)
shown = runs
if kinds:
    shown = shown[shown["kind"].isin(kinds)]
if models:
    shown = shown[shown["model"].isin(models)]
if statuses:
    shown = shown[shown["status"].isin(statuses)]
if isinstance(dates, (tuple, list)) and len(dates) == 2:
    day = shown["created"].dt.date
    shown = shown[((day >= dates[0]) & (day <= dates[1])) | shown["created"].isna()]

st.subheader(f"Runs ({len(shown)} of {len(runs)})")
_shared.table(
    shown.assign(created=shown["created"].dt.strftime("%Y-%m-%d %H:%M:%S")), "runs.csv", key="hist_runs_csv"
)

# --- side by side ------------------------------------------------------------------------------------------
st.subheader("Compare compression results")
compressions = [int(i) for i in shown.loc[shown["kind"].isin(COMPRESSION_KINDS), "id"]]
chosen = st.multiselect(
    "Compression runs (two or more)",
    compressions,
    format_func=_label,
    key="hist_compare",
    persist_state=_state.KEEP,
    help="Accuracy, latency per runtime, MACs and size side by side, and the plans diffed layer by layer.",
)
if not compressions:
    st.caption("No compression run among the runs shown.")
elif len(chosen) >= 2:
    with _shared.guard("Comparing the runs"):
        picked = [store.get(i) for i in chosen]
        table = compare_runs(picked)
        plans = {f"#{r.id}": r.result.get("plan") or {} for r in picked}
        diff = plan_diff(plans)
    st.caption(
        "; ".join(
            f"#{i}: {_serving.shown_spec(r['model'])}, {r['created'][:19]}, {r['status']}, "
            f"scored in {r.get('metric', 'accuracy')}"
            for i, r in table.iterrows()
        )
    )
    text = ["model", "created", "status", "metric"]
    side = table.drop(columns=[c for c in text if c in table.columns]).astype(float).T  # one column per run
    side.columns = [f"#{i}" for i in side.columns]
    _shared.table(side.reset_index(names="metric"), "comparison.csv", key="hist_cmp_csv")
    st.markdown("**Plans, layer by layer**")
    only = st.toggle("Only layers that differ", key="hist_only_diff", persist_state=_state.KEEP)
    diff = diff[diff["differs"]] if only else diff
    _shared.table(diff.reset_index(), "plan_diff.csv", key="hist_diff_csv")
else:
    st.caption("Choose two or more compression runs.")

# --- every recorded plan of a model ------------------------------------------------------------------------
st.subheader("Score vs latency of every recorded plan")
models = {r.model for r in infos if r.kind in COMPRESSION_KINDS}
targets = {"this model": fp} | {_serving.shown_spec(m): m for m in sorted(models)}
target = st.selectbox("Model", list(targets), key="hist_scatter_model", persist_state=_state.KEEP)
with _shared.guard("Reading the recorded plans"):
    points = (
        store.compression_table(fingerprint=fp, ids=mine)
        if target == "this model"
        else store.compression_table(model=targets[target], ids=mine)
    )
if points is None:
    st.caption("No compression recorded for it yet.")
else:
    _shared.chart(charts.recorded_plans_scatter(points), key="hist_scatter")

# --- one run -----------------------------------------------------------------------------------------------
st.subheader("One run")
ids = [int(i) for i in shown["id"]]
if not ids:
    st.stop()
run_id = st.selectbox("Run", ids, format_func=_label, key="hist_run", persist_state=_state.KEEP)
with _shared.guard("Reading the run"):
    run = store.get(run_id)
st.markdown(
    f"**#{run.id}** {run.kind} of `{_serving.shown_spec(run.model)}` on `{_serving.shown_spec(str(run.data))}`, "
    f"{run.created}, {run.status}"
    + ("" if run.fingerprint == fp else " (another model or other weights than the one loaded)")
)


def _sweep_form(kind: str, params: dict) -> None:
    """The Sensitivity form as the re-opened sweep had it (its Kind radio included)."""
    spec = get_sweep_kind(kind)  # which field of the form its values go back to
    values = params.get(spec.x_key)
    field = f"sens_{spec.parameter}"
    st.session_state["sens_kind"] = kind
    if values:
        st.session_state[field] = ", ".join(f"{v:g}" for v in values)
    st.session_state["sens_layers"] = list(params.get("layers") or [])
    if params.get("max_drop"):
        st.session_state["sens_early"] = float(params["max_drop"]) * 100


c = st.columns(3)
if run.kind in REOPEN:
    page, title = REOPEN[run.kind]
    other = run.fingerprint != fp
    if c[0].button(
        f"Open in {title}",
        key="hist_open",
        disabled=other,
        help="Load this model and weights in the sidebar first" if other else "Shows it without recomputing",
    ):
        with _shared.guard("Re-opening the run"):
            if run.kind == "sensitivity":
                result = SensitivityResult.from_dict(run.result)
                _shared.keep_result("sensitivity", key, result, run.params)
                _shared.keep_result(f"sensitivity:{result.kind}", key, result, run.params)
                st.session_state["_sens_payload"] = run.result
                st.session_state["_sens_from_run"] = run.id
                _sweep_form(result.kind, run.params)
            else:
                _shared.keep_result("rankings", key, RankingResult.from_dict(run.result), run.params)
                st.session_state["_rank_from_run"] = run.id
        st.switch_page(page)
with c[1]:
    _shared.download(
        "Export (JSON)",
        json.dumps(_shown(run.to_dict()), indent=2, allow_nan=False),
        f"run_{run.id}.json",
        "application/json",
        "hist_export",
    )


def _delete(run_id: int) -> None:
    store.delete(run_id)
    st.session_state.pop("hist_run", None)
    st.session_state["_hist_deleted"] = run_id


if not shared:  # deleting is the operator's, from the command line (`python -m analysis runs delete ID`)
    c[2].button("Delete", key="hist_delete", on_click=_delete, args=(run.id,), type="secondary")
if (gone := st.session_state.pop("_hist_deleted", None)) is not None:
    st.success(f"Run #{gone} deleted.")
with st.expander("Parameters, summary and environment"):
    st.json(_shown({"params": run.params, "summary": run.summary, "environment": run.environment}))
