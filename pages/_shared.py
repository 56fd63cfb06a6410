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
import runpy
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis import (
    DEFAULT_BATCH_SIZE,
    RunTimer,
    ServeMode,
    UploadStore,
    Workbench,
    WorkbenchError,
    WorkbenchSpec,
    check_data_spec,
    check_model_spec,
    first_line,
    load_workbench,
    parse_mode,
    public_message,
    purge_older_than,
    serve_mode,
    strip_paths,
)

SPEC_KEY = "_workbench_spec"
APP_PATH = Path(__file__).resolve().parents[1] / "app.py"
UPLOAD_MAX_AGE_S = (
    24 * 3600
)  # uploads of sessions that ended without closing (a killed server) go after a day
_ROUTER = threading.local()  # per script-run thread: whether app.py's router is running this page


# --- Every entry point goes through app.py -----------------------------------------------------------------
# On a fresh server, the first visit to a non-root path (a bookmark, a tab left open across a restart) runs
# the page file directly: Streamlit sees the `pages/` folder and uses its automatic multipage mode until
# `st.navigation` has run once. `routed()`, the first call of every page, then runs app.py (its router
# draws the sidebar, sends the real navigation and runs this page inside it) and stops the direct run.


@contextlib.contextmanager
def routing() -> Iterator[None]:
    """app.py runs the chosen page inside this."""
    before = getattr(_ROUTER, "active", False)
    _ROUTER.active = True
    try:
        yield
    finally:
        _ROUTER.active = before


def routed() -> None:
    """Call first in every page: when the page was run without app.py, run app.py instead and stop.

    `workbench()` calls it too, so a page that draws only its title before `workbench()` is covered: the
    router's run starts again at the top of the page (its elements replace the title already drawn)."""
    if getattr(_ROUTER, "active", False):
        return
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is not None:
        ctx.cursors.clear()  # write from the top again: the router's elements replace this run's so far
    runpy.run_path(str(APP_PATH), run_name="__main__")
    st.stop()


# --- Local or shared serving (analysis.policy) --------------------------------------------------------------


def mode() -> ServeMode:
    """The serving mode the operator set on the server: `WORKBENCH_MODE`, else `mode` in st.secrets.
    Never anything the browser sends."""
    env = serve_mode()
    if env is ServeMode.SHARED:
        return env
    try:
        if st.secrets.load_if_toml_exists():
            return parse_mode(str(st.secrets.get("mode", "")))
    except WorkbenchError:
        raise
    except Exception:  # an unreadable secrets file: the environment's setting stands
        pass
    return env


def shared() -> bool:
    return mode() is ServeMode.SHARED


def shown_spec(text: str) -> str:
    """A model or data spec as the page may show it: a shared server cuts server paths to their last part
    (an upload's content hash)."""
    return strip_paths(text) if shared() else text


class _SessionUploads:
    """Holds a session's UploadStore; the store's folder is removed when Streamlit drops the session state
    (the session ended) -- Streamlit has no session-end hook, so a weakref finalizer does it."""

    def __init__(self) -> None:
        self.store = UploadStore()
        self.paths: dict[str, str] = {}  # uploaded file id -> stored path
        weakref.finalize(self, self.store.close)


_last_purge = [0.0]


def purge_stale_uploads() -> None:
    """Remove upload folders of sessions left behind (a server that stopped without closing them); at most
    every 10 minutes per server process (app.py calls it on each run)."""
    now = time.time()
    if now - _last_purge[0] > 600:
        _last_purge[0] = now
        with contextlib.suppress(OSError):
            purge_older_than(UPLOAD_MAX_AGE_S)


def uploads() -> UploadStore:
    """This session's private upload folder (0700, content-hashed 0600 files, size limit)."""
    purge_stale_uploads()
    holder = st.session_state.get("_uploads_store")
    if not isinstance(holder, _SessionUploads) or not holder.store.dir.is_dir():
        holder = _SessionUploads()
        st.session_state["_uploads_store"] = holder
    return holder.store


def stored(upload: Any) -> str | None:
    """The path of an uploaded file in this session's store (saved once per upload; its content hash is
    checked again on every reuse). A bad name or an oversized file raises WorkbenchError."""
    if upload is None:
        return None
    store = uploads()
    holder: _SessionUploads = st.session_state["_uploads_store"]
    path = holder.paths.get(upload.file_id)
    if path is None or not store.verify(path):
        path = str(store.save(upload.name, upload.getvalue()))
        holder.paths[upload.file_id] = path
    return path


def check_spec(spec: WorkbenchSpec) -> None:
    """WorkbenchError if the serving mode does not allow what `spec` names (local mode allows all)."""
    current = mode()
    if current is ServeMode.LOCAL:
        return
    folder = uploads().dir
    check_model_spec(spec.model, current, spec.weights, spec.trust_pickle, upload_dir=folder)
    check_data_spec(spec.data, current, upload_dir=folder)
    if spec.ray_address:
        raise WorkbenchError("this server is shared: it cannot connect to a Ray cluster named by a user")


# --- Errors as text ------------------------------------------------------------------------------------------

# `plain(text)` (further down, with the other page helpers) escapes Markdown: errors are shown as text.


def show_error(text: str, where: Any = None) -> None:
    """An error box showing `text` as written (not as Markdown)."""
    (where or st).error(plain(text))


def error_text(exc: BaseException, what: str | None = None) -> str:
    """The one line a user sees for `exc` (shared mode: no server paths, nothing internal)."""
    if isinstance(exc, WorkbenchError) or shared():
        return public_message(exc, mode())
    return f"{what} failed: {type(exc).__name__}: {first_line(exc)}" if what else public_message(exc, mode())


# --- Timing --------------------------------------------------------------------------------------------------


def waiting_notice(where: Any = None) -> tuple[Any, Callable[[], None]]:
    """A placeholder and an `on_wait()` callback for measure_latency/compare_latency/layer_times: shows
    "waiting for another measurement" while another session holds the process-wide timing lock.
    Runs in the context it was made in (see `progress_bar`), so cached functions may call it."""
    slot = (where or st).empty()
    outer = contextvars.copy_context()

    def on_wait() -> None:
        outer.run(slot.info, "Waiting for another measurement to finish (one timing at a time per server)...")

    return slot, on_wait


def latency_line(result: Any, runtime: str | None = None) -> str:
    """Runtime, batch size, threads, device and spread of a LatencyResult, in one line."""
    name = runtime or getattr(result, "runtime", None) or "eager"
    version = getattr(result, "runtime_version", "") or ""
    device = getattr(result, "device", None) or getattr(result, "provider", None) or "cpu"
    return (
        f"{name} {version}".strip() + f", batch {result.batch_size}, {result.threads} threads, {device}, "
        f"median {result.median_ms:.2f} ms (p10 {result.p10_ms:.2f}, p90 {result.p90_ms:.2f}, "
        f"p90/p10 {result.spread:.2f}), {result.kind}"
    )


def latency_warning(result: Any, where: Any = None) -> None:
    """A warning box when the timing was noisy (p90/p10 above 1.5)."""
    if getattr(result, "noisy", False) and result.warning:
        (where or st).warning(plain(result.warning))


# --- Form state you keep -------------------------------------------------------------------------------------
# Streamlit drops a widget's value from st.session_state after a run in which the widget was not drawn
# (another page, or a page that stopped early on a bad spec). `keep(*keys)` copies each widget key to a
# shadow key on every run and puts the value back before the widget is drawn again. Call it before drawing
# the widgets; values go when the model changes (`forget_on_model_change`).

_SHADOW = "_kept_"


def keep(*keys: str) -> None:
    """Keep the values of widgets `keys` across pages and failed runs (call before drawing them).

    The keys are remembered: app.py calls `keep_all()` on every run, whichever page it shows, so a value
    changed just before leaving a page is kept too."""
    registry = st.session_state.setdefault("_kept_keys", [])
    for key in keys:
        if key not in registry:
            registry.append(key)
        shadow = _SHADOW + key
        if key in st.session_state:
            st.session_state[shadow] = st.session_state[key]
        elif shadow in st.session_state:
            st.session_state[key] = st.session_state[shadow]


def keep_all() -> None:
    """`keep` every key any page has asked to keep in this session (app.py, before the page runs)."""
    keep(*st.session_state.get("_kept_keys", []))


def persist(key: str) -> str:
    """`keep(key)` and return `key`, for `st.slider(..., key=persist("ratio"))`."""
    keep(key)
    return key


def forget_on_model_change(model_key: str, keys_prefix: tuple[str, ...] = ()) -> None:
    """Drop kept page values (not the sidebar's) when a different model has loaded (`workbench()` calls
    this after each successful load, so a bad spec on the way keeps them); `keys_prefix` limits which."""
    last = st.session_state.get("_kept_model")
    if last is not None and last != model_key:
        for shadow in [k for k in st.session_state if isinstance(k, str) and k.startswith(_SHADOW)]:
            key = shadow.removeprefix(_SHADOW)
            if key in SIDEBAR_KEYS or (keys_prefix and not key.startswith(keys_prefix)):
                continue
            del st.session_state[shadow]
            st.session_state.pop(key, None)
    st.session_state["_kept_model"] = model_key


SIDEBAR_KEYS = (
    "model_source",
    "zoo_name",
    "callable_spec",
    "tv_name",
    "arch_name",
    "trust_pickle",
    "input_shape",
    "data_source",
    "data_spec",
    "threads",
    "batch_size",
    "runtime",
    "device",
    "ray_address",
)
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


@st.cache_resource(max_entries=4, show_spinner="Loading the model and data...")
def _load(spec: WorkbenchSpec) -> Workbench:
    return load_workbench(spec)


def load(spec: WorkbenchSpec) -> Workbench:
    """The cached model and data of `spec` (batch size and threads do not reload them); a bad spec raises
    WorkbenchError."""
    base = dataclasses.replace(
        spec, batch_size=DEFAULT_BATCH_SIZE, threads=None, runtime="eager", device="cpu", ray_address=""
    )
    loaded = _load(base)
    return dataclasses.replace(loaded, spec=spec)


def workbench() -> Workbench:
    """The model and data chosen in the sidebar (app.py stores the spec before running the page)."""
    routed()
    spec = st.session_state.get(SPEC_KEY) or WorkbenchSpec()
    with guard("Loading the model"):
        check_spec(spec)
        loaded = load(spec)
    # Page values kept by `keep` go with the model, not with a bad spec tried on the way.
    forget_on_model_change(spec.model_key())
    return loaded


@contextlib.contextmanager
def guard(what: str = "This step") -> Iterator[None]:
    """Show any error raised inside as a message in the page and stop the page there, never a crash."""
    try:
        yield
    except WorkbenchError as exc:
        show_error(error_text(exc))
        st.stop()
    except Exception as exc:  # a library bug or an odd model: say what failed, keep the app alive
        show_error(error_text(exc, what))
        if not shared():  # a traceback names server paths: only for the person running the server
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
    """`keep(key)` with a first value: the widget keeps its value across page switches (create it without
    a default value)."""
    keep(key)
    st.session_state.setdefault(key, default)


def where_to_run(spec: WorkbenchSpec) -> dict:
    """The sidebar's device and Ray choices as keyword arguments for the sweep and ranking calls: `device`
    for a local run (None on the CPU, the default path), or `address` for Ray (`local` starts a local
    Ray instance; `auto`, `host:port`, `ray://...` join a cluster)."""
    if spec.ray_address:
        return {"address": None if spec.ray_address == "local" else spec.ray_address}
    return {"device": None if spec.device in ("", "cpu") else spec.device}


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
