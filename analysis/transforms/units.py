"""Which root channels of a pruning group can only go together (its units), from Torch-Pruning's group items.

A group item maps root channels to indices of one module or op (`all_pairs`: every pair, where
Torch-Pruning's merged group keeps one root channel per index). Two root channels that land on the same
index, the same attention head, the same position within the channel groups of a grouped conv or
GroupNorm, or the same position within the sections of an even split, cannot be removed one without the
other: they join one unit (union-find). Most groups have one channel per unit.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from torch import nn

from analysis.model.layers import fused_sections


def unit_key(
    graph, target: Any, out: bool, heads: dict[str, tuple[str, int]], module_names: dict[nn.Module, str]
) -> Callable[[int], Hashable]:
    """index -> what must go with it in `target`: the index itself, its attention head (query/key/value
    outputs; the same head in each section of a fused qkv), its position within each channel group
    (grouped convs, GroupNorm) or within each section of an even split (`chunk`, `split(n)`: the
    sections must keep one width)."""
    name = module_names.get(target) if not isinstance(target, nn.Parameter) else None
    if out and name in heads:
        width = target.out_features // fused_sections(name)  # a fused qkv: head h in each section
        head_size = width // heads[name][1]
        return lambda i: (id(target), out, (i % width) // head_size)
    pruner = graph.get_pruner_of_module(target)
    if isinstance(target, nn.Module) and pruner is not None and name is not None:
        groups = pruner.get_out_channel_groups(target) if out else pruner.get_in_channel_groups(target)
        width = graph.get_out_channels(target) if out else graph.get_in_channels(target)
        if isinstance(groups, int) and width and 1 < groups < width and width % groups == 0:
            size = width // groups
            return lambda i: (id(target), out, i % size)
    node = graph.module2node.get(target)
    size = getattr(getattr(node, "grad_fn", None), "_saved_split_size", None)
    if type(target).__name__ == "_SplitOp" and isinstance(size, int) and size > 0:
        return lambda i: (id(target), out, i % size)
    return lambda i: (id(target), out, i)


def fused_width(root: nn.Module, module_names, heads) -> int | None:
    """The width of one section (queries, keys or values) of a fused `qkv` root layer, else None."""
    name = module_names.get(root)
    if name not in heads or fused_sections(name) == 1:
        return None
    return root.out_features // fused_sections(name)


def fold_sections(pairs, width: int) -> list[tuple[int, int]]:
    """(index, root channel) pairs of the layer reading a fused qkv's heads (its output projection):
    Torch-Pruning maps the qkv's outputs one to one through the reshapes and the attention, but root
    channel s x width + c of section s reaches the projection's input c."""
    return sorted({(i % width, r) for i, r in pairs})


def join_units(
    root_channels: int, items: Sequence[tuple[Callable[[int], Hashable], Sequence[tuple[int, int]]]]
) -> tuple[dict[int, int], list[list[int]]]:
    """Root channels joined into units (union-find). `items`: per group item, its `unit_key` and its
    (index, root channel) pairs; two root channels whose indices share a key go together. Returns root
    channel -> unit and each unit's root channels, units ordered by their first channel."""
    parent = list(range(root_channels))

    def find(c: int) -> int:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for key, pairs in items:
        first: dict[Hashable, int] = {}
        for i, r in pairs:
            if not 0 <= r < root_channels:
                continue
            k = key(i)
            if k not in first:
                first[k] = r
                continue
            a, b = find(first[k]), find(r)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for c in range(root_channels):
        members.setdefault(find(c), []).append(c)
    units = sorted(members.values(), key=lambda u: u[0])
    return {c: k for k, u in enumerate(units) for c in u}, units


def all_pairs(graph, root: nn.Module) -> dict[tuple[Any, Any], set[tuple[int, int]]]:
    """(node, pruning function) -> every (index, root channel) pair of the group rooted at `root`'s output
    channels: Torch-Pruning's own traversal (`DependencyGraph.get_pruning_group`) with its index mappings,
    but without its final merge, which keeps one root channel per index and so hides that the 16 outputs
    of a Linear reshaped into one channel of a following conv go together."""
    from torch_pruning import ops
    from torch_pruning._helpers import _HybridIndex
    from torch_pruning.pruner import function

    fn = graph.get_pruner_of_module(root).prune_out_channels
    if isinstance(root, ops.TORCH_CONV) and root.groups == root.out_channels > 1:
        fn = function.prune_depthwise_conv_out_channels  # as Torch-Pruning does for a depthwise root
    start = graph.module2node[root]
    stack = [(start, fn, [_HybridIndex(idx=i, root_idx=i) for i in range(graph.get_out_channels(root))])]
    pairs: dict[tuple[Any, Any], set[tuple[int, int]]] = {
        (start, fn): {(i.idx, i.root_idx) for i in stack[0][2]}
    }
    done: dict[tuple[Any, Any], list[list]] = {}
    visited = {start}
    while stack:
        node, fn, idxs = stack.pop()
        visited.add(node)
        for dep in node.dependencies:
            if not dep.is_triggered_by(fn):
                continue
            new = idxs
            for mapping in dep.index_mapping:
                if mapping is not None:
                    new = mapping(new)
            key = (dep.target, dep.handler)
            if not new or (dep.target in visited and new in done.get(key, [])):
                continue
            done.setdefault(key, []).append(new)
            pairs.setdefault(key, set()).update((i.idx, i.root_idx) for i in new if i.root_idx is not None)
            stack.append((dep.target, dep.handler, new))
    return pairs
