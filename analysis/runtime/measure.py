"""Measuring a compressed model on each runtime, before and after: the runtimes and calibration checked,
8-bit Linear layers put on the real int8 kernel (eager), the ONNX Runtime pair (static QDQ int8), the
timings in alternating rounds, and the per-runtime metrics. Used by `compress`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from analysis.cost import count_nonzero, count_params, size_bytes, summarize
from analysis.data import Dataset
from analysis.errors import WorkbenchError, first_line
from analysis.model.layers import copy_model
from analysis.progress import Progress
from analysis.runtime.types import REAL, SIMULATED, ModelMetrics, PairRequest
from analysis.transforms.quantization import int8_backend, to_int8_linear


def paired_speedup(before, after, runs_per_round: int) -> float | None:
    """Median over rounds of (before's median / after's median within the round): drift on a busy machine
    slows both models of a round alike, so this ratio is steadier than the ratio of overall medians."""
    b, a = np.asarray(before.times_ms), np.asarray(after.times_ms)
    if len(b) != len(a) or len(b) % runs_per_round or not len(b):
        return None
    rounds_b = np.median(b.reshape(-1, runs_per_round), axis=1)
    rounds_a = np.median(a.reshape(-1, runs_per_round), axis=1)
    return float(np.median(rounds_b / rounds_a))


def check_runtimes(runtimes) -> tuple[str, ...]:
    """The runtimes' canonical names, once each; unknown names are refused."""
    from analysis.runtime.base import RUNTIMES, get_runtime

    names = [runtimes] if isinstance(runtimes, str) else list(runtimes or ())
    if not names:
        raise WorkbenchError(f"no runtime given: use one or more of {', '.join(RUNTIMES.names())}")
    return tuple(dict.fromkeys(get_runtime(str(n)).name for n in names))


def check_calibration(calibration: str) -> str:
    """`calibration` if ONNX Runtime int8 knows it, else a WorkbenchError."""
    from analysis.runtime.int8 import CALIBRATION_METHODS

    if calibration not in CALIBRATION_METHODS:
        raise WorkbenchError(
            f"unknown calibration {calibration!r}: use one of {', '.join(CALIBRATION_METHODS)}"
        )
    return calibration


def resolve_eval_device(device):
    """The device eager evaluation runs on (None: as the model is)."""
    if device is None:
        return None
    from analysis.devices import resolve_device

    return resolve_device(device)


def prepare_runtimes(
    names,
    reference,
    work,
    deployed,
    label,
    bits,
    data,
    threads,
    calibration,
    max_samples,
    eval_batch_size,
    notes,
    score=None,
):
    """Prepared before/after models per runtime ("eager:before", ...), the evaluations of the runtimes
    that do not run in process (scored as `score`, a `Scoring` against the original model), and the
    ONNX bytes of the compressed model. Each runtime's class makes its own pair (`Runtime.pair`). A runtime
    that cannot take the model gets a note and is skipped; eager is then measured in its place so there is
    always a before and an after."""
    from analysis.runtime.base import EagerPrepared, evaluate_runtime, get_runtime

    request = PairRequest(
        reference, work, deployed, label, bits, data, threads, calibration, max_samples, notes
    )
    prepared: dict = {}
    evals: dict = {}
    onnx_bytes = None
    for name in names:
        runtime = get_runtime(name)
        try:
            before, after = runtime.pair(request)
        except WorkbenchError as exc:
            notes.append(f"{name}: not measured: {first_line(exc)}; the eager numbers are given instead")
            continue
        prepared[f"{name}:before"], prepared[f"{name}:after"] = before, after
        if runtime.in_process:
            continue  # its scores are the evaluations the compression already made
        onnx_bytes = getattr(after, "model_bytes", onnx_bytes)
        evals[(name, "before")] = evaluate_runtime(before, data, batch_size=eval_batch_size, metric=score)
        evals[(name, "after")] = evaluate_runtime(after, data, batch_size=eval_batch_size, metric=score)
    if not prepared:
        prepared["eager:before"] = EagerPrepared(reference, kind=REAL)
        prepared["eager:after"] = EagerPrepared(deployed, kind=label)
    # Keep the order the caller asked for (the first runtime is `before`/`after`), eager last if substituted.
    return prepared, evals, onnx_bytes


def deploy(
    work: nn.Module, bits: Mapping[str, int], quantized: Mapping, real_int8: bool, notes: list[str]
) -> tuple[nn.Module, list[str], str]:
    """The model to run: `work`, or a copy with 8-bit Linear layers on the real int8 kernel where the CPU
    has one; the int8 layers; and the latency label (`simulated` where a quantized layer runs float)."""
    deployed, int8_layers = work, []
    if real_int8 and any(b == 8 for b in bits.values()):
        candidate = copy_model(work)
        int8_layers = to_int8_linear(candidate, bits)
        if int8_layers:
            deployed = candidate
            notes.append(
                f"{', '.join(int8_layers)} run the real int8 kernel ({int8_backend()}): int8 weights (the same "
                "integers as the fake quantization), activations quantized per batch at run time; `simulated` "
                "gives the all-float model with the same weights"
            )
    fake_only = sorted(set(quantized) - set(int8_layers))
    if fake_only:
        notes.append(
            f"{len(fake_only)} quantized layer(s) ({', '.join(fake_only[:4])}{', ...' if len(fake_only) > 4 else ''}) "
            "have no real integer kernel here: their weights sit on the b-bit grid but are stored and run as "
            "float32, so the latency is simulated (float kernels), not that of a b-bit kernel"
        )
    return deployed, int8_layers, SIMULATED if fake_only else REAL


def measure_runtimes(
    names, models, label, bits, data: Dataset, calibration, max_samples, eval_batch_size, eager_evals,
    eval_device, timing: Mapping[str, Any], progress: Progress | None, notes: list[str], score=None,
):  # fmt: skip
    """Before and after on each runtime: the evaluations by (runtime, "before"/"after"), the timings by
    "runtime:before"/"runtime:after" (and "eager:simulated"), the ONNX bytes, and the runtimes measured
    (eager stands in for one that failed). `models`: (reference, work, deployed); `eager_evals`: (before,
    after, simulated or None); `timing`: batch_size, threads, rounds, runs_per_round, warmup."""
    from analysis.runtime.base import EagerPrepared, compare_runtime_latency

    reference, work, deployed = models
    before_eval, after_eval, simulated_eval = eager_evals
    prepared, evals, onnx_bytes = prepare_runtimes(
        names, reference, work, deployed, label, bits, data, timing["threads"], calibration, max_samples,
        eval_batch_size, notes, score,
    )  # fmt: skip
    evals[("eager", "before")], evals[("eager", "after")] = before_eval, after_eval
    if simulated_eval is not None and "eager:after" in prepared:
        prepared["eager:simulated"] = EagerPrepared(work, kind=SIMULATED)
    if eval_device is not None and eval_device.type != "cpu":
        notes.append(f"accuracy was evaluated on {eval_device}; latency is timed on the CPU")
    timings = compare_runtime_latency(prepared, data.input_shape, **timing, progress=progress)
    measured = [name for name in names if f"{name}:before" in prepared]
    if "eager" not in measured and "eager:before" in prepared:
        measured.append("eager")  # eager stood in for a runtime that failed
    return evals, timings, onnx_bytes, measured


def per_runtime_metrics(measured, evals, timings, reference: nn.Module, work: nn.Module, input_shape,
                        after_size: int):  # fmt: skip
    """{runtime: {"before", "after": ModelMetrics}} and the after counts (params, nonzero, MACs, bytes)."""
    before_cost, after_cost = summarize(reference, input_shape), summarize(work, input_shape)
    after_counts = (count_params(work), count_nonzero(work), after_cost.total_macs, after_size)
    before_counts = (
        before_cost.total_params,
        count_nonzero(reference),
        before_cost.total_macs,
        size_bytes(reference),
    )
    per_runtime = {
        name: {
            "before": ModelMetrics.measured(
                evals[(name, "before")], *before_counts, timings[f"{name}:before"]
            ),
            "after": ModelMetrics.measured(evals[(name, "after")], *after_counts, timings[f"{name}:after"]),
        }
        for name in measured
    }
    return per_runtime, after_counts


__all__ = [
    "check_calibration",
    "check_runtimes",
    "deploy",
    "measure_runtimes",
    "paired_speedup",
    "per_runtime_metrics",
    "prepare_runtimes",
    "resolve_eval_device",
]
