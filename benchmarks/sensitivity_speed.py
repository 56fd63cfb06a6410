"""Sensitivity sweep speed: ours (in-place edits + cached downstream evaluation) vs the naive loop.

The naive loop is NNI's and Distiller's: for every (layer, ratio) point, deep-copy the model, compress one
layer, evaluate the whole network. Both run in this process, alternating, on the same model and data, and
must give the same accuracies (checked to 1e-6). Prints both times per kind and the ratio ours / naive.

    python benchmarks/sensitivity_speed.py [--model zoo:digits-resnet] [--kinds structured,unstructured,quant]
                                           [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import evaluate, load_data, load_model  # noqa: E402
from analysis.importance import prunable_layers  # noqa: E402
from analysis.sensitivity.sweep import DEFAULT_BITS, DEFAULT_RATIOS, sensitivity_sweep  # noqa: E402
from analysis.transforms.groups import find_groups  # noqa: E402
from analysis.transforms.quantization import fake_quantize  # noqa: E402


def naive_sweep(model, data, kind: str) -> dict[str, list[float]]:
    """Deep copy, compress one layer, evaluate everything: once per point."""
    accuracy: dict[str, list[float]] = {}
    if kind == "structured":
        for group in find_groups(model, data.x[:1]):
            for ratio in DEFAULT_RATIOS:
                pruned = copy.deepcopy(model)
                group.zero_channels(pruned, group.lowest_l1_channels(model, ratio))
                accuracy.setdefault(group.name, []).append(evaluate(pruned, data).accuracy)
        return accuracy
    for name in prunable_layers(model):
        for point in DEFAULT_BITS[::-1] if kind == "quant" else DEFAULT_RATIOS:
            pruned = copy.deepcopy(model)
            w = pruned.get_submodule(name).weight
            with torch.no_grad():
                if kind == "quant":
                    w.copy_(fake_quantize(w, point)[0])
                else:
                    k = int(round(point * w.numel()))
                    w.view(-1)[torch.argsort(w.abs().flatten(), stable=True)[:k]] = 0.0
            accuracy.setdefault(name, []).append(evaluate(pruned, data).accuracy)
    return accuracy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:digits-resnet")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--kinds", default="structured,unstructured,quant")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the median is reported")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 = least noise on a shared box)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    data = load_data(args.data, getattr(model, "input_shape", None))
    print(
        f"{args.model} on {args.data} ({len(data.x)} samples), torch {torch.__version__}, {args.threads} thread(s)"
    )
    total_naive = total_ours = 0.0
    for kind in args.kinds.split(","):
        naive_times, our_times = [], []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            reference = naive_sweep(model, data, kind)
            naive_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ours = sensitivity_sweep(model, data, kind=kind)
            our_times.append(time.perf_counter() - t0)
        worst = max(
            abs(a - b)
            for name, accs in reference.items()
            for a, b in zip(accs, ours.layers[name].accuracy, strict=True)
        )
        naive, fast = statistics.median(naive_times), statistics.median(our_times)
        total_naive, total_ours = total_naive + naive, total_ours + fast
        points = sum(len(v) for v in reference.values())
        print(
            f"{kind:>12}: {points} points  naive {naive:.2f} s  ours {fast:.2f} s  ratio {fast / naive:.2f}  "
            f"max |accuracy difference| {worst:.1e}"
        )
        if worst > 1e-6:
            print(f"MISMATCH: {kind} accuracies differ from the naive loop by {worst}", file=sys.stderr)
            return 1
    print(
        f"{'all':>12}: naive {total_naive:.2f} s  ours {total_ours:.2f} s  ratio {total_ours / total_naive:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
