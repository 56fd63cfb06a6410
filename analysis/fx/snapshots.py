"""What the downstream runner keeps around its edits: snapshots of the edited modules' tensors (restored
after each edit), the bytes of cached activations, and which chunk reads a cached value last."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from analysis.errors import WorkbenchError


def tensor_bytes(values: Iterable[object]) -> int:
    """Bytes the tensors in `values` span, counting a view that appears twice once.

    A view's own extent, not its storage's: the one-sample input a cache is sized on is a view of the whole
    data set, and scaling that storage by the batch size overstated the cache a hundredfold.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for value in values:
        for t in _tensors(value):
            key = (t.data_ptr(), t.numel())
            if key not in seen:
                seen.add(key)
                total += t.numel() * t.element_size()
    return total


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


class Snapshots:
    """Copies of the parameters and buffers of edited modules, to restore them after each edit."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._saved: dict[str, list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]] = {}

    def _entries(self, name: str) -> list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]]:
        if name not in self._saved:
            root = self.model.get_submodule(name)
            entries = []
            for module in root.modules():
                for attr, t in list(module._parameters.items()) + list(module._buffers.items()):
                    if t is not None:
                        entries.append((module, attr, t, t.detach().clone()))
            self._saved[name] = entries
        return self._saved[name]

    def prepare(self, names: Iterable[str]) -> None:
        for name in names:
            self._entries(name)

    def restore(self, names: Iterable[str]) -> None:
        with torch.no_grad():
            for name in names:
                for module, attr, original, saved in self._entries(name):
                    current = module._parameters.get(attr, module._buffers.get(attr))
                    if current is not original:  # `apply` replaced the tensor object: put ours back
                        if attr in module._parameters:
                            module._parameters[attr] = original
                        else:
                            module._buffers[attr] = original
                    original.copy_(saved)


def last_use(chunks: Sequence[Sequence], suffixes: dict) -> dict[str, int]:
    """Each cached value's last reader: the index of the last chunk whose suffixes read it."""
    last: dict[str, int] = {}
    for c, chunk in enumerate(chunks):
        for edit in chunk:
            suffix = suffixes.get(frozenset(edit.modules))
            for name in suffix.frontier if suffix is not None else ():
                last[name] = c
    return last


def check_modules(model: nn.Module, edits: Sequence) -> None:
    names = {n for n, _ in model.named_modules()}
    for edit in edits:
        for m in edit.modules:
            if m not in names:
                raise WorkbenchError(
                    f"no layer named {m!r} in the model: use a name from model.named_modules()"
                )
