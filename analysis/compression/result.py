"""What `compress` returns: the before and after metrics of a compression and what was done."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from analysis.compression.plan import CompressionPlan
from analysis.metrics import MetricInfo
from analysis.runtime.types import ModelMetrics
from analysis.transforms.pruning import SPARSE_FORMAT

UNSTRUCTURED_NOTE = (
    "Unstructured pruning zeroes single weights but keeps every tensor dense: dense kernels do the same work "
    "on zeros, so MACs and latency do not drop (even cuSPARSE at 90% sparsity runs about as fast as a dense "
    "matrix). It saves space only when stored in a sparse format."
)


@dataclass(frozen=True)
class CompressionResult:
    """Before and after, the plan as applied, what each step did, and the compressed model.

    `model` is the compressed model whose numbers `after` reports (with real int8 Linear layers where they
    ran); `simulated` is the same model with every layer float (weights-only fake quantization), present
    only when int8 kernels were swapped in. Derived: `speedup` = before / after latency, `mac_reduction` =
    before / after MACs, `efficiency` = speedup / MAC reduction (1.0 = latency fell as much as MACs);
    `speedup_paired` is the median of the per-round speedups of the alternating timing rounds.
    """

    before: ModelMetrics
    after: ModelMetrics
    plan: CompressionPlan
    model: nn.Module = field(repr=False)
    batch_size: int
    threads: int
    groups: list[dict]
    unstructured: dict[str, float]
    quantized: dict[str, int]
    int8_layers: list[str]
    sparsity: float
    sparse_size_bytes: int | None
    simulated: ModelMetrics | None
    finetune: dict | None
    notes: list[str]
    seconds: float
    cpu: str = ""
    torch_version: str = ""
    speedup_paired: float | None = None
    runtimes: dict[str, dict[str, ModelMetrics]] = field(default_factory=dict)
    trajectory: list[dict] = field(default_factory=list)
    stopped: bool = False
    onnx_bytes: bytes | None = field(default=None, repr=False)
    transforms: dict = field(default_factory=dict)
    schedule: dict | None = None
    float_model: nn.Module | None = field(default=None, repr=False)  # `model` with every layer float

    @property
    def latency_warnings(self) -> list[str]:
        """One line per noisy latency (runtime, model and the spread), for standard error."""
        out = []
        for runtime, pair in (
            self.runtimes or {"eager": {"before": self.before, "after": self.after}}
        ).items():
            for which, m in pair.items():
                if m.latency_warning:
                    out.append(f"{runtime} {which}: {m.latency_warning}")
        return out

    @property
    def speedup(self) -> float:
        return self.before.latency_ms / self.after.latency_ms if self.after.latency_ms > 0 else float("nan")

    @property
    def efficiency_paired(self) -> float | None:
        """`speedup_paired` / MAC reduction: the efficiency with the round-by-round speedup."""
        return None if self.speedup_paired is None else self.speedup_paired / self.mac_reduction

    @property
    def mac_reduction(self) -> float:
        return self.before.macs / self.after.macs if self.after.macs > 0 else float("nan")

    @property
    def efficiency(self) -> float:
        return self.speedup / self.mac_reduction

    @property
    def accuracy_delta(self) -> float:
        """After minus before score in the metric (accuracy: in [−1, 1], multiply by 100 for points)."""
        return self.after.accuracy - self.before.accuracy

    @property
    def metric(self) -> MetricInfo:
        return self.before.metric

    @property
    def metric_drop(self) -> float:
        """How much worse after is than before, in the metric's units and direction (positive = worse)."""
        return self.metric.drop(self.before.accuracy, self.after.accuracy)

    def to_dict(self) -> dict[str, Any]:
        """docs/contract.md section 3 `compress` keys (`before`, `after`, `plan`) plus the derived numbers."""
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "plan": self.plan.to_dict(),
            "speedup": self.speedup,
            "mac_reduction": self.mac_reduction,
            "efficiency": self.efficiency,
            "speedup_paired": self.speedup_paired,
            "efficiency_paired": self.efficiency_paired,
            f"{self.metric.name}_delta": self.accuracy_delta,
            "metric": self.metric.to_dict() | {"drop": self.metric_drop},
            "batch_size": self.batch_size,
            "threads": self.threads,
            "cpu": self.cpu,
            "torch_version": self.torch_version,
            "applied": {
                "structured_groups": self.groups,
                "unstructured": self.unstructured,
                "quantized_bits": self.quantized,
                "int8_layers": self.int8_layers,
            },
            "sparsity": self.sparsity,
            "sparse_size_bytes": self.sparse_size_bytes,
            "sparse_format": SPARSE_FORMAT if self.sparse_size_bytes is not None else None,
            "simulated": self.simulated.to_dict() if self.simulated else None,
            "finetune": self.finetune,
            "notes": self.notes,
            "seconds": self.seconds,
            "runtimes": {
                name: {which: m.to_dict() for which, m in pair.items()}
                for name, pair in self.runtimes.items()
            },
            "trajectory": self.trajectory,
            "stopped": self.stopped,
            "transforms": self.transforms,
            "schedule": self.schedule,
        }
