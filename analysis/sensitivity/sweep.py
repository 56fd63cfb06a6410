"""Per-layer sensitivity sweeps: accuracy and loss of the model with one layer (or group) compressed.

Five kinds (docs/contract.md sections 5 and 8); `lowrank` (SVD at kept rank fractions) and `share` (k-means
weight sharing at codebook bits) are computed by `analysis.transforms.fields`, the first three here:
- `unstructured`: per prunable layer, the `round(r x numel)` weights of smallest |w| zeroed (ties: lower
  flat index first).
- `structured`: per prunable *group* (`analysis.transforms.groups`: layers coupled through residual adds or
  concatenations are one unit, named by its first layer), the `round(r x C_out)` channels of lowest
  group L1 removed (L1 summed over every Conv/Linear whose outputs the group removes), simulated by
  zeroing so that the logits equal physical removal. At least one channel is always kept.
- `quant`: per prunable layer, weights fake-quantized (symmetric, per output channel, 2^(b-1) - 1 levels
  each side); activations stay float.

Each point edits the model in place and restores it (no copy per point), and only the part of the network
downstream of the edited layer is recomputed, from cached activations (`analysis.fx.runner`). The numbers equal
a naive copy-prune-evaluate loop's. Scores are in the sweep's metric (`analysis.metrics`; accuracy by
default for labelled classifiers) and drops in its units and direction: 0.01 is one point of accuracy.

Memory: one copy of the model, one batch's cached activations (bounded by `max_cache_bytes`, see
`analysis.fx.runner`), a saved copy of each swept layer's parameters (for restoring), and for `unstructured`
the |w| order of each swept layer (one int64 per weight), computed once instead of per point.

One module: every sweep kind shares the edit, cut and merge helpers of the one loop.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from analysis import validate
from analysis.data import Dataset
from analysis.devices import on_device, parse_dtype, resolve_device
from analysis.errors import WorkbenchError
from analysis.fx.edits import Edit, RunnerResult, Tally
from analysis.fx.runner import DEFAULT_MAX_CACHE_BYTES, DownstreamRunner
from analysis.metrics import MetricInfo, Scoring, scoring
from analysis.model.inputs import as_model_inputs, to_device
from analysis.model.layers import prunable_layers
from analysis.progress import Forward, Progress
from analysis.sensitivity.kinds import DEFAULT_BITS, DEFAULT_RATIOS, get_sweep_kind
from analysis.sensitivity.result import (  # noqa: F401  (re-exported: the sweep's public types)
    _TOLERANCE,
    LowRankSensitivity,
    SensitivityCurve,
    SensitivityResult,
)
from analysis.sensitivity.transform_sweeps import cut_at_drop
from analysis.transforms.groups import PruningGroup, find_groups
from analysis.transforms.quantization import fake_quantize
from analysis.transforms.registry import TransformHandler
from analysis.validate import bit_widths, check_layer_names, few


def _unstructured_edit(name: str, order: torch.Tensor, k: int, key) -> Edit:
    def apply(model: nn.Module) -> None:
        w = model.get_submodule(name).weight
        if w.is_contiguous():
            w.view(-1).index_fill_(0, order[:k], 0.0)
        else:
            w.copy_(w.flatten().index_fill(0, order[:k], 0.0).reshape(w.shape))

    return Edit((name,), apply, key)


def _quant_edit(name: str, bits: int, key) -> Edit:
    def apply(model: nn.Module) -> None:
        w = model.get_submodule(name).weight
        w.copy_(fake_quantize(w, bits)[0])

    return Edit((name,), apply, key)


def _structured_edit(group: PruningGroup, channels: list[int], key) -> Edit:
    def apply(model: nn.Module) -> None:
        group.zero_channels(model, channels)

    return Edit(tuple(group.module_names), apply, key)  # a raw parameter's module, not the parameter


def _resolve_groups(
    groups: list[PruningGroup], layers: Sequence[str] | None, model: nn.Module
) -> list[PruningGroup]:
    if layers is None:
        return groups
    by_layer: dict[str, PruningGroup] = {}
    for g in groups:
        for name in g.out_layers:
            by_layer.setdefault(name, g)
        by_layer[g.name] = g
    chosen: list[PruningGroup] = []
    known = {n for n, _ in model.named_modules()}
    for name in layers:
        if name not in by_layer:
            if name in known:
                raise WorkbenchError(
                    f"layer {name!r} is in no prunable group (the final classifier keeps its outputs; "
                    f"norms go with their conv): choose one of {few(g.name for g in groups)}"
                )
            raise WorkbenchError(
                f"no layer named {name!r} in the model: choose one of {few(g.name for g in groups)}"
            )
        if by_layer[name] not in chosen:
            chosen.append(by_layer[name])
    return chosen


def _early_stop(chains: dict[str, list[int]], max_drop: float) -> Callable[[Tally], list[int]]:
    """Drop a layer's later points once one point's drop certainly exceeds `max_drop` (bounded with the
    samples still to come), so the result equals sweeping in order and stopping after the first bad point.
    For bounded metrics only (each sample scores 0..1, higher is better: accuracy, top5, agreement)."""

    def stop(tally: Tally) -> list[int]:
        dropped: list[int] = []
        for chain in chains.values():
            for pos, i in enumerate(chain):
                if not tally.active[i]:
                    break
                best_case = tally.correct[i] + tally.remaining  # every remaining sample right
                if (tally.baseline_correct - best_case) / tally.total > max_drop + _TOLERANCE:
                    dropped.extend(j for j in chain[pos + 1 :] if tally.active[j])
                    break
        return dropped

    return stop


def sensitivity_sweep(
    model: nn.Module,
    data: Dataset,
    kind: str = "structured",
    ratios: Sequence[float] | None = None,
    bits: Sequence[int] | None = None,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
    max_drop: float | None = None,
    use_cache: bool = True,
    batch_size: int = 256,
    split: str = "test",
    limit: int | None = None,
    max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    should_stop: Callable[[], bool] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    metric: str | Scoring = "auto",
    runtime: str | None = None,
) -> SensitivityResult:
    """The score in `metric` and the loss with each layer (group, for `structured`) compressed alone, at
    each ratio or bits.

    `metric` (`analysis.metrics`: `auto`, `accuracy`, `psnr`, ...): fidelity metrics compare with the
    unedited model's outputs on the same batch, so unlabelled data is enough. `layers` restricts the sweep
    (structured: group names, or any layer a group removes outputs of). `max_drop` (in the metric's units:
    0.01 = one point of accuracy, 1.0 = 1 dB of PSNR) stops a layer's sweep after the first point whose
    drop exceeds it, as NNI does; the curve then ends there. `use_cache=False` recomputes the whole network
    per point (same numbers; for comparison). The model is not changed.

    `lowrank` takes kept rank fractions in `ratios` (default 0.75, 0.5, 0.25, 0.125) and `share` codebook
    bits in `bits` (default 8 ... 1); both are `analysis.transforms.fields`' sweeps. A kind a registered
    transform adds (`analysis.transforms.registry`) sweeps its values (`ratios`, or `bits` for bit widths;
    default its `sweep_values`) on each layer it applies to, through its `sweep_weight`. `should_stop()` is
    polled between layers (groups): the sweep then returns the finished ones with `partial=True`.
    `device` (auto, cpu, cuda[:N]) runs the sweep on a private copy there; `dtype` (float16, bfloat16)
    runs it in that precision (the channels and weights each point removes are chosen in float32).
    `runtime` `onnxruntime` evaluates every point on ONNX Runtime instead (`analysis.runtime.edit_runner`:
    one export, weights swapped per point; a full pass each).
    """
    start = time.perf_counter()
    handler = get_sweep_kind(
        kind
    ).handler  # None for the base kinds; an unknown kind is one line listing them
    _check_options(max_drop, split)
    score = scoring(metric, model, data)
    runner_cls = _runner_class(runtime, device, dtype)
    if handler is not None and handler.builtin:
        return _transform_sweep(
            model, data, handler, ratios, bits, layers, progress, max_drop, batch_size,
            (split, limit, should_stop, runtime, score),
        )  # fmt: skip
    values = _sweep_values(kind, handler, ratios, bits)
    cast = parse_dtype(dtype)
    dev = None if device is None and cast is None else resolve_device(device or "cpu")
    work = (copy.deepcopy(model) if dev is None else on_device(model, dev)).eval()
    edits, members, notes = _edits(work, data, split, dev, kind, layers, values, handler)
    chains: dict[str, list[int]] = {}
    for i, edit in enumerate(edits):
        chains.setdefault(edit.key[0], []).append(i)
    x, y = _inputs(data, split, limit, dev)
    if cast is not None:  # after the edits are chosen, so they are the float32 sweep's
        work.to(dtype=cast)
        x = to_device(x, dev, cast)
    runner = runner_cls(work, x, y, batch_size=batch_size, use_cache=use_cache,
                        max_cache_bytes=max_cache_bytes, copy_model=False, scoring=score)  # fmt: skip
    bounded = score.metric_class.bounded and score.info.higher_is_better
    forward = Forward(progress, len(edits))  # evaluations: layers (groups) x ratios, skipped ones done
    out, edits, chains, partial = _evaluate_by_layer(
        runner, edits, chains, forward, max_drop if bounded else None, should_stop
    )
    notes = list(out.notes) + notes
    curves, stopped = _curves(out, edits, chains, members, max_drop, score.info)
    if stopped:
        notes.append(f"early stop at drop > {max_drop}: {few(stopped)} not swept past their first bad point")
    if partial:
        notes.append(f"stopped by request after {len(curves)} of {len(members)} {_unit(kind)}")
    base = out.baseline
    return SensitivityResult(
        kind=kind, baseline_accuracy=base.accuracy, baseline_loss=base.loss,
        seconds=time.perf_counter() - start, layers=curves, notes=tuple(notes), samples=base.samples,
        max_drop=max_drop, partial=partial, metric=score.info,
    )  # fmt: skip


def _check_options(max_drop: float | None, split: str) -> None:
    """A bad `max_drop` or `split` is one line."""
    if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):
        raise WorkbenchError(
            f"max_drop must be a non-negative drop in the metric's units (accuracy: 0.01 = 1 point), got {max_drop}"
        )
    if split not in ("test", "train"):
        raise WorkbenchError(f"unknown split {split!r}: use 'test' or 'train'")


def _runner_class(runtime: str | None, device, dtype) -> type:
    """The runner that evaluates the points on `runtime`; `device` and `dtype` are the eager runner's."""
    from analysis.runtime.edit_runner import runner_class

    runner_cls = runner_class(runtime)
    if runner_cls is not DownstreamRunner and (device is not None or dtype is not None):
        raise WorkbenchError(
            "--device and --dtype apply to the eager runtime: drop them or use --runtime eager"
        )
    return runner_cls


def _sweep_values(kind: str, handler: TransformHandler | None, ratios, bits) -> tuple:
    """The values each layer is swept at: a registered transform's, bit widths (quant) or ratios."""
    if handler is not None:
        return _handler_values(handler, bits if handler.values_are_bits else ratios)
    if kind == "quant":
        return bit_widths(DEFAULT_BITS if bits is None else bits)
    return validate.ratios(DEFAULT_RATIOS if ratios is None else ratios)


def _edits(work: nn.Module, data: Dataset, split: str, dev, kind: str, layers, values, handler):
    """The sweep's edits, the members of each swept layer (group) and notes (`_structured_edits`, which
    traces the model on one example of `split`, or `_layer_edits`)."""
    if kind != "structured":
        return _layer_edits(work, kind, layers, values, handler)
    example = as_model_inputs((data.x if split == "test" else data.x_train)[:1])
    return _structured_edits(work, example if dev is None else to_device(example, dev), layers, values)


def _inputs(data: Dataset, split: str, limit: int | None, dev) -> tuple:
    """The swept split's inputs and labels (None without labels): the first `limit`, on `dev` if given."""
    x, y = (data.x, data.y) if split == "test" else (data.x_train, data.y_train)
    x, y = (x, y) if limit is None else (x[:limit], None if y is None else y[:limit])
    return (x, y) if dev is None else (to_device(x, dev), None if y is None else y.to(dev))


def _unit(kind: str) -> str:
    return get_sweep_kind(kind).unit


def _evaluate_by_layer(runner, edits, chains, forward: Forward, max_drop, should_stop):
    """The runner over one layer's (group's) edits at a time, asking `should_stop()` (if given) before each: the
    results so far (as one RunnerResult over the finished edits), those edits and chains, and whether it
    stopped early. The upstream activations are computed once for all layers (`evaluate_chunks`), and each
    point's numbers equal the all-at-once run's (every edit is evaluated alone)."""
    names = list(chains)
    chunks = [[edits[i] for i in chains[name]] for name in names]

    def stop_for(c: int):
        return (
            _early_stop({names[c]: list(range(len(chunks[c])))}, max_drop) if max_drop is not None else None
        )

    outs = runner.evaluate_chunks(
        chunks, progress=forward.part(0, len(edits)), stop_for=stop_for, should_stop=should_stop
    )
    if not outs:  # stopped before the first layer: still report the baseline
        outs = [runner.evaluate([])]
        chunks = [[]]
    finished_edits: list[Edit] = []
    finished_chains: dict[str, list[int]] = {}
    results: list = []
    for name, chunk, out in zip(names, chunks, outs, strict=False):
        if chunk:
            finished_chains[name] = list(range(len(finished_edits), len(finished_edits) + len(chunk)))
        finished_edits += chunk
        results += list(out.results)
    merged = RunnerResult(baseline=outs[0].baseline, results=results, notes=outs[0].notes)
    return merged, finished_edits, finished_chains, len(finished_chains) < len(names)


def _transform_sweep(model, data, handler, ratios, bits, layers, progress, max_drop, batch_size, options):
    """`lowrank` / `share` (the built-in transforms' kinds) through their kind's own sweep function
    (`SweepKind.sweep`: `transform_sweeps`, which stop between layers on `should_stop`), each curve cut at
    `max_drop`."""
    sweep = get_sweep_kind(handler.kind).sweep_function()
    given = bits if handler.values_are_bits else ratios
    values = handler.sweep_values if given is None else given
    split, limit, should_stop, runtime, score = options
    kwargs = {"split": split, "limit": limit, "batch_size": batch_size, "should_stop": should_stop}
    kwargs |= {"runtime": runtime, "metric": score}
    return cut_at_drop(sweep(model, data, values, layers, progress, **kwargs), max_drop)


def _structured_edits(
    work: nn.Module, example: torch.Tensor, layers: Sequence[str] | None, values: Sequence[float]
) -> tuple[list[Edit], dict[str, tuple[str, ...]], list[str]]:
    """One edit per group and ratio (its lowest-L1 channels zeroed with every coupled member), the members
    per group, and notes."""
    notes: list[str] = []  # groups the model cannot lose channels from, one line each
    groups = _resolve_groups(find_groups(work, example, notes=notes), layers, work)
    if not groups:
        raise WorkbenchError(
            "the model has no prunable channel groups (Conv or Linear layers before the output)"
        )
    edits, members, clamped, coarse = [], {}, [], []
    for g in groups:
        members[g.name] = tuple(g.member_names)
        if g.approximate:
            notes.append(
                f"group {g.name}: {', '.join(g.approximate)} mix channels, so zeroing only approximates removal"
            )
        if any(round(r * g.channels) >= g.channels for r in values):
            clamped.append(g.name)
        removed = [g.lowest_l1_channels(work, r) for r in values]
        if any(len(chosen) == 0 and r > 0 for chosen, r in zip(removed, values, strict=True)):
            coarse.append(f"{g.name} ({g.channels})")
        edits += [_structured_edit(g, chosen, (g.name, r)) for chosen, r in zip(removed, values, strict=True)]
    if coarse:  # a grouped conv's units are whole sets of channels: few of them, so small ratios round to 0
        notes.append(f"the smallest ratios remove nothing from (prunable units in brackets): {few(coarse)}")
    if clamped:
        notes.append(
            f"at least one channel is kept, so the top ratio removes channels - 1 in: {few(clamped)}"
        )
    return edits, members, notes


def _handler_values(handler: TransformHandler, given: Sequence | None) -> tuple:
    """A registered transform's sweep values: the handler's defaults, or `given`, each checked by it."""
    values = tuple(
        handler.check(v, f"{handler.kind} sweep") for v in (handler.sweep_values if given is None else given)
    )
    if not values:
        raise WorkbenchError(f"no values to sweep for kind {handler.kind!r}: give at least one")
    return values


def _handler_edit(name: str, handler: TransformHandler, value, key) -> Edit:
    def apply(model: nn.Module) -> None:
        w = model.get_submodule(name).weight
        w.copy_(handler.sweep_weight(w.detach().clone(), value).to(w.dtype))

    return Edit((name,), apply, key)


def _layer_edits(
    work: nn.Module,
    kind: str,
    layers: Sequence[str] | None,
    values: Sequence[float],
    handler: TransformHandler | None = None,
) -> tuple[list[Edit], dict[str, None], list[str]]:
    """One edit per layer and ratio (unstructured: smallest-|w| weights zeroed), bit width (quant) or value
    of a registered transform (its `sweep_weight`, on the layers it `applies_to`)."""
    edits: list[Edit] = []
    members: dict[str, None] = {}
    prunable = prunable_layers(work)
    if handler is not None:
        prunable = {n: m for n, m in prunable.items() if handler.applies_to(m)}
    for name in prunable if layers is None else check_layer_names(work, layers, prunable):
        members[name] = None
        if handler is not None:
            edits += [_handler_edit(name, handler, v, (name, v)) for v in values]
        elif kind == "unstructured":
            w = work.get_submodule(name).weight.detach()
            order = torch.argsort(w.abs().flatten(), stable=True)
            edits += [_unstructured_edit(name, order, int(round(r * w.numel())), (name, r)) for r in values]
        else:
            edits += [_quant_edit(name, int(b), (name, b)) for b in values]
    if not members:
        raise WorkbenchError("the model has no Conv or Linear layers to sweep")
    return edits, members, []


def _curves(
    out,
    edits: list[Edit],
    chains: dict[str, list[int]],
    members: dict,
    max_drop: float | None,
    metric: MetricInfo,
):
    """Each layer's curve from the runner's results (cut where early stop dropped points), and the layers
    that early stop cut."""
    curves: dict[str, SensitivityCurve] = {}
    stopped = []
    base = out.baseline
    for name, chain in chains.items():
        xs, accs, losses = [], [], []
        for i in chain:
            result = out.results[i]
            if result is None:
                break
            xs.append(edits[i].key[1])
            accs.append(result.accuracy)
            losses.append(result.loss)
            if max_drop is not None and metric.drop(base.accuracy, result.accuracy) > max_drop + _TOLERANCE:
                break
        if len(xs) < len(chain):
            stopped.append(name)
        curves[name] = SensitivityCurve(tuple(xs), tuple(accs), tuple(losses), members[name])
    return curves, stopped
