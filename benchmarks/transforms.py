"""Beyond pruning on the zoo: uniform vs k-means 4-bit weights, SVD factorization of the classifier and of
each convolution, and the Deep Compression pipeline (prune -> share -> Huffman) on digits-cnn.

    python benchmarks/transforms.py [--models zoo:digits-cnn ...] [--threads 1] [--json out.json]

Targets (issue 14): Deep Compression on digits-cnn at least 20x smaller (Huffman-coded vs float32) within
1 point of the original after centroid fine-tuning; k-means at 4 bits at least as accurate as uniform 4-bit
on every zoo model; SVD of digits-cnn's classifier.0 at rank 1/4: that layer's params about 4x down and
accuracy within 1 point after one epoch of fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from analysis import compare_latency, count_macs, evaluate, finetune, load_data, load_model  # noqa: E402
from analysis.compression.deep_compression import deep_compression  # noqa: E402
from analysis.compression.plan import FinetuneSettings  # noqa: E402
from analysis.errors import WorkbenchError  # noqa: E402
from analysis.sensitivity.transform_sweeps import factorable_layers, quant_vs_kmeans  # noqa: E402
from analysis.transforms.lowrank import factorize, plan_factorization  # noqa: E402

ZOO = ["zoo:digits-cnn", "zoo:digits-resnet", "zoo:digits-mobilenet", "zoo:digits-mlp"]
RANKS = (0.5, 0.25)
# Deep Compression's per-layer pruning: the first conv (few weights, all needed) least, the big fully
# connected layer most, as the paper prunes conv layers to 30-70% and fc layers to 4-10% kept.
DC_PRUNE = {
    "features.0": 0.5,
    "features.3": 0.7,
    "features.7": 0.7,
    "features.10": 0.8,
    "classifier.0": 0.95,
    "classifier.2": 0.8,
}


def kmeans_vs_uniform(spec: str, model, data) -> dict:
    result = quant_vs_kmeans(model, data, bits=4)
    total = next(r for r in result.rows if r["layer"] == "(all layers)")
    return {
        "model": spec.removeprefix("zoo:"),
        "acc_float": result.baseline_accuracy,
        "acc_uniform4": total["accuracy_uniform"],
        "acc_kmeans4": total["accuracy_kmeans"],
        "sqnr_uniform_db": total["sqnr_uniform_db"],
        "sqnr_kmeans_db": total["sqnr_kmeans_db"],
        "weight_bytes_uniform": total["bytes_uniform"],
        "weight_bytes_kmeans": total["bytes_kmeans"],
        "kmeans_at_least_uniform": total["accuracy_kmeans"] >= total["accuracy_uniform"],
    }


def svd_rows(spec: str, model, data, threads: int, rounds: int) -> list[dict]:
    shape = data.input_shape
    layers = [n for n in factorable_layers(model) if type(model.get_submodule(n)).__name__ == "Conv2d"]
    layers.append(factorable_layers(model)[-1])  # the classifier (the last Linear)
    variants, rows = {"original": model}, []
    base_macs = count_macs(model, shape)
    base_acc = evaluate(model, data).accuracy
    for name in layers:
        for r in RANKS:
            try:
                choice = plan_factorization(model, {name: r}, shape)[name]
            except WorkbenchError as exc:
                rows.append(
                    {"model": spec.removeprefix("zoo:"), "layer": name, "rank_frac": r, "note": str(exc)}
                )
                continue
            new = factorize(model, {name: r})
            key = f"{name}@{r}"
            variants[key] = new
            rows.append(
                {
                    "model": spec.removeprefix("zoo:"),
                    "layer": name,
                    "rank_frac": r,
                    "rank": f"{choice.rank}/{choice.full_rank}",
                    "energy": choice.energy_kept,
                    "layer_params_x": choice.params_before / choice.params_after,
                    "acc_delta_pts": 100 * (evaluate(new, data).accuracy - base_acc),
                    "macs_frac": count_macs(new, shape) / base_macs,
                    "key": key,
                }
            )
    timed = compare_latency(variants, shape, batch_size=32, threads=threads, rounds=rounds, runs_per_round=3)
    for row in rows:
        if "key" in row:
            row["speedup"] = timed["original"].median_ms / timed[row.pop("key")].median_ms
    return rows


def classifier_target(model, data) -> dict:
    base = evaluate(model, data).accuracy
    choice = plan_factorization(model, {"classifier.0": 0.25}, data.input_shape)["classifier.0"]
    factored = factorize(model, {"classifier.0": 0.25})
    before_ft = evaluate(factored, data).accuracy
    row = {
        "rank": f"{choice.rank}/{choice.full_rank}",
        "params_before": choice.params_before,
        "params_after": choice.params_after,
        "params_x": choice.params_before / choice.params_after,
        "acc_original": base,
        "acc_factored": before_ft,
    }
    # analysis.finetune's default Adam lr (1e-3) and a tenth of it: the model is already converged
    for lr in (1e-3, 1e-4):
        after = evaluate(finetune(factored, data, FinetuneSettings(epochs=1, lr=lr)).model, data).accuracy
        row[f"acc_after_1_epoch_lr{lr:g}"] = after
        row[f"within_1_point_lr{lr:g}"] = base - after <= 0.01 + 1e-9
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=ZOO)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="alternating latency rounds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 30)
    data = load_data("digits")
    start = time.perf_counter()
    out: dict = {}

    print("== uniform 4-bit vs k-means 4-bit (every Conv/Linear weight; activations float) ==")
    quant = [kmeans_vs_uniform(spec, load_model(spec), data) for spec in args.models]
    print(pd.DataFrame(quant).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    out["kmeans_vs_uniform"] = quant

    print("\n== SVD of each conv and of the classifier, one layer at a time, no fine-tuning ==")
    svd = [
        row
        for spec in args.models
        for row in svd_rows(spec, load_model(spec), data, args.threads, args.rounds)
    ]
    print(pd.DataFrame(svd).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out["svd"] = svd

    cnn = load_model("zoo:digits-cnn")
    print("\n== digits-cnn classifier.0 at rank 1/4, then 1 epoch of fine-tuning ==")
    target = classifier_target(cnn, data)
    print(json.dumps(target, indent=1))
    out["classifier_rank_quarter"] = target

    print("\n== Deep Compression on digits-cnn: prune (retrain 2 epochs) -> share 4 bits -> Huffman ==")
    print("per-layer pruning:", DC_PRUNE)
    dc = deep_compression(
        cnn, data, prune=DC_PRUNE, bits=4, retrain_epochs=2, centroid_epochs=1, centroid_lr=1e-4
    )
    print(dc.to_frame().to_string(float_format=lambda v: f"{v:.4f}"))
    final = dc.stages[-1]
    print(
        f"final: {final['ratio']:.1f}x smaller, {100 * (final['accuracy'] - dc.stages[0]['accuracy']):+.2f} points "
        f"(target: >= 20x within 1 point)"
    )
    out["deep_compression"] = dc.to_dict()
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
