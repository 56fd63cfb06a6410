"""Pruning that changes the model for real (docs/contract.md section 5).

- **Structured**: Torch-Pruning's dependency graph finds the coupled groups (`analysis.transforms.groups`: a conv with
  its norm and the next layer's inputs; every layer tied by residual adds, concatenations, splits or
  reshapes; attention heads), and `round(r x C)` units (channels, or heads) of lowest importance are
  physically removed from every member, so the tensors, the parameter count, the MACs and the latency all
  drop. After the edit the model must run with outputs of the original shapes: a group it does not survive
  is put back and a note names its layer and the failing operation. A group is named by its first layer in
  `named_modules()` order, exactly as the structured sensitivity sweep names it, and with the `l1` criterion
  the same channels go as the sweep simulated (both score groups with `group_scores`).
- **Unstructured**: `torch.nn.utils.prune.l1_unstructured` zeroes the `round(r x numel)` smallest-|w|
  weights; `make_permanent` removes the masks (no `weight_orig`, no forward pre-hooks left). The tensors
  keep their shape: dense kernels do exactly the same work on zeros, so this saves no time; it saves space
  only when stored in a sparse format (`sparse_size_bytes`).

Everything here changes the model it is given in place: pass a copy you own (`analysis.compression.compress` does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError
from analysis.importance import group_scores
from analysis.model.layers import InputsLike, example_inputs, is_prunable
from analysis.transforms.groups import PruningGroup, find_groups, remove_channels
from analysis.validate import ratio as check_ratio

SPARSE_FORMAT = "bitmask: 1 bit per weight for the nonzero pattern + the nonzero values at their width"


@dataclass(frozen=True)
class StructuredPruning:
    """What structured pruning removed: per group, the ratio asked for and the channels before and after."""

    groups: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"groups": self.groups, "notes": self.notes}


def prune_structured(
    model: nn.Module,
    ratios: Mapping[str, float],
    input_shape: InputsLike,
    *,
    criteria: Mapping[str, str] | None = None,
    data=None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    groups: list[PruningGroup] | None = None,
) -> StructuredPruning:
    """Physically remove output channels, in place, group by group (Torch-Pruning's dependency graph).

    `ratios` maps a group's name (its first layer, see `find_groups`) to r in [0, 1):
    `round(r x C)` units (channels, or whole attention heads) of lowest importance go (at least one is
    kept), from every member and every coupled layer. `criteria` (group name -> criterion, default `l1`)
    ranks them. `groups`: the model's `find_groups`, where the caller has them already. `input_shape`
    as in `find_groups`. A group whose removal the model does not survive is put back and noted.
    """
    for name, r in ratios.items():
        check_ratio(r, f"group {name!r}")
    wanted = {name: r for name, r in ratios.items() if r > 0}
    if not wanted:
        return StructuredPruning()
    inputs = example_inputs(input_shape)
    result = StructuredPruning()
    groups = groups if groups is not None else find_groups(model, inputs, notes=result.notes)
    by_name = {g.name: g for g in groups}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise WorkbenchError(
            f"{missing[0]!r} does not name a prunable group: groups are named by their first layer "
            f"({', '.join(list(by_name)[:8])}); the layers a model output exposes keep their outputs"
        )
    chosen = [by_name[name] for name in wanted]
    scores = group_scores(model, chosen, criteria or {}, data, max_samples)
    removal: dict[str, list[int]] = {}
    for g in chosen:
        ratio = wanted[g.name]
        n_remove = _count(g, ratio, result.notes)
        order = torch.argsort(scores[g.name], stable=True)
        removal[g.name] = sorted(order[:n_remove].tolist())
    failed = len(result.notes)
    remove_channels(model, inputs, groups, removal, notes=result.notes)
    for g in chosen:
        put_back = any(line.startswith(f"{g.name}: kept whole") for line in result.notes[failed:])
        n_remove = 0 if put_back else len(removal[g.name])
        result.groups.append(
            {
                "name": g.name,
                "members": g.out_layers,
                "ratio": wanted[g.name],
                "channels_before": g.channels,
                "channels_after": g.channels - n_remove,
                "removed": n_remove,
            }
        )
    return result


def _count(group: PruningGroup, ratio: float, notes: list[str]) -> int:
    """The units `ratio` removes from `group` (`channels_to_remove`), with a note where that is not
    `round(ratio x channels)`: one unit always stays, and an attention layer keeps a width its heads
    divide (nn.MultiheadAttention refuses any other)."""
    n_remove = group.channels_to_remove(ratio)
    asked = int(round(ratio * group.channels))
    if asked >= group.channels:
        notes.append(f"{group.name}: ratio {ratio} would remove all {group.channels} channels; one is kept")
    elif n_remove != asked:
        keep = group.channels - n_remove
        notes.append(
            f"{group.name}: keeps {keep} channels rather than {group.channels - asked}, a multiple of the "
            f"{group.step} attention heads that share them"
        )
    if n_remove == 0:
        notes.append(f"{group.name}: ratio {ratio} removes no channel of {group.channels}")
    return n_remove


def prune_unstructured(model: nn.Module, ratios: Mapping[str, float]) -> dict[str, int]:
    """Zero, in place, the `round(r x numel)` smallest-|w| weights of each layer, through
    `torch.nn.utils.prune` (masks stay attached, so fine-tuning keeps the zeros; call `make_permanent`).

    Returns the number of weights zeroed per layer.
    """
    zeroed = {}
    for name, r in ratios.items():
        check_ratio(r, f"layer {name!r}")
        if r == 0:
            continue
        module = model.get_submodule(name)
        amount = round(r * module.weight.numel())
        torch_prune.l1_unstructured(module, "weight", amount=amount)
        zeroed[name] = amount
    return zeroed


def make_permanent(model: nn.Module) -> list[str]:
    """Fold every `torch.nn.utils.prune` mask into its weight and remove the reparametrisation, in place."""
    done = []
    for name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
                done.append(name)
    return done


def count_zeros(model: nn.Module, layers: list[str] | None = None) -> tuple[int, int]:
    """(zeros, total) over the weights of `layers` (default: every prunable layer)."""
    zeros = total = 0
    for name, module in model.named_modules():
        if not name or not is_prunable(module) or (layers is not None and name not in layers):
            continue
        w = module.weight
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros, total


def sparse_size_bytes(model: nn.Module, bits: Mapping[str, int] | None = None) -> int:
    """Bytes to store the model with each prunable layer's weight as a bitmask plus its nonzero values.

    Nonzero values count at the layer's quantized width (`bits`, plus one float32 scale per channel) or
    their stored dtype; all other tensors count dense. The same format as `SPARSE_FORMAT` says.
    """
    bits = bits or {}
    prunable = {id(m.weight): n for n, m in model.named_modules() if n and is_prunable(m)}
    total, seen = 0, set()
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        name = prunable.get(id(tensor))
        if name is None:
            total += tensor.numel() * tensor.element_size()
            continue
        b = bits.get(name, 32)
        nonzero = int((tensor != 0).sum())
        value_bits = b if b != 32 else tensor.element_size() * 8
        scales = tensor.shape[0] * 4 if b != 32 else 0
        total += math.ceil(tensor.numel() / 8) + math.ceil(nonzero * value_bits / 8) + scales
    return total


__all__ = [
    "PruningGroup",
    "SPARSE_FORMAT",
    "StructuredPruning",
    "count_zeros",
    "make_permanent",
    "prune_structured",
    "prune_unstructured",
    "sparse_size_bytes",
]
