"""Fine-tuning and Hinton distillation: the loss by hand, masks kept, teacher untouched, progress."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from analysis.compression.finetune import finetune
from analysis.compression.plan import FinetuneSettings
from analysis.compression.training import distillation_loss
from analysis.data import Dataset
from analysis.errors import WorkbenchError


def _hand_distillation(student, teacher, targets, t, alpha) -> float:
    """Plain Python: alpha * T^2 * mean_i sum_k p_k log(p_k / q_k) + (1 - alpha) * mean_i -log softmax(s)_y."""

    def softmax(row, temp):
        exps = [math.exp(v / temp) for v in row]
        total = sum(exps)
        return [e / total for e in exps]

    kl = ce = 0.0
    for s_row, t_row, y in zip(student, teacher, targets, strict=True):
        p, q = softmax(t_row, t), softmax(s_row, t)
        kl += sum(pk * math.log(pk / qk) for pk, qk in zip(p, q, strict=True))
        ce += -math.log(softmax(s_row, 1.0)[y])
    n = len(targets)
    return alpha * t * t * kl / n + (1 - alpha) * ce / n


@pytest.mark.parametrize(("t", "alpha"), [(1.0, 0.5), (4.0, 0.9), (2.5, 0.0), (3.0, 1.0)])
def test_distillation_loss_equals_a_hand_computation(t, alpha):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(5, 7, generator=g) * 3
    teacher = torch.randn(5, 7, generator=g) * 3
    targets = torch.tensor([0, 3, 6, 2, 2])
    got = distillation_loss(student, teacher, targets, temperature=t, alpha=alpha).item()
    expected = _hand_distillation(student.tolist(), teacher.tolist(), targets.tolist(), t, alpha)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_distillation_loss_gradient_flows_to_the_student_only():
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    distillation_loss(student, teacher, torch.tensor([0, 1, 2])).backward()
    assert student.grad is not None and teacher.grad is None


def _toy_data(n: int = 96) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()
    return Dataset("toy", x, y, x, y, 4)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))


def test_finetune_lowers_the_loss_keeps_masks_and_leaves_the_teacher_alone():
    data = _toy_data()
    student, teacher = _mlp(), _mlp()
    prune.l1_unstructured(student[0], "weight", amount=128)
    zeros = student[0].weight == 0
    teacher.train()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen = []
    settings = FinetuneSettings(epochs=4, distill=True, temperature=2.0, alpha=0.5, lr=0.01, batch_size=16)
    result = finetune(student, data, settings, teacher=teacher, progress=lambda d, t: seen.append((d, t)))
    assert result.model is not student  # copied: the caller's model is not trained
    assert len(result.losses) == 4 and result.losses[-1] < result.losses[0]
    trained = result.model[0]
    assert torch.equal(trained.weight == 0, zeros | (trained.weight == 0)) and bool(
        (trained.weight[zeros] == 0).all()
    )
    assert not result.model.training
    assert teacher.training  # handed back in the mode it came in
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_state[key])
    assert seen[-1] == (4 * 6, 4 * 6) and all(a <= b for (a, _), (b, _) in zip(seen, seen[1:], strict=False))


def test_finetune_is_repeatable_and_in_place_on_request():
    data = _toy_data()
    settings = FinetuneSettings(epochs=2, lr=0.01, batch_size=32, seed=3)
    a = finetune(_mlp(), data, settings).model
    model = _mlp()
    b = finetune(model, data, settings, inplace=True).model
    assert b is model
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_distillation_without_a_teacher_is_refused():
    with pytest.raises(WorkbenchError, match="teacher"):
        finetune(_mlp(), _toy_data(), FinetuneSettings(epochs=1, distill=True))


# --------------------------------------------------------------------------- the recovery recipe (issue 23)


@pytest.mark.parametrize(
    "raw,recipe,epochs",
    [
        (None, "default", 0),  # no finetune: no training, as before
        (False, "default", 0),
        ({"epochs": 0}, "default", 0),
        ({}, "recovery", 0),  # asked for, without saying how: the recovery recipe (epochs from the data)
        (True, "recovery", 0),
        ({"epochs": 3}, "recovery", 3),  # named epochs are kept, the rest is the recipe
        ({"epochs": 3, "recipe": "default"}, "default", 3),  # the plain loop, on request
    ],
)
def test_a_plan_that_asks_for_finetuning_gets_the_recovery_recipe(raw, recipe, epochs):
    from analysis.compression.finetune_settings import RECOVERY_LR, RECOVERY_WARMUP
    from analysis.compression.plan import CompressionPlan

    plan = CompressionPlan.from_dict({} if raw is None else {"finetune": raw})
    ft = plan.finetune
    assert (ft.recipe, ft.epochs) == (recipe, epochs)
    if recipe == "recovery":
        assert (
            ft.distill
            and ft.lr == RECOVERY_LR
            and ft.lr_schedule == "cosine"
            and ft.warmup == RECOVERY_WARMUP
        )
    else:
        assert not ft.distill and ft.lr == 1e-3 and ft.warmup == 0.0
    assert CompressionPlan.from_dict(plan.to_dict()).finetune == ft  # round trip


def test_warmup_then_cosine_learning_rate_by_hand():
    from analysis.compression.training import lr_scheduler

    weight = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = lr_scheduler(optimizer, "cosine", total=10, warmup=0.2)  # 2 warm-up steps, 8 of cosine
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    hand = [0.1 / 3, 0.2 / 3] + [0.05 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert seen == pytest.approx(hand)


def test_bn_recalibration_sets_the_statistics_of_the_norms_inputs():
    """After `recalibrate_bn`, a BatchNorm's running mean and (unbiased) variance are those of its input
    over the training samples, computed here by hand from the conv's outputs."""
    from analysis.compression.training import recalibrate_bn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.randn(100, 1, 6, 6)
    model(x[:2])
    model.eval()
    data = Dataset(
        "synthetic", x, torch.zeros(100, dtype=torch.long), x, torch.zeros(100, dtype=torch.long), 3
    )
    assert recalibrate_bn(model, data, samples=100, batch_size=100)
    with torch.no_grad():
        h = model[0](x).transpose(0, 1).reshape(4, -1)
    assert torch.allclose(model[1].running_mean, h.mean(1), atol=1e-5)
    assert torch.allclose(model[1].running_var, h.var(1, unbiased=True), atol=1e-4)
    assert not model.training and model[1].momentum == 0.1


def test_default_finetune_recovers_half_the_filters_of_a_residual_net_within_a_point(resnet, digits):
    """Issue 23: 50% of the filters of zoo:digits-resnet, `"finetune": {}`, loses at most one point."""
    from analysis import evaluate
    from analysis.compression.compress import compress

    plan = {"default": {"prune": 0.5, "criterion": "l1", "structured": True}, "finetune": {}}
    result = compress(resnet, plan, digits, latency_rounds=1, runs_per_round=1, warmup=1, batch_size=8)
    assert result.after.accuracy >= evaluate(resnet, digits).accuracy - 0.01
