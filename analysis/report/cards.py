"""Model cards: the headline numbers of a model (size, cost, accuracy, latency) and where its time goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import pandas as pd
from torch import nn

from analysis.cost import count_nonzero, size_bytes, summarize
from analysis.data import Dataset
from analysis.evaluate import evaluate
from analysis.latency import DEFAULT_BATCH_SIZE, layer_times, measure_latency
from analysis.model.layers import prunable_layers
from analysis.runtime.types import ModelMetrics


@dataclass(frozen=True)
class ModelCard:
    """A model's measured numbers (`metrics`: the score, loss, counts, size, and the latency per batch with the
    runtime, version, provider, kind and spread it was measured with) and what a card adds: how many samples
    were scored, the batch, threads, torch and CPU of the timing, the layer counts, and the two MAC
    counters' cross-check (`extra`)."""

    metrics: ModelMetrics
    samples: int
    batch_size: int
    threads: int
    torch_version: str
    cpu: str
    layers: int
    prunable_layers: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """`ModelMetrics.to_dict` (the score under the metric's name, and as `accuracy` as cards always had
        it) and the card's own fields."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metrics"}
        return self.metrics.to_dict() | {"accuracy": self.metrics.accuracy} | own


def model_card(
    model: nn.Module,
    data: Dataset,
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 20,
    on_wait: Callable[[], None] | None = None,
    metric: str = "auto",
) -> ModelCard:
    """Params, MACs and FLOPs per sample, weight bytes, the score in `metric` (test accuracy for a labelled
    classifier; a fidelity metric scores the model against itself: its best) and loss, and latency (ms
    per batch, eager, real kernels)."""

    summary = summarize(model, input_shape)
    result = evaluate(model, data, metric=metric)
    latency = measure_latency(
        model, input_shape, batch_size=batch_size, threads=threads, runs=runs, on_wait=on_wait
    )
    counts = (summary.total_params, count_nonzero(model), summary.total_macs, size_bytes(model))
    return ModelCard(
        metrics=ModelMetrics.measured(result, *counts, latency),
        samples=result.samples,
        batch_size=latency.batch_size,
        threads=latency.threads,
        torch_version=latency.torch_version,
        cpu=latency.cpu,
        layers=len(summary.layers),
        prunable_layers=len(prunable_layers(model)),
        extra={"macs_thop": summary.macs_thop, "differences": list(summary.differences)},
    )


def cost_vs_time(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = DEFAULT_BATCH_SIZE,
    threads: int | None = None,
    runs: int = 10,
    on_wait: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """Per layer: params, MACs and share of MACs, next to measured time (ms per batch) and share of time.

    One row per layer of `summarize` (leaf modules and modules doing their own matrix work). Time shares
    are of the summed per-layer times, which hooks inflate slightly; read them as shares, not totals.
    """

    summary = summarize(model, input_shape)
    times = layer_times(
        model, input_shape, batch_size=batch_size, threads=threads, runs=runs, on_wait=on_wait
    )
    frame = summary.to_frame()
    frame["time_ms"] = [times.get(name, 0.0) for name in frame["name"]]
    total_time = float(frame["time_ms"].sum())
    frame["time_share"] = frame["time_ms"] / total_time if total_time > 0 else 0.0
    frame["params_share"] = frame["params"] / max(int(frame["params"].sum()), 1)
    return frame
