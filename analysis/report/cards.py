"""Model cards: the headline numbers of a model (size, cost, accuracy, latency) and where its time goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pandas as pd
from torch import nn

from analysis.cost import size_bytes, summarize
from analysis.data import Dataset
from analysis.evaluate import evaluate
from analysis.latency import DEFAULT_BATCH_SIZE, layer_times, measure_latency
from analysis.metrics import ACCURACY, MetricInfo
from analysis.model.layers import prunable_layers


@dataclass(frozen=True)
class ModelCard:
    """The headline numbers of a model: size, cost per sample, accuracy and measured latency per batch."""

    params: int
    macs: int
    flops: int
    size_bytes: int
    accuracy: float
    loss: float
    samples: int
    latency_ms: float
    latency_p10_ms: float
    latency_p90_ms: float
    batch_size: int
    threads: int
    torch_version: str
    cpu: str
    layers: int
    prunable_layers: int
    extra: dict = field(default_factory=dict)
    metric: MetricInfo = ACCURACY  # what `accuracy` holds (top-1 accuracy by default)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["metric"] = self.metric.to_dict(self.accuracy)
        return out


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
    per batch)."""

    summary = summarize(model, input_shape)
    result = evaluate(model, data, metric=metric)
    latency = measure_latency(
        model, input_shape, batch_size=batch_size, threads=threads, runs=runs, on_wait=on_wait
    )
    return ModelCard(
        params=summary.total_params,
        macs=summary.total_macs,
        flops=summary.total_flops,
        size_bytes=size_bytes(model),
        accuracy=result.accuracy,
        loss=result.loss,
        samples=result.samples,
        latency_ms=latency.median_ms,
        latency_p10_ms=latency.p10_ms,
        latency_p90_ms=latency.p90_ms,
        batch_size=latency.batch_size,
        threads=latency.threads,
        torch_version=latency.torch_version,
        cpu=latency.cpu,
        layers=len(summary.layers),
        prunable_layers=len(prunable_layers(model)),
        extra={"macs_thop": summary.macs_thop, "differences": list(summary.differences)},
        metric=result.metric,
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
