"""The command line on bad input, odd output targets, missing data, devices, Ray and the results store
(issues 11, 15 and 16). Most cases call `analysis.__main__.main` in this process (a subprocess costs
seconds); the ones that need a real process (Ctrl-C, imports) use one."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from analysis.__main__ import build_parser, main
from analysis.latency import LatencyResult

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, *args: str) -> tuple[int, str, list[str]]:
    """Exit code, standard output and the non-empty lines of standard error of one in-process run."""
    code = main(list(args))
    out, err = capsys.readouterr()
    # tqdm redraws with carriage returns and clears the bar at the end: only real lines count.
    lines = [
        line for line in err.replace("\r", "\n").splitlines() if line.strip().startswith(("error", "warn"))
    ]
    return code, out, lines


def _one_line_error(capsys, *args: str, needle: str) -> None:
    code, _, lines = _run(capsys, *args)
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines


@pytest.fixture
def store_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(path))
    return path


def _runs(capsys) -> list[dict]:
    assert main(["runs", "list"]) == 0
    return json.loads(capsys.readouterr().out)["runs"]


# --- "Command line, exit 0 on bad input" ------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_sensitivity_limit_below_one_is_one_line(capsys, tmp_path, limit):
    out = tmp_path / "x.json"
    _one_line_error(
        capsys,
        "sensitivity",
        "--model",
        "zoo:digits-mlp",
        f"--limit={limit}",
        "--json",
        str(out),
        needle="--limit",
    )
    assert not out.exists()


def test_evaluate_limit_zero_is_one_line(capsys):
    _one_line_error(capsys, "evaluate", "--model", "zoo:digits-mlp", "--limit", "0", needle="--limit")


def test_rank_with_nan_weights_exits_non_zero(capsys, tmp_path):
    """`rank` wrote NaN scores with exit 0: now one line, no JSON."""
    from safetensors.torch import save_file

    from analysis import load_model

    model = load_model("zoo:digits-cnn")
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    first = next(k for k in state if k.endswith("weight"))
    state[first][0].fill_(float("nan"))
    weights = tmp_path / "nan.safetensors"
    save_file(state, str(weights))
    out = tmp_path / "r.json"
    code, _, lines = _run(
        capsys, "rank", "--model", "zoo:digits-cnn", "--weights", str(weights), "--criteria", "l1 taylor",
        "--no-oracle", "--max-samples", "32", "--json", str(out),
    )  # fmt: skip
    assert code != 0 and len(lines) == 1 and "NaN" in lines[0], lines
    assert not out.exists()


def test_cuda_without_a_gpu_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for command in ("evaluate", "latency", "sensitivity", "rank"):
        _one_line_error(
            capsys, command, "--model", "zoo:digits-mlp", "--device", "cuda", needle="no CUDA GPU"
        )


def test_unknown_kind_and_criterion_are_one_line(capsys):
    _one_line_error(capsys, "report", "--model", "zoo:digits-mlp", "--kinds", "quant,bogus", needle="'bogus'")
    _one_line_error(
        capsys,
        "rank",
        "--model",
        "zoo:digits-mlp",
        "--criteria",
        "l1,nope",
        needle="importance criterion 'nope'",
    )


# --- One list syntax -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ratios,layers",
    [
        (["0.5,0.9"], ["net.1,net.5"]),
        (["0.5", "0.9"], ["net.1", "net.5"]),
        (["0.5,", "0.9"], ["net.1, net.5"]),
    ],
)
def test_sensitivity_lists_take_commas_and_spaces(capsys, ratios, layers):
    code, out, lines = _run(
        capsys, "sensitivity", "--model", "zoo:digits-mlp", "--kind", "unstructured", "--ratios", *ratios,
        "--layers", *layers, "--limit", "40", "--no-record",
    )  # fmt: skip
    assert code == 0, lines
    payload = json.loads(out)
    assert list(payload["layers"]) == ["net.1", "net.5"]
    assert payload["layers"]["net.1"]["ratios"] == [0.5, 0.9]


def test_bits_kinds_and_criteria_take_commas_and_spaces(capsys):
    code, out, _ = _run(
        capsys, "sensitivity", "--model", "zoo:digits-mlp", "--kind", "quant", "--bits", "4", "8,",
        "--layers", "net.1", "--limit", "40", "--no-record",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["layers"]["net.1"]["bits"] == [8, 4]
    code, out, _ = _run(
        capsys, "rank", "--model", "zoo:digits-cnn", "--criteria", "l1,taylor", "l2", "--no-oracle",
        "--max-samples", "32", "--no-record",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["criteria"] == ["l1", "l2", "taylor"]
    args = build_parser().parse_args(["report", "--kinds", "quant,", "structured"])
    from analysis.cli.common import list_names

    assert list_names(args.kinds, "--kinds") == ["quant", "structured"]


# --- Data silently substituted ---------------------------------------------------------------------


@pytest.fixture
def imagenet_like(tmp_path, monkeypatch):
    """A 1000-class model taking 3x64x64 inputs, as a user module in the working folder."""
    (tmp_path / "bigmodel1000.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(4, 1000))\n"
    )
    monkeypatch.chdir(tmp_path)
    return ["--model", "bigmodel1000:build", "--input-shape", "1,3,64,64"]


def test_model_without_data_is_not_evaluated_on_digits(capsys, imagenet_like, store_dir):
    code, out, lines = _run(capsys, "evaluate", *imagenet_like)
    assert code == 0
    payload = json.loads(out)
    assert payload["accuracy"] is None and payload["loss"] is None and payload["samples"] == 0
    assert "no --data" in payload["notes"][0]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "no --data" in lines[0]


def test_sweep_of_a_model_without_data_is_one_line(capsys, imagenet_like):
    for command in ("sensitivity", "rank"):
        _one_line_error(capsys, command, *imagenet_like, "--no-record", needle="give --data")


def test_digits_stay_the_default_for_zoo_and_digits_shaped_models(capsys, tmp_path, monkeypatch):
    code, out, _ = _run(capsys, "evaluate", "--model", "zoo:digits-mlp", "--limit", "20", "--no-record")
    assert code == 0 and json.loads(out)["data"] == "digits" and json.loads(out)["samples"] == 20
    (tmp_path / "tenway16.py").write_text(
        "from torch import nn\ndef build():\n    return nn.Sequential(nn.Flatten(), nn.Linear(256, 10))\n"
    )
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(
        capsys, "evaluate", "--model", "tenway16:build", "--input-shape", "1,1,16,16", "--no-record"
    )
    assert code == 0 and json.loads(out)["samples"] > 0


def test_limit_is_class_balanced(capsys):
    """`--limit 50` on the digits: 5 of each of the 10 classes (the first 50 would not be)."""
    from analysis import evaluate, load_data, load_model
    from analysis.data.stream import balanced_subset

    code, out, _ = _run(capsys, "evaluate", "--model", "zoo:digits-cnn", "--limit", "50", "--no-record")
    assert code == 0
    data = load_data("digits")
    index = balanced_subset(data.y, 50)
    assert torch.bincount(data.y[index], minlength=10).tolist() == [5] * 10
    model = load_model("zoo:digits-cnn")
    from dataclasses import replace

    reference = evaluate(model, replace(data, x=data.x[index], y=data.y[index]))
    assert json.loads(out)["accuracy"] == reference.accuracy and json.loads(out)["samples"] == 50


# --- Writes ----------------------------------------------------------------------------------------


def test_several_outputs_all_or_none(capsys, tmp_path, monkeypatch):
    """The report step fails: the CSV, Markdown and JSON next to it stay the old ones."""
    import analysis.cli.sensitivity as cli

    files = {name: tmp_path / name for name in ("o.json", "o.csv", "o.md", "o.html")}
    for path in files.values():
        path.write_text("old")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full while drawing the report")

    monkeypatch.setattr(cli, "build_report", broken)
    code, _, lines = _run(
        capsys, "sensitivity", "--model", "zoo:digits-mlp", "--kind", "quant", "--bits", "8", "--layers", "net.1",
        "--limit", "20", "--json", str(files["o.json"]), "--csv", str(files["o.csv"]),
        "--markdown", str(files["o.md"]), "--out", str(files["o.html"]), "--no-record",
    )  # fmt: skip
    assert code != 0 and len(lines) == 1 and "disk full" in lines[0]
    assert all(path.read_text() == "old" for path in files.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # no temp files left


def test_json_to_a_fifo_is_written_not_replaced(capsys, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    code = main(["summary", "--model", "zoo:digits-mlp", "--json", str(fifo), "--no-record"])
    reader.join(timeout=30)
    assert code == 0 and json.loads(got[0])["total"]["params"] > 0
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_json_dash_is_standard_output_and_modes_are_kept(capsys, tmp_path):
    code, out, _ = _run(capsys, "summary", "--model", "zoo:digits-mlp", "--json", "-", "--no-record")
    assert code == 0 and json.loads(out)["total"]["params"] > 0
    private = tmp_path / "p.json"
    private.write_text("{}")
    private.chmod(0o600)
    assert main(["summary", "--model", "zoo:digits-mlp", "--json", str(private), "--no-record"]) == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and "total" in private.read_text()
    frozen = tmp_path / "f.json"
    frozen.write_text("keep")
    frozen.chmod(0o444)
    _one_line_error(
        capsys,
        "summary",
        "--model",
        "zoo:digits-mlp",
        "--json",
        str(frozen),
        "--no-record",
        needle="read-only",
    )
    assert frozen.read_text() == "keep"


def test_noisy_latency_is_a_warning_on_stderr(capsys, monkeypatch):
    import analysis.cli.basic as basic

    noisy = LatencyResult.from_times([9.0, 51.3, 8.9, 204.0, 13.9, 9.6, 150.0, 15.2, 251.7, 10.0], 32, 1)
    monkeypatch.setattr(basic, "measure_latency", lambda *a, **k: noisy)
    code, out, lines = _run(capsys, "latency", "--model", "zoo:digits-mlp", "--no-record")
    assert code == 0 and json.loads(out)["noisy"] is True
    assert len(lines) == 1 and lines[0].startswith("warning: noisy timing")


# --- Ray and devices -------------------------------------------------------------------------------


def test_ray_option_parses():
    parser = build_parser()
    assert parser.parse_args(["sensitivity", "--ray"]).ray == ""
    assert parser.parse_args(["rank", "--ray", "auto"]).ray == "auto"
    assert parser.parse_args(["report", "--ray", "ray://head:10001"]).ray == "ray://head:10001"
    assert parser.parse_args(["sensitivity"]).ray is None


def test_ray_with_a_device_is_one_line(capsys):
    _one_line_error(
        capsys, "sensitivity", "--model", "zoo:digits-mlp", "--ray", "--device", "cpu", needle="local runs"
    )


def test_local_path_never_imports_ray(tmp_path):
    code = (
        "import sys; from analysis.__main__ import main; "
        "rc = main(['sensitivity', '--model', 'zoo:digits-mlp', '--kind', 'quant', '--bits', '8', '--layers', "
        "'net.1', '--limit', '20', '--no-record', '--device', 'cpu', '--json', sys.argv[1]]); "
        "print(rc, 'ray' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o.json")], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout.split() == ["0", "False"], proc.stderr[-2000:]


def test_device_cpu_gives_the_same_numbers(capsys):
    base = ["sensitivity", "--model", "zoo:digits-cnn", "--ratios", "0.5", "--limit", "60", "--no-record"]
    code, out, _ = _run(capsys, *base)
    code_cpu, out_cpu, _ = _run(capsys, *base, "--device", "cpu")
    assert code == code_cpu == 0
    a, b = json.loads(out), json.loads(out_cpu)
    assert a["layers"] == b["layers"] and a["baseline"] == b["baseline"]


# --- Results store ---------------------------------------------------------------------------------


def test_runs_are_recorded_by_default_and_listed(capsys, store_dir):
    assert _run(capsys, "evaluate", "--model", "zoo:digits-mlp", "--limit", "20")[0] == 0
    assert _run(capsys, "summary", "--model", "zoo:digits-mlp", "--no-record")[0] == 0
    runs = _runs(capsys)
    assert [(r["kind"], r["model"], r["status"]) for r in runs] == [
        ("evaluation", "zoo:digits-mlp", "complete")
    ]
    assert main(["runs", "show", str(runs[0]["id"])]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["result"]["samples"] == 20


def test_no_record_records_nothing(capsys, store_dir):
    for args in (["summary"], ["evaluate", "--limit", "10"], ["latency", "--runs", "3"]):
        assert _run(capsys, *args, "--model", "zoo:digits-mlp", "--no-record")[0] == 0
    assert _runs(capsys) == []


def test_ctrl_c_leaves_a_partial_record_and_valid_json(tmp_path):
    data_dir = tmp_path / "data"
    out = tmp_path / "s.json"
    ratios = ",".join(f"{r / 20:g}" for r in range(1, 20))
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis", "sensitivity", "--model", "zoo:digits-resnet", "--ratios", ratios,
         "--no-cache", "--limit", "120", "--json", str(out)],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), "WORKBENCH_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    seen = bytearray()
    started = threading.Event()

    def read() -> None:
        while chunk := os.read(proc.stderr.fileno(), 4096):
            seen.extend(chunk)
            if b"elapsed" in seen:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(240), seen.decode(errors="replace")[-2000:]
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=240)
    reader.join(timeout=10)
    err = seen.decode(errors="replace")
    assert code == 130, err[-2000:]
    payload = json.loads(out.read_text())
    assert payload["partial"] is True and 1 <= len(payload["layers"]) < 8
    from analysis.store import ResultsStore

    runs = ResultsStore(data_dir / "results.sqlite3").list(kind="sensitivity")
    assert len(runs) == 1 and runs[0].status == "partial"
    assert "Traceback" not in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sweep_ranking_and_finetune_on_cuda_match_cpu():
    """The device paths of the library (run wherever a GPU is available): same curves within float noise,
    the caller's model stays on the CPU, fine-tuning hands back a CPU model."""
    from analysis import load_data, load_model, rank_channels, sensitivity_sweep
    from analysis.compression.finetune import finetune
    from analysis.compression.plan import FinetuneSettings

    model, data = load_model("zoo:digits-resnet"), load_data("digits").subset(128)
    cpu = sensitivity_sweep(model, data, ratios=[0.3, 0.6])
    gpu = sensitivity_sweep(model, data, ratios=[0.3, 0.6], device="cuda")
    for name, curve in cpu.layers.items():
        assert gpu.layers[name].accuracy == pytest.approx(curve.accuracy, abs=2 / 128)
    a = rank_channels(model, data, criteria=["apoz", "taylor"], max_samples=64)
    b = rank_channels(model, data, criteria=["apoz", "taylor"], max_samples=64, device="cuda")
    for c in ("apoz", "taylor", "oracle"):
        for name, t in a.scores(c).items():
            assert torch.allclose(b.scores(c)[name].cpu(), t, rtol=1e-3, atol=1e-4)
    tuned = finetune(model, data, FinetuneSettings(epochs=1), device="cuda")
    assert next(tuned.model.parameters()).device.type == "cpu"
    assert next(model.parameters()).device.type == "cpu"
