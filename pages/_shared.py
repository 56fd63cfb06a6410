"""Streamlit glue the pages share: the cached model, cached analyses, errors, progress, charts, downloads.

Not a page (st.navigation lists the pages explicitly). The one place that knows about caching:
- the model and data: `st.cache_resource`, keyed by the `WorkbenchSpec` (strings and file digests),
  shared by every session, so nobody may modify them (library calls copy before changing weights);
- analyses: `st.cache_data`, keyed by the analysis name, the spec's key and the parameters as JSON; the
  model itself is never hashed.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import streamlit as st

from analysis import (
    DEFAULT_BATCH_SIZE,
    RunTimer,
    Workbench,
    WorkbenchError,
    WorkbenchSpec,
    first_line,
    load_workbench,
)

SPEC_KEY = "_workbench_spec"
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


@st.cache_resource(max_entries=4, show_spinner="Loading the model and data...")
def _load(spec: WorkbenchSpec) -> Workbench:
    return load_workbench(spec)


def load(spec: WorkbenchSpec) -> Workbench:
    """The cached model and data of `spec` (batch size and threads do not reload them); a bad spec raises
    WorkbenchError."""
    loaded = _load(dataclasses.replace(spec, batch_size=DEFAULT_BATCH_SIZE, threads=None))
    return dataclasses.replace(loaded, spec=spec)


def workbench() -> Workbench:
    """The model and data chosen in the sidebar (app.py stores the spec before running the page)."""
    spec = st.session_state.get(SPEC_KEY) or WorkbenchSpec()
    with guard("Loading the model"):
        return load(spec)


@contextlib.contextmanager
def guard(what: str = "This step") -> Iterator[None]:
    """Show any error raised inside as a message in the page and stop the page there, never a crash."""
    try:
        yield
    except WorkbenchError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # a library bug or an odd model: say what failed, keep the app alive
        st.error(f"{what} failed: {type(exc).__name__}: {first_line(exc)}")
        with st.expander("Traceback"):
            st.code("".join(traceback.format_exception(exc)), language="text")
        st.stop()


def progress_bar(label: str) -> tuple[Any, Callable[[int, int], None]]:
    """A progress bar and a `progress(done, total)` callback for library calls.

    Updates run in the context the bar was made in, so a cached function calling back does not record
    them as part of its cached output (they would replay, or fail to, on the next cache hit).
    """
    bar = st.progress(0.0, text=label)
    outer = contextvars.copy_context()
    last = [0.0, -1.0]

    def update(done: int, total: int) -> None:
        frac = min(max(done / total, 0.0), 1.0) if total else 1.0
        now = time.perf_counter()
        if frac >= 1.0 or frac - last[1] >= 0.01 and now - last[0] >= 0.1:
            last[:] = [now, frac]
            outer.run(bar.progress, frac, text=f"{label}: {done:,} of {total:,}")

    return bar, update


@st.cache_data(show_spinner=False, max_entries=64, max_size="1GiB")  # compressed models can be large
def _cached(name: str, key: str, params: str, _call: Callable, _progress: Callable | None) -> Any:
    return _call(_progress)


def cached(
    name: str, key: str, params: dict, call: Callable[[Callable | None], Any], progress: str | None = None
) -> Any:
    """`call(progress_callback)`, cached by (`name`, `key`, `params`): `key` names the model (a
    WorkbenchSpec key), `params` everything else the result depends on. A progress bar shows while it
    runs when `progress` gives its label."""
    text = json.dumps(params, sort_keys=True, default=str)
    if progress is None:
        return _cached(name, key, text, call, None)
    bar, update = progress_bar(progress)
    try:
        return _cached(name, key, text, call, update)
    finally:
        bar.empty()


def chart(fig: Any, key: str) -> None:
    """A plotly chart; its modebar downloads it as PNG named after `key`."""
    config = {
        **PLOTLY_CONFIG,
        "toImageButtonOptions": {**PLOTLY_CONFIG["toImageButtonOptions"], "filename": key},
    }
    st.plotly_chart(fig, key=key, config=config)


def table(frame: pd.DataFrame, file_name: str, key: str, **kwargs: Any) -> None:
    """A table and a button that downloads it as CSV (no rerun on click)."""
    st.dataframe(frame, hide_index=True, **kwargs)
    download(f"Download {file_name}", frame.to_csv(index=False), file_name, "text/csv", key)


def download(label: str, data: str | bytes, file_name: str, mime: str, key: str) -> None:
    st.download_button(label, data, file_name=file_name, mime=mime, key=key, on_click="ignore")


def layer_picker(
    label: str, options: list[str], key: str, default: list[str] | None = None, help: str | None = None
) -> list[str]:
    """A multiselect of layer names that keeps its choice across pages and drops names the model lacks."""
    chosen = st.session_state.get(key)
    if chosen is not None and any(name not in options for name in chosen):
        st.session_state[key] = [name for name in chosen if name in options]
    if key not in st.session_state:
        st.session_state[key] = list(options if default is None else default)
    return st.multiselect(label, options, key=key, help=help)


def session_result(name: str, spec_key: str) -> Any:
    """The last result of analysis `name` this session ran on the model `spec_key`, or None."""
    entry = st.session_state.get(f"_result_{name}")
    return entry["result"] if entry and entry["key"] == spec_key else None


def keep_result(name: str, spec_key: str, result: Any, params: dict | None = None) -> None:
    st.session_state[f"_result_{name}"] = {"key": spec_key, "result": result, "params": params or {}}


def result_params(name: str) -> dict:
    entry = st.session_state.get(f"_result_{name}")
    return entry["params"] if entry else {}


def compression_metrics(result: Any) -> None:
    """Before -> after of a CompressionResult as a row of metrics with their changes."""
    b, a = result.before, result.after
    c = st.columns(5)
    c[0].metric("Accuracy", f"{a.accuracy:.2%}", f"{result.accuracy_delta * 100:+.2f} points")
    c[1].metric(
        f"Latency ({a.latency_label})",
        f"{a.latency_ms:.2f} ms",
        f"{result.speedup:.2f}x speedup",
        delta_color="off",
        help=f"before {b.latency_ms:.2f} ms; batch {result.batch_size}, {result.threads} threads",
    )
    c[2].metric("Params", f"{a.params:,}", f"{a.params - b.params:+,}", delta_color="inverse")
    c[3].metric("MACs", f"{a.macs / 1e6:.2f} M", f"{result.mac_reduction:.2f}x fewer", delta_color="off")
    kib = (a.size_bytes - b.size_bytes) / 1024
    c[4].metric("Size", f"{a.size_bytes / 1024:.1f} KiB", f"{kib:+.1f} KiB", delta_color="inverse")


# --- Long work you can stop -------------------------------------------------------------------------------
# The work runs in a worker thread (it never calls streamlit); the page polls it. A click on Stop reruns the
# script, which interrupts the polling run; the next run finds the job in the session, sets its stop event
# and polls on until the work returns what it finished. Navigating away leaves the job running; coming back
# picks it up again.


@dataclasses.dataclass
class Job:
    """A long analysis running in a worker thread: its progress, and how it ended."""

    thread: threading.Thread
    stop: threading.Event
    timer: RunTimer
    done: int = 0
    total: int = 0
    result: Any = None
    error: BaseException | None = None


def _jobs() -> dict[str, Job]:
    return st.session_state.setdefault("_jobs", {})


def job_running(key: str) -> bool:
    """Whether a stoppable job `key` of this session is still to be collected (so the page calls
    `run_stoppable` again on a rerun, e.g. after Stop was clicked, instead of waiting for its button)."""
    return key in _jobs()


def run_stoppable(
    label: str,
    key: str,
    work: Callable[[Callable[[int, int], None], Callable[[], bool]], Any],
    on_tick: Callable[[], None] | None = None,
) -> tuple[Any, bool]:
    """Run `work(progress, should_stop)` with a progress bar (elapsed time and time left) and a Stop button;
    return `(result, stopped)` once it has finished. `work` must return what it finished when
    `should_stop()` turns true (the library's sweeps, rankings and schedules do). Errors raised by `work`
    are raised here (inside `guard`, they become a message). `on_tick()` is called in each polling
    iteration and once at the end, so the page can redraw a live chart from records the work appends to a
    thread-safe list."""
    jobs = _jobs()
    job = jobs.get(key)
    if job is None:
        stop, timer = threading.Event(), RunTimer()
        job = Job(thread=None, stop=stop, timer=timer)  # type: ignore[arg-type]

        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            timer.update(done, total)

        def target() -> None:
            try:
                job.result = work(progress, stop.is_set)
            except BaseException as exc:  # handed to the page, which shows it
                job.error = exc

        job.thread = threading.Thread(target=target, name=f"workbench-{key}", daemon=True)
        jobs[key] = job
        job.thread.start()
    bar = st.progress(0.0, text=label)
    if st.button("Stop", key=f"_stop_{key}", help="End at the next layer or step and keep what finished"):
        job.stop.set()
    while job.thread.is_alive():
        frac = min(max(job.done / job.total, 0.0), 1.0) if job.total else 0.0
        state = "stopping at the next unit" if job.stop.is_set() else job.timer.describe()
        bar.progress(frac, text=f"{label}: {job.done:,} of {job.total:,} ({state})")
        if on_tick is not None:
            on_tick()
        time.sleep(0.2)
    bar.empty()
    if on_tick is not None:
        on_tick()
    jobs.pop(key, None)
    if job.error is not None:
        raise job.error
    return job.result, job.stop.is_set()


# --- Recorded runs (issue 16): the results store, offered instead of recomputing -------------------------


def sticky(key: str, default: Any) -> None:
    """Keep widget `key`'s value across page switches (Streamlit drops a widget's state when its page is
    not shown): call before the widget, and create the widget without a default value."""
    shadow = f"_sticky::{key}"
    if key in st.session_state:
        st.session_state[shadow] = st.session_state[key]
    else:
        st.session_state[key] = st.session_state.get(shadow, default)


def results_store() -> Any:
    """The results store ($WORKBENCH_DATA_DIR), or None with a warning when it cannot be opened."""
    from analysis import ResultsStore

    try:
        return ResultsStore()
    except WorkbenchError as exc:
        st.warning(f"Runs are not recorded: {exc}")
        return None


def fingerprint(wb: Workbench) -> str:
    """The loaded model's fingerprint (its spec and a hash of its weights), as the results store keys it."""
    from analysis import model_fingerprint

    return cached(
        "fingerprint", wb.spec.model_key(), {}, lambda p: model_fingerprint(wb.spec.model, wb.model)
    )


def record_run(kind: str, wb: Workbench, params: dict, payload: dict, status: str = "complete") -> int | None:
    """Record a finished analysis of the loaded model; a failed write warns and keeps the result."""
    store = results_store()
    if store is None:
        return None
    try:
        return store.record(kind, wb.spec.model, wb.spec.data, params, payload, status=status,
                            fingerprint=fingerprint(wb))  # fmt: skip
    except WorkbenchError as exc:
        st.warning(f"The run was not recorded: {exc}")
        return None


def recorded_run(kind: str, wb: Workbench, params: dict) -> Any:
    """The newest complete recorded run of `kind` on this model, data and parameters, or None."""
    store = results_store()
    return None if store is None else store.find(kind, fingerprint(wb), params, data=wb.spec.data)


def sweep_from_dict(payload: dict) -> Any:
    """A recorded sweep as a `SensitivityResult` (also for kinds its `from_dict` does not know yet)."""
    from analysis import SensitivityCurve, SensitivityResult

    try:
        return SensitivityResult.from_dict(payload)
    except WorkbenchError:
        if payload.get("kind") not in ("lowrank", "share"):
            raise
    key = "bits" if "bits" in next(iter(payload["layers"].values()), {}) else "ratios"
    layers = {
        name: SensitivityCurve(tuple(map(float, e[key])), tuple(e["accuracy"]), tuple(e["loss"]))
        for name, e in payload["layers"].items()
    }
    return SensitivityResult(
        kind=payload["kind"], baseline_accuracy=float(payload["baseline"]["accuracy"]),
        baseline_loss=float(payload["baseline"]["loss"]), seconds=float(payload["seconds"]), layers=layers,
        notes=tuple(payload.get("notes", ())), samples=int(payload.get("samples", 0)),
    )  # fmt: skip


def accepts(function: Callable, parameter: str) -> bool:
    """Whether `function` takes `parameter` (a library call gains `should_stop` in some branches first)."""
    import inspect

    try:
        return parameter in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


# --- Appended by the Compress page's helper: text as text, a ticking stoppable run ------------------------

_MARKDOWN_SPECIALS = "\\`*_{}[]()#+-.!|~<>$:"


def plain(text: str) -> str:
    """`text` escaped so st.error/st.warning/st.markdown show it as written (an error naming
    `Linear.__init__()` keeps its underscores; no link, emoji or LaTeX is made of it)."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIALS else c for c in str(text))
