"""Loading saved artifacts (`.onnx`, `.pt2`, `.pruned.safetensors`): what `analysis.model.specs.load_model` calls.

A leaf below `analysis.model.specs`: the pruned format rebuilds its architecture through the `build` callable the
caller passes (`load_model`), so this module never imports the spec parser back.

Nothing here runs code from a file unless the operator says so: `.onnx` is data for ONNX Runtime; a
`.pruned.safetensors` is weights and checked JSON (`analysis.model.pruned`); a `.pt2` is checked by
`analysis.runtime.pt2_check` before `torch.export.load` unless `trust_pickle` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from analysis.errors import WorkbenchError, first_line
from analysis.model.pruned import PRUNED_FORMAT, PRUNED_SUFFIX, load_pruned  # noqa: F401  (re-exported)

ARTIFACT_SUFFIXES = (".onnx", ".pt2", PRUNED_SUFFIX, ".pt", ".pth")


def artifact_kind(path: str | Path) -> str | None:
    """`onnx`, `pt2`, `pruned` or `pickle` for a path by its suffix; None for anything else."""
    name = str(path).lower()
    if name.endswith(PRUNED_SUFFIX):
        return "pruned"
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(".pt2"):
        return "pt2"
    if name.endswith((".pt", ".pth")):
        return "pickle"
    return None


class _ExportedModule(nn.Module):
    """Holds a `torch.export` program's module. Exported modules refuse `.eval()`/`.train()`, which the
    library's evaluation calls; the program is fixed in inference behaviour anyway, so the mode is only
    recorded here."""

    def __init__(self, program_module: nn.Module, input_shape) -> None:
        super().__init__()
        self.program = program_module
        if isinstance(input_shape, tuple):
            self.input_shape = input_shape
        elif input_shape is not None:
            self.input_spec = input_shape

    def train(self, mode: bool = True) -> _ExportedModule:
        self.training = mode
        return self

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor):
        return self.program(*args, **kwargs)


def load_artifact(
    path: str | Path,
    threads: int | None = None,
    *,
    build: Callable[[str], nn.Module],
    apply_weights: Callable,
    trust_pickle: bool = False,
) -> nn.Module:
    """An `nn.Module` that `evaluate` and the latency functions run: `.onnx` on an ONNX Runtime session
    (`threads` intra-op threads), `.pt2` as the exported program (checked first unless `trust_pickle`),
    `.pruned.safetensors` rebuilt."""
    path = Path(path)
    kind = artifact_kind(path)
    if kind not in ("onnx", "pt2", "pruned"):
        raise WorkbenchError(f"{path.name} is not a saved artifact: use .onnx, .pt2 or {PRUNED_SUFFIX}")
    if not path.exists():
        raise WorkbenchError(f"model file not found: {path}")
    if kind == "pruned":
        return load_pruned(path, build, apply_weights)
    if kind == "onnx":
        from analysis.runtime.onnx import OnnxModule

        return OnnxModule(path.read_bytes(), threads)
    if not trust_pickle:
        from analysis.runtime.pt2_check import check_pt2

        check_pt2(path)
    try:
        program = torch.export.load(str(path))
        module = program.module()
    except Exception as exc:
        raise WorkbenchError(f"cannot load {path} as a torch.export program: {first_line(exc)}") from exc
    return _ExportedModule(module, _program_inputs(program))


def _program_inputs(program):
    """The per-sample shape of a one-input program, an `InputSpec` for several, None where not fixed."""
    from analysis.model.inputs import InputField, InputSpec

    names = list(program.graph_signature.user_inputs)
    fields = []
    in_spec = program.call_spec.in_spec  # (args, kwargs): inputs exported by name are called by name
    keyword = in_spec is not None and in_spec.num_children == 2 and in_spec.child(1).num_leaves > 0
    for name in names:
        node = next((n for n in program.graph.nodes if n.op == "placeholder" and n.name == name), None)
        val = node.meta.get("val") if node is not None else None
        if val is None or not all(isinstance(d, int) for d in val.shape[1:]):
            return None
        fields.append(InputField(name, tuple(val.shape[1:]), val.dtype, keyword))
    if not fields:
        return None
    if len(fields) == 1 and fields[0].dtype == torch.float32:
        return fields[0].shape
    return InputSpec(tuple(fields))
