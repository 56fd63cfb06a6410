"""Structured pruning groups from Torch-Pruning's dependency graph, by layer name.

Layers coupled through residual adds, concatenations, splits, reshapes, norms and the next layers' inputs
lose the same channels together; pruning one alone is impossible, and simulating it alone reports it as
falsely robust. A `PruningGroup` records such a unit by module names (so it applies to any copy of the
model):

- `name`: the group's first Conv/ConvTranspose/Linear layer (in `named_modules()` order) among those whose
  output channels it removes; `root`: Torch-Pruning's root layer;
- `channels`: the group's prunable units, numbered 0..channels-1. A unit is one channel of the root layer,
  or several that can only go together (`units`): an attention head, the block of Linear outputs that one
  channel of a following conv reads after a reshape, the same position in each section of an even split
  or each group of a grouped conv;
- `members`: every (module or raw parameter, "out" | "in", indices) the removal touches, indices mapped to
  units.

Public API:
    find_groups(model, inputs, ignored_layers=None, notes=None) -> list[PruningGroup]
    PruningGroup.l1_importance(model), .lowest_l1_channels(model, ratio), .channels_to_remove(ratio),
    PruningGroup.zero_channels(model, channels)   # simulation: same outputs as removal (see its docstring)
    remove_channels(model, example_inputs, groups, {group name: channels}, notes=None)  # in place

The layers whose channels a model output exposes (`analysis.model.layers.output_layers`) never lose outputs:
their groups are left out. So is a group whose removal the model does not survive (tried once, on a copy):
`notes` gets one line naming its layer and the operation that failed. Groups are found on the same batch
(`analysis.model.layers.trace_batch`) whatever the batch of `inputs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from analysis.concurrency import private_copy
from analysis.errors import WorkbenchError
from analysis.importance.groups import group_scores
from analysis.model.layers import (
    ROOT_TYPES,
    InputsLike,
    ModelInputs,
    attention_heads,
    channel_graph,
    example_inputs,
    is_prunable,
    touches_output,
)
from analysis.transforms.removal import Removal, apply_removals
from analysis.transforms.units import all_pairs, fold_sections, fused_width, join_units, unit_key

# Module types whose channel removal zeroing reproduces exactly (per-channel ops). Others in a group
# (LayerNorm, GroupNorm, attention, LSTM, grouped convs, ...) mix channels: simulation is approximate.
_EXACT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.PReLU, nn.Embedding)
_EXACT_NORMS = (nn.modules.instancenorm._InstanceNorm,)


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and module.groups == module.in_channels
    )


@dataclass(frozen=True)
class GroupMember:
    """One module (or raw parameter, `type` "Parameter", cut along `axis`) the group's removal touches:
    `dim` "out" (its outputs go) or "in" (its inputs go).

    `idxs[k]` is an index in that module's dimension; `root_idxs[k]` the group unit it belongs to (a Linear
    after a flatten has several inputs per unit; an attention head is a unit of several outputs).
    """

    name: str
    type: str
    dim: str
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]
    axis: int | None = None


@dataclass(frozen=True)
class PruningGroup:
    """Layers that lose the same units together. Unit k is root channel k, or the root channels
    `units[k]` where units are not single channels. Units go in multiples of `step` (the heads of an
    nn.MultiheadAttention in the group must divide what it keeps)."""

    name: str
    root: str
    channels: int
    members: tuple[GroupMember, ...]
    approximate: tuple[str, ...] = ()  # members zeroing cannot simulate exactly (they mix channels)
    units: tuple[tuple[int, ...], ...] = ()
    step: int = 1
    ops: tuple[str, ...] = ()  # shape operations its channels pass through (reshape, split, cat...)

    @property
    def member_names(self) -> list[str]:
        """Every module the group prunes, the group's name first, each once."""
        names = [self.name]
        for m in self.members:
            if m.name not in names:
                names.append(m.name)
        return names

    @property
    def module_names(self) -> list[str]:
        """Every module whose tensors the group changes (for a raw parameter, the module holding it), the
        group's name first, each once: what an edit must snapshot and recompute from."""
        names = [self.name]
        for m in self.members:
            owner = _owner(m)
            if owner not in names:
                names.append(owner)
        return names

    @property
    def out_layers(self) -> list[str]:
        """The Conv/ConvTranspose/Linear layers whose output channels the group removes."""
        names: list[str] = []
        for m in self.members:
            if m.dim == "out" and m.type in _LAYER_TYPE_NAMES and m.name not in names:
                names.append(m.name)
        return names

    def root_channels(self, units: Sequence[int]) -> list[int]:
        """The root layer's output channels that `units` stand for, sorted."""
        if not self.units:
            return sorted(int(u) for u in units)
        return sorted(c for u in units for c in self.units[int(u)])

    def channels_to_remove(self, ratio: float) -> int:
        """`round(ratio x channels)`, at most channels - 1 (a layer keeps at least one unit), and fewer
        where needed so that what stays is a multiple of `step`."""
        n = min(int(round(ratio * self.channels)), self.channels - 1)
        if self.step == 1:
            return n
        keep = min(self.channels, -(-(self.channels - n) // self.step) * self.step)
        return self.channels - keep

    def l1_importance(self, model: nn.Module) -> torch.Tensor:
        """Per unit: the sum, over every Conv/Linear whose outputs the group removes, of those output
        channels' filter L1 norms (sum |w| over the row). Shape (channels,), float64."""
        return group_scores(model, [self], "l1")[self.name]

    def lowest_l1_channels(self, model: nn.Module, ratio: float) -> list[int]:
        """The `channels_to_remove(ratio)` units of lowest `l1_importance`, ties to the lower index."""
        n = self.channels_to_remove(ratio)
        order = torch.argsort(self.l1_importance(model), stable=True)
        return sorted(order[:n].tolist())

    def zero_channels(self, model: nn.Module, channels: Sequence[int]) -> None:
        """Simulate removing `channels` (unit indices) in place: every out-member's weight rows and bias,
        every norm's weight and bias (so the channel is zero after its norm), every raw parameter's slice
        and every in-member's weight columns are zeroed. The outputs equal physical removal's (tested to
        1e-5), except where the group holds channel-mixing members (`approximate`)."""
        chosen = set(int(c) for c in channels)
        if not chosen:
            return
        with torch.no_grad():
            for m in self.members:
                idx = [i for i, r in zip(m.idxs, m.root_idxs, strict=True) if r in chosen]
                if not idx:
                    continue
                index = torch.tensor(idx, dtype=torch.long)
                if m.type == "Parameter":
                    model.get_parameter(m.name).index_fill_(m.axis, index, 0.0)
                else:
                    _zero_member(model.get_submodule(m.name), m.dim, index)


_LAYER_TYPE_NAMES = {
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Linear",
}
_OP_NAMES = {
    "_ReshapeOp": "reshape",
    "_SplitOp": "split",
    "_ConcatOp": "cat",
    "_SliceOp": "slice",
    "_UnbindOp": "unbind",
    "_ExpandOp": "expand",
}


def _zero_member(module: nn.Module, dim: str, idx: torch.Tensor) -> None:
    if isinstance(module, nn.modules.conv._ConvNd):
        transposed = bool(getattr(module, "transposed", False))
        if dim == "out" or _is_depthwise(module):
            out_axis = 1 if transposed else 0
            module.weight.index_fill_(out_axis, idx, 0.0)
            if module.bias is not None:
                module.bias.index_fill_(0, idx, 0.0)
        elif module.groups == 1:
            module.weight.index_fill_(0 if transposed else 1, idx, 0.0)
        elif not transposed:
            # A grouped conv: input channel c feeds only its own group's filters, at position c % per_group.
            per_in, per_out = module.in_channels // module.groups, module.out_channels // module.groups
            for c in idx.tolist():
                g = c // per_in
                module.weight[g * per_out : (g + 1) * per_out, c % per_in] = 0.0
    elif isinstance(module, nn.Linear):
        if dim == "out":
            module.weight.index_fill_(0, idx, 0.0)
            if module.bias is not None:
                module.bias.index_fill_(0, idx, 0.0)
        else:
            module.weight.index_fill_(1, idx, 0.0)
    elif isinstance(module, nn.Embedding):
        module.weight.index_fill_(1, idx, 0.0)  # its channels are the embedding's columns
    else:
        # Norms, PReLU and the like: zero their per-channel affine parameters where they have them.
        for attr in ("weight", "bias"):
            t = getattr(module, attr, None)
            if isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] > int(idx.max()):
                t.index_fill_(0, idx, 0.0)


def _simulates_exactly(module: nn.Module) -> bool:
    """Whether zeroing reproduces this member's channel removal exactly (it acts on each channel alone)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.groups == 1 or not module.transposed
    return isinstance(module, _EXACT_TYPES + _EXACT_NORMS)


def find_groups(
    model: nn.Module,
    inputs: InputsLike,
    ignored_layers: Sequence[str] | None = None,
    notes: list[str] | None = None,
) -> list[PruningGroup]:
    """Every structured pruning group of `model`, in `named_modules()` order of the group names.

    `inputs`: one input's shape without the batch (`(1, 28, 28)`), several shapes (one per positional
    input), an `InputSpec`, or a batch of the model's inputs (a tensor, a tuple or a dict; any batch size
    gives the same groups), as `analysis.model.layers.example_inputs` reads them. The layers a model output exposes and `ignored_layers` keep their output channels.
    A group whose removal the model does not survive (tried on a copy) is left out, with one line in
    `notes`. The model is not changed.
    """
    original, model = model, private_copy(model)  # traced with hooks and requires_grad flips: on a copy
    inputs = example_inputs(inputs)
    module_names = {m: n for n, m in model.named_modules()}
    position = {n: i for i, n in enumerate(module_names.values())}
    unknown = set(ignored_layers or ()) - set(position)
    if unknown:
        raise WorkbenchError(f"no layer named {sorted(unknown)[0]!r} in the model (ignored_layers)")
    graph = channel_graph(model, inputs)
    heads = attention_heads(model)
    ignored = [model.get_submodule(n) for n in ignored_layers or ()]
    groups: list[PruningGroup] = []
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=ROOT_TYPES):
        root_module = group[0].dep.target.module
        if root_module not in module_names or not is_prunable(root_module) or touches_output(graph, group):
            continue  # a group an output exposes keeps its channels
        found = _as_pruning_group(graph, group, module_names, position, heads)
        if found is not None:
            groups.append(found)
    groups.sort(key=lambda g: position[g.name])
    trial = [
        Removal(g.name, g.root, tuple(g.root_channels(range(g.step))), g.ops)
        for g in groups
        if g.channels > g.step
    ]
    problems = apply_removals(model, inputs, trial, graph, original=original)
    if notes is not None:
        notes.extend(problems.values())
    return [g for g in groups if g.name not in problems]


def _as_pruning_group(graph, group, module_names, position, heads) -> PruningGroup | None:
    """A Torch-Pruning group as a `PruningGroup`, or None when it removes no Conv/Linear output."""
    members: list[GroupMember] = []
    approximate: list[str] = []
    ops: list[str] = []
    keyed = []
    # Only a reshape maps several root channels to one index (Torch-Pruning's merge hides all but one).
    reshapes = any(type(item.dep.target.module).__name__ == "_ReshapeOp" for item in group.items)
    traced = all_pairs(graph, group[0].dep.target.module) if reshapes else {}
    width = fused_width(group[0].dep.target.module, module_names, heads)
    for item in group.items:
        target = item.dep.target.module
        out = graph.is_out_channel_pruning_fn(item.dep.handler)
        if not out and not graph.is_in_channel_pruning_fn(item.dep.handler):
            continue
        pairs = _pairs(item)
        every = traced.get((item.dep.target, item.dep.handler), pairs)
        if width and not out and getattr(target, "in_features", None) == width:
            pairs, every = fold_sections(pairs, width), fold_sections(every, width)
        keyed.append((unit_key(graph, target, out, heads, module_names), sorted(every)))
        _add_once(ops, _OP_NAMES.get(type(target).__name__))
        _add_once(approximate, _inexact(target, graph, module_names))
        name, kind, axis = _member_identity(graph, target, module_names)
        if name is not None:  # functional ops (add, cat, reshape) carry no weights to zero
            idxs, roots = zip(*pairs, strict=True) if pairs else ((), ())
            members.append(GroupMember(name, kind, "out" if out else "in", idxs, roots, axis))
    out_layers = [m.name for m in members if m.dim == "out" and m.type in _LAYER_TYPE_NAMES]
    if not out_layers:
        return None
    root = group[0].dep.target.module
    unit_of, units = join_units(graph.get_out_channels(root), keyed)
    members = [replace(m, root_idxs=tuple(unit_of[r] for r in m.root_idxs)) for m in members]
    members.sort(key=lambda m: (position.get(_owner(m), -1), m.dim != "out"))
    return PruningGroup(
        name=min(out_layers, key=lambda n: position[n]),
        root=module_names[root],
        channels=len(units),
        members=tuple(members),
        approximate=tuple(approximate),
        units=() if all(len(u) == 1 for u in units) else tuple(tuple(u) for u in units),
        step=_head_step(members, module_names),
        ops=tuple(ops),
    )


def _add_once(found: list[str], label: str | None) -> None:
    if label is not None and label not in found:
        found.append(label)


def _pairs(item) -> list[tuple[int, int]]:
    """(index, root channel) pairs of a merged Torch-Pruning group item (one root channel per index)."""
    roots = item.root_idxs if item.root_idxs is not None else item.idxs
    return [(int(i), int(r)) for i, r in zip(item.idxs, roots, strict=True) if r is not None]


def _inexact(target, graph, module_names) -> str | None:
    """A label for a group item whose removal zeroing cannot reproduce exactly, else None."""
    if getattr(target, "sections_unmapped", False):
        return "split (sections unmapped)"
    name, kind, _ = _member_identity(graph, target, module_names)
    if name is not None and (kind == "Parameter" or not _simulates_exactly(target)):
        return f"{name} ({kind})"
    return None


def _owner(member: GroupMember) -> str:
    """The module a member belongs to: itself, or the module holding a raw parameter."""
    if member.type != "Parameter":
        return member.name
    return member.name.rsplit(".", 1)[0] if "." in member.name else ""  # "" is the model itself


def _head_step(members: Sequence[GroupMember], module_names) -> int:
    """The lcm of the head counts of the group's nn.MultiheadAttention members (1 without any): its width
    must stay a multiple of its heads."""
    by_name = {n: m for m, n in module_names.items()}
    heads = [
        by_name[m.name].num_heads for m in members if isinstance(by_name.get(m.name), nn.MultiheadAttention)
    ]
    return math.lcm(*heads) if heads else 1


def _member_identity(graph, target, module_names) -> tuple[str | None, str, int | None]:
    """(name, type, axis) of a group item that holds weights: a submodule, or a raw parameter (named as in
    `named_parameters()`, cut along Torch-Pruning's pruning dim); (None, "", None) for a functional op."""
    if isinstance(target, nn.Parameter):
        name = graph._param_to_name.get(target)
        if name is None:
            return None, "", None
        return name, "Parameter", int(graph.module2node[target].pruning_dim)
    if target in module_names:
        return module_names[target], type(target).__name__, None
    return None, "", None


def remove_channels(
    model: nn.Module,
    example_inputs: ModelInputs,
    groups: Sequence[PruningGroup],
    channels: Mapping[str, Sequence[int]],
    notes: list[str] | None = None,
) -> nn.Module:
    """Physically remove `channels[group name]` (unit indices) from `model`, IN PLACE, with Torch-Pruning;
    returns `model`. Copy the model first if the caller's must stay intact.

    Afterwards the model runs on `example_inputs` with outputs of the original shapes: a group whose removal
    breaks that is put back and named in `notes` (one line: its layer and the failing operation), the
    others stay removed. Without `notes`, such a failure raises WorkbenchError and the model is unchanged.
    """
    by_name = {g.name: g for g in groups}
    unknown = set(channels) - set(by_name)
    if unknown:
        raise WorkbenchError(f"no pruning group named {sorted(unknown)[0]!r}: use a name from find_groups()")
    removals = []
    for name, idxs in channels.items():
        idxs = sorted(set(int(i) for i in idxs))
        group = by_name[name]
        if len(idxs) >= group.channels:
            raise WorkbenchError(f"group {name!r} has {group.channels} channels: cannot remove {len(idxs)}")
        removals.append(Removal(name, group.root, tuple(group.root_channels(idxs)), group.ops))
    problems = apply_removals(model, example_inputs, removals, keep_partial=notes is not None)
    if problems and notes is None:
        raise WorkbenchError(next(iter(problems.values())))
    if notes is not None:
        notes.extend(problems.values())
    return model
