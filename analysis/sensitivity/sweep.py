"""Per-layer sensitivity sweeps: accuracy and loss of the model with one layer (or group) compressed.

Three kinds (CONTRACT section 5):
- `unstructured`: per prunable layer, the `round(r x numel)` weights of smallest |w| zeroed (ties: lower
  flat index first).
- `structured`: per prunable *group* (`analysis.sensitivity.groups`: layers coupled through residual adds or
  concatenations are one unit, named by its first layer), the `round(r x C_out)` channels of lowest
  group L1 removed (L1 summed over every Conv/Linear whose outputs the group removes), simulated by
  zeroing so that the logits equal physical removal. At least one channel is always kept.
- `quant`: per prunable layer, weights fake-quantized (symmetric, per output channel, 2^(b-1) - 1 levels
  each side); activations stay float.

Each point edits the model in place and restores it (no copy per point), and only the part of the network
downstream of the edited layer is recomputed, from cached activations (`analysis.fx.runner`). The numbers equal
a naive copy-prune-evaluate loop's. Drops are in accuracy units: 0.01 is one percentage point.

Memory: one copy of the model, one batch's cached activations (bounded by `max_cache_bytes`, see
`analysis.fx.runner`), a saved copy of each swept layer's parameters (for restoring), and for `unstructured`
the |w| order of each swept layer (one int64 per weight), computed once instead of per point.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from analysis import validate
from analysis.compression.quantization import fake_quantize
from analysis.data import Dataset
from analysis.devices import on_device, parse_dtype, resolve_device
from analysis.errors import WorkbenchError
from analysis.fx.runner import DEFAULT_MAX_CACHE_BYTES, DownstreamRunner, Edit, RunnerResult, Tally
from analysis.layers import prunable_layers
from analysis.progress import Progress
from analysis.sensitivity.groups import PruningGroup, find_groups
from analysis.validate import bit_widths, check_layer_names, few

KINDS = ("structured", "unstructured", "quant")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_BITS = (2, 3, 4, 6, 8)
_TOLERANCE = 1e-9  # accuracy drops are ratios of counts; this absorbs float noise in comparisons


@dataclass(frozen=True)
class SensitivityCurve:
    """One layer's (or group's) curve: `values` are ratios (pruning) or bit widths (quant), ascending for
    ratios and descending for bits (the sweep order); `members` lists a structured group's layers."""

    values: tuple[float, ...]
    accuracy: tuple[float, ...]
    loss: tuple[float, ...]
    members: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SensitivityResult:
    """A sweep's outcome. `layers` maps layer (or group) name -> curve; do not mutate it.

    Accuracy is top-1 in [0, 1], loss mean cross-entropy (nats), `seconds` the sweep's wall time.
    """

    kind: str
    baseline_accuracy: float
    baseline_loss: float
    seconds: float
    layers: dict[str, SensitivityCurve]
    notes: tuple[str, ...] = ()
    samples: int = 0
    max_drop: float | None = field(default=None)
    partial: bool = False  # stopped by `should_stop`: only the finished layers are in `layers`

    @property
    def x_key(self) -> str:
        """ "bits" for quant, "ratios" otherwise: the JSON key and the column name (singular in frames)."""
        return "bits" if self.kind == "quant" else "ratios"

    def to_dict(self) -> dict:
        """CONTRACT section 3's JSON: kind, baseline, seconds, layers {name: {ratios|bits, accuracy, loss,
        members?}}, plus samples and notes."""
        layers = {}
        for name, curve in self.layers.items():
            entry: dict = {
                self.x_key: [int(v) if self.kind == "quant" else float(v) for v in curve.values],
                "accuracy": list(curve.accuracy),
                "loss": list(curve.loss),
            }
            if curve.members is not None:
                entry["members"] = list(curve.members)
            layers[name] = entry
        out = {
            "kind": self.kind,
            "baseline": {"accuracy": self.baseline_accuracy, "loss": self.baseline_loss},
            "seconds": self.seconds,
            "samples": self.samples,
            "layers": layers,
            "notes": list(self.notes),
        }
        if self.max_drop is not None:
            out["max_drop"] = self.max_drop
        if self.partial:
            out["partial"] = True
        return out

    @classmethod
    def from_dict(cls, payload: Mapping) -> SensitivityResult:
        """Inverse of `to_dict` (JSON round trip)."""
        try:
            kind = payload["kind"]
            if kind not in KINDS:
                raise WorkbenchError(f"unknown sensitivity kind {kind!r}: expected one of {', '.join(KINDS)}")
            key = "bits" if kind == "quant" else "ratios"
            layers = {}
            for name, entry in payload["layers"].items():
                values = tuple(int(v) if kind == "quant" else float(v) for v in entry[key])
                members = tuple(entry["members"]) if entry.get("members") is not None else None
                layers[name] = SensitivityCurve(
                    values, tuple(map(float, entry["accuracy"])), tuple(map(float, entry["loss"])), members
                )
            return cls(
                kind=kind,
                baseline_accuracy=float(payload["baseline"]["accuracy"]),
                baseline_loss=float(payload["baseline"]["loss"]),
                seconds=float(payload["seconds"]),
                layers=layers,
                notes=tuple(payload.get("notes", ())),
                samples=int(payload.get("samples", 0)),
                max_drop=payload.get("max_drop"),
                partial=bool(payload.get("partial", False)),
            )
        except (KeyError, TypeError) as exc:
            raise WorkbenchError(f"not a sensitivity result: missing or bad {exc}") from exc

    def to_frame(self):
        """Long form pandas DataFrame: layer, kind, ratio (or bits), accuracy, loss; one row per point."""
        import pandas as pd

        column = "bits" if self.kind == "quant" else "ratio"
        rows = [
            {"layer": name, "kind": self.kind, column: v, "accuracy": a, "loss": lo}
            for name, curve in self.layers.items()
            for v, a, lo in zip(curve.values, curve.accuracy, curve.loss, strict=True)
        ]
        return pd.DataFrame(rows, columns=["layer", "kind", column, "accuracy", "loss"])

    def _curve(self, layer: str) -> SensitivityCurve:
        if layer not in self.layers:
            raise WorkbenchError(f"no layer {layer!r} in this sweep: choose one of {few(self.layers)}")
        return self.layers[layer]

    def drops(self, layer: str) -> list[float]:
        """Accuracy drop from the baseline at each swept point (positive = worse)."""
        return [self.baseline_accuracy - a for a in self._curve(layer).accuracy]

    def max_safe_ratio(self, layer: str, max_drop: float) -> float:
        """The largest swept ratio up to which every swept ratio stays within `max_drop` of the baseline
        accuracy (0.0 where even the smallest does not). Pruning kinds only; see `min_safe_bits`."""
        if self.kind == "quant":
            raise WorkbenchError(
                "a quant sweep has bit widths, not ratios: use min_safe_bits(layer, max_drop)"
            )
        safe = 0.0
        for ratio, drop in zip(self._curve(layer).values, self.drops(layer), strict=True):
            if drop > max_drop + _TOLERANCE:
                break
            safe = float(ratio)
        return safe

    def min_safe_bits(self, layer: str, max_drop: float) -> int | None:
        """The smallest swept bit width down to which every swept width stays within `max_drop` of the
        baseline accuracy; None where even the widest does not (keep the layer in float)."""
        if self.kind != "quant":
            raise WorkbenchError(
                "a pruning sweep has ratios, not bit widths: use max_safe_ratio(layer, max_drop)"
            )
        curve = self._curve(layer)
        pairs = sorted(zip(curve.values, self.drops(layer), strict=True), reverse=True)
        safe = None
        for bits, drop in pairs:
            if drop > max_drop + _TOLERANCE:
                break
            safe = int(bits)
        return safe

    def safe_point(self, layer: str, max_drop: float) -> float | int | None:
        """`min_safe_bits` for quant sweeps, `max_safe_ratio` otherwise."""
        if self.kind == "quant":
            return self.min_safe_bits(layer, max_drop)
        return self.max_safe_ratio(layer, max_drop)


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

    return Edit(tuple(group.member_names), apply, key)


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
    samples still to come), so the result equals sweeping in order and stopping after the first bad point."""

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
) -> SensitivityResult:
    """Accuracy and loss with each layer (group, for `structured`) compressed alone, at each ratio or bits.

    `layers` restricts the sweep (structured: group names, or any layer a group removes outputs of).
    `max_drop` (accuracy units, 0.01 = one point) stops a layer's sweep after the first point whose drop
    exceeds it, as NNI does; the curve then ends there. `use_cache=False` recomputes the whole network
    per point (same numbers; for comparison). The model is not changed.
    `should_stop()` is checked between layers (groups): once it is True the finished ones are returned with
    `partial=True`. `device` (auto, cpu, cuda[:N]) runs the sweep on a private copy there; `dtype` (float16,
    bfloat16) runs it in that precision (the channels and weights each point removes are chosen in float32).
    """
    start = time.perf_counter()
    if kind not in KINDS:
        raise WorkbenchError(f"unknown sensitivity kind {kind!r}: use structured, unstructured or quant")
    if max_drop is not None and not (math.isfinite(max_drop) and max_drop >= 0):
        raise WorkbenchError(
            f"max_drop must be a non-negative accuracy drop (0.01 = 1 point), got {max_drop}"
        )
    values = bit_widths(DEFAULT_BITS if bits is None else bits) if kind == "quant" else validate.ratios(
        DEFAULT_RATIOS if ratios is None else ratios
    )  # fmt: skip
    if split not in ("test", "train"):
        raise WorkbenchError(f"unknown split {split!r}: use 'test' or 'train'")
    cast = parse_dtype(dtype)
    dev = None if device is None and cast is None else resolve_device(device or "cpu")
    work = (copy.deepcopy(model) if dev is None else on_device(model, dev)).eval()
    if kind == "structured":
        example = (data.x if split == "test" else data.x_train)[:1]
        example = example if dev is None else example.to(dev)
        edits, members, notes = _structured_edits(work, example, layers, values)
    else:
        edits, members, notes = _layer_edits(work, kind, layers, values)
    chains: dict[str, list[int]] = {}
    for i, edit in enumerate(edits):
        chains.setdefault(edit.key[0], []).append(i)
    x, y = (data.x, data.y) if split == "test" else (data.x_train, data.y_train)
    x, y = (x, y) if limit is None else (x[:limit], y[:limit])
    x, y = (x, y) if dev is None else (x.to(dev), y.to(dev))
    if cast is not None:  # after the edits are chosen, so they are the float32 sweep's
        work.to(dtype=cast)
        x = x.to(cast)
    runner = DownstreamRunner(
        work,
        x,
        y,
        batch_size=batch_size,
        use_cache=use_cache,
        max_cache_bytes=max_cache_bytes,
        copy_model=False,
    )
    stop = _early_stop(chains, max_drop) if max_drop is not None else None
    if should_stop is None:
        out = runner.evaluate(edits, progress=progress, stop=stop)
    else:
        out, chains = _evaluate_until_stopped(runner, edits, chains, progress, max_drop, should_stop)
    notes = list(out.notes) + notes
    curves, stopped = _curves(out, edits, chains, members, max_drop)
    if stopped:
        notes.append(f"early stop at drop > {max_drop}: {few(stopped)} not swept past their first bad point")
    base = out.baseline
    return SensitivityResult(
        kind=kind,
        baseline_accuracy=base.accuracy,
        baseline_loss=base.loss,
        seconds=time.perf_counter() - start,
        layers=curves,
        notes=tuple(notes),
        samples=base.samples,
        max_drop=max_drop,
        partial=len(chains) < len(members),
    )


def _evaluate_until_stopped(runner, edits, chains, progress, max_drop, should_stop):
    """`runner.evaluate` one layer (group) at a time, checking `should_stop()` before each: the results
    (None for layers not run) and the chains that finished. Same numbers as one call over every edit."""
    results: list = [None] * len(edits)
    done_chains: dict[str, list[int]] = {}
    baseline, notes, steps = None, [], [0, sum(map(len, chains.values()))]
    for name, chain in chains.items():
        if should_stop():
            break
        offset, n = steps[0], len(chain)

        def report(done: int, total: int, offset: int = offset, n: int = n) -> None:
            if progress:
                progress(offset + round(n * done / max(total, 1)), steps[1])

        sub = [edits[i] for i in chain]
        sub_stop = None if max_drop is None else _early_stop({name: list(range(len(chain)))}, max_drop)
        out = runner.evaluate(sub, progress=report, stop=sub_stop)
        baseline, notes = out.baseline, list(dict.fromkeys(notes + list(out.notes)))
        for i, r in zip(chain, out.results, strict=True):
            results[i] = r
        done_chains[name] = chain
        steps[0] += len(chain)
    if baseline is None:
        baseline = runner.evaluate([], progress=None).baseline
    return RunnerResult(baseline, results, tuple(notes)), done_chains


def _structured_edits(
    work: nn.Module, example: torch.Tensor, layers: Sequence[str] | None, values: Sequence[float]
) -> tuple[list[Edit], dict[str, tuple[str, ...]], list[str]]:
    """One edit per group and ratio (its lowest-L1 channels zeroed with every coupled member), the members
    per group, and notes."""
    groups = _resolve_groups(find_groups(work, example), layers, work)
    if not groups:
        raise WorkbenchError(
            "the model has no prunable channel groups (Conv or Linear layers before the output)"
        )
    edits, members, notes, clamped = [], {}, [], []
    for g in groups:
        members[g.name] = tuple(g.member_names)
        if g.approximate:
            notes.append(
                f"group {g.name}: {', '.join(g.approximate)} mix channels, so zeroing only approximates removal"
            )
        if any(round(r * g.channels) >= g.channels for r in values):
            clamped.append(g.name)
        edits += [_structured_edit(g, g.lowest_l1_channels(work, r), (g.name, r)) for r in values]
    if clamped:
        notes.append(
            f"at least one channel is kept, so the top ratio removes channels - 1 in: {few(clamped)}"
        )
    return edits, members, notes


def _layer_edits(
    work: nn.Module, kind: str, layers: Sequence[str] | None, values: Sequence[float]
) -> tuple[list[Edit], dict[str, None], list[str]]:
    """One edit per layer and ratio (unstructured: smallest-|w| weights zeroed) or bit width (quant)."""
    edits: list[Edit] = []
    members: dict[str, None] = {}
    prunable = prunable_layers(work)
    for name in prunable if layers is None else check_layer_names(work, layers, prunable):
        members[name] = None
        if kind == "unstructured":
            w = work.get_submodule(name).weight.detach()
            order = torch.argsort(w.abs().flatten(), stable=True)
            edits += [_unstructured_edit(name, order, int(round(r * w.numel())), (name, r)) for r in values]
        else:
            edits += [_quant_edit(name, int(b), (name, b)) for b in values]
    if not members:
        raise WorkbenchError("the model has no Conv or Linear layers to sweep")
    return edits, members, []


def _curves(out, edits: list[Edit], chains: dict[str, list[int]], members: dict, max_drop: float | None):
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
            if max_drop is not None and base.accuracy - result.accuracy > max_drop + _TOLERANCE:
                break
        if len(xs) < len(chain):
            stopped.append(name)
        curves[name] = SensitivityCurve(tuple(xs), tuple(accs), tuple(losses), members[name])
    return curves, stopped
