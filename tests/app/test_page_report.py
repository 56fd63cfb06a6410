"""Report page: build from this session's results and any missing sweeps; four downloads and a preview."""

from __future__ import annotations

import json

import pytest
from apptools import assert_clean, open_page, submit


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    """Reports are recorded into a temporary results store."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))


def test_build_report_with_a_sweep_run_here():
    at = open_page("report")
    assert not at.get("download_button")
    at.multiselect(key="report_run").set_value(["quant"])
    submit(at, "Build report")
    assert_clean(at)
    labels = [d.label for d in at.get("download_button")]
    assert labels == ["Download HTML", "Download CSV", "Download JSON", "Download Markdown"]
    files = at.session_state["_result_report"]["result"]
    assert '<script src="http' not in files["html"] and "<script src='http" not in files["html"]
    assert "plotly" in files["html"].lower()
    payload = json.loads(files["json"])
    assert [s["kind"] for s in payload["sensitivity"]] == ["quant"]
    assert payload["summary"]["total"]["params"] == 197_674
    assert files["csv"].splitlines()[0] == "layer,kind,bits,accuracy,loss"
    assert "# Compression workbench report" in files["md"]
    assert len(at.get("iframe")) == 1


def test_report_includes_the_sweep_from_the_sensitivity_page():
    at = open_page("sensitivity")
    at.radio(key="sens_kind").set_value("unstructured")
    at.text_input(key="sens_ratios").set_value("0.5")
    submit(at, "Run sweep")
    at.switch_page("pages/report.py").run()
    assert "unstructured" not in at.multiselect(key="report_run").options
    submit(at, "Build report")
    assert_clean(at)
    payload = json.loads(at.session_state["_result_report"]["result"]["json"])
    assert [s["kind"] for s in payload["sensitivity"]] == ["unstructured"]


def test_the_report_times_the_sidebars_runtime_and_says_when_no_oracle_ran():
    import onnxruntime as ort

    at = open_page("rankings")
    at.multiselect(key="rank_criteria").set_value(["l1"])
    at.multiselect(key="rank_layers").set_value(["features.0"])
    at.checkbox(key="rank_oracle").uncheck()
    submit(at, "Rank channels")
    at.selectbox(key="runtime").set_value("onnxruntime").run()
    at.switch_page("pages/report.py").run()
    submit(at, "Build report")
    assert_clean(at)
    files = at.session_state["_result_report"]["result"]
    latency = json.loads(files["json"])["latency"]
    assert list(latency) == ["onnxruntime"] and latency["onnxruntime"]["runtime"] == "onnxruntime"
    assert f"onnxruntime {ort.__version__}" in files["html"]  # the latency section names the runtime timed
    assert "no oracle" in files["html"] and "oracle on 0" not in files["html"]
