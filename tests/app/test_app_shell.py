"""The app shell: shared mode refuses what could run code or read server files, and form values survive pages.

Shared mode is set the way an operator sets it, in the server's environment (`WORKBENCH_MODE=shared`); the
"browser" here is AppTest's widget values, including forged ones a modified client could send.
"""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from apptools import APP, TIMEOUT, assert_clean, shown
from safetensors.torch import save as save_safetensors
from streamlit.testing.v1 import AppTest
from torch import nn

from analysis import WorkbenchError, load_model


def _app(monkeypatch, mode: str | None) -> AppTest:
    if mode is None:
        monkeypatch.delenv("WORKBENCH_MODE", raising=False)
    else:
        monkeypatch.setenv("WORKBENCH_MODE", mode)
    monkeypatch.delenv("WORKBENCH_ARCHITECTURES", raising=False)
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def _errors(at: AppTest) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    return [shown(e.value) for e in at.error]


def _refused(at: AppTest) -> None:
    """The run ended at Streamlit's own file-type check, before any of the app's code read the file."""
    assert at.exception and "Invalid file extension" in at.exception[0].value, at.exception
    assert not at.metric


def _params(at: AppTest) -> str:
    return next(m.value for m in at.metric if m.label == "Parameters")


def _param_count(spec: str) -> str:
    return f"{sum(p.numel() for p in load_model(spec).parameters()):,}"


def test_shared_mode_offers_only_safe_sources(monkeypatch):
    at = _app(monkeypatch, "shared").run()
    assert_clean(at)
    assert at.radio(key="model_source").options == ["Zoo"]
    assert at.radio(key="data_source").options == ["digits", "Upload tensors"]
    assert not [t for t in at.sidebar.text_input if t.key in ("callable_spec", "data_spec", "ray_address")]
    assert not [c for c in at.sidebar.checkbox if c.key == "trust_pickle"]


def test_shared_mode_ignores_forged_pickle_callable_and_server_path_values(monkeypatch):
    at = _app(monkeypatch, "shared").run()
    # What a modified browser could send: values for widgets the shared page never draws (a radio sends an
    # index into the options it was given, so it cannot name a source the page did not offer).
    at.session_state["trust_pickle"] = True
    at.session_state["callable_spec"] = "os:abort"  # would kill the server if it were called
    at.session_state["data_spec"] = "imagefolder:/root"
    at.session_state["ray_address"] = "evil.example:10001"
    at.run()
    assert_clean(at)
    assert at.radio(key="model_source").value == "Zoo"
    assert at.radio(key="data_source").value == "digits"
    assert _params(at) == _param_count("zoo:digits-cnn")  # the zoo model, on the digits
    assert "digits" in at.caption[0].value


def test_shared_mode_check_refuses_pickle_callable_and_path_specs(monkeypatch):
    """The last line of defence every page goes through (`_shared.workbench` -> `check_spec`)."""
    from analysis import WorkbenchError
    from analysis.app_support import WorkbenchSpec
    from pages import _serving

    monkeypatch.setenv("WORKBENCH_MODE", "shared")
    for spec in (
        WorkbenchSpec(model="/tmp/model.pt", trust_pickle=True),
        WorkbenchSpec(model="os:abort"),
        WorkbenchSpec(data="imagefolder:/root"),
        WorkbenchSpec(data="tensors:/etc/passwd"),
        WorkbenchSpec(ray_address="auto"),
    ):
        with pytest.raises(WorkbenchError, match="shared"):
            _serving.check_spec(spec)


def test_shared_mode_refuses_an_uploaded_pickle(monkeypatch):
    at = _app(monkeypatch, "shared").run()
    buffer = io.BytesIO()
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(256, 10)), buffer)  # a whole pickled module
    at.sidebar.get("file_uploader")[0].upload("model.pt", buffer.getvalue())
    # The uploader only takes .safetensors in shared mode: Streamlit refuses the file before the app sees it.
    _refused(at.run())
    at = _app(monkeypatch, "shared").run()
    # A pickle renamed .safetensors is not read as a pickle: the safetensors parser refuses it.
    at.sidebar.get("file_uploader")[0].upload("model.safetensors", pickle.dumps({"x": 1}))
    errors = _errors(at.run())
    assert errors and not at.expander
    assert "/" not in errors[0], errors[0]  # no server paths in a shared server's messages


def test_shared_mode_refuses_uploaded_pickled_tensors(monkeypatch):
    at = _app(monkeypatch, "shared").run()
    at.radio(key="data_source").set_value("Upload tensors").run()
    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(4, 1, 16, 16), "y": torch.zeros(4, dtype=torch.long)}, buffer)
    at.sidebar.get("file_uploader")[-1].upload("data.pt", buffer.getvalue())
    _refused(at.run())


def test_shared_mode_loads_uploaded_safetensors_weights(monkeypatch):
    at = _app(monkeypatch, "shared").run()
    model = load_model("zoo:digits-cnn")
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    at.sidebar.get("file_uploader")[0].upload("zeros.safetensors", save_safetensors(state))
    at.run()
    assert_clean(at)
    # All-zero weights give one class everywhere: the accuracy is that class's share, not the zoo's 99%.
    accuracy = next(m.value for m in at.metric if m.label == "Accuracy (top-1)")
    assert float(accuracy.rstrip("%")) < 50


def test_local_mode_still_offers_everything(monkeypatch):
    at = _app(monkeypatch, None).run()
    assert at.radio(key="model_source").options == ["Zoo", "Python callable", "torchvision", "Pickled module"]
    assert at.radio(key="data_source").options == ["digits", "Upload tensors", "Path"]


def test_errors_show_as_text_not_markdown(monkeypatch):
    at = _app(monkeypatch, None).run()
    at.radio(key="model_source").set_value("Python callable").run()
    at.text_input(key="callable_spec").set_value("torch.nn:Linear")  # Linear() needs its sizes
    at.run()
    errors = _errors(at)
    assert errors and "Linear.__init__()" in errors[0]
    # The body sent to the browser escapes Markdown, so the underscores are not read as bold markers.
    assert "\\_\\_init\\_\\_" in at.error[0].value


def test_values_survive_a_page_switch_and_a_bad_spec(monkeypatch):
    at = _app(monkeypatch, None).run()
    at.number_input(key="batch_size").set_value(8).run()
    at.switch_page("pages/overview.py").run()
    at.slider(key="overview_runs").set_value(5).run()
    assert_clean(at)
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/overview.py").run()
    assert at.slider(key="overview_runs").value == 5
    assert at.number_input(key="batch_size").value == 8
    # A bad spec stops the page before its slider; the value comes back with the good spec.
    at.radio(key="model_source").set_value("Python callable").run()
    at.text_input(key="callable_spec").set_value("no_such_module_xyz:build").run()
    assert _errors(at)
    at.radio(key="model_source").set_value("Zoo").run()
    assert_clean(at)
    assert at.slider(key="overview_runs").value == 5
    # Another model: the page's values start afresh, the sidebar's stay.
    at.selectbox(key="zoo_name").set_value("digits-mlp").run()
    assert at.slider(key="overview_runs").value == 10
    assert at.number_input(key="batch_size").value == 8


def _runtime_rows(at: AppTest) -> list[dict]:
    frame = next(d.value for d in at.dataframe)
    return frame.to_dict("records")


def test_home_times_each_runtime_and_survives_an_export_failure(monkeypatch):
    import streamlit as st

    import analysis.runtime.onnx as onnx

    st.cache_resource.clear()  # the prepared runtimes of earlier tests in this process
    at = _app(monkeypatch, None).run()
    at.number_input(key="batch_size").set_value(4).run()
    assert_clean(at)
    rows = _runtime_rows(at)
    assert [r["runtime"] for r in rows] == ["eager", "onnxruntime"]
    assert all(r["batch"] == 4 and r["p10 ms"] <= r["median ms"] <= r["p90 ms"] for r in rows)
    assert rows[1]["provider"] == "CPUExecutionProvider"
    help_text = next(m.help for m in at.metric if m.label == "Latency (median)")
    assert "eager" in help_text and "batch 4" in help_text and "p90/p10" in help_text

    def broken(*args, **kwargs):
        raise WorkbenchError("cannot export to ONNX: operator aten::weird is not supported")

    st.cache_resource.clear()
    monkeypatch.setattr(onnx, "export_onnx", broken)
    at = _app(monkeypatch, None).run()
    at.number_input(key="batch_size").set_value(5).run()  # a batch size no earlier run has cached
    assert_clean(at)
    rows = _runtime_rows(at)
    assert rows[0]["runtime"] == "eager" and rows[0]["median ms"] > 0
    assert "aten::weird" in str(rows[1].get("note"))
    assert any("aten::weird" in shown(c.value) for c in at.caption)
    st.cache_resource.clear()


def test_shared_mode_loads_uploaded_npz_data_and_shows_no_server_path(monkeypatch):
    import numpy as np

    from analysis import load_data

    data = load_data("digits", (1, 16, 16))
    buffer = io.BytesIO()
    np.savez(buffer, x=data.x[:64].numpy(), y=data.y[:64].numpy())
    at = _app(monkeypatch, "shared").run()
    at.radio(key="data_source").set_value("Upload tensors").run()
    at.sidebar.get("file_uploader")[-1].upload("digits.npz", buffer.getvalue())
    at.run()
    assert_clean(at)
    assert next(m.help for m in at.metric if m.label == "Accuracy (top-1)") == "on 64 evaluation samples"
    caption = at.caption[0].value
    assert "tensors:" in caption and ".npz" in caption and "/" not in caption.split("on data")[1], caption
