"""Physical channel removal with Torch-Pruning, checked: after the edit the model must still run and give
outputs of the original shapes. An edit that breaks it is put back, and one line says which layer's
channels could not go and at which operation the model failed; the other edits stay.

Public API:
    Removal(name, root, channels, ops)    # remove `channels` of layer `root` and everything coupled
    apply_removals(model, inputs, removals, graph=None, keep_partial=True) -> {name: problem line}
    sync_attention_heads(model)           # Hugging Face attention modules learn their new head count
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from analysis.errors import first_line
from analysis.model.layers import (
    ModelInputs,
    attention_heads,
    channel_graph,
    copy_model,
    fused_sections,
    output_shapes,
    trace_batch,
)
from analysis.transforms.units import fused_width


@dataclass(frozen=True)
class Removal:
    """Remove output `channels` of the layer named `root`, with every coupled layer. `name` names the
    edit in messages (the group's name); `ops` are the shape operations its channels pass through."""

    name: str
    root: str
    channels: tuple[int, ...]
    ops: tuple[str, ...] = ()


def apply_removals(
    model: nn.Module,
    inputs: ModelInputs,
    removals: Sequence[Removal],
    graph=None,
    keep_partial: bool = True,
    original: nn.Module | None = None,
) -> dict[str, str]:
    """Apply `removals` to `model` IN PLACE (Torch-Pruning's `get_pruning_group(...).prune()`), then check
    that it runs on `inputs` and its outputs keep their shapes. Returns, for each removal that broke that
    and was put back, one line naming its layer and the failing operation. With `keep_partial=False`, any
    failure puts the whole model back as it was. `graph`: the model's `channel_graph`, where the caller has
    one; `original`: an unchanged copy of `model` to restore from (else one is taken first). Put back means
    the model's attributes are restored from that copy (submodule objects are replaced, so references to
    them from outside go stale)."""
    removals = [r for r in removals if r.channels]
    if not removals:
        return {}
    graph = graph if graph is not None else channel_graph(model, inputs)
    snapshot = original if original is not None else copy_model(model)
    x = trace_batch(inputs)
    problem = _try(model, graph, removals, x, graph.output_shapes)
    if problem is None:
        return {}
    _restore(model, snapshot)
    if len(removals) == 1:
        return {removals[0].name: problem}
    return _one_by_one(model, snapshot, inputs, removals, keep=keep_partial)


def _one_by_one(
    model: nn.Module,
    snapshot: nn.Module,
    inputs: ModelInputs,
    removals: Sequence[Removal],
    keep: bool = False,
) -> dict[str, str]:
    """Each removal alone, checked: the failures, each put back. With `keep`, the good ones stay applied;
    without, the model ends as `snapshot` (used to name the culprits only)."""
    x = trace_batch(inputs)
    graph = channel_graph(model, inputs)
    reference = graph.output_shapes
    good: list[Removal] = []
    problems: dict[str, str] = {}
    for removal in removals:
        problem = _try(model, graph, [removal], x, reference)
        if problem is None:
            good.append(removal)
            continue
        problems[removal.name] = problem
        _restore(model, snapshot)
        graph = channel_graph(model, inputs)
        for done in good:
            _prune(model, graph, done)
    if not keep:
        _restore(model, snapshot)
    return problems


def _try(model, graph, removals: Sequence[Removal], x: ModelInputs, reference) -> str | None:
    """None when the removals apply and the model still runs with the reference output shapes; else why."""
    current = removals[0]
    try:
        for current in removals:
            _prune(model, graph, current)
        shapes = output_shapes(model, x)
    except Exception as exc:  # any failure (Torch-Pruning's own checks, the forward pass) is reported
        return _describe(current, exc)
    if shapes != reference:
        return (
            f"{current.name}: kept whole: removing its channels changes the output shapes {reference} "
            f"to {shapes}"
        )
    return None


def _prune(model: nn.Module, graph, removal: Removal) -> None:
    from torch_pruning._helpers import GroupItem

    root = model.get_submodule(removal.root)
    pruner = graph.get_pruner_of_module(root)
    group = graph.get_pruning_group(root, pruner.prune_out_channels, list(removal.channels))
    heads = attention_heads(model)
    width = fused_width(root, {root: removal.root}, heads)
    for k, item in enumerate(group.items):
        target = item.dep.target.module
        reads = (
            graph.is_in_channel_pruning_fn(item.dep.handler) and getattr(target, "in_features", 0) == width
        )
        if width and reads:
            group[k] = item = GroupItem(item.dep, [i % width for i in item.idxs])  # `fold_sections`
        unique = sorted(set(item.idxs))
        if len(unique) != len(item.idxs):
            # Several root channels map to one index after a reshape (16 Linear outputs -> 1 conv input):
            # Torch-Pruning 1.6.1 lists that index once per root channel and subtracts the repeats from the
            # layer's width (16 -> 0 in_channels). Each index once.
            group[k] = GroupItem(item.dep, unique)
    head_size = width // heads[removal.root][1] if width else None
    group.prune()
    sync_attention_heads(model)
    if head_size:  # a fused qkv's module keeps no head size: its head count from the one before removal
        module = model.get_submodule(heads[removal.root][0])
        for attr in ("num_attention_heads", "num_heads"):
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, root.out_features // fused_sections(removal.root) // head_size)


def _restore(model: nn.Module, snapshot: nn.Module) -> None:
    """Put `model` back to `snapshot`'s state in place (the caller keeps its reference to `model`)."""
    fresh = copy_model(snapshot)
    model.__dict__.clear()
    model.__dict__.update(fresh.__dict__)


_OP_PATTERNS = (
    ("view", r"\.view\("),
    ("reshape", r"reshape\("),
    ("unflatten", r"unflatten\("),
    ("flatten", r"flatten\("),
    ("split", r"split\("),
    ("chunk", r"chunk\("),
    ("cat", r"\bcat\(|concat\("),
    ("expand", r"expand\("),
)
_TORCH_DIR = str(Path(torch.__file__).parent)
_OWN_DIR = str(Path(__file__).resolve().parents[1])


def _describe(removal: Removal, exc: BaseException) -> str:
    """One line: the layer kept whole, the operation that failed and where in the model's code."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith((_TORCH_DIR, _OWN_DIR)) and "torch_pruning" not in f.filename
    ]
    where, op = "", None
    if frames:
        frame = frames[-1]
        code = (frame.line or "").strip()
        op = next((name for name, pattern in _OP_PATTERNS if re.search(pattern, code)), None)
        where = f" ({Path(frame.filename).name}:{frame.lineno}: {code[:80]})"
    op = op or (removal.ops[0] if removal.ops else "the forward pass")
    return f"{removal.name}: kept whole: removing its channels breaks `{op}`{where}: {first_line(exc, 160)}"


def sync_attention_heads(model: nn.Module) -> None:
    """After whole heads left a Hugging Face style attention module (`query`/`q_proj` Linear, head size in
    `attention_head_size` or `head_dim`), set its head count (and `all_head_size`) to what its query
    projection now holds, as Torch-Pruning's Hugging Face examples do by hand."""
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            continue
        size = getattr(module, "attention_head_size", getattr(module, "head_dim", None))
        query = getattr(module, "query", getattr(module, "q_proj", None))
        if not isinstance(size, int) or size < 1 or not isinstance(query, nn.Linear):
            continue
        if query.out_features % size:
            continue
        for attr in ("num_attention_heads", "num_heads"):
            if isinstance(getattr(module, attr, None), int):
                setattr(module, attr, query.out_features // size)
        if isinstance(getattr(module, "all_head_size", None), int):
            module.all_head_size = query.out_features
