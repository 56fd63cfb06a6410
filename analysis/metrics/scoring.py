"""Scoring a model on a data set: the metric resolved (`auto` made concrete), the original model's outputs
computed once per split (the reference), and tallies of the metric and the loss over batches."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from analysis.errors import WorkbenchError
from analysis.metrics.base import AUTO, Metric, MetricInfo, class_output
from analysis.metrics.registry import auto_metric, check_metric_name, get_metric
from analysis.model.outputs import flatten_outputs, is_class_scores

# ---- evaluating: a metric plus the loss over batches ----------------------------------------------------


class MetricTally:
    """A metric and the loss accumulated over batches: `update(raw_outputs, labels, reference)`."""

    def __init__(self, metric: Metric, use_labels: bool) -> None:
        self.metric = metric
        self.use_labels = use_labels
        self.loss_sum = 0.0
        self.samples = 0

    def update(self, out: object, labels: torch.Tensor | None, reference: Mapping | None) -> None:
        outputs = flatten_outputs(out)
        labels = labels if self.use_labels else None
        self.metric.update(outputs, labels, reference)
        self.loss_sum += batch_loss(outputs, labels, reference)
        self.samples += len(next(iter(outputs.values())))

    @property
    def loss(self) -> float:
        return self.loss_sum / self.samples if self.samples else float("nan")

    def value(self) -> float:
        return self.metric.value()


def batch_loss(
    outputs: Mapping[str, torch.Tensor], labels: torch.Tensor | None, reference: Mapping | None
) -> float:
    """The batch's summed loss: cross-entropy against `labels` where given (first class-score output), else
    the mean over outputs of the divergence from `reference` (cross-entropy against its top-1 class for
    class scores, mean squared error per sample otherwise); NaN with neither."""
    if labels is not None:
        logits = class_output(outputs, "a labelled loss")
        return F.cross_entropy(logits.float(), labels, reduction="sum").item()
    if reference is None:
        return float("nan")
    total = 0.0
    for key, r in reference.items():
        o, r = outputs[key].float(), r.to(outputs[key].device).float()
        if is_class_scores(r):
            total += F.cross_entropy(o, r.argmax(dim=1), reduction="sum").item()
        else:
            total += ((o - r) ** 2).reshape(len(o), -1).mean(dim=1).sum().item()
    return total / max(len(reference), 1)


def per_sample_loss(
    out: object, labels: torch.Tensor | None, reference: Mapping | None = None
) -> torch.Tensor:
    """Each sample's loss, differentiable (the data-driven criteria's objective): cross-entropy against
    `labels`; without labels, averaged over outputs, cross-entropy against the top-1 class of `reference`
    (the model's own where None) for class scores, and for other outputs the mean squared difference from
    `reference`, or half the mean squared output where there is none (its gradient is the output)."""
    outputs = flatten_outputs(out)
    if labels is not None:
        return F.cross_entropy(class_output(outputs, "a labelled loss").float(), labels, reduction="none")
    terms = []
    for key, o in outputs.items():
        o = o.float()
        r = None if reference is None else reference[key].to(o.device).float()
        if is_class_scores(o):
            target = (r if r is not None else o.detach()).argmax(dim=1)
            terms.append(F.cross_entropy(o, target, reduction="none"))
        elif r is not None:
            terms.append(((o - r) ** 2).reshape(len(o), -1).mean(dim=1))
        else:
            terms.append(0.5 * (o**2).reshape(len(o), -1).mean(dim=1))
    return torch.stack(terms).mean(dim=0)


@dataclass
class Reference:
    """The original model's outputs on one split's first `samples` samples, by output name (CPU)."""

    outputs: dict[str, torch.Tensor]
    samples: int

    def slice(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        return {k: v[start:stop] for k, v in self.outputs.items()}


@dataclass
class Scoring:
    """A metric resolved for one model and data set, with the original model's reference outputs computed
    once per split on a private copy. Build it with `scoring(metric, original, data)`."""

    metric_class: type[Metric]
    uses_labels: bool
    needs_reference: bool
    original: nn.Module | None = field(default=None, repr=False)
    data: Any = field(default=None, repr=False)
    _references: dict = field(default_factory=dict, repr=False)
    requested: str = AUTO

    @property
    def info(self) -> MetricInfo:
        return self.metric_class.info()

    @property
    def name(self) -> str:
        return self.metric_class.name

    def tally(self) -> MetricTally:
        return MetricTally(self.metric_class(), self.uses_labels)

    def reference(
        self, split: str = "test", limit: int | None = None, batch_size: int = 256
    ) -> Reference | None:
        """The original's outputs on `split` (first `limit` samples), computed once and kept."""
        if not self.needs_reference:
            return None
        from analysis.model.inputs import num_samples

        x = self.data.x if split == "test" else self.data.x_train
        n = num_samples(x) if limit is None else min(limit, num_samples(x))
        for (s, have), ref in self._references.items():
            if s == split and have >= n:
                return ref
        ref = compute_reference(self.original, self.data, split, n, batch_size)
        self._references[(split, n)] = ref
        return ref


def compute_reference(model: nn.Module, data, split: str, limit: int, batch_size: int = 256) -> Reference:
    """`model`'s outputs (float32, CPU) on the first `limit` samples of `split`, by output name."""
    from analysis.model.layers import call_model, copy_model

    work = copy_model(model).eval()  # a private copy: the caller's (possibly shared) model is not run
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for x, _ in data.batches(split, batch_size, limit):
            for k, v in flatten_outputs(call_model(work, x)).items():
                parts.setdefault(k, []).append(v.detach().float().cpu())
    outputs = {k: torch.cat(v) for k, v in parts.items()}
    return Reference(outputs, len(next(iter(outputs.values()))) if outputs else 0)


def scoring(metric: str | Scoring | None, original: nn.Module, data) -> Scoring:
    """`metric` (a name, `auto`, `module:callable`, or a `Scoring` passed through) resolved for `original`
    on `data`: `auto` looks at one batch of outputs and whether the data has labels."""
    if isinstance(metric, Scoring):
        return metric
    name = check_metric_name(metric)
    has_labels = getattr(data, "y", None) is not None
    outputs = _first_outputs(original, data)
    if name == AUTO:
        name = auto_metric(outputs, has_labels)
    cls = get_metric(name)
    if cls.needs_labels and not has_labels:
        raise WorkbenchError(
            f"--metric {name} needs labels, and {getattr(data, 'spec', 'the data')} has none: use --metric auto "
            "(agreement with the original model) or agreement, kl, mse, cosine, psnr"
        )
    # Labels are usable where the model has one output of class scores (as every classifier here has).
    uses_labels = has_labels and len(outputs) == 1 and is_class_scores(next(iter(outputs.values())))
    needs_reference = not cls.needs_labels or not uses_labels
    if cls.needs_labels and not uses_labels:
        raise WorkbenchError(
            f"--metric {name} needs one (N, classes) output that the data's labels index: this model's outputs "
            "do not fit them; use --metric auto or agreement, psnr, cosine"
        )
    return Scoring(cls, uses_labels, needs_reference, original, data, requested=str(metric or AUTO))


def _first_outputs(model: nn.Module, data) -> dict[str, torch.Tensor]:
    from analysis.model.inputs import take
    from analysis.model.layers import call_model, copy_model

    work = copy_model(model).eval()
    with torch.inference_mode():
        return flatten_outputs(call_model(work, take(data.x, slice(0, 2))))


def score_value(payload: Mapping) -> float | None:
    """A result's score in its metric: `metric.value`, else `accuracy` (results made before metrics)."""
    metric = payload.get("metric")
    if isinstance(metric, Mapping) and "value" in metric:
        return metric["value"]
    return payload.get("accuracy")
