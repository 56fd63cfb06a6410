"""Sensitivity sweeps, oracle rankings and criteria calibration as Ray tasks over the layers (groups, for
structured sweeps), with the model and the data put once in the object store. By default one task per
worker slot, each taking every T-th layer (round-robin balances the expensive early layers);
`layers_per_task=1` gives one task per layer.

Each task runs the single-process function (`sensitivity_sweep` / `rank_channels`) restricted to its
layers; the driver merges the per-layer curves and scores in the single-process order. Every point of a
sweep and every channel of an oracle ranking is computed from the same model, the same samples and the
same batches as in one process, so the merged numbers equal the single-process run's (tests/test_scale.py
checks it). One caveat: where the activation cache does not fit `max_cache_bytes`, a task caching fewer
layers may use larger chunks than the whole sweep, and losses may then differ in the last bits.

A task that raises or whose worker dies is retried (`max_retries`, exceptions included); a layer whose task
still fails is reported (`failed_layers`, and a note) while every other layer completes.

Where the work runs: `address=None` starts (or reuses) a local Ray instance with `num_cpus` workers;
`"auto"` joins the cluster this machine belongs to, `"ray://host:10001"` a remote one through Ray Client.
Workers must be able to import `analysis` (install the package on every node) and, for `imagefolder:`
data, read the same image paths (a shared file system): a streaming dataset travels as file paths.

The tasks, chunking, faults and merging the two entry points share are in `tasks.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from analysis.distributed.tasks import (
    DEFAULT_MAX_RETRIES,
    FaultPlan,
    chunks,
    connect,
    outcome_notes,
    rank_chunk,
    run_tasks,
    slots,
    sweep_chunk,
)
from analysis.errors import WorkbenchError
from analysis.progress import Progress
from analysis.sensitivity.result import LowRankSensitivity, SensitivityResult


def _sweep_units(model: nn.Module, data, kind: str, layers: Sequence[str] | None, split: str) -> list[str]:
    """The sweep's units in single-process order: group names (structured) or prunable layer names."""
    from analysis.model.inputs import as_model_inputs
    from analysis.model.layers import prunable_layers
    from analysis.sensitivity.kinds import get_sweep_kind
    from analysis.sensitivity.sweep import _resolve_groups
    from analysis.transforms.groups import find_groups
    from analysis.validate import check_layer_names

    if get_sweep_kind(kind).unit == "groups":  # an unknown kind is one line listing the known ones
        example = as_model_inputs((data.x if split == "test" else data.x_train)[:1])
        groups = _resolve_groups(find_groups(model, example), layers, model)
        if not groups:
            raise WorkbenchError(
                "the model has no prunable channel groups (Conv or Linear layers before the output)"
            )
        return [g.name for g in groups]
    prunable = prunable_layers(model)
    names = list(prunable) if layers is None else check_layer_names(model, layers, prunable)
    if not names:
        raise WorkbenchError("the model has no Conv or Linear layers to sweep")
    return names


def _run_in_order(task, model, data, units: list[str], kwargs: dict, nothing: str, *, layers_per_task,
                  threads_per_task, max_retries, progress, should_stop, fault):  # fmt: skip
    """`run_tasks` over `units` in chunks, the chunk results put back in the single-process order of
    `units`: (ordered results, failed {unit: error}, stopped units). No result at all: WorkbenchError
    starting with `nothing`."""
    results, failed, stopped = run_tasks(
        task, model, data, chunks(units, layers_per_task, slots(threads_per_task)), kwargs,
        threads_per_task=threads_per_task, max_retries=max_retries, progress=progress,
        should_stop=should_stop, fault=fault,
    )  # fmt: skip
    if not results:
        raise WorkbenchError(f"{nothing}: {next(iter(failed.values()), 'stopped before any task finished')}")
    position = {name: i for i, name in enumerate(units)}
    ordered = sorted(results, key=lambda r: min(position.get(n, len(units)) for n in r.layers))
    return ordered, failed, stopped


def _merged_sweep(ordered, units: list[str], notes: list[str], seconds: float, failed: dict, stopped: list):
    """The per-task sweeps as one result, layers in the single-process order."""
    curves = {}
    for r in ordered:
        curves.update(r.layers)
    curves = {name: curves[name] for name in units if name in curves}
    first = ordered[0]
    common = dict(
        kind=first.kind,
        baseline_accuracy=first.baseline_accuracy,
        baseline_loss=first.baseline_loss,
        seconds=seconds,
        layers=curves,
        notes=tuple(notes),
        samples=first.samples,
        max_drop=first.max_drop,
        partial=bool(stopped),
        failed_layers=failed,
        metric=first.metric,
    )
    if isinstance(first, LowRankSensitivity):  # keep each layer's ranks and MACs/params saved
        per_layer = {
            attr: {n: v for r in ordered for n, v in getattr(r, attr).items() if n in curves}
            for attr in ("ranks", "macs_saved", "params_saved")
        }
        return LowRankSensitivity(**common, **per_layer)
    return SensitivityResult(**common)


def ray_sensitivity_sweep(
    model: nn.Module,
    data,
    kind: str = "structured",
    ratios: Sequence[float] | None = None,
    bits: Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
    max_drop: float | None = None,
    batch_size: int = 256,
    split: str = "test",
    limit: int | None = None,
    max_cache_bytes: int | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    threads_per_task: int = 1,
    layers_per_task: int | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    should_stop: Callable[[], bool] | None = None,
    fault: FaultPlan | None = None,
    metric: str = "auto",
):
    """`analysis.sensitivity_sweep` with one Ray task per layer/group (or chunk): same arguments, same
    numbers, plus `failed_layers` {name: error} for layers whose task failed after `max_retries` retries.

    `progress(layers_done, layers_total)` is called as tasks finish; `should_stop()` cancels the tasks not
    yet finished (their layers are missing from the result, with a note). `seconds` is the wall time.
    """
    start = time.perf_counter()
    connect(address, num_cpus)
    units = _sweep_units(model, data, kind, layers, split)
    kwargs: dict[str, Any] = dict(
        kind=kind,
        ratios=ratios,
        bits=bits,
        max_drop=max_drop,
        batch_size=batch_size,
        split=split,
        limit=limit,
        metric=metric,  # a name: each task scores against its own copy of the original model
    )
    if max_cache_bytes is not None:
        kwargs["max_cache_bytes"] = max_cache_bytes
    ordered, failed, stopped = _run_in_order(
        sweep_chunk, model, data, units, kwargs, "no layer of the sweep could be computed on Ray",
        layers_per_task=layers_per_task, threads_per_task=threads_per_task, max_retries=max_retries,
        progress=progress, should_stop=should_stop, fault=fault,
    )  # fmt: skip
    notes = outcome_notes([r.notes for r in ordered], units, failed, stopped, max_retries, "swept")
    return _merged_sweep(ordered, units, notes, time.perf_counter() - start, failed, stopped)


def ray_rank_channels(
    model: nn.Module,
    data,
    criteria: Iterable[str] | None = None,
    layers: Iterable[str] | None = None,
    max_samples: int | None = None,
    oracle: bool = True,
    progress: Progress | None = None,
    *,
    oracle_max_samples: int | None = None,
    topk_fraction: float | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    threads_per_task: int = 1,
    layers_per_task: int | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    should_stop: Callable[[], bool] | None = None,
    fault: FaultPlan | None = None,
):
    """`analysis.rank_channels` with one Ray task per layer (or chunk): the oracle and the calibration of
    the activation criteria for those layers run in the task; scores are merged and the correlations and
    overlaps computed once in the driver, so the result equals the single-process one. Layers whose task
    failed after every retry are left out and named in `notes`."""
    from analysis.importance.base import DEFAULT_MAX_SAMPLES, get_importance, prunable_layers
    from analysis.importance.rankings import DEFAULT_TOPK_FRACTION, RankingResult

    start = time.perf_counter()
    connect(address, num_cpus)
    layer_list = None if layers is None else ([layers] if isinstance(layers, str) else list(layers))
    units = list(prunable_layers(model, layer_list))
    if criteria is not None:
        criteria = [str(c).strip().lower() for c in criteria]
        for c in criteria:
            get_importance(c)
    topk = DEFAULT_TOPK_FRACTION if topk_fraction is None else topk_fraction
    kwargs: dict[str, Any] = dict(
        criteria=criteria,
        max_samples=DEFAULT_MAX_SAMPLES if max_samples is None else max_samples,
        oracle=oracle,
        oracle_max_samples=oracle_max_samples,
        topk_fraction=topk,
    )
    ordered, failed, stopped = _run_in_order(
        rank_chunk, model, data, units, kwargs, "no layer could be ranked on Ray",
        layers_per_task=layers_per_task, threads_per_task=threads_per_task, max_retries=max_retries,
        progress=progress, should_stop=should_stop, fault=fault,
    )  # fmt: skip
    first = ordered[0]
    per_layer = {}
    features = {}
    for r in ordered:
        per_layer.update(r.layers)
        features.update(r.features)
    scores = {
        c: {n: torch.tensor(per_layer[n][c], dtype=torch.float64) for n in units if n in per_layer}
        for c in first.criteria
    }
    notes = outcome_notes([r.notes for r in ordered], units, failed, stopped, max_retries, "ranked")
    return RankingResult.from_scores(
        scores,
        topk_fraction=topk,
        features={n: features[n] for n in units if n in features},
        samples=first.samples,
        oracle_samples=first.oracle_samples,
        oracle_baseline_loss=first.oracle_baseline_loss,
        seconds=time.perf_counter() - start,
        notes=tuple(notes),
    )
