"""The built-in models: small, real architectures trained on the bundled digits data (1 x 16 x 16 input).

Each family is here because it stresses a different part of the workbench: plain VGG-style stacks, residual
adds that couple channels across blocks (with functional `torch.relu`), depthwise convolutions, and a
Linear-only network.
"""

from __future__ import annotations

import torch
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


ZOO: dict[str, type[nn.Module]] = {
    "digits-cnn": DigitsCNN,
    "digits-resnet": DigitsResNet,
    "digits-mobilenet": DigitsMobileNet,
    "digits-mlp": DigitsMLP,
}
