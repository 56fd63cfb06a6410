"""Writes: streams written directly, modes kept, read-only refused, several outputs all-or-none, strict JSON."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from analysis.errors import WorkbenchError
from analysis.io import is_stream_target, to_json, write_all_atomic, write_atomic, write_text_atomic


def _strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_existing_file_keeps_its_mode(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_read_only_target_is_refused_and_left_alone(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("precious")
    os.chmod(target, 0o444)
    with pytest.raises(WorkbenchError, match="read-only"):
        write_text_atomic(target, "new")
    assert target.read_text() == "precious"
    assert stat.S_IMODE(target.stat().st_mode) == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left behind


def test_fifo_is_written_directly_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []

    def read() -> None:
        with open(fifo) as f:
            got.append(f.read())

    reader = threading.Thread(target=read)
    reader.start()
    write_text_atomic(fifo, '{"a": 1}\n')
    reader.join(timeout=10)
    assert got == ['{"a": 1}\n']
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO


def test_character_device_is_written_directly():
    assert is_stream_target("/dev/null")
    write_text_atomic("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_dev_full_gives_a_message():
    with pytest.raises(WorkbenchError, match="/dev/full"):
        write_text_atomic("/dev/full", "x" * 10000)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_dev_stdout_redirected_to_a_file_writes_the_file(tmp_path):
    """`--json /dev/stdout > out.json`: the text lands in out.json, and /dev/stdout stays a link."""
    out = tmp_path / "out.json"
    code = "from analysis.io import write_text_atomic; write_text_atomic('/dev/stdout', 'hello\\n')"
    with open(out, "w") as f:
        subprocess.run([sys.executable, "-c", code], stdout=f, check=True, cwd=os.getcwd())
    assert out.read_text() == "hello\n"
    assert os.path.islink("/dev/stdout")


def test_several_outputs_all_or_none(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.json"
    a.write_text("old a")
    b.write_text("old b")

    def broken(_path):
        raise RuntimeError("the report step failed")

    with pytest.raises(RuntimeError):
        write_all_atomic({a: lambda p: p.write_text("new a"), b: broken})
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.json"]
    write_all_atomic({a: lambda p: p.write_text("new a"), b: lambda p: p.write_text("new b")})
    assert a.read_text() == "new a" and b.read_text() == "new b"


def test_json_never_holds_nan_or_infinity():
    payload = {
        "loss": float("nan"),
        "scores": torch.tensor([1.0, float("inf"), -float("inf")]),
        "arr": np.array([np.nan, 2.0]),
        "nested": [{"x": math.nan}],
        "ok": 0.5,
    }
    parsed = _strict_loads(to_json(payload))
    assert parsed["loss"] is None
    assert parsed["scores"] == [1.0, None, None]
    assert parsed["arr"] == [None, 2.0]
    assert parsed["nested"] == [{"x": None}]
    assert parsed["ok"] == 0.5
    assert "5 values were NaN or infinite" in parsed["notes"][0]
    with pytest.raises(WorkbenchError, match="NaN or infinite"):
        to_json(payload, strict=True)


def test_write_atomic_failure_leaves_no_debris(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(ZeroDivisionError):
        write_atomic(target, lambda p: 1 / 0)
    assert list(tmp_path.iterdir()) == []
