"""Structured pruning with a criterion other than l1, checked against what the criterion means (not
against the criterion's own code): APoZ prunes the channels that are most often zero, bn-scale refuses a
layer that has no norm after it."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from analysis import WorkbenchError
from analysis.data import Dataset
from analysis.transforms import prune_structured

DEAD = [1, 4, 6]  # channels whose bias keeps them below zero: after the ReLU they are (almost) always 0


def _conv_net(norm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 8, 3, padding=1)]
    layers += [nn.BatchNorm2d(8)] if norm else []
    layers += [nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = nn.Sequential(*layers, nn.Linear(6, 3)).eval()
    with torch.no_grad():
        if norm:  # the norm's shift decides what the ReLU lets through
            model[1].bias[DEAD] = -50.0
        else:
            model[0].bias[DEAD] = -50.0
    return model


def _data(n: int = 64) -> Dataset:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return Dataset(spec="synthetic", x=x, y=y, x_train=x, y_train=y, num_classes=3)


def _zero_fraction(model: nn.Module, data: Dataset) -> torch.Tensor:
    """Per channel of the first ReLU's output: the fraction of zeros, by a plain forward hook."""
    relu = next(m for m in model if isinstance(m, nn.ReLU))
    seen = []
    handle = relu.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        model(data.x_train)
    handle.remove()
    return (seen[0] == 0).float().mean(dim=(0, 2, 3))


def _kept_rows(original: nn.Conv2d, pruned: nn.Conv2d) -> list[int]:
    """Which of the original output channels survive, by matching weight rows."""
    rows = original.weight.detach().flatten(1)
    return [int(torch.cdist(r[None], rows).argmin()) for r in pruned.weight.detach().flatten(1)]


def test_apoz_removes_the_channels_that_are_most_often_zero():
    model, data = _conv_net(norm=True), _data()
    apoz = _zero_fraction(model, data)
    assert all(apoz[c] > 0.99 for c in DEAD) and (apoz[[c for c in range(8) if c not in DEAD]] < 0.9).all()
    pruned = copy.deepcopy(model)
    report = prune_structured(pruned, {"0": 3 / 8}, (1, 8, 8), criteria={"0": "apoz"}, data=data)
    assert report.groups[0]["removed"] == 3
    kept = _kept_rows(model[0], pruned[0])
    assert sorted(set(range(8)) - set(kept)) == DEAD  # the dead ones went, not the most active ones
    # l1 does not know which channels are dead: it chooses by weight size, so the test can tell them apart
    by_l1 = copy.deepcopy(model)
    prune_structured(by_l1, {"0": 3 / 8}, (1, 8, 8))
    assert sorted(set(range(8)) - set(_kept_rows(model[0], by_l1[0]))) != DEAD


def test_bn_scale_refuses_a_layer_without_a_following_norm():
    model, data = _conv_net(norm=False), _data()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(WorkbenchError, match="bn-scale"):
        prune_structured(model, {"0": 0.5}, (1, 8, 8), criteria={"0": "bn-scale"}, data=data)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-pruned
    normed = _conv_net(norm=True)
    prune_structured(normed, {"0": 0.5}, (1, 8, 8), criteria={"0": "bn-scale"})  # with a norm it works
    assert normed[0].out_channels == 4


class _TwoBranches(nn.Module):
    """Two convs whose outputs are added: one coupled group of both layers (plus the norms after them)."""

    def __init__(self, norm_b: bool) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 8, 1)
        self.norm_a = nn.BatchNorm2d(8)
        self.norm_b = nn.BatchNorm2d(8) if norm_b else nn.Identity()
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm_a(self.a(x)) + self.norm_b(self.b(x)))
        return self.head(y.mean((2, 3)))


def _two_branches(norm_b: bool) -> tuple[nn.Module, object]:
    from analysis.transforms.groups import find_groups

    torch.manual_seed(0)
    model = _TwoBranches(norm_b).eval()
    with torch.no_grad():  # gammas other than 1, so that a sum of the wrong ones shows
        for norm in (model.norm_a, model.norm_b):
            if isinstance(norm, nn.BatchNorm2d):
                norm.weight.uniform_(-2, 2)
    group = next(g for g in find_groups(model, torch.randn(2, 3, 8, 8)) if g.name == "a")
    assert set(group.out_layers) == {"a", "b"}
    return model, group


def test_group_scores_of_a_residual_group_sum_each_layers_own_scores():
    from analysis.importance import get_importance, group_scores

    model, group = _two_branches(norm_b=True)
    l1 = model.a.weight.detach().abs().sum((1, 2, 3)) + model.b.weight.detach().abs().sum((1, 2, 3))
    got = group_scores(model, [group], "l1")
    assert got.keys() == {"a"} and got["a"].dtype == torch.float64
    assert torch.allclose(got["a"], l1.double(), rtol=1e-6)
    gamma = model.norm_a.weight.detach().abs() + model.norm_b.weight.detach().abs()
    assert torch.allclose(group_scores(model, [group], {"a": "bn-scale"})["a"], gamma.double(), rtol=1e-6)
    # the one call every criterion answers: the same numbers as the module-level function
    assert torch.equal(get_importance("l1").score_groups(model, [group])["a"], got["a"])


def test_group_scores_refuse_a_group_with_a_layer_bn_scale_cannot_score():
    from analysis.importance import group_scores

    model, group = _two_branches(norm_b=False)
    with pytest.raises(WorkbenchError) as refused:
        group_scores(model, [group], "bn-scale")
    message = str(refused.value)
    assert "'bn-scale'" in message and "'b'" in message and "\n" not in message
