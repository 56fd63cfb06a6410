"""Runtimes: what runs a model's forward passes when we evaluate and time it (docs/contract.md section 6).

A `Runtime` turns an `nn.Module` into a `Prepared` model: eager PyTorch runs a private copy of the module,
ONNX Runtime runs the module exported with the dynamo exporter. Every `Prepared` also offers `as_module()`,
an `nn.Module` whose forward goes through the runtime, so `analysis.evaluate` and `analysis.latency` run it
unchanged: the same batches, the same warm-up and the same alternating timing rounds as eager models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import EvalResult, evaluate
from analysis.latency import DEFAULT_BATCH_SIZE, LatencyResult, compare_latency, measure_latency
from analysis.metrics import Scoring
from analysis.progress import Progress
from analysis.registry import Registry
from analysis.runtime.types import REAL, SIMULATED, PairRequest, Prepared, Runtime

RUNTIMES: Registry[Callable[[], Runtime]] = Registry("runtime")


class _RunModule(nn.Module):
    """Calls a `Prepared`'s `run`; holds no parameters."""

    def __init__(self, prepared: Prepared) -> None:
        super().__init__()
        self.prepared = prepared

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor):
        return self.prepared.run(*args, **kwargs)


@dataclasses.dataclass
class EagerPrepared:
    """A private eval-mode copy of the model, run by PyTorch under inference mode."""

    model: nn.Module
    kind: str = REAL
    runtime: str = "eager"
    version: str = torch.__version__
    provider: str = "CPU"

    def run(self, *args: torch.Tensor, **kwargs: torch.Tensor):
        with torch.inference_mode():
            return self.model(*args, **kwargs)

    def as_module(self) -> nn.Module:
        return self.model


@RUNTIMES.register
class EagerRuntime(Runtime):
    """PyTorch eager mode: the model as written."""

    name = "eager"
    in_process: ClassVar[bool] = True

    @property
    def version(self) -> str:
        return torch.__version__

    @property
    def provider(self) -> str:
        return "CPU"

    def prepare(
        self, model: nn.Module, example_input: torch.Tensor, threads: int | None = None
    ) -> EagerPrepared:
        from analysis.model.layers import copy_model

        return EagerPrepared(copy_model(model).eval())

    def pair(self, request: PairRequest) -> tuple[EagerPrepared, EagerPrepared]:
        """The original as it is, and the compressed model as deployed (8-bit Linear layers on the int8
        kernel where the CPU has one)."""
        return EagerPrepared(request.reference, kind=REAL), EagerPrepared(
            request.deployed, kind=request.label
        )


def _onnxruntime() -> Runtime:
    from analysis.runtime.int8 import OnnxInt8Runtime  # onnx and onnxruntime load only when asked for

    return OnnxInt8Runtime()


RUNTIMES.register(
    "onnxruntime",
    _onnxruntime,
    description="ONNX Runtime on the CPU execution provider, over the dynamo exporter's ONNX model.",
)


def get_runtime(name: str) -> Runtime:
    """The runtime registered as `name` (`RUNTIMES.names()`: eager, onnxruntime, ...)."""
    return RUNTIMES.get(name)()


def _module(prepared: Prepared) -> nn.Module:
    return prepared.as_module() if hasattr(prepared, "as_module") else _RunModule(prepared)


def evaluate_runtime(
    prepared: Prepared,
    data: Dataset,
    split: str = "test",
    batch_size: int = 256,
    limit: int | None = None,
    progress: Progress | None = None,
    metric: str | Scoring | None = None,
) -> EvalResult:
    """The score in `metric` (accuracy in [0, 1] for a labelled classifier), the mean loss and samples seen,
    with every batch run by the runtime: the same batches, in the same order, as `analysis.evaluate`. Give
    a `Scoring` built on the original model to compare a compressed model with it."""
    return evaluate(_module(prepared), data, split, batch_size, limit, progress, metric=metric or "auto")


def _label(result: LatencyResult, prepared: Prepared, kind: str | None = None) -> LatencyResult:
    return dataclasses.replace(
        result,
        kind=kind or prepared.kind,
        runtime=prepared.runtime,
        runtime_version=prepared.version,
        provider=prepared.provider,
    )


def measure_runtime_latency(
    prepared: Prepared,
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 30,
    warmup: int = 5,
    progress: Progress | None = None,
) -> LatencyResult:
    """Median, p10 and p90 wall time (ms) of one batch through the runtime, with `analysis.latency`'s
    protocol; the result names the runtime, its version, its execution provider and real/simulated.

    For ONNX Runtime the intra-op threads are fixed when the session is made (`prepare(..., threads)`):
    give the same number here, so the result's `threads` says what ran."""
    result = measure_latency(
        _module(prepared), input_shape, batch_size, threads, runs, warmup, progress, kind=prepared.kind
    )
    return _label(result, prepared)


def compare_runtime_latency(
    prepared: Mapping[str, Prepared],
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    rounds: int = 10,
    runs_per_round: int = 5,
    warmup: int = 5,
    progress: Progress | None = None,
    on_wait: Callable[[], None] | None = None,
) -> dict[str, LatencyResult]:
    """Time several prepared models (any runtimes) in alternating rounds, as `compare_latency` does, so
    drift on a busy machine hits them all alike; each result carries its own runtime labels."""
    modules = {name: _module(p) for name, p in prepared.items()}
    results = compare_latency(
        modules,
        input_shape,
        batch_size=batch_size,
        threads=threads,
        rounds=rounds,
        runs_per_round=runs_per_round,
        warmup=warmup,
        kinds={name: p.kind for name, p in prepared.items()},
        progress=progress,
        on_wait=on_wait,
    )
    return {name: _label(r, prepared[name]) for name, r in results.items()}


def prepare(
    model: nn.Module, runtime: str | Runtime, input_shape: tuple[int, ...], threads: int | None = None
) -> Prepared:
    """`model` ready on `runtime` (a name or a Runtime), with a fixed example batch of `input_shape`."""
    from analysis.model.layers import example_input as example_batch
    from analysis.runtime.onnx import OnnxModule, load_onnx

    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    if isinstance(model, OnnxModule):  # a saved .onnx: it already is an ONNX Runtime session
        if rt.name != "onnxruntime":
            raise WorkbenchError(
                f"an ONNX model runs on ONNX Runtime only, not {rt.name}: use --runtime onnxruntime"
            )
        return load_onnx(model.model_bytes, threads)
    return rt.prepare(model, example_batch(input_shape, 2), threads)


__all__ = [
    "REAL",
    "RUNTIMES",
    "SIMULATED",
    "EagerPrepared",
    "EagerRuntime",
    "PairRequest",
    "Prepared",
    "Runtime",
    "compare_runtime_latency",
    "evaluate_runtime",
    "get_runtime",
    "measure_runtime_latency",
    "prepare",
]
