"""Reports: self-contained HTML, CSV/JSON/Markdown writers, atomic files, and the CLI commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from analysis.report.files import markdown_summary, safe_ratio_table, write_csv, write_json, write_markdown
from analysis.report.html import build_report
from analysis.sensitivity.sweep import SensitivityResult, sensitivity_sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mlp():
    from analysis import load_model

    return load_model("zoo:digits-mlp")


@pytest.fixture(scope="module")
def sweeps(mlp, digits):
    data = digits.subset(96)
    return [
        sensitivity_sweep(mlp, data, kind="structured", ratios=(0.25, 0.5, 0.9)),
        sensitivity_sweep(mlp, data, kind="quant", bits=(2, 4)),
    ]


def test_html_is_self_contained(tmp_path, mlp, digits, sweeps):
    out = build_report(
        mlp, digits.subset(96), tmp_path / "r.html", sensitivity=sweeps, model_spec="zoo:digits-mlp"
    )
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\ssrc\s*=", text, flags=re.I)  # nothing loaded, http or otherwise
    assert not re.search(r"<link[^>]*href\s*=\s*['\"]?https?:", text, flags=re.I)
    assert text.count("* plotly.js v") == 1  # the library inlined exactly once
    import torch

    assert f"torch {torch.__version__}" in text and "threads" in text  # the environment line
    for name in ("net.1", "net.3", "net.5"):
        assert name in text
    # the app's labels (issue 10: the report used to say "max safe ratio @ 1% drop")
    assert "max ratio @ 1 pt" in text and "max ratio @ 2 pt" in text
    assert "min bits @ 1 pt" in text
    assert "FLOPs" in text and "MACs" in text
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temp file left behind


def test_safe_table_uses_the_results_own_answers(sweeps):
    structured, quant = sweeps
    table = safe_ratio_table(structured)
    for _, row in table.iterrows():
        assert row["max ratio @ 1 pt"] == structured.max_safe_ratio(row["layer"], 0.01)
        assert row["max ratio @ 2 pt"] == structured.max_safe_ratio(row["layer"], 0.02)
    assert list(safe_ratio_table(quant)["layer"]) == list(quant.layers)


def test_csv_json_markdown(tmp_path, sweeps):
    structured, quant = sweeps
    frame = pd.read_csv(write_csv(sweeps, tmp_path / "s.csv"))
    assert list(frame.columns) == ["layer", "kind", "ratio", "bits", "accuracy", "loss"]
    assert len(frame) == sum(len(c.values) for r in sweeps for c in r.layers.values())
    one = frame[(frame.layer == "net.1") & (frame.kind == "structured")]
    assert list(one.accuracy) == pytest.approx(list(structured.layers["net.1"].accuracy), abs=1e-12)
    again = SensitivityResult.from_dict(json.loads(write_json(quant, tmp_path / "q.json").read_text()))
    assert again == quant
    md = write_markdown(sweeps, tmp_path / "s.md").read_text()
    assert f"{structured.baseline_accuracy:.4f}" in md
    assert "| layer |" in md and "net.3" in md
    assert markdown_summary(quant).count("\n| net.") == len(quant.layers)


def test_failed_write_leaves_no_file(tmp_path, mlp, digits, sweeps, monkeypatch):
    """A crash while writing leaves neither a half-written report nor a temp file."""
    import analysis.report.html as report

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "section_rankings", boom)
    with pytest.raises(RuntimeError):
        build_report(mlp, digits.subset(96), tmp_path / "r.html", sensitivity=sweeps, rankings=object())
    monkeypatch.undo()
    target = tmp_path / "w.csv"

    def half_then_fail(path, text):
        from analysis.io import write_atomic

        def write(tmp):
            tmp.write_text(text[:10])
            raise OSError("disk full")

        return write_atomic(path, write)

    import analysis.report.files as files

    monkeypatch.setattr(files, "write_text_atomic", half_then_fail)
    with pytest.raises(OSError):
        write_csv(sweeps, target)
    assert list(tmp_path.iterdir()) == []


def test_no_rankings_section_without_rankings(tmp_path, mlp, digits, sweeps):
    text = build_report(mlp, digits.subset(96), tmp_path / "r.html", sensitivity=sweeps[:1]).read_text()
    assert "Filter importance rankings" not in text and "Sensitivity: structured" in text


def test_cli_sensitivity_writes_json_csv_and_html(tmp_path):
    proc = run_cli(
        "sensitivity", "--model", "zoo:digits-mlp", "--kind", "unstructured", "--ratios", "0.5,0.9",
        "--layers", "net.1,net.5", "--limit", "64", "--json", "out.json", "--csv", "out.csv",
        "--out", "out.html", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    payload = json.loads((tmp_path / "out.json").read_text())
    assert payload["kind"] == "unstructured" and set(payload["baseline"]) == {"accuracy", "loss"}
    assert list(payload["layers"]) == ["net.1", "net.5"]
    assert payload["layers"]["net.1"]["ratios"] == [0.5, 0.9]
    assert len(pd.read_csv(tmp_path / "out.csv")) == 4
    assert "<script src" not in (tmp_path / "out.html").read_text()


def test_cli_bad_ratio_is_one_line(tmp_path):
    proc = run_cli(
        "sensitivity", "--model", "zoo:digits-mlp", "--ratios", "0.2,1.5", "--json", "x.json", cwd=tmp_path
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "ratio 1.5 is outside [0, 1)" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "quant", "--bits", "4,20"], "bit width 20 is outside 2..16"),
        (["--kind", "quant", "--bits", "4,x"], "'x' is not a number"),
        (["--layers", "net.1,nope"], "no layer named 'nope'"),
        (["--kind", "unstructured", "--layers", "net.0"], "is a Flatten"),
    ],
)
def test_cli_bad_input_in_process(tmp_path, capsys, args, message):
    """The same CLI entry point in this process (a subprocess per case would cost seconds each)."""
    from analysis.__main__ import main

    code = main(["sensitivity", "--model", "zoo:digits-mlp", *args, "--json", str(tmp_path / "x.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and message in err[0]
    assert not (tmp_path / "x.json").exists()


def test_cli_report(tmp_path):
    proc = run_cli(
        "report", "--model", "zoo:digits-mlp", "--out", "r.html", "--kinds", "quant,structured",
        "--limit", "64", "--no-latency", "--no-rankings", "--json", "r.json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    payload = json.loads((tmp_path / "r.json").read_text())
    assert {"sensitivity:quant", "sensitivity:structured"} <= set(payload["sections"])
    text = (tmp_path / "r.html").read_text()
    assert "Sensitivity: quant" in text and "Sensitivity: structured" in text
    assert not re.search(r"<script[^>]*\ssrc\s*=", text)
