"""Three MAC counts side by side: thop, torch's FlopCounterMode, and a plain analytic count.

    python benchmarks/flops_crosscheck.py

thop (all ops) is thop's own total, which adds norm and pooling element operations to the MACs; "thop (MAC
layers)" keeps only its conv/linear rules, which is what the summary compares against. The analytic column is
computed here from each conv and linear layer's shapes, independently of both libraries.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch
from thop import profile
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from analysis import load_model  # noqa: E402
from analysis.cost import summarize  # noqa: E402
from benchmarks.nets import ResNet18  # noqa: E402


def analytic_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += out.numel() * k
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def main() -> None:
    models = {
        f"zoo:{n}": (load_model(f"zoo:{n}"), (1, 16, 16))
        for n in ("digits-cnn", "digits-resnet", "digits-mobilenet", "digits-mlp")
    }
    models["ResNet-18 (published 1.814 G)"] = (ResNet18().eval(), (3, 224, 224))
    header = f"{'model':32} {'thop (all ops)':>15} {'thop (MAC layers)':>18} {'FlopCounterMode/2':>18} {'analytic':>14}  agree"
    print(header)
    print("-" * len(header))
    for name, (model, shape) in models.items():
        x = torch.zeros(1, *shape)
        thop_all, _ = profile(copy.deepcopy(model), inputs=(x,), verbose=False)
        with FlopCounterMode(display=False) as counter:
            model(x)
        fc = counter.get_total_flops() // 2
        s = summarize(model, shape)
        ref = analytic_macs(model, x)
        ok = s.total_macs == ref and abs(fc - ref) <= 0.01 * ref and abs(s.macs_thop - ref) <= 0.01 * ref
        print(
            f"{name:32} {int(thop_all):>15,} {s.macs_thop:>18,} {fc:>18,} {ref:>14,}  {'yes' if ok else 'NO'}"
        )


if __name__ == "__main__":
    main()
