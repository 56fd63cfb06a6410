"""Models the benchmarks (and a few tests) measure besides the zoo: a residual net of our own, trained on
the digits, and ResNet-18 at 224 x 224 (untrained; for speed and memory at a real input size).

`residual_net()` is deliberately unlike `zoo:digits-resnet` (bottleneck blocks with a 1x1 reduce, 3x3, 1x1
expand; projection shortcuts at every change of width, stride-2 3x3 convs; dropout before the classifier)
so that methods tuned on the zoo are checked on a network they were not tuned on. It trains
deterministically in about a minute on one thread the first time and is cached under `.cache/benchmarks/`
(ignored by git). As a model spec: `benchmarks/nets.py:residual_net`.

    python benchmarks/nets.py          # train (or load) the residual net and print its accuracy
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CACHE = ROOT / ".cache" / "benchmarks"
EPOCHS = 24
SEED = 0


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided where the block downsamples), 1x1 expand; a projection shortcut wherever
    the shape changes; functional ReLUs."""

    def __init__(self, c_in: int, mid: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.reduce = _conv_bn(c_in, mid, 1)
        self.spatial = _conv_bn(mid, mid, 3, stride)
        self.expand = _conv_bn(mid, c_out, 1)
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if (stride != 1 or c_in != c_out) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.reduce(x))
        out = F.relu(self.spatial(out))
        out = self.expand(out)
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResidualNet(nn.Module):
    """Stem, three stages of bottleneck blocks (24, 48, 96 wide), global average pooling, dropout, fc."""

    input_shape = (1, 16, 16)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 16, 3)
        self.stage1 = nn.Sequential(Bottleneck(16, 12, 24), Bottleneck(24, 12, 24))
        self.stage2 = nn.Sequential(Bottleneck(24, 24, 48, 2), Bottleneck(48, 24, 48))
        self.stage3 = nn.Sequential(Bottleneck(48, 48, 96, 2))
        self.drop = nn.Dropout(0.1)
        self.fc = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(F.relu(self.stem(x)))))
        return self.fc(self.drop(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))


def _train(model: nn.Module, epochs: int = EPOCHS) -> nn.Module:
    """The zoo's recipe (`analysis.zoo.train`): AdamW, one-cycle, shifted copies, fixed seed, one thread."""
    from analysis.data import load_digits

    torch.manual_seed(SEED)
    data = load_digits()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * -(-len(data.x_train) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(data.x_train), generator=gen)
            for start in range(0, len(order), 64):
                idx = order[start : start + 64]
                dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
                x = torch.roll(data.x_train[idx], shifts=(dy, dx), dims=(2, 3))
                loss = F.cross_entropy(model(x), data.y_train[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def residual_net() -> nn.Module:
    """The trained residual net in eval mode (trained once, then loaded from the cache)."""
    from safetensors.torch import load_file, save_file

    from analysis.io import write_atomic

    model = ResidualNet()
    path = CACHE / f"residual-net-{torch.__version__.split('+')[0]}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    _train(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, str(tmp)))
    return model.eval()


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """ResNet-18 as published (He et al. 2016, torchvision's layout): 11,689,512 params, 1.814 G MACs."""

    input_shape = (3, 224, 224)

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        self.layers = nn.Sequential(*[nn.Sequential(_Block(a, b, s), _Block(b, b, 1)) for a, b, s in chans])
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.layers(x), 1), 1))


def resnet18_with_images(n: int = 32, classes: int = 10, seed: int = 0):
    """ResNet-18 (seeded random weights, `classes` outputs, BatchNorm statistics from the images) and `n`
    seeded random 3 x 224 x 224 images with labels, as an `analysis.Dataset`: a real input size for timing
    (its accuracy means nothing)."""
    from analysis.data import Dataset

    torch.manual_seed(seed)
    model = ResNet18(classes)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 224, 224, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    model.train()
    with torch.no_grad():
        model(x)  # BatchNorm running statistics of these images, so activations have a sane scale
    return model.eval(), Dataset("random-224", x, y, x, y, classes)


def main() -> int:
    from analysis import evaluate, load_data

    model = residual_net()
    acc = evaluate(model, load_data("digits")).accuracy
    params = sum(p.numel() for p in model.parameters())
    print(f"residual net: {params:,} params, {acc:.2%} on the digits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
