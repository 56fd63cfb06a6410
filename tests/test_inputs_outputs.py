"""Models of every input/output pattern (tests/reach_models.py: several positional inputs, inputs by name
with integer ids, a tuple output, a dict output, a 4-D output) on random UNLABELLED inputs: summary,
evaluation, latency, a structured sweep, 50% structured pruning and int8 on ONNX Runtime. Numbers are
compared with plain computations and with Torch-Pruning run directly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from analysis.compression.compress import compress
from analysis.cost import summarize
from analysis.data import load_data
from analysis.errors import WorkbenchError
from analysis.evaluate import evaluate
from analysis.latency import measure_latency
from analysis.metrics import PSNR_CAP_DB
from analysis.model.inputs import InputBatch, as_model_inputs, parse_input_spec, positional_names
from analysis.model.layers import call_model
from analysis.model.outputs import flatten_outputs
from analysis.model.specs import check_input_shape, load_model, parse_input_shape
from analysis.sensitivity.sweep import sensitivity_sweep
from tests import reach_models as R
from tests.conftest import run_cli

AUTO = {"two_inputs": "agreement", "token_classifier": "agreement", "tuple_output": "psnr",
        "dict_output": "agreement", "map_output": "psnr"}  # fmt: skip
PLAN = {"default": {"prune": 0.5, "criterion": "l1", "structured": True, "bits": 8}}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("patterns")
    out = {}
    for name in R.PATTERNS:
        path = root / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in R.random_inputs(name, 24).items()}, str(path))
        out[name] = path
    return out


def _load(name: str, files):
    model = load_model(f"tests.reach_models:build_{name}")
    return model, load_data(f"tensors:{files[name]}", None, positional_names(model))


def test_input_shape_text():
    two = parse_input_spec("1,128;1,64", ["a", "b"])
    assert two.form == "tuple" and two.names == ("a", "b") and two.shapes == ((128,), (64,))
    named = parse_input_spec("input_ids=1,16:int64;attention_mask=1,16:int64")
    assert named.form == "dict" and named.fields[0].dtype == torch.int64
    assert parse_input_shape("1,3,8,8") == (3, 8, 8)  # one float input: a plain shape, as always
    assert named.describe() == "input_ids=1,16:int64;attention_mask=1,16:int64"
    for bad in ("1,128;", "1,x", "a=1,4:complex"):
        with pytest.raises(WorkbenchError):
            parse_input_spec(bad)
    with pytest.raises(WorkbenchError) as exc:  # two inputs given one shape: says so
        check_input_shape(R.build_two_inputs(), parse_input_shape("1,12"))
    assert "a, b" in str(exc.value)


def test_tensors_file_inputs_by_name_unlabelled(files):
    model, data = _load("token_classifier", files)
    assert (
        isinstance(data.x, InputBatch) and data.y is None and data.x.parts["input_ids"].dtype == torch.int64
    )
    spec = data.input_spec
    assert spec.form == "dict" and spec.names == ("input_ids", "attention_mask")
    arrays = R.random_inputs("token_classifier", 24)
    with torch.no_grad():
        want = model(**arrays)
        got = call_model(model, data.x)
    assert torch.equal(want, got)


def test_flat_image_folder_is_unlabelled(tmp_path):
    from PIL import Image

    for i in range(6):
        Image.fromarray(np.full((12, 12), 20 * i, np.uint8)).save(tmp_path / f"{i}.png")
    data = load_data(f"imagefolder:{tmp_path}?test=0.5", (1, 12, 12))
    assert data.y is None and data.y_train is None and len(data.x) == 3 and len(data.x_train) == 3
    result = evaluate(R.build_map_output(), data)
    assert result.metric.name == "psnr" and result.samples == 3


@pytest.mark.parametrize("name", R.PATTERNS)
def test_summary_evaluate_latency(name, files):
    model, data = _load(name, files)
    summary = summarize(model, data.input_shape)
    assert summary.total_params == sum(p.numel() for p in model.parameters())
    # MACs by hand: each Conv2d / Linear's weight elements times its output positions (an embedding is a lookup).
    macs = 0
    sample = R.random_inputs(name, 1)
    hooks = []

    def count(module, _inp, out):
        nonlocal macs
        positions = (
            out.numel() // out.shape[1]
            if isinstance(module, torch.nn.Conv2d)
            else out.numel() // out.shape[-1]
        )
        macs += module.weight.numel() * positions

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(m.register_forward_hook(count))
    with torch.no_grad():
        model(**sample)
    for h in hooks:
        h.remove()
    assert summary.total_macs == macs
    result = evaluate(model, data)
    assert result.metric.name == AUTO[name] and result.samples == 24
    assert result.accuracy == (PSNR_CAP_DB if AUTO[name] == "psnr" else 1.0)  # the original against itself
    latency = measure_latency(model, data.input_shape, batch_size=4, runs=3, warmup=1)
    assert latency.median_ms > 0 and latency.batch_size == 4


def test_sweep_point_equals_a_plain_computation(files):
    """One structured point of the 4-D output model, by hand: the lowest-L1 half of net.0's filters
    zeroed (bias too: after the ReLU that is removal), PSNR against the original's outputs."""
    model, data = _load("map_output", files)
    result = sensitivity_sweep(model, data, ratios=[0.5], layers=["net.0"])
    assert result.metric.name == "psnr" and result.to_dict()["metric"]["direction"] == "higher"
    w = model.net[0].weight.detach()
    drop = torch.argsort(w.abs().sum(dim=(1, 2, 3)), stable=True)[: round(0.5 * w.shape[0])]
    changed = R.build_map_output()
    with torch.no_grad():
        changed.net[0].weight[drop] = 0
        changed.net[0].bias[drop] = 0
        ref, out = model(data.x), changed(data.x)
    want = 10 * math.log10(float(ref.max() - ref.min()) ** 2 / float(((out - ref) ** 2).mean()))
    assert result.layers["net.0"].accuracy[0] == pytest.approx(want, rel=1e-4)
    assert result.drops("net.0")[0] == pytest.approx(PSNR_CAP_DB - want, rel=1e-4)


def _torch_pruning_params(name: str, files) -> int:
    """Parameters after Torch-Pruning's own magnitude pruner at 50% per group, the model outputs' layers
    ignored: the reference our structured pruning must match."""
    import torch_pruning as tp

    model, data = _load(name, files)
    example = as_model_inputs(data.x[:2])
    ignored = {"two_inputs": ["head.2"], "tuple_output": ["classifier", "features"],
               "dict_output": ["scores", "embedding"], "map_output": ["net.4"]}[name]  # fmt: skip
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
        ignored_layers=[model.get_submodule(n) for n in ignored],
    )  # fmt: skip
    pruner.step()
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", R.PATTERNS)
def test_compress_half_the_channels_and_int8_on_onnxruntime(name, files):
    model, data = _load(name, files)
    result = compress(model, PLAN, data, runtimes=("onnxruntime", "eager"), latency_rounds=2,
                      runs_per_round=2, warmup=1)  # fmt: skip
    assert result.after.params < result.before.params
    if name != "token_classifier":  # its embedding is not a prunable layer here (Torch-Pruning prunes it)
        assert result.after.params == _torch_pruning_params(name, files)
    ort = result.runtimes["onnxruntime"]
    assert ort["after"].runtime == "onnxruntime" and ort["before"].metric.name == AUTO[name]
    assert any("run real int8" in note for note in result.notes)
    assert math.isfinite(ort["after"].accuracy) and ort["before"].accuracy >= (
        60.0 if AUTO[name] == "psnr" else 0.99
    )
    payload = result.to_dict()
    assert payload["metric"]["name"] == AUTO[name] and payload["after"]["metric"]["name"] == AUTO[name]
    # The compressed model still gives every output the original gave, with the same shapes.
    sample = as_model_inputs(data.x[:2])
    with torch.no_grad():
        before = flatten_outputs(call_model(model, sample))
        after = flatten_outputs(call_model(result.float_model, sample))
    assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}


def test_onnx_export_names_every_output(files, tmp_path):
    import onnxruntime

    from analysis.model.layers import example_input
    from analysis.runtime.onnx import OnnxModule, export_onnx

    for name, want in (("tuple_output", ["output_0", "output_1"]), ("dict_output", ["scores", "embedding"]),
                       ("two_inputs", ["logits"])):  # fmt: skip
        model, data = _load(name, files)
        exported = export_onnx(model, example_input(data.input_shape, 2))
        session = onnxruntime.InferenceSession(exported.model_bytes, providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == want
        assert exported.max_abs_diff < 1e-4
        x = as_model_inputs(data.x[:3])
        with torch.no_grad():
            eager = flatten_outputs(call_model(model, x))
            onnx = flatten_outputs(call_model(OnnxModule(exported.model_bytes), x))
        assert list(eager) == list(onnx)
        for key in eager:
            torch.testing.assert_close(onnx[key], eager[key], atol=1e-4, rtol=1e-4)


def test_cli_end_to_end_unlabelled(files, tmp_path):
    """The command line as a user runs it: several inputs described by --input-shape, then a 4-D output
    model on an unlabelled tensors file through evaluate, sensitivity and compress (int8 on ONNX Runtime)."""
    two = run_cli("summary", "--model", "tests.reach_models:build_two_inputs", "--input-shape", "1,12;1,6",
                  "--no-record")  # fmt: skip
    assert two.returncode == 0, two.stderr
    summary = json.loads(two.stdout)
    assert [f["name"] for f in summary["input_shape"]] == ["a", "b"]
    assert summary["total"]["params"] == sum(p.numel() for p in R.build_two_inputs().parameters())
    bad = run_cli("summary", "--model", "tests.reach_models:build_two_inputs", "--input-shape", "1,12",
                  "--no-record")  # fmt: skip
    assert bad.returncode == 2 and "one shape per input" in bad.stderr and "Traceback" not in bad.stderr
    spec, data = "tests.reach_models:build_map_output", f"tensors:{files['map_output']}"
    ev = run_cli("evaluate", "--model", spec, "--data", data, "--metric", "mse", "--no-record")
    assert ev.returncode == 0, ev.stderr
    payload = json.loads(ev.stdout)
    assert (
        payload["metric"] == {"name": "mse", "direction": "lower", "value": 0.0} and "accuracy" not in payload
    )
    wrong = run_cli("evaluate", "--model", spec, "--data", data, "--metric", "accuracy", "--no-record")
    assert wrong.returncode == 2 and "needs labels" in wrong.stderr
    sweep = run_cli("sensitivity", "--model", spec, "--data", data, "--ratios", "0.25,0.5", "--no-record")
    assert sweep.returncode == 0, sweep.stderr
    swept = json.loads(sweep.stdout)
    assert swept["metric"]["name"] == "psnr" and swept["baseline"]["psnr"] == PSNR_CAP_DB
    assert all("psnr" in entry for entry in swept["layers"].values())
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(PLAN))
    out = tmp_path / "small.onnx"
    done = run_cli("compress", "--model", spec, "--data", data, "--plan", str(plan), "--runtime", "onnxruntime",
                   "--rounds", "2", "--save", str(out), "--no-record", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["metric"]["name"] == "psnr" and result["after"]["psnr"] < result["before"]["psnr"]
    assert result["after"]["params"] < result["before"]["params"] and out.exists()


def test_training_split_per_input(tmp_path):
    arrays = R.random_inputs("two_inputs", 10) | {
        f"{k}_train": v for k, v in R.random_inputs("two_inputs", 16, 1).items()
    }
    save_file({k: v.contiguous() for k, v in arrays.items()}, str(tmp_path / "two.safetensors"))
    data = load_data(f"tensors:{tmp_path / 'two.safetensors'}", None, ["a", "b"])
    assert data.has_train_split and len(data.x) == 10 and len(data.x_train) == 16
    assert torch.equal(data.x_train.parts["b"], arrays["b_train"])
    del arrays["b_train"]
    save_file({k: v.contiguous() for k, v in arrays.items()}, str(tmp_path / "half.safetensors"))
    with pytest.raises(WorkbenchError, match="b_train"):
        load_data(f"tensors:{tmp_path / 'half.safetensors'}")


def test_oracle_without_labels_is_the_divergence_from_the_original(files):
    """|loss change| of zeroing one of net.0's channels, the loss being the mean squared difference from the
    original's outputs: by hand, that channel's filter and bias zeroed (after the ReLU, removal)."""
    from analysis.importance.oracle import oracle_scores

    model, data = _load("map_output", files)
    result = oracle_scores(model, data, ["net.0"], max_samples=24)
    assert result.baseline_loss == 0.0 and result.samples == 24
    for c in (0, 5):
        changed = R.build_map_output()
        with torch.no_grad():
            changed.net[0].weight[c] = 0
            changed.net[0].bias[c] = 0
            want = float(((changed(data.x) - model(data.x)) ** 2).mean())
        assert float(result.scores["net.0"][c]) == pytest.approx(want, rel=1e-4)


def test_finetune_without_labels_learns_the_original(files):
    """Unlabelled fine-tuning distils the original model's outputs: the pruned model moves back towards
    them (its PSNR against the original rises)."""
    model, data = _load("map_output", files)
    plan = {"default": {"prune": 0.5, "structured": True}, "finetune": {"epochs": 0}}
    plain = compress(model, plan, data, latency_rounds=1, runs_per_round=1, warmup=0)
    tuned = compress(model, plan | {"finetune": {"epochs": 8, "lr": 0.01}}, data, latency_rounds=1,
                     runs_per_round=1, warmup=0)  # fmt: skip
    assert tuned.finetune is not None and tuned.finetune["train_accuracy"] == []
    assert any("learned the original model's outputs" in n for n in tuned.notes)
    assert tuned.after.accuracy > plain.after.accuracy + 1.0  # dB
