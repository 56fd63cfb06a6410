"""The results store: exact round trips, concurrent writers, killed writers, migrations, MLflow, the runs CLI."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from analysis.errors import WorkbenchError
from analysis.progress.eta import RunTimer, sigint_stops
from analysis.store import SCHEMA_VERSION, ResultsStore, compare, model_fingerprint, plan_diff, weights_digest

ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

PLAN_A = {
    "default": {"prune": 0.0, "criterion": "l1", "structured": True, "bits": 32},
    "layers": {"features.0": {"prune": 0.5}, "classifier.2": {"bits": 8}},
    "finetune": {"epochs": 0, "distill": False},
}
PLAN_B = {
    "default": {"prune": 0.0, "criterion": "l1", "structured": True, "bits": 32},
    "layers": {"features.0": {"prune": 0.25, "criterion": "taylor"}},
    "finetune": {"epochs": 1, "distill": True},
}


def compression_result(plan: dict, acc_after: float, lat_after: float, runtimes: bool = False) -> dict:
    before = {
        "accuracy": 0.95,
        "loss": 0.2,
        "params": 1000,
        "macs": 40_000,
        "size_bytes": 4000,
        "latency_ms": 2.0,
    }
    after = {"accuracy": acc_after, "loss": 0.3, "params": 600, "macs": 20_000, "size_bytes": 2400}
    result = {
        "before": before,
        "after": after | {"latency_ms": lat_after},
        "plan": plan,
        "speedup": 2.0 / lat_after,
    }
    if runtimes:
        result["runtimes"] = {
            "eager": {"before": {"latency_ms": 2.0}, "after": {"latency_ms": lat_after}},
            "onnxruntime": {"before": {"latency_ms": 1.5}, "after": {"latency_ms": 0.5}},
        }
    return result


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    return ResultsStore(tmp_path)


def test_record_round_trips_exactly(store, tmp_path):
    params = {"ratios": [0.1, 0.2, 0.30000000000000004], "layers": ["features.0"], "nested": {"k": 1e-300}}
    result = {
        "kind": "structured",
        "baseline": {"accuracy": 0.9638, "loss": 0.11},
        "layers": {"features.0": {"ratios": [0.1, 0.2], "accuracy": [0.95, 0.1 + 0.2], "loss": [1, 2**62]}},
        "note": "ünïcode ✓",
        "empty": [],
        "flag": False,
    }
    t0 = datetime.now(UTC)
    run_id = store.record("sensitivity", "zoo:digits-cnn", "digits", params, result, fingerprint="abc")
    run = store.get(run_id)
    assert run.result == result and run.params == params  # floats come back bit for bit
    assert (run.kind, run.model, run.data, run.fingerprint, run.status) == (
        "sensitivity",
        "zoo:digits-cnn",
        "digits",
        "abc",
        "complete",
    )
    created = datetime.fromisoformat(run.created)
    assert created.utcoffset().total_seconds() == 0 and abs((created - t0).total_seconds()) < 30
    assert run.summary["baseline.accuracy"] == 0.9638 and "layers" not in run.summary
    assert (
        run.environment["torch"] == torch.__version__
        and run.environment["threads"] == torch.get_num_threads()
    )
    assert run.schema == SCHEMA_VERSION
    [info] = store.list()
    assert info.to_dict() == {
        k: v for k, v in run.to_dict().items() if k not in ("result", "environment", "schema")
    }

    with pytest.raises(WorkbenchError, match="does not exist"):  # a typo never creates folders
        store.export(run_id, tmp_path / "out" / "run.json")
    (tmp_path / "out").mkdir()
    out = store.export(run_id, tmp_path / "out" / "run.json")
    assert json.loads(out.read_text()) == json.loads(json.dumps(run.to_dict()))
    assert not list(out.parent.glob(".*tmp"))


def test_json_never_holds_nan(store):
    run_id = store.record(
        "compression", "m", None, {"x": float("inf")}, {"speedup": float("nan"), "v": [1.0, -math.inf]}
    )
    with sqlite3.connect(store.path) as conn:
        texts = conn.execute("SELECT params, summary, result FROM runs WHERE id = ?", (run_id,)).fetchone()

    def refuse(name):
        raise AssertionError(f"{name} in stored JSON")

    assert [json.loads(t, parse_constant=refuse) for t in texts] == [
        {"x": None},
        {"speedup": None},
        {"speedup": None, "v": [1.0, None]},
    ]


def test_list_filters_find_partial_and_delete(store):
    a = store.record("sensitivity", "m1", "digits", {"r": [0.5]}, {"a": 1}, fingerprint="f1")
    b = store.record(
        "sensitivity", "m1", "digits", {"r": [0.5]}, {"a": 2}, fingerprint="f1", status="partial"
    )
    c = store.record("ranking", "m2", "digits", {"c": "l1"}, {"a": 3}, fingerprint="f2")
    assert [r.id for r in store.list()] == [c, b, a]  # newest first
    assert [r.id for r in store.list(model="m1")] == [b, a]
    assert [r.id for r in store.list(kind="ranking")] == [c]
    assert [r.id for r in store.list(fingerprint="f1", kind="sensitivity")] == [b, a]
    assert {r.id: r.status for r in store.list()} == {a: "complete", b: "partial", c: "complete"}
    # find offers the complete run with the same parameters, whatever their key order; never the partial one
    assert store.find("sensitivity", "f1", {"r": [0.5]}).id == a
    assert store.find("sensitivity", "f1", {"r": [0.25]}) is None
    assert store.find("sensitivity", "f2", {"r": [0.5]}) is None
    assert store.find("sensitivity", "f1", {"r": [0.5]}, data="imagefolder:x") is None
    store.delete(a)
    assert store.find("sensitivity", "f1", {"r": [0.5]}) is None
    with pytest.raises(WorkbenchError, match="no run"):
        store.get(a)
    with pytest.raises(WorkbenchError, match="no run"):
        store.delete(a)
    with pytest.raises(WorkbenchError, match="status"):
        store.record("sensitivity", "m1", None, {}, {}, status="half")


def test_fingerprint_follows_spec_and_weights(cnn):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    fp = model_fingerprint("zoo:digits-cnn", cnn)
    assert fp == model_fingerprint("zoo:digits-cnn", copy.deepcopy(cnn))
    assert fp != model_fingerprint("other-spec", cnn)
    changed = copy.deepcopy(cnn)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-6
    assert fp != model_fingerprint("zoo:digits-cnn", changed)
    assert all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())  # the model was not touched
    # Reference: the same recipe by hand over numpy bytes (every tensor of this model is float32 or int64).
    ref = hashlib.sha256()
    for name, t in cnn.state_dict().items():
        ref.update(name.encode() + b"\0" + f"{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes())
    assert weights_digest(cnn) == ref.hexdigest()


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from analysis.store.db import ResultsStore
    path, tag, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    while not go.exists():  # both start together, racing to create and migrate the file too
        time.sleep(0.005)
    store = ResultsStore(path)
    for i in range(50):
        store.record("latency", "m-" + tag, None, {"i": i}, {"i": i, "tag": tag}, environment={})
    """
)


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    db = tmp_path / "shared.sqlite3"
    go = tmp_path / "go"
    # Separate interpreters (not fork: the test process may hold threads a forked child would inherit).
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), tag, str(go)], cwd=ROOT, stderr=subprocess.PIPE
        )
        for tag in ("a", "b")
    ]
    time.sleep(0.5)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    store = ResultsStore(db)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT model, params FROM runs").fetchall()
    got = sorted((model, json.loads(params)["i"]) for model, params in rows)
    assert got == sorted((f"m-{t}", i) for t in "ab" for i in range(50))
    assert store.integrity_check() == "ok"


KILLED = textwrap.dedent(
    """
    import sqlite3, sys, time
    from analysis.store import db
    armed = False
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        def trace(sql):
            # Called as each statement starts: the row is inserted, the COMMIT not yet run.
            if armed and sql.strip().upper() == "COMMIT":
                print("inside", flush=True)
                time.sleep(120)
        conn.set_trace_callback(trace)
        return conn

    db.sqlite3.connect = connect
    store = db.ResultsStore(sys.argv[1])
    store.record("sensitivity", "kept", None, {}, {"ok": True})
    armed = True
    store.record("sensitivity", "doomed", None, {}, {"big": list(range(200000))})
    """
)


def test_a_run_killed_mid_transaction_leaves_no_record_and_a_sound_file(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(tmp_path)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"inside", proc.stderr.read().decode()
        store = ResultsStore(tmp_path)
        assert [r.model for r in store.list()] == ["kept"]  # a reader never sees the uncommitted row
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    store = ResultsStore(tmp_path)
    assert [r.model for r in store.list()] == ["kept"]
    assert store.integrity_check() == "ok"
    new = store.record("sensitivity", "after", None, {}, {})  # the killed writer's lock is gone
    assert [r.model for r in store.list()] == ["after", "kept"] and store.get(new).model == "after"


def test_migrates_a_first_schema_file_keeping_its_rows(tmp_path):
    db = tmp_path / "old.sqlite3"
    # The first layout, written out here as it shipped (not taken from the code under test).
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, model TEXT NOT NULL, "
            "data TEXT, params TEXT NOT NULL DEFAULT '{}', result TEXT NOT NULL, created TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO runs (kind, model, data, params, result, created) VALUES (?, ?, ?, ?, ?, ?)",
            (
                "sensitivity",
                "zoo:digits-cnn",
                "digits",
                '{"r":[0.5]}',
                '{"a":1}',
                "2025-01-01T00:00:00+00:00",
            ),
        )
        conn.execute(
            "INSERT INTO runs (kind, model, data, params, result, created) VALUES (?, ?, ?, ?, ?, ?)",
            ("compression", "zoo:digits-mlp", None, "{}", '{"b":2}', "2025-01-02T00:00:00+00:00"),
        )
        conn.execute("PRAGMA user_version = 1")
    store = ResultsStore(db)
    assert store.schema_version() == SCHEMA_VERSION == 2
    old = store.get(1)
    assert (old.kind, old.model, old.data, old.params, old.result, old.created) == (
        "sensitivity",
        "zoo:digits-cnn",
        "digits",
        {"r": [0.5]},
        {"a": 1},
        "2025-01-01T00:00:00+00:00",
    )
    assert (old.status, old.fingerprint, old.summary, old.schema) == ("complete", None, {}, 1)
    assert [r.id for r in store.list()] == [2, 1]
    new = store.record("ranking", "zoo:digits-cnn", "digits", {}, {"c": 3}, fingerprint="f")
    assert new == 3 and store.get(new).schema == SCHEMA_VERSION
    with sqlite3.connect(db) as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(runs)")}
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    assert {"runs_by_model", "runs_by_lookup"} <= indexes
    with pytest.raises(WorkbenchError, match="newer"):
        ResultsStore(db)


def test_compare_and_plan_diff(store):
    a = store.record("compression", "m", "digits", {}, compression_result(PLAN_A, 0.93, 1.0))
    b = store.record("compression", "m", "digits", {}, compression_result(PLAN_B, 0.94, 1.6, runtimes=True))
    table = store.compare([a, b])
    assert table.loc[a, "accuracy after"] == 0.93 and table.loc[b, "accuracy before"] == 0.95
    assert table.loc[b, "accuracy change"] == pytest.approx(0.94 - 0.95)
    assert table.loc[a, "MAC reduction"] == 2.0 and table.loc[b, "size_bytes after"] == 2400
    assert table.loc[a, "latency_ms[eager] after"] == 1.0 and table.loc[a, "speedup[eager]"] == 2.0
    assert (
        table.loc[b, "latency_ms[onnxruntime] after"] == 0.5 and table.loc[b, "speedup[onnxruntime]"] == 3.0
    )
    assert math.isnan(table.loc[a, "latency_ms[onnxruntime] after"])  # a did not measure ONNX Runtime
    s = store.record("sensitivity", "m", "digits", {}, {})
    with pytest.raises(WorkbenchError, match="compression runs"):
        store.compare([a, s])

    diff = plan_diff({"A": PLAN_A, "B": PLAN_B})
    assert list(diff.index) == ["(default)", "features.0", "classifier.2"]
    assert diff.loc["features.0", ["prune [A]", "prune [B]"]].tolist() == [0.5, 0.25]
    assert diff.loc["features.0", ["criterion [A]", "criterion [B]"]].tolist() == ["l1", "taylor"]
    assert diff.loc["classifier.2", ["bits [A]", "bits [B]"]].tolist() == [8, 32]
    assert diff["differs"].tolist() == [False, True, True]
    assert list(plan_diff([PLAN_A, PLAN_A], only_differences=True).index) == []
    assert compare([store.get(a)]).index.tolist() == [a]
    assert store.compression_table(model="m").index.tolist() == [a, b]
    assert store.compression_table(model="nobody") is None


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path):
    bad = tmp_path / "results.sqlite3"
    bad.write_bytes(b"not a database at all, just text" * 100)
    with pytest.raises(WorkbenchError, match="cannot be read"):
        ResultsStore(bad)


def test_mlflow_logging_reads_back_from_a_local_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from analysis.store.mlflow_sink import log_compression, tracking_uri

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # set (and later restored) here, not by the sink
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    model = tmp_path / "model.pt"
    model.write_bytes(b"\x00weights")
    result = compression_result(PLAN_A, 0.93, 1.0) | {"speedup_paired": None, "efficiency": float("nan")}
    uri = tmp_path / "mlruns"
    run_id = log_compression(uri, PLAN_A, result, [report, model], tags={"model": "zoo:digits-cnn"})

    client = MlflowClient(tracking_uri=tracking_uri(uri))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["model"] == "zoo:digits-cnn"
    assert run.data.params == {
        "default.prune": "0.0",
        "default.criterion": "l1",
        "default.structured": "true",
        "default.bits": "32",
        "layers.features.0.prune": "0.5",
        "layers.classifier.2.bits": "8",
        "finetune.epochs": "0",
        "finetune.distill": "false",
    }
    metrics = run.data.metrics
    assert metrics["before.accuracy"] == 0.95 and metrics["after.accuracy"] == 0.93
    assert (
        metrics["after.latency_ms"] == 1.0 and metrics["before.macs"] == 40_000 and metrics["speedup"] == 2.0
    )
    assert "efficiency" not in metrics and "speedup_paired" not in metrics  # no NaN or None logged
    assert {a.path for a in client.list_artifacts(run_id)} == {"report.html", "model.pt"}
    local = Path(client.download_artifacts(run_id, "model.pt", str(tmp_path / "dl")))
    assert local.read_bytes() == b"\x00weights"


def test_record_command_honours_no_record(tmp_path, cnn):
    from analysis.store.recording import record_command

    args = argparse.Namespace(model="zoo:digits-cnn", db=str(tmp_path), no_record=False, mlflow=None)
    payload = {"accuracy": 0.9}
    run_id = record_command(args, "evaluate", cnn, "digits", {"batch_size": 256}, payload)
    run = ResultsStore(tmp_path).get(run_id)
    assert payload["run_id"] == run_id and run.fingerprint == model_fingerprint("zoo:digits-cnn", cnn)
    args.no_record = True
    assert record_command(args, "evaluate", cnn, "digits", {}, {"accuracy": 0.9}) is None
    assert len(ResultsStore(tmp_path).list()) == 1


def runs_cli(*args: str, data_dir: Path) -> subprocess.Popen:
    """`python -m analysis runs ...` started as a user starts it (call .communicate() for its output)."""
    return subprocess.Popen(
        [sys.executable, "-m", "analysis", "runs", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=ENV | {"WORKBENCH_DATA_DIR": str(data_dir)},
    )


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_runs_cli_list_show_compare_export_delete(tmp_path, monkeypatch, capsys):
    from analysis.__main__ import main

    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    store = ResultsStore()
    assert store.path == tmp_path / "results.sqlite3"
    result_a, result_b = compression_result(PLAN_A, 0.93, 1.0), compression_result(PLAN_B, 0.9, 1.6)
    a = store.record("compression", "zoo:digits-cnn", "digits", {"plan": "a"}, result_a)
    b = store.record("compression", "zoo:digits-cnn", "digits", {"plan": "b"}, result_b)
    s = store.record("sensitivity", "zoo:digits-mlp", "digits", {"kind": "quant"}, {"kind": "quant"})

    # Separate processes, found through WORKBENCH_DATA_DIR alone; the two readers run side by side.
    listing, compared = (
        runs_cli("list", data_dir=tmp_path),
        runs_cli("compare", str(a), str(b), data_dir=tmp_path),
    )
    runs = finish(listing)["runs"]
    assert [x["id"] for x in runs] == [s, b, a]
    assert set(runs[0]) >= {"id", "kind", "model", "data", "created", "params", "summary"}
    assert runs[1]["params"] == {"plan": "b"} and runs[1]["summary"]["after.accuracy"] == 0.9
    cmp = finish(compared)
    assert cmp["runs"] == [a, b]
    assert [row["accuracy after"] for row in cmp["table"]] == [0.93, 0.9]
    rows = {row["layer"]: row for row in cmp["plans"]}
    assert rows["features.0"][f"prune [run {a}]"] == 0.5 and rows["features.0"][f"prune [run {b}]"] == 0.25
    assert finish(runs_cli("delete", str(b), data_dir=tmp_path)) == {"deleted": b}
    assert [x.id for x in store.list()] == [s, a]

    # The other commands in-process: the same parser and handlers, without another interpreter start-up.
    listed = tmp_path / "l.json"
    assert (
        main(["runs", "list", "--kind", "compression", "--model", "zoo:digits-cnn", "--json", str(listed)])
        == 0
    )
    assert [x["id"] for x in json.loads(listed.read_text())["runs"]] == [a]
    capsys.readouterr()
    assert main(["runs", "show", str(a)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["result"] == result_a and shown["id"] == a and shown["status"] == "complete"
    out = tmp_path / "export" / "a.json"
    out.parent.mkdir()
    assert main(["runs", "export", str(a), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == shown
    capsys.readouterr()
    assert main(["runs", "show", str(b)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no run {b}" in err
    assert main(["runs", "compare", str(a)]) == 2 and "two or more" in capsys.readouterr().err


def test_run_timer_estimates_time_left():
    now = [100.0]
    timer = RunTimer(clock=lambda: now[0])
    seen = []
    progress = timer.wrap(lambda d, t: seen.append((d, t)))
    assert timer.eta_s is None and timer.describe() == "0:00 elapsed"
    now[0] = 110.0
    progress(2, 10)
    # 10 s for 2 of 10 units: 5 s a unit, 8 units left
    assert (timer.elapsed_s, timer.eta_s, seen) == (10.0, 40.0, [(2, 10)])
    assert timer.describe() == "0:10 elapsed, about 0:40 left"
    now[0] = 100.0 + 3725
    progress(10, 10)
    assert timer.eta_s == 0.0 and timer.describe() == "1:02:05 elapsed, about 0:00 left"


def test_first_ctrl_c_asks_to_stop_and_the_second_aborts():
    with sigint_stops(message="stopping") as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        assert should_stop()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100):  # the handler runs at the next bytecode boundary
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
