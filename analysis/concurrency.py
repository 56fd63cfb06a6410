"""Analyses that may run at the same time on the same model object (two app sessions share a cached model).

Three rules make that safe:

- Hooks and patches go on a private copy (`private_copy`), never on a model another run can see.
- `torch.fx.symbolic_trace` patches `nn.Module.__call__` and `__getattr__` for the whole process while it
  traces; `symbolic_trace` here holds a process-wide lock (two overlapping traces would restore each
  other's patches in the wrong order and leave one installed) and lets every other thread's module calls
  pass straight through the patch.
- `FlopCounterMode` attributes counts to modules with `ModuleTracker`, which installs *global* module hooks
  that fire for every forward pass in every thread; `ModuleScopes` replaces it with hooks on one private
  copy, so a forward pass in another session cannot be counted here.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import fx, nn

from analysis.model.layers import copy_model

_TRACE_LOCK = threading.RLock()


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` that this run alone owns: hook it, patch it, change its mode freely
    (`analysis.model.layers.copy_model`, which also copies models with pruning masks attached)."""
    return copy_model(model)


class _ThisThreadTracer(fx.Tracer):
    """An fx Tracer whose process-wide patches only trace calls made by the thread that is tracing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._owner = threading.get_ident()

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        if threading.get_ident() != self._owner:
            return forward(*args, **kwargs)  # another session's forward pass: run it as if unpatched
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        if threading.get_ident() != self._owner:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    """`torch.fx.symbolic_trace(model)`, safe while other threads run forward passes or trace too."""
    with _TRACE_LOCK:
        tracer = _ThisThreadTracer()
        graph = tracer.trace(model)
    name = model.__class__.__name__ if isinstance(model, nn.Module) else model.__name__
    return fx.GraphModule(tracer.root, graph, name)


class ModuleScopes:
    """A stand-in for FlopCounterMode's `ModuleTracker` that hooks only `model` (a private copy).

    `parents` holds "Global" and the names of the modules whose forward is running, named as
    ModuleTracker names them (root class name, then the dotted path).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.parents: set[str] = {"Global"}
        self._handles: list = []
        root = type(model).__name__
        self._names = {m: (f"{root}.{n}" if n else root) for n, m in model.named_modules()}

    def __enter__(self) -> ModuleScopes:
        depth: dict[str, int] = {}

        def pre(module: nn.Module, _args: Any) -> None:
            name = self._names[module]
            depth[name] = depth.get(name, 0) + 1
            self.parents.add(name)

        def post(module: nn.Module, _args: Any, _out: Any) -> None:
            name = self._names[module]
            depth[name] -= 1
            if depth[name] == 0:
                self.parents.discard(name)

        for module in self._names:
            self._handles.append(module.register_forward_pre_hook(pre))
            self._handles.append(module.register_forward_hook(post))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.parents = {"Global"}


def hook_count(model: nn.Module) -> int:
    """Forward, pre-forward and backward hooks left on any module of `model` (0 after a clean analysis)."""
    total = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            total += len(getattr(m, attr, {}))
    return total


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two state dicts hold the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of `model`'s state dict, to compare with after an analysis."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def eval_view(model: nn.Module) -> nn.Module:
    """`model` itself when it is already in eval mode (nothing to change), else a private copy in eval mode.

    Flipping a shared model's mode and restoring it afterwards races with another run doing the same.
    """
    return private_copy(model).eval() if model.training else model
