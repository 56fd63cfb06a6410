"""Recorded runs (issue 16): the results store, offered instead of recomputing, and the one flow the
Rankings and Sensitivity pages share: reuse a recorded run with the same parameters, or run the analysis as a
stoppable job and record it.

```python
FLOW = Flow(kind="ranking", name="rankings", job="rankings", prefix="_rank", what="Ranking the channels",
            from_dict=RankingResult.from_dict, keep=_keep)
outcome = reuse_or_run(FLOW, wb, run=clicked, params=lambda: {...}, label=..., work=..., unit=...)
```
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import streamlit as st

from analysis import ResultsStore, WorkbenchError
from analysis.app_support import Workbench, WorkbenchSpec
from analysis.store import model_fingerprint
from pages import _jobs, _serving, _shared


def where_to_run(spec: WorkbenchSpec) -> dict:
    """The sidebar's device and Ray choices as keyword arguments for the sweep and ranking calls: `device`
    for a local run (None on the CPU, the default path), or `address` for Ray (`local` starts a local
    Ray instance; `auto`, `host:port`, `ray://...` join a cluster)."""
    if spec.ray_address:
        return {"address": None if spec.ray_address == "local" else spec.ray_address}
    return {"device": None if spec.device in ("", "cpu") else spec.device}


MY_RUNS = "_my_run_ids"  # the run ids this browser session recorded


def results_store() -> Any:
    """The results store ($WORKBENCH_DATA_DIR), or None with a warning when it cannot be opened (shared
    mode: the message names no server path)."""
    try:
        return ResultsStore()
    except WorkbenchError as exc:
        st.warning(_shared.plain(f"Runs are not recorded: {_shared.error_text(exc)}"))
        return None


def remember_run(run_id: int | None) -> None:
    """Note a run this browser session recorded: a shared server's History shows only those."""
    if run_id is not None:
        st.session_state.setdefault(MY_RUNS, []).append(int(run_id))


def visible_runs() -> list[int] | None:
    """The run ids History may show: every run locally (None), this session's own on a shared server."""
    return list(st.session_state.get(MY_RUNS, [])) if _serving.shared() else None


def fingerprint(wb: Workbench) -> str:
    """The loaded model's fingerprint (its spec and a hash of its weights), as the results store keys it."""
    return _shared.cached(
        "fingerprint", wb.spec.model_key(), {}, lambda p: model_fingerprint(wb.spec.model, wb.model)
    )


def record_run(kind: str, wb: Workbench, params: dict, payload: dict, status: str = "complete") -> int | None:
    """Record a finished analysis of the loaded model; a failed write warns and keeps the result."""
    store = results_store()
    if store is None:
        return None
    try:
        run_id = store.record(kind, wb.spec.model, wb.spec.data, params, payload, status=status,
                              fingerprint=fingerprint(wb))  # fmt: skip
    except WorkbenchError as exc:
        st.warning(_shared.plain(f"The run was not recorded: {_shared.error_text(exc)}"))
        return None
    remember_run(run_id)
    return run_id


def recorded_run(kind: str, wb: Workbench, params: dict) -> Any:
    """The newest complete recorded run of `kind` on this model, data and parameters, or None."""
    store = results_store()
    run = None if store is None else store.find(kind, fingerprint(wb), params, data=wb.spec.data)
    mine = visible_runs()
    return None if run is None or (mine is not None and run.id not in mine) else run


@dataclasses.dataclass(frozen=True)
class Flow:
    """One analysis a page reuses or runs: `kind` (the results store's), `name` (the session result's), `job`
    (the worker's),
    `prefix` (its session-state keys), `what` (the error heading), `from_dict` (a recorded payload back to a
    result) and `keep(result, params, payload, run_id)` (what the page keeps; `run_id` None: computed now)."""

    kind: str
    name: str
    job: str
    prefix: str
    what: str
    from_dict: Callable[[dict], Any]
    keep: Callable[[Any, dict, dict, int | None], None]

    @property
    def job_params(self) -> str:
        return f"{self.prefix}_job_params"  # the parameters of the run in the worker

    @property
    def force(self) -> str:
        return f"{self.prefix}_force"

    @property
    def from_run(self) -> str:
        return f"{self.prefix}_from_run"  # the recorded run the shown result came from


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A run that finished in this script run: its result, whether Stop was pressed, whether it is partial."""

    result: Any
    stopped: bool
    partial: bool


def reuse_or_run(
    flow: Flow,
    wb: Workbench,
    run: bool,
    params: Callable[[], dict],
    label: Callable[[dict], str],
    work: Callable[[dict, dict], Callable],
    unit: Callable[[dict, dict], str],
) -> Outcome | None:
    """On `run` (the button) or Recompute: show the newest recorded run with the same parameters if there is
    one (not on Recompute), else start `work(params, where)` as a stoppable job; a job running after a Stop
    or a page switch is picked up again. The finished run is recorded (partial when stopped) and kept."""
    force = st.session_state.pop(flow.force, False)
    if run or force:
        with _shared.guard(flow.what):
            chosen = params() if run else _shared.result_params(flow.name)
            found = None if force else recorded_run(flow.kind, wb, chosen)
            if found is not None:
                flow.keep(flow.from_dict(found.result), chosen, found.result, found.id)
        st.session_state[flow.from_run] = None if found is None else found.id
        if found is None:
            st.session_state[flow.job_params] = chosen
    if flow.job_params not in st.session_state:
        return None
    chosen = st.session_state[flow.job_params]
    with _shared.guard(flow.what):
        try:
            where = where_to_run(wb.spec)
            result, stopped = _jobs.run_stoppable(
                label(chosen), flow.job, work(chosen, where), unit=unit(chosen, where)
            )
        except Exception:
            st.session_state.pop(flow.job_params, None)  # not on a rerun (BaseException): the job goes on
            raise
    st.session_state.pop(flow.job_params, None)
    partial = bool(getattr(result, "partial", False))
    payload = result.to_dict()
    record_run(flow.kind, wb, chosen, payload, "partial" if partial else "complete")
    flow.keep(result, chosen, payload, None)
    st.session_state[flow.from_run] = None
    return Outcome(result, stopped, partial)


def recorded_notice(flow: Flow, instead_of: str) -> None:
    """Say that the shown result is a recorded run, with a Recompute button (runs it again, records it)."""
    run_id = st.session_state.get(flow.from_run)
    if run_id is None:
        return
    c = st.columns([4, 1])
    c[0].info(
        f"Recorded run #{run_id} had these parameters for this model and data: it is shown instead of "
        f"{instead_of} again."
    )
    c[1].button("Recompute", on_click=lambda: st.session_state.__setitem__(flow.force, True),
                key=f"{flow.prefix}_recompute")  # fmt: skip
