"""How well each filter-importance criterion agrees with the oracle, on every zoo model.

Prints, per criterion and zoo model, Spearman's rho with the oracle (|loss change| when the channel is
zeroed after its norm): pooled over all channels (criteria L2-normalised per layer) and the mean over
layers. The per-layer mean is the cleaner comparison: the pooled figure also rewards a criterion for
matching between-layer differences (after L2 normalisation a layer with few channels gets larger scores,
and the final classifier, with 10 channels, also has the largest loss changes). Molchanov et al. (2017, Table 1, VGG-16 on Birds-200) found Taylor closest to the oracle and the
weight norms furthest; the last lines say whether that order holds here.

    python benchmarks/criteria_vs_oracle.py [--max-samples 2048] [--split train|test] [--models ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import load_data, load_model  # noqa: E402
from analysis.data import Dataset  # noqa: E402
from analysis.importance import rank_channels  # noqa: E402
from analysis.io import to_json, write_text_atomic  # noqa: E402

MODELS = ("zoo:digits-cnn", "zoo:digits-resnet", "zoo:digits-mobilenet", "zoo:digits-mlp")
WEIGHT_NORMS = ("l1", "l2")


def _table(rows: dict[str, dict[str, float]], models: list[str], title: str) -> str:
    width = max(len(m) for m in models) + 2
    lines = [title, "criterion".ljust(16) + "".join(m.removeprefix("zoo:").rjust(width) for m in models)]
    criteria = list(next(iter(rows.values())))
    for c in criteria:
        cells = []
        for m in models:
            v = rows[m].get(c)
            cells.append(("-" if v is None or v != v else f"{v:+.3f}").rjust(width))
        lines.append(c.ljust(16) + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--max-samples", type=int, default=2048, help="calibration and oracle samples")
    parser.add_argument(
        "--split", choices=["train", "test"], default="train", help="split the criteria and oracle use"
    )
    parser.add_argument("--json", help="also write the full results here")
    args = parser.parse_args(argv)

    pooled: dict[str, dict[str, float]] = {}
    mean: dict[str, dict[str, float]] = {}
    full = {}
    for spec in args.models:
        model = load_model(spec)
        data = load_data("digits", getattr(model, "input_shape", None))
        if args.split == "test":  # measure on the evaluation split instead: same API, swapped split
            data = Dataset(data.spec, data.x, data.y, data.x, data.y, data.num_classes)
        start = time.perf_counter()
        result = rank_channels(model, data, max_samples=args.max_samples)
        seconds = time.perf_counter() - start
        pooled[spec] = result.spearman_vs_oracle
        mean[spec] = result.spearman_mean_per_layer
        full[spec] = result.to_dict()
        print(
            f"{spec}: {sum(len(next(iter(v.values()))) for v in result.layers.values())} channels in "
            f"{len(result.layers)} layers, {result.samples} samples ({args.split}), oracle baseline loss "
            f"{result.oracle_baseline_loss:.3g}, {seconds:.1f} s",
            file=sys.stderr,
        )
    print(_table(pooled, args.models, f"Spearman vs oracle, pooled over all channels ({args.split} split)"))
    print()
    print(_table(mean, args.models, f"Spearman vs oracle, mean over layers ({args.split} split)"))
    print()
    for label, table in (("mean over layers", mean), ("pooled", pooled)):
        for spec in args.models:
            rho = {c: v for c, v in table[spec].items() if v == v}  # drop NaN (bn-scale without norms)
            ranked = sorted(rho, key=lambda c: -rho[c])
            print(
                f"{label:>16} {spec}: {' > '.join(ranked)}; Taylor best: {'yes' if ranked[0] == 'taylor' else 'no'}; "
                f"weight norms ({', '.join(WEIGHT_NORMS)}) below Taylor: "
                f"{'yes' if all(rho[c] < rho['taylor'] for c in WEIGHT_NORMS) else 'no'}; "
                f"a weight norm last: {'yes' if ranked[-1] in WEIGHT_NORMS else 'no'}"
            )
    if args.json:
        write_text_atomic(args.json, to_json(full))
    return 0


if __name__ == "__main__":
    sys.exit(main())
