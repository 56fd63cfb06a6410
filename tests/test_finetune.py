"""Fine-tuning and Hinton distillation: the loss by hand, masks kept, teacher untouched, progress."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from analysis.compression.finetune import distillation_loss, finetune
from analysis.compression.plan import FinetuneSettings
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
