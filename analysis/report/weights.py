"""Per-layer weight statistics and histograms, and what a bit width does to them.

The weights page shows these; a notebook gets the same numbers from the same calls. Histograms are
binned here (numpy), so a chart carries a few hundred bin counts instead of every weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from analysis.importance.base import prunable_layers
from analysis.transforms.quantization import channel_scales, fake_quantize, levels

DEFAULT_OUTLIER_SIGMA = 3.0


def _weights(model: nn.Module, layer: str) -> torch.Tensor:
    module = prunable_layers(model, [layer])[layer]
    return module.weight.detach().float()


def weight_stats(
    model: nn.Module, layers: list[str] | None = None, outlier_sigma: float = DEFAULT_OUTLIER_SIGMA
) -> pd.DataFrame:
    """One row per prunable layer: weight count, sparsity (fraction exactly zero), mean, std, min, max,
    max |w|, and outliers (weights farther than `outlier_sigma` standard deviations from the mean),
    as a count and a fraction. `std` is the population standard deviation."""
    rows = []
    for name in prunable_layers(model, layers):
        w = _weights(model, name).reshape(-1).double()
        n = w.numel()
        mean = float(w.mean())
        std = float(w.std(unbiased=False)) if n else 0.0
        outliers = int(((w - mean).abs() > outlier_sigma * std).sum()) if std > 0 else 0
        rows.append(
            {
                "layer": name,
                "weights": n,
                "sparsity": float((w == 0).sum()) / n if n else 0.0,
                "mean": mean,
                "std": std,
                "min": float(w.min()) if n else 0.0,
                "max": float(w.max()) if n else 0.0,
                "abs_max": float(w.abs().max()) if n else 0.0,
                "outliers": outliers,
                "outlier_frac": outliers / n if n else 0.0,
            }
        )
    columns = ["layer", "weights", "sparsity", "mean", "std", "min", "max", "abs_max", "outliers"]
    return pd.DataFrame(rows, columns=[*columns, "outlier_frac"])


@dataclass(frozen=True)
class Histogram:
    """Counts of a layer's weights in equal-width bins; `edges` has one more entry than `counts`."""

    layer: str
    counts: np.ndarray
    edges: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def density(self) -> np.ndarray:
        """Counts normalised to unit area, so layers of different sizes overlay on one axis."""
        widths = np.diff(self.edges)
        total = self.counts.sum()
        return self.counts / (total * widths) if total else self.counts.astype(float)


def weight_histograms(
    model: nn.Module, layers: list[str] | None = None, bins: int = 80, standardize: bool = False
) -> list[Histogram]:
    """A histogram of each prunable layer's weights (or of (w - mean) / std with `standardize`)."""
    out = []
    for name in prunable_layers(model, layers):
        w = _weights(model, name).reshape(-1).numpy().astype(np.float64)
        if standardize and w.std() > 0:
            w = (w - w.mean()) / w.std()
        counts, edges = np.histogram(w, bins=bins)
        out.append(Histogram(name, counts, edges))
    return out


@dataclass(frozen=True)
class QuantizationView:
    """What `bits` does to one layer: the histogram before and after fake quantization, the grid of
    levels of the channel with the largest range (every channel's grid is that one scaled down), and
    the signal-to-quantization-noise ratio in dB over the whole layer."""

    layer: str
    bits: int
    before: Histogram
    after: Histogram
    grid: np.ndarray
    scale_min: float
    scale_max: float
    sqnr_db: float
    distinct_values_max: int


def quantization_view(model: nn.Module, layer: str, bits: int, bins: int = 120) -> QuantizationView:
    """The chosen layer's weights at `bits` (symmetric per-output-channel, docs/contract.md section 5)."""
    w = _weights(model, layer)
    q, scales = fake_quantize(w, bits)
    flat_w = w.reshape(-1).numpy().astype(np.float64)
    flat_q = q.reshape(-1).numpy().astype(np.float64)
    lo, hi = float(flat_w.min()), float(flat_w.max())
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    before = Histogram(layer, np.histogram(flat_w, bins=edges)[0], edges)
    after = Histogram(layer, np.histogram(flat_q, bins=edges)[0], edges)
    widest = float(channel_scales(w, bits).max())
    grid = np.arange(-levels(bits), levels(bits) + 1) * widest
    noise = float(np.sum((flat_w - flat_q) ** 2))
    signal = float(np.sum(flat_w**2))
    sqnr = float("inf") if noise == 0 else 10 * np.log10(signal / noise) if signal > 0 else 0.0
    per_channel = q.reshape(q.shape[0], -1)
    distinct = max(int(torch.unique(row).numel()) for row in per_channel) if q.numel() else 0
    return QuantizationView(
        layer=layer,
        bits=bits,
        before=before,
        after=after,
        grid=grid,
        scale_min=float(scales.min()),
        scale_max=float(scales.max()),
        sqnr_db=sqnr,
        distinct_values_max=distinct,
    )
