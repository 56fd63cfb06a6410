"""Every bad input from issue 11's "What was seen" gives one line on standard error and a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.errors import WorkbenchError
from analysis.latency import LatencyResult

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "analysis", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout[-500:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr[-1000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _tensors(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"tensors:{path}"


def _digits_like(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 16, 16), dtype=np.float32), np.arange(n) % 10


@pytest.mark.parametrize("spec", ["sys:exit", "os:abort", "analysis.zoo.train:main"])
def test_dangerous_callables_are_refused(spec):
    _assert_one_line_error(_cli("summary", "--model", spec), "model")


def test_callable_that_raises_system_exit(tmp_path):
    (tmp_path / "exiter.py").write_text(
        "import sys\ndef build():\n    sys.exit(0)\ndef notmodel():\n    return 3\n"
    )
    _assert_one_line_error(_cli("summary", "--model", "exiter:build", cwd=tmp_path), "SystemExit")
    _assert_one_line_error(
        _cli("summary", "--model", "exiter:notmodel", cwd=tmp_path), "not a torch.nn.Module"
    )


def test_evaluate_negative_batch_size_is_refused():
    _assert_one_line_error(_cli("evaluate", "--batch-size", "-1"), "batch size")


def test_nan_in_inputs_is_refused(tmp_path):
    x, y = _digits_like()
    x[3, 0, 2, 2] = np.nan
    _assert_one_line_error(_cli("evaluate", "--data", _tensors(tmp_path, x=x, y=y)), "NaN", "sample 3")


def test_zero_samples_is_refused(tmp_path):
    x, y = _digits_like()
    _assert_one_line_error(_cli("evaluate", "--data", _tensors(tmp_path, x=x[:0], y=y[:0])), "no samples")


def test_labels_outside_the_outputs_are_refused(tmp_path):
    x, y = _digits_like()
    y[2] = 12
    _assert_one_line_error(_cli("evaluate", "--data", _tensors(tmp_path, x=x, y=y)), "label 12", "10 outputs")


def test_length_mismatch_is_refused(tmp_path):
    x, y = _digits_like()
    _assert_one_line_error(_cli("evaluate", "--data", _tensors(tmp_path, x=x, y=y[:5])), "must match")
    spec = _tensors(tmp_path, x=x, y=y, x_train=x, y_train=y[:3])
    _assert_one_line_error(_cli("evaluate", "--data", spec), "x_train", "must match")


@pytest.mark.parametrize("plan", [{"default": 0, "layers": 0, "finetune": 0}, {"finetune": {"epochs": 1e12}}])
def test_bad_plans_are_refused(tmp_path, plan):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    _assert_one_line_error(_cli("compress", "--plan", str(path)), "plan.json")


def test_nan_rank_scores_are_an_error():
    """A model whose weights hold NaN gives NaN Taylor scores: an error, not JSON with NaN and exit 0."""
    from analysis import load_data, load_model, rank_channels

    model = load_model("zoo:digits-cnn")
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    data = load_data("digits", (1, 16, 16)).subset(16)
    with pytest.raises(WorkbenchError, match="NaN or infinite scores"):
        rank_channels(model, data, criteria=["taylor"], oracle=False)


def test_nan_loss_is_an_error():
    from analysis import load_data, load_model
    from analysis.evaluate import evaluate

    model = load_model("zoo:digits-mlp")
    with torch.no_grad():
        list(model.parameters())[-1].fill_(float("inf"))
    with pytest.raises(WorkbenchError, match="not a finite number"):
        evaluate(model, load_data("digits", getattr(model, "input_shape", None)).subset(8))


def test_noisy_latency_warns():
    steady = LatencyResult.from_times([10.0] * 9 + [10.5], batch_size=1, threads=1)
    noisy = LatencyResult.from_times([9.0, 51.3, 8.9, 204.0, 13.9, 9.6, 150.0, 15.2, 251.7, 10.0], 1, 1)
    assert not steady.noisy and steady.warning is None
    assert noisy.noisy and noisy.spread > 1.5 and "p90/p10" in noisy.warning
    d = noisy.to_dict()
    assert d["noisy"] is True and d["warning"] == noisy.warning


def test_json_to_dev_stdout_is_not_replaced(tmp_path):
    out = tmp_path / "out.json"
    with open(out, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "analysis", "summary", "--json", "/dev/stdout"],
            stdout=f, stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["total"]["macs"] > 0
    assert os.path.islink("/dev/stdout")
