"""The built-in models: small, real architectures trained on the bundled digits data (1 x 16 x 16 input).

Each family is here because it stresses a different part of the workbench: plain VGG-style stacks, residual
adds that couple channels across blocks (with functional `torch.relu`), depthwise convolutions, a
Linear-only network, a denoising autoencoder (an image out, no classes: scored by PSNR against the original
model) and a vision transformer (attention heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (1, 16, 16)
NUM_CLASSES = 10


def _conv_bn(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]


class DigitsCNN(nn.Module):
    """VGG-style: four 3x3 conv + BN + ReLU layers in two stages, then a two-layer classifier."""

    input_shape = INPUT_SHAPE

    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv_bn(1, w), nn.ReLU(inplace=True),
            *_conv_bn(w, w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            *_conv_bn(w, 2 * w), nn.ReLU(inplace=True),
            *_conv_bn(2 * w, 2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(2 * w * 4 * 4, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    """ResNet basic block; the ReLUs are functional calls, as in many published models."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c_in, c_out, stride)
        self.conv2, self.bn2 = _conv_bn(c_out, c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class DigitsResNet(nn.Module):
    """A small ResNet: stem, three stages of basic blocks (two with a strided 1x1 downsample)."""

    input_shape = INPUT_SHAPE

    def __init__(self, width: int = 16, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        w = width
        self.conv1, self.bn1 = _conv_bn(1, w)
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, stride=2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class DepthwiseSeparable(nn.Module):
    """MobileNet v1 block: depthwise 3x3 + BN + ReLU6, then pointwise 1x1 + BN + ReLU6."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Sequential(*_conv_bn(c_in, c_in, stride, groups=c_in), nn.ReLU6(inplace=True))
        self.pointwise = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class DigitsMobileNet(nn.Module):
    """MobileNet v1 in miniature: a stem conv, then depthwise-separable blocks."""

    input_shape = INPUT_SHAPE

    def __init__(self, width: int = 16, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(*_conv_bn(1, w), nn.ReLU6(inplace=True))
        self.blocks = nn.Sequential(
            DepthwiseSeparable(w, 2 * w),
            DepthwiseSeparable(2 * w, 4 * w, stride=2),
            DepthwiseSeparable(4 * w, 4 * w),
            DepthwiseSeparable(4 * w, 8 * w, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class DigitsMLP(nn.Module):
    """Linear-only: flatten the image, three fully connected layers."""

    input_shape = INPUT_SHAPE

    def __init__(self, hidden: int = 128, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 16, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True),
            nn.Linear(hidden // 2, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsAutoencoder(nn.Module):
    """A convolutional denoising autoencoder: a noisy 1x16x16 digit in, the clean digit out (1x16x16 in
    [0, 1]). Encoder: two stride-2 convs (16 -> 8 -> 4 pixels); decoder: upsample then conv twice (resize
    convolutions, which avoid transposed convolutions' checkerboard artefacts), sigmoid at the end."""

    input_shape = INPUT_SHAPE
    task = "denoise"  # `analysis.zoo.train` trains it on noisy inputs against the clean images

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(1, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(w, 1, 3, padding=1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class Attention(nn.Module):
    """Multi-head self-attention with one fused `qkv` Linear (the layout timm's ViT uses): `num_heads`
    heads of `qkv.out_features // 3 // num_heads` dimensions each, so removing whole heads from `qkv` and
    the matching inputs of `proj` (and lowering `num_heads`) gives a smaller model that still runs."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens = x.size(0), x.size(1)
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(n, tokens, -1))


class Block(nn.Module):
    """Pre-norm transformer block: attention and an MLP, each in a residual branch."""

    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DigitsViT(nn.Module):
    """A tiny vision transformer: 4x4 patches of the 16x16 digit (16 tokens) embedded by a strided conv,
    learned position embeddings, two pre-norm blocks of 4 attention heads, mean-pooled tokens, a linear
    classifier."""

    input_shape = INPUT_SHAPE

    def __init__(
        self, dim: int = 32, depth: int = 2, num_heads: int = 4, num_classes: int = NUM_CLASSES
    ) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, stride=4)
        self.pos = nn.Parameter(torch.zeros(1, 16, dim))
        self.blocks = nn.Sequential(*[Block(dim, num_heads, 2 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


ZOO: dict[str, type[nn.Module]] = {
    "digits-cnn": DigitsCNN,
    "digits-resnet": DigitsResNet,
    "digits-mobilenet": DigitsMobileNet,
    "digits-mlp": DigitsMLP,
    "digits-autoencoder": DigitsAutoencoder,
    "digits-vit": DigitsViT,
}
