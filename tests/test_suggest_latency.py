"""`suggest` with a latency budget: the plan it returns, applied for real, is timed here with a plain
loop (not with the library's timer) and must be clearly faster than the original."""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from analysis import suggest
from analysis.transforms import prune_structured

RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
INPUT = (512,)


def _mlp() -> nn.Module:
    torch.manual_seed(0)  # big matrix products: time follows MACs, so a latency budget is reachable
    return nn.Sequential(
        nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )


def _free_sweep(groups: list[str]) -> dict:
    """A structured sweep in CONTRACT form in which no group loses accuracy at any ratio."""
    curve = {"ratios": RATIOS, "accuracy": [0.9] * len(RATIOS), "loss": [0.3] * len(RATIOS)}
    layers = {g: {**curve, "members": [g]} for g in groups}
    return {
        "kind": "structured",
        "baseline": {"accuracy": 0.9, "loss": 0.3},
        "seconds": 0.0,
        "layers": layers,
    }


def _median_ms(model: nn.Module, x: torch.Tensor, runs: int = 15) -> float:
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def test_a_latency_budget_gives_a_plan_that_is_really_faster():
    model = _mlp().eval()
    result = suggest(
        _free_sweep(["0", "2"]), "latency=0.6", model=model, input_shape=INPUT, batch_size=64, threads=1
    )
    assert result.latency_fraction is not None and result.ratios  # it measured, and it pruned something
    assert result.met == (result.latency_fraction <= 0.6)
    assert result.mac_fraction < 0.85
    pruned = copy.deepcopy(model)
    prune_structured(pruned, result.ratios, INPUT)
    x = torch.randn(64, *INPUT)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ratios = []
        for _ in range(3):  # alternate, so a busy moment slows both
            before, after = _median_ms(model, x), _median_ms(pruned, x)
            ratios.append(after / before)
    finally:
        torch.set_num_threads(previous)
    assert statistics.median(ratios) < 0.85  # budget 0.6, with room for a noisy shared machine
