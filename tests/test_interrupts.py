"""Ctrl-C means the same on every long command (issue 20): stop at the next step, write the partial result
with `"partial": true`, save no artifact that is not the result, exit 130, record the run as partial; and
Ctrl-C while the command is still starting is one line, no traceback. (`sensitivity` is covered in
test_cli_safety.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from analysis import ResultsStore
from tests.conftest import ROOT


def _interrupt_when(args: list[str], marker: bytes, data_dir: Path, cwd: Path, delay_s: float = 0.0):
    """Run `python -m analysis ARGS`, send SIGINT once `marker` shows on standard error (after `delay_s`);
    the exit code and everything it wrote there."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seen, started = bytearray(), threading.Event()

    def read() -> None:
        while chunk := os.read(proc.stderr.fileno(), 4096):
            seen.extend(chunk)
            if marker in seen:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(300), seen.decode(errors="replace")[-2000:]
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=300)
    reader.join(timeout=10)
    return code, seen.decode(errors="replace")


def test_ctrl_c_on_rank_with_the_oracle(tmp_path):
    """Without Ray, Ctrl-C used to be ignored: the ranking ran to its end, exit 0, recorded complete."""
    out = tmp_path / "rank.json"
    args = ["rank", "--model", "zoo:digits-cnn", "--criteria", "l1", "--json", str(out)]
    code, err = _interrupt_when(args, b"rank:", tmp_path / "data", tmp_path, delay_s=1.0)
    assert code == 130, err[-2000:]
    payload = json.loads(out.read_text())
    assert payload["partial"] is True
    layer = next(iter(payload["layers"].values()))
    assert "l1" in layer and "oracle" not in layer  # what finished, and not what did not
    assert any("stopped by request" in note for note in payload["notes"])
    [run] = ResultsStore(tmp_path / "data" / "results.sqlite3").list(kind="ranking")
    assert run.status == "partial" and run.id == payload["run_id"]
    assert "Traceback" not in err


def test_ctrl_c_on_a_scheduled_compress_saves_nothing(tmp_path):
    """It used to exit 0 without "partial" and save the unpruned model as the artifact."""
    plan = tmp_path / "plan.json"
    schedule = {
        "method": "iterative",
        "criterion": "l1",
        "target": {"macs": 0.5},
        "steps": 6,
        "epochs_per_step": 1,
    }
    plan.write_text(json.dumps({"schedule": schedule}))
    out, saved = tmp_path / "c.json", tmp_path / "small.pruned.safetensors"
    args = [
        "compress",
        "--model",
        "zoo:digits-mlp",
        "--plan",
        str(plan),
        "--rounds",
        "1",
        "--save",
        str(saved),
    ]
    code, err = _interrupt_when([*args, "--json", str(out)], b"schedule steps", tmp_path / "data", tmp_path)
    assert code == 130, err[-2000:]
    payload = json.loads(out.read_text())
    assert payload["partial"] is True and payload["stopped"] is True and "saved" not in payload
    assert not saved.exists() and any("not written" in note for note in payload["notes"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staged artifact left
    [run] = ResultsStore(tmp_path / "data" / "results.sqlite3").list(kind="compression")
    assert run.status == "partial"


# Every moment of start-up, not one: a KeyboardInterrupt raised inside an import was once swallowed by the
# library being imported (the command then ran to the end, or failed on a half-imported numpy)
@pytest.mark.parametrize("delay_s", [0.3, 0.6, 0.9, 1.2, 1.5])
def test_ctrl_c_while_starting_is_one_line(tmp_path, delay_s):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis", "summary", "--model", "zoo:digits-mlp", "--no-record"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a suite started in the background (`make test &`) hands its children Ctrl-C
        # ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    time.sleep(delay_s)  # importing torch takes longer than this on any machine
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (-signal.SIGINT, 130) and out == ""
    assert err.strip().count("\n") == 0 and err.startswith("error: interrupted"), err
