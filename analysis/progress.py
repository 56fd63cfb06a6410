"""The one progress type every long loop takes, and the terminal bar the CLI draws with it.

A loop calls `progress(done, total)` after each unit of work; `None` means nobody is watching.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Progress = Callable[[int, int], None]
"""`progress(done, total)`: called after each unit of work (both counts in the loop's own units)."""


@contextmanager
def progress_bar(desc: str) -> Iterator[Progress]:
    """A `Progress` callback drawing a tqdm bar on standard error.

    The bar appears at the first call, so input errors raised before any work print one clean line.
    """
    from tqdm import tqdm

    bars: list = []

    def update(done: int, total: int) -> None:
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
