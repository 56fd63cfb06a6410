"""Pruning methods at equal final MACs and equal training budget (issue 13), plus the recovery recipe.

Methods, each on a private copy of the zoo model, ending at about `--macs` of the original MACs and trained
for `--epochs` passes over the training split in all (the same optimizer, learning-rate schedule and
distillation from the original for every method):

- `uniform`:   one-shot, every group at the same ratio (L1), then fine-tuning;
- `suggested`: one-shot, per-group ratios from the structured sensitivity sweep (`suggest`), then fine-tuning;
- `taylor-iter`: global Taylor ranking with L2 layer normalization, N channels per step, fine-tuning between
  steps (Molchanov et al. 2017, as published), then the rest of the budget as recovery;
- `taylor-iter-mean`: the same with each group's scores over their mean (the schedules' default);
- `agp`: structured AGP (Zhu & Gupta cubic schedule per layer, L1 within each group), same split;
- `slimming`: L1 on BatchNorm scales for half the budget, prune by |gamma| to the MACs, fine-tune the rest;
- `group-lasso`: SSL filter-group penalty for half the budget, prune by norm to the MACs, fine-tune the rest.

Models: the zoo and `residual`, our own residual net (`benchmarks/nets.py`, not a zoo model). Prints
accuracy, MACs fraction, eager latency (batch 32, 1 thread, median) and wall time per method. The
accuracies are on the 359-image evaluation split: one image is 0.28 points.

`--recovery` instead compares fine-tuning recipes at 50% of the filters (uniform L1), each ingredient of
the recovery recipe added to a plain loop (Adam 1e-3, constant, 3 epochs, cross-entropy), and the default a
plan gets with `"finetune": {}`.

    python benchmarks/methods.py [--models zoo:digits-cnn zoo:digits-resnet residual] [--epochs 6] [--macs 0.33]
    python benchmarks/methods.py --recovery [--models zoo:digits-resnet residual]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import count_macs, evaluate, load_data, load_model, measure_latency  # noqa: E402
from analysis.compression.finetune import finetune  # noqa: E402
from analysis.compression.plan import CompressionPlan, FinetuneSettings  # noqa: E402
from analysis.compression.schedules import (  # noqa: E402
    RECOVERY_LR_SCHEDULE,
    recovery_epochs,
    recovery_finetune,
    run_schedule,
)
from analysis.compression.suggest import suggest, uniform_plan  # noqa: E402
from analysis.compression.training import recalibrate_bn  # noqa: E402
from analysis.model.layers import copy_model  # noqa: E402
from analysis.sensitivity.sweep import sensitivity_sweep  # noqa: E402
from analysis.transforms.groups import find_groups
from analysis.transforms.pruning import prune_structured

STEPS = 5


def load(spec: str):
    """A zoo model by spec, or `residual`: our own residual net (`benchmarks/nets.py`)."""
    if spec == "residual":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from nets import residual_net

        return residual_net()
    return load_model(spec)


def oneshot(model, data, ratios, epochs, ft, schedule=RECOVERY_LR_SCHEDULE, recalibrate=True):
    work = copy_model(model).eval()
    prune_structured(work, ratios, data.input_shape)
    if recalibrate:
        recalibrate_bn(work, data)
    if epochs:
        settings = FinetuneSettings(**{**ft.to_dict(), "epochs": epochs})
        work = finetune(work, data, settings, teacher=model, inplace=True, lr_schedule=schedule).model
    return work


def measure(name, method, pruned, data, base_acc, base_macs, base_ms, seconds, threads):
    acc = evaluate(pruned, data).accuracy
    macs = count_macs(pruned, data.input_shape)
    ms = measure_latency(pruned, data.input_shape, batch_size=32, threads=threads, runs=30).median_ms
    row = (f"{name:>13} | {method:>12} | {100 * base_acc:6.2f} | {100 * acc:6.2f} | {100 * (acc - base_acc):+6.2f} | "
           f"{macs / base_macs:6.3f} | {base_ms:7.3f} | {ms:7.3f} | {base_ms / ms:5.2f}x | {seconds:7.1f}")  # fmt: skip
    print(row, flush=True)


def methods(args) -> None:
    print(f"equal budget: {args.epochs} epochs in all; target MACs {args.macs}; latency eager, batch 32, "
          f"{args.threads} thread(s)")  # fmt: skip
    print(
        "        model |       method | acc0 % |  acc % | d pts  | MACs f | ms0     | ms      | speed | wall s"
    )
    for spec in args.models:
        model = load(spec)
        data = load_data("digits", model.input_shape)
        shape = data.input_shape
        base_acc = evaluate(model, data).accuracy
        base_macs = count_macs(model, shape)
        base_ms = measure_latency(model, shape, batch_size=32, threads=args.threads, runs=30).median_ms
        ft = recovery_finetune(len(data.x_train))
        name = spec.removeprefix("zoo:")
        todo = args.methods

        def show(method, pruned, started, ctx=(name, model, data, base_acc, base_macs, base_ms)):
            measure(ctx[0], method, pruned, *ctx[2:], time.perf_counter() - started, args.threads)

        if "uniform" in todo:
            t = time.perf_counter()
            plan, ratio = uniform_plan(model, shape, args.macs)
            ratios = {g.name: ratio for g in find_groups(model, shape)}
            show("uniform", oneshot(model, data, ratios, args.epochs, ft), t)
        if "suggested" in todo:
            t = time.perf_counter()
            sens = sensitivity_sweep(model, data, kind="structured")
            found = suggest(sens, f"macs={args.macs}", model=model, data=data)
            show("suggested", oneshot(model, data, found.ratios, args.epochs, ft), t)
        per_step = args.epochs / 2 / STEPS  # half the budget between steps, half as recovery at the end
        rest = args.epochs - round(per_step * STEPS)
        common = {"target": {"macs": args.macs}, "finetune_epochs": rest}
        schedules = {
            "taylor-iter": {"method": "iterative", "criterion": "taylor", "normalize": "l2", "steps": STEPS,
                            "epochs_per_step": per_step},
            "taylor-iter-mean": {"method": "iterative", "criterion": "taylor", "normalize": "mean",
                                 "steps": STEPS, "epochs_per_step": per_step},
            "agp": {"method": "agp", "criterion": "l1", "normalize": "l2", "steps": STEPS,
                    "epochs_per_step": per_step},
            "slimming": {"method": "slimming", "strength": args.strength, "epochs": args.epochs - rest},
            "group-lasso": {"method": "group-lasso", "strength": args.strength, "epochs": args.epochs - rest},
        }  # fmt: skip
        for method, settings in schedules.items():
            if method not in todo:
                continue
            t = time.perf_counter()
            result = run_schedule(model, data, {**settings, **common}, finetune=ft)
            show(method, result.model, t)
            if result.notes:
                print(f"{'':>13}   notes: {'; '.join(result.notes)}", flush=True)


def recovery(args) -> None:
    """Each ingredient of the recovery recipe against a plain loop, at 50% of the filters (uniform L1)."""
    print("recovery at 50% of filters (uniform L1); accuracy on the digits evaluation split")
    print(
        "        model |                                recipe | acc0 % |  acc % | d pts  | epochs | wall s"
    )
    for spec in args.models:
        model = load(spec)
        data = load_data("digits", model.input_shape)
        base = evaluate(model, data).accuracy
        ratios = {g.name: 0.5 for g in find_groups(model, data.input_shape)}
        plain = FinetuneSettings(epochs=3)
        default = CompressionPlan(finetune={}).finetune  # what a plan's "finetune": {} runs
        auto = recovery_epochs(len(data.x_train))
        recipes = [  # label, settings, lr schedule, BatchNorm re-estimated first
            ("plain loop: Adam 1e-3 const, CE", plain, "constant", False),
            ("+ BN recalibration", plain, "constant", True),
            ("+ warm-up 10%", replace(plain, warmup=0.1), "constant", False),
            ("+ distillation (alpha 0.5, T 4)", replace(plain, distill=True), "constant", False),
            ("+ cosine decay", plain, "cosine", False),
            ("+ lr 3e-3", replace(plain, lr=3e-3), "constant", False),
            ("recovery recipe, 3 epochs", replace(default, epochs=3), "cosine", True),
            (f"finetune {{}} (recovery, {auto} epochs)", replace(default, epochs=auto), "cosine", True),
        ]
        for label, settings, schedule, recal in recipes:
            t = time.perf_counter()
            pruned = oneshot(model, data, ratios, settings.epochs, settings, schedule, recalibrate=recal)
            acc = evaluate(pruned, data).accuracy
            print(f"{spec.removeprefix('zoo:'):>13} | {label:>37} | {100 * base:6.2f} | {100 * acc:6.2f} | "
                  f"{100 * (acc - base):+6.2f} | {settings.epochs:6d} | {time.perf_counter() - t:6.1f}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["zoo:digits-cnn", "zoo:digits-resnet", "residual"])
    parser.add_argument("--epochs", type=int, default=6, help="training budget per method, in epochs")
    parser.add_argument("--macs", type=float, default=0.33, help="MAC fraction to keep")
    parser.add_argument("--strength", type=float, default=1e-3, help="slimming / group-lasso penalty")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="+",
                        default=["uniform", "suggested", "taylor-iter", "taylor-iter-mean", "agp", "slimming",
                                 "group-lasso"])  # fmt: skip
    parser.add_argument("--recovery", action="store_true", help="compare recovery recipes at 50%% filters")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    recovery(args) if args.recovery else methods(args)


if __name__ == "__main__":
    main()
