"""The command line end to end, through a subprocess, as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def test_summary_json_keys_and_file_output(tmp_path):
    out = tmp_path / "s.json"
    r = run_cli("summary", "--model", "zoo:digits-cnn", "--json", str(out))
    assert r.returncode == 0, r.stderr
    payload = json.loads(out.read_text())
    assert set(payload["total"]) >= {"params", "macs", "flops"}
    assert payload["total"]["flops"] == 2 * payload["total"]["macs"]
    first = payload["layers"][0]
    assert set(first) >= {"name", "type", "params", "macs", "output_shape"}
    assert sum(layer["params"] for layer in payload["layers"]) == payload["total"]["params"]
    assert not list(tmp_path.glob(".*tmp"))


def test_evaluate_and_latency_to_stdout(digits, cnn):
    from analysis import evaluate

    r = run_cli("evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--json", "-")
    assert r.returncode == 0, r.stderr
    payload = json.loads(r.stdout)
    assert payload["accuracy"] == evaluate(cnn, digits).accuracy
    assert payload["samples"] == len(digits.x) and "loss" in payload
    r = run_cli("latency", "--model", "zoo:digits-mlp", "--batch-size", "8", "--threads", "1", "--runs", "5")
    assert r.returncode == 0, r.stderr
    lat = json.loads(r.stdout)
    assert lat["p10_ms"] <= lat["median_ms"] <= lat["p90_ms"]
    assert (lat["runs"], lat["batch_size"], lat["threads"]) == (5, 8, 1)


def test_user_module_with_input_shape_and_weights(tmp_path):
    (tmp_path / "mymodel.py").write_text(
        "from torch import nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(12, 2))\n"
    )
    r = run_cli("summary", "--model", "mymodel:build", "--input-shape", "1,3,4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"]["macs"] == 24
    torch.save({"1.weight": torch.zeros(3, 12), "1.bias": torch.zeros(2)}, tmp_path / "bad.pt")
    r = run_cli(
        "summary", "--model", "mymodel:build", "--input-shape", "1,3,4", "--weights", "bad.pt", cwd=tmp_path
    )
    assert r.returncode != 0 and "do not fit" in r.stderr


@pytest.mark.parametrize(
    "args,needle",
    [
        (["summary", "--model", "zoo:missing"], "unknown zoo model"),
        (["summary", "--model", "nosuchmod:make"], "cannot import"),
        (["summary", "--model", "pandas:DataFrame"], "not a torch.nn.Module"),
        (["summary", "--model", "absent.pt"], "not found"),
        (["evaluate", "--data", "tensors:absent.npz"], "not found"),
        (["evaluate", "--data", "cifar"], "unknown data spec"),
        (["summary", "--input-shape", "1,x,3"], "cannot parse input shape"),
        (["summary", "--input-shape", "1,3,32,32"], "cannot run on input of shape"),
        (["summary", "--weights", "absent.safetensors"], "not found"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, needle, tmp_path):
    out = tmp_path / "never.json"
    r = run_cli(*args, "--json", str(out))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


def test_pickled_model_needs_the_flag(tmp_path):
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), tmp_path / "whole.pt")
    r = run_cli("summary", "--model", str(tmp_path / "whole.pt"), "--input-shape", "1,1,16,16")
    assert r.returncode != 0 and "--trust-pickle" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("evaluate", "--model", str(tmp_path / "whole.pt"), "--trust-pickle", "--data", "digits")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["samples"] > 0


def test_debug_shows_traceback():
    r = run_cli("summary", "--model", "zoo:missing", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr
