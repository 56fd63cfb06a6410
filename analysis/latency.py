"""Measured latency: wall time of a forward pass under `torch.inference_mode()` (docs/contract.md section 5).

Warm-up first, then repeated timed runs; we report the median (robust to the odd slow run a busy machine
throws in) and the 10th/90th percentiles, with the batch size, thread count, torch version and CPU, so a
number always says where and how it was measured.
"""

from __future__ import annotations

import contextlib
import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from analysis.concurrency import eval_view, private_copy
from analysis.limits import check_batch_memory, check_threads
from analysis.model.inputs import InputSpec, to_device
from analysis.model.layers import call_model, example_input
from analysis.progress import Progress
from analysis.validate import whole

DEFAULT_BATCH_SIZE = 32
NOISY_SPREAD = 1.5  # p90 / p10 above this: the machine was busy, the median is not to be trusted alone

# One timing at a time per process: two overlapping measurements share the CPU cores and slow each other
# down by an amount that depends on who else is running, which is what made the same model read 51, 14 and
# 9.6 ms on three visits.
_LATENCY_LOCK = threading.Lock()


def latency_lock_busy() -> bool:
    """Whether a latency measurement is running in this process right now (a new one would wait)."""
    return _LATENCY_LOCK.locked()


@contextlib.contextmanager
def latency_lock(on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the process-wide timing lock; `on_wait()` is called once first if another measurement holds it
    (the app shows "waiting for another measurement")."""
    if not _LATENCY_LOCK.acquire(blocking=False):
        if on_wait is not None:
            on_wait()
        _LATENCY_LOCK.acquire()
    try:
        yield
    finally:
        _LATENCY_LOCK.release()


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
    # Which runtime ran the forward passes (docs/contract.md section 6): its name, version and execution provider.
    runtime: str = "eager"
    runtime_version: str = ""
    provider: str = "CPU"

    @property
    def spread(self) -> float:
        """p90 / p10: 1.0 for perfectly steady runs; infinite if p10 is 0."""
        return self.p90_ms / self.p10_ms if self.p10_ms > 0 else float("inf")

    @property
    def noisy(self) -> bool:
        """Whether the runs spread so widely (p90/p10 > 1.5) that the median may be off."""
        return self.spread > NOISY_SPREAD

    @property
    def warning(self) -> str | None:
        """One line to show next to the number when it is noisy, else None."""
        if not self.noisy:
            return None
        return (
            f"noisy timing: p90/p10 = {self.spread:.1f} (p10 {self.p10_ms:.2f} ms, p90 {self.p90_ms:.2f} ms); "
            "the machine was busy, measure again when it is idle or with more runs"
        )

    def to_dict(self, with_times: bool = False) -> dict:
        d = asdict(self)
        if not with_times:
            d.pop("times_ms")
        spread = self.spread
        d["spread"] = spread if np.isfinite(spread) else None
        d["noisy"] = self.noisy
        d["warning"] = self.warning
        return d

    @classmethod
    def from_times(
        cls,
        times_ms: list[float],
        batch_size: int,
        threads: int,
        kind: str = "real",
        runtime: str = "eager",
        runtime_version: str | None = None,
        provider: str = "CPU",
    ):
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
            runtime=runtime,
            runtime_version=torch.__version__ if runtime_version is None else runtime_version,
            provider=provider,
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
        torch.set_num_threads(check_threads(threads, "threads"))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _time_once(model: nn.Module, x) -> float:
    start = time.perf_counter()
    call_model(model, x)
    return (time.perf_counter() - start) * 1000.0


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...] | InputSpec,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 30,
    warmup: int = 5,
    progress: Progress | None = None,
    kind: str = "real",
    on_wait: Callable[[], None] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> LatencyResult:
    """Median, p10 and p90 wall time (ms) of a forward pass over one batch of `batch_size` samples.

    Holds the process-wide timing lock (`on_wait()` is called if it has to wait for another measurement).
    For a before/after comparison use `compare_latency`: it times both in alternating rounds. `device`
    cuda[:N] (or auto with a GPU) times a private copy there with CUDA events after `warmup` synchronized
    runs (`analysis.devices.cuda_times_ms`); `dtype` casts that copy (float16, bfloat16).
    """
    check_batch_memory(input_shape, batch_size)
    check_threads(threads, "threads")
    if device is not None or dtype is not None:
        from analysis.devices import on_device, parse_dtype, resolve_device

        dev = resolve_device(device or "cpu")
        if dev.type == "cuda":
            from analysis.devices import cuda_times_ms

            work = on_device(model, dev, dtype).eval()
            x = to_device(example_input(input_shape, batch_size), dev, parse_dtype(dtype))
            with latency_lock(on_wait), torch.inference_mode():
                times = cuda_times_ms(lambda: call_model(work, x), runs, warmup, dev)
            if progress:
                progress(runs, runs)
            return LatencyResult.from_times(times, batch_size, torch.get_num_threads(), kind)
        if dtype is not None:
            model = on_device(model, dev, dtype)
    runs, batch_size = whole(runs, "runs"), whole(batch_size, "batch size")
    x = example_input(input_shape, batch_size)
    if dtype is not None:
        from analysis.devices import parse_dtype

        x = to_device(x, "cpu", parse_dtype(dtype))
    model = eval_view(model)
    with latency_lock(on_wait), torch_threads(threads) as n_threads, torch.inference_mode():
        for _ in range(warmup):
            call_model(model, x)
        times = []
        for i in range(runs):
            times.append(_time_once(model, x))
            if progress:
                progress(i + 1, runs)
    return LatencyResult.from_times(times, batch_size, n_threads, kind)


def compare_latency(
    models: dict[str, nn.Module],
    input_shape: tuple[int, ...] | InputSpec,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    rounds: int = 10,
    runs_per_round: int = 5,
    warmup: int = 5,
    kinds: dict[str, str] | None = None,
    progress: Progress | None = None,
    on_wait: Callable[[], None] | None = None,
) -> dict[str, LatencyResult]:
    """Time several models in alternating rounds, so drift on a busy machine hits them all alike.

    Same input, batch size, threads and warm-up for each; returns one LatencyResult per name. This is the
    way to time a baseline against its compressed versions: never compare numbers taken at different times.
    Holds the process-wide timing lock (`on_wait()` is called if it has to wait).
    """
    if rounds < 1 or runs_per_round < 1 or batch_size < 1:
        from analysis.errors import WorkbenchError

        raise WorkbenchError(
            f"rounds, runs per round and batch size must be at least 1 "
            f"(got {rounds}, {runs_per_round}, {batch_size})"
        )
    check_batch_memory(input_shape, batch_size)
    x = example_input(input_shape, batch_size)
    times: dict[str, list[float]] = {name: [] for name in models}
    views = {name: eval_view(m) for name, m in models.items()}
    total = rounds * len(models)
    with latency_lock(on_wait), torch_threads(threads) as n_threads, torch.inference_mode():
        for m in views.values():
            for _ in range(warmup):
                call_model(m, x)
        done = 0
        for _ in range(rounds):
            for name, m in views.items():
                times[name].extend(_time_once(m, x) for _ in range(runs_per_round))
                done += 1
                if progress:
                    progress(done, total)
    kinds = kinds or {}
    return {
        name: LatencyResult.from_times(t, batch_size, n_threads, kinds.get(name, "real"))
        for name, t in times.items()
    }


def layer_times(
    model: nn.Module,
    input_shape: tuple[int, ...] | InputSpec,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 20,
    warmup: int = 3,
    on_wait: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Median wall time (ms) spent in each leaf module's forward, from hooks around it.

    Hooks add a few microseconds per call, so read these as shares of time, not absolute costs. The hooks
    go on a private copy; the process-wide timing lock is held (`on_wait()` is called if it has to wait).
    """
    model = private_copy(model).eval()  # hooked below: never the caller's (possibly shared) model
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
    check_batch_memory(input_shape, batch_size)
    x = example_input(input_shape, batch_size)
    try:
        with latency_lock(on_wait), torch_threads(threads), torch.inference_mode():
            for _ in range(warmup):
                call_model(model, x)
            samples.clear()
            for _ in range(runs):
                call_model(model, x)
    finally:
        for h in handles:
            h.remove()
    # A module called k times per forward has k samples per run: sum them per run, then take the median.
    return {n: float(np.median(np.asarray(v).reshape(runs, -1).sum(axis=1))) for n, v in samples.items()}
