"""Apply a compression plan and measure everything: accuracy, loss, params, MACs, size and latency, before
and after, timed the same way (CONTRACT sections 3-5).

Order of work, on a private deep copy (the model handed in is never touched):
1. structured pruning: coupled groups lose channels for real (Torch-Pruning);
2. unstructured pruning: smallest-|w| weights zeroed (masks kept during fine-tuning);
3. optional fine-tuning on the training split, optionally distilled from the uncompressed model;
4. masks made permanent, then weights quantized (post-training, per CONTRACT section 5);
5. 8-bit Linear layers swapped for the real dynamic int8 kernel where the CPU has one;
6. before and after timed in alternating rounds at the same batch size, threads and warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.compression.finetune import finetune
from analysis.compression.plan import CompressionPlan, LayerSettings
from analysis.compression.pruning import (
    SPARSE_FORMAT,
    copy_model,
    count_zeros,
    final_classifier,
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
from analysis.cost import count_params, size_bytes, summarize
from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.importance.base import prunable_layers
from analysis.io import write_atomic
from analysis.latency import DEFAULT_BATCH_SIZE, compare_latency

Progress = Callable[[int, int], None]

REAL, SIMULATED = "real", "simulated"
UNSTRUCTURED_NOTE = (
    "Unstructured pruning zeroes single weights but keeps every tensor dense: dense kernels do the same work "
    "on zeros, so MACs and latency do not drop (even cuSPARSE at 90% sparsity runs about as fast as a dense "
    "matrix). It saves space only when stored in a sparse format."
)


@dataclass(frozen=True)
class ModelMetrics:
    """One model's measured numbers: top-1 accuracy in [0, 1], mean cross-entropy (nats), parameters (and how
    many are nonzero), MACs per sample, size in bytes (quantized weights at their bits, CONTRACT section 5),
    and median latency in ms of one batch (p10/p90 too), labelled `real` or `simulated`."""

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

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
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
        }


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
        """After minus before accuracy, in [−1, 1] (multiply by 100 for points)."""
        return self.after.accuracy - self.before.accuracy

    def to_dict(self) -> dict[str, Any]:
        """CONTRACT section 3 `compress` keys (`before`, `after`, `plan`) plus the derived numbers."""
        return {
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "plan": self.plan.to_dict(),
            "speedup": self.speedup,
            "mac_reduction": self.mac_reduction,
            "efficiency": self.efficiency,
            "speedup_paired": self.speedup_paired,
            "efficiency_paired": self.efficiency_paired,
            "accuracy_delta": self.accuracy_delta,
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
        }


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
    max_samples: int = 2048,
    eval_batch_size: int = 256,
) -> CompressionResult:
    """Apply `plan` to a copy of `model` and measure before and after on `data`'s evaluation split.

    Latency: `latency_rounds` alternating rounds of `runs_per_round` forward passes of `batch_size` samples
    per model, after `warmup` passes, with `threads` intra-op threads (None: as set). With `real_int8`,
    Linear layers at 8 bits run the CPU's dynamic int8 kernel where there is one. `max_samples` caps the
    samples data-driven criteria see. `model` itself is never changed.
    """
    started = time.perf_counter()
    if not isinstance(plan, CompressionPlan):
        plan = CompressionPlan.from_dict(plan)
    if batch_size < 1:
        raise WorkbenchError(f"batch size must be at least 1, got {batch_size}")
    plan.check_layers(model)
    input_shape = data.input_shape
    reference = copy_model(model).eval()  # teacher and "before"; the caller's model is never run
    work = copy_model(model).eval()

    structured, criteria, unstructured_ratios, bits, groups, notes = _resolve(plan, work, input_shape)
    ft = plan.finetune
    steps = ft.epochs * ((len(data.x_train) + ft.batch_size - 1) // ft.batch_size)
    eval_steps = max(len(data.x) // eval_batch_size, 1)
    stages = _Stages(
        {
            "before": eval_steps,
            "prune": 1,
            "finetune": steps,
            "after": eval_steps,
            "latency": latency_rounds * 3,
        },
        progress,
    )

    before_eval = evaluate(reference, data, batch_size=eval_batch_size, progress=stages.step("before"))
    before_cost = summarize(reference, input_shape)
    stages.finish("before")

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
    prune_unstructured(work, unstructured_ratios)
    stages.finish("prune")

    finetune_info = None
    if ft.epochs > 0 and not data.has_train_split:
        notes.append(
            "the data has no training split, so fine-tuning used the evaluation split: the after accuracy "
            "is optimistic (give x_train/y_train for an honest number)"
        )
    if ft.epochs > 0:
        trained = finetune(
            work,
            data,
            ft,
            teacher=reference if ft.distill else None,
            progress=stages.step("finetune"),
            inplace=True,
        )
        finetune_info = trained.to_dict()
        if bits:
            notes.append("weights were quantized after fine-tuning (post-training quantization)")
    make_permanent(work)
    quantized = quantize_weights(work, bits)
    stages.finish("finetune")

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
    label = SIMULATED if fake_only else REAL
    if fake_only:
        notes.append(
            f"{len(fake_only)} quantized layer(s) ({', '.join(fake_only[:4])}{', ...' if len(fake_only) > 4 else ''}) "
            "have no real integer kernel here: their weights sit on the b-bit grid but are stored and run as "
            "float32, so the latency is simulated (float kernels), not that of a b-bit kernel"
        )

    after_eval = evaluate(deployed, data, batch_size=eval_batch_size, progress=stages.step("after"))
    simulated_eval = evaluate(work, data, batch_size=eval_batch_size) if deployed is not work else None
    after_cost = summarize(work, input_shape)
    stages.finish("after")

    models = {"before": reference, "after": deployed}
    if simulated_eval is not None:
        models["simulated"] = work
    timings = compare_latency(
        models,
        input_shape,
        batch_size=batch_size,
        threads=threads,
        rounds=latency_rounds,
        runs_per_round=runs_per_round,
        warmup=warmup,
        kinds={"before": REAL, "after": label, "simulated": SIMULATED},
        progress=stages.step("latency"),
    )
    stages.finish("latency")

    zeros, total = count_zeros(work)
    after_size = quantized_size_bytes(work, bits)
    sparse_bytes = None
    if unstructured_ratios:
        sparse_bytes = sparse_size_bytes(work, bits)
        notes.append(
            f"{UNSTRUCTURED_NOTE} Sparsity {zeros / max(total, 1):.1%} of prunable weights; stored sparse "
            f"({SPARSE_FORMAT}) the model would take {sparse_bytes:,} bytes vs {after_size:,} dense"
        )

    def metrics(ev, params, nonzero, macs, size, timing) -> ModelMetrics:
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
        )

    params_after, nonzero_after = count_params(work), _nonzero(work)
    before = metrics(
        before_eval,
        before_cost.total_params,
        _nonzero(reference),
        before_cost.total_macs,
        size_bytes(reference),
        timings["before"],
    )
    after = metrics(
        after_eval, params_after, nonzero_after, after_cost.total_macs, after_size, timings["after"]
    )
    simulated = None
    if simulated_eval is not None:
        simulated = metrics(
            simulated_eval,
            params_after,
            nonzero_after,
            after_cost.total_macs,
            after_size,
            timings["simulated"],
        )
    return CompressionResult(
        before=before,
        after=after,
        plan=plan,
        model=deployed,
        batch_size=batch_size,
        threads=timings["before"].threads,
        groups=struct.groups,
        unstructured={
            name: float((work.get_submodule(name).weight == 0).float().mean()) for name in unstructured_ratios
        },
        quantized={name: q.bits for name, q in quantized.items()},
        int8_layers=int8_layers,
        sparsity=zeros / max(total, 1),
        sparse_size_bytes=sparse_bytes,
        simulated=simulated,
        finetune=finetune_info,
        notes=notes,
        seconds=time.perf_counter() - started,
        cpu=timings["before"].cpu,
        torch_version=torch.__version__,
        speedup_paired=_paired_speedup(timings["before"], timings["after"], runs_per_round),
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
