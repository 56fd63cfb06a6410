"""Cost against hand-computed layers and the published ResNet-18 figures."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.cost import count_params, size_bytes, summarize
from benchmarks.nets import ResNet18


# ResNet-18 as published (He et al. 2016; torchvision's layout), written out once in benchmarks/nets.py so
# neither needs torchvision: the published 11,689,512 parameters and 1.814 G MACs at 224 x 224.
def test_resnet18_published_params_and_macs():
    summary = summarize(ResNet18().eval(), (3, 224, 224))
    assert summary.total_params == 11_689_512
    assert summary.total_macs == pytest.approx(1.814e9, rel=0.01)
    assert summary.total_flops == 2 * summary.total_macs
    assert summary.counters_agree and not summary.differences


def test_hand_computed_conv_and_linear_layers():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8x8 out: 64 * 8 * 3 * 9 = 13,824 MACs
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise, 4x4 out: 16 * 8 * 9 = 1,152
        nn.Flatten(),
        nn.Linear(128, 10),  # 1,280
    ).eval()
    s = summarize(model, (3, 8, 8))
    by_name = {layer.name: layer for layer in s.layers}
    assert by_name["0"].macs == 64 * 8 * 3 * 9
    assert by_name["0"].params == 8 * 3 * 9 + 8
    assert by_name["0"].output_shape == [1, 8, 8, 8]
    assert by_name["1"].macs == 0 and by_name["1"].params == 16
    assert by_name["3"].macs == 16 * 8 * 9 and by_name["3"].output_shape == [1, 8, 4, 4]
    assert by_name["5"].macs == 1280
    assert s.total_macs == 13_824 + 1_152 + 1_280
    assert s.total_params == sum(p.numel() for p in model.parameters()) == count_params(model)
    frame = s.to_frame()
    assert frame["macs_share"].sum() == pytest.approx(1.0)


class FunctionalAttention(nn.Module):
    """Functional matmuls and attention, which thop cannot see."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.mha = nn.MultiheadAttention(dim, 2, batch_first=True)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        scores = torch.matmul(q, k.transpose(-2, -1))  # L x L x D
        a = torch.softmax(scores, -1) @ v  # L x L x D
        b = F.scaled_dot_product_attention(q, k, v)  # 2 x L x L x D
        c, _ = self.mha(x, x, x, need_weights=False)
        return a + b + c


def test_functional_matmuls_and_attention_are_counted_and_explained():
    length, dim = 5, 16
    s = summarize(FunctionalAttention(dim).eval(), (length, dim))
    by_name = {layer.name: layer for layer in s.layers}
    assert by_name["qkv"].macs == length * dim * 3 * dim
    assert by_name["(model)"].macs == 2 * length * length * dim + 2 * length * length * dim
    mha = 3 * length * dim * dim + 2 * length * length * dim + length * dim * dim
    assert by_name["mha"].macs == mha
    assert s.total_macs == length * dim * 3 * dim + 4 * length * length * dim + mha
    # thop sees only the Linear layers it has hooks on, so the summary must say which layers differ
    assert not s.counters_agree
    text = " ".join(s.differences)
    assert "(model)" in text and "mha" in text


def test_summary_leaves_model_untouched(cnn):
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    summarize(cnn, (1, 16, 16))
    after = cnn.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not cnn.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in cnn.modules())


def test_size_bytes_counts_parameters_and_buffers():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    # linear 15 + bn weight/bias 6 + running mean/var 6 floats, plus an int64 counter
    assert size_bytes(model) == (15 + 6 + 6) * 4 + 8
