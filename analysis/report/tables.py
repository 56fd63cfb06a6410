"""Plans and results as tables: the per-layer plan editor's rows, before/after, and the Pareto front of
every applied plan (accuracy against measured latency)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from torch import nn

from analysis.compression.plan import CompressionPlan, LayerSettings
from analysis.model.layers import final_classifier, out_channels, prunable_layers


def pareto_front(
    accuracy: list[float] | np.ndarray, latency_ms: list[float] | np.ndarray, higher_is_better: bool = True
) -> np.ndarray:
    """Boolean mask of the points no other point beats: none has a better-or-equal score (higher accuracy;
    lower where `higher_is_better` is False, e.g. MSE) at lower-or-equal latency with at least one of the
    two strictly better."""
    acc = np.asarray(accuracy, dtype=float) * (1.0 if higher_is_better else -1.0)
    lat = np.asarray(latency_ms, dtype=float)
    mask = np.ones(len(acc), dtype=bool)
    for i in range(len(acc)):
        dominated = (acc >= acc[i]) & (lat <= lat[i]) & ((acc > acc[i]) | (lat < lat[i]))
        mask[i] = not dominated.any()
    return mask


def uniform_layer_table(
    model: nn.Module, input_shape: tuple[int, ...], prune: float = 0.0, bits: int = 32
) -> pd.DataFrame:
    """One row per prunable layer (name, type, out channels, params, whether it is the final classifier)
    with the same prune ratio and bits: the starting point of a per-layer plan editor. The final
    classifier's ratio stays 0: removing its outputs would remove classes."""

    final = final_classifier(model, input_shape)
    rows = [
        {
            "layer": name,
            "type": type(module).__name__,
            "channels": out_channels(module),
            "params": sum(p.numel() for p in module.parameters(recurse=False)),
            "final": name == final,
            "prune": 0.0 if name == final else float(prune),
            "bits": int(bits),
        }
        for name, module in prunable_layers(model).items()
    ]
    return pd.DataFrame(rows, columns=["layer", "type", "channels", "params", "final", "prune", "bits"])


def plan_from_table(
    table: pd.DataFrame, criterion: str = "l1", structured: bool = True, finetune: dict | None = None
):
    """A CompressionPlan with one entry per row of `table` (columns layer, prune, bits, optional final)
    that changes anything; untouched rows (prune 0, bits 32) are left to the plan's no-op default. A row
    marked `final` (the classifier) is never pruned, only quantized."""

    layers = {}
    for row in table.itertuples(index=False):
        prune, bits = float(row.prune), int(row.bits)
        if bool(getattr(row, "final", False)):
            prune = 0.0
        if prune > 0 or bits != 32:
            layers[str(row.layer)] = {"prune": prune, "bits": bits}
    default = LayerSettings(prune=0.0, criterion=criterion, structured=structured, bits=32)
    return CompressionPlan(default=default, layers=layers, finetune=finetune or {})


def comparison_frame(result) -> pd.DataFrame:
    """Before and after of a `CompressionResult`, one row per measure, with the change as a ratio or delta."""
    b, a = result.before, result.after

    def ratio(x: float, y: float) -> str:
        return f"{x / y:.2f}x smaller" if y and x >= y else f"{y / x:.2f}x larger" if x else "n/a"

    score = getattr(b, "metric", None)
    if score is None or score.percent:
        name = "accuracy" if score is None else score.name
        first = (
            f"{name} (%)",
            b.accuracy * 100,
            a.accuracy * 100,
            f"{(a.accuracy - b.accuracy) * 100:+.2f} points",
        )
    else:
        unit = f" ({score.unit})" if score.unit else ""
        first = (f"{score.name}{unit}", b.accuracy, a.accuracy, f"{a.accuracy - b.accuracy:+.4g}{unit}")
    rows = [
        first,
        ("loss", b.loss, a.loss, f"{a.loss - b.loss:+.4f}"),
        (
            f"latency (ms per batch of {result.batch_size})",
            b.latency_ms,
            a.latency_ms,
            f"{result.speedup:.2f}x speedup ({a.latency_label})",
        ),
        ("MACs per sample", b.macs, a.macs, ratio(b.macs, a.macs)),
        ("params", b.params, a.params, ratio(b.params, a.params)),
        ("nonzero params", b.nonzero_params, a.nonzero_params, ratio(b.nonzero_params, a.nonzero_params)),
        ("size (bytes)", b.size_bytes, a.size_bytes, ratio(b.size_bytes, a.size_bytes)),
    ]
    return pd.DataFrame(rows, columns=["measure", "before", "after", "change"])


def run_point(result, label: str) -> dict:
    """One applied configuration as a row of the accuracy-vs-latency table."""
    return {
        "label": label,
        "accuracy": result.after.accuracy,
        "latency_ms": result.after.latency_ms,
        "macs": result.after.macs,
        "params": result.after.params,
        "size_bytes": result.after.size_bytes,
        "speedup": result.speedup,
        "latency_label": result.after.latency_label,
        "plan": result.plan.to_json(),
    }


def pareto_table(result, runs: list[dict]) -> pd.DataFrame:
    """The original model (from `result.before`) and every applied plan (`run_point` rows), with a `pareto`
    column marking the points no other beats on both accuracy and latency."""
    b = result.before
    original = {
        "label": "original",
        "accuracy": b.accuracy,
        "latency_ms": b.latency_ms,
        "macs": b.macs,
        "params": b.params,
        "size_bytes": b.size_bytes,
        "speedup": 1.0,
        "latency_label": b.latency_label,
        "plan": "",
    }
    frame = pd.DataFrame([original, *runs])
    higher = getattr(getattr(b, "metric", None), "higher_is_better", True)
    frame["pareto"] = pareto_front(frame["accuracy"], frame["latency_ms"], higher)
    return frame
