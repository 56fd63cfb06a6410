"""Measured latency: wall time of a forward pass under `torch.inference_mode()` (CONTRACT section 5).

Warm-up first, then repeated timed runs; we report the median (robust to the odd slow run a busy machine
throws in) and the 10th/90th percentiles, with the batch size, thread count, torch version and CPU, so a
number always says where and how it was measured.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from analysis.layers import example_input
from analysis.progress import Progress
from analysis.validate import whole

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class LatencyResult:
    """Milliseconds per forward pass of one batch; `kind` says whether the kernels timed are the real ones."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    batch_size: int
    threads: int
    torch_version: str
    cpu: str
    kind: str = "real"
    times_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, with_times: bool = False) -> dict:
        d = asdict(self)
        if not with_times:
            d.pop("times_ms")
        return d

    @classmethod
    def from_times(cls, times_ms: list[float], batch_size: int, threads: int, kind: str = "real"):
        arr = np.asarray(times_ms, dtype=float)
        return cls(
            median_ms=float(np.median(arr)),
            p10_ms=float(np.percentile(arr, 10)),
            p90_ms=float(np.percentile(arr, 90)),
            runs=len(arr),
            batch_size=batch_size,
            threads=threads,
            torch_version=torch.__version__,
            cpu=cpu_name(),
            kind=kind,
            times_ms=[float(t) for t in arr],
        )


def cpu_name() -> str:
    """The CPU's model name, as the OS reports it."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with `threads` intra-op threads (None: as set), restoring the previous setting afterwards."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(whole(threads, "threads"))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _time_once(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return (time.perf_counter() - start) * 1000.0


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 30,
    warmup: int = 5,
    progress: Progress | None = None,
    kind: str = "real",
) -> LatencyResult:
    """Median, p10 and p90 wall time (ms) of a forward pass over one batch of `batch_size` samples."""
    runs, batch_size = whole(runs, "runs"), whole(batch_size, "batch size")
    x = example_input(input_shape, batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads) as n_threads, torch.inference_mode():
            for _ in range(warmup):
                model(x)
            times = []
            for i in range(runs):
                times.append(_time_once(model, x))
                if progress:
                    progress(i + 1, runs)
    finally:
        model.train(was_training)
    return LatencyResult.from_times(times, batch_size, n_threads, kind)


def compare_latency(
    models: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    rounds: int = 10,
    runs_per_round: int = 5,
    warmup: int = 5,
    kinds: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> dict[str, LatencyResult]:
    """Time several models in alternating rounds, so drift on a busy machine hits them all alike.

    Same input, batch size, threads and warm-up for each; returns one LatencyResult per name.
    """
    x = example_input(input_shape, batch_size)
    times: dict[str, list[float]] = {name: [] for name in models}
    modes = {name: m.training for name, m in models.items()}
    total = rounds * len(models)
    try:
        with torch_threads(threads) as n_threads, torch.inference_mode():
            for m in models.values():
                m.eval()
                for _ in range(warmup):
                    m(x)
            done = 0
            for _ in range(rounds):
                for name, m in models.items():
                    times[name].extend(_time_once(m, x) for _ in range(runs_per_round))
                    done += 1
                    if progress:
                        progress(done, total)
    finally:
        for name, m in models.items():
            m.train(modes[name])
    kinds = kinds or {}
    return {
        name: LatencyResult.from_times(t, batch_size, n_threads, kinds.get(name, "real"))
        for name, t in times.items()
    }


def layer_times(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Median wall time (ms) spent in each leaf module's forward, from hooks around it.

    Hooks add a few microseconds per call, so read these as shares of time, not absolute costs.
    """
    starts: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def pre(m, a, n=name):
            starts[n] = time.perf_counter()

        def post(m, a, out, n=name):
            samples.setdefault(n, []).append((time.perf_counter() - starts[n]) * 1000.0)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    x = example_input(input_shape, batch_size)
    was_training = model.training
    model.eval()
    try:
        with torch_threads(threads), torch.inference_mode():
            for _ in range(warmup):
                model(x)
            samples.clear()
            for _ in range(runs):
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    # A module called k times per forward has k samples per run: sum them per run, then take the median.
    return {n: float(np.median(np.asarray(v).reshape(runs, -1).sum(axis=1))) for n, v in samples.items()}
