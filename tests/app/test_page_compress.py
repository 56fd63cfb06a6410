"""Compress page: Apply a plan, compare before/after against hand counts, never touch the cached model;
coupled sliders, the preview before Apply, an honest Suggest, the same-run scatter, transforms refused as
text, settings kept across navigation, and every applied result recorded."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from apptools import assert_clean, charts, click, open_page, shown

from analysis import ResultsStore, load_data, load_model, sensitivity_sweep
from analysis.app_support import state_digest
from analysis.transforms import find_groups
from pages import _shared

# Half of features.10's 64 filters go, with their BN entries and classifier.0's inputs (4x4 per channel).
REMOVED = 32 * 64 * 9 + 2 * 32 + 32 * 16 * 128


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))
    return tmp_path


def _figure(at, index: int = 0) -> dict:
    return json.loads(charts(at)[index].proto.spec)


def _values(array) -> list[float]:
    """A plotly array as numbers (plotly may send it base64-encoded with its dtype)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_apply_prunes_and_leaves_the_cached_model_alone():
    at = open_page("compress")
    assert not charts(at)
    spec = at.session_state[_shared.SPEC_KEY]
    cached = _shared.load(spec).model  # the very object every session shares
    before = state_digest(cached)
    assert before == state_digest(load_model("zoo:digits-cnn"))
    original = sum(p.numel() for p in load_model("zoo:digits-cnn").parameters())

    at.slider(key="prune::features.10").set_value(0.5).run()
    # The preview counts the plan before Apply.
    metrics = {m.label: m for m in at.metric}
    assert metrics["Params"].value == f"{original - REMOVED:,}"
    click(at, "Apply")
    assert_clean(at)
    assert _shared.load(spec).model is cached
    assert state_digest(cached) == before

    metrics = {m.label: m for m in at.metric}
    assert metrics["Accuracy"].delta.endswith(" points")
    assert metrics["Latency (real)"].value.endswith(" ms")
    result = at.session_state["_result_compress"]["result"]
    assert result.after.params == original - REMOVED

    # The scatter: this plan against the baseline timed in the same run, never a re-timed one.
    fig = _figure(at)
    baseline = [t for t in fig["data"] if t.get("mode") == "markers" and "baseline" in t["name"]]
    plan = [t for t in fig["data"] if t.get("mode") == "markers" and "baseline" not in t["name"]]
    assert _values(baseline[0]["x"]) == [pytest.approx(result.before.latency_ms)]
    assert _values(plan[0]["x"]) == [pytest.approx(result.after.latency_ms)]
    assert "batch %{customdata[1]}" in plan[0]["hovertemplate"] and "spread" in plan[0]["hovertemplate"]
    assert "Download plan.json" in [d.label for d in at.get("download_button")]
    made = [b.label for b in at.button if b.label.startswith("Make ")]
    assert made == ["Make .onnx (ONNX)", "Make .pt2 (torch.export)", "Make .pruned.safetensors (safetensors)",
                    "Make .pt (pickle)"]  # fmt: skip

    # A second Apply keeps the first plan with its own baseline (two runs, two baselines).
    at.slider(key="prune::features.10").set_value(0.25).run()
    click(at, "Apply")
    assert_clean(at)
    runs = at.dataframe[-1].value
    assert sorted(set(runs["run"])) == [1, 2]
    assert (runs["role"] == "baseline").sum() == 2

    recorded = ResultsStore().list(kind="compression")
    assert len(recorded) == 2


def test_coupled_sliders_move_together_and_the_preview_follows():
    at = open_page()
    at.selectbox(key="zoo_name").set_value("digits-resnet").run()
    at.switch_page("pages/compress.py").run()
    assert_clean(at)
    model = load_model("zoo:digits-resnet")
    group = next(g for g in find_groups(model, (1, 16, 16)) if len(g.out_layers) > 1)
    first, *others = group.out_layers
    macs_before = {m.label: m.value for m in at.metric}["MACs per sample"]
    at.slider(key=f"prune::{others[-1]}").set_value(0.5).run()
    assert_clean(at)
    for layer in group.out_layers:  # a residual add couples them: none shows 0 while its group is pruned
        assert at.slider(key=f"prune::{layer}").value == 0.5
    assert {m.label: m.value for m in at.metric}["MACs per sample"] != macs_before


def test_suggest_an_unmet_latency_budget_is_a_warning_with_a_bounded_drop():
    at = open_page()
    at.selectbox(key="zoo_name").set_value("digits-resnet").run()
    spec = at.session_state[_shared.SPEC_KEY]
    model, data = load_model("zoo:digits-resnet"), load_data("digits", input_shape=(1, 16, 16))
    sweep = sensitivity_sweep(model, data, "structured", ratios=[0.5, 0.9], limit=120)
    at.session_state["_result_sensitivity:structured"] = {
        "key": spec.model_key(),
        "result": sweep,
        "params": {},
    }
    at.switch_page("pages/compress.py").run()
    at.selectbox(key="budget_kind").set_value("latency")
    at.number_input(key="budget_value").set_value(0.5)
    click(at, "Suggest")
    assert_clean(at)
    said = at.session_state["_suggested"]
    texts = [w.value for w in at.warning] + [s.value for s in at.success]
    assert any("predicted drop" in t for t in texts)
    assert 0.0 <= said["drop"] <= 100.0
    if not said["hint"].met:
        assert not at.success and any(w.value.startswith("Budget not met") for w in at.warning)
    if said["drop"] > 10:
        assert any("collapse" in w.value for w in at.warning)


def test_suggest_for_half_the_macs_of_a_resnet_is_a_warning_with_one_recovery_click():
    at = open_page()
    at.selectbox(key="zoo_name").set_value("digits-resnet").run()
    spec = at.session_state[_shared.SPEC_KEY]
    model, data = load_model("zoo:digits-resnet"), load_data("digits", input_shape=(1, 16, 16))
    sweep = sensitivity_sweep(model, data, "structured", ratios=[0.25, 0.5, 0.75, 0.9], limit=120)
    at.session_state["_result_sensitivity:structured"] = {
        "key": spec.model_key(),
        "result": sweep,
        "params": {},
    }
    at.switch_page("pages/compress.py").run()
    at.selectbox(key="budget_kind").set_value("macs")
    at.number_input(key="budget_value").set_value(0.5)
    click(at, "Suggest")
    assert_clean(at)
    # The drop a hand sum of the sweep's single-group drops predicts at the suggested ratios (points).
    hint = at.session_state["_suggested"]["hint"]
    by_hand = 0.0
    for name, ratio in hint.ratios.items():
        curve = sweep.layers[name]
        drops = [
            sweep.baseline_accuracy - a
            for r, a in zip(curve.values, curve.accuracy, strict=True)
            if r <= ratio
        ]
        by_hand += max([0.0, *drops])
    assert by_hand * 100 > 1.0  # more than the 1 point accepted by default
    assert not at.success
    [said] = [shown(w.value) for w in at.warning if "Suggested for macs=0.5" in shown(w.value)]
    assert f"predicted drop {min(by_hand * 100, 100):.2f} points (an estimate" in said
    assert "needs fine-tuning" in said
    # The preview shows the same single number, under the same name.
    assert {m.label: m.value for m in at.metric}[
        "Predicted accuracy drop (estimate)"
    ] == f"{min(by_hand * 100, 100):.2f} points"
    click(at, "Fine-tune with the recovery recipe")
    assert_clean(at)
    assert at.number_input(key="plan_epochs").value == 9  # the recipe's epochs for 1,438 training digits
    assert at.checkbox(key="plan_distill").value and at.checkbox(key="plan_recipe").value


def test_refused_transform_is_text_beside_the_layer_and_blocks_apply():
    at = open_page("compress")
    at.number_input(key="rank::classifier.0").set_value(0.25)
    at.select_slider(key="bits::classifier.0").set_value(8).run()
    assert not at.exception
    assert len(at.error) == 1
    shown = at.error[0].value
    assert "rank and bits 8 cannot go together" in shown.replace("\\", "")
    assert "classifier\\.0" in shown  # escaped: Markdown cannot eat it
    assert [b.disabled for b in at.button if b.label == "Apply"] == [True]


def test_settings_survive_navigation():
    at = open_page("compress")
    at.slider(key="prune::features.0").set_value(0.3)
    at.number_input(key="plan_epochs").set_value(2).run()
    at.selectbox(key="meth_method").set_value("agp").run()
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/compress.py").run()
    assert_clean(at)
    assert at.slider(key="prune::features.0").value == 0.3
    assert at.number_input(key="plan_epochs").value == 2
    assert at.selectbox(key="meth_method").value == "agp"
    # A sidebar setting that does not change the model (batch size, runtime) keeps them too.
    at.number_input(key="batch_size").set_value(7).run()
    at.selectbox(key="runtime").set_value("onnxruntime").run()
    assert_clean(at)
    assert at.slider(key="prune::features.0").value == 0.3
    assert at.number_input(key="plan_epochs").value == 2
    assert at.selectbox(key="meth_method").value == "agp"


def test_uniform_preset_sets_every_slider_but_the_classifier():
    at = open_page("compress")
    at.slider(key="uni_prune").set_value(0.3)
    at.select_slider(key="uni_bits").set_value(8)
    click(at, "Set every layer")
    assert_clean(at)
    assert at.slider(key="prune::features.0").value == 0.3
    assert at.slider(key="prune::classifier.2").value == 0.0
    assert at.select_slider(key="bits::classifier.2").value == 8
    assert [b.disabled for b in at.button if b.label == "Suggest"] == [True]  # no sweep yet


def test_files_are_made_when_asked_and_their_errors_are_said_on_the_page(monkeypatch):
    import onnxruntime as ort
    import torch

    import analysis.app_support.preview as preview
    from analysis import WorkbenchError

    at = open_page("compress")
    at.slider(key="prune::features.10").set_value(0.5).run()
    click(at, "Apply")
    click(at, "Make .onnx (ONNX)")
    assert_clean(at)
    made = at.session_state["_built::cmp.onnx_1"]
    assert made["what"] == "fp32 ONNX" and "Download compressed.onnx" in [
        d.label for d in at.get("download_button")
    ]
    # The file is the pruned model with a free batch dimension: a bare ONNX Runtime session runs 3 samples.
    session = ort.InferenceSession(made["data"], providers=["CPUExecutionProvider"])
    x = torch.rand(3, 1, 16, 16)
    model = at.session_state["_result_compress"]["result"].model
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0],
                                   model(x).numpy(), atol=1e-4)  # fmt: skip

    def refuse(*args, **kwargs):
        raise WorkbenchError("torch.export failed at aten.kthvalue: no rule")

    monkeypatch.setattr(preview, "save_compressed", refuse)
    click(at, "Make .pt2 (torch.export)")
    assert not at.exception
    assert [e.value.replace("\\", "") for e in at.error] == ["torch.export failed at aten.kthvalue: no rule"]
    assert "Download compressed.onnx" in [d.label for d in at.get("download_button")]  # the other file stays


def test_measure_again_times_the_original_and_the_plan_in_one_run(monkeypatch):
    import analysis.runtime.base as base

    at = open_page("compress")
    at.slider(key="prune::features.10").set_value(0.5).run()
    click(at, "Apply")
    first = at.session_state["_result_compress"]["result"]
    runs = []
    real = base.compare_runtime_latency

    def spy(prepared, *args, **kwargs):
        runs.append(sorted(prepared))
        return real(prepared, *args, **kwargs)

    monkeypatch.setattr(base, "compare_runtime_latency", spy)
    click(at, "Measure again")
    assert_clean(at)
    assert runs == [["eager:after", "eager:before"]]  # one alternating run holds both
    again = at.session_state["_result_compress"]["result"]
    assert (again.before.latency_ms, again.after.latency_ms) != (
        first.before.latency_ms,
        first.after.latency_ms,
    )
    assert again.after.accuracy == first.after.accuracy and again.after.params == first.after.params
    points = at.dataframe[-1].value
    assert list(points["label"]) == ["original (run 1)", "plan 1 (timed again)"]  # replaced, not added
    assert list(points["latency_ms"]) == [again.before.latency_ms, again.after.latency_ms]
