"""Long work you can stop: a worker thread, a progress bar with time left, and a Stop button.

Not a page (st.navigation lists the pages explicitly); `pages._shared` re-exports every name here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import streamlit as st

from analysis.progress import RunTimer

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
    unit: str | None = "",
) -> tuple[Any, bool]:
    """Run `work(progress, should_stop)` with a progress bar (elapsed time and time left) and a Stop button;
    return `(result, stopped)` once it has finished. `work` must return what it finished when
    `should_stop()` turns true (the library's sweeps, rankings and schedules do). Errors raised by `work`
    are raised here (inside `guard`, they become a message). `on_tick()` is called in each polling
    iteration and once at the end, so the page can redraw a live chart from records the work appends to a
    thread-safe list. The bar reads "`done` of `total` `unit`" (the units the work counts in, e.g.
    "evaluations (groups x ratios)"), or a percentage when `unit` is None (work counted in mixed units)."""
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
    stop_slot = st.empty()  # the Stop button goes away with the bar once the work has returned
    if stop_slot.button(
        "Stop", key=f"_stop_{key}", help="End at the next layer or step and keep what finished"
    ):
        job.stop.set()
    while job.thread.is_alive():
        frac = min(max(job.done / job.total, 0.0), 1.0) if job.total else 0.0
        state = "stopping at the next unit" if job.stop.is_set() else job.timer.describe()
        count = (
            f"{frac:.0%}" if unit is None else f"{job.done:,} of {job.total:,}{' ' + unit if unit else ''}"
        )
        bar.progress(frac, text=f"{label}: {count} ({state})")
        if on_tick is not None:
            on_tick()
        time.sleep(0.2)
    bar.empty()
    stop_slot.empty()
    if on_tick is not None:
        on_tick()
    jobs.pop(key, None)
    if job.error is not None:
        raise job.error
    return job.result, job.stop.is_set()
