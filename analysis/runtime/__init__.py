"""Runtimes (eager PyTorch, ONNX Runtime), real int8 on ONNX Runtime, and deployable artifacts (issue 12)."""

from analysis.runtime.artifacts import (
    PRUNED_SUFFIX,
    artifact_kind,
    load_artifact,
    save_artifact,
    save_compressed,
)
from analysis.runtime.base import (
    REAL,
    RUNTIMES,
    SIMULATED,
    Prepared,
    Runtime,
    compare_runtime_latency,
    evaluate_runtime,
    get_runtime,
    measure_runtime_latency,
    prepare,
)

__all__ = [
    "PRUNED_SUFFIX",
    "REAL",
    "RUNTIMES",
    "SIMULATED",
    "Prepared",
    "Runtime",
    "artifact_kind",
    "compare_runtime_latency",
    "evaluate_runtime",
    "get_runtime",
    "load_artifact",
    "measure_runtime_latency",
    "prepare",
    "save_artifact",
    "save_compressed",
]
