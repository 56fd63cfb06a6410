"""Patterns the end-to-end suite needs beyond tests/pattern_models.py and tests/reach_models.py (written for
these tests): Linear-only tabular data with a wide and a deep path and one output column, a Linear residual
MLP, a custom layer of raw parameters around an L2 normalisation, a split whose second part skips to the
output, a concatenation along the height undone by a split, several inputs whose intermediate activations
are outputs too, a single-channel map with a norm after it, a Linear -> view -> transposed-conv chain ending
in a classifier, a ConvNeXt-style block (channels-last Linear layers and a raw per-channel scale), a small
VGG, an inverted-residual block with a 4-D output and a timm-style transformer (one fused qkv Linear). Each class builds with no arguments, so
`tests.e2e_models:<Class>` is a model spec."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class WideAndDeep(nn.Module):
    """Tabular data: a linear (wide) path and an MLP (deep, BatchNorm1d + Dropout) path concatenated along
    the last dimension, then one sigmoid output column (a score, not classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.deep = nn.Sequential(
            nn.Linear(14, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(24, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.1),
            nn.Linear(12, 1),
        )  # fmt: skip
        self.wide = nn.Linear(14, 3)
        self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(torch.cat([self.wide(x), self.deep(x)], dim=-1)))


class ResidualMLP(nn.Module):
    """Linear only: the first layer's activations skip over the second and are added back."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))
        return self.fc3(F.relu(self.fc2(h)) + h)


class NormScale(nn.Module):
    """A custom layer: L2-normalise each sample, a raw per-feature gain and shift, then its own Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.8, 1.2, dim))
        self.shift = nn.Parameter(torch.linspace(-0.05, 0.05, dim))
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / x.pow(2).sum(dim=1, keepdim=True).sqrt().clamp(min=1e-6)
        return self.fc(x * self.gain + self.shift)


class CustomLayerMLP(nn.Module):
    """Linear -> a raw-parameter custom layer -> Linear, with a spare parameter the forward never reads."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 24)
        self.custom = NormScale(24)
        self.fc2 = nn.Linear(24, 5)
        self.spare = nn.Parameter(torch.zeros(7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.custom(F.relu(self.fc1(x))))


class SplitSkip(nn.Module):
    """A block's channels split in two: one part concatenated with a parallel path and fused, the other
    added to the result; a 4-D output. The split sizes are read from the layers."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.GELU(), nn.Conv2d(4, 8, 1), nn.BatchNorm2d(8)
        )
        self.side = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.GELU(), nn.Conv2d(4, 4, 1))
        self.fuse = nn.Sequential(nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = self.side(x)
        h = self.block(x)
        first = self.fuse[0].in_channels - self.side[-1].out_channels
        a, b = torch.split(h, [first, h.shape[1] - first], dim=1)
        return self.fuse(torch.cat([a, side], dim=1)) + b


class HeightConcatSplit(nn.Module):
    """Two paths stacked along the height (dim 2), one conv over both, split back along the height."""

    def __init__(self) -> None:
        super().__init__()
        self.top = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.GELU())
        self.bottom = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU())
        self.mix = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.top(x), self.bottom(x)
        h = F.relu(self.mix(torch.cat([a, b], dim=2)))
        upper, _ = torch.split(h, [a.shape[2], b.shape[2]], dim=2)
        return self.head(upper)


class IntermediateOutputs(nn.Module):
    """Two inputs, each through a Linear, whose activations are returned along with their fused result."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(10, 8)
        self.fc2 = nn.Linear(6, 8)
        self.fc3 = nn.Linear(16, 12)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = F.relu(self.fc1(a)), F.relu(self.fc2(b))
        return a, b, F.relu(self.fc3(torch.cat([a, b], dim=1)))


class NormedMask(nn.Module):
    """A one-channel map with a BatchNorm (of one feature) after the last conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 2, stride=2)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 1, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.relu(self.bn3(self.conv3(x)))


class ViewChainClassifier(nn.Module):
    """A code vector -> Linear -> `view(-1, C, 4, 4)` (C read from the next layer) -> two transposed convs
    -> flatten -> Linear class scores."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(16, 12 * 4 * 4)
        self.up1 = nn.ConvTranspose2d(12, 8, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.project(x)).view(-1, self.up1.in_channels, 4, 4)
        h = F.relu(self.up2(F.relu(self.up1(h))))
        return self.fc(torch.flatten(h, 1))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block (Liu et al. 2022): depthwise 7x7, channels-last LayerNorm, Linear expand / GELU /
    Linear project, a raw per-channel layer scale, residual; stem and classifier around it."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, stride=2)
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim,), 0.5))
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        h = self.layer_scale * self.pw2(F.gelu(self.pw1(h)))
        x = x + h.permute(0, 3, 1, 2)
        return self.head(x.mean(dim=(2, 3)))


class SmallVGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015) in miniature: conv-BN-ReLU stages with max pooling, then a
    three-layer classifier with dropout over the flattened maps."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c_out, pool in ((8, False), (8, True), (16, False), (16, True)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(16 * 4 * 4, 32), nn.ReLU(True), nn.Dropout(),
            nn.Linear(32, 32), nn.ReLU(True), nn.Dropout(),
            nn.Linear(32, 7),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class InvertedResidualMap(nn.Module):
    """MobileNetV2's inverted residual blocks (Sandler et al. 2018: expand, depthwise, linear project, skip
    where the shapes allow) as a dense-prediction net: a 3-channel map out."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.blocks = nn.ModuleList([self._block(8, 8), self._block(8, 8), self._block(8, 12)])
        self.out = nn.Conv2d(12, 3, 1)

    @staticmethod
    def _block(c_in: int, c_out: int) -> nn.Sequential:
        hidden = 4 * c_in
        return nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(), nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            y = block(h)
            h = h + y if y.shape == h.shape else y
        return self.out(h)


class FusedQKVViT(nn.Module):
    """A one-block vision transformer written the way timm writes it (Dosovitskiy et al. 2021): patches
    by a strided conv, a class token concatenated in front, one fused `qkv` Linear reshaped into heads and
    unbound, attention by explicit matmuls, an MLP, the class token's scores."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.num_heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        n, tokens, _ = t.shape
        qkv = self.qkv(self.norm1(t)).reshape(n, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        weights = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(dim=-1)
        t = t + self.proj((weights @ v).transpose(1, 2).reshape(n, tokens, -1))
        t = t + self.fc2(F.gelu(self.fc1(self.norm2(t))))
        return self.head(t[:, 0])


def _randn(*shape: int):
    return lambda n: torch.randn((n, *shape), generator=torch.Generator().manual_seed(2))


# name -> (class, per-sample inputs by forward's parameter name, the layers its outputs expose)
E2E_PATTERNS = {
    "wide-and-deep": (WideAndDeep, {"x": (14,)}, ("out",)),
    "residual-mlp": (ResidualMLP, {"x": (20,)}, ("fc3",)),
    "custom-layer": (CustomLayerMLP, {"x": (16,)}, ("fc2",)),
    "split-skip": (SplitSkip, {"x": (4, 6, 6)}, ("block.3", "fuse.0")),
    "height-concat-split": (HeightConcatSplit, {"x": (3, 6, 6)}, ("head",)),
    "intermediate-outputs": (IntermediateOutputs, {"a": (10,), "b": (6,)}, ("fc1", "fc2", "fc3")),
    "normed-mask": (NormedMask, {"x": (3, 8, 8)}, ("conv3",)),
    "view-chain-classifier": (ViewChainClassifier, {"x": (16,)}, ("fc",)),
    "convnext-block": (ConvNeXtBlock, {"x": (3, 8, 8)}, ("head",)),
    "vgg": (SmallVGG, {"x": (3, 16, 16)}, ("classifier.6",)),
    "inverted-residual-map": (InvertedResidualMap, {"x": (3, 8, 8)}, ("out",)),
    "fused-qkv-vit": (FusedQKVViT, {"x": (3, 16, 16)}, ("head",)),
}
