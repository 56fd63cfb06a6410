"""What a runtime is: `Runtime` (prepares models) and `Prepared` (runs them), and the latency kinds.

A leaf of `analysis.runtime`: the eager and ONNX Runtime implementations both build on it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from analysis.metrics import ACCURACY, MetricInfo
from analysis.model.layers import example_input

if TYPE_CHECKING:
    from analysis.data import Dataset
    from analysis.evaluate import EvalResult
    from analysis.latency import LatencyResult

REAL, SIMULATED = "real", "simulated"


@runtime_checkable
class Prepared(Protocol):
    """A model ready to run on one runtime. `kind` is `real` when the kernels timed are the ones a deployment
    runs (float, or real int8), `simulated` when quantized weights run as float."""

    runtime: str
    version: str
    provider: str
    kind: str

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch `x` (float32, batch first), as a torch tensor."""
        ...

    def as_module(self) -> nn.Module:
        """An `nn.Module` whose forward is `run`, for code that takes modules."""
        ...


@dataclass
class PairRequest:
    """What measuring a compressed model on a runtime starts from: the original (`reference`), the
    compressed model with quantized layers on their grid (`work`), the same with 8-bit Linear layers on the
    eager int8 kernel (`deployed`, timed as `label`), the bits per quantized layer, the data (its input
    shape; int8 calibration), threads, the int8 calibration method and samples; `notes` collects what a
    reader must know about the measurement."""

    reference: nn.Module
    work: nn.Module
    deployed: nn.Module
    label: str
    bits: Mapping[str, int]
    data: Dataset
    threads: int | None = None
    calibration: str = "minmax"
    max_samples: int = 256
    notes: list[str] = field(default_factory=list)


class Runtime(ABC):
    """Something that runs models: a name, its version and execution provider, `prepare`, and `pair` (the
    before/after models a compression is measured with on it).

    `in_process` is True for a runtime that runs the PyTorch modules themselves (eager): its before/after
    scores are the evaluations the compression already made, so they are not evaluated again."""

    name: str = ""
    in_process: ClassVar[bool] = False

    @property
    @abstractmethod
    def version(self) -> str: ...

    @property
    @abstractmethod
    def provider(self) -> str: ...

    @abstractmethod
    def prepare(self, model: nn.Module, example_input: torch.Tensor, threads: int | None = None) -> Prepared:
        """A `Prepared` model; `model` itself is never changed. `threads`: intra-op threads (None: as set)."""

    def pair(self, request: PairRequest) -> tuple[Prepared, Prepared]:
        """The original and the compressed model ready on this runtime. By default both are prepared as they
        are, and the compressed one's latency is `simulated` where a layer is quantized (its weights sit on
        the b-bit grid but run as float)."""
        example = example_input(request.data.input_shape, 2)
        before = self.prepare(request.reference, example, request.threads)
        after = self.prepare(request.work, example, request.threads)
        if request.bits:
            after.kind = SIMULATED
            request.notes.append(f"{self.name}: quantized layers run as float: that latency is simulated")
        return before, after


@dataclass(frozen=True)
class ModelMetrics:
    """One model's measured numbers: its score in `metric` (top-1 accuracy in [0, 1] by default; the field
    `accuracy` holds the score whatever the metric), mean loss (cross-entropy in nats with labels),
    parameters (and how many are nonzero), MACs per sample, size in bytes (quantized weights at their bits,
    docs/contract.md section 5), and median latency in ms of one batch (p10/p90 too), labelled `real` or
    `simulated`."""

    accuracy: float
    loss: float
    params: int
    nonzero_params: int
    macs: int
    size_bytes: int
    latency_ms: float
    latency_p10_ms: float
    latency_p90_ms: float
    latency_label: str
    runtime: str = "eager"
    runtime_version: str = ""
    provider: str = "CPU"
    latency_kind: str = REAL
    latency_spread: float | None = None
    latency_warning: str | None = None
    metric: MetricInfo = ACCURACY

    @classmethod
    def measured(
        cls, ev: EvalResult, params: int, nonzero: int, macs: int, size: int, timing: LatencyResult
    ) -> ModelMetrics:
        """From an evaluation, the counts and a timing (which says its runtime, kind and spread): the one way
        `compress` (per runtime, before and after) and a model card build a model's numbers."""
        spread = timing.spread
        return cls(
            metric=ev.metric,
            accuracy=ev.accuracy,
            loss=ev.loss,
            params=params,
            nonzero_params=nonzero,
            macs=macs,
            size_bytes=size,
            latency_ms=timing.median_ms,
            latency_p10_ms=timing.p10_ms,
            latency_p90_ms=timing.p90_ms,
            latency_label=timing.kind,
            runtime=timing.runtime,
            runtime_version=timing.runtime_version,
            provider=timing.provider,
            latency_kind=timing.kind,
            latency_spread=spread if math.isfinite(spread) else None,
            latency_warning=timing.warning,
        )

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        """The score under the metric's name (`accuracy` for accuracy runs), `metric: {name, direction,
        value}`, and the counts and timing."""
        return {
            self.metric.name: self.accuracy,
            "metric": self.metric.to_dict(self.accuracy),
            "loss": self.loss,
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "macs": self.macs,
            "flops": self.flops,
            "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
            "latency_p10_ms": self.latency_p10_ms,
            "latency_p90_ms": self.latency_p90_ms,
            "latency_label": self.latency_label,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "provider": self.provider,
            "latency_kind": self.latency_kind,
            "latency_spread": self.latency_spread,
            "latency_warning": self.latency_warning,
        }
