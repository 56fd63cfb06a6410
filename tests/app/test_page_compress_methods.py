"""Compress page methods: a schedule run from the page with its trajectory chart, Stop keeping a valid
model, the predicted drop's arithmetic, and error text kept as text."""

from __future__ import annotations

import types

import pytest
from apptools import assert_clean, charts, click, open_page

from analysis import evaluate, load_data, load_model, summarize
from analysis.app_support import apply_plan, predicted_drop_points
from pages import _shared


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_DATA_DIR", str(tmp_path))


def test_iterative_one_step_runs_from_the_page_and_plots_its_trajectory():
    at = open_page("compress")
    at.selectbox(key="meth_method").set_value("iterative").run()
    at.selectbox(key="meth_criterion").set_value("l1")
    at.number_input(key="meth_target_value").set_value(0.7)
    at.number_input(key="meth_steps").set_value(1)
    at.number_input(key="meth_epochs_per_step").set_value(0.0).run()
    click(at, "Apply")
    assert_clean(at)
    result = at.session_state["_result_compress"]["result"]
    extras = at.session_state["_result_compress"]["params"]["extras"]
    assert len(extras["trajectory"]) >= 2  # step 0 (the original) and the step taken
    assert result.after.macs <= 0.7 * result.before.macs * 1.02
    assert result.before.macs == summarize(load_model("zoo:digits-cnn"), (1, 16, 16)).total_macs
    assert len(charts(at)) == 2  # the trajectory and the scatter


def test_stop_after_the_first_step_keeps_a_valid_model():
    model = load_model("zoo:digits-cnn")
    data = load_data("digits", input_shape=(1, 16, 16))
    steps: list[dict] = []
    plan = {"schedule": {"method": "iterative", "criterion": "l1", "target": {"macs": 0.3}, "steps": 4,
                         "epochs_per_step": 0.0}}  # fmt: skip
    result, extras = apply_plan(
        model, data, plan, batch_size=8, threads=1, on_step=steps.append,
        should_stop=lambda: len(steps) >= 2, latency_rounds=2,
    )  # fmt: skip
    assert extras["stopped"]
    assert len(extras["trajectory"]) < 5  # not every step ran
    assert result.after.macs > 0.3 * result.before.macs  # the target was not reached: stopped early
    assert result.after.accuracy == pytest.approx(evaluate(result.model, data).accuracy)
    assert result.before.accuracy == pytest.approx(evaluate(model, data).accuracy)


def test_predicted_drop_is_the_bounded_sum_of_single_group_drops():
    curve = types.SimpleNamespace
    sweep = types.SimpleNamespace(
        baseline_accuracy=0.9,
        layers={
            "a": curve(values=[0.5, 0.25], accuracy=[0.7, 0.85]),
            "b": curve(values=[0.5], accuracy=[0.8]),
        },
    )
    # a at 0.25: 0.90 - 0.85 = 5 points; b at 0.25: halfway to 0.5's 10 points = 5 points
    drop, missing = predicted_drop_points(sweep, {"a": 0.25, "b": 0.25, "c": 0.5})
    assert drop == pytest.approx(10.0) and missing == ["c"]
    collapse = types.SimpleNamespace(
        baseline_accuracy=0.99, layers={g: curve(values=[0.9], accuracy=[0.0]) for g in "abc"}
    )
    assert predicted_drop_points(collapse, {"a": 0.9, "b": 0.9, "c": 0.9})[0] == 100.0
    assert predicted_drop_points(None, {"a": 0.5}) == (None, [])
    # A curve that wiggles back up is noise: pruning more never predicts less drop (as `suggest` reads it).
    wiggle = types.SimpleNamespace(
        baseline_accuracy=0.9, layers={"a": curve(values=[0.25, 0.5], accuracy=[0.8, 0.85])}
    )
    assert predicted_drop_points(wiggle, {"a": 0.5})[0] == pytest.approx(10.0)


def test_error_text_keeps_underscores():
    shown = _shared.plain("Linear.__init__() got an unexpected keyword 'out_features'")
    assert shown.replace("\\", "") == "Linear.__init__() got an unexpected keyword 'out_features'"
    assert "\\_\\_init\\_\\_" in shown


def test_a_met_budget_beyond_the_tolerance_is_never_a_success():
    from analysis.app_support import suggestion_verdict

    hint = types.SimpleNamespace(
        budget="macs=0.5", mac_fraction=0.5, latency_fraction=None, measured_drop=None, met=True
    )
    sweep = types.SimpleNamespace(samples=359)
    ok, text = suggestion_verdict(hint, 1.5, 1.0, sweep)
    assert (
        not ok
        and "needs fine-tuning" in text
        and "1.50 points (an estimate" in text
        and "359 samples" in text
    )
    assert suggestion_verdict(hint, 0.5, 1.0, sweep)[0]
    # A measured drop beyond the tolerance counts too, whatever the sweep predicted.
    measured = types.SimpleNamespace(**{**vars(hint), "measured_drop": 0.03})
    assert not suggestion_verdict(measured, 0.5, 1.0, sweep)[0]
    unmet = types.SimpleNamespace(**{**vars(hint), "met": False})
    ok, text = suggestion_verdict(unmet, 0.5, 1.0, sweep)
    assert not ok and text.startswith("Budget not met")


def test_noisy_timings_name_the_newest_run_and_its_runtimes_once():
    from analysis.app_support import noisy_timings

    def row(run, role, runtime, spread):
        warning = f"noisy timing: p90/p10 = {spread:.1f}" if spread > 1.5 else None
        label = f"original (run {run})" if role == "baseline" else f"plan {run}"
        return {
            "run": run,
            "role": role,
            "runtime": runtime,
            "spread": spread,
            "warning": warning,
            "label": label,
        }

    rows = [row(1, "baseline", "eager", 3.0), row(1, "plan", "eager", 2.0),  # an older run's noise: in the table
            row(2, "baseline", "eager", 1.1), row(2, "plan", "eager", 2.5), row(2, "plan", "onnxruntime", 1.9)]  # fmt: skip
    said = noisy_timings(rows)
    assert said.startswith("Noisy timing in run 2 (plan 2): ")
    assert "eager plan p90/p10 = 2.5; onnxruntime plan p90/p10 = 1.9." in said and "3.0" not in said
    assert noisy_timings(rows[2:3]) is None and noisy_timings([]) is None
