"""Alias analysis on an fx graph: which ops write in place, which results may share memory with their
input, and whether a tensor is read after an in-place write (where rewriting out-of-place would change the
numbers)."""

from __future__ import annotations

import inspect
import operator

import torch
import torch.fx as fx
from torch import nn

# Out-of-place twins of in-place operators: the cache must never be mutated by a suffix run.
INPLACE_OPERATORS = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    operator.ifloordiv: operator.floordiv,
    operator.imod: operator.mod,
    operator.ipow: operator.pow,
    operator.iand: operator.and_,
    operator.ior: operator.or_,
    operator.ixor: operator.xor,
    operator.ilshift: operator.lshift,
    operator.irshift: operator.rshift,
    operator.imatmul: operator.matmul,
}


# Ops whose result may share memory with their first argument (so an in-place write to one shows in both).
_VIEW_METHODS = {
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "transpose", "permute", "t", "squeeze",
    "unsqueeze", "expand", "expand_as", "narrow", "select", "split", "chunk", "unbind", "contiguous", "detach",
    "as_strided", "diagonal", "movedim", "moveaxis", "swapaxes", "swapdims", "unfold", "type_as", "to", "float",
}  # fmt: skip


_VIEW_FUNCTIONS = {
    operator.getitem, torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze,
    torch.unsqueeze, torch.narrow, torch.select, torch.split, torch.chunk, torch.unbind, torch.t, torch.movedim,
    torch.swapaxes, torch.diagonal, torch.detach,
}  # fmt: skip


_VIEW_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)


def may_alias_input(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether `node`'s value may share memory with its first argument (views, identity, in-place ops)."""
    if node.op == "call_method":
        return node.target in _VIEW_METHODS or (node.target.endswith("_") and not node.target.endswith("__"))
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (
            node.target in _VIEW_FUNCTIONS
            or node.target in INPLACE_OPERATORS
            or (name.endswith("_") and not name.endswith("__"))
            or inplace_flag_set(node)
        )
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return isinstance(module, _VIEW_MODULES) or getattr(module, "inplace", False) is True
    return False


def read_after(gm: fx.GraphModule, writer: fx.Node, target: fx.Node, order: dict[fx.Node, int]) -> bool:
    """Whether any node after `writer` reads `target` or a tensor that may alias it (a view of it, or a
    tensor it is a view of). Readers of `writer`'s own result see the new value either way."""
    aliases = {target}
    stack = [target]
    while stack:
        node = stack.pop()
        related = [
            user
            for user in node.users
            if user is not writer and may_alias_input(gm, user) and user.args and user.args[0] is node
        ]
        if may_alias_input(gm, node) and node.args and isinstance(node.args[0], fx.Node):
            related.append(node.args[0])
        for other in related:
            if other not in aliases:
                aliases.add(other)
                stack.append(other)
    return any(order[user] > order[writer] for a in aliases for user in a.users if user is not writer)


def _bound_inplace(node: fx.Node):
    """The call's arguments bound to its signature, where it has an `inplace` parameter; else None."""
    try:
        signature = inspect.signature(node.target)
    except (TypeError, ValueError):
        return None
    if "inplace" not in signature.parameters:
        return None
    try:
        return signature.bind(*node.args, **node.kwargs)
    except TypeError:
        return None


def inplace_flag_set(node: fx.Node) -> bool:
    bound = _bound_inplace(node)
    return bound is not None and bound.arguments.get("inplace") is True


def without_inplace_flag(node: fx.Node) -> tuple[tuple, dict]:
    bound = _bound_inplace(node)
    bound.arguments["inplace"] = False
    return tuple(bound.args), dict(bound.kwargs)
