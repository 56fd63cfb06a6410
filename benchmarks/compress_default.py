"""Compression on the zoo: uniform vs suggested plans at the same MACs, with and without fine-tuning and
distillation; plus 50% of filters removed and 8-bit weights. Prints accuracy, MACs, measured latency
(before and after timed in alternating rounds in one process) and efficiency = speedup / MAC reduction.

    python benchmarks/compress_default.py [--models zoo:digits-cnn zoo:digits-resnet] [--threads 1]

Targets (issue 5): 50% of filters removed -> MACs at most half and efficiency >= 0.7 on digits-cnn at
batch 32; 3 epochs of fine-tuning with distillation at half the MACs -> within 1 point of the original;
8-bit weights -> within 0.5 points and at most 30% of the size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import load_data, load_model  # noqa: E402
from analysis.compression.compress import compress  # noqa: E402
from analysis.compression.plan import CompressionPlan  # noqa: E402
from analysis.compression.suggest import suggest, uniform_plan  # noqa: E402
from analysis.sensitivity.sweep import sensitivity_sweep  # noqa: E402

COLUMNS = ("model", "plan", "recovery", "acc_before", "acc_after", "delta_pts", "macs_frac", "size_frac",
           "lat_before_ms", "lat_after_ms", "label", "speedup", "mac_red", "efficiency", "eff_paired")  # fmt: skip


def row(model: str, plan: str, recovery: str, r) -> dict:
    return {
        "model": model.removeprefix("zoo:"),
        "plan": plan,
        "recovery": recovery,
        "acc_before": r.before.accuracy,
        "acc_after": r.after.accuracy,
        "delta_pts": 100 * r.accuracy_delta,
        "macs_frac": r.after.macs / r.before.macs,
        "size_frac": r.after.size_bytes / r.before.size_bytes,
        "lat_before_ms": r.before.latency_ms,
        "lat_after_ms": r.after.latency_ms,
        "label": r.after.latency_label,
        "speedup": r.speedup,
        "mac_red": r.mac_reduction,
        "efficiency": r.efficiency,
        "eff_paired": r.efficiency_paired,
    }


def show(rows: list[dict], header: bool = True) -> None:
    if header:
        print(" | ".join(f"{c:>13}" for c in COLUMNS))
    for r in rows:
        print(" | ".join(f"{r[c]:>13.4f}" if isinstance(r[c], float) else f"{r[c]!s:>13}" for c in COLUMNS))
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["zoo:digits-cnn", "zoo:digits-resnet"])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for timing (default 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=20, help="alternating latency rounds per comparison")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.5, help="MAC fraction to keep (default 0.5)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    timing = {"batch_size": args.batch_size, "threads": args.threads, "latency_rounds": args.rounds}
    rows: list[dict] = []
    for spec in args.models:
        model = load_model(spec)
        data = load_data("digits", model.input_shape)
        start = time.perf_counter()
        sens = sensitivity_sweep(model, data, kind="structured")
        print(f"\n{spec}: structured sweep {time.perf_counter() - start:.1f} s", flush=True)
        suggested = suggest(sens, f"macs={args.budget}", model=model, data=data)
        uniform, ratio = uniform_plan(model, data.input_shape, args.budget)
        print(f"  uniform ratio {ratio} | suggested {json.dumps(suggested.ratios)}", flush=True)
        plans = {f"uniform {ratio:.3f}": uniform, "suggested": suggested.plan}
        recoveries = {
            "none": {"epochs": 0},
            f"ft {args.epochs}ep": {"epochs": args.epochs, "distill": False},
            f"ft {args.epochs}ep+KD": {"epochs": args.epochs, "distill": True},
        }
        for plan_name, plan in plans.items():
            for rec_name, ft in recoveries.items():
                result = compress(model, plan.with_finetune(**ft), data, **timing)
                rows.append(row(spec, plan_name, rec_name, result))
                show(rows[-1:], header=len(rows) == 1)
        filters = compress(model, CompressionPlan.uniform(0.5), data, **timing)
        rows.append(row(spec, "50% filters", "none", filters))
        show(rows[-1:], header=False)
        eight = compress(model, CompressionPlan.uniform(bits=8), data, **timing)
        rows.append(row(spec, "8-bit weights", "none", eight))
        show(rows[-1:], header=False)
        if eight.simulated is not None:
            print(
                f"  8-bit all-float (weights-only) accuracy {eight.simulated.accuracy:.4f}, "
                f"latency {eight.simulated.latency_ms:.3f} ms (simulated); int8 Linear: {eight.int8_layers}"
            )
    print(
        f"\nAll rows (batch {args.batch_size}, {args.threads} thread(s), {args.rounds} alternating rounds):"
    )
    show(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
