"""ONNX export (the dynamo exporter, dynamic batch) and ONNX Runtime sessions.

`export_onnx` returns the serialized model as bytes (nothing touches the disk), checked against eager: the
largest absolute difference of the outputs on the example batch is reported with it. Several inputs (by
position or by name) and several outputs (tuple, dict, `ModelOutput`) are exported with every one named. An export that fails
becomes one `WorkbenchError` line naming the operator, and the caller keeps the eager path.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.model.inputs import (
    InputField,
    InputSpec,
    ModelInputs,
    as_model_inputs,
    map_tensors,
    positional_names,
)
from analysis.model.outputs import SINGLE_OUTPUT, flatten_outputs, onnx_name
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
    between its outputs and eager's on the example batch (`max_abs_diff`, over every output)."""

    model_bytes: bytes = field(repr=False)
    max_abs_diff: float
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    opset: int = 0
    input_names: tuple[str, ...] = (INPUT_NAME,)
    output_names: tuple[str, ...] = (OUTPUT_NAME,)

    @property
    def size_bytes(self) -> int:
        return len(self.model_bytes)


def _with_batch_two(x: ModelInputs) -> ModelInputs:
    # Two samples at least: the exporter specializes a dimension of size 1 and would fix the batch at 1.
    def widen(t: torch.Tensor) -> torch.Tensor:
        return t if t.shape[0] > 1 else t.repeat(2, *[1] * (t.dim() - 1))

    return map_tensors(x, widen)


def export_arguments(model: nn.Module, x: ModelInputs):
    """(args, kwargs, input names, dynamic shapes) for `torch.onnx.export`: every input's dim 0 is the
    dynamic batch; inputs by name go as keyword arguments."""
    batch = torch.export.Dim("batch")
    if isinstance(x, dict):
        return (), dict(x), list(x), {k: {0: batch} for k in x}
    if isinstance(x, tuple):
        names = positional_names(model)[: len(x)]
        names += [f"input{i}" for i in range(len(names), len(x))]
        return x, None, names, tuple({0: batch} for _ in x)
    return (x,), None, [INPUT_NAME], ({0: batch},)


def feed_inputs(names: list[str], x: ModelInputs) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds: each input under its name (floats as float32, integer ids as they are)."""
    tensors = list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, tuple) else [x]
    return {n: _numpy(t) for n, t in zip(names, tensors, strict=True)}


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.numpy().astype(np.float32, copy=False) if t.is_floating_point() else t.numpy()


def export_onnx(
    model: nn.Module, example_input: ModelInputs, check: bool = True, optimize: bool = True
) -> OnnxExport:
    """Export `model` (a private eval-mode copy) with `torch.onnx.export(..., dynamo=True)`, the batch
    dimension of every input dynamic, every output named (`logits` for a single output, else the names
    of `analysis.model.outputs.flatten_outputs`, recorded in the file's metadata); with `check`, run it on ONNX
    Runtime and report the max abs difference to eager over all outputs. `optimize=False` skips the
    exporter's graph optimizer, so every parameter and buffer stays an initializer under its own name
    (BatchNorm not folded into the convolutions)."""
    from analysis.model.layers import call_model, copy_model

    work = copy_model(model).eval()
    x = _with_batch_two(as_model_inputs(example_input))
    with torch.inference_mode():
        want = flatten_outputs(call_model(work, x))
    keys = list(want)
    out_names = [OUTPUT_NAME] if keys == [SINGLE_OUTPUT] else [onnx_name(k) for k in keys]
    args, kwargs, in_names, dynamic = export_arguments(work, x)
    nested = bool(_shadowed_children(work))
    if nested:
        work = _Nested(work, list(kwargs or ()))
        args, kwargs, dynamic = _all_positional(args, kwargs, dynamic)
    try:
        with _quiet():
            program = torch.onnx.export(
                work,
                args,
                kwargs=kwargs,
                dynamo=True,
                input_names=in_names,
                output_names=out_names,
                dynamic_shapes=dynamic,
                verbose=False,
                optimize=optimize,
            )
    except Exception as exc:
        op = failed_op(exc)
        what = f"operator {op} has no ONNX translation or cannot be traced" if op else _first_line(exc)
        raise WorkbenchError(
            f"ONNX export failed: {what}; the eager runtime still measures this model (--runtime eager)"
        ) from exc
    if nested:
        _unnest(program.model)
    proto = program.model_proto
    _set_metadata(proto, {"inputs": in_names, "form": _form(x), "outputs": keys})
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    data = proto.SerializeToString()
    diff = float("nan")
    if check:
        session = make_session(data, threads=1)
        got = session.run(None, feed_inputs(in_names, x))
        diffs = [
            float(np.max(np.abs(g - w.numpy()))) if g.size else 0.0
            for g, w in zip(got, want.values(), strict=True)
        ]
        diff = max(diffs) if diffs else 0.0
    return OnnxExport(data, diff, in_names[0], out_names[0], opset, tuple(in_names), tuple(out_names))


def _graph_module_names() -> frozenset[str]:
    graph_module = torch.fx.GraphModule(nn.Module(), torch.fx.Graph())
    return frozenset(dir(torch.fx.GraphModule)) | frozenset(vars(graph_module))


def _shadowed_children(model: nn.Module) -> list[str]:
    """Top-level children named like an attribute of `torch.fx.GraphModule` (`meta`, `graph`, `code`):
    unlifting the exported program sets each child on a GraphModule, where that attribute shadows it, and
    the export fails ("target meta.weight references nonexistent attribute")."""
    taken = _graph_module_names()
    return [name for name, _ in model.named_children() if name in taken]


_NESTED = "nested"


class _Nested(nn.Module):
    """The model one level down (under `_NESTED`), called with every input by position (`keys` names
    them where the model takes them by name), so no child of the model is a top-level attribute."""

    def __init__(self, model: nn.Module, keys: list[str]) -> None:
        super().__init__()
        setattr(self, _NESTED, model)
        self.keys = keys

    def forward(self, *args: torch.Tensor):
        model = getattr(self, _NESTED)
        return model(**dict(zip(self.keys, args, strict=True))) if self.keys else model(*args)


def _all_positional(args, kwargs, dynamic):
    """`_Nested`'s export arguments: (args, kwargs, dynamic shapes) with every input by position."""
    if kwargs:
        return tuple(kwargs.values()), None, {"args": tuple(dynamic.values())}
    return tuple(args), None, {"args": tuple(dynamic)}


def _unnest(model) -> None:
    """Strip `_Nested`'s level from an exported ONNX IR model's initializer names and name scopes, so
    they read as the model's own (`meta.weight`): int8 quantization finds its layers by them."""
    prefix = f"{_NESTED}."
    for value in list(model.graph.initializers.values()):
        value.name = value.name.removeprefix(prefix)
    for node in model.graph:
        scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
        if scopes is None:
            continue
        with contextlib.suppress(ValueError, SyntaxError):
            names = [s for s in ast.literal_eval(scopes) if s != _NESTED]
            node.metadata_props["pkg.torch.onnx.name_scopes"] = repr([s.removeprefix(prefix) for s in names])


def _form(x: ModelInputs) -> str:
    return "dict" if isinstance(x, dict) else "tuple" if isinstance(x, tuple) else "tensor"


METADATA_KEY = "workbench_io"


def _set_metadata(proto, value: dict) -> None:
    """The inputs' form and the outputs' original names, so a loaded file returns outputs named as the
    PyTorch model did (`flatten_outputs` names: a tuple's `0`, `1`, a dict's keys)."""
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(value)


def make_session(model_bytes: bytes, threads: int | None = None):
    """An ONNX Runtime CPU session over `model_bytes` with `threads` intra-op threads (None: torch's current
    count, so both runtimes use the same), one inter-op thread and sequential execution."""
    import onnxruntime as ort

    from analysis.limits import check_threads

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(check_threads(threads, "threads") or torch.get_num_threads())
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
    modules runs the ONNX model unchanged. It takes the inputs as the PyTorch model did (by position in
    the session's input order, or by name) and returns one tensor, or for several outputs a dict under the
    PyTorch model's output names (recorded at export; a dict of one for a `ModelOutput` with one field).
    It has no parameters; `input_shape` (`input_spec`
    for several inputs) is the per-sample input description where the ONNX file fixes it."""

    def __init__(self, model_bytes: bytes, threads: int | None = None) -> None:
        super().__init__()
        self.model_bytes = model_bytes
        self.threads = threads
        self.session = make_session(model_bytes, threads)
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_name = self.input_names[0]
        meta = json.loads(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "{}") or "{}")
        names = [o.name for o in self.session.get_outputs()]
        keys = meta.get("outputs")
        recorded = isinstance(keys, list) and len(keys) == len(names)
        self.output_keys = keys if recorded else names
        # One plain tensor out: as recorded at export, or (a file made elsewhere) a single output.
        self.single = keys == [SINGLE_OUTPUT] if recorded else len(names) == 1
        fields = []
        for i in inputs:
            dims = i.shape[1:]
            if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
                fields = []
                break
            dtype = torch.int64 if "int64" in i.type else torch.int32 if "int32" in i.type else torch.float32
            fields.append(InputField(i.name, tuple(dims), dtype, keyword=meta.get("form") == "dict"))
        if len(fields) == 1 and fields[0].dtype == torch.float32 and not fields[0].keyword:
            self.input_shape = fields[0].shape
        elif fields:
            self.input_spec = InputSpec(tuple(fields))

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor):
        feed = {name: _numpy(t) for name, t in zip(self.input_names, args, strict=False)}
        feed.update({name: _numpy(t) for name, t in kwargs.items()})
        out = [torch.from_numpy(o) for o in self.session.run(None, feed)]
        if self.single:
            return out[0]
        return dict(zip(self.output_keys, out, strict=True))

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

    def run(self, *args: torch.Tensor, **kwargs: torch.Tensor):
        return self.module(*args, **kwargs)

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
        self, model: nn.Module, example_input: ModelInputs, threads: int | None = None
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
    "feed_inputs",
    "load_onnx",
    "make_session",
    "ort_version",
]
