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
from collections.abc import Mapping
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
from analysis.cost import count_params, size_bytes, summarize
from analysis.data import DEFAULT_MAX_SAMPLES, Dataset
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.io import write_atomic
from analysis.latency import DEFAULT_BATCH_SIZE, compare_latency
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
) -> CompressionResult:
    """Apply `plan` to a copy of `model` and measure before and after on `data`'s evaluation split.

    Latency: `latency_rounds` alternating rounds of `runs_per_round` forward passes of `batch_size` samples
    per model, after `warmup` passes, with `threads` intra-op threads (None: as set). With `real_int8`,
    Linear layers at 8 bits run the CPU's dynamic int8 kernel where there is one. `max_samples` caps the
    samples data-driven criteria see. `model` itself is never changed.
    """
    # Long by design (~85 lines of body): the steps read top to bottom in the order the module docstring
    # lists, each one call; the rest is assembling the result's fields.
    started = time.perf_counter()
    if not isinstance(plan, CompressionPlan):
        plan = CompressionPlan.from_dict(plan)
    whole(batch_size, "batch size")
    plan.check_layers(model)
    input_shape = data.input_shape
    reference = copy_model(model).eval()  # teacher and "before"; the caller's model is never run
    work = copy_model(model).eval()
    structured, criteria, unstructured_ratios, bits, groups, notes = _resolve(plan, work, input_shape)
    ft = plan.finetune
    stages = _Stages.for_compress(data, ft, eval_batch_size, latency_rounds, progress)
    before_eval = evaluate(reference, data, batch_size=eval_batch_size, progress=stages.step("before"))
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
    finetune_info = _finetune_step(work, reference, data, ft, bool(bits), stages.step("finetune"), notes)
    make_permanent(work)
    quantized = quantize_weights(work, bits)
    stages.finish("finetune")
    deployed, int8_layers, label = _deploy(work, bits, quantized, real_int8, notes)

    after_eval = evaluate(deployed, data, batch_size=eval_batch_size, progress=stages.step("after"))
    simulated_eval = evaluate(work, data, batch_size=eval_batch_size) if deployed is not work else None
    stages.finish("after")
    models = {"before": reference, "after": deployed} | ({"simulated": work} if simulated_eval else {})
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
    sparse_bytes = _sparse_bytes(work, bits, unstructured_ratios, after_size, notes)
    before_cost, after_cost = summarize(reference, input_shape), summarize(work, input_shape)
    after_counts = (count_params(work), _nonzero(work), after_cost.total_macs, after_size)
    before_counts = (
        before_cost.total_params,
        _nonzero(reference),
        before_cost.total_macs,
        size_bytes(reference),
    )
    return CompressionResult(
        before=_metrics(before_eval, *before_counts, timings["before"]),
        after=_metrics(after_eval, *after_counts, timings["after"]),
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
        simulated=_metrics(simulated_eval, *after_counts, timings["simulated"]) if simulated_eval else None,
        finetune=finetune_info,
        notes=notes,
        seconds=time.perf_counter() - started,
        cpu=timings["before"].cpu,
        torch_version=torch.__version__,
        speedup_paired=_paired_speedup(timings["before"], timings["after"], runs_per_round),
    )


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
        work, data, ft, teacher=reference if ft.distill else None, progress=progress, inplace=True
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
