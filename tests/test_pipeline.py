"""Phase-2 pipeline: plan fields of docs/contract.md section 8, `compress` with schedules, transforms and runtimes,
sweep kinds lowrank/share and stopping, and the compress command line (save formats, reload)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import run_cli
from torch import nn

from analysis.compression.compress import compress
from analysis.compression.plan import CompressionPlan
from analysis.compression.schedules import SCHEDULE_METHODS
from analysis.errors import WorkbenchError
from analysis.transforms.lowrank import LowRankSpec, plan_factorization

FAST = {"latency_rounds": 1, "runs_per_round": 1, "warmup": 1, "batch_size": 8, "threads": 1}


@pytest.fixture(scope="module")
def small(digits):
    return digits.subset(160)


# --------------------------------------------------------------------------------------------- plan


@pytest.mark.parametrize(
    "layer",
    [{"rank": 0.25}, {"rank_energy": 0.9}, {"share_bits": 4}, {"weights": "binary"}, {"weights": "pow2"}],
)
def test_plan_transform_fields_round_trip(layer):
    plan = CompressionPlan.from_dict({"layers": {"classifier.0": layer}, "huffman": True})
    again = CompressionPlan.from_json(json.dumps(plan.to_dict()))
    assert again == plan and again.to_dict() == plan.to_dict()
    assert again.to_dict()["layers"]["classifier.0"] == layer and again.huffman is True
    assert again.settings_for("classifier.0").transforms == layer


@pytest.mark.parametrize("method", SCHEDULE_METHODS)
def test_plan_schedule_round_trips_with_each_method(method):
    schedule = {"method": method, "target": {"macs": 0.5}, "steps": 2, "epochs_per_step": 0.5}
    plan = CompressionPlan.from_dict({"schedule": schedule, "finetune": {"recipe": "recovery"}})
    again = CompressionPlan.from_json(plan.to_json())
    assert again == plan
    assert again.schedule.method == method and again.schedule.steps == 2
    assert again.to_dict()["schedule"]["target"] == {"macs": 0.5}
    # The recovery recipe fills what the plan leaves unsaid: distillation and a cosine decay.
    assert again.finetune.distill is True and again.finetune.lr_schedule == "cosine"


def test_plans_without_new_fields_keep_their_old_form():
    out = CompressionPlan.from_dict({"layers": {"a": {"prune": 0.5}}}).to_dict()
    assert set(out) == {"default", "layers", "finetune"}
    assert out["default"] == {"prune": 0.0, "criterion": "l1", "structured": True, "bits": 32}


@pytest.mark.parametrize(
    ("plan", "words"),
    [
        ({"layers": {"a": {"rank": 0.5, "bits": 8}}}, ["layer 'a'", "rank", "bits 8"]),
        ({"layers": {"a": {"rank": 0.5, "rank_energy": 0.9}}}, ["rank_energy"]),
        ({"default": {"bits": 4}, "layers": {"a": {"share_bits": 4}}}, ["layer 'a'", "share_bits"]),
        ({"layers": {"a": {"weights": "binary", "prune": 0.5, "structured": False}}}, ["binary"]),
        ({"layers": {"a": {"rank": 1.5}}}, ["rank", "(0, 1)"]),
        ({"layers": {"a": {"share_bits": 0}}}, ["share_bits"]),
        ({"layers": {"a": {"weights": "quaternary"}}}, ["weights"]),
        ({"huffman": "yes"}, ["huffman"]),
        ({"schedule": {"method": "magic"}}, ["method", "magic"]),
        ({"schedule": {"method": "agp", "target": {"macs": 2}}}, ["target"]),
        ({"schedule": {"method": "iterative", "colour": 1}}, ["colour"]),
        ({"schedule": {"method": "iterative"}, "default": {"prune": 0.3}}, ["schedule", "prune"]),
        ({"finetune": {"recipe": "fast"}}, ["recipe"]),
        ({"finetune": {"lr_schedule": "step"}}, ["lr_schedule"]),
    ],
)
def test_bad_plan_values_are_one_line(plan, words):
    with pytest.raises(WorkbenchError) as info:
        CompressionPlan.from_dict(plan)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


# ------------------------------------------------------------------------------------------ compress


def test_compress_with_a_schedule_records_a_trajectory_and_honours_should_stop(cnn, digits):
    small = digits.subset(64)
    plan = {
        "schedule": {"method": "iterative", "criterion": "l1", "target": {"macs": 0.5}, "steps": 3,
                     "epochs_per_step": 0.25, "max_samples": 64},
        "finetune": {"batch_size": 64},
    }  # fmt: skip
    steps: list[dict] = []
    result = compress(cnn, plan, small, on_step=steps.append, **FAST)
    assert not result.stopped
    assert [r["step"] for r in result.trajectory] == list(range(len(result.trajectory)))
    assert len(result.trajectory) == 4 and steps == result.trajectory  # original + 3 steps
    assert result.after.macs == result.trajectory[-1]["macs"] < result.before.macs
    assert result.to_dict()["trajectory"] == result.trajectory

    seen: list[dict] = []
    stopped = compress(cnn, plan, small, on_step=seen.append, should_stop=lambda: len(seen) >= 2, **FAST)
    assert stopped.stopped and stopped.to_dict()["stopped"] is True
    assert len(stopped.trajectory) == 2  # the original and the first step; the model is the one after it
    assert stopped.after.macs == stopped.trajectory[-1]["macs"]
    assert stopped.before.macs > stopped.after.macs > result.after.macs


def _plain_ort_accuracy(model_bytes: bytes, data) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for begin in range(0, len(data.x), 50):
        logits = session.run(None, {name: data.x[begin : begin + 50].numpy()})[0]
        correct += int((np.argmax(logits, axis=1) == data.y[begin : begin + 50].numpy()).sum())
    return correct / len(data.x)


def test_onnxruntime_int8_accuracy_is_the_saved_onnx_models_own(cnn, small, tmp_path):
    plan = {"default": {"bits": 8}}
    result = compress(cnn, plan, small, runtimes=("eager", "onnxruntime"), max_samples=64, **FAST)
    assert set(result.runtimes) == {"eager", "onnxruntime"}
    assert result.before is result.runtimes["eager"]["before"]
    ort_after = result.runtimes["onnxruntime"]["after"]
    assert ort_after.runtime == "onnxruntime" and ort_after.runtime_version == ort.__version__
    assert ort_after.provider == "CPUExecutionProvider" and ort_after.latency_kind == "real"
    path = tmp_path / "int8.onnx"
    path.write_bytes(result.onnx_bytes)
    ops = {node.op_type for node in __import__("onnx").load(str(path)).graph.node}
    assert "QuantizeLinear" in ops  # real int8
    assert ort_after.accuracy == _plain_ort_accuracy(path.read_bytes(), small)
    out = result.to_dict()
    assert set(out["runtimes"]) == {"eager", "onnxruntime"}
    assert out["runtimes"]["onnxruntime"]["after"]["runtime"] == "onnxruntime"


def test_pruning_then_int8_then_onnxruntime_in_one_call(cnn, small):
    plan = {"default": {"prune": 0.5, "bits": 8}, "layers": {"classifier.2": {"bits": 4}}}
    result = compress(cnn, plan, small, runtimes=("onnxruntime",), max_samples=64, **FAST)
    assert list(result.runtimes) == ["onnxruntime"]
    assert result.before.runtime == result.after.runtime == "onnxruntime"
    assert result.after.macs < result.before.macs / 2  # channels really removed
    # classifier.2 at 4 bits has no int8 kernel: the ONNX model's latency is labelled simulated.
    assert result.after.latency_kind == "simulated"
    assert _plain_ort_accuracy(result.onnx_bytes, small) == result.after.accuracy
    assert any("simulated" in n for n in result.notes)


class KthValueNet(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.kthvalue(x.flatten(1)[:, :64].reshape(-1, 8, 8), 2, dim=1)[0])


def test_a_model_that_does_not_export_gets_a_note_and_eager_results(small):
    result = compress(KthValueNet().eval(), {}, small, runtimes=("onnxruntime", "eager"), **FAST)
    assert list(result.runtimes) == ["eager"] and result.onnx_bytes is None
    notes = [n for n in result.notes if n.startswith("onnxruntime: not measured")]
    assert len(notes) == 1 and "\n" not in notes[0]


def test_transforms_change_params_and_macs_as_the_library_counts(cnn, small):
    layer = cnn.get_submodule("classifier.0")
    choice = plan_factorization(cnn, {"classifier.0": LowRankSpec(rank=0.25)})["classifier.0"]
    result = compress(cnn, {"layers": {"classifier.0": {"rank": 0.25}}}, small, **FAST)
    # A hand count: a Linear (out x in) at rank r becomes in*r + r*out weights (+ the bias, kept).
    r = choice.rank
    hand_params = layer.in_features * r + r * layer.out_features + layer.out_features
    assert (
        result.before.params - result.after.params == layer.weight.numel() + layer.out_features - hand_params
    )
    assert result.before.params - result.after.params == choice.params_before - choice.params_after
    assert result.before.macs - result.after.macs == layer.in_features * layer.out_features - hand_params + (
        layer.out_features
    )  # MACs of a Linear: one per weight
    assert result.transforms["layers"]["classifier.0"]["rank"] == r


def test_share_bits_and_huffman_count_in_size_bytes(cnn, small):
    plain = compress(cnn, {"layers": {"classifier.0": {"share_bits": 4}}}, small, **FAST)
    coded = compress(cnn, {"layers": {"classifier.0": {"share_bits": 4}}, "huffman": True}, small, **FAST)
    w = cnn.get_submodule("classifier.0").weight
    # 4-bit indices + 16 float32 centroids instead of 32-bit weights.
    expected_saving = w.numel() * 4 - (w.numel() * 4 // 8 + 16 * 4)
    assert plain.before.size_bytes - plain.after.size_bytes == expected_saving
    assert coded.after.size_bytes < plain.after.size_bytes  # Huffman codes the skewed indices shorter
    assert coded.transforms["layers"]["classifier.0"]["huffman"] is True
    assert plain.after.params == plain.before.params  # sharing keeps the dense shapes


def test_recovery_recipe_fills_epochs_distillation_and_cosine(cnn, digits):
    from analysis.compression.schedules import recovery_epochs

    tiny = digits.subset(24)
    plan = {"default": {"prune": 0.3}, "finetune": {"recipe": "recovery", "batch_size": 24}}
    result = compress(cnn, plan, tiny, **FAST)
    assert result.finetune["epochs"] == recovery_epochs(len(tiny.x_train), 24) == 30
    assert result.finetune["distilled"] is True
    assert result.finetune["settings"]["lr_schedule"] == "cosine"


# ----------------------------------------------------------------------------------------- save + CLI


def test_cli_compress_saves_each_format_and_it_reloads_to_the_same_accuracy(cnn, digits, tmp_path):
    from analysis.cli.compress import _save

    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"default": {"prune": 0.25}}))
    onnx_path = tmp_path / "m.onnx"
    common = ["--plan", str(plan_file), "--rounds", "1", "--threads", "1", "--no-record"]
    done = run_cli("compress", *common, "--runtime", "eager onnxruntime", "--save", str(onnx_path))
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert set(payload["runtimes"]) == {"eager", "onnxruntime"} and payload["saved"] == str(onnx_path)
    expected = payload["runtimes"]["onnxruntime"]["after"]["accuracy"]
    assert f"{onnx_path}: the ONNX model ONNX Runtime measured" in payload["notes"]
    paths = {onnx_path: expected}
    # The other formats from the same compression run in the library (a CLI run per format is slow here).
    result = compress(cnn, {"default": {"prune": 0.25}}, digits, **FAST)
    for suffix in (".pt2", ".pruned.safetensors", ".pt"):
        path = tmp_path / f"m{suffix}"
        _save(result, str(path), "zoo:digits-cnn", digits.input_shape, digits, {"notes": []})
        paths[path] = result.after.accuracy
    for path, accuracy in paths.items():
        extra = ["--trust-pickle"] if path.suffix == ".pt" else []
        done = run_cli("evaluate", "--model", str(path), *extra)
        assert done.returncode == 0, (path, done.stderr)
        assert json.loads(done.stdout)["accuracy"] == pytest.approx(accuracy, abs=1e-9), path


def test_cli_compress_refuses_an_unknown_save_suffix_and_runtime_in_one_line(tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text("{}")
    done = run_cli("compress", "--plan", str(plan_file), "--save", str(tmp_path / "m.zip"), "--no-record")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and ".onnx" in done.stderr
    done = run_cli("compress", "--plan", str(plan_file), "--runtime", "eager,tvm", "--no-record")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "tvm" in done.stderr


# ------------------------------------------------------------------------------------------- sweeps


def test_sweep_kinds_lowrank_and_share_equal_the_transform_functions(cnn, small):
    from analysis.sensitivity.sweep import SensitivityResult, sensitivity_sweep
    from analysis.sensitivity.transform_sweeps import lowrank_sensitivity, share_sensitivity

    layers = ["features.3", "classifier.0"]
    via = sensitivity_sweep(cnn, small, kind="lowrank", ratios=[0.5, 0.25], layers=layers)
    direct = lowrank_sensitivity(cnn, small, [0.5, 0.25], layers)
    assert via.layers == direct.layers and via.macs_saved == direct.macs_saved
    assert via.to_frame().columns.tolist()[2] == "kept_rank"
    back = SensitivityResult.from_dict(json.loads(json.dumps(via.to_dict())))
    assert back.layers == via.layers and back.macs_saved == via.macs_saved and back.kind == "lowrank"

    via = sensitivity_sweep(cnn, small, kind="share", bits=[4, 2], layers=layers)
    direct = share_sensitivity(cnn, small, [4, 2], layers)
    assert via.layers == direct.layers and via.x_key == "bits"
    assert via.to_dict()["layers"]["features.3"]["bits"] == [4, 2]
    assert SensitivityResult.from_dict(via.to_dict()).layers == via.layers
    assert via.min_safe_bits("features.3", 1.0) == 2


@pytest.mark.parametrize("kind", ["structured", "quant", "share"])
def test_sweep_should_stop_keeps_the_finished_layers(cnn, small, kind):
    from analysis.sensitivity.sweep import sensitivity_sweep

    options = {"ratios": [0.5]} if kind == "structured" else {"bits": [4]}
    full = sensitivity_sweep(cnn, small, kind=kind, **options)
    asked = []
    stopped = sensitivity_sweep(
        cnn, small, kind=kind, should_stop=lambda: asked.append(1) or len(asked) > 2, **options
    )
    assert stopped.partial and stopped.to_dict()["partial"] is True and not full.partial
    names = list(full.layers)[:2]
    assert list(stopped.layers) == names
    for name in names:  # the finished layers' numbers are the full sweep's
        assert stopped.layers[name].accuracy == full.layers[name].accuracy
    assert stopped.baseline_accuracy == full.baseline_accuracy


# ------------------------------------------------------------------------------------------- report


def test_report_shows_runtimes_spread_and_the_trajectory(cnn, digits, tmp_path):
    from analysis.report import charts
    from analysis.report.html import build_report

    small = digits.subset(64)
    plan = {"schedule": {"method": "agp", "criterion": "l1", "target": {"macs": 0.6}, "steps": 2,
                         "epochs_per_step": 0.25, "max_samples": 64}}  # fmt: skip
    result = compress(cnn, plan, small, runtimes=("eager", "onnxruntime"), **FAST)
    path = build_report(cnn, small, tmp_path / "r.html", compression=result)
    text = path.read_text()
    assert "CPUExecutionProvider" in text and ort.__version__ in text and "p90/p10" in text
    assert "Schedule: accuracy, MACs and loss per step" in text
    fig = charts.trajectory_chart(result.trajectory)
    assert len(fig.data) == 3 and list(fig.data[1].y) == [r["macs"] for r in result.trajectory]
    assert fig.layout.template.layout.colorway == charts.TEMPLATE.layout.colorway


def test_compress_factors_a_layer_as_the_lowrank_sweep_predicts(cnn, small):
    """The sweep's point and `compress` with that `rank` evaluate the same rank-r weight (both fitted to the
    layer's outputs on the training split), so the accuracy the sweep shows is the one compress gets."""
    from analysis.sensitivity.sweep import sensitivity_sweep

    sweep = sensitivity_sweep(cnn, small, kind="lowrank", ratios=[0.5], layers=["features.0"])
    result = compress(cnn, {"layers": {"features.0": {"rank": 0.5}}}, small, **FAST)
    assert result.after.accuracy == sweep.layers["features.0"].accuracy[0]
