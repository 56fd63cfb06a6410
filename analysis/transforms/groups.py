"""Structured pruning groups from Torch-Pruning's dependency graph, by layer name.

Layers coupled through residual adds, concatenations, norms and the next layers' inputs lose the same
channels together; pruning one alone is impossible, and simulating it alone reports it as falsely robust.
A `PruningGroup` records such a unit by module names (so it applies to any copy of the model):

- `name`: the group's first Conv/Linear layer (in `named_modules()` order) among those whose output
  channels it removes; `root`: Torch-Pruning's root layer (same channels, its index space);
- `members`: every (module, "out" | "in", indices) the removal touches, indices mapped to root channels.

Public API:
    find_groups(model, example_inputs, ignored_layers=None) -> list[PruningGroup]
    final_layers(model, example_inputs) -> list[str]
    PruningGroup.l1_importance(model), .lowest_l1_channels(model, ratio), .channels_to_remove(ratio),
    PruningGroup.zero_channels(model, channels)   # simulation: same logits as removal (see its docstring)
    remove_channels(model, example_inputs, groups, {group name: channels})  # physical removal, in place

The final classifier (the last Conv/Linear the forward pass runs) never loses outputs: its group is left
out, as is any group whose removal would change the model's output shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from analysis.concurrency import private_copy
from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError, first_line
from analysis.importance.base import get_importance
from analysis.layers import final_layers, is_prunable
from analysis.validate import require_data

# Module types whose channel removal zeroing reproduces exactly (per-channel ops). Others in a group
# (LayerNorm, GroupNorm, attention, LSTM, grouped convs, ...) mix channels: simulation is approximate.
_EXACT_TYPES = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.PReLU)
_EXACT_NORMS = (nn.modules.instancenorm._InstanceNorm,)


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and module.groups == module.in_channels
    )


@dataclass(frozen=True)
class GroupMember:
    """One module the group's removal touches: `dim` "out" (its outputs go) or "in" (its inputs go).

    `idxs[k]` is an index in that module's dimension; `root_idxs[k]` the group channel it belongs to
    (a Linear after a flatten has several inputs per channel).
    """

    name: str
    type: str
    dim: str
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]


@dataclass(frozen=True)
class PruningGroup:
    """Layers that lose the same channels together. Channel numbers are the root layer's output channels."""

    name: str
    root: str
    channels: int
    members: tuple[GroupMember, ...]
    approximate: tuple[str, ...] = ()  # members zeroing cannot simulate exactly (they mix channels)

    @property
    def member_names(self) -> list[str]:
        """Every module the group prunes, the group's name first, each once."""
        names = [self.name]
        for m in self.members:
            if m.name not in names:
                names.append(m.name)
        return names

    @property
    def out_layers(self) -> list[str]:
        """The Conv/Linear layers whose output channels the group removes."""
        names: list[str] = []
        for m in self.members:
            if m.dim == "out" and m.type in _LAYER_TYPE_NAMES and m.name not in names:
                names.append(m.name)
        return names

    def channels_to_remove(self, ratio: float) -> int:
        """`round(ratio x channels)`, at most channels - 1 (a layer keeps at least one channel)."""
        return min(int(round(ratio * self.channels)), self.channels - 1)

    def l1_importance(self, model: nn.Module) -> torch.Tensor:
        """Per channel: the sum, over every Conv/Linear whose outputs the group removes, of that output
        channel's filter L1 norm (sum |w| over the row). Shape (channels,), float64."""
        return group_scores(model, [self], "l1")[self.name]

    def lowest_l1_channels(self, model: nn.Module, ratio: float) -> list[int]:
        """The `channels_to_remove(ratio)` channels of lowest `l1_importance`, ties to the lower index."""
        n = self.channels_to_remove(ratio)
        order = torch.argsort(self.l1_importance(model), stable=True)
        return sorted(order[:n].tolist())

    def zero_channels(self, model: nn.Module, channels: Sequence[int]) -> None:
        """Simulate removing `channels` (root indices) in place: every out-member's weight rows and bias,
        every norm's weight and bias (so the channel is zero after its norm), and every in-member's weight
        columns are zeroed. The logits equal physical removal's (tested to 1e-5), except where the group
        holds channel-mixing members (`approximate`)."""
        chosen = set(int(c) for c in channels)
        if not chosen:
            return
        with torch.no_grad():
            for m in self.members:
                idx = [i for i, r in zip(m.idxs, m.root_idxs, strict=True) if r in chosen]
                if not idx:
                    continue
                module = model.get_submodule(m.name)
                _zero_member(module, m.dim, torch.tensor(idx, dtype=torch.long))


_LAYER_TYPE_NAMES = {"Conv1d", "Conv2d", "Conv3d", "Linear"}


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
    elif isinstance(module, nn.Linear):
        if dim == "out":
            module.weight.index_fill_(0, idx, 0.0)
            if module.bias is not None:
                module.bias.index_fill_(0, idx, 0.0)
        else:
            module.weight.index_fill_(1, idx, 0.0)
    else:
        # Norms, PReLU and the like: zero their per-channel affine parameters where they have them.
        for attr in ("weight", "bias"):
            t = getattr(module, attr, None)
            if isinstance(t, torch.Tensor) and t.ndim >= 1 and t.shape[0] > int(idx.max()):
                t.index_fill_(0, idx, 0.0)


def _simulates_exactly(module: nn.Module) -> bool:
    """Whether zeroing reproduces this member's channel removal exactly (it acts on each channel alone)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.groups == 1 or _is_depthwise(module)
    return isinstance(module, _EXACT_TYPES + _EXACT_NORMS)


def _dependency_graph(model: nn.Module, example_inputs: torch.Tensor):
    """Torch-Pruning's DependencyGraph of `model` (which it leaves unchanged)."""
    import torch_pruning as tp

    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:  # the graph is traced through autograd
        p.requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs, verbose=False)
    except Exception as exc:  # torch-pruning fails in many ways on exotic graphs
        raise WorkbenchError(f"could not build the channel dependency graph: {first_line(exc, 200)}") from exc
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)


def find_groups(
    model: nn.Module, example_inputs: torch.Tensor, ignored_layers: Sequence[str] | None = None
) -> list[PruningGroup]:
    """Every structured pruning group of `model`, in `named_modules()` order of the group names.

    `example_inputs` is one batch of inputs (one sample is enough). The final classifier and
    `ignored_layers` keep their output channels. The model is not changed.
    """
    import torch_pruning as tp

    model = private_copy(model)  # the graph is built with hooks and requires_grad flips: on a private copy
    module_names = {m: n for n, m in model.named_modules()}
    position = {n: i for i, n in enumerate(module_names.values())}
    ignored_names = set(final_layers(model, example_inputs)) | set(ignored_layers or ())
    unknown = ignored_names - set(position)
    if unknown:
        raise WorkbenchError(f"no layer named {sorted(unknown)[0]!r} in the model (ignored_layers)")
    dg = _dependency_graph(model, example_inputs)
    ignored = [model.get_submodule(n) for n in ignored_names]
    groups: list[PruningGroup] = []
    for group in dg.get_all_groups(
        ignored_layers=ignored, root_module_types=(nn.modules.conv._ConvNd, nn.Linear)
    ):
        root_module = group[0].dep.target.module
        if root_module not in module_names or not is_prunable(root_module):
            continue
        members: list[GroupMember] = []
        approximate: list[str] = []
        changes_output = False
        for item in group.items:
            target = item.dep.target.module
            if isinstance(target, tp.ops._OutputOp):
                changes_output = True
                continue
            if not isinstance(target, nn.Module) or target not in module_names:
                continue  # functional ops (add, cat, reshape) and bare parameters carry no weights to zero
            if dg.is_out_channel_pruning_fn(item.dep.handler):
                dim = "out"
            elif dg.is_in_channel_pruning_fn(item.dep.handler):
                dim = "in"
            else:
                continue
            name = module_names[target]
            if not _simulates_exactly(target):
                label = f"{name} ({type(target).__name__})"
                if label not in approximate:
                    approximate.append(label)
            root_idxs = item.root_idxs if item.root_idxs is not None else item.idxs
            members.append(
                GroupMember(name, type(target).__name__, dim, tuple(int(i) for i in item.idxs),
                            tuple(int(i) for i in root_idxs))
            )  # fmt: skip
        if changes_output:
            continue
        out_layers = [m.name for m in members if m.dim == "out" and m.type in _LAYER_TYPE_NAMES]
        if not out_layers:
            continue
        name = min(out_layers, key=lambda n: position[n])
        members.sort(key=lambda m: (position[m.name], m.dim != "out"))
        channels = dg.get_out_channels(root_module)
        groups.append(
            PruningGroup(name, module_names[root_module], int(channels), tuple(members), tuple(approximate))
        )
    groups.sort(key=lambda g: position[g.name])
    return groups


def remove_channels(
    model: nn.Module,
    example_inputs: torch.Tensor,
    groups: Sequence[PruningGroup],
    channels: Mapping[str, Sequence[int]],
) -> nn.Module:
    """Physically remove `channels[group name]` (root channel indices) from `model`, IN PLACE, with
    Torch-Pruning; returns `model`. Copy the model first if the caller's must stay intact."""
    by_name = {g.name: g for g in groups}
    unknown = set(channels) - set(by_name)
    if unknown:
        raise WorkbenchError(f"no pruning group named {sorted(unknown)[0]!r}: use a name from find_groups()")
    dg = _dependency_graph(model, example_inputs)
    for name, idxs in channels.items():
        idxs = sorted(set(int(i) for i in idxs))
        if not idxs:
            continue
        group = by_name[name]
        if len(idxs) >= group.channels:
            raise WorkbenchError(f"group {name!r} has {group.channels} channels: cannot remove {len(idxs)}")
        root = model.get_submodule(group.root)
        pruner = dg.get_pruner_of_module(root)
        dg.get_pruning_group(root, pruner.prune_out_channels, idxs).prune()
    return model


def group_scores(
    model: nn.Module,
    groups: Sequence[PruningGroup],
    criteria: Mapping[str, str] | str,
    data=None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> dict[str, torch.Tensor]:
    """Per group (by name), one float64 score per channel, higher = more important.

    `criteria` is one criterion name for every group, or group name -> criterion (default `l1`). A group's
    score sums, over every prunable layer whose outputs it removes, that layer's score from the importance
    registry (`get_importance`; APoZ negated, so higher is more important for every criterion). A layer
    the criterion cannot score (NaN: `bn-scale` without a following norm) is refused.
    """
    by_criterion: dict[str, list[PruningGroup]] = {}
    for g in groups:
        name = criteria if isinstance(criteria, str) else criteria.get(g.name, "l1")
        by_criterion.setdefault(name, []).append(g)
    scores: dict[str, torch.Tensor] = {}
    for criterion, chosen in by_criterion.items():
        importance = get_importance(criterion, max_samples=max_samples)
        if importance.data_driven:
            require_data(criterion, data)
        layers = sorted({n for g in chosen for n in g.out_layers if is_prunable(model.get_submodule(n))})
        found = importance(model, data if importance.data_driven else None, layers)
        sign = 1.0 if importance.higher_is_important else -1.0
        for g in chosen:
            total = torch.zeros(g.channels, dtype=torch.float64)
            for m in g.members:
                if m.dim != "out" or m.name not in found:
                    continue
                layer_scores = found[m.name].detach().double().flatten()
                if torch.isnan(layer_scores).any():
                    raise WorkbenchError(
                        f"criterion {criterion!r} has no score for layer {m.name!r} (no following norm for "
                        "bn-scale?): choose another criterion for it"
                    )
                total.index_add_(
                    0, torch.tensor(m.root_idxs, dtype=torch.long), sign * layer_scores[list(m.idxs)]
                )
            scores[g.name] = total
    return scores
