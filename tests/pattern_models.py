"""Small models, one per graph pattern that structured pruning must handle (issue 19, item 8): transposed
convolutions, a Linear reshaped into feature maps, split/chunk branches, concatenation along a non-channel
dimension, cascaded concatenation, a single-channel output, raw nn.Parameters, an unused parameter, a
residual block, a depthwise block, multi-head attention, tuple and dict outputs and two inputs.

Each entry of `PATTERNS` gives the model, its example inputs (any batch size) and the layers whose output
channels its outputs expose, written out by hand: the layers every pruner must keep whole."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ConvTransposeDecoder(nn.Module):
    """A convolutional autoencoder: strided convs down, ConvTranspose2d up, a 1-channel image out."""

    def __init__(self) -> None:
        super().__init__()
        self.down1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.up1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.up2 = nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.down2(F.relu(self.down1(x))))
        return torch.sigmoid(self.up2(F.relu(self.norm(self.up1(h)))))


class ConvTranspose1dDecoder(nn.Module):
    """A 1-D signal decoder: Conv1d features up-sampled by ConvTranspose1d, 2 channels out."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv1d(2, 12, 5, stride=2, padding=2)
        self.dec = nn.ConvTranspose1d(12, 6, 4, stride=2, padding=1)
        self.out = nn.Conv1d(6, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.dec(F.relu(self.enc(x)))))


class LinearToConvTranspose(nn.Module):
    """A generator: a code vector -> Linear -> reshaped into 4x4 maps -> ConvTranspose2d up to 16x16x3.
    The reshape reads its channel count from the next layer, so it stays right after pruning."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(12, 16 * 4 * 4)
        self.up1 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.up2 = nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.project(z)).reshape(z.shape[0], self.up1.in_channels, 4, 4)
        return torch.tanh(self.up2(F.relu(self.norm(self.up1(h)))))


class FixedViewGenerator(LinearToConvTranspose):
    """The same generator with its reshape written as a literal `view(-1, 16, 4, 4)`: removing any of
    `project`'s outputs breaks that view, so no pruner can shrink that group."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.project(z)).view(-1, 16, 4, 4)
        return torch.tanh(self.up2(F.relu(self.norm(self.up1(h)))))


class SplitBranches(nn.Module):
    """One stem split into two branches of different widths (sizes read from the branches), rejoined."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 12, 3, padding=1)
        self.left = nn.Conv2d(4, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(F.relu(self.stem(x)), [self.left.in_channels, self.right.in_channels], dim=1)
        h = torch.cat([F.relu(self.left(a)), F.relu(self.right(b))], dim=1)
        return self.head(h.mean(dim=(2, 3)))


class ChunkBranches(nn.Module):
    """`chunk(2)` halves of a stem through two branch convs: both halves must keep the same width."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = F.relu(self.stem(x)).chunk(2, dim=1)
        h = F.relu(self.left(a)) + F.relu(self.right(b))
        return self.head(h.mean(dim=(2, 3)))


class WidthConcat(nn.Module):
    """Two feature maps side by side (concatenated along the width, not the channels), then one conv."""

    def __init__(self) -> None:
        super().__init__()
        self.top = nn.Conv2d(1, 8, 3, padding=1)
        self.bottom = nn.Conv2d(1, 8, 5, padding=2)
        self.mix = nn.Conv2d(8, 12, 3, padding=1)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([F.relu(self.top(x)), F.relu(self.bottom(x))], dim=3)
        return self.head(F.relu(self.mix(h)).amax(dim=(2, 3)))


class CascadedConcat(nn.Module):
    """A concatenation of a concatenation: three convs' channels end up side by side in one tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 6, 3, padding=1)
        self.c = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(18)
        self.fuse = nn.Conv2d(18, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ab = torch.cat([self.a(x), self.b(x)], dim=1)
        h = F.relu(self.norm(torch.cat([ab, self.c(x)], dim=1)))
        return self.head(F.relu(self.fuse(h)).mean(dim=(2, 3)))


class SingleChannelOutput(nn.Module):
    """A segmentation-style net: a 1-channel logit map the size of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.mask = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask(F.relu(self.conv2(F.relu(self.conv1(x)))))


class ChannelScale(nn.Module):
    """A custom layer built from raw nn.Parameters: a per-channel gain and offset (no nn.Module inside)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, channels).view(1, channels, 1, 1))
        self.offset = nn.Parameter(torch.linspace(-0.1, 0.1, channels).view(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain + self.offset


class RawParameterNet(nn.Module):
    """Convs around a raw-parameter layer: pruning must cut the parameters along the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.scale = ChannelScale(8)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(F.relu(self.scale(self.conv1(x)))))
        return self.head(h.mean(dim=(2, 3)))


class UnusedParameterNet(nn.Module):
    """A model holding a parameter and a layer its forward never uses (left over from training)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)
        self.temperature = nn.Parameter(torch.ones(1))
        self.aux = nn.Linear(8, 2)  # an auxiliary head used only in training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean(dim=(2, 3)))


class ResidualNet(nn.Module):
    """Two residual blocks sharing the stem's channels, then a wider strided block with a projection."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.block1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.block2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.wide = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.project = nn.Conv2d(8, 16, 1, stride=2)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        h = F.relu(h + self.block1(h))
        h = F.relu(h + self.block2(h))
        h = F.relu(self.wide(h) + self.project(h))
        return self.head(h.mean(dim=(2, 3)))


class DepthwiseNet(nn.Module):
    """Inverted-residual style: 1x1 expand, 3x3 depthwise, 1x1 project, with BatchNorm and ReLU6."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.expand = nn.Conv2d(8, 24, 1)
        self.bn1 = nn.BatchNorm2d(24)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.bn2 = nn.BatchNorm2d(24)
        self.project = nn.Conv2d(24, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self.stem(x))
        y = F.relu6(self.bn2(self.dw(F.relu6(self.bn1(self.expand(h))))))
        return self.head((h + self.project(y)).mean(dim=(2, 3)))


class GroupedNet(nn.Module):
    """GroupNorm over 2 groups and a conv with groups=2 reading the same channels: both need the two
    halves to keep one width."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.grouped(F.relu(self.norm(self.conv(x))))
        return self.head(F.relu(h).mean(dim=(2, 3)))


class AttentionBlock(nn.Module):
    """Tokens through Linear embedding, nn.MultiheadAttention (4 heads), LayerNorm and an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(10, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.norm = nn.LayerNorm(32)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x)
        t = self.norm(t + self.attn(t, t, t, need_weights=False)[0])
        t = t + self.mlp(t)
        return self.head(t.mean(dim=1))


class TupleOutput(nn.Module):
    """A classifier that also returns its embedding: both outputs' widths are fixed by the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.embed = nn.Linear(8, 16)
        self.hidden = nn.Linear(16, 32)
        self.classes = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.embed(F.relu(self.conv(x)).mean(dim=(2, 3)))
        return self.classes(F.relu(self.hidden(e))), e


class DictOutput(nn.Module):
    """Two heads returned by name: class scores and a bounding box."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.cls = nn.Linear(16, 6)
        self.box = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = F.relu(self.conv2(F.relu(self.conv1(x)))).mean(dim=(2, 3))
        return {"scores": self.cls(h), "box": self.box(h)}


class TwoInputs(nn.Module):
    """An image and a metadata vector, each encoded, concatenated and classified."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.meta = nn.Linear(6, 8)
        self.fuse = nn.Linear(16, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        h = torch.cat([F.relu(self.conv(image)).mean(dim=(2, 3)), F.relu(self.meta(meta))], dim=1)
        return self.head(F.relu(self.fuse(h)))


def tiny_bert(num_labels: int | None = None) -> nn.Module:
    """A 2-layer BERT from a `transformers` config (hidden 32, 4 heads): `BertModel`, or a sequence
    classifier with `num_labels`. Nothing is downloaded."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
        max_position_embeddings=32, attn_implementation="eager",
    )  # fmt: skip
    if num_labels is None:
        return BertModel(config).eval()
    config.num_labels = num_labels
    return BertForSequenceClassification(config).eval()


def tiny_vit() -> nn.Module:
    """A 2-layer ViT classifier from a `transformers` config (16x16 images, 4x4 patches, 4 heads)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=5, attn_implementation="eager",
    )  # fmt: skip
    return ViTForImageClassification(config).eval()


def bert_inputs(batch: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (batch, 8), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, 8, dtype=torch.long)}


def _randn(*shape: int) -> Callable[[int], torch.Tensor]:
    return lambda batch: torch.randn((batch, *shape), generator=torch.Generator().manual_seed(1))


@dataclass(frozen=True)
class Pattern:
    """A model factory, example inputs for a batch size, and the layers its outputs expose (kept whole)."""

    build: Callable[[], nn.Module]
    inputs: Callable[[int], object]
    kept: tuple[str, ...]


PATTERNS: dict[str, Pattern] = {
    "convtranspose2d": Pattern(ConvTransposeDecoder, _randn(1, 16, 16), ("up2",)),
    "convtranspose1d": Pattern(ConvTranspose1dDecoder, _randn(2, 32), ("out",)),
    "linear-reshape-convtranspose": Pattern(LinearToConvTranspose, _randn(12), ("up2",)),
    "split": Pattern(SplitBranches, _randn(1, 8, 8), ("head",)),
    "chunk": Pattern(ChunkBranches, _randn(1, 8, 8), ("head",)),
    "width-concat": Pattern(WidthConcat, _randn(1, 8, 8), ("head",)),
    "cascaded-concat": Pattern(CascadedConcat, _randn(1, 8, 8), ("head",)),
    "single-channel-output": Pattern(SingleChannelOutput, _randn(3, 8, 8), ("mask",)),
    "raw-parameters": Pattern(RawParameterNet, _randn(1, 8, 8), ("head",)),
    "unused-parameter": Pattern(UnusedParameterNet, _randn(1, 8, 8), ("fc",)),
    "residual": Pattern(ResidualNet, _randn(1, 8, 8), ("head",)),
    "depthwise": Pattern(DepthwiseNet, _randn(3, 8, 8), ("head",)),
    "grouped-conv": Pattern(GroupedNet, _randn(1, 8, 8), ("head",)),
    "multihead-attention": Pattern(AttentionBlock, _randn(6, 10), ("head",)),
    "tuple-output": Pattern(TupleOutput, _randn(1, 8, 8), ("classes", "embed")),
    "dict-output": Pattern(DictOutput, _randn(1, 8, 8), ("box", "cls")),
    "two-inputs": Pattern(TwoInputs, lambda b: (_randn(1, 8, 8)(b), _randn(6)(b)), ("head",)),
}
