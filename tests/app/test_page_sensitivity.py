"""Sensitivity page: run sweeps from the form, check a point against a plain quantize-and-evaluate loop."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from apptools import assert_clean, charts, open_page, shown, submit

from analysis import load_data, load_model


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    """Each test records into its own results store."""
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path / "data"))


def _plain_quant_accuracy(layer: str, bits: int) -> float:
    """Accuracy with `layer`'s weights rounded to a symmetric per-output-channel grid, by a plain loop."""
    model = copy.deepcopy(load_model("zoo:digits-cnn"))
    data = load_data("digits", model.input_shape)
    w = model.get_submodule(layer).weight
    q = 2 ** (bits - 1) - 1
    with torch.no_grad():
        scale = w.abs().reshape(w.shape[0], -1).max(dim=1).values / q
        shape = (-1,) + (1,) * (w.dim() - 1)
        w.copy_(torch.clamp(torch.round(w / scale.reshape(shape)), -q, q) * scale.reshape(shape))
        return (model(data.x).argmax(1) == data.y).sum().item() / len(data.y)


def test_quant_sweep_matches_a_plain_loop_and_draws_charts():
    at = open_page("sensitivity")
    assert not charts(at)
    at.radio(key="sens_kind").set_value("quant")
    at.text_input(key="sens_bits").set_value("8, 3")
    at.multiselect(key="sens_layers").set_value(["features.0", "classifier.0"])
    submit(at, "Run sweep")
    assert_clean(at)
    assert len(charts(at)) == 2  # curves + heatmap
    result = at.session_state["_result_sensitivity"]["result"]
    points = result.to_frame().set_index(["layer", "bits"])
    assert abs(points.loc[("features.0", 3), "accuracy"] - _plain_quant_accuracy("features.0", 3)) < 1e-9
    safe = at.dataframe[0].value.set_index("layer")
    assert list(safe.index) == ["features.0", "classifier.0"]
    labels = [d.label for d in at.get("download_button")]
    assert "Download all points (CSV)" in labels and "Download JSON" in labels


def test_structured_sweep_names_group_members_and_bad_ratios_show_an_error():
    at = open_page("sensitivity")
    at.text_input(key="sens_ratios").set_value("0.25, 0.5")
    at.multiselect(key="sens_layers").set_value(["features.10"])
    submit(at, "Run sweep")
    assert_clean(at)
    safe = at.dataframe[0].value.set_index("layer")
    assert "features.10" in safe.loc["features.10", "members"]
    assert "classifier.0" in safe.loc["features.10", "members"]  # the next layer loses its inputs too
    at.text_input(key="sens_ratios").set_value("0.5, 1.5")
    submit(at, "Run sweep")
    assert not at.exception
    assert "outside [0, 1)" in shown(at.error[0].value)


def test_reruns_do_not_sweep_again(monkeypatch):
    import analysis

    calls = []
    real = analysis.sensitivity_sweep

    def counting(*args, **kwargs):
        calls.append(kwargs.get("bits"))
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "sensitivity_sweep", counting)  # the page imports the public name
    at = open_page("sensitivity")
    at.radio(key="sens_kind").set_value("quant")
    at.text_input(key="sens_bits").set_value("5")
    at.multiselect(key="sens_layers").set_value(["features.7"])
    submit(at, "Run sweep")
    assert len(calls) == 1
    at.text_input(key="sens_bits").set_value("4")  # edited, not submitted
    at.run()
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/sensitivity.py").run()
    assert len(calls) == 1 and len(charts(at)) == 2  # the result is kept, nothing recomputed
    at.text_input(key="sens_bits").set_value("5")
    at.radio(key="sens_kind").set_value("quant")
    at.multiselect(key="sens_layers").set_value(["features.7"])
    submit(at, "Run sweep")  # same parameters: from the cache
    assert len(calls) == 1
    at.text_input(key="sens_bits").set_value("4")
    submit(at, "Run sweep")
    assert calls == [[5], [4]]
    assert_clean(at)


def test_lowrank_kind_draws_accuracy_and_macs_saved():
    at = open_page("sensitivity")
    at.radio(key="sens_kind").set_value("lowrank")
    at.text_input(key="sens_ranks").set_value("0.5, 0.25")
    at.multiselect(key="sens_layers").set_value(["classifier.0"])
    submit(at, "Run sweep")
    assert_clean(at)
    assert len(charts(at)) == 2  # accuracy + MACs saved, heatmap
    fig = json.loads(charts(at)[0].proto.spec)
    # Two panels (accuracy above, MACs saved below), each with its own axis: no axis overlays another.
    assert not any("overlaying" in v for k, v in fig["layout"].items() if k.startswith("yaxis"))
    assert [t["name"] for t in fig["data"] if t.get("showlegend", True)] == [
        "classifier.0"
    ]  # one entry a layer
    assert json.loads(at.dataframe[0].proto.columns)["accuracy"]["type_config"]["format"] == "percent"
    points = at.dataframe[0].value.set_index("kept_rank")
    w = load_model("zoo:digits-cnn").get_submodule("classifier.0").weight
    out, inp = w.shape
    for fraction in (0.5, 0.25):
        rank = int(points.loc[fraction, "rank"])
        assert 1 <= rank < min(out, inp)
        # A Linear layer factored at rank r costs r (in + out) MACs per sample instead of in x out.
        assert points.loc[fraction, "macs_saved"] == out * inp - rank * (out + inp)


def test_share_kind_renders_bits_and_is_recorded(tmp_path):
    from analysis import ResultsStore

    at = open_page("sensitivity")
    at.radio(key="sens_kind").set_value("share")
    at.text_input(key="sens_bits").set_value("4, 1")
    at.multiselect(key="sens_layers").set_value(["features.7"])
    submit(at, "Run sweep")
    assert_clean(at)
    assert len(charts(at)) == 2
    points = at.dataframe[0].value
    assert sorted(points["bits"]) == [1.0, 4.0]
    heatmap = json.loads(charts(at)[1].proto.spec)["data"][0]
    assert heatmap["x"] == ["4", "1"]  # bits, not "4.0"
    [run] = ResultsStore().list(kind="sensitivity")
    assert run.params["kind"] == "share" and run.params["bits"] == [4, 1]


def test_form_state_survives_a_page_switch():
    at = open_page("sensitivity")
    at.radio(key="sens_kind").set_value("unstructured")
    at.text_input(key="sens_ratios").set_value("0.3")
    at.multiselect(key="sens_layers").set_value(["features.3"])
    submit(at, "Run sweep")
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/sensitivity.py").run()
    assert at.radio(key="sens_kind").value == "unstructured"
    assert at.text_input(key="sens_ratios").value == "0.3"
    assert at.multiselect(key="sens_layers").value == ["features.3"]
