"""The transforms beyond pruning and uniform bits, as plan fields and as sensitivity curves.

Plan fields per layer (docs/contract.md section 8): `rank` / `rank_energy` (SVD factorization, `lowrank`),
`share_bits` (k-means weight sharing, `sharing`; the plan's top-level `huffman` counts its indices
Huffman-coded), `weights` = binary | ternary | pow2 (`lowbit`, simulated).

Each field's value is checked by its handler in `analysis.transforms.registry`; a field registered there
beyond these four is applied by its handler here, and refused with `rank` (the factors replace the weight).

Combinations (`validate_transform_settings`), and why:
- `rank` with `rank_energy`: refused, they are two ways to say the same thing.
- `rank` with `share_bits`, `weights` or `bits` < 32: refused; factorization replaces the weight that the
  others would code (its two factors get new names, `layer.0` and `layer.1`).
- `rank` with unstructured pruning: refused; the factors of a sparse matrix are dense, so the zeros are lost.
- `rank` with structured pruning: allowed; channels are removed first, then the thinner layer is factored
  (the rank fraction is of the pruned layer's full rank).
- `share_bits` with `bits` < 32 or `weights`: refused; each replaces the weights by a different codebook.
- `share_bits` with pruning: allowed (unstructured pruning then sharing is Deep Compression's pipeline;
  zeros stay zero and are left out of the clustering).
- `weights` with `bits` < 32: refused (two quantizers on one weight).
- `weights: binary` with unstructured pruning: refused (binary weights have no zero: every pruned weight
  would come back as +-alpha). ternary and pow2 keep zeros, so they are allowed with it.

Sensitivity kinds (in `transform_sweeps`, re-exported here) `lowrank` (accuracy vs kept rank fraction,
with MACs and params saved per point) and `share` (accuracy vs codebook bits) return `analysis.sensitivity.SensitivityResult`s, computed with the same
cached downstream evaluation as the other sweeps: a factored layer computes exactly W_r x (+ b), so the
sweep evaluates the model with the weight replaced by its rank-r truncation W_r (the test checks the
equality against the factored model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.model.layers import copy_model
from analysis.progress import Progress
from analysis.transforms import lowbit, lowrank
from analysis.transforms.registry import TRANSFORMS
from analysis.validate import UNTOUCHED_BITS

_FACTORED = ("rank", "rank_energy")  # applied together by `lowrank.factorize`, not layer by layer


# ---------------------------------------------------------------------------------------------- validation


def validate_transform_settings(layer_name: str, settings: Mapping) -> dict:
    """Check one layer's resolved settings (the plan fields, transforms and the rest) and return the
    transform fields that are set, normalized: {rank | rank_energy, share_bits, weights}.

    Raises a one-line WorkbenchError for a bad value or a refused combination (module docstring).
    """
    where = f"layer {layer_name!r}" if layer_name else "default"
    # Each registered field checks its own value (`analysis.transforms.registry`).
    out: dict = {
        name: handler.check(settings[name], where)
        for name, handler in TRANSFORMS.items()
        if settings.get(name) is not None
    }
    bits = settings.get("bits", UNTOUCHED_BITS)
    quantized = bits is not None and bits != UNTOUCHED_BITS
    unstructured = float(settings.get("prune") or 0.0) > 0 and settings.get("structured") is False
    factored = "rank" in out or "rank_energy" in out
    if "rank" in out and "rank_energy" in out:
        raise WorkbenchError(f"{where}: give rank or rank_energy, not both (two ways to choose one rank)")
    if factored and ("share_bits" in out or "weights" in out or quantized):
        other = "share_bits" if "share_bits" in out else "weights" if "weights" in out else f"bits {bits}"
        raise WorkbenchError(
            f"{where}: rank and {other} cannot go together: factorization replaces the weight {other} would "
            "code; choose one"
        )
    if factored and unstructured:
        raise WorkbenchError(
            f"{where}: rank with unstructured pruning is refused: the SVD factors of a sparse weight are dense, "
            "so the zeros are lost; use structured pruning or drop one"
        )
    generic = [key for key in out if not TRANSFORMS[key].builtin]
    if factored and generic:
        raise WorkbenchError(
            f"{where}: rank and {generic[0]} cannot go together: factorization replaces the weight "
            f"{generic[0]} would change; choose one"
        )
    if "share_bits" in out and ("weights" in out or quantized):
        other = "weights" if "weights" in out else f"bits {bits}"
        raise WorkbenchError(
            f"{where}: share_bits and {other} cannot go together: each replaces the weights by its own "
            "codebook; choose one"
        )
    if "weights" in out and quantized:
        raise WorkbenchError(
            f"{where}: weights {out['weights']!r} and bits {bits} cannot go together: set bits to 32"
        )
    if out.get("weights") == "binary" and unstructured:
        raise WorkbenchError(
            f"{where}: binary weights with unstructured pruning are refused: binary has no zero, every pruned "
            "weight would return as +-alpha; use ternary or pow2"
        )
    return out


# ------------------------------------------------------------------------------------------- application


class AppliedTransforms(NamedTuple):
    """What `apply_transforms` returns: the new model, notes, and sizes ({"layers": {name: {...}},
    "size_bytes": whole model with each transformed weight at its stored size})."""

    model: nn.Module
    notes: list[str]
    sizes: dict


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def apply_transforms(
    model: nn.Module,
    layer_settings: Mapping[str, Mapping],
    huffman: bool = False,
    progress: Progress | None = None,
    calibration: torch.Tensor | None = None,
) -> AppliedTransforms:
    """Apply each layer's `rank`/`rank_energy`, `share_bits`, `weights` and any other registered transform
    (its handler's `apply`, `analysis.transforms.registry`) to a copy of `model` (other keys, such as prune
    and bits, are only checked for combinations; applying them is `compress`'s job).

    Layers with none of the transform keys are left alone. Factored layers become `layer.0`/`layer.1`.
    `huffman` counts shared layers' indices Huffman-coded. `calibration` (training inputs) makes each
    factored layer the best rank-r approximation of its outputs on them (`analysis.transforms.lowrank`);
    without it, the truncated SVD of its weight. The model handed in is not changed.
    """
    todo = _layers_to_transform(model, layer_settings)
    work, layers, notes = _factor(model, todo, calibration)
    stored: dict[int, int] = {}  # id(weight) -> stored bytes, for the size total
    with torch.no_grad():
        for i, (name, fields) in enumerate(todo.items()):
            _apply_fields(work, name, fields, huffman, layers, stored)
            if progress:
                progress(i + 1, len(todo))
    notes += _notes(todo, huffman)
    return AppliedTransforms(work, notes, {"layers": layers, "size_bytes": _stored_bytes(work, stored)})


def _layers_to_transform(model: nn.Module, layer_settings: Mapping[str, Mapping]) -> dict[str, dict]:
    """Each layer's transform fields (checked, normalized), for the layers that set any; a layer the model
    lacks, or one without a weight, is a one-line error."""
    modules = dict(model.named_modules())
    todo: dict[str, dict] = {}
    for name, settings in layer_settings.items():
        fields = validate_transform_settings(name, settings)
        if not fields:
            continue
        if name not in modules or not name:
            raise WorkbenchError(f"no layer named {name!r} in the model: use a name from named_modules()")
        if "weight" not in modules[name]._parameters:
            raise WorkbenchError(
                f"layer {name!r} is a {type(modules[name]).__name__} with no weight to transform"
            )
        todo[name] = fields
    return todo


def _factor(
    model: nn.Module, todo: Mapping[str, dict], calibration: torch.Tensor | None
) -> tuple[nn.Module, dict[str, dict], list[str]]:
    """A copy of `model` with the layers that set `rank`/`rank_energy` factored (calibrated on
    `calibration` when given), their size entries and a note for each."""
    specs = {
        name: lowrank.LowRankSpec(rank=f.get("rank"), rank_energy=f.get("rank_energy"))
        for name, f in todo.items()
        if "rank" in f or "rank_energy" in f
    }
    calibrated = bool(specs) and calibration is not None
    moments = lowrank.output_moments(model, list(specs), calibration) if calibrated else {}
    choices = lowrank.plan_factorization(model, specs, moments=moments)
    work = lowrank.factorize(model, specs, moments=moments) if specs else copy_model(model)
    layers: dict[str, dict] = {}
    notes: list[str] = []
    for name, choice in choices.items():
        layers[name] = {
            "transform": "lowrank",
            "rank": choice.rank,
            "full_rank": choice.full_rank,
            "energy_kept": choice.energy_kept,
            "params_before": choice.params_before,
            "params_after": choice.params_after,
        }
        notes.append(
            f"{name}: factored at rank {choice.rank} of {choice.full_rank} ({choice.energy_kept:.1%} of the "
            f"energy kept); now {name}.0 and {name}.1"
        )
    return work, layers, notes


def _apply_fields(
    work: nn.Module, name: str, fields: Mapping, huffman: bool, layers: dict, stored: dict[int, int]
) -> None:
    """Apply layer `name`'s fields but the rank (factored already) by their handlers, in registry order;
    its size entry goes to `layers` (the first one: share_bits and weights exclude each other) and its
    weight's stored bytes to `stored`."""
    for key in (k for k in TRANSFORMS if k in fields and k not in _FACTORED):
        module = work.get_submodule(name)
        entry = TRANSFORMS[key].apply(module, fields[key], huffman=huffman)
        stored[id(module.weight)] = entry["bytes"]
        layers.setdefault(name, entry)


def _notes(todo: Mapping[str, dict], huffman: bool) -> list[str]:
    notes = []
    if any(f.get("weights") for f in todo.values()):
        notes.append(f"binary/ternary/pow2 weights are {lowbit.LABEL}; sizes count their low-bit width")
    if huffman and not any("share_bits" in f for f in todo.values()):
        notes.append("huffman: no layer has share_bits, so there are no indices to code; sizes unchanged")
    return notes


def _stored_bytes(work: nn.Module, stored: Mapping[int, int]) -> int:
    """The whole model's size: each parameter and buffer once, a transformed weight at its stored size."""
    total, seen = 0, set()
    for t in list(work.parameters()) + list(work.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += stored.get(id(t), _tensor_bytes(t))
    return total


__all__ = [
    "AppliedTransforms",
    "apply_transforms",
    "validate_transform_settings",
]
