"""ONNX export (the dynamo exporter, dynamic batch) and ONNX Runtime sessions.

`export_onnx` returns the serialized model as bytes (nothing touches the disk), checked against eager: the
largest absolute difference of the logits on the example batch is reported with it. An export that fails
becomes one `WorkbenchError` line naming the operator, and the caller keeps the eager path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.runtime.types import REAL, Runtime

PROVIDER = "CPUExecutionProvider"
INPUT_NAME = "x"
OUTPUT_NAME = "logits"
PARITY_TOLERANCE = 1e-4


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter logs one warning per missing optional package (torchvision ops) and deprecation notes
    from its dependencies: noise for a user who asked for an ONNX file."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch._export", "torch.export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


_OP_PATTERNS = (
    re.compile(r"op='([\w.:]+)'"),
    re.compile(r"target=torch\.ops\.([\w.]+)"),
    re.compile(r"\b(aten[.:]{1,2}\w+)"),
)


def failed_op(exc: BaseException) -> str | None:
    """The operator an export error is about (`aten.kthvalue`), found in the error chain, or None."""
    seen: BaseException | None = exc
    texts = []
    while seen is not None and len(texts) < 8:
        texts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    for pattern in _OP_PATTERNS:
        for text in texts:
            match = pattern.search(text)
            if match:
                return match.group(1).replace("::", ".")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    summary = text.find("## Exception summary")
    if summary >= 0:
        text = text[summary + len("## Exception summary") :]
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(exc).__name__


@dataclass(frozen=True)
class OnnxExport:
    """A serialized ONNX model (`model_bytes`), its input/output names, and the largest absolute difference
    between its logits and eager's on the example batch (`max_abs_diff`, in logit units)."""

    model_bytes: bytes = field(repr=False)
    max_abs_diff: float
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    opset: int = 0

    @property
    def size_bytes(self) -> int:
        return len(self.model_bytes)


def export_onnx(
    model: nn.Module, example_input: torch.Tensor, check: bool = True, optimize: bool = True
) -> OnnxExport:
    """Export `model` (a private eval-mode copy) with `torch.onnx.export(..., dynamo=True)`, the batch
    dimension dynamic; with `check`, run it on ONNX Runtime and report the max abs difference to eager.
    `optimize=False` skips the exporter's graph optimizer, so every parameter and buffer stays an
    initializer under its own name (BatchNorm not folded into the convolutions)."""
    from analysis.layers import copy_model

    work = copy_model(model).eval()
    # Two samples at least: the exporter specializes a dimension of size 1 and would fix the batch at 1.
    x = (
        example_input
        if example_input.shape[0] > 1
        else example_input.repeat(2, *[1] * (example_input.dim() - 1))
    )
    try:
        with _quiet():
            program = torch.onnx.export(
                work,
                (x,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
                optimize=optimize,
            )
    except Exception as exc:
        op = failed_op(exc)
        what = f"operator {op} has no ONNX translation or cannot be traced" if op else _first_line(exc)
        raise WorkbenchError(
            f"ONNX export failed: {what}; the eager runtime still measures this model (--runtime eager)"
        ) from exc
    proto = program.model_proto
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    data = proto.SerializeToString()
    diff = float("nan")
    if check:
        session = make_session(data, threads=1)
        with torch.inference_mode():
            want = work(x)
        got = session.run(None, {INPUT_NAME: x.detach().numpy().astype(np.float32)})[0]
        diff = float(np.max(np.abs(got - want.numpy()))) if got.size else 0.0
    return OnnxExport(data, diff, opset=opset)


def make_session(model_bytes: bytes, threads: int | None = None):
    """An ONNX Runtime CPU session over `model_bytes` with `threads` intra-op threads (None: torch's current
    count, so both runtimes use the same), one inter-op thread and sequential execution."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, options, providers=[PROVIDER])
    except Exception as exc:
        raise WorkbenchError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from exc


class OnnxModule(nn.Module):
    """An `nn.Module` whose forward runs an ONNX Runtime session: evaluation and timing code that takes
    modules runs the ONNX model unchanged. It has no parameters; `input_shape` is the model's per-sample
    input shape where the ONNX file fixes it."""

    def __init__(self, model_bytes: bytes, threads: int | None = None) -> None:
        super().__init__()
        self.model_bytes = model_bytes
        self.threads = threads
        self.session = make_session(model_bytes, threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dims = inp.shape[1:]
        if dims and all(isinstance(d, int) and d > 0 for d in dims):
            self.input_shape = tuple(dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(
            None, {self.input_name: x.detach().cpu().numpy().astype(np.float32, copy=False)}
        )
        return torch.from_numpy(out[0])

    def __deepcopy__(self, memo: dict) -> OnnxModule:
        # Sessions cannot be copied; a new one over the same bytes is an equal, independent model.
        return OnnxModule(self.model_bytes, self.threads)

    def __getstate__(self) -> dict:
        raise TypeError(
            "an ONNX Runtime model is saved as .onnx (analysis.runtime.save_artifact), not pickled"
        )


@dataclass
class OnnxPrepared:
    """A model on ONNX Runtime: the session (in `module`), the bytes it runs, and how it was checked."""

    module: OnnxModule
    max_abs_diff: float = float("nan")
    kind: str = REAL
    runtime: str = "onnxruntime"
    version: str = ""
    provider: str = PROVIDER
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.version = self.version or ort_version()

    @property
    def model_bytes(self) -> bytes:
        return self.module.model_bytes

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    def as_module(self) -> nn.Module:
        return self.module


class OnnxRuntime(Runtime):
    """ONNX Runtime on the CPU execution provider, over the dynamo exporter's ONNX model."""

    name = "onnxruntime"

    @property
    def version(self) -> str:
        return ort_version()

    @property
    def provider(self) -> str:
        return PROVIDER

    def prepare(
        self, model: nn.Module, example_input: torch.Tensor, threads: int | None = None
    ) -> OnnxPrepared:
        exported = export_onnx(model, example_input)
        return OnnxPrepared(OnnxModule(exported.model_bytes, threads), exported.max_abs_diff)


def load_onnx(model_bytes: bytes, threads: int | None = None) -> OnnxPrepared:
    """An `OnnxPrepared` over an existing ONNX model (a saved artifact): nothing to compare it against."""
    return OnnxPrepared(OnnxModule(model_bytes, threads))


__all__ = [
    "OnnxExport",
    "OnnxModule",
    "OnnxPrepared",
    "OnnxRuntime",
    "PARITY_TOLERANCE",
    "export_onnx",
    "failed_op",
    "load_onnx",
    "make_session",
    "ort_version",
]
