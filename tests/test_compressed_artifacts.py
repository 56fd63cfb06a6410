"""Saving a compressed model as the Compress page and `compress --save` do (`save_compressed`,
`artifact_bytes`): pruned zoo CNNs export to ONNX and torch.export with a dynamic batch, and a plan with 8-bit
layers gives a real int8 ONNX model. Each file is checked by an independent reader: a bare ONNX Runtime
session, `torch.export.load`, the onnx protobuf, against the eager model it came from."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from analysis import load_data
from analysis.app_support import artifact_bytes
from analysis.model.layers import copy_model
from analysis.model.specs import load_model
from analysis.transforms.groups import find_groups
from analysis.transforms.pruning import prune_structured
from analysis.transforms.quantization import quantize_weights

CNNS = ["zoo:digits-cnn", "zoo:digits-resnet", "zoo:digits-mobilenet"]
SHAPE = (1, 16, 16)  # per sample, as the app's Workbench carries it


def _pruned(spec: str):
    model = copy_model(load_model(spec)).eval()
    groups = find_groups(model, SHAPE)
    prune_structured(model, {g.name: 0.5 for g in groups}, SHAPE, groups=groups)
    return model


def _result(model, quantized=None):
    """What a CompressionResult holds for saving: the model as measured, its float twin, the bits."""
    return SimpleNamespace(model=model, float_model=model, quantized=quantized or {}, onnx_bytes=None)


@pytest.mark.parametrize("spec", CNNS)
def test_pruned_zoo_cnn_exports_with_a_dynamic_batch(spec, tmp_path):
    model = _pruned(spec)
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(0))  # not the export's batch of 2
    with torch.no_grad():
        want = model(x).numpy()
    onnx_file, what = artifact_bytes(_result(model), ".onnx", spec=spec, input_shape=SHAPE)
    assert what == "fp32 ONNX"
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == list(SHAPE)  # the batch is the only free dimension
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)

    pt2, _ = artifact_bytes(_result(model), ".pt2", spec=spec, input_shape=SHAPE)
    (tmp_path / "m.pt2").write_bytes(pt2)
    program = torch.export.load(str(tmp_path / "m.pt2"))
    with torch.no_grad():
        np.testing.assert_allclose(program.module()(x).numpy(), want, atol=1e-5)


def test_a_plan_with_8_bit_layers_gives_an_int8_onnx_model():
    data = load_data("digits", input_shape=SHAPE)
    model = copy_model(load_model("zoo:digits-cnn")).eval()
    bits = {"features.0": 8, "classifier.0": 8}
    quantize_weights(model, bits)  # the float model of a compression: weights on their int8 grid
    onnx_file, what = artifact_bytes(_result(model, bits), ".onnx", spec=None, input_shape=SHAPE, data=data)
    proto = onnx.load_from_string(onnx_file)
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert what.startswith("int8 ONNX") and "classifier.0" in what and "training samples" in what
    # Without data there is nothing to calibrate on: the file is fp32 and says so.
    plain, said = artifact_bytes(_result(model, bits), ".onnx", spec=None, input_shape=SHAPE)
    assert "QuantizeLinear" not in {n.op_type for n in onnx.load_from_string(plain).graph.node}
    assert said.startswith("fp32 ONNX") and "int8 grid in float" in said
    # The int8 model classifies like the float model it came from (a plain loop over the evaluation split).
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    x, y = data.x, data.y.numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    with torch.no_grad():
        want = model(x).argmax(1).numpy()
    assert (got == want).mean() > 0.97
    assert abs((got == y).mean() - (want == y).mean()) < 0.02
