"""Streamlit glue the pages share: the cached model, cached analyses, errors, progress, charts, downloads.

Not a page (st.navigation lists the pages explicitly). The one place that knows about caching:
- the model and data: `st.cache_resource`, keyed by the `WorkbenchSpec` (strings and file digests),
  shared by every session, so nobody may modify them (library calls copy before changing weights);
- analyses: `st.cache_data`, keyed by the analysis name, the spec's key and the parameters as JSON; the
  model itself is never hashed.

The other page modules, imported directly by the pages: serving mode and uploads in `_serving.py`, kept
form values in `_state.py`, stoppable work in `_jobs.py`, the page router in `_routing.py`, and recorded runs
(reuse one, or run and record) in `_records.py`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import streamlit as st

from analysis import WorkbenchError
from analysis.app_support import Workbench, WorkbenchSpec, load_workbench, public_message
from analysis.errors import first_line
from analysis.latency import DEFAULT_BATCH_SIZE, NOISY_SPREAD
from pages._routing import routed
from pages._serving import check_spec, mode, shared
from pages._state import forget_on_model_change, kept

SPEC_KEY = "_workbench_spec"


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


def ms(median: float, p10: float, p90: float) -> str:
    """A latency as shown: its median (`2.17 ms`), or its p10-p90 range when the spread makes one number a
    guess (`2.1-22.8 ms`, three significant digits so it fits a metric: a noisy timing reads as one in the
    number itself)."""
    if p10 > 0 and p90 / p10 > NOISY_SPREAD:
        return f"{p10:.3g}-{p90:.3g} ms"
    return f"{median:.2f} ms"


def latency_warning(result: Any, where: Any = None) -> None:
    """A warning box when the timing was noisy (p90/p10 above 1.5)."""
    if getattr(result, "noisy", False) and result.warning:
        (where or st).warning(plain(result.warning))


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
    info = metric_info(loaded)  # every page names the metric its scores are in (auto made concrete)
    better = "higher" if info.higher_is_better else "lower"
    against = "labels" if info.needs_labels else "the original model's outputs"
    st.sidebar.caption(f"Scores: {info.name} ({info.title}, {better} is better), against {against}.")
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
    """A table and a button that downloads it as CSV (no rerun on click). Accuracy columns (fractions)
    show as percentages (99.72%); the CSV keeps the fractions."""
    percent = {c: st.column_config.NumberColumn(format="percent") for c in frame.columns
               if str(c).startswith("accuracy") and pd.api.types.is_float_dtype(frame[c])}  # fmt: skip
    kwargs["column_config"] = percent | kwargs.get("column_config", {})
    st.dataframe(frame, hide_index=True, **kwargs)
    download(f"Download {file_name}", frame.to_csv(index=False), file_name, "text/csv", key)


def download(label: str, data: str | bytes, file_name: str, mime: str, key: str, where: Any = None) -> None:
    (where or st).download_button(label, data, file_name=file_name, mime=mime, key=key, on_click="ignore")


def built_download(label: str, build: Callable[[], tuple[bytes, str]], file_name: str, key: str,
                   where: Any = None) -> None:  # fmt: skip
    """A button that makes a file when pressed, in this run: then its download button and the line `build`
    returns saying what the file holds, or why it could not be made (one line, safe in shared mode). The
    file stays until another `key` is used (a new result: put its number in `key`)."""
    where = where or st
    slot = f"_built::{key}"
    if where.button(label, key=f"build::{key}", width="stretch"):
        try:
            with where, st.spinner(f"Making {file_name}..."):
                data, what = build()
            st.session_state[slot] = {"data": data, "what": what}
        except Exception as exc:  # the page goes on; the error is the file's, said where it was asked for
            st.session_state[slot] = {"error": error_text(exc, f"Making {file_name}")}
    built = st.session_state.get(slot)
    if built is None:
        return
    if "error" in built:
        show_error(built["error"], where)
        return
    download(
        f"Download {file_name}", built["data"], file_name, "application/octet-stream", f"dl::{key}", where
    )
    where.caption(plain(built["what"]))


def forget_built(prefix: str) -> None:
    """Drop the files `built_download` made under keys starting with `prefix` (they belong to a result
    that is gone)."""
    for k in [k for k in st.session_state if isinstance(k, str) and k.startswith(f"_built::{prefix}")]:
        del st.session_state[k]


def layer_picker(
    label: str, options: list[str], key: str, default: list[str] | None = None, help: str | None = None
) -> list[str]:
    """A multiselect of layer names that keeps its choice across pages and drops names the model lacks."""
    chosen = st.session_state.get(key)
    if chosen is not None and any(name not in options for name in chosen):
        st.session_state[key] = [name for name in chosen if name in options]
    return st.multiselect(
        label, options, help=help, **kept(key, list(options if default is None else default))
    )


def session_result(name: str, spec_key: str) -> Any:
    """The last result of analysis `name` this session ran on the model `spec_key`, or None."""
    entry = st.session_state.get(f"_result_{name}")
    return entry["result"] if entry and entry["key"] == spec_key else None


def keep_result(name: str, spec_key: str, result: Any, params: dict | None = None) -> None:
    st.session_state[f"_result_{name}"] = {"key": spec_key, "result": result, "params": params or {}}


def result_params(name: str) -> dict:
    entry = st.session_state.get(f"_result_{name}")
    return entry["params"] if entry else {}


def metric_info(wb: Workbench) -> Any:
    """The sidebar's metric resolved for the loaded model and data (`auto` made concrete): its name,
    direction, unit; a bad metric stops the page with one line."""
    from analysis.metrics import scoring

    with guard("Choosing the metric"):
        return cached(
            "metric_info", wb.spec.model_key(), {"metric": wb.spec.metric},
            lambda p: scoring(wb.spec.metric, wb.model, wb.data).info,
        )  # fmt: skip


def drop_scale(info: Any) -> float:
    """Form values of drops are in points for fractions (accuracy: 1 point = 0.01), in the unit otherwise."""
    return 100.0 if info.percent else 1.0


def compression_metrics(result: Any) -> None:
    """Before -> after of a CompressionResult as a row of metrics with their changes."""
    b, a = result.before, result.after
    # the latency column is wider: a noisy timing shows its p10-p90 range, which must not be cut off
    c = st.columns([1, 1.35, 1, 0.85, 1])
    score = result.metric
    if score.percent:
        c[0].metric(score.title, f"{a.accuracy:.2%}", f"{result.accuracy_delta * 100:+.2f} points",
                    delta_color="normal" if score.higher_is_better else "inverse")  # fmt: skip
    else:
        c[0].metric(score.title, score.format(a.accuracy), f"{result.accuracy_delta:+.4g} {score.unit}".strip(),
                    delta_color="normal" if score.higher_is_better else "inverse")  # fmt: skip
    c[1].metric(
        f"Latency ({a.latency_label})",
        ms(a.latency_ms, a.latency_p10_ms, a.latency_p90_ms),
        f"{result.speedup:.2f}x speedup",
        delta_color="off",
        delta_arrow="up" if result.speedup >= 1 else "down",
        help=f"before {ms(b.latency_ms, b.latency_p10_ms, b.latency_p90_ms)}; batch {result.batch_size}, "
        f"{result.threads} threads; both from the same alternating run",
    )
    # Reductions point down; an unchanged count shows no arrow (not a red "+0").
    c[2].metric("Params", f"{a.params:,}", f"{a.params - b.params:+,}" if a.params != b.params else None,
                delta_color="inverse")  # fmt: skip
    fewer = f"{result.mac_reduction:.2f}x fewer" if a.macs != b.macs else None
    c[3].metric("MACs", f"{a.macs / 1e6:.2f} M", fewer, delta_color="off", delta_arrow="down")
    kib = (a.size_bytes - b.size_bytes) / 1024
    c[4].metric(
        "Size", f"{a.size_bytes / 1024:.1f} KiB", f"{kib:+.1f} KiB" if kib else None, delta_color="inverse"
    )


# --- Text as text ---------------------------------------------------------------------------------------------

_MARKDOWN_SPECIALS = "\\`*_{}[]()#+-.!|~<>$:"


def plain(text: str) -> str:
    """`text` escaped so st.error/st.warning/st.markdown show it as written (an error naming
    `Linear.__init__()` keeps its underscores; no link, emoji or LaTeX is made of it)."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIALS else c for c in str(text))


def breakable(name: str) -> str:
    """A dotted layer name as Markdown text that wraps at its dots (`features.1.conv.0`), never mid-word."""
    return plain(name).replace("\\.", "\\.\u200b")
