"""Apply a compression plan and measure everything: accuracy, loss, params, MACs, size and latency, before
and after, timed the same way (docs/contract.md sections 3-5).

Order of work, on a private deep copy (the model handed in is never touched):
1. structured pruning: coupled groups lose channels for real (Torch-Pruning), or the plan's `schedule`
   (iterative, AGP, slimming, group lasso: `run_schedule`, which trains between its steps);
2. unstructured pruning: smallest-|w| weights zeroed (masks kept during fine-tuning);
3. optional fine-tuning on the training split, optionally distilled from the uncompressed model;
4. masks made permanent, then weights quantized (post-training, per docs/contract.md section 5);
5. transforms (`rank`, `share_bits`, `weights`: `apply_transforms`), their stored sizes in `size_bytes`;
6. 8-bit Linear layers swapped for the real dynamic int8 kernel where the CPU has one (eager); on ONNX
   Runtime 8-bit layers run real int8 (static QDQ);
7. before and after timed on each runtime in alternating rounds at the same batch size, threads, warm-up.

One module (runtime measurement is in `measure`): its helpers are the steps above, in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from analysis.compression import steps
from analysis.compression.plan import CompressionPlan, LayerSettings
from analysis.compression.result import CompressionResult, ModelMetrics
from analysis.data import DEFAULT_MAX_SAMPLES, Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.latency import DEFAULT_BATCH_SIZE
from analysis.metrics import Scoring, scoring
from analysis.model.layers import copy_model, example_inputs, output_layers, output_shapes, prunable_layers
from analysis.progress import Progress
from analysis.runtime.measure import (
    check_calibration,
    check_runtimes,
    deploy,
    measure_runtimes,
    paired_speedup,
    per_runtime_metrics,
    resolve_eval_device,
)
from analysis.transforms.groups import find_groups
from analysis.transforms.pruning import (
    count_zeros,
    make_permanent,
    prune_structured,
    prune_unstructured,
)
from analysis.transforms.quantization import (
    quantize_weights,
    quantized_size_bytes,
)
from analysis.transforms.registry import TRANSFORMS
from analysis.validate import whole


def _resolve(plan: CompressionPlan, model: nn.Module, input_shape: tuple[int, ...]):
    """Per-group structured ratios and criteria, per-layer unstructured ratios and bits, and notes."""
    layers = prunable_layers(model)
    _refuse_output_layers(plan, model, input_shape)
    notes: list[str] = []
    structured: dict[str, float] = {}
    criteria: dict[str, str] = {}
    group_members: dict[str, list[str]] = {}
    groups = []
    wants_structured = any(
        s.structured and s.prune > 0 for s in [plan.default] + [plan.settings_for(n) for n in plan.layers]
    )
    if wants_structured:
        groups = find_groups(model, input_shape, notes=notes)  # groups left whole, one line each
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


def _refuse_output_layers(plan: CompressionPlan, model: nn.Module, input_shape) -> None:
    """One line naming the plan's layers whose output channels are a model output, if it prunes any of
    them structurally: removing those channels would change an output's shape. (`default` never reaches
    them: their groups are left out.)"""
    exposed = output_layers(model, example_inputs(input_shape))
    named = [
        n
        for n in exposed
        if plan.names(n, "prune") and plan.settings_for(n).structured and plan.settings_for(n).prune > 0
    ]
    if not named:
        return
    shapes = output_shapes(model, example_inputs(input_shape))
    classes = len(shapes) == 1 and len(shapes[0]) == 2 and shapes[0][1] >= 2
    final = exposed[-1] if classes else None  # one (N, classes) output: its last layer gives the classes
    why = [f"{final!r} is the final classifier: its outputs are the classes"] if final in named else []
    others = [n for n in named if n != final]
    if others:
        why.insert(0, f"the output channels of {', '.join(repr(n) for n in others)} are a model output")
    raise WorkbenchError(
        f"the plan prunes {', '.join(repr(n) for n in named)} structurally, but {'; '.join(why)}. Give "
        f'{"it" if len(named) == 1 else "them"} "structured": false (unstructured pruning) or only "bits"'
    )


def _resolved_finetune(ft, data: Dataset):
    """The plan's fine-tuning with the recovery recipe's epochs filled in (recipe recovery, epochs 0)."""
    if ft.recovers and ft.epochs == 0:
        from dataclasses import replace

        from analysis.compression.schedules import recovery_epochs

        return replace(ft, epochs=recovery_epochs(len(data.x_train), ft.batch_size))
    return ft


def _transform_settings(plan: CompressionPlan, model: nn.Module) -> dict[str, dict]:
    """Resolved settings of each layer that has a transform (rank, share_bits, weights, registered ones). A
    transform in the default reaches only the layers its handler `applies_to` (rank: Linear and groups=1
    Conv2d); a layer the plan names for one it cannot take is a one-line error."""
    out = {}
    for name, module in prunable_layers(model).items():
        settings = plan.settings_for(name)
        refused = [key for key in settings.transforms if not TRANSFORMS[key].applies_to(module)]
        for key in refused:
            if plan.names(name, key):
                raise WorkbenchError(f"layer {name!r}: {key} needs {TRANSFORMS[key].needs}")
        if len(refused) < len(settings.transforms):
            out[name] = {k: v for k, v in settings.to_dict().items() if k not in refused}
    return out


@dataclass
class _Run:
    """What `compress` settles before changing anything: the plan and options checked, its two private
    copies (`reference`: the teacher and "before"; `work`: the one compressed), what the plan asks of each
    layer (`_resolve`), the notes so far and the progress stages."""

    plan: CompressionPlan
    runtimes: tuple[str, ...]
    calibration: str
    device: torch.device | None
    score: Scoring
    reference: nn.Module
    work: nn.Module
    structured: dict[str, float]
    criteria: dict[str, str]
    unstructured: dict[str, float]
    bits: dict[str, int]
    groups: list
    notes: list[str]
    transform_settings: dict[str, dict]
    ft: Any
    schedule: Any
    stages: steps.Stages


@dataclass
class _Applied:
    """What applying the plan to `work` did: the compressed float model and each step's record."""

    work: nn.Module
    trajectory: list[dict]
    stopped: bool
    schedule: dict | None
    groups: list[dict]
    finetune: dict | None
    quantized: dict
    unstructured: dict[str, float]
    zeros: int
    total: int
    transforms: dict
    saved_by_transforms: int


@dataclass
class _Measured:
    """The model that runs, its evaluations and its timings on each runtime (`runtimes`: those measured)."""

    deployed: nn.Module
    int8_layers: list[str]
    simulated_eval: Any
    evals: dict
    timings: dict
    onnx_bytes: bytes | None
    runtimes: list[str]


def _prepare(model, plan, data: Dataset, progress, batch_size, runtimes, calibration, device, metric,
             eval_batch_size: int, latency_rounds: int) -> _Run:  # fmt: skip
    """The plan and options checked and resolved on private copies of `model`, and the progress stages."""
    if not isinstance(plan, CompressionPlan):
        plan = CompressionPlan.from_dict(plan)
    whole(batch_size, "batch size")
    runtime_names = check_runtimes(runtimes)
    calibration = check_calibration(calibration)
    eval_device = resolve_eval_device(device)
    plan.check_layers(model)
    reference = copy_model(model).eval()  # teacher and "before"; the caller's model is never run
    score = scoring(metric, reference, data)
    work = copy_model(model).eval()
    structured, criteria, unstructured, bits, groups, notes = _resolve(plan, work, data.input_shape)
    transform_settings = _transform_settings(plan, work)
    ft = _resolved_finetune(plan.finetune, data)
    schedule = plan.schedule if plan.scheduled or (plan.schedule and not plan.prunes_per_layer) else None
    stages = steps.Stages.for_compress(
        data, ft if schedule is None else replace(ft, epochs=0), eval_batch_size, latency_rounds, progress,
        schedule,
    )  # fmt: skip
    return _Run(plan, runtime_names, calibration, eval_device, score, reference, work, structured, criteria,
                unstructured, bits, groups, notes, transform_settings, ft, schedule, stages)  # fmt: skip


def _apply(run: _Run, data: Dataset, max_samples: int, on_step, should_stop) -> _Applied:
    """The plan applied to `run.work`: the schedule or one-shot pruning, fine-tuning, masks made permanent,
    weights quantized, then the transforms."""
    work, notes, finetune_info = run.work, run.notes, None
    if run.schedule is not None:
        work, trajectory, stopped, schedule_info = steps.schedule_step(
            run.reference, data, run.schedule, run.ft, run.stages.step("prune"), on_step, should_stop, notes,
            run.score,
        )  # fmt: skip
        struct_groups: list[dict] = []
    else:
        trajectory, stopped, schedule_info = [], False, None
        struct = prune_structured(work, run.structured, data.input_shape, criteria=run.criteria, data=data,
                                  max_samples=max_samples, groups=run.groups or None)  # fmt: skip
        notes.extend(struct.notes)
        struct_groups = struct.groups
        prune_unstructured(work, run.unstructured)
    run.stages.finish("prune")
    if run.schedule is None:
        finetune_info = steps.finetune_step(
            work, run.reference, data, run.ft, bool(run.bits), run.stages.step("finetune"), notes
        )
    make_permanent(work)
    quantized = quantize_weights(work, run.bits)
    unstructured_done = {
        name: float((work.get_submodule(name).weight == 0).float().mean()) for name in run.unstructured
    }
    zeros, total = count_zeros(work)
    work, transforms, saved = steps.transform_step(
        work, run.transform_settings, run.plan.huffman, notes, data
    )
    run.stages.finish("finetune")
    return _Applied(work, trajectory, stopped, schedule_info, struct_groups, finetune_info, quantized,
                    unstructured_done, zeros, total, transforms, saved)  # fmt: skip


def _evaluate(run: _Run, model: nn.Module, data: Dataset, eval_batch_size: int, stage: str | None):
    """`model` scored on the evaluation split on the evaluation device (progress as `stage`, if named)."""
    progress = None if stage is None else run.stages.step(stage)
    return evaluate(model, data, batch_size=eval_batch_size, progress=progress, device=run.device,
                    metric=run.score)  # fmt: skip


def _measure(run: _Run, applied: _Applied, data: Dataset, before_eval, real_int8: bool, max_samples: int,
             eval_batch_size: int, timing: dict) -> _Measured:  # fmt: skip
    """The compressed model deployed (real int8 where it runs), evaluated, then timed against the reference
    on each runtime."""
    work = applied.work
    deployed, int8_layers, label = deploy(work, run.bits, applied.quantized, real_int8, run.notes)
    after_eval = _evaluate(run, deployed, data, eval_batch_size, "after")
    simulated_eval = _evaluate(run, work, data, eval_batch_size, None) if deployed is not work else None
    run.stages.finish("after")
    evals, timings, onnx_bytes, measured = measure_runtimes(
        run.runtimes, (run.reference, work, deployed), label, run.bits, data, run.calibration, max_samples,
        eval_batch_size, (before_eval, after_eval, simulated_eval), run.device, timing,
        run.stages.step("latency"), run.notes, run.score,
    )  # fmt: skip
    run.stages.finish("latency")
    return _Measured(deployed, int8_layers, simulated_eval, evals, timings, onnx_bytes, measured)


def _result(run: _Run, applied: _Applied, measured: _Measured, data: Dataset, batch_size: int,
            runs_per_round: int, seconds: float) -> CompressionResult:  # fmt: skip
    """The result: sizes (dense, transformed, sparse), each runtime's metrics, and what each step did."""
    work, timings, first = applied.work, measured.timings, measured.runtimes[0]
    after_size = quantized_size_bytes(work, run.bits) - applied.saved_by_transforms
    if applied.transforms:
        applied.transforms["size_bytes_total"] = after_size
    sparse_bytes = steps.sparse_bytes(work, run.bits, run.unstructured, after_size, run.notes)
    per_runtime, after_counts = per_runtime_metrics(
        measured.runtimes, measured.evals, timings, run.reference, work, data.input_shape, after_size
    )
    before_timing = timings[f"{first}:before"]
    return CompressionResult(
        before=per_runtime[first]["before"],
        after=per_runtime[first]["after"],
        plan=run.plan,
        model=measured.deployed,
        batch_size=batch_size,
        threads=before_timing.threads,
        groups=applied.groups,
        unstructured=applied.unstructured,
        quantized={name: q.bits for name, q in applied.quantized.items()},
        int8_layers=measured.int8_layers,
        sparsity=applied.zeros / max(applied.total, 1),
        sparse_size_bytes=sparse_bytes,
        simulated=(
            ModelMetrics.measured(measured.simulated_eval, *after_counts, timings["eager:simulated"])
            if "eager:simulated" in timings
            else None
        ),
        finetune=applied.finetune,
        notes=run.notes,
        seconds=seconds,
        cpu=before_timing.cpu,
        torch_version=torch.__version__,
        speedup_paired=paired_speedup(before_timing, timings[f"{first}:after"], runs_per_round),
        runtimes=per_runtime,
        trajectory=applied.trajectory,
        stopped=applied.stopped,
        onnx_bytes=measured.onnx_bytes,
        transforms=applied.transforms,
        schedule=applied.schedule,
        float_model=work,
    )


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
    metric: str | Scoring = "auto",
) -> CompressionResult:
    """Apply `plan` to a copy of `model` and measure before and after on `data`'s evaluation split.

    Both are scored in `metric` (`analysis.metrics`; `auto`: accuracy for a labelled classifier, else
    agreement or PSNR against the original model's outputs, computed once on a private copy). Without
    labels, fine-tuning learns the original model's outputs.

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
    run = _prepare(model, plan, data, progress, batch_size, runtimes, calibration, device, metric,
                   eval_batch_size, latency_rounds)  # fmt: skip
    before_eval = _evaluate(run, run.reference, data, eval_batch_size, "before")
    run.stages.finish("before")
    applied = _apply(run, data, max_samples, on_step, should_stop)
    timing = {"batch_size": batch_size, "threads": threads, "rounds": latency_rounds,
              "runs_per_round": runs_per_round, "warmup": warmup}  # fmt: skip
    measured = _measure(run, applied, data, before_eval, real_int8, max_samples, eval_batch_size, timing)
    return _result(run, applied, measured, data, batch_size, runs_per_round, time.perf_counter() - started)


__all__ = ["CompressionResult", "ModelMetrics", "compress"]
