"""Apply a compression plan and measure everything: accuracy, loss, params, MACs, size and latency, before
and after, timed the same way (CONTRACT sections 3-5).

Order of work, on a private deep copy (the model handed in is never touched):
1. structured pruning: coupled groups lose channels for real (Torch-Pruning), or the plan's `schedule`
   (iterative, AGP, slimming, group lasso: `run_schedule`, which trains between its steps);
2. unstructured pruning: smallest-|w| weights zeroed (masks kept during fine-tuning);
3. optional fine-tuning on the training split, optionally distilled from the uncompressed model;
4. masks made permanent, then weights quantized (post-training, per CONTRACT section 5);
5. transforms (`rank`, `share_bits`, `weights`: `apply_transforms`), their stored sizes in `size_bytes`;
6. 8-bit Linear layers swapped for the real dynamic int8 kernel where the CPU has one (eager); on ONNX
   Runtime 8-bit layers run real int8 (static QDQ);
7. before and after timed on each runtime in alternating rounds at the same batch size, threads, warm-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.compression.finetune import finetune
from analysis.compression.plan import CompressionPlan, LayerSettings
from analysis.compression.pruning import (
    SPARSE_FORMAT,
    count_zeros,
    make_permanent,
    prune_structured,
    prune_unstructured,
    pruning_groups,
    sparse_size_bytes,
)
from analysis.compression.quantization import (
    int8_backend,
    quantize_weights,
    quantized_size_bytes,
    to_int8_linear,
)
from analysis.compression.result import REAL, SIMULATED, UNSTRUCTURED_NOTE, CompressionResult, ModelMetrics
from analysis.compression.schedules import run_schedule
from analysis.compression.transforms import apply_transforms
from analysis.cost import count_params, size_bytes, summarize
from analysis.data import DEFAULT_MAX_SAMPLES, Dataset
from analysis.errors import WorkbenchError, first_line
from analysis.evaluate import evaluate
from analysis.io import write_atomic
from analysis.latency import DEFAULT_BATCH_SIZE
from analysis.layers import copy_model, final_classifier, prunable_layers
from analysis.progress import Progress
from analysis.validate import whole


class _Stages:
    """Turns named stages of known size into one progress(done, total) stream."""

    def __init__(self, sizes: Mapping[str, int], progress: Progress | None) -> None:
        self.offsets, total = {}, 0
        for name, size in sizes.items():
            self.offsets[name] = total
            total += max(int(size), 0)
        self.sizes = dict(sizes)
        self.total = total
        self.progress = progress

    @classmethod
    def for_compress(cls, data: Dataset, ft, eval_batch_size: int, latency_rounds: int, progress) -> _Stages:
        """The stages of `compress`, sized in evaluation batches, training steps and latency runs."""
        evals = max(len(data.x) // eval_batch_size, 1)
        steps = ft.epochs * ((len(data.x_train) + ft.batch_size - 1) // ft.batch_size)
        sizes = {
            "before": evals,
            "prune": 1,
            "finetune": steps,
            "after": evals,
            "latency": latency_rounds * 3,
        }
        return cls(sizes, progress)

    def step(self, name: str) -> Progress | None:
        if self.progress is None:
            return None
        offset, size = self.offsets[name], self.sizes[name]

        def report(done: int, total: int) -> None:
            self.progress(offset + round(size * done / max(total, 1)), self.total)

        return report

    def finish(self, name: str) -> None:
        if self.progress is not None:
            self.progress(self.offsets[name] + self.sizes[name], self.total)


def _resolve(plan: CompressionPlan, model: nn.Module, input_shape: tuple[int, ...]):
    """Per-group structured ratios and criteria, per-layer unstructured ratios and bits, and notes."""
    layers = prunable_layers(model)
    final = final_classifier(model, input_shape)
    notes: list[str] = []
    if final is not None:
        own = plan.settings_for(final)
        if plan.names(final, "prune") and own.structured and own.prune > 0:
            raise WorkbenchError(
                f"the plan prunes {final!r} structurally, but it is the final classifier: its outputs are the "
                'classes. Give it "structured": false (unstructured pruning) or only "bits"'
            )
    structured: dict[str, float] = {}
    criteria: dict[str, str] = {}
    group_members: dict[str, list[str]] = {}
    groups = []
    wants_structured = any(
        s.structured and s.prune > 0 for s in [plan.default] + [plan.settings_for(n) for n in plan.layers]
    )
    if wants_structured:
        groups = pruning_groups(model, input_shape)
        for group in groups:
            members = group.out_layers
            named = [m for m in members if plan.names(m, "prune") or plan.names(m, "structured")]
            source = named[0] if named else group.name
            settings: LayerSettings = plan.settings_for(source)
            disagree = [m for m in named[1:] if plan.settings_for(m) != settings]
            if disagree:
                notes.append(
                    f"group {group.name} couples {', '.join(members)}: the plan gives {disagree[0]} other "
                    f"settings than {source}, but coupled layers lose the same channels; used {source}'s"
                )
            if settings.structured and settings.prune > 0:
                structured[group.name] = settings.prune
                criteria[group.name] = settings.criterion
                group_members[group.name] = members
    resolved = {name: plan.settings_for(name) for name in layers}
    unstructured = {n: s.prune for n, s in resolved.items() if not s.structured and s.prune > 0}
    bits = {n: s.bits for n, s in resolved.items() if s.quantizes}
    coupled = [f"{g} = [{', '.join(m)}]" for g, m in group_members.items() if len(m) > 1]
    if coupled:
        notes.append("coupled layers take their group's ratio: " + "; ".join(coupled))
    return structured, criteria, unstructured, bits, groups, notes


def _paired_speedup(before, after, runs_per_round: int) -> float | None:
    """Median over rounds of (before's median / after's median within the round): drift on a busy machine
    slows both models of a round alike, so this ratio is steadier than the ratio of overall medians."""
    b, a = np.asarray(before.times_ms), np.asarray(after.times_ms)
    if len(b) != len(a) or len(b) % runs_per_round or not len(b):
        return None
    rounds_b = np.median(b.reshape(-1, runs_per_round), axis=1)
    rounds_a = np.median(a.reshape(-1, runs_per_round), axis=1)
    return float(np.median(rounds_b / rounds_a))


def _nonzero(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


def _check_runtimes(runtimes) -> tuple[str, ...]:
    from analysis.runtime.base import get_runtime

    names = [runtimes] if isinstance(runtimes, str) else list(runtimes or ())
    if not names:
        raise WorkbenchError("no runtime given: use eager, onnxruntime or both")
    return tuple(dict.fromkeys(get_runtime(str(n)).name for n in names))


def _check_calibration(calibration: str) -> str:
    from analysis.runtime.int8 import CALIBRATION_METHODS

    if calibration not in CALIBRATION_METHODS:
        raise WorkbenchError(
            f"unknown calibration {calibration!r}: use one of {', '.join(CALIBRATION_METHODS)}"
        )
    return calibration


def _resolved_finetune(ft, data: Dataset):
    """The plan's fine-tuning with the recovery recipe's epochs filled in (recipe recovery, epochs 0)."""
    if ft.recovers and ft.epochs == 0:
        from dataclasses import replace

        from analysis.compression.schedules import recovery_epochs

        return replace(ft, epochs=recovery_epochs(len(data.x_train), ft.batch_size))
    return ft


def _transform_settings(plan: CompressionPlan, model: nn.Module) -> dict[str, dict]:
    """Resolved settings of each layer that has a transform (rank, share_bits, weights). A transform in the
    default reaches only the layers it can work on (rank: Linear and groups=1 Conv2d)."""
    from analysis.compression.transforms import factorable_layers

    factorable = set(factorable_layers(model))
    out = {}
    for name in prunable_layers(model):
        settings = plan.settings_for(name)
        fields = settings.transforms
        if not fields:
            continue
        if ("rank" in fields or "rank_energy" in fields) and name not in factorable:
            if plan.names(name, "rank") or plan.names(name, "rank_energy"):
                raise WorkbenchError(f"layer {name!r}: rank needs a Linear or groups=1 Conv2d layer")
            continue
        out[name] = settings.to_dict()
    return out


def compress(
    model: nn.Module,
    plan: CompressionPlan | Mapping[str, Any],
    data: Dataset,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    threads: int | None = None,
    latency_rounds: int = 10,
    runs_per_round: int = 5,
    warmup: int = 5,
    real_int8: bool = True,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    eval_batch_size: int = 256,
    runtimes: Sequence[str] = ("eager",),
    calibration: str = "minmax",
    device: str | torch.device | None = None,
    on_step: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CompressionResult:
    """Apply `plan` to a copy of `model` and measure before and after on `data`'s evaluation split.

    Latency: `latency_rounds` alternating rounds of `runs_per_round` forward passes of `batch_size` samples
    per model and runtime, after `warmup` passes, with `threads` intra-op threads (None: as set). With
    `real_int8`, eager Linear layers at 8 bits run the CPU's dynamic int8 kernel where there is one.
    `max_samples` caps the samples data-driven criteria and int8 calibration see. `model` is never changed.

    `runtimes`: each is measured before and after (`result.runtimes`); `before`/`after` are the first one's.
    On `onnxruntime` the plan's 8-bit layers run real int8 (static QDQ, `calibration` minmax | entropy |
    percentile) and the accuracy is the ONNX model's own; a model that does not export gets a note and
    its eager numbers. A plan `schedule` (method other than oneshot) prunes with `run_schedule`:
    `on_step(record)` after each step, `should_stop()` ends it at the next step, keeping the model as it
    stands (`result.stopped`). `device`: where eager evaluation runs (timing stays on the CPU).
    """
    started = time.perf_counter()
    if not isinstance(plan, CompressionPlan):
        plan = CompressionPlan.from_dict(plan)
    whole(batch_size, "batch size")
    runtime_names = _check_runtimes(runtimes)
    calibration = _check_calibration(calibration)
    eval_device = _eval_device(device)
    plan.check_layers(model)
    input_shape = data.input_shape
    reference = copy_model(model).eval()  # teacher and "before"; the caller's model is never run
    work = copy_model(model).eval()
    structured, criteria, unstructured_ratios, bits, groups, notes = _resolve(plan, work, input_shape)
    transform_settings = _transform_settings(plan, work)
    ft = _resolved_finetune(plan.finetune, data)
    schedule = plan.schedule if plan.scheduled or (plan.schedule and not plan.prunes_per_layer) else None
    stages = _Stages.for_compress(
        data, ft if schedule is None else replace(ft, epochs=0), eval_batch_size, latency_rounds, progress
    )
    before_eval = evaluate(
        reference, data, batch_size=eval_batch_size, progress=stages.step("before"), device=eval_device
    )
    stages.finish("before")

    trajectory: list[dict] = []
    stopped, schedule_info, finetune_info = False, None, None
    if schedule is not None:
        ran = run_schedule(
            reference,
            data,
            schedule,
            input_shape,
            finetune=ft if (ft.epochs > 0 or ft.recovers) else None,
            progress=stages.step("prune"),
            on_step=on_step,
            should_stop=should_stop,
        )
        work, trajectory, stopped = ran.model, ran.trajectory, ran.stopped
        notes.extend(ran.notes)
        schedule_info = {
            k: v for k, v in ran.to_dict().items() if k not in ("trajectory", "notes", "stopped")
        }
        struct_groups: list[dict] = []
        make_permanent(work)
    else:
        struct = prune_structured(
            work,
            structured,
            input_shape,
            criteria=criteria,
            data=data,
            max_samples=max_samples,
            groups=groups or None,
        )
        notes.extend(struct.notes)
        struct_groups = struct.groups
        prune_unstructured(work, unstructured_ratios)
    stages.finish("prune")
    if schedule is None:
        finetune_info = _finetune_step(work, reference, data, ft, bool(bits), stages.step("finetune"), notes)
    make_permanent(work)
    quantized = quantize_weights(work, bits)
    unstructured_done = {
        name: float((work.get_submodule(name).weight == 0).float().mean()) for name in unstructured_ratios
    }
    zeros, total = count_zeros(work)
    transforms: dict = {}
    saved_by_transforms = 0
    if transform_settings:
        applied = apply_transforms(work, transform_settings, huffman=plan.huffman)
        work = applied.model
        notes.extend(applied.notes)
        transforms = applied.sizes
        saved_by_transforms = sum(
            entry["float32_bytes"] - entry["bytes"]
            for entry in applied.sizes["layers"].values()
            if "float32_bytes" in entry and "bytes" in entry
        )
    elif plan.huffman:
        notes.append("huffman: no layer has share_bits, so there are no indices to code; sizes unchanged")
    stages.finish("finetune")
    deployed, int8_layers, label = _deploy(work, bits, quantized, real_int8, notes)

    after_eval = evaluate(
        deployed, data, batch_size=eval_batch_size, progress=stages.step("after"), device=eval_device
    )
    simulated_eval = (
        evaluate(work, data, batch_size=eval_batch_size, device=eval_device) if deployed is not work else None
    )
    stages.finish("after")

    prepared, evals, onnx_bytes = _prepare_runtimes(
        runtime_names, reference, work, deployed, label, bits, data, threads, calibration, max_samples,
        eval_batch_size, notes,
    )  # fmt: skip
    evals[("eager", "before")], evals[("eager", "after")] = before_eval, after_eval
    if simulated_eval is not None and "eager:after" in prepared:
        from analysis.runtime.base import EagerPrepared

        prepared["eager:simulated"] = EagerPrepared(work, kind=SIMULATED)
    if eval_device is not None and eval_device.type != "cpu":
        notes.append(f"accuracy was evaluated on {eval_device}; latency is timed on the CPU")
    from analysis.runtime.base import compare_runtime_latency

    timings = compare_runtime_latency(
        prepared,
        input_shape,
        batch_size=batch_size,
        threads=threads,
        rounds=latency_rounds,
        runs_per_round=runs_per_round,
        warmup=warmup,
        progress=stages.step("latency"),
    )
    stages.finish("latency")

    after_size = quantized_size_bytes(work, bits) - saved_by_transforms
    if transforms:
        transforms["size_bytes_total"] = after_size
    sparse_bytes = _sparse_bytes(work, bits, unstructured_ratios, after_size, notes)
    before_cost, after_cost = summarize(reference, input_shape), summarize(work, input_shape)
    after_counts = (count_params(work), _nonzero(work), after_cost.total_macs, after_size)
    before_counts = (
        before_cost.total_params,
        _nonzero(reference),
        before_cost.total_macs,
        size_bytes(reference),
    )
    measured = [name for name in runtime_names if f"{name}:before" in prepared]
    if "eager" not in measured and "eager:before" in prepared:
        measured.append("eager")  # eager stood in for a runtime that failed
    per_runtime = {
        name: {
            "before": _metrics(evals[(name, "before")], *before_counts, timings[f"{name}:before"]),
            "after": _metrics(evals[(name, "after")], *after_counts, timings[f"{name}:after"]),
        }
        for name in measured
    }
    first = measured[0]
    return CompressionResult(
        before=per_runtime[first]["before"],
        after=per_runtime[first]["after"],
        plan=plan,
        model=deployed,
        batch_size=batch_size,
        threads=timings[f"{first}:before"].threads,
        groups=struct_groups,
        unstructured=unstructured_done,
        quantized={name: q.bits for name, q in quantized.items()},
        int8_layers=int8_layers,
        sparsity=zeros / max(total, 1),
        sparse_size_bytes=sparse_bytes,
        simulated=(
            _metrics(simulated_eval, *after_counts, timings["eager:simulated"])
            if "eager:simulated" in timings
            else None
        ),
        finetune=finetune_info,
        notes=notes,
        seconds=time.perf_counter() - started,
        cpu=timings[f"{first}:before"].cpu,
        torch_version=torch.__version__,
        speedup_paired=_paired_speedup(timings[f"{first}:before"], timings[f"{first}:after"], runs_per_round),
        runtimes=per_runtime,
        trajectory=trajectory,
        stopped=stopped,
        onnx_bytes=onnx_bytes,
        transforms=transforms,
        schedule=schedule_info,
        float_model=work,
    )


def _eval_device(device):
    if device is None:
        return None
    from analysis.devices import resolve_device

    return resolve_device(device)


def _prepare_runtimes(
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
):
    """Prepared before/after models per runtime ("eager:before", ...), the non-eager evaluations, and the
    ONNX bytes of the compressed model. A runtime that cannot take the model gets a note and is skipped;
    eager is then measured in its place so there is always a before and an after."""
    from analysis.runtime.base import EagerPrepared, evaluate_runtime

    prepared: dict = {}
    evals: dict = {}
    onnx_bytes = None
    for name in names:
        if name == "eager":
            prepared["eager:before"] = EagerPrepared(reference, kind=REAL)
            prepared["eager:after"] = EagerPrepared(deployed, kind=label)
            continue
        try:
            before, after = _onnx_pair(reference, work, bits, data, threads, calibration, max_samples, notes)
        except WorkbenchError as exc:
            notes.append(f"{name}: not measured: {first_line(exc)}; the eager numbers are given instead")
            continue
        onnx_bytes = after.model_bytes
        prepared[f"{name}:before"], prepared[f"{name}:after"] = before, after
        evals[(name, "before")] = evaluate_runtime(before, data, batch_size=eval_batch_size)
        evals[(name, "after")] = evaluate_runtime(after, data, batch_size=eval_batch_size)
    if not prepared:
        prepared["eager:before"] = EagerPrepared(reference, kind=REAL)
        prepared["eager:after"] = EagerPrepared(deployed, kind=label)
    # Keep the order the caller asked for (the first runtime is `before`/`after`), eager last if substituted.
    return prepared, evals, onnx_bytes


def _onnx_pair(reference, work, bits, data, threads, calibration, max_samples, notes):
    """The original and the compressed model on ONNX Runtime; 8-bit layers real int8 (QDQ)."""
    from analysis.layers import example_input
    from analysis.runtime.base import prepare
    from analysis.runtime.int8 import prepare_int8

    shape = data.input_shape
    before = prepare(reference, "onnxruntime", shape, threads)
    int8 = sorted(n for n, b in bits.items() if b == 8)
    other = sorted(n for n, b in bits.items() if b != 8)
    if int8:
        after, quantized = prepare_int8(
            work, data, int8, threads, calibration, max_samples, example_input=example_input(shape, 2)
        )
        notes.extend(f"onnxruntime: {note}" for note in quantized.notes)
        notes.append(
            f"onnxruntime: {len(quantized.int8_layers)} layer(s) run real int8 (static QDQ, {calibration} "
            f"calibration on {quantized.calibration_samples} training samples); accuracy is the ONNX model's own"
        )
    else:
        after = prepare(work, "onnxruntime", shape, threads)
    if other:
        after.kind = SIMULATED
        notes.append(
            f"onnxruntime: {', '.join(other[:4])}{', ...' if len(other) > 4 else ''} at bits other than 8 run "
            "as float with weights on the b-bit grid: that latency is simulated"
        )
    return before, after


def _sparse_bytes(
    work: nn.Module, bits, unstructured_ratios, dense_bytes: int, notes: list[str]
) -> int | None:
    """Bytes in the sparse format where anything was pruned unstructured (with a note saying what it means)."""
    if not unstructured_ratios:
        return None
    zeros, total = count_zeros(work)
    sparse = sparse_size_bytes(work, bits)
    notes.append(
        f"{UNSTRUCTURED_NOTE} Sparsity {zeros / max(total, 1):.1%} of prunable weights; stored sparse "
        f"({SPARSE_FORMAT}) the model would take {sparse:,} bytes vs {dense_bytes:,} dense"
    )
    return sparse


def _finetune_step(
    work: nn.Module,
    reference: nn.Module,
    data: Dataset,
    ft,
    quantizes: bool,
    progress: Progress | None,
    notes: list[str],
) -> dict | None:
    """Fine-tune `work` in place as the plan says (distilled from `reference` if asked); its summary."""
    if ft.epochs <= 0:
        return None
    if not data.has_train_split:
        notes.append(
            "the data has no training split, so fine-tuning used the evaluation split: the after accuracy "
            "is optimistic (give x_train/y_train for an honest number)"
        )
    trained = finetune(
        work,
        data,
        ft,
        teacher=reference if ft.distill else None,
        progress=progress,
        inplace=True,
        lr_schedule=ft.lr_schedule,
    )
    if quantizes:
        notes.append("weights were quantized after fine-tuning (post-training quantization)")
    return trained.to_dict()


def _deploy(
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


def _metrics(ev, params: int, nonzero: int, macs: int, size: int, timing) -> ModelMetrics:
    spread = timing.spread
    return ModelMetrics(
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


def save_model(model: nn.Module, path: str | Path) -> Path:
    """Write the whole module with `torch.save`, atomically, so `evaluate --model FILE --trust-pickle` loads
    it. The file is a pickle: loading it runs code, which is why loading needs `--trust-pickle`."""
    path = Path(path)
    if path.suffix.lower() not in (".pt", ".pth"):
        raise WorkbenchError(
            f"save the compressed model as .pt or .pth (a pickled module), not {path.suffix!r}"
        )
    return write_atomic(path, lambda tmp: torch.save(model, tmp))


__all__ = ["CompressionResult", "ModelMetrics", "compress", "save_model"]
