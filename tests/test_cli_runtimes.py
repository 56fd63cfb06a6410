"""`--runtime` on every command that runs a model: evaluate, latency, sensitivity, rank (compress and report
have their own tests). Each is compared with something independent: onnxruntime run directly on the
exported model, the eager command's numbers, or the library's eager sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from analysis.runtime.onnx import export_onnx


def test_evaluate_on_onnxruntime_is_onnxruntimes_own_accuracy(cnn, digits):
    """`evaluate --runtime onnxruntime` reports the accuracy an InferenceSession on the exported model gets
    (computed here with onnxruntime directly), labelled with the runtime, version and provider."""
    import onnxruntime as ort

    r = run_cli("evaluate", "--model", "zoo:digits-cnn", "--runtime", "onnxruntime", "--no-record")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    session = ort.InferenceSession(
        export_onnx(cnn, digits.x[:2]).model_bytes, providers=["CPUExecutionProvider"]
    )
    logits = session.run(None, {"x": digits.x.numpy().astype(np.float32)})[0]
    assert payload["accuracy"] == pytest.approx(
        float((logits.argmax(1) == digits.y.numpy()).mean()), abs=1e-9
    )
    assert payload["runtime"] == "onnxruntime" and payload["provider"] == "CPUExecutionProvider"
    assert payload["runtime_version"] == ort.__version__ and payload["max_abs_diff"] < 1e-3


def test_evaluate_and_latency_on_two_runtimes(cnn, digits):
    r = run_cli("evaluate", "--model", "zoo:digits-cnn", "--runtime", "eager,onnxruntime", "--limit", "60",
                "--no-record")  # fmt: skip
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert set(payload["runtimes"]) == {"eager", "onnxruntime"} and payload["runtime"] == "eager"
    assert payload["runtimes"]["eager"]["accuracy"] == payload["runtimes"]["onnxruntime"]["accuracy"]
    r = run_cli("latency", "--model", "zoo:digits-cnn", "--runtime", "eager", "onnxruntime", "--runs", "5",
                "--batch-size", "8", "--threads", "1", "--no-record")  # fmt: skip
    assert r.returncode == 0, r.stderr
    lat = json.loads(r.stdout)
    assert {n: v["runtime"] for n, v in lat["runtimes"].items()} == {
        "eager": "eager",
        "onnxruntime": "onnxruntime",
    }
    for v in lat["runtimes"].values():
        assert v["p10_ms"] <= v["median_ms"] <= v["p90_ms"] and (v["batch_size"], v["threads"]) == (8, 1)
        assert v["runs"] == 5


@pytest.mark.parametrize(
    "args,needle",
    [
        (["evaluate", "--runtime", "tensorrt"], "unknown runtime"),
        (
            ["evaluate", "--runtime", "onnxruntime", "--dtype", "float16"],
            "--dtype apply to the eager runtime",
        ),
        (["sensitivity", "--runtime", "eager,onnxruntime"], "one runtime"),
    ],
)
def test_bad_runtime_options_are_one_line(args, needle):
    r = run_cli(*args, "--no-record")
    assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_sensitivity_and_oracle_on_onnxruntime_equal_eager(cnn, digits):
    """Every sweep point, and every oracle channel, evaluated on ONNX Runtime (weights fed per point) gives
    the eager runner's numbers up to float rounding."""
    from analysis.importance.rankings import rank_channels
    from analysis.runtime.edit_runner import runner_class
    from analysis.sensitivity.sweep import sensitivity_sweep

    small = digits.subset(80)
    for kind in ("structured", "unstructured", "quant"):
        eager = sensitivity_sweep(cnn, small, kind, ratios=[0.3, 0.7], bits=[3])
        ort = sensitivity_sweep(cnn, small, kind, ratios=[0.3, 0.7], bits=[3], runtime="onnxruntime")
        for name, curve in eager.layers.items():
            assert ort.layers[name].accuracy == curve.accuracy, (kind, name)
            assert ort.layers[name].loss == pytest.approx(curve.loss, abs=1e-5), (kind, name)
    eager = rank_channels(cnn, small, criteria=["l1"], max_samples=48, layers=["features.3"])
    ort = rank_channels(
        cnn, small, criteria=["l1"], max_samples=48, layers=["features.3"], runner=runner_class("onnxruntime")
    )
    assert np.allclose(ort.layers["features.3"]["oracle"], eager.layers["features.3"]["oracle"], atol=1e-5)
    args = (
        "sensitivity",
        "--kind",
        "quant",
        "--bits",
        "2",
        "--layers",
        "features.0",
        "--limit",
        "40",
        "--no-record",
    )
    on_ort, on_eager = run_cli(*args, "--runtime", "onnxruntime"), run_cli(*args)
    assert on_ort.returncode == 0 and on_eager.returncode == 0, on_ort.stderr + on_eager.stderr
    got, want = json.loads(on_ort.stdout), json.loads(on_eager.stdout)
    assert got["layers"]["features.0"]["accuracy"] == want["layers"]["features.0"]["accuracy"]
    assert "ONNX Runtime" in " ".join(got["notes"]) and "ONNX Runtime" not in " ".join(want["notes"])
