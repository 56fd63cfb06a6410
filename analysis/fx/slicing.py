"""Slicing a traced graph: the nodes downstream of a set of modules, the suffix GraphModule that recomputes
only them from cached upstream values, and the prefix that computes those cached values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch.fx as fx


def _touches(target: str, modules: Iterable[str]) -> bool:
    """Whether a call_module/get_attr target is one of `modules`, inside one, or contains one."""
    for m in modules:
        if m == "" or target == m or target.startswith(m + ".") or m.startswith(target + "."):
            return True
    return False


def _seed_nodes(gm: fx.GraphModule, modules: Sequence[str]) -> list[fx.Node]:
    return [
        n
        for n in gm.graph.nodes
        if n.op in ("call_module", "get_attr")
        and _touches(str(n.meta.get("source_target", n.target)), modules)
    ]


def downstream(gm: fx.GraphModule, modules: Sequence[str]) -> set[fx.Node] | None:
    """Nodes whose values depend on `modules`' parameters; None where no node uses them (unknown)."""
    seeds = _seed_nodes(gm, modules)
    if not seeds:
        return None
    down: set[fx.Node] = set()
    stack = list(seeds)
    while stack:
        node = stack.pop()
        if node in down:
            continue
        down.add(node)
        stack.extend(node.users)
    return down


def downstream_nodes(gm: fx.GraphModule, modules: Sequence[str]) -> set[str]:
    """Names of the graph nodes whose values depend on the parameters of `modules` (empty if unused)."""
    down = downstream(gm, modules)
    return {n.name for n in down} if down else set()


@dataclass
class Suffix:
    module: fx.GraphModule
    frontier: list[str]  # names of the upstream nodes whose cached values feed the suffix, in order


def build_suffix(gm: fx.GraphModule, down: set[fx.Node]) -> Suffix:
    """A GraphModule computing the model output from cached values of the nodes that feed `down`."""
    nodes = list(gm.graph.nodes)
    output = next(n for n in nodes if n.op == "output")
    inside = set(down) | {output}
    frontier: list[fx.Node] = []
    seen: set[fx.Node] = set()
    for node in nodes:
        if node in inside:
            for arg in node.all_input_nodes:
                if arg not in inside and arg not in seen:
                    seen.add(arg)
                    frontier.append(arg)
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in frontier:
        env[node] = graph.placeholder(f"cached_{node.name}")
    for node in nodes:
        if node in down:
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(fx.graph.map_arg(output.args[0], lambda n: env[n]))
    return Suffix(fx.GraphModule(gm, graph), [n.name for n in frontier])


def build_prefix(gm: fx.GraphModule, keep: list[str], output: bool = True) -> fx.GraphModule:
    """The full graph, returning (output, tuple of the values of the nodes named in `keep`); without
    `output`, only that tuple, computed by the nodes it needs (the ones upstream of `keep`)."""
    graph = fx.Graph()
    val_map: dict[fx.Node, fx.Node] = {}
    out = graph.graph_copy(gm.graph, val_map)
    by_name = {n.name: val_map[n] for n in gm.graph.nodes if n in val_map}
    kept = tuple(by_name[name] for name in keep)
    graph.output((out, kept) if output else kept)
    prefix = fx.GraphModule(gm, graph)
    if not output:
        prefix.graph.eliminate_dead_code()
        prefix.recompile()
    return prefix
