"""Sensitivity sweep speed: ours (in-place edits, upstream activations computed once and reused by every
point, only the downstream part recomputed) vs the plain copy-prune-evaluate loop.

The plain loop is NNI's and Distiller's: for every (layer, ratio) point, deep-copy the model, compress one
layer, evaluate the whole network. Ours runs as the command line and the app run it (stoppable between
layers, with a progress callback). Both run in this process, alternating, on the same model and data, and
must give the same accuracies (to 1e-6). Prints both times per model and kind, and the ratio ours / plain,
measured in the same run (the machine may be shared: compare ratios, not seconds).

Models: the zoo (`zoo:digits-resnet`, `zoo:digits-cnn`), our own residual net (`benchmarks/nets.py`, not a
zoo model) on the digits, and ResNet-18 at 224 x 224 on a few dozen images (`--r18-images`).

    python benchmarks/sensitivity_speed.py [--models zoo:digits-resnet,zoo:digits-cnn,residual,resnet18]
        [--kinds unstructured,structured,quant] [--ratios 0.3,0.6,0.9] [--rounds 2] [--threads 1]
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nets import residual_net, resnet18_with_images  # noqa: E402

from analysis import evaluate, load_data, load_model  # noqa: E402
from analysis.model.layers import prunable_layers  # noqa: E402
from analysis.sensitivity.sweep import sensitivity_sweep  # noqa: E402
from analysis.transforms.groups import find_groups  # noqa: E402
from analysis.transforms.quantization import fake_quantize  # noqa: E402


def plain_sweep(model, data, kind: str, values) -> dict[str, list[float]]:
    """Deep copy, compress one layer, evaluate everything: once per point."""
    accuracy: dict[str, list[float]] = {}
    if kind == "structured":
        for group in find_groups(model, data.x[:1]):
            for ratio in values:
                pruned = copy.deepcopy(model)
                group.zero_channels(pruned, group.lowest_l1_channels(model, ratio))
                accuracy.setdefault(group.name, []).append(evaluate(pruned, data).accuracy)
        return accuracy
    for name in prunable_layers(model):
        for point in sorted(values, reverse=True) if kind == "quant" else values:  # the sweep's order
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


def our_sweep(model, data, kind: str, values):
    """The sweep as `python -m analysis sensitivity` runs it: stoppable, with a progress callback."""
    options = {"bits": values} if kind == "quant" else {"ratios": values}
    return sensitivity_sweep(
        model, data, kind=kind, should_stop=lambda: False, progress=lambda d, t: None, **options
    )


def load(name: str, r18_images: int):
    if name == "residual":
        model = residual_net()
        return "residual net (benchmarks/nets.py)", model, load_data("digits")
    if name == "resnet18":
        model, data = resnet18_with_images(r18_images)
        return f"ResNet-18 at 224x224, {r18_images} images", model, data
    model = load_model(name)
    return name, model, load_data("digits", getattr(model, "input_shape", None))


def _timed(fn, *args) -> tuple[object, float, float]:
    """fn(*args), its wall time and this process's CPU time (s): on a shared machine the CPU time of a
    one-thread run is the steadier of the two."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def compare(model, data, kind: str, values, rounds: int):
    """Median wall and CPU seconds of the plain loop and ours (alternating rounds), the largest accuracy
    difference, and the number of points."""
    plain_times, our_times = [], []
    for _ in range(rounds):
        reference, wall, cpu = _timed(plain_sweep, model, data, kind, values)
        plain_times.append((wall, cpu))
        ours, wall, cpu = _timed(our_sweep, model, data, kind, values)
        our_times.append((wall, cpu))
    worst = max(
        abs(a - b)
        for name, accs in reference.items()
        for a, b in zip(accs, ours.layers[name].accuracy, strict=True)
    )
    points = sum(len(v) for v in reference.values())
    medians = [statistics.median(t[i] for t in times) for times in (plain_times, our_times) for i in (0, 1)]
    return medians, worst, points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="zoo:digits-resnet,zoo:digits-cnn,residual,resnet18")
    parser.add_argument("--kinds", default="unstructured,structured,quant")
    parser.add_argument("--ratios", default="0.3,0.6,0.9", help="ratios (unstructured, structured)")
    parser.add_argument("--bits", default="4,8", help="bit widths (quant)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the median is reported")
    parser.add_argument("--r18-images", type=int, default=32, help="images for ResNet-18 at 224x224")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 = least noise on a shared box)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios = [float(v) for v in args.ratios.split(",")]
    bits = [int(v) for v in args.bits.split(",")]
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), ratios {ratios}, bits {bits}; ratio = ours / plain"
    )
    failed = False
    for name in args.models.split(","):
        label, model, data = load(name, args.r18_images)
        kinds = ["unstructured"] if name == "resnet18" else args.kinds.split(",")
        for kind in kinds:
            values = bits if kind == "quant" else ratios
            (plain, plain_cpu, ours, ours_cpu), worst, points = compare(
                model, data, kind, values, args.rounds
            )
            print(
                f"{label} ({len(data.x)} samples) {kind}: {points} points  plain {plain:.2f} s  ours {ours:.2f} s"
                f"  ratio {ours / plain:.2f} (CPU time: {ours_cpu / plain_cpu:.2f})  "
                f"max |accuracy difference| {worst:.1e}",
                flush=True,
            )
            if worst > 1e-6:
                print(
                    f"MISMATCH: {label} {kind} accuracies differ from the plain loop by {worst}",
                    file=sys.stderr,
                )
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
