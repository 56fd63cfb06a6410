"""Mixed suggestions (issue 14): per layer one of pruning, rank or bits, by accuracy lost per MAC or byte saved."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from analysis import count_macs, load_data, load_model, suggest_mixed
from analysis.compression.budget import Budget
from analysis.compression.suggest import parse_methods
from analysis.errors import WorkbenchError
from analysis.sensitivity.sweep import SensitivityCurve, SensitivityResult
from analysis.sensitivity.transform_sweeps import LowRankSensitivity
from analysis.transforms.fields import apply_transforms
from analysis.transforms.pruning import prune_structured

BASE = 0.9


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    # MACs per sample: 10*20 + 20*20 + 20*10 = 800 (ReLUs count none).
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(), nn.Linear(20, 10))


# Synthetic curves: layer -> [(kept rank fraction, accuracy drop, MACs saved)].
RANK = {
    "0": [(0.5, 0.002, 100), (0.25, 0.010, 150)],
    "2": [(0.5, 0.005, 200), (0.25, 0.008, 300)],
    "4": [(0.5, 0.006, 100), (0.25, 0.020, 150)],
}


def _rank_sweep() -> LowRankSensitivity:
    layers, macs, params = {}, {}, {}
    for name, points in RANK.items():
        layers[name] = SensitivityCurve(
            tuple(f for f, _, _ in points),
            tuple(BASE - d for _, d, _ in points),
            tuple(0.3 + d for _, d, _ in points),  # loss rises with the drop: no tie-break surprises
        )
        macs[name] = tuple(m for _, _, m in points)
        params[name] = tuple(m for _, _, m in points)  # Linear: params saved = MACs saved
    return LowRankSensitivity("lowrank", BASE, 0.3, 0.0, layers, macs_saved=macs, params_saved=params)


def _quant_sweep(names=("0", "2", "4")) -> SensitivityResult:
    layers = {n: SensitivityCurve((8, 4), (BASE, BASE - 0.001), (0.3, 0.301)) for n in names}
    return SensitivityResult("quant", BASE, 0.3, 0.0, layers)


def test_greedy_follows_the_ratio_rule_and_matches_brute_force():
    model = _mlp()
    assert count_macs(model, (10,)) == 800
    out = suggest_mixed(
        model, None, "macs=0.5", [_rank_sweep(), _quant_sweep()], methods="rank,bits",
        input_shape=(10,), measure=False,
    )  # fmt: skip
    # By hand: drop per MAC saved. Step 1: "0"@0.5 (0.002/100 = 2e-5) beats "2"@0.5 (2.5e-5) and "2"@0.25
    # (2.67e-5). Step 2: "2"@0.5 (2.5e-5) beats "2"@0.25 (0.008/300) and "4"@0.5 (6e-5). Step 3: "2" to 0.25
    # (0.003/100 = 3e-5) beats "4"@0.5; saved 100 + 300 = 400 = half of 800: met. Bits save no MACs.
    assert [(s["unit"], s["level"]) for s in out.steps] == [("0", 0.5), ("2", 0.5), ("2", 0.25)]
    assert out.plan_dict["layers"] == {"0": {"rank": 0.5}, "2": {"rank": 0.25}}
    assert out.met and out.mac_fraction == pytest.approx(0.5)
    assert out.predicted_drop == pytest.approx(0.010)
    # Brute force over every assignment (each layer: none or one rank level): the least total drop among
    # those saving at least 400 MACs is this one, and it is unique.
    feasible = []
    for combo in itertools.product(*[[None, *pts] for pts in RANK.values()]):
        saved = sum(p[2] for p in combo if p)
        if saved >= 400:
            feasible.append((round(sum(p[1] for p in combo if p), 9), combo))
    feasible.sort(key=lambda t: t[0])
    assert feasible[0][0] == pytest.approx(out.predicted_drop) and feasible[1][0] > feasible[0][0]
    best = {name: p[0] for name, p in zip(RANK, feasible[0][1], strict=True) if p}
    assert {name: v["rank"] for name, v in out.plan_dict["layers"].items()} == best


def test_size_budget_uses_bits_and_bytes_by_hand():
    model = _mlp()
    # Bytes: float32 params (220 + 420 + 210) * 4 = 3400. bits 8 on a layer stores ceil(n*8/8) + 4 per
    # output channel; "2" (400 weights, 20 outputs) at 8 bits saves 1600 - (400 + 80) = 1120 bytes at
    # drop 0, the largest saving for free; at size=0.7 (save 1020) that alone meets the budget.
    out = suggest_mixed(
        model, None, "size=0.7", [_rank_sweep(), _quant_sweep()], methods="rank bits",
        input_shape=(10,), measure=True,
    )  # fmt: skip
    assert out.plan_dict["layers"] == {"2": {"bits": 8}}
    assert out.size_fraction == pytest.approx((3400 - 1120) / 3400)
    assert out.mac_fraction == pytest.approx(1.0)
    assert out.met


def test_pruning_blocks_rank_and_bits_on_its_members():
    model = _mlp()
    prune = SensitivityResult(
        "structured", BASE, 0.3, 0.0,
        {"0": SensitivityCurve((0.5,), (BASE - 0.001,), (0.301,)),
         "2": SensitivityCurve((0.5,), (BASE - 0.05,), (0.35,))},
    )  # fmt: skip
    out = suggest_mixed(
        model, None, "macs=0.5", [prune, _rank_sweep(), _quant_sweep()], input_shape=(10,), measure=False
    )
    # Group "0" (outputs of layer 0, inputs of layer 2) at 0.5 saves 10*10 + 10*20 = 300 MACs for 0.001:
    # the cheapest per MAC. It blocks rank and bits on "0" and "2" (rank "2"@0.5, 2.5e-5 per MAC, would be
    # cheaper next), so the last 100 MACs come from rank "4"@0.5 (6e-5) rather than group "2" (0.049 for
    # 200 more: 2.5e-4). Predicted (the rank savings are synthetic): 800 - 300 - 100 = 400 MACs.
    assert out.plan_dict["layers"] == {"0": {"prune": 0.5}, "4": {"rank": 0.5}}
    assert out.met and out.mac_fraction == pytest.approx(0.5)
    # Counted on the really pruned and factored copy, rank "4"@0.5 saves 200 - (20*5 + 5*10) = 50 MACs, not
    # the synthetic 100: the shortfall tightens the target and "4" goes to 0.25 (rank 2: saves 140).
    counted = suggest_mixed(
        model, None, "macs=0.5", [prune, _rank_sweep(), _quant_sweep()], input_shape=(10,), measure=True
    )
    assert counted.plan_dict["layers"] == {"0": {"prune": 0.5}, "4": {"rank": 0.25}}
    assert counted.met and counted.mac_fraction == pytest.approx((800 - 300 - 140) / 800)


def test_unmet_budget_is_reported():
    out = suggest_mixed(
        _mlp(), None, "macs=0.2", [_rank_sweep()], methods="rank", input_shape=(10,), measure=False
    )
    # Every layer at its deepest rank saves 150 + 300 + 150 = 600 of 800: 0.25 kept, above 0.2.
    assert not out.met
    assert out.mac_fraction == pytest.approx(0.25)
    assert any("NOT met" in n for n in out.notes)


def test_bad_input_one_line():
    with pytest.raises(WorkbenchError, match="unknown method"):
        parse_methods("prune,svd")
    with pytest.raises(WorkbenchError, match="macs=F or size=F"):
        suggest_mixed(_mlp(), None, "drop=0.01", [_rank_sweep()], methods="rank", input_shape=(10,))
    with pytest.raises(WorkbenchError, match="no prune sweep"):
        suggest_mixed(_mlp(), None, "macs=0.5", [_rank_sweep()], methods="prune,rank", input_shape=(10,))
    assert Budget.parse("size=0.5") == Budget("size", 0.5)
    with pytest.raises(WorkbenchError):
        Budget.parse("size=1.5")


@pytest.fixture(scope="module")
def cnn():
    return load_model("zoo:digits-cnn"), load_data("digits")


def test_macs_budget_met_on_digits_cnn_counted_independently(cnn):
    model, data = cnn
    before = count_macs(model, data.input_shape)
    out = suggest_mixed(
        model, data, "macs=0.4", None, methods=("prune", "rank", "bits"),
        ratios=(0.25, 0.5, 0.75), rank_fractions=(0.5, 0.25), bits=(8,), limit=150,
    )  # fmt: skip
    layers = out.plan_dict["layers"]
    assert all(len(v) == 1 for v in layers.values())
    # Apply the plan here, by hand: prune the groups, then factor the ranked layers, and count.
    work = load_model("zoo:digits-cnn")
    prunes = {n: v["prune"] for n, v in layers.items() if "prune" in v}
    if prunes:
        prune_structured(work, prunes, data.input_shape)
    ranks = {n: {"rank": v["rank"]} for n, v in layers.items() if "rank" in v}
    if ranks:
        work = apply_transforms(work, ranks).model
    after = count_macs(work, data.input_shape)
    assert out.met
    assert after / before <= 0.4 + 1e-9
    assert after / before == pytest.approx(out.mac_fraction)
    assert 0.0 <= out.predicted_drop <= 1.0
    assert math.isclose(out.predicted_drop, min(1.0, sum(r["predicted_drop"] for r in out.choices)))
    # No layer transformed twice: a ranked or quantized layer is in no pruned group.
    pruned_members = {m for r in out.choices if r["method"] == "prune" for m in r["members"]}
    assert not pruned_members & {n for n, v in layers.items() if "rank" in v or "bits" in v}
    assert model is not work and count_macs(model, data.input_shape) == before
