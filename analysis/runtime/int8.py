"""Real int8 on ONNX Runtime: static QDQ quantization with `onnxruntime.quantization.quantize_static`.

Per-channel symmetric int8 weights, uint8 activations with scales calibrated on the data's training split
(up to a sample cap; `minmax`, `entropy` or `percentile`). Only the PyTorch layers named are quantized: the
other convolutions and matmuls go in `nodes_to_exclude` and stay float.

Mapping ONNX nodes to PyTorch layers: the dynamo exporter names a Conv/Gemm weight initializer after the
parameter (`features.0.weight`), also after it folds the following BatchNorm into the Conv (the fused node
then carries the *norm's* name scope, so the weight name is the reliable key). A MatMul whose weight was
transposed into a new constant falls back to the node's `pkg.torch.onnx.name_scopes` metadata: the deepest
scope that names a module of the model.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from analysis.data import Dataset
from analysis.errors import WorkbenchError, first_line
from analysis.model.inputs import ModelInputs, as_model_inputs
from analysis.model.layers import example_input
from analysis.runtime.onnx import OnnxModule, OnnxPrepared, OnnxRuntime, export_onnx, feed_inputs
from analysis.runtime.types import REAL, SIMULATED, PairRequest

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
WEIGHT_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
DEFAULT_CALIBRATION_SAMPLES = 512
CALIBRATION_BATCH = 64


def _scopes(node) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            with contextlib.suppress(ValueError, SyntaxError):
                return list(ast.literal_eval(prop.value))
    return []


def node_modules(model_proto, module_names: Iterable[str]) -> dict[str, str]:
    """ONNX node name -> PyTorch module name, for every Conv/Gemm/MatMul node of `model_proto` that belongs
    to a module in `module_names` (weight initializer name first, then the exporter's name scopes)."""
    names = set(module_names)
    initializers = {init.name for init in model_proto.graph.initializer}
    constants = {o for n in model_proto.graph.node if n.op_type == "Constant" for o in n.output}
    found: dict[str, str] = {}
    for node in model_proto.graph.node:
        if node.op_type not in WEIGHT_OPS:
            continue
        if len(node.input) > 1 and node.input[1] not in initializers | constants:
            continue  # two activations multiplied (attention's q.k, weights.v): no weight to quantize
        owner = None
        for inp in node.input[1:2]:
            if inp in initializers and inp.endswith(".weight") and inp.removesuffix(".weight") in names:
                owner = inp.removesuffix(".weight")
        if owner is None:
            owner = next((s for s in reversed(_scopes(node)) if s in names), None)
        if owner is not None:
            found[node.name] = owner
    return found


class _Batches:
    """A `CalibrationDataReader` over the first `limit` training samples, in batches: each of the model's
    inputs fed under its ONNX input name (floats as float32, integer ids as they are)."""

    def __init__(self, data: Dataset, input_names: list[str], limit: int, batch_size: int) -> None:
        self._batches = (
            feed_inputs(input_names, as_model_inputs(x)) for x, _ in data.batches("train", batch_size, limit)
        )

    def get_next(self) -> dict | None:
        return next(self._batches, None)


@dataclass(frozen=True)
class Int8Model:
    """The quantized ONNX model (`model_bytes`), the layers that run in int8 (module -> ONNX nodes), the
    weight nodes left float, and how it was calibrated."""

    model_bytes: bytes = field(repr=False)
    int8_layers: dict[str, list[str]]
    float_nodes: list[str]
    calibration: str
    calibration_samples: int
    notes: list[str] = field(default_factory=list)


def quantize_int8(
    model_bytes: bytes,
    layers: Iterable[str],
    module_names: Iterable[str],
    data: Dataset,
    calibration: str = "minmax",
    max_samples: int = DEFAULT_CALIBRATION_SAMPLES,
) -> Int8Model:
    """Static QDQ int8 of the ONNX model `model_bytes` for the PyTorch layers `layers` (names among
    `module_names`), calibrated on up to `max_samples` samples of `data`'s training split."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if calibration not in methods:
        raise WorkbenchError(
            f"unknown calibration method {calibration!r}: choose one of {', '.join(CALIBRATION_METHODS)}"
        )
    if max_samples < 1:
        raise WorkbenchError(f"calibration needs at least 1 sample, got max_samples={max_samples}")
    wanted = set(layers)
    proto = onnx.load_from_string(model_bytes)
    mapping = node_modules(proto, module_names)
    int8: dict[str, list[str]] = {}
    for node, module in mapping.items():
        if module in wanted:
            int8.setdefault(module, []).append(node)
    weight_nodes = [n.name for n in proto.graph.node if n.op_type in WEIGHT_OPS]
    float_nodes = [n for n in weight_nodes if mapping.get(n) not in wanted]
    notes = []
    missing = sorted(wanted - set(int8))
    if missing:
        notes.append(
            f"no ONNX convolution or matmul found for {', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}: left float"
        )
    if not int8:
        return Int8Model(model_bytes, {}, float_nodes, calibration, 0, notes)
    n_samples = min(max_samples, len(data.x_train))
    input_names = [i.name for i in proto.graph.input]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(model_bytes)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint on every call
        try:
            quantize_static(
                str(src),
                str(dst),
                _Batches(data, input_names, n_samples, CALIBRATION_BATCH),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=methods[calibration],
                nodes_to_exclude=float_nodes,
                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
            )
        except Exception as exc:
            first = first_line(exc)
            raise WorkbenchError(f"int8 quantization with ONNX Runtime failed: {first}") from exc
        finally:
            root.setLevel(level)
        out = dst.read_bytes()
    return Int8Model(out, int8, float_nodes, calibration, n_samples, notes)


def prepare_int8(
    model: nn.Module,
    data: Dataset,
    layers: Iterable[str],
    threads: int | None = None,
    calibration: str = "minmax",
    max_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    example_input: ModelInputs | None = None,
) -> tuple[OnnxPrepared, Int8Model]:
    """Export `model` (fp32 parity checked), quantize `layers` to real int8, and open it on ONNX Runtime
    with `threads` intra-op threads. Accuracy of the result is the quantized ONNX model's own."""
    x = example_input if example_input is not None else as_model_inputs(data.x_train[:2])
    exported = export_onnx(model, x)
    quantized = quantize_int8(
        exported.model_bytes,
        layers,
        [name for name, _ in model.named_modules()],
        data,
        calibration,
        max_samples,
    )
    prepared = OnnxPrepared(
        OnnxModule(quantized.model_bytes, threads), exported.max_abs_diff, kind=REAL, notes=quantized.notes
    )
    return prepared, quantized


class OnnxInt8Runtime(OnnxRuntime):
    """ONNX Runtime on the CPU execution provider, over the dynamo exporter's ONNX model; a compressed model's
    8-bit layers run real int8 (static QDQ). The registered `onnxruntime`."""

    def pair(self, request: PairRequest) -> tuple[OnnxPrepared, OnnxPrepared]:
        """The original and the compressed model on ONNX Runtime; 8-bit layers real int8 (QDQ), other bits
        as float on the b-bit grid (simulated latency). Notes go to `request.notes`."""
        shape, threads, notes = request.data.input_shape, request.threads, request.notes
        example = example_input(shape, 2)
        reference = request.reference
        if isinstance(reference, OnnxModule):  # a saved .onnx: it already is an ONNX Runtime session
            before = OnnxPrepared(OnnxModule(reference.model_bytes, threads))
        else:
            before = self.prepare(reference, example, threads)
        int8 = sorted(n for n, b in request.bits.items() if b == 8)
        other = sorted(n for n, b in request.bits.items() if b != 8)
        if int8:
            after, quantized = prepare_int8(
                request.work, request.data, int8, threads, request.calibration, request.max_samples,
                example_input=example,
            )  # fmt: skip
            notes.extend(f"onnxruntime: {note}" for note in quantized.notes)
            notes.append(
                f"onnxruntime: {len(quantized.int8_layers)} layer(s) run real int8 (static QDQ, "
                f"{request.calibration} calibration on {quantized.calibration_samples} training samples); "
                "the score is the ONNX model's own"
            )
        else:
            after = self.prepare(request.work, example, threads)
        if other:
            after.kind = SIMULATED
            notes.append(
                f"onnxruntime: {', '.join(other[:4])}{', ...' if len(other) > 4 else ''} at bits other than 8 "
                "run as float with weights on the b-bit grid: that latency is simulated"
            )
        return before, after


__all__ = [
    "OnnxInt8Runtime",
    "CALIBRATION_METHODS",
    "DEFAULT_CALIBRATION_SAMPLES",
    "Int8Model",
    "node_modules",
    "prepare_int8",
    "quantize_int8",
]
