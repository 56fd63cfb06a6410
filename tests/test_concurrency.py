"""Two analyses on the SAME model object at the same time (two app sessions sharing a cached model) give the
numbers a single run gives, and leave the model without hooks and with its state untouched."""

from __future__ import annotations

import threading

import pytest
import torch

from analysis import find_groups, load_data, load_model, summarize
from analysis.concurrency import hook_count, same_state, snapshot, symbolic_trace
from analysis.evaluate import evaluate
from analysis.importance.base import get_importance
from analysis.latency import latency_lock, latency_lock_busy, layer_times, measure_latency

ROUNDS = 6


@pytest.fixture(scope="module")
def shared():
    model = load_model("zoo:digits-resnet")
    data = load_data("digits", (1, 16, 16)).subset(64)
    return model, data


def _run_together(jobs: dict, rounds: int = ROUNDS) -> dict[str, list]:
    """Run every job in its own thread, all started at once, `rounds` times; collect results or errors."""
    results: dict[str, list] = {name: [] for name in jobs}
    errors: list[BaseException] = []
    for _ in range(rounds):
        barrier = threading.Barrier(len(jobs))

        def run(name, job, barrier=barrier):
            try:
                barrier.wait()
                results[name].append(job())
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=item) for item in jobs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, f"{len(errors)} concurrent runs failed, first: {errors[0]!r}"
    return results


def test_concurrent_analyses_match_a_single_run(shared):
    model, data = shared
    before = snapshot(model)
    shape = data.input_shape
    taylor = get_importance("taylor")
    example = data.x[:2]

    # Reference numbers, one at a time.
    ref_macs = [(layer.name, layer.macs, layer.macs_thop) for layer in summarize(model, shape).layers]
    ref_total = summarize(model, shape).total_macs
    ref_groups = [(g.name, g.members) for g in find_groups(model, example)]
    ref_taylor = taylor(model, data, max_samples=32)
    ref_eval = evaluate(model, data)
    ref_layers = set(layer_times(model, shape, batch_size=2, runs=2, warmup=1))

    jobs = {
        "summary": lambda: summarize(model, shape),
        "layer_times": lambda: layer_times(model, shape, batch_size=2, runs=2, warmup=1),
        "groups": lambda: find_groups(model, example),
        "taylor": lambda: taylor(model, data, max_samples=32),
        "evaluate": lambda: evaluate(model, data),
        "trace": lambda: symbolic_trace(model),
    }
    out = _run_together(jobs)
    for summary in out["summary"]:
        assert summary.total_macs == ref_total
        assert [(layer.name, layer.macs, layer.macs_thop) for layer in summary.layers] == ref_macs
        assert not summary.differences
    for times in out["layer_times"]:
        assert set(times) == ref_layers
    for groups in out["groups"]:
        assert [(g.name, g.members) for g in groups] == ref_groups
    for scores in out["taylor"]:
        assert scores.keys() == ref_taylor.keys()
        for name in scores:
            torch.testing.assert_close(scores[name], ref_taylor[name], rtol=1e-5, atol=1e-7)
    for result in out["evaluate"]:
        assert result == ref_eval
    for gm in out["trace"]:
        assert torch.equal(gm(data.x[:4]), model(data.x[:4]))
    assert hook_count(model) == 0
    assert same_state(before, model.state_dict())
    assert not model.training
    # The class-level patches fx installs while tracing are gone.
    assert torch.nn.Module.__call__ is torch.nn.Module._wrapped_call_impl


def test_macs_of_the_shared_model_equal_a_plain_count(shared):
    """The MAC total against a hand count for a model whose MACs are easy to count."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10)
    )
    expected = 4 * 8 * 8 * (1 * 3 * 3) + 4 * 8 * 8 * 10
    out = _run_together(
        {f"s{i}": (lambda: summarize(model, (1, 8, 8)).total_macs) for i in range(3)}, rounds=4
    )
    assert all(v == expected for values in out.values() for v in values)


def test_latency_lock_serializes_and_reports_waiting(shared):
    model, _ = shared
    waited = []
    with latency_lock():
        assert latency_lock_busy()
        t = threading.Thread(
            target=lambda: measure_latency(model, (1, 16, 16), batch_size=1, runs=1, warmup=0,
                                           on_wait=lambda: waited.append(True))
        )  # fmt: skip
        t.start()
        t.join(timeout=0.5)
        assert t.is_alive()  # blocked on the lock we hold
    t.join()
    assert waited == [True]
    assert not latency_lock_busy()
