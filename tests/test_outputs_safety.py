"""Outputs that never clobber (issue 20): every output path is checked before any work, an output naming an
input or another output is refused with one line (the input byte for byte unchanged), `--save` goes with
the JSON all or none, a failed write records the run as failed, links and typo folders are refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import analysis.io
from analysis import ResultsStore, load_model, save_artifact
from analysis.cli.main import main


@pytest.fixture(autouse=True)
def store_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(path))
    return path


def _run(capsys, *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    err = capsys.readouterr().err
    lines = [
        line for line in err.replace("\r", "\n").splitlines() if line.strip().startswith(("error", "warn"))
    ]
    return code, lines


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(capsys, needle: str, *args: str) -> None:
    code, lines = _run(capsys, *args)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    return save_artifact(load_model("zoo:digits-mlp"), tmp_path_factory.mktemp("onnx") / "mlp.onnx")


def test_an_output_naming_an_input_is_refused_and_the_input_kept(capsys, tmp_path, onnx_file, store_dir):
    victim = tmp_path / "victim.onnx"
    victim.write_bytes(onnx_file.read_bytes())
    before = _digest(victim)
    _refused(capsys, "--model", "summary", "--model", str(victim), "--json", str(victim))
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"default": {"prune": 0.5}}))
    plan_text = plan.read_text()
    _refused(
        capsys, "--plan", "compress", "--model", "zoo:digits-mlp", "--plan", str(plan), "--json", str(plan)
    )
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"not even read")
    _refused(capsys, "--weights", "summary", "--model", "zoo:digits-mlp", "--weights", str(weights),
             "--json", str(weights))  # fmt: skip
    assert (
        _digest(victim) == before
        and plan.read_text() == plan_text
        and weights.read_bytes() == b"not even read"
    )
    assert not store_dir.exists() or ResultsStore().list() == []  # refused before any work: nothing recorded


def test_an_output_reached_through_another_name_is_the_same_file(capsys, tmp_path):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"default": {"prune": 0.5}}))
    alias = tmp_path / "alias.json"
    alias.hardlink_to(plan)
    _refused(
        capsys, "--plan", "compress", "--model", "zoo:digits-mlp", "--plan", str(plan), "--json", str(alias)
    )
    _refused(capsys, "--plan", "compress", "--model", "zoo:digits-mlp", "--plan", str(plan),
             "--json", str(tmp_path / "." / "p.json"))  # fmt: skip


@pytest.mark.parametrize(
    ("first", "second"), [("--out", "--csv"), ("--csv", "--markdown"), ("--json", "--markdown")]
)
def test_two_outputs_naming_one_file_are_refused(capsys, tmp_path, first, second):
    target = tmp_path / "c.html"
    _refused(
        capsys,
        "both name",
        "sensitivity",
        "--model",
        "zoo:digits-mlp",
        first,
        str(target),
        second,
        str(target),
    )
    assert not target.exists()


def test_save_and_json_on_one_file_are_refused(capsys, tmp_path):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"default": {"prune": 0.5}}))
    same = tmp_path / "same.onnx"
    _refused(capsys, "both name", "compress", "--model", "zoo:digits-mlp", "--plan", str(plan), "--save",
             str(same), "--json", str(same))  # fmt: skip
    assert not same.exists()


def test_a_refused_json_leaves_no_save_behind(capsys, tmp_path, store_dir):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"default": {"prune": 0.25}}))
    frozen = tmp_path / "out.json"
    frozen.write_text("keep")
    frozen.chmod(0o444)
    saved = tmp_path / "small.pruned.safetensors"
    _refused(capsys, "read-only", "compress", "--model", "zoo:digits-mlp", "--plan", str(plan), "--save",
             str(saved), "--json", str(frozen))  # fmt: skip
    assert not saved.exists() and frozen.read_text() == "keep"


def test_a_write_that_fails_after_the_work_writes_nothing_and_records_failed(capsys, tmp_path, monkeypatch):
    """The JSON cannot be written (the disk fills up while the outputs are written): the artifact staged
    for --save is not left behind, and the recorded run says failed, not complete."""
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"default": {"prune": 0.25}}))
    saved, out = tmp_path / "small.pruned.safetensors", tmp_path / "result.json"
    real = analysis.io._finish_temp

    def full_disk(tmp: Path, mode):
        if "result.json" in tmp.name:
            raise OSError(28, "No space left on device")
        real(tmp, mode)

    monkeypatch.setattr(analysis.io, "_finish_temp", full_disk)
    code, lines = _run(capsys, "compress", "--model", "zoo:digits-mlp", "--plan", str(plan), "--rounds", "1",
                       "--save", str(saved), "--json", str(out))  # fmt: skip
    assert code != 0 and any("No space left" in line for line in lines), lines
    assert not saved.exists() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "p.json"]  # no staged or temp files
    [run] = ResultsStore().list(kind="compression")
    assert run.status == "failed"


def test_save_is_written_with_the_json(capsys, tmp_path):
    plan = tmp_path / "p.json"
    plan.write_text(json.dumps({"default": {"prune": 0.25}}))
    saved, out = tmp_path / "small.pruned.safetensors", tmp_path / "result.json"
    code, lines = _run(capsys, "compress", "--model", "zoo:digits-mlp", "--plan", str(plan), "--rounds", "1",
                       "--save", str(saved), "--json", str(out))  # fmt: skip
    assert code == 0, lines
    payload = json.loads(out.read_text())
    assert payload["saved"] == str(saved) and ResultsStore().get(payload["run_id"]).status == "complete"
    reloaded = load_model(str(saved))
    assert sum(p.numel() for p in reloaded.parameters()) == payload["after"]["params"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "p.json", "result.json", saved.name]


def test_a_symbolic_link_is_refused_and_left_alone(capsys, tmp_path):
    target = tmp_path / "real.json"
    target.write_text("keep")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    _refused(capsys, "symbolic link", "summary", "--model", "zoo:digits-mlp", "--json", str(link))
    assert link.is_symlink() and target.read_text() == "keep"
    with pytest.raises(analysis.WorkbenchError, match="symbolic link"):
        analysis.io.write_text_atomic(link, "x")
    assert link.is_symlink() and target.read_text() == "keep"


def test_typo_folders_are_never_created(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused(
        capsys, "does not exist", "summary", "--model", "zoo:digits-mlp", "--json", "nonexist_dir/sub/x.json"
    )
    _refused(capsys, "no results store", "runs", "list", "--db", "new/deep/x.sqlite3")
    _refused(capsys, "is a folder", "summary", "--model", "zoo:digits-mlp", "--json", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_link_to_a_fifo_is_written_through(capsys, tmp_path):
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "out.json"
    link.symlink_to(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code, lines = _run(capsys, "summary", "--model", "zoo:digits-mlp", "--json", str(link), "--no-record")
    reader.join(timeout=60)
    assert code == 0, lines
    assert json.loads(got[0])["total"]["params"] > 0 and link.is_symlink()


def test_the_data_file_and_the_results_store_are_inputs_too(capsys, tmp_path, store_dir):
    import numpy as np

    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((4, 1, 16, 16), np.float32), y=np.zeros(4, np.int64))
    before = _digest(data)
    _refused(capsys, "--data", "evaluate", "--model", "zoo:digits-mlp", "--data", f"tensors:{data}",
             "--json", str(data))  # fmt: skip
    assert _digest(data) == before
    ResultsStore().record("summary", "zoo:x", None, {}, {"a": 1})
    db = store_dir / "results.sqlite3"
    before = _digest(db)
    _refused(capsys, "the results store", "summary", "--model", "zoo:digits-mlp", "--json", str(db))
    assert _digest(db) == before and len(ResultsStore().list()) == 1
