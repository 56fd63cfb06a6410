"""Runtimes (issue 12): ONNX export parity, real int8 on ONNX Runtime checked against a plain session loop,
deployable artifacts that reload to the same accuracy, one-line export errors, runtime-labelled latency."""

from __future__ import annotations

import functools

import importance_models
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from analysis import zoo
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.model.layers import copy_model
from analysis.model.specs import load_model
from analysis.runtime import (
    PRUNED_SUFFIX,
    evaluate_runtime,
    get_runtime,
    measure_runtime_latency,
    save_artifact,
)
from analysis.runtime.int8 import node_modules, prepare_int8
from analysis.runtime.onnx import PARITY_TOLERANCE, export_onnx
from analysis.transforms.groups import find_groups
from analysis.transforms.pruning import prune_structured

ZOO_NAMES = sorted(zoo.ZOO)
TEST_MODELS = ["functional", "tokens", "tabular"]  # residual + depthwise, attention, BatchNorm1d MLP


@functools.cache
def _model_and_input(name: str) -> tuple[nn.Module, torch.Tensor]:
    if name in zoo.ZOO:
        g = torch.Generator().manual_seed(1)
        return zoo.build(name), torch.rand((5, *zoo.models.INPUT_SHAPE), generator=g)
    model, data = importance_models.build(name)
    return model, data.x[:5]


@functools.cache
def _export(name: str):
    model, x = _model_and_input(name)
    return export_onnx(model, x)


def _plain_session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ZOO_NAMES + TEST_MODELS)
def test_export_matches_eager_at_any_batch(name):
    model, x = _model_and_input(name)
    exported = _export(name)
    assert exported.max_abs_diff <= PARITY_TOLERANCE
    # Independently of the reported number: a plain session at another batch size (the batch is dynamic).
    session = _plain_session(exported.model_bytes)
    for n in (1, 3):
        got = session.run(None, {session.get_inputs()[0].name: x[:n].numpy()})[0]
        with torch.inference_mode():
            want = model(x[:n]).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=PARITY_TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", ZOO_NAMES + ["functional", "tabular"])
def test_every_conv_and_linear_maps_to_its_onnx_node(name):
    """Also where the exporter folded a BatchNorm into the convolution (the node then carries the norm's
    name scope): each Conv/Linear is found exactly once, and no node is attributed to anything else."""
    model, _ = _model_and_input(name)
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    proto = onnx.load_from_string(_export(name).model_bytes)
    mapping = node_modules(proto, [n for n, _ in model.named_modules()])
    assert sorted(mapping.values()) == sorted(layers)
    weights = {n.name: list(n.input) for n in proto.graph.node}
    for node, layer in mapping.items():
        # Linear layers on 3-D inputs (tokens, the ViT) become MatMuls with a transposed weight constant.
        assert f"{layer}.weight" in weights[node] or name in ("tokens", "digits-vit")


@pytest.fixture(scope="module")
def small_digits(digits):
    return digits.subset(240)


def test_int8_accuracy_is_the_onnx_sessions_own(cnn, small_digits):
    layers = [n for n, m in cnn.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prepared, int8 = prepare_int8(cnn, small_digits, layers, threads=1, max_samples=128)
    assert sorted(int8.int8_layers) == sorted(layers) and int8.calibration_samples == 128
    ops = [n.op_type for n in onnx.load_from_string(int8.model_bytes).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    through_runtime = evaluate_runtime(prepared, small_digits, batch_size=64)

    # The reference: a plain loop over a raw session of the same bytes, argmax by numpy.
    session = _plain_session(int8.model_bytes)
    x, y = small_digits.x.numpy(), small_digits.y.numpy()
    logits = np.concatenate([session.run(None, {"x": x[i : i + 50]})[0] for i in range(0, len(x), 50)])
    assert through_runtime.samples == len(y)
    assert through_runtime.accuracy == pytest.approx(float(np.mean(logits.argmax(1) == y)), abs=1e-12)
    fp32 = evaluate(cnn, small_digits).accuracy
    assert abs(through_runtime.accuracy - fp32) <= 0.02


def test_int8_quantizes_only_the_layers_named(cnn, small_digits):
    _, int8 = prepare_int8(cnn, small_digits, ["classifier.0"], threads=1, max_samples=64)
    graph = onnx.load_from_string(int8.model_bytes).graph
    dequantized = {
        n.input[0].removesuffix("_quantized") for n in graph.node if n.op_type == "DequantizeLinear"
    }
    assert "classifier.0.weight" in dequantized
    assert not any(w.startswith(("features.", "classifier.2")) for w in dequantized)
    assert list(int8.int8_layers) == ["classifier.0"]


def test_unknown_calibration_is_one_line(cnn, small_digits):
    with pytest.raises(WorkbenchError, match="calibration") as info:
        prepare_int8(cnn, small_digits, ["classifier.0"], calibration="mse")
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def pruned(cnn, digits):
    model = copy_model(cnn)
    groups = find_groups(model, digits.input_shape)
    prune_structured(model, {g.name: 0.5 for g in groups}, digits.input_shape, groups=groups)
    assert model.features[0].out_channels == 16  # really pruned
    return model.eval()


@pytest.mark.parametrize("suffix", [".pt2", PRUNED_SUFFIX, ".onnx"])
def test_pruned_artifact_reloads_to_the_same_accuracy(pruned, small_digits, tmp_path, suffix):
    path = save_artifact(pruned, tmp_path / f"model{suffix}", spec="zoo:digits-cnn")
    loaded = load_model(str(path))  # through the ordinary spec loader
    want = evaluate(pruned, small_digits)
    got = evaluate(loaded, small_digits)
    assert got.accuracy == want.accuracy and got.samples == want.samples
    assert got.loss == pytest.approx(want.loss, abs=1e-5)
    assert getattr(loaded, "input_shape", None) == (1, 16, 16)
    if suffix == PRUNED_SUFFIX:
        shapes = {k: tuple(v.shape) for k, v in loaded.state_dict().items()}
        assert shapes == {k: tuple(v.shape) for k, v in pruned.state_dict().items()}
        assert loaded.features[0].out_channels == 16 and loaded.classifier[0].in_features == 512


def test_pruned_format_is_plain_safetensors(pruned, tmp_path):
    from safetensors import safe_open

    path = save_artifact(pruned, tmp_path / f"m{PRUNED_SUFFIX}", spec="zoo:digits-cnn")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["spec"] == "zoo:digits-cnn"
        assert tuple(f.get_tensor("features.0.weight").shape) == (16, 1, 3, 3)
    with pytest.raises(WorkbenchError, match="spec"):
        save_artifact(pruned, tmp_path / f"n{PRUNED_SUFFIX}", spec="model.pt")


class KthValueNet(nn.Module):
    """A model with an operator the ONNX exporter cannot translate."""

    input_shape = (4, 4)

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.kthvalue(x, 2, dim=1)[0])


def test_failed_export_is_one_line_naming_the_op_and_eager_still_works():
    model, data = KthValueNet().eval(), importance_models.make_data((4, 4))
    with pytest.raises(WorkbenchError) as info:
        get_runtime("onnxruntime").prepare(model, data.x[:2], threads=1)
    message = str(info.value)
    assert "\n" not in message and "aten.kthvalue" in message and "eager" in message
    eager = get_runtime("eager").prepare(model, data.x[:2])
    assert evaluate_runtime(eager, data).accuracy == evaluate(model, data).accuracy


def test_latency_says_runtime_version_provider_and_kind(cnn, small_digits):
    shape = small_digits.input_shape
    eager = measure_runtime_latency(get_runtime("eager").prepare(cnn, small_digits.x[:2]), shape, 4, 1, 3, 1)
    onnx_rt = get_runtime("onnxruntime")
    prepared = onnx_rt.prepare(cnn, small_digits.x[:2], threads=1)
    real = measure_runtime_latency(prepared, shape, 4, 1, 3, 1)
    prepared.kind = "simulated"
    simulated = measure_runtime_latency(prepared, shape, 4, 1, 3, 1)
    assert (eager.runtime, eager.runtime_version, eager.kind) == ("eager", torch.__version__, "real")
    d = real.to_dict()
    assert (d["runtime"], d["runtime_version"], d["provider"], d["kind"]) == (
        "onnxruntime",
        ort.__version__,
        "CPUExecutionProvider",
        "real",
    )
    assert simulated.kind == "simulated" and real.batch_size == 4 and real.threads == 1


def test_unknown_runtime_is_one_line():
    with pytest.raises(WorkbenchError, match="eager, onnxruntime"):
        get_runtime("tensorrt")


def test_handed_model_is_untouched(cnn, small_digits):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    get_runtime("onnxruntime").prepare(cnn, small_digits.x[:2], threads=1)
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())
    assert not cnn._forward_hooks and not cnn._forward_pre_hooks
