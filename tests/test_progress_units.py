"""Progress in units the user recognises, only forward: sweeps count evaluations (layers or groups x
values), rankings the oracle's channels, a schedule's steps move the Compress bar; time left is hidden until
it means something; a redirected log gets plain lines, not tqdm's carriage returns."""

from __future__ import annotations

import pytest

from analysis import compress, load_data, load_model, rank_channels, sensitivity_sweep
from analysis.progress import Forward, RunTimer, progress_bar

CNN_GROUPS = (
    5  # digits-cnn: features.0, .3, .7, .10 and classifier.0 (the final classifier keeps its outputs)
)


@pytest.fixture(scope="module")
def cnn():
    return load_model("zoo:digits-cnn")


@pytest.fixture(scope="module")
def small():
    return load_data("digits", input_shape=(1, 16, 16)).subset(96)


def _forward_only(calls: list[tuple[int, int]]) -> None:
    assert calls, "no progress reported"
    assert len({t for _, t in calls}) == 1, "the total changed on the way"
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done), "progress went back or stood still"
    assert calls[-1][0] == calls[-1][1]


@pytest.mark.parametrize("stoppable", [False, True])
def test_a_structured_sweep_counts_groups_times_ratios(cnn, small, stoppable):
    calls: list[tuple[int, int]] = []
    stop = (lambda: False) if stoppable else None
    result = sensitivity_sweep(cnn, small, "structured", ratios=[0.25, 0.5, 0.75], should_stop=stop,
                               progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    assert len(result.layers) == CNN_GROUPS
    _forward_only(calls)
    assert calls[-1] == (CNN_GROUPS * 3, CNN_GROUPS * 3)


def test_an_early_stopped_sweep_still_ends_at_its_total(cnn, small):
    calls: list[tuple[int, int]] = []
    sensitivity_sweep(cnn, small, "quant", bits=[8, 3, 2], layers=["features.0", "features.3"], max_drop=0.0,
                      should_stop=lambda: False, progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    _forward_only(calls)  # the points skipped after a layer's first bad one count as done
    assert calls[-1] == (2 * 3, 2 * 3)


def test_a_lowrank_sweep_counts_layers_times_fractions(cnn, small):
    calls: list[tuple[int, int]] = []
    sensitivity_sweep(cnn, small, "lowrank", ratios=[0.5, 0.25], layers=["features.3", "classifier.0"],
                      should_stop=lambda: False, progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    _forward_only(calls)
    assert calls[-1] == (2 * 2, 2 * 2)


def test_rankings_count_the_oracles_channels_else_the_calibration_samples(cnn, small):
    calls: list[tuple[int, int]] = []
    rank_channels(cnn, small, ["l1", "apoz"], ["features.0", "features.3"], max_samples=64, oracle=True,
                  oracle_max_samples=32, progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    _forward_only(calls)
    assert calls[-1] == (32 + 32, 32 + 32)  # the two layers' output channels, as the page's caption counts
    calls.clear()
    rank_channels(cnn, small, ["apoz"], ["features.0"], max_samples=64, oracle=False,
                  progress=lambda d, t: calls.append((d, t)))  # fmt: skip
    _forward_only(calls)
    assert calls[-1] == (64, 64)


def test_a_schedule_moves_the_compress_bar_step_by_step(cnn, small):
    calls: list[tuple[int, int]] = []
    at_step: list[float] = []
    plan = {"schedule": {"method": "agp", "criterion": "l1", "target": {"macs": 0.5}, "steps": 3,
                         "epochs_per_step": 0.0}}  # fmt: skip
    compress(cnn, plan, small, progress=lambda d, t: calls.append((d, t)), latency_rounds=1, runs_per_round=1,
             warmup=1, on_step=lambda r: at_step.append(calls[-1][0] / calls[-1][1] if calls else 0.0))  # fmt: skip
    _forward_only(calls)
    pruning = [f for f in at_step[1:]]  # after each of the three pruning steps
    assert len(pruning) == 3 and pruning == sorted(pruning) and len(set(pruning)) == 3
    assert pruning[0] < 0.6  # the schedule is most of the work, not one unit of 33


def test_forward_never_goes_back_and_maps_parts():
    calls: list[tuple[int, int]] = []
    forward = Forward(lambda d, t: calls.append((d, t)), 10)
    first, second = forward.part(0, 4), forward.part(4, 6)
    first(1, 8), first(8, 8), first(4, 8), second(3, 6), second(6, 6), forward.report(3)
    assert calls == [(0, 10), (4, 10), (7, 10), (10, 10)]  # 1/8 of 4 units is 0; back to 4, 3: not reported


def test_time_left_is_hidden_until_it_means_something():
    now = [0.0]
    timer = RunTimer(clock=lambda: now[0])
    now[0] = 2.0
    timer.update(1, 33)
    assert timer.eta_s is None  # one quick unit of 33 predicts nothing
    now[0] = 60.0
    assert timer.eta_s is None  # still under 5% done
    timer.update(2, 33)
    assert timer.eta_s == pytest.approx(60.0 / 2 * 31)
    assert "left" in timer.describe()


def test_a_redirected_log_gets_lines_not_carriage_returns(capsys):
    with progress_bar("Sweeping") as progress:
        for i in range(1, 201):
            progress(i, 200)
        progress(200, 200)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert 2 <= len(lines) <= 21 and lines[-1] == "Sweeping: 200 of 200 (100%)"


def test_a_sweep_on_the_command_line_logs_lines_in_evaluations(tmp_path):
    from conftest import run_cli

    done = run_cli("sensitivity", "--kind", "quant", "--bits", "8", "4", "--layers", "features.0", "features.3",
                   "--limit", "64", "--no-record", "--json", str(tmp_path / "s.json"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr  # standard error is a pipe here, as in a redirected log
    lines = [ln for ln in done.stderr.splitlines() if " of " in ln]
    assert lines and "4 of 4 (100%)" in lines[-1]  # 2 layers x 2 bit widths
