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
import functools
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


class _Pass:
    """The hooked pass: a private tapped copy of the model, the statistics its taps add up per layer, and
    captum's attribution over the post-norm taps when `taylor` is wanted (None otherwise)."""

    def __init__(self, model: nn.Module, data: Dataset, features: FeatureGraph, wanted: tuple[str, ...],
                 dev: torch.device | None) -> None:  # fmt: skip
        self.features, self.dev = features, dev
        work = (copy.deepcopy(model) if dev is None else on_device(model, dev)).eval()
        self.tapped = build_tapped(work, features)
        self.taylor_taps = self._taylor_taps(data) if "taylor" in wanted else []
        channels = {name: lf.channels for name, lf in features.layers.items()}
        self.zeros = {name: torch.zeros(c, dtype=torch.float64) for name, c in channels.items()}
        self.sums = {name: torch.zeros(c, dtype=torch.float64) for name, c in channels.items()}
        self.counts = dict.fromkeys(features.layers, 0)
        self.taylor = {name: torch.zeros(c, dtype=torch.float64) for name, c in channels.items()}
        if any(s in wanted for s in _POST_ACTIVATION):
            for name, taps in self.tapped.post_activation.items():
                for tap in taps:
                    tap.callback = functools.partial(self._record, name)
        self.attribution = self._attribution(data.input_spec) if self.taylor_taps else None

    def _taylor_taps(self, data: Dataset) -> list[tuple[str, nn.Module]]:
        """(layer, post-norm tap) for Taylor: on an untraced graph only those the forward calls, since
        captum needs every hooked module to run (found with one probe forward before any tap records)."""
        taps = [(name, m) for name, modules in self.tapped.attribution_modules.items() for m in modules]
        if self.features.traced:
            return taps
        with torch.no_grad():
            first = data.x_train[:1]
            call_model(self.tapped.module, first if self.dev is None else to_device(first, self.dev))
        called = {name for name, taps in self.tapped.post_norm.items() if any(t.calls for t in taps)}
        return [(name, m) for name, m in taps if name in called]

    def _attribution(self, spec):
        """Captum's gradient x activation on the Taylor taps, of the per-sample loss (see the module doc)."""
        from captum.attr import LayerGradientXActivation

        def objective(*args: torch.Tensor) -> torch.Tensor:
            # Captum passes the inputs as positional tensors, then the labels (None: unlabelled data).
            *tensors, y = args
            return per_sample_loss(call_model(self.tapped.module, spec.pack(tensors)), y)

        return LayerGradientXActivation(objective, [tap for _, tap in self.taylor_taps])

    def _record(self, name: str, x: torch.Tensor) -> None:
        """A post-activation tap's tensor added to `name`'s zeros, sums and value count."""
        channel_dim = self.features.layers[name].channel_dim
        with torch.no_grad():
            x = x.detach()
            self.zeros[name] += _reduce_to_channels((x == 0).double(), channel_dim).sum(0).cpu()
            self.sums[name] += _reduce_to_channels(x.double(), channel_dim).sum(0).cpu()
            self.counts[name] += x.numel() // self.features.layers[name].channels

    def batch(self, x, y: torch.Tensor | None) -> None:
        """One batch through the tapped model: a forward (the taps record), and with Taylor, captum's
        backward, whose per-sample |sum of a x grad| per channel is added to `taylor`."""
        if self.dev is not None:
            x, y = to_device(x, self.dev), None if y is None else y.to(self.dev)
        if self.attribution is None:
            with torch.no_grad():
                call_model(self.tapped.module, x)
            return
        tensors = tuple(x.tensors()) if isinstance(x, InputBatch) else (x,)
        attributions = self.attribution.attribute(tensors, additional_forward_args=(y,))
        per_layer: dict[str, torch.Tensor] = {}
        for (name, _), attr in zip(self.taylor_taps, attributions, strict=True):
            channel_sums = _reduce_to_channels(attr.detach().double(), self.features.layers[name].channel_dim)
            per_layer[name] = per_layer.get(name, 0) + channel_sums  # all calls of a shared layer
        for name, value in per_layer.items():
            self.taylor[name] += value.abs().sum(0).cpu()

    def statistics(self, wanted: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
        """The statistics `wanted`, NaN for each layer the forward never called."""
        values = {n: torch.tensor(float(c), dtype=torch.float64) for n, c in self.counts.items()}
        measured = {"zeros": self.zeros, "sums": self.sums, "values": values, "taylor": self.taylor}
        statistics = {s: measured[s] for s in wanted}
        for name in self.features.layers:
            if not any(tap.calls for tap in self.tapped.post_norm[name]):  # never called: nothing measured
                for per_layer in statistics.values():
                    per_layer[name] = torch.full(per_layer[name].shape, float("nan"), dtype=torch.float64)
        return statistics


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

    hooked = _Pass(model, data, features, wanted, None if device is None else resolve_device(device))
    seen = 0
    for x, y in data.batches("train", batch_size, total):
        hooked.batch(x, y)
        seen += len(x)
        if progress:
            progress(seen, total)
    return Calibration(hooked.statistics(wanted), seen, features)
