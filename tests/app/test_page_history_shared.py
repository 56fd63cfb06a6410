"""History on a shared server (issue 20): a visitor sees only the runs their browser session made, no store
path, no server path or machine detail of any run, and no Delete. The same store in local mode shows every
run, so each absence below is the shared mode's doing."""

from __future__ import annotations

import json

import pytest
from apptools import assert_clean, open_page

from analysis import ResultsStore

SECRET = "/srv/secret-data/train.npz"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("WORKBENCH_UPLOAD_DIR", str(tmp_path / "uploads"))
    store = ResultsStore()
    environment = {"python": "3.11", "torch": "2.13", "platform": "Linux-secret-host", "cpu": "Secret CPU"}
    store.record("evaluation", "zoo:digits-cnn", f"tensors:{SECRET}", {}, {"accuracy": 0.5},
                 environment=environment)  # fmt: skip
    return store


def _texts(at) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "json") for e in at.get(kind)]
    return json.dumps(parts)


def _run_sweep(at) -> None:
    at.radio(key="sens_kind").set_value("quant")
    at.text_input(key="sens_bits").set_value("3")
    at.multiselect(key="sens_layers").set_value(["features.7"])
    [b for b in at.get("form_submit_button") if b.label == "Run sweep"][0].click()
    at.run()
    assert_clean(at)


def test_local_mode_shows_every_run_and_the_store(store):
    at = open_page("history")
    at.radio(key="hist_scope").set_value("All models").run()
    assert len(at.dataframe[0].value) == 1
    assert str(store.path) in _texts(at) and SECRET in _texts(at)
    assert any(b.label == "Delete" for b in at.button)


def test_shared_mode_shows_only_this_sessions_runs(store, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MODE", "shared")
    visitor = open_page("history")
    visitor.radio(key="hist_scope").set_value("All models").run()
    assert_clean(visitor)
    assert not visitor.dataframe  # the run recorded before this session is not listed
    text = _texts(visitor)
    assert str(store.path) not in text and "secret" not in text.lower()
    assert not any(b.label == "Delete" for b in visitor.button)

    maker = open_page("sensitivity")
    _run_sweep(maker)
    [sweep] = store.list(kind="sensitivity")
    maker.switch_page("pages/history.py").run()
    maker.radio(key="hist_scope").set_value("All models").run()
    assert_clean(maker)
    assert list(maker.dataframe[0].value["id"]) == [sweep.id]  # its own run, and only that
    assert not any(b.label == "Delete" for b in maker.button)
    [environment] = [e.value for e in maker.get("json")]
    shown = json.loads(environment) if isinstance(environment, str) else environment
    assert set(shown["environment"]) <= {"python", "torch", "onnxruntime", "torch_pruning", "threads"}
    assert str(store.path) not in _texts(maker)

    visitor.run()  # the other visitor still sees nothing, and is not offered the sweep as already recorded
    assert not visitor.dataframe
    other = open_page("sensitivity")
    _run_sweep(other)
    assert len(store.list(kind="sensitivity")) == 2  # computed and recorded for this visitor, not reused


@pytest.mark.parametrize("mode", ["local", "shared"])
def test_a_store_that_cannot_open_warns_without_its_path_when_shared(tmp_path, monkeypatch, mode):
    broken = tmp_path / "data"
    (broken / "results.sqlite3").mkdir(parents=True)  # a folder where the store's file should be
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(broken))
    monkeypatch.setenv("WORKBENCH_UPLOAD_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("WORKBENCH_MODE", mode)
    at = open_page("history")
    warnings = " ".join(w.value for w in at.warning)
    assert "Runs are not recorded" in warnings and "is a folder" in warnings
    assert (str(broken) in warnings.replace("\\", "")) is (mode == "local")
