"""Evaluating edits of a model on a runtime: `sensitivity --runtime` and the oracle of `rank --runtime`.

`runner_class("eager")` is the cached downstream runner (`analysis.fx.runner.DownstreamRunner`): only the
part of the network after an edit is recomputed. `runner_class("onnxruntime")` is `OnnxEditRunner`, the
same interface on ONNX Runtime: the model is exported once (without the exporter's optimizer, so every
parameter and buffer keeps its name), the tensors of the modules the edits change become overridable
initializers (graph inputs with their values as defaults), and each point is the edit applied to a private
PyTorch copy whose changed tensors are fed to the session for a full forward pass, then restored. One
export, no per-point copy; the numbers are ONNX Runtime's own (equal to eager's up to float rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.fx.edits import Edit, RunnerResult, Tally
from analysis.fx.runner import DownstreamRunner
from analysis.fx.snapshots import check_modules
from analysis.metrics import Scoring


def runner_class(runtime: str | None) -> type[DownstreamRunner]:
    """The runner that evaluates edits on `runtime` (None: eager)."""
    from analysis.runtime.base import get_runtime

    name = "eager" if runtime is None else get_runtime(runtime).name
    return OnnxEditRunner if name == "onnxruntime" else DownstreamRunner


def _tensors(model: nn.Module, modules: Sequence[str]) -> dict[str, torch.Tensor]:
    """Fully qualified name -> tensor, for every parameter and buffer of `modules` (recursively)."""
    out: dict[str, torch.Tensor] = {}
    for name in modules:
        root = model.get_submodule(name)
        prefix = f"{name}." if name else ""
        for key, t in list(root.named_parameters()) + list(root.named_buffers()):
            out[prefix + key] = t
    return out


class OnnxEditRunner(DownstreamRunner):
    """`DownstreamRunner`'s interface, every point a full forward pass on ONNX Runtime (module docstring).
    `threads`: the session's intra-op threads (None: torch's current count)."""

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int = 256,
        copy_model: bool = True,
        threads: int | None = None,
        scoring: Scoring | None = None,
        **_ignored,
    ) -> None:
        if not isinstance(x, torch.Tensor):
            raise WorkbenchError(
                "--runtime onnxruntime sweeps models with one input tensor: use --runtime eager for this model"
            )
        super().__init__(model, x, y, batch_size=batch_size, use_cache=False, copy_model=copy_model,
                         scoring=scoring, channels_last=False)  # fmt: skip
        if x.dtype != torch.float32:
            raise WorkbenchError("ONNX Runtime evaluates float32 inputs: drop --dtype or use --runtime eager")
        self.threads = threads
        self._session = None
        self._fed: dict[str, torch.Tensor] = {}
        self.notes.append("every point evaluated on ONNX Runtime (one export; a full forward pass per point)")

    def _open(self, edits: Sequence[Edit]) -> None:
        """A session whose overridable initializers are the tensors `edits` change."""
        import onnx

        from analysis.runtime.onnx import export_onnx, make_session

        check_modules(self.model, edits)
        wanted = _tensors(self.model, sorted({m for e in edits for m in e.modules}))
        if self._session is not None and set(wanted) <= set(self._fed):
            return
        exported = export_onnx(self.model, self.x[:2], check=False, optimize=False)
        proto = onnx.load_from_string(exported.model_bytes)
        initializers = {i.name: i for i in proto.graph.initializer}
        inputs = {i.name for i in proto.graph.input}
        fed = {}
        for name, tensor in wanted.items():
            if name not in initializers:
                continue  # not read by the exported graph (num_batches_tracked, say): nothing to feed
            fed[name] = tensor
            if name not in inputs:
                init = initializers[name]
                proto.graph.input.append(
                    onnx.helper.make_tensor_value_info(name, init.data_type, list(init.dims))
                )
        if len(exported.output_names) > 1:
            raise WorkbenchError(
                "--runtime onnxruntime sweeps models with one output: use --runtime eager for this model"
            )
        self._session = make_session(proto.SerializeToString(), self.threads)
        self._input = proto.graph.input[0].name
        self._fed = fed

    def _full(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self._input: x.detach().cpu().numpy().astype(np.float32, copy=False)}
        feed |= {name: t.detach().cpu().numpy() for name, t in self._fed.items()}
        return torch.from_numpy(self._session.run(None, feed)[0])

    def evaluate_chunks(
        self,
        chunks: Sequence[Sequence[Edit]],
        progress=None,
        stop_for: Callable[[int], Callable[[Tally], object] | None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RunnerResult]:
        self._open([e for chunk in chunks for e in chunk])
        return super().evaluate_chunks(chunks, progress, stop_for, should_stop)


__all__ = ["OnnxEditRunner", "runner_class"]
