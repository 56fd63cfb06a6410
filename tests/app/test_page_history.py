"""History page: runs written to a temporary results store are listed, filtered, compared, re-opened (without
recomputing), exported and deleted."""

from __future__ import annotations

import pytest
from apptools import assert_clean, charts, click, open_page

from analysis import ResultsStore, load_data, load_model, sensitivity_sweep
from analysis.store import model_fingerprint

MODEL = "zoo:digits-cnn"  # the app's default model


def _compression(acc_before, acc_after, ms_before, ms_after, macs_after, plan) -> dict:
    before = {"accuracy": acc_before, "loss": 0.1, "params": 1000, "macs": 4000, "size_bytes": 4000,
              "latency_ms": ms_before, "runtime": "eager"}  # fmt: skip
    after = {"accuracy": acc_after, "loss": 0.2, "params": 600, "macs": macs_after, "size_bytes": 2400,
             "latency_ms": ms_after, "runtime": "eager"}  # fmt: skip
    return {"before": before, "after": after, "plan": plan}


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))
    return ResultsStore()


@pytest.fixture(scope="module")
def fingerprint():
    return model_fingerprint(MODEL, load_model(MODEL))


def _fill(store, fingerprint) -> dict[str, int]:
    plan_a = {"default": {"prune": 0.25, "criterion": "l1"}, "layers": {"features.0": {"prune": 0.5}}}
    plan_b = {"default": {"prune": 0.25, "criterion": "l1"}, "layers": {"features.0": {"bits": 8}}}
    ids = {
        "a": store.record("compression", MODEL, "digits", {"plan": plan_a},
                          _compression(0.99, 0.97, 8.0, 4.0, 2000, plan_a), fingerprint=fingerprint),
        "b": store.record("compression", MODEL, "digits", {"plan": plan_b},
                          _compression(0.99, 0.985, 8.0, 5.0, 3000, plan_b), fingerprint=fingerprint),
        "other": store.record("compression", "zoo:digits-mlp", "digits", {},
                              _compression(0.9, 0.8, 2.0, 1.0, 100, plan_a), fingerprint="f" * 64),
        "eval": store.record("evaluate", MODEL, "digits", {}, {"accuracy": 0.99}, fingerprint=fingerprint,
                             status="partial"),
    }  # fmt: skip
    return ids


def _runs(at):
    return at.dataframe[0].value


def test_lists_filters_and_compares_two_compressions(store, fingerprint):
    ids = _fill(store, fingerprint)
    at = open_page("history")
    assert sorted(_runs(at)["id"]) == sorted([ids["a"], ids["b"], ids["eval"]])  # this model only
    at.radio(key="hist_scope").set_value("All models").run()
    assert sorted(_runs(at)["id"]) == sorted(ids.values())
    at.multiselect(key="hist_status").set_value(["partial"]).run()
    assert list(_runs(at)["id"]) == [ids["eval"]]
    at.multiselect(key="hist_status").set_value([]).run()
    at.multiselect(key="hist_kinds").set_value(["compression"]).run()
    at.multiselect(key="hist_models").set_value([MODEL]).run()
    assert sorted(_runs(at)["id"]) == [ids["a"], ids["b"]]

    # The pickers name each run by more than its id: kind, model and headline numbers.
    label = next(o for o in at.multiselect(key="hist_compare").options if o.startswith(f"#{ids['a']} "))
    assert "compression" in label and MODEL in label and "99.00% -> 97.00%" in label
    at.multiselect(key="hist_compare").set_value([ids["a"], ids["b"]]).run()
    assert_clean(at)
    side = at.dataframe[1].value.set_index("metric")
    a, b = f"#{ids['a']}", f"#{ids['b']}"
    assert side.loc["accuracy after", a] == pytest.approx(0.97)
    assert side.loc["accuracy after", b] == pytest.approx(0.985)
    assert side.loc["latency_ms[eager] after", a] == pytest.approx(4.0)
    assert side.loc["speedup[eager]", a] == pytest.approx(2.0)  # 8 ms -> 4 ms
    assert side.loc["MAC reduction", b] == pytest.approx(4000 / 3000)
    assert side.loc["accuracy change", a] == pytest.approx(-0.02)
    diff = at.dataframe[2].value.set_index("layer")
    assert diff.loc["features.0", f"prune [{a}]"] == 0.5
    assert diff.loc["features.0", f"prune [{b}]"] == 0.25  # the default applies to b's layer
    assert diff.loc["features.0", f"bits [{b}]"] == 8
    assert bool(diff.loc["features.0", "differs"]) and not bool(diff.loc["(default)", "differs"])
    fig = charts(at)[0].proto.spec
    assert "Accuracy vs latency" in fig  # the scatter over every recorded plan of this model


def test_export_and_delete(store, fingerprint):
    ids = _fill(store, fingerprint)
    at = open_page("history")
    at.selectbox(key="hist_run").set_value(ids["b"]).run()
    export = [d for d in at.get("download_button") if d.label == "Export (JSON)"]
    assert export
    click(at, "Delete")
    assert_clean(at)
    assert ids["b"] not in [r.id for r in store.list()]
    assert ids["b"] not in list(_runs(at)["id"])


def test_reopen_a_recorded_sweep_without_recomputing(store, fingerprint, monkeypatch):
    import analysis

    model = load_model(MODEL)
    sweep = sensitivity_sweep(model, load_data("digits", model.input_shape), kind="quant", bits=[4, 2],
                              layers=["features.7"])  # fmt: skip
    params = {"kind": "quant", "ratios": None, "bits": [4, 2], "layers": ["features.7"], "max_drop": None}
    run_id = store.record("sensitivity", MODEL, "digits", params, sweep.to_dict(), fingerprint=fingerprint)

    def refuse(*args, **kwargs):
        raise AssertionError("the recorded sweep was computed again")

    monkeypatch.setattr(analysis, "sensitivity_sweep", refuse)
    at = open_page("history")
    at.selectbox(key="hist_run").set_value(run_id).run()
    click(at, "Open in Sensitivity")
    assert_clean(at)
    assert at.title[0].value == "Sensitivity"
    assert len(charts(at)) == 2
    shown = at.session_state["_result_sensitivity"]["result"]
    assert shown.layers["features.7"].accuracy == sweep.layers["features.7"].accuracy
    assert any(f"#{run_id}" in i.value for i in at.info)
    # The form shows what the sweep was: its kind (not the radio's first option), bits and layers.
    assert at.radio(key="sens_kind").value == "quant"
    assert at.text_input(key="sens_bits").value == "4, 2"
    assert at.multiselect(key="sens_layers").value == ["features.7"]


def test_sweep_with_recorded_parameters_is_not_computed_again(store, monkeypatch):
    import analysis

    calls = []
    real = analysis.sensitivity_sweep

    def counting(*args, **kwargs):
        calls.append(kwargs.get("bits"))
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "sensitivity_sweep", counting)
    at = open_page("sensitivity")
    at.radio(key="sens_kind").set_value("quant")
    at.text_input(key="sens_bits").set_value("3")
    at.multiselect(key="sens_layers").set_value(["features.7"])
    [b for b in at.get("form_submit_button") if b.label == "Run sweep"][0].click()
    at.run()
    [run] = store.list(kind="sensitivity")
    assert run.status == "complete" and run.params["bits"] == [3] and calls == [[3]]
    fresh = open_page("sensitivity")  # another session: nothing cached in it
    fresh.radio(key="sens_kind").set_value("quant")
    fresh.text_input(key="sens_bits").set_value("3")
    fresh.multiselect(key="sens_layers").set_value(["features.7"])
    [b for b in fresh.get("form_submit_button") if b.label == "Run sweep"][0].click()
    fresh.run()
    assert calls == [[3]] and len(charts(fresh)) == 2
    click(fresh, "Recompute")
    assert calls == [[3], [3]]
    assert len(store.list(kind="sensitivity")) == 2
