"""Limits with one-line errors and the weak cases of issue 20: threads, shapes (ONNX inputs too), archives
judged by what they unpack to, image workers, the results store's odd states, and data/plan messages."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import analysis.limits
from analysis import ResultsStore, WorkbenchError, load_data
from analysis.app_support import UploadStore
from analysis.cli.main import main
from analysis.compression.plan import CompressionPlan
from analysis.limits import check_archive, cpu_count
from tests.conftest import ROOT, run_cli


def _one_line(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines


# --- threads and shapes --------------------------------------------------------------------------------


def test_threads_above_the_cpu_count_are_one_line():
    """`latency --threads 100000` used to print its JSON and then segfault (rc 139)."""
    result = run_cli("latency", "--model", "zoo:digits-mlp", "--threads", "100000", "--no-record")
    _one_line(result, f"use at most {cpu_count()}")
    assert result.stdout == ""
    assert cpu_count() == len(os.sched_getaffinity(0))


def test_a_huge_input_shape_is_one_line_before_any_allocation():
    result = run_cli(
        "summary", "--model", "zoo:digits-mlp", "--input-shape", "1,1,30000,30000", "--no-record"
    )
    _one_line(result, "900,000,000 values per sample")


def test_a_batch_over_a_quarter_of_memory_is_refused(monkeypatch):
    from analysis import load_model, measure_latency

    monkeypatch.setattr(analysis.limits, "memory_bytes", lambda: 64 * 2**20)
    with pytest.raises(WorkbenchError, match="quarter of this machine's memory"):
        measure_latency(load_model("zoo:digits-mlp"), (1, 256, 256), batch_size=128, runs=2)


def test_an_onnx_input_declared_huge_is_one_line(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 60000, 60000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 60000, 60000])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "huge", [x], [y])
    path = tmp_path / "huge.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = run_cli("summary", "--model", str(path), "--no-record")
    _one_line(result, "3,600,000,000 values per sample")


# --- archives ------------------------------------------------------------------------------------------


def _bomb(path: Path, megabytes: int) -> Path:
    """A .npz whose one array of zeros unpacks to `megabytes` MiB from a few hundred KiB on disk."""
    n = megabytes * 2**20 // 4
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("x.npy", "w", force_zip64=True) as f,
    ):
        f.write(_npy_header(n))
        zeros = bytes(2**20)
        for _ in range(megabytes):
            f.write(zeros)
    return path


def _npy_header(n: int) -> bytes:
    """The magic string and header of a .npy file holding `n` float32 values (the data follows it)."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    return buffer.getvalue()


def test_an_npz_is_judged_by_what_it_unpacks_to(tmp_path, monkeypatch):
    bomb = _bomb(tmp_path / "bomb.npz", 64)
    assert bomb.stat().st_size < 2**20  # under a MiB on disk ...
    with zipfile.ZipFile(bomb) as z:
        assert z.infolist()[0].file_size > 64 * 2**20  # ... 64 MiB unpacked, by zip's own count
    monkeypatch.setattr(analysis.limits, "memory_bytes", lambda: 64 * 2**20)  # budget: half, 32 MiB
    with pytest.raises(WorkbenchError, match="unpacks to"):
        load_data(f"tensors:{bomb}")
    with pytest.raises(WorkbenchError, match="unpacks to"):
        UploadStore(tmp_path / "up", max_bytes=2**20).save("data.npz", bomb.read_bytes())
    assert check_archive(bomb, budget=2**30) > 64 * 2**20


def test_an_npy_header_declaring_a_huge_array_is_refused(tmp_path):
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", _npy_header(2**40) + bytes(16))  # 4 TiB declared, 16 bytes given
    with pytest.raises(WorkbenchError, match="unpacks to"):
        load_data(f"tensors:{path}")


def test_a_sub_megabyte_upload_limit_is_written_as_such(tmp_path):
    store = UploadStore(tmp_path / "up", max_bytes=512 * 1024)
    with pytest.raises(WorkbenchError, match=r"over the 0\.5 MB limit"):
        store.save("w.safetensors", bytes(600 * 1024))


def test_the_upload_root_keeps_its_mode(tmp_path):
    shared_tmp = tmp_path / "shared-tmp"
    shared_tmp.mkdir()
    shared_tmp.chmod(0o1777)
    store = UploadStore(shared_tmp)
    assert stat.S_IMODE(shared_tmp.stat().st_mode) == 0o1777  # others keep using it
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700  # the session's own folder is private
    fresh = tmp_path / "fresh"
    UploadStore(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


# --- image folders ---------------------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path) -> Path:
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / label / f"{i}.png")
    return tmp_path


def test_image_workers_are_capped_at_the_cpu_count(images):
    data = load_data(f"imagefolder:{images}?workers=40", (3, 8, 8))
    assert data.num_workers == cpu_count() < 40


def test_a_corrupt_image_names_its_file(images):
    broken = images / "b" / "1.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    data = load_data(f"imagefolder:{images}?test=1", (3, 8, 8))
    with pytest.raises(WorkbenchError) as info:
        data.x[: len(data.x)]
    assert str(broken) in str(info.value)


def test_crop_and_normalize_messages(images):
    with pytest.raises(WorkbenchError, match=r"crop='3x'"):
        load_data(f"imagefolder:{images}?crop=3x", (3, 8, 8))
    with pytest.raises(WorkbenchError) as info:
        load_data(f"imagefolder:{images}?normalize=0.5,0.5/0.2,0.2", (1, 8, 8))
    assert "1 value each" in str(info.value) and "1 or 1" not in str(info.value)


# --- data and plans ------------------------------------------------------------------------------------


def test_uint8_inputs_are_refused_not_passed_unscaled(tmp_path):
    path = tmp_path / "pixels.npz"
    np.savez(path, x=np.full((4, 1, 16, 16), 200, np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(WorkbenchError, match="uint8.*/ 255"):
        load_data(f"tensors:{path}")


@pytest.mark.parametrize("value", ["0.5", "8"])
def test_plan_numbers_written_as_strings_are_refused(value):
    key = "prune" if value == "0.5" else "bits"
    with pytest.raises(WorkbenchError, match="without quotes"):
        CompressionPlan.from_dict({"default": {key: value}})
    with pytest.raises(WorkbenchError):
        CompressionPlan.from_dict({"default": {"prune": True}})


# --- the results store ---------------------------------------------------------------------------------


def test_a_folder_named_like_the_store_is_refused(tmp_path, monkeypatch):
    (tmp_path / "results.sqlite3").mkdir()
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(WorkbenchError, match="is a folder"):
        ResultsStore()
    assert list((tmp_path / "results.sqlite3").iterdir()) == []


def test_one_damaged_row_does_not_break_the_listing(tmp_path, capsys):
    db = tmp_path / "r.sqlite3"
    store = ResultsStore(db)
    good = store.record("summary", "zoo:x", None, {}, {"a": 1})
    bad = store.record("summary", "zoo:y", None, {}, {"a": 2})
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET params = '{broken' WHERE id = ?", (bad,))
    assert main(["runs", "list", "--db", str(db)]) == 0
    runs = {r["id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert runs[good]["status"] == "complete" and runs[bad]["status"] == "unreadable"
    assert main(["runs", "show", str(bad), "--db", str(db)]) == 2
    assert "unreadable" in capsys.readouterr().err


def test_huge_run_ids_and_unknown_kinds_are_one_line(tmp_path, capsys):
    db = tmp_path / "r.sqlite3"
    ResultsStore(db).record("summary", "zoo:x", None, {}, {"a": 1})
    assert main(["runs", "show", "99999999999999999999999", "--db", str(db)]) == 2
    assert "run ids are whole numbers" in capsys.readouterr().err
    assert main(["runs", "list", "--kind", "nonsense", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and "summary" in err and "compression" in err


READ_ONLY_LISTING = textwrap.dedent(
    """
    import json, os, sys
    from analysis.store.db import ResultsStore
    path = sys.argv[1]
    pid = os.fork()
    if pid == 0:  # a user who may read the store but not write it (root would write anyway)
        if os.getuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        try:
            runs = ResultsStore(path).list()
            print(json.dumps([r.id for r in runs]))
            ResultsStore(path).record("summary", "m", None, {}, {})
        except Exception as exc:
            print(type(exc).__name__, exc)
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    """
)


def test_a_read_only_store_can_be_listed():
    # Under /tmp itself: pytest's own temp folders are private to their owner, and the listing runs as
    # an unprivileged user when the tests run as root.
    folder = Path(tempfile.mkdtemp(prefix="workbench-ro-", dir="/tmp"))
    store = ResultsStore(folder / "results.sqlite3")
    ids = [store.record("summary", "zoo:x", None, {}, {"a": i}) for i in range(2)]
    (folder / "results.sqlite3").chmod(0o444)
    folder.chmod(0o555)
    try:
        result = subprocess.run(
            [sys.executable, "-c", READ_ONLY_LISTING, str(folder / "results.sqlite3")],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)
    listed, refused = result.stdout.splitlines()[:2]
    assert sorted(json.loads(listed)) == sorted(ids)
    assert refused.startswith("WorkbenchError") and "read-only" in refused


def test_a_zip_based_pt_data_file_is_sized_before_loading(tmp_path, monkeypatch):
    import torch

    path = tmp_path / "d.pt"
    torch.save({"x": torch.zeros(1024, 1, 64, 64), "y": torch.zeros(1024, dtype=torch.long)}, path)
    assert load_data(f"tensors:{path}").x.shape == (1024, 1, 64, 64)  # 16 MiB: within any real budget
    monkeypatch.setattr(analysis.limits, "memory_bytes", lambda: 16 * 2**20)  # budget: half, 8 MiB
    with pytest.raises(WorkbenchError, match="unpacks to"):
        load_data(f"tensors:{path}")
