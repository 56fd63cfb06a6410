"""The one progress type every long loop takes, and the terminal bar the CLI draws with it.

A loop calls `progress(done, total)` after each unit of work; `None` means nobody is watching. `eta.py`:
elapsed time and time left (`RunTimer`), Ctrl-C as Stop (`sigint_stops`), exported here too.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Progress = Callable[[int, int], None]
"""`progress(done, total)`: called after each unit of work (both counts in the loop's own units)."""


class Forward:
    """One progress stream in the units the user counts (evaluations = layers x ratios, channels, steps),
    fed by parts that each count in their own units, that only moves forward. `part(offset, count)` is the
    `Progress` of a part worth `count` units after `offset`: its `(done, total)` becomes `offset + count x
    done / total` (rounded down). A unit skipped (an early stop) counts as done."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, max(int(total), 0), -1

    def report(self, done: int) -> None:
        done = min(int(done), self.total)
        if self.progress is not None and done > self.done:
            self.done = done
            self.progress(done, self.total)

    def part(self, offset: int, count: int) -> Progress | None:
        if self.progress is None:
            return None

        def report(done: int, total: int) -> None:
            self.report(offset + (count * min(done, total) // total if total > 0 else count))

        return report


LINE_EVERY = 0.05  # without a terminal: a line each time another 5% of the work is done


def log_lines(desc: str, describe: Callable[[], str] | None = None) -> Progress:
    """A `Progress` that prints `desc: 21 of 45 (47%)` (and `describe()`, e.g. the time left) on standard
    error each time another `LINE_EVERY` of the work is done, and once at the end: progress for a log."""
    printed = [-1.0]

    def line(done: int, total: int) -> None:
        frac = done / total if total > 0 else 1.0
        if frac - printed[0] >= LINE_EVERY or (done >= total and printed[0] < 1.0):
            printed[0] = frac
            extra = f", {describe()}" if describe is not None else ""
            print(f"{desc}: {done:,} of {total:,} ({frac:.0%}){extra}", file=sys.stderr, flush=True)

    return line


@contextmanager
def progress_bar(desc: str) -> Iterator[Progress]:
    """A `Progress` callback drawing a tqdm bar on standard error, or, when standard error is not a
    terminal (a log file, a pipe), plain lines (`desc: 21 of 45 (47%)`), one each time another 5% is done:
    a redirected log gets no carriage-return redraws.

    The bar appears at the first call, so input errors raised before any work print one clean line.
    """
    from tqdm import tqdm

    bars: list = []
    line = log_lines(desc)

    def update(done: int, total: int) -> None:
        if not sys.stderr.isatty():
            line(done, total)
            return
        if not bars:
            bars.append(tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True))
        bar = bars[0]
        bar.total = max(total, 1)
        bar.n = done
        bar.refresh()

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


_ETA = ("RunTimer", "sigint_stops", "format_seconds")  # eta.py imports Progress from here: loaded on use

__all__ = ["Forward", "Progress", "log_lines", "progress_bar", *_ETA]


def __getattr__(name: str) -> Any:
    if name not in _ETA:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("analysis.progress.eta"), name)
