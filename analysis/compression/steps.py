"""The steps `compress` runs between applying a plan and measuring it: a schedule, the plan's transforms,
fine-tuning, and the sparse-storage note (one function each, so `compress` reads as the order of steps),
and `Stages`, which turns their progress into one stream."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from analysis.compression.finetune import finetune
from analysis.compression.result import UNSTRUCTURED_NOTE
from analysis.compression.schedules import run_schedule
from analysis.compression.training import recalibrate_bn
from analysis.data import Dataset
from analysis.progress import Forward, Progress
from analysis.transforms.fields import apply_transforms
from analysis.transforms.lowrank import CALIBRATION_SAMPLES as LOWRANK_CALIBRATION_SAMPLES
from analysis.transforms.pruning import SPARSE_FORMAT, count_zeros, make_permanent, sparse_size_bytes


class Stages:
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
    ) -> Stages:
        """The stages of `compress`, sized in evaluation batches, training steps and latency runs; a
        schedule's pruning by the training and evaluation its steps do, so the bar moves as it works."""
        evals = max(len(data.x) // eval_batch_size, 1)
        train_batches = (len(data.x_train) + ft.batch_size - 1) // ft.batch_size
        sizes = {
            "before": evals,
            "prune": 1 if schedule is None else schedule_size(schedule, train_batches, evals),
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


def schedule_size(schedule, train_batches: int, evals: int) -> int:
    """A schedule's work in training and evaluation batches: its epochs of training and one evaluation per
    step."""
    if schedule.method in ("slimming", "group-lasso"):
        epochs, steps = schedule.epochs, 2
    elif schedule.method == "oneshot":
        epochs, steps = 0, 1
    else:
        epochs, steps = schedule.steps * schedule.epochs_per_step, schedule.steps
    return max(1, round((epochs + schedule.finetune_epochs) * train_batches) + steps * evals)


def schedule_step(reference, data: Dataset, schedule, ft, progress, on_step, should_stop, notes, score):
    """The plan's schedule run on `reference` (a copy is pruned): the model, trajectory, stopped, and the
    schedule's summary."""
    ran = run_schedule(
        reference,
        data,
        schedule,
        data.input_shape,
        finetune=ft if (ft.epochs > 0 or ft.recovers) else None,
        progress=progress,
        on_step=on_step,
        should_stop=should_stop,
        metric=score,
    )
    notes.extend(ran.notes)
    info = {k: v for k, v in ran.to_dict().items() if k not in ("trajectory", "notes", "stopped")}
    work = ran.model
    make_permanent(work)
    return work, ran.trajectory, ran.stopped, info


def transform_step(work: nn.Module, transform_settings, huffman: bool, notes: list[str], data: Dataset):
    """The model with the plan's transforms applied (factored layers fitted to their outputs on training
    samples, as the `lowrank` sweep does), their sizes, and the bytes they save."""
    if not transform_settings:
        if huffman:
            notes.append("huffman: no layer has share_bits, so there are no indices to code; sizes unchanged")
        return work, {}, 0
    calibration = data.x_train[:LOWRANK_CALIBRATION_SAMPLES]
    applied = apply_transforms(work, transform_settings, huffman=huffman, calibration=calibration)
    notes.extend(applied.notes)
    saved = sum(
        entry["float32_bytes"] - entry["bytes"]
        for entry in applied.sizes["layers"].values()
        if "float32_bytes" in entry and "bytes" in entry
    )
    return applied.model, applied.sizes, saved


def sparse_bytes(
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


def finetune_step(
    work: nn.Module,
    reference: nn.Module,
    data: Dataset,
    ft,
    quantizes: bool,
    progress: Progress | None,
    notes: list[str],
) -> dict | None:
    """Fine-tune `work` in place as the plan says (distilled from `reference` if asked); its summary. The
    recovery recipe first re-estimates the BatchNorm statistics the pruning left stale (`recalibrate_bn`)."""
    if ft.epochs <= 0:
        return None
    if ft.recovers and recalibrate_bn(work, data):
        notes.append("BatchNorm statistics re-estimated on the training split before fine-tuning")
    if not data.has_train_split:
        notes.append(
            "the data has no training split, so fine-tuning used the evaluation split: the after accuracy "
            "is optimistic (give x_train/y_train for an honest number)"
        )
    if not data.has_labels:
        notes.append(
            "the data has no labels: fine-tuning learned the original model's outputs (distillation)"
        )
    trained = finetune(
        work,
        data,
        ft,
        teacher=reference if ft.distill or not data.has_labels else None,
        progress=progress,
        inplace=True,
        lr_schedule=ft.lr_schedule,
    )
    if quantizes:
        notes.append("weights were quantized after fine-tuning (post-training quantization)")
    return trained.to_dict()


__all__ = ["finetune_step", "schedule_step", "sparse_bytes", "transform_step"]
