"""`oracle`: |change in mean cross-entropy| on the calibration (train) split when one channel is zeroed.

The channel is zeroed after its norm, as structured-pruning simulation does (docs/contract.md section 5), and after
its activation where one directly follows: the same thing for any activation with f(0) = 0 (ReLU, GELU,
SiLU, ...), and what physically removing the channel does for those without (sigmoid, softplus). One
evaluation per channel, over at most `max_samples` train samples.

Where the change can be written as a parameter edit (a per-channel norm: gamma[c] = beta[c] = 0; no norm:
the layer's weight row and bias = 0), the sensitivity sweep's cached downstream runner
(`analysis.fx.runner.DownstreamRunner`) evaluates it: one full forward per batch, then only the layers
downstream of the change per channel. Otherwise (functional or non-affine norm, a layer called more than
once, or no runner available) a plain loop masks the channel in a traced copy and runs the whole network.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.errors import WorkbenchError
from analysis.importance.base import CRITERIA_REGISTRY, Criterion
from analysis.importance.features import FeatureGraph, LayerFeatures, build_tapped, find_features
from analysis.metrics import per_sample_loss
from analysis.model.inputs import num_samples, to_device
from analysis.model.layers import call_model, filter_rows
from analysis.model.outputs import flatten_outputs
from analysis.progress import Progress
from analysis.validate import require_data, whole

if TYPE_CHECKING:
    from analysis.data import Dataset

BATCH_SIZE = 256


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter lives (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@dataclass(frozen=True)
class OracleResult:
    """Per-layer |loss change| per channel, the unedited loss (nats), samples used, and how it was run."""

    scores: dict[str, torch.Tensor]
    baseline_loss: float
    samples: int
    method: dict[str, str]


def _param_edit(
    model: nn.Module, lf: LayerFeatures
) -> tuple[tuple[str, ...], Callable[[nn.Module, int], None]] | None:
    """(modules changed, zero(model, channel)) when zeroing channel c is a parameter edit, else None."""
    if len(lf.sites) > 1 or (lf.sites and not lf.sites[0].activation_keeps_zero):
        return None
    if lf.norm is not None:
        if lf.norm_module is None:
            return None
        norm = model.get_submodule(lf.norm_module)
        weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
        if not isinstance(weight, torch.Tensor) or weight.numel() != lf.channels:
            return None
        if bias is not None and bias.numel() != lf.channels:
            return None
        target = lf.norm_module
    else:
        target = lf.layer

    def zero(m: nn.Module, c: int) -> None:
        module = m.get_submodule(target)
        with torch.no_grad():
            filter_rows(module)[c] = 0  # a view: a transposed conv's output channel is a weight column
            if getattr(module, "bias", None) is not None:
                module.bias[c] = 0

    return (target,), zero


def _loss_scoring(labels: torch.Tensor | None):
    """The runner's scoring for the oracle, which reads only the loss: cross-entropy against the labels,
    or without labels the divergence from the unedited model's outputs (MSE scoring works on any output)."""
    from analysis.metrics import MSE, Accuracy, Scoring

    return Scoring(Accuracy, True, False) if labels is not None else Scoring(MSE, False, True)


def _runner_class():
    try:
        from analysis.fx.edits import Edit
        from analysis.fx.runner import DownstreamRunner
    except ImportError:
        return None
    return DownstreamRunner, Edit


def _plain_loop(
    model: nn.Module,
    features: FeatureGraph,
    names: list[str],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    tick: Callable[[], None],
) -> tuple[dict[str, torch.Tensor], float]:
    """Zero each channel with a mask in a tapped copy and evaluate the whole network each time."""
    work = copy.deepcopy(model).eval()
    tapped = build_tapped(work, features)
    seen = sum(num_samples(x) for x, _ in batches)
    with torch.inference_mode():  # unlabelled data: the loss is the divergence from these outputs
        references = [flatten_outputs(call_model(work, x)) if y is None else None for x, y in batches]

    def loss() -> float:
        total = 0.0
        with torch.inference_mode():
            for (x, y), ref in zip(batches, references, strict=True):
                total += per_sample_loss(call_model(tapped.module, x), y, ref).sum().item()
        return total / seen

    baseline = loss()
    scores: dict[str, torch.Tensor] = {}
    for name in names:
        lf = features.layers[name]
        taps = tapped.post_activation[name]
        values = torch.zeros(lf.channels, dtype=torch.float64)
        for c in range(lf.channels):
            mask = torch.ones(lf.channels)
            mask[c] = 0
            for tap in taps:
                tap.mask = mask
            values[c] = abs(loss() - baseline)
            tick()
        for tap in taps:
            tap.mask = None
        called = any(tap.calls for tap in taps)  # an untraced model may never call a layer
        scores[name] = values.float() if called else torch.full((lf.channels,), float("nan"))
    return scores, baseline


def oracle_scores(
    model: nn.Module,
    data: Dataset | None,
    layers: Iterable[str] | None = None,
    *,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    features: FeatureGraph | None = None,
    use_runner: bool = True,
    device: str | torch.device | None = None,
    runner: type | None = None,
) -> OracleResult:
    """|loss change| per channel for every selected layer; one evaluation per channel over at most
    `max_samples` samples of the train split. `progress(channels_done, channels_total)`. `device` (auto,
    cpu, cuda[:N]) evaluates a private copy there; `runner` is the class that evaluates the channels written
    as parameter edits (default `analysis.fx.runner.DownstreamRunner`; ONNX Runtime's is
    `analysis.runtime.edit_runner.runner_class("onnxruntime")`, which the caller picks: the runtimes sit
    above the criteria)."""
    data = require_data("oracle", data)
    max_samples = whole(max_samples, "max_samples")
    features = features or find_features(model, None if layers is None else list(layers))
    total = min(max_samples, len(data.x_train))
    if total == 0:
        raise WorkbenchError("the calibration split is empty: the data spec has no training samples")
    batches = list(data.batches("train", batch_size, total))
    if device is not None:  # the edits and loops below then see only the private device copy
        from analysis.devices import on_device, resolve_device

        dev = resolve_device(device)
        model = on_device(model, dev).eval()
        batches = [(to_device(x, dev), None if y is None else y.to(dev)) for x, y in batches]
    seen = sum(num_samples(x) for x, _ in batches)
    counter = _Progress(progress, features)
    runner_api = _runner_class() if use_runner else None
    scores, method, edits_by_layer, plain = _sort_layers(model, features, runner_api is not None)
    baseline = float("nan")
    if edits_by_layer:
        runner = _runner(model, data, total, batch_size, runner or runner_api[0], device is not None)
        baseline = _runner_scores(runner, runner_api[1], features, edits_by_layer, counter, scores, method)
    if plain:
        plain_scores, plain_baseline = _plain_loop(model, features, plain, batches, counter.tick)
        scores.update(plain_scores)
        method.update(dict.fromkeys(plain, "full forward per channel"))
        if baseline != baseline:  # NaN: no runner result
            baseline = plain_baseline
    ordered = {name: scores[name] for name in features.layers}
    return OracleResult(ordered, baseline, seen, {name: method[name] for name in features.layers})


class _Progress:
    """Channels evaluated so far, reported as `progress(done, total)`: the runner's share, then one tick per
    channel of the plain loop."""

    def __init__(self, progress: Progress | None, features: FeatureGraph) -> None:
        self.progress, self.done = progress, 0
        self.total = sum(lf.channels for lf in features.layers.values() if lf.sites or not features.traced)

    def report(self, done: int) -> None:
        if self.progress:
            self.progress(min(done, self.total), self.total)

    def tick(self, k: int = 1) -> None:
        self.done += k
        self.report(self.done)


def _sort_layers(model: nn.Module, features: FeatureGraph, runner: bool):
    """(scores, method) of the layers never called (NaN), the parameter edit of each layer the runner can
    evaluate (`runner`: one is available), and the layers left to the plain loop."""
    scores: dict[str, torch.Tensor] = {}
    method: dict[str, str] = {}
    edits_by_layer = {}
    plain: list[str] = []
    for name, lf in features.layers.items():
        if features.traced and not lf.sites:
            scores[name] = torch.full((lf.channels,), float("nan"))
            method[name] = "never called in forward"
            continue
        edit = _param_edit(model, lf) if runner else None
        if edit is None:
            plain.append(name)
        else:
            edits_by_layer[name] = edit
    return scores, method, edits_by_layer, plain


def _runner(model, data: Dataset, total: int, batch_size: int, runner_cls: type, on_device: bool):
    """A `runner_cls` (the cached downstream runner, or a runtime's) over the first `total` train samples
    (`on_device`: moved to the model's device)."""
    xs = data.x_train[:total]
    ys = None if data.y_train is None else data.y_train[:total]
    if on_device:
        xs = to_device(xs, model_device(model))
        ys = None if ys is None else ys.to(model_device(model))
    return runner_cls(model, xs, ys, batch_size=batch_size, scoring=_loss_scoring(ys))


def _runner_scores(runner, edit_cls, features, edits_by_layer, counter: _Progress, scores, method) -> float:
    """Each channel of `edits_by_layer`'s layers zeroed by its edit and evaluated by `runner`: the |loss
    change| per channel into `scores` (and `method`); returns the unedited loss."""
    edits, owners = [], []
    for name, (modules, zero) in edits_by_layer.items():
        for c in range(features.layers[name].channels):
            edits.append(edit_cls(modules, lambda m, z=zero, c=c: z(m, c), key=(name, c)))
            owners.append(name)
    runner_channels = len(edits)

    def runner_progress(step: int, steps: int) -> None:
        counter.report(int(step / max(steps, 1) * runner_channels))

    out = runner.evaluate(edits, progress=runner_progress)
    baseline = out.baseline.loss
    values: dict[str, list[float]] = {name: [] for name in edits_by_layer}
    for name, result in zip(owners, out.results, strict=True):
        values[name].append(abs(result.loss - baseline))
    for name, v in values.items():
        scores[name] = torch.tensor(v, dtype=torch.float32)
        method[name] = "cached downstream runner"
    counter.done = runner_channels
    return baseline


@CRITERIA_REGISTRY.register
class OracleImportance(Criterion):
    """|loss change| when the channel is zeroed after its norm, on the train split (capped)."""

    name: ClassVar[str] = "oracle"
    data_driven: ClassVar[bool] = True
    expensive: ClassVar[bool] = True

    def scores(self, model, data, layers, max_samples, context) -> dict[str, torch.Tensor]:
        """The scores; how they were measured goes to `context.details` (`samples`, `baseline_loss`,
        `method` per layer) and a layer run the slow way to `context.notes`."""
        result = oracle_scores(
            model,
            data,
            layers,
            max_samples=max_samples,
            progress=context.report,
            features=context.features,
            device=context.device,
            runner=context.runner,
        )
        context.details.update(
            samples=result.samples, baseline_loss=result.baseline_loss, method=result.method
        )
        slow = [n for n, m in result.method.items() if m == "full forward per channel"]
        if slow:
            context.notes.append(f"oracle ran the full network per channel for: {', '.join(slow)}")
        return result.scores
