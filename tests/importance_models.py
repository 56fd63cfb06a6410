"""Small models for the importance tests: functional activations, a residual add, a depthwise conv, a norm
defined out of module order, a conv with no norm, tokens through Linear + LayerNorm, a tabular MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from analysis.data import Dataset


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm distinct gammas, betas and running statistics (so ReLUs produce real zeros)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 1.5 + 0.1)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


class FunctionalNet(nn.Module):
    """Conv nets the way people write them: F.relu, torch.relu and x.relu(), a depthwise conv, a 1x1 conv
    with no norm feeding a residual add, and bn_b/bn_a declared in the wrong order for module-order guessing."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.conv_b = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(6)  # declared before bn_a on purpose
        self.bn_a = nn.BatchNorm2d(6)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.bn_dw = nn.BatchNorm2d(6)
        self.conv_c = nn.Conv2d(6, 6, 1)
        self.fc1 = nn.Linear(6 * 2 * 2, 10)
        self.fc2 = nn.Linear(10, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn_a(self.conv_a(x)))
        b = torch.relu(self.bn_b(self.conv_b(a)))
        d = self.bn_dw(self.dw(b)).relu()
        c = self.conv_c(d) + b
        c = F.adaptive_avg_pool2d(c, 2).flatten(1)
        return self.fc2(F.relu(self.fc1(c)))


class TokenNet(nn.Module):
    """Tokens (N x T x D) through Linear + LayerNorm + GELU, a self-attention block, then mean-pool."""

    def __init__(self, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 12)
        self.norm = nn.LayerNorm(12)
        self.attn = nn.MultiheadAttention(12, 2, batch_first=True)
        self.mlp = nn.Linear(12, 12)
        self.head = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.norm(self.proj(x)))
        h = h + self.attn(h, h, h, need_weights=False)[0]
        h = h + F.relu(self.mlp(h))
        return self.head(h.mean(dim=1))


class TabularNet(nn.Module):
    """Linear-only on tabular features, with BatchNorm1d and an nn.ReLU module."""

    def __init__(self, features: int = 5, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))


def make_data(sample_shape: tuple[int, ...], n: int = 48, classes: int = 3, seed: int = 0) -> Dataset:
    """Random inputs with labels; train and evaluation splits differ."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *sample_shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    xt = torch.randn(n, *sample_shape, generator=g)
    yt = torch.randint(0, classes, (n,), generator=g)
    return Dataset("random", x, y, xt, yt, classes)


def build(name: str) -> tuple[nn.Module, Dataset]:
    torch.manual_seed(0)
    if name == "functional":
        return randomize_norms(FunctionalNet()), make_data((1, 8, 8))
    if name == "tokens":
        return randomize_norms(TokenNet()), make_data((4, 8))
    if name == "tabular":
        return randomize_norms(TabularNet()), make_data((5,))
    raise KeyError(name)
