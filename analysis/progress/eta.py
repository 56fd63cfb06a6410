"""Runs you can steer: elapsed time and time left for a `progress(done, total)` stream, and Ctrl-C as Stop.

```python
timer = RunTimer()
with sigint_stops() as should_stop:
    sensitivity_sweep(model, data, progress=timer.wrap(bar), should_stop=should_stop)
print(timer.describe())          # "1:05 elapsed, about 0:40 left"
```
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from analysis.progress import Progress


def format_seconds(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from an hour up."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


MEANINGFUL_FRACTION = 0.05  # time left is shown once this share of the work is done...
MEANINGFUL_SECONDS = 5.0  # ...and this long has passed: earlier, one quick first unit predicts nothing


class RunTimer:
    """Elapsed seconds since it was made, and the time left estimated from the mean pace so far:
    elapsed / done x (total - done), once it means something (`MEANINGFUL_FRACTION` of the work done and
    `MEANINGFUL_SECONDS` passed). `clock` returns seconds (monotonic by default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self.done = 0
        self.total = 0

    def update(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def wrap(self, progress: Progress | None = None) -> Progress:
        """A progress callback that updates this timer, then calls `progress` (if any)."""

        def report(done: int, total: int) -> None:
            self.update(done, total)
            if progress is not None:
                progress(done, total)

        return report

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._start

    @property
    def eta_s(self) -> float | None:
        """Seconds left; None until the estimate means something (see the class); 0 when done."""
        if self.done <= 0 or self.total <= 0:
            return None
        if self.done >= self.total:
            return 0.0
        elapsed = self.elapsed_s
        if self.done / self.total < MEANINGFUL_FRACTION or elapsed < MEANINGFUL_SECONDS:
            return None
        return max(0.0, elapsed / self.done * (self.total - self.done))

    def describe(self) -> str:
        text = f"{format_seconds(self.elapsed_s)} elapsed"
        eta = self.eta_s
        return text if eta is None else f"{text}, about {format_seconds(eta)} left"


@contextlib.contextmanager
def sigint_stops(
    message: str = "stopping after the current step (Ctrl-C again to abort)",
) -> Iterator[Callable[[], bool]]:
    """Within the block, the first Ctrl-C asks the run to stop (the yielded `should_stop()` turns True) and
    the second aborts as usual. Outside the main thread signals cannot be caught: `should_stop` stays False."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop.is_set
        return

    def handle(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(message, file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield stop.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
