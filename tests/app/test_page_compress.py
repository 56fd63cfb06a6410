"""Compress page: Apply a plan, compare before/after against hand counts, and never touch the cached model."""

from __future__ import annotations

from apptools import assert_clean, charts, click, open_page, submit

from analysis import load_model, state_digest
from pages import _shared


def test_apply_prunes_and_leaves_the_cached_model_alone():
    at = open_page("compress")
    assert not charts(at)
    spec = at.session_state[_shared.SPEC_KEY]
    cached = _shared.load(spec).model  # the very object every session shares
    before = state_digest(cached)
    assert before == state_digest(load_model("zoo:digits-cnn"))

    at.slider(key="prune::features.10").set_value(0.5)
    submit(at, "Apply")
    assert_clean(at)
    assert _shared.load(spec).model is cached
    assert state_digest(cached) == before

    # Half of features.10's 64 filters go, with their BN entries and classifier.0's inputs (4x4 per channel).
    removed = 32 * 64 * 9 + 2 * 32 + 32 * 16 * 128
    original = sum(p.numel() for p in load_model("zoo:digits-cnn").parameters())
    metrics = {m.label: m for m in at.metric}
    assert metrics["Params"].value == f"{original - removed:,}"
    assert metrics["Latency (real)"].value.endswith(" ms")
    assert metrics["Accuracy"].delta.endswith(" points")
    assert len(charts(at)) == 1  # accuracy vs latency scatter
    runs = at.dataframe[1].value
    assert list(runs["label"]) == ["original", "plan 1"]
    assert runs["pareto"].any()
    labels = [d.label for d in at.get("download_button")]
    assert "Download the plan (JSON)" in labels and "Download the compressed model (.pt)" in labels


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


def test_suggest_from_a_structured_sweep_sets_the_sliders():
    at = open_page("sensitivity")
    at.text_input(key="sens_ratios").set_value("0.25, 0.5")
    submit(at, "Run sweep")
    assert_clean(at)
    at.switch_page("pages/compress.py").run()
    at.selectbox(key="budget_kind").set_value("macs")
    at.number_input(key="budget_value").set_value(0.8)
    click(at, "Suggest")
    assert_clean(at)
    assert at.success and "of the MACs" in at.success[0].value
    ratios = {s.key: s.value for s in at.slider if s.key and s.key.startswith("prune::")}
    assert any(v > 0 for v in ratios.values())
    assert ratios["prune::classifier.2"] == 0.0
