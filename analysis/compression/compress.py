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
from dataclasses import replace
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
from analysis.progress import Forward, Progress
from analysis.runtime.measure import (
    check_calibration,
    check_runtimes,
    deploy,
    measure_runtimes,
    metrics,
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
        self.forward = Forward(progress, total)  # only forward, each value once

    @classmethod
    def for_compress(
        cls, data: Dataset, ft, eval_batch_size: int, latency_rounds: int, progress, schedule=None
    ) -> _Stages:
        """The stages of `compress`, sized in evaluation batches, training steps and latency runs; a
        schedule's pruning by the training and evaluation its steps do, so the bar moves as it works."""
        evals = max(len(data.x) // eval_batch_size, 1)
        train_batches = (len(data.x_train) + ft.batch_size - 1) // ft.batch_size
        sizes = {
            "before": evals,
            "prune": 1 if schedule is None else _schedule_size(schedule, train_batches, evals),
            "finetune": ft.epochs * train_batches,
            "after": evals,
            "latency": latency_rounds * 3,
        }
        return cls(sizes, progress)

    def step(self, name: str) -> Progress | None:
        if self.progress is None:
            return None
        offset, size = self.offsets[name], self.sizes[name]

        def report(done: int, total: int) -> None:
            self.forward.report(offset + round(size * done / max(total, 1)))

        return report

    def finish(self, name: str) -> None:
        self.forward.report(self.offsets[name] + self.sizes[name])


def _schedule_size(schedule, train_batches: int, evals: int) -> int:
    """A schedule's work in training and evaluation batches: its epochs of training and one evaluation per
    step."""
    if schedule.method in ("slimming", "group-lasso"):
        epochs, steps = schedule.epochs, 2
    elif schedule.method == "oneshot":
        epochs, steps = 0, 1
    else:
        epochs, steps = schedule.steps * schedule.epochs_per_step, schedule.steps
    return max(1, round((epochs + schedule.finetune_epochs) * train_batches) + steps * evals)


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
    # ~100 lines only because the result's ~35 fields are listed one per line; each stage is a helper.
    started = time.perf_counter()
    if not isinstance(plan, CompressionPlan):
        plan = CompressionPlan.from_dict(plan)
    whole(batch_size, "batch size")
    runtime_names = check_runtimes(runtimes)
    calibration = check_calibration(calibration)
    eval_device = resolve_eval_device(device)
    plan.check_layers(model)
    input_shape = data.input_shape
    reference = copy_model(model).eval()  # teacher and "before"; the caller's model is never run
    score = scoring(metric, reference, data)
    work = copy_model(model).eval()
    structured, criteria, unstructured_ratios, bits, groups, notes = _resolve(plan, work, input_shape)
    transform_settings = _transform_settings(plan, work)
    ft = _resolved_finetune(plan.finetune, data)
    schedule = plan.schedule if plan.scheduled or (plan.schedule and not plan.prunes_per_layer) else None
    stages = _Stages.for_compress(
        data, ft if schedule is None else replace(ft, epochs=0), eval_batch_size, latency_rounds, progress,
        schedule,
    )  # fmt: skip
    before_eval = evaluate(
        reference, data, batch_size=eval_batch_size, progress=stages.step("before"), device=eval_device,
        metric=score,
    )  # fmt: skip
    stages.finish("before")

    finetune_info = None
    if schedule is not None:
        work, trajectory, stopped, schedule_info = steps.schedule_step(
            reference, data, schedule, ft, stages.step("prune"), on_step, should_stop, notes, score
        )
        struct_groups: list[dict] = []
    else:
        trajectory, stopped, schedule_info = [], False, None
        struct = prune_structured(work, structured, input_shape, criteria=criteria, data=data,
                                  max_samples=max_samples, groups=groups or None)  # fmt: skip
        notes.extend(struct.notes)
        struct_groups = struct.groups
        prune_unstructured(work, unstructured_ratios)
    stages.finish("prune")
    if schedule is None:
        finetune_info = steps.finetune_step(
            work, reference, data, ft, bool(bits), stages.step("finetune"), notes
        )
    make_permanent(work)
    quantized = quantize_weights(work, bits)
    unstructured_done = {
        name: float((work.get_submodule(name).weight == 0).float().mean()) for name in unstructured_ratios
    }
    zeros, total = count_zeros(work)
    work, transforms, saved_by_transforms = steps.transform_step(
        work, transform_settings, plan.huffman, notes, data
    )
    stages.finish("finetune")
    deployed, int8_layers, label = deploy(work, bits, quantized, real_int8, notes)

    after_eval = evaluate(
        deployed, data, batch_size=eval_batch_size, progress=stages.step("after"), device=eval_device,
        metric=score,
    )  # fmt: skip
    simulated_eval = (
        evaluate(work, data, batch_size=eval_batch_size, device=eval_device, metric=score)
        if deployed is not work
        else None
    )
    stages.finish("after")
    timing = {"batch_size": batch_size, "threads": threads, "rounds": latency_rounds,
              "runs_per_round": runs_per_round, "warmup": warmup}  # fmt: skip
    evals, timings, onnx_bytes, measured = measure_runtimes(
        runtime_names, (reference, work, deployed), label, bits, data, calibration, max_samples,
        eval_batch_size, (before_eval, after_eval, simulated_eval), eval_device, timing,
        stages.step("latency"), notes, score,
    )  # fmt: skip
    stages.finish("latency")

    after_size = quantized_size_bytes(work, bits) - saved_by_transforms
    if transforms:
        transforms["size_bytes_total"] = after_size
    sparse_bytes = steps.sparse_bytes(work, bits, unstructured_ratios, after_size, notes)
    per_runtime, after_counts = per_runtime_metrics(
        measured, evals, timings, reference, work, input_shape, after_size
    )
    first = measured[0]
    # What follows only fills in the result's fields, one per line.
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
            metrics(simulated_eval, *after_counts, timings["eager:simulated"])
            if "eager:simulated" in timings
            else None
        ),
        finetune=finetune_info,
        notes=notes,
        seconds=time.perf_counter() - started,
        cpu=timings[f"{first}:before"].cpu,
        torch_version=torch.__version__,
        speedup_paired=paired_speedup(timings[f"{first}:before"], timings[f"{first}:after"], runs_per_round),
        runtimes=per_runtime,
        trajectory=trajectory,
        stopped=stopped,
        onnx_bytes=onnx_bytes,
        transforms=transforms,
        schedule=schedule_info,
        float_model=work,
    )


__all__ = ["CompressionResult", "ModelMetrics", "compress"]
