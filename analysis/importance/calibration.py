"""The one calibration pass behind every activation criterion: the activation statistics they declare
(`Criterion.needs`), for all layers from ONE forward (and, when `taylor` is asked for, ONE backward) per
batch of the train split. The criteria turn the statistics into scores (`ActivationCriterion`).

Statistics, float64 per output channel and layer (`STATISTICS`): `zeros` (values exactly zero after the
norm and activation), `sums` (their sum), `values` (values seen per channel, one number), `taylor` (sum
over samples of |sum over positions of a x dL/da|, a after the norm).

Measurement points come from `features.py`: after each layer's norm (Taylor) and after its activation too
(APoZ, mean activation). The pass runs on a private deep copy of the model in eval mode with `Tap` modules
inserted in its traced graph, so the caller's model keeps its weights, mode, gradients and hooks.

Taylor uses captum's `LayerGradientXActivation` on the post-norm taps with a forward function that returns
the per-sample cross-entropy (reduction="none"). Captum differentiates the sum of that vector; since in
eval mode sample n's activations only reach sample n's loss, the gradient it gives for sample n is
dL_n/da_n, so |sum over positions of a x grad| per sample is exactly Molchanov et al.'s per-sample term,
independent of the batch size (a mean-reduced loss would scale it by 1/batch).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from analysis.data import DEFAULT_MAX_SAMPLES, Dataset
from analysis.devices import on_device, resolve_device
from analysis.errors import WorkbenchError
from analysis.importance.features import FeatureGraph, build_tapped, find_features
from analysis.metrics import per_sample_loss
from analysis.model.inputs import InputBatch, to_device
from analysis.model.layers import call_model
from analysis.progress import Progress
from analysis.validate import require_data, whole

STATISTICS = ("zeros", "sums", "values", "taylor")
_POST_ACTIVATION = ("zeros", "sums", "values")
BATCH_SIZE = 128


@dataclass(frozen=True)
class Calibration:
    """`statistics[statistic][layer]` (float64; NaN for a layer the forward never called); `samples`: train
    samples seen; `features`: where each layer was measured."""

    statistics: dict[str, dict[str, torch.Tensor]]
    samples: int
    features: FeatureGraph


def _reduce_to_channels(t: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """Sum over every dim except batch (0) and the channel dim: N x C."""
    dim = channel_dim % t.ndim
    rest = [d for d in range(1, t.ndim) if d != dim]
    out = t.sum(dim=rest) if rest else t
    return out if dim == 1 else out.reshape(t.shape[0], -1)


def calibrate(
    model: nn.Module,
    data: Dataset | None,
    layers: Iterable[str] | None = None,
    needs: Iterable[str] = STATISTICS,
    *,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    features: FeatureGraph | None = None,
    device: str | torch.device | None = None,
) -> Calibration:
    """The statistics `needs` (see `STATISTICS`) for every selected layer, in one pass over at most
    `max_samples` samples of `data`'s train split. `progress(samples, total)`. `device` (auto, cpu,
    cuda[:N]) runs the pass on a private copy there; statistics come back on the CPU."""
    # ~80 lines of body: the statistics share one hooked pass and its closures (one pass over the data
    # is the point of this function), so they stay in one place.
    wanted = tuple(dict.fromkeys(needs))
    unknown = [c for c in wanted if c not in STATISTICS]
    if unknown:
        raise WorkbenchError(f"not an activation statistic: {unknown[0]!r} (use {', '.join(STATISTICS)})")
    data = require_data("calibration", data)
    max_samples = whole(max_samples, "max_samples")
    features = features or find_features(model, None if layers is None else list(layers))
    total = min(max_samples, len(data.x_train))
    if total == 0:
        raise WorkbenchError("the calibration split is empty: the data spec has no training samples")

    dev = None if device is None else resolve_device(device)
    work = (copy.deepcopy(model) if dev is None else on_device(model, dev)).eval()
    tapped = build_tapped(work, features)
    taylor_taps = [(name, m) for name, modules in tapped.attribution_modules.items() for m in modules]
    if "taylor" in wanted and not features.traced:
        # Captum needs every hooked module to run: find the layers the forward actually calls.
        with torch.no_grad():
            first = data.x_train[:1]
            call_model(tapped.module, first if dev is None else to_device(first, dev))
        called = {name for name, taps in tapped.post_norm.items() if any(t.calls for t in taps)}
        taylor_taps = [(name, m) for name, m in taylor_taps if name in called]
    zeros = {name: torch.zeros(lf.channels, dtype=torch.float64) for name, lf in features.layers.items()}
    sums = {name: torch.zeros(lf.channels, dtype=torch.float64) for name, lf in features.layers.items()}
    counts = dict.fromkeys(features.layers, 0)
    taylor = {name: torch.zeros(lf.channels, dtype=torch.float64) for name, lf in features.layers.items()}

    def recorder(name: str, channel_dim: int):
        def record(x: torch.Tensor) -> None:
            with torch.no_grad():
                x = x.detach()
                zeros[name] += _reduce_to_channels((x == 0).double(), channel_dim).sum(0).cpu()
                sums[name] += _reduce_to_channels(x.double(), channel_dim).sum(0).cpu()
                counts[name] += x.numel() // features.layers[name].channels

        return record

    if any(s in wanted for s in _POST_ACTIVATION):
        for name, taps in tapped.post_activation.items():
            for tap in taps:
                tap.callback = recorder(name, features.layers[name].channel_dim)

    attribution = None
    if "taylor" in wanted and taylor_taps:
        from captum.attr import LayerGradientXActivation

        spec = data.input_spec

        def objective(*args: torch.Tensor) -> torch.Tensor:
            # Captum passes the inputs as positional tensors, then the labels (None: unlabelled data).
            *tensors, y = args
            return per_sample_loss(call_model(tapped.module, spec.pack(tensors)), y)

        attribution = LayerGradientXActivation(objective, [tap for _, tap in taylor_taps])

    seen = 0
    for x, y in data.batches("train", batch_size, total):
        if dev is not None:
            x, y = to_device(x, dev), None if y is None else y.to(dev)
        if attribution is not None:
            tensors = tuple(x.tensors()) if isinstance(x, InputBatch) else (x,)
            attributions = attribution.attribute(tensors, additional_forward_args=(y,))
            per_layer: dict[str, torch.Tensor] = {}
            for (name, _), attr in zip(taylor_taps, attributions, strict=True):
                channel_sums = _reduce_to_channels(attr.detach().double(), features.layers[name].channel_dim)
                per_layer[name] = per_layer.get(name, 0) + channel_sums  # all calls of a shared layer
            for name, value in per_layer.items():
                taylor[name] += value.abs().sum(0).cpu()
        else:
            with torch.no_grad():
                call_model(tapped.module, x)
        seen += len(x)
        if progress:
            progress(seen, total)

    values = {n: torch.tensor(float(c), dtype=torch.float64) for n, c in counts.items()}
    measured = {"zeros": zeros, "sums": sums, "values": values, "taylor": taylor}
    statistics = {s: measured[s] for s in wanted}
    for name in features.layers:
        if not any(tap.calls for tap in tapped.post_norm[name]):  # never called: nothing measured
            for per_layer in statistics.values():
                per_layer[name] = torch.full(per_layer[name].shape, float("nan"), dtype=torch.float64)
    return Calibration(statistics, seen, features)
