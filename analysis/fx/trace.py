"""Tracing a model with torch.fx and rewriting its in-place ops out of place (same numbers), so a cached
activation is never written into by a later run."""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from analysis.concurrency import symbolic_trace
from analysis.errors import WorkbenchError, first_line
from analysis.fx.alias import INPLACE_OPERATORS, inplace_flag_set, read_after, without_inplace_flag


def trace_model(model: nn.Module) -> fx.GraphModule:
    """`torch.fx.symbolic_trace(model)`, with in-place ops made out-of-place (same numbers).

    The GraphModule shares the model's parameters (its modules are the model's own objects), so in-place
    weight changes on the model are seen by the graph. Raises WorkbenchError saying why tracing failed.
    """
    try:
        gm = symbolic_trace(model)  # under the process-wide lock: fx patches nn.Module while tracing
    except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError, ...)
        raise WorkbenchError(
            f"model could not be traced with torch.fx ({type(exc).__name__}: {first_line(exc, 200)})"
        ) from exc
    _make_out_of_place(gm)
    return gm


def _make_out_of_place(gm: fx.GraphModule) -> None:
    """Rewrite in-place ops as out-of-place ones (so a suffix run never writes into the cache).

    That keeps the numbers only where nothing reads the modified tensor (or a view of it) afterwards;
    otherwise, and for writes with no out-of-place twin (x[...] = v, copy_), raise WorkbenchError naming
    the op, and the caller falls back to full evaluation.
    """
    rewrites: list[tuple[fx.Node, Callable[[], None]]] = []
    copies: dict[str, str] = {}
    for node in gm.graph.nodes:
        node.meta["source_target"] = node.target
        rewrite = _inplace_rewrite(gm, node, copies)
        if rewrite is not None:
            rewrites.append((node, rewrite))
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node, _ in rewrites:
        if node.args and isinstance(node.args[0], fx.Node) and read_after(gm, node, node.args[0], order):
            raise WorkbenchError(
                f"model reads a tensor after modifying it in place ({_describe(node)}): cannot cache around it"
            )
    for _, rewrite in rewrites:
        rewrite()
    gm.graph.lint()
    gm.recompile()


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _inplace_rewrite(gm: fx.GraphModule, node: fx.Node, copies: dict[str, str]) -> Callable[[], None] | None:
    """How to make `node` out-of-place (None where it is not in-place); WorkbenchError where impossible."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if getattr(module, "inplace", False) is not True:
            return None

        def rewrite_module() -> None:
            if node.target not in copies:
                twin = copy.copy(module)  # shares parameters; only the flag differs
                twin.inplace = False
                name = f"_out_of_place_{len(copies)}"
                gm.add_submodule(name, twin)
                copies[node.target] = name
            node.target = copies[node.target]

        return rewrite_module
    if node.op == "call_function":
        if node.target in INPLACE_OPERATORS:
            twin = INPLACE_OPERATORS[node.target]
            return lambda: setattr(node, "target", twin)
        if inplace_flag_set(node):
            args, kwargs = without_inplace_flag(node)

            def rewrite_flag() -> None:
                node.args, node.kwargs = args, kwargs

            return rewrite_flag
        if node.target is operator.setitem:
            raise WorkbenchError("model writes into a tensor (x[...] = v): cannot cache around it")
        name = getattr(node.target, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):
            twin = getattr(torch, name[:-1], None) or getattr(F, name[:-1], None)
            if twin is None:
                raise WorkbenchError(f"model calls in-place {name}: cannot cache around it")
            return lambda: setattr(node, "target", twin)
    if node.op == "call_method":
        name = node.target
        if name.endswith("_") and not name.endswith("__"):
            if not hasattr(torch.Tensor, name[:-1]):
                raise WorkbenchError(f"model calls in-place Tensor.{name}: cannot cache around it")
            return lambda: setattr(node, "target", name[:-1])
    return None
