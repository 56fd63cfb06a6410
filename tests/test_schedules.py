"""Global ranking, pruning schedules and sparsity training (issue 13): checked against hand computations
on tiny models, the AGP formula, and plain forward passes of the pruned models."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from analysis.compression.global_rank import global_rank, keep_at_least, normalize_scores
from analysis.compression.plan import FinetuneSettings
from analysis.compression.schedules import (
    SCHEDULE_METHODS,
    ScheduleSettings,
    agp_sparsity,
    recovery_finetune,
    run_schedule,
)
from analysis.compression.sparsity import bn_scales, group_lasso_penalty, slimming_penalty
from analysis.data import load_data
from analysis.errors import WorkbenchError
from analysis.model.layers import example_input
from analysis.transforms.groups import find_groups, remove_channels
from analysis.zoo.models import DigitsResNet

SHAPE = (1, 8, 8)
FT = FinetuneSettings(batch_size=32, lr=1e-3)  # no distillation: faster


@pytest.fixture(scope="module")
def data():
    return load_data("digits", SHAPE).subset(96)


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(),
        nn.Conv2d(3, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(20, 10),
    ).eval()  # fmt: skip


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return DigitsResNet(width=4).eval()


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def hand_order(model: nn.Module, normalize: str) -> list[tuple[str, int]]:
    """Plain-Python global order: L1 per filter, normalized per layer, ascending (ties: layer, index),
    each layer's top channel left out."""
    rows = []
    for position, name in enumerate(["0", "3"]):
        w = model.get_submodule(name).weight.detach().tolist()
        l1 = [sum(abs(v) for v in _flat(f)) for f in w]
        if normalize == "l2":
            d = math.sqrt(sum(v * v for v in l1))
        elif normalize == "mean":
            d = sum(l1) / len(l1)
        elif normalize == "max":
            d = max(l1)
        else:
            d = 1.0
        layer = sorted((v / d, position, i, name) for i, v in enumerate(l1))
        rows += layer[:-1]  # the layer's most important channel is never a candidate (never emptied)
    return [(name, i) for _, _, i, name in sorted(rows)]


def _flat(x):
    return [v for item in x for v in _flat(item)] if isinstance(x, list) else [x]


@pytest.mark.parametrize("normalize", ["l2", "none", "mean", "max"])
def test_global_ranking_equals_a_hand_computation(normalize):
    model = tiny_cnn()
    groups = find_groups(model, SHAPE)
    assert [g.name for g in groups] == ["0", "3"]  # the classifier "8" keeps its outputs
    for n in (1, 3, 5):
        ranking = global_rank(model, groups, n, criterion="l1", normalize=normalize)
        expected = {"0": [], "3": []}
        for name, i in hand_order(model, normalize)[:n]:
            expected[name].append(i)
        assert ranking.remove == {k: sorted(v) for k, v in expected.items()}


def test_l2_normalization_is_unit_norm_and_changes_the_choice():
    s = torch.tensor([3.0, 4.0])
    assert torch.allclose(normalize_scores(s, "l2"), torch.tensor([0.6, 0.8], dtype=torch.float64))
    # A layer of large scores: without normalization the small layer is emptied first; with it, not.
    scores = {"a": torch.tensor([10.0, 20.0, 30.0]), "b": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    from analysis.compression.global_rank import rank_globally

    _, raw = rank_globally(scores, normalize="none")
    _, l2 = rank_globally(scores, normalize="l2")
    assert [g for g, _ in raw[:3]] == ["b", "b", "b"]
    assert l2[0] == ("b", 0) and ("a", 0) in l2[:3]  # 10/37.4 = 0.27 < 0.2/0.55 = 0.37


def test_a_layer_is_never_emptied(data):
    model = tiny_cnn()
    groups = find_groups(model, SHAPE)
    ranking = global_rank(model, groups, 1000, criterion="l1")
    assert ranking.counts == {"0": 2, "3": 4}  # every group keeps one channel
    floor = global_rank(model, groups, 1000, criterion="l1", min_fraction=0.5)
    assert floor.counts == {"0": 3 - keep_at_least(3, 1, 0.5), "3": 5 - 3}
    pruned = tiny_cnn()
    remove_channels(pruned, example_input(SHAPE), groups, ranking.remove)
    assert pruned[0].out_channels == 1 and pruned[3].out_channels == 1
    assert pruned(data.x[:4]).shape == (4, 10)


def test_coupled_groups_stay_consistent_on_a_residual_model(data):
    model = tiny_resnet()
    before = state(model)
    groups = find_groups(model, SHAPE)
    coupled = next(g for g in groups if g.name == "conv1")
    assert set(coupled.out_layers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    ranking = global_rank(model, groups, 10, criterion="l2", normalize="l2")
    pruned = tiny_resnet()
    remove_channels(pruned, example_input(SHAPE), groups, ranking.remove)
    widths = {pruned.get_submodule(n).out_channels for n in coupled.out_layers}
    assert widths == {4 - ranking.counts["conv1"]}  # the residual adds still line up
    assert pruned(data.x[:3]).shape == (3, 10)
    result = run_schedule(
        model, data, {"method": "iterative", "criterion": "l1", "target": {"macs": 0.5}, "steps": 2,
                      "epochs_per_step": 0.3}, finetune=FT,
    )  # fmt: skip
    assert result.met and result.model(data.x[:3]).shape == (3, 10)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # never mutated


def test_agp_sparsity_per_step_equals_the_formula(data):
    # s_t = s_f + (s_i - s_f)(1 - t/n)^3 with s_f = 0.8, s_i = 0.1, n = 4, by hand:
    hand = [0.1, 0.8 - 0.7 * 0.421875, 0.8 - 0.7 * 0.125, 0.8 - 0.7 * 0.015625, 0.8]
    assert [agp_sparsity(t, 4, 0.8, 0.1) for t in range(5)] == pytest.approx(hand)
    model = tiny_cnn()
    settings = {"method": "agp", "structured": False, "target": {"params": 0.2}, "steps": 4,
                "epochs_per_step": 0.3, "initial_sparsity": 0.1}  # fmt: skip
    result = run_schedule(model, data, settings, finetune=FT)
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    zeros = [round((1 - r["nonzero_fraction"]) * total) for r in result.trajectory[1:]]
    assert zeros == [round(s * total) for s in hand[1:]]
    assert result.met and not any(hasattr(m, "weight_orig") for m in result.model.modules())


def test_slimming_penalty_gradient_equals_a_hand_computation():
    model = tiny_cnn()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0, 0.25]))
        model[4].weight.copy_(torch.tensor([-1.0, 3.0, 0.1, -0.2, 4.0]))
    strength = 0.01
    penalty = slimming_penalty(model, strength)
    assert penalty.item() == pytest.approx(strength * (2.75 + 8.3))
    penalty.backward()
    assert model[1].weight.grad.tolist() == pytest.approx([0.01, -0.01, 0.01])
    assert model[4].weight.grad.tolist() == pytest.approx([-0.01, 0.01, 0.01, -0.01, 0.01])
    assert set(bn_scales(model)) == {"1", "4"}


def test_group_lasso_penalty_gradient_is_w_over_its_norm():
    model = tiny_cnn()
    groups = find_groups(model, SHAPE)
    penalty = group_lasso_penalty(model, groups, 0.1)
    w = model[3].weight.detach()
    norms = w.flatten(1).norm(dim=1)
    hand = 0.1 * (model[0].weight.detach().flatten(1).norm(dim=1).sum() + norms.sum())
    assert penalty.item() == pytest.approx(hand.item())
    penalty.backward()
    assert torch.allclose(model[3].weight.grad, 0.1 * w / norms[:, None, None, None], atol=1e-6)


def test_sparsity_methods_shrink_their_values_and_prune(data):
    model = tiny_cnn()
    for method in ("slimming", "group-lasso"):
        settings = {"method": method, "strength": 0.05, "epochs": 2, "target": {"channels": 0.5}}
        result = run_schedule(model, data, settings, finetune=FT)
        before = sum(sum(v) for v in result.evidence["before"].values())
        after = sum(sum(v) for v in result.evidence["after"].values())
        assert after < before
        assert result.met and result.model(data.x[:2]).shape == (2, 10)


def test_the_trajectory_is_recorded(data):
    seen, progress = [], []
    result = run_schedule(
        tiny_cnn(), data, {"method": "iterative", "criterion": "taylor", "target": {"macs": 0.4}, "steps": 3,
                           "epochs_per_step": 0.3, "finetune_epochs": 1},
        finetune=FT, on_step=seen.append, progress=lambda d, t: progress.append((d, t)),
    )  # fmt: skip
    steps = result.trajectory
    assert seen == steps and [r["step"] for r in steps] == [0, 1, 2, 3, 4]
    assert [r["phase"] for r in steps] == ["original", "iterative", "iterative", "iterative", "finetune"]
    for key in ("channels", "macs", "params", "accuracy", "loss", "seconds"):
        assert all(key in r for r in steps)
    macs = [r["macs"] for r in steps]
    assert macs[0] > macs[1] >= macs[2] >= macs[3] == macs[4] and macs[3] <= 0.4 * macs[0]
    lost = sum(steps[0]["channels"].values()) - sum(steps[-1]["channels"].values())
    assert lost == sum(r["removed"] for r in steps) > 0
    assert progress[-1] == (4, 4)
    assert json.loads(json.dumps(result.to_dict()))["trajectory"][0]["step"] == 0


def test_stopping_mid_run_keeps_a_valid_model(data):
    model = tiny_cnn()
    before = state(model)
    calls = {"n": 0}

    def should_stop() -> bool:  # stop inside the second step's fine-tuning
        calls["n"] += 1
        return calls["n"] > 5  # 1 check + 3 batches per step: the 6th call is step 2's first batch

    result = run_schedule(
        model, data, {"method": "iterative", "criterion": "l1", "target": {"macs": 0.3}, "steps": 4,
                      "epochs_per_step": 1, "min_fraction": 0}, finetune=FT, should_stop=should_stop,
    )  # fmt: skip
    assert result.stopped and [r["step"] for r in result.trajectory] == [0, 1]
    from analysis.cost import count_macs
    from analysis.evaluate import evaluate

    assert count_macs(result.model, SHAPE) == result.trajectory[-1]["macs"]
    assert evaluate(result.model, data).accuracy == result.trajectory[-1]["accuracy"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", SCHEDULE_METHODS)
def test_settings_round_trip_through_json(method):
    settings = ScheduleSettings(
        method=method, criterion="l1", target={"params": 0.5}, steps=7, threshold=0.01
    )
    again = ScheduleSettings.from_json(json.dumps(settings.to_dict()))
    assert again == settings and again.to_dict() == settings.to_dict()
    contract = {"method": "iterative", "criterion": "taylor", "normalize": "l2", "target": {"macs": 0.33},
                "steps": 5, "epochs_per_step": 1}  # fmt: skip
    assert ScheduleSettings.from_dict(contract).to_dict().items() >= contract.items()


@pytest.mark.parametrize(
    "raw",
    [
        {"method": "magic"},
        {"target": {"macs": 0}},
        {"target": {"macs": 1.5}},
        {"target": {"flops": 0.5}},
        {"target": {"macs": 0.5, "params": 0.5}},
        {"steps": 0},
        {"steps": 1001},
        {"epochs": 10**6},
        {"epochs_per_step": -1},
        {"normalize": "l3"},
        {"criterion": "random"},
        {"strength": -1},
        {"unknown": 1},
        {"method": "iterative", "structured": False},
        {"method": "agp", "structured": False, "target": {"macs": 0.5}},
        {"threshold": "low"},
    ],
)
def test_bad_settings_give_one_line_errors(raw):
    with pytest.raises(WorkbenchError) as err:
        ScheduleSettings.from_dict(raw)
    assert "\n" not in str(err.value) and str(err.value).startswith("schedule")


def test_recovery_defaults():
    ft = recovery_finetune(1438)
    assert ft.distill and ft.epochs >= 3
    assert recovery_finetune(10**7).epochs == 3  # big data: fewer passes, never below the floor


def test_structured_agp_takes_each_group_down_the_cubic_schedule(data):
    """Zhu & Gupta's schedule is per layer: after step t every group keeps its original channels minus
    round(s_t x original), with s_t the cubic formula and s_f one uniform fraction (by hand)."""
    model = tiny_resnet()
    settings = {"method": "agp", "target": {"macs": 0.5}, "steps": 3, "epochs_per_step": 0.2,
                "criterion": "l1", "min_fraction": 0.0}  # fmt: skip
    result = run_schedule(model, data, settings, SHAPE, finetune=FT)
    original = result.trajectory[0]["channels"]
    groups = find_groups(model, SHAPE)
    final_kept = {g.name: result.trajectory[-1]["channels"][g.name] for g in groups}
    # the final fraction s_f, read back from the widest group (the one that rounds least)
    widest = max(groups, key=lambda g: g.channels)
    s_f = 1 - final_kept[widest.name] / widest.channels
    for t, record in enumerate(result.trajectory[1:], start=1):
        s_t = s_f * (1 - (1 - t / 3) ** 3)
        for g in groups:
            n = original[g.name]
            assert abs(record["channels"][g.name] - (n - round(s_t * n))) <= 1, (t, g.name)
    assert result.met


ZOO_NETS = {"plain": "zoo:digits-cnn", "residual": "zoo:digits-resnet", "depthwise": "zoo:digits-mobilenet"}
SMALL = {
    "oneshot": {"finetune_epochs": 2},
    "iterative": {"steps": 3, "epochs_per_step": 1, "finetune_epochs": 1},
    "agp": {"steps": 3, "epochs_per_step": 1, "finetune_epochs": 1},
    "slimming": {"epochs": 2, "strength": 1e-4, "finetune_epochs": 3},
    "group-lasso": {"epochs": 3, "strength": 5e-3, "finetune_epochs": 3},
}


@pytest.mark.parametrize("method", list(SMALL))
@pytest.mark.parametrize("net", list(ZOO_NETS))
def test_each_schedule_meets_its_target_within_two_points(net, method):
    """Every schedule, on a plain, a residual and a depthwise net, reaches half the MACs and keeps the
    accuracy within 2 points of the original after its fine-tuning (small settings: a few epochs)."""
    from analysis import count_macs, evaluate, load_model

    model = load_model(ZOO_NETS[net])
    digits = load_data("digits")
    settings = {"method": method, "target": {"macs": 0.5}, **SMALL[method]}
    fast = FinetuneSettings(batch_size=64, lr=2e-3, warmup=0.1)  # no distillation: half the work
    result = run_schedule(model, digits, settings, finetune=fast)
    macs = count_macs(result.model, digits.input_shape) / count_macs(model, digits.input_shape)
    before, after = evaluate(model, digits).accuracy, evaluate(result.model, digits).accuracy
    assert result.met and macs <= 0.5 + 1e-9
    assert after >= before - 0.02, (net, method, before, after)
