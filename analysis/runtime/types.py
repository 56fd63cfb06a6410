"""What a runtime is: `Runtime` (prepares models) and `Prepared` (runs them), and the latency kinds.

A leaf of `analysis.runtime`: the eager and ONNX Runtime implementations both build on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import torch
from torch import nn

REAL, SIMULATED = "real", "simulated"


@runtime_checkable
class Prepared(Protocol):
    """A model ready to run on one runtime. `kind` is `real` when the kernels timed are the ones a deployment
    runs (float, or real int8), `simulated` when quantized weights run as float."""

    runtime: str
    version: str
    provider: str
    kind: str

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch `x` (float32, batch first), as a torch tensor."""
        ...

    def as_module(self) -> nn.Module:
        """An `nn.Module` whose forward is `run`, for code that takes modules."""
        ...


class Runtime(ABC):
    """Something that runs models: a name, its version and execution provider, and `prepare`."""

    name: str = ""

    @property
    @abstractmethod
    def version(self) -> str: ...

    @property
    @abstractmethod
    def provider(self) -> str: ...

    @abstractmethod
    def prepare(self, model: nn.Module, example_input: torch.Tensor, threads: int | None = None) -> Prepared:
        """A `Prepared` model; `model` itself is never changed. `threads`: intra-op threads (None: as set)."""
