"""The built-in metrics and the registry `METRICS` (an `analysis.registry.Registry`, name -> class): add one
by writing its class here (or in a file of its own) with `@METRICS.register` over it; `tests/test_metrics.py`
runs its contract over every entry."""

from __future__ import annotations

import math

import torch.nn.functional as F

from analysis.metrics import base
from analysis.metrics.base import (
    AUTO,
    LOWER,
    PSNR_CAP_DB,
    Metric,
    PerOutputMetric,
    class_output,
    output_pairs,
    require,
)
from analysis.model.outputs import is_class_scores
from analysis.registry import Registry

METRICS: Registry[type[Metric]] = Registry("metric")


@METRICS.register
class Accuracy(Metric):
    """Top-1 accuracy in [0, 1] of the first class-score output against the labels."""

    name, label, percent, needs_labels, bounded = "accuracy", "accuracy", True, True, True

    def update(self, outputs, labels, reference) -> None:
        labels = require(labels, "labels", self.name)
        logits = class_output(outputs, self.name)
        self.total += float((logits.argmax(dim=1) == labels).sum().item())
        self.count += len(labels)


@METRICS.register
class Top5(Metric):
    """Top-5 accuracy in [0, 1]: the label is among the 5 highest scores (all of them under 5 classes)."""

    name, label, percent, needs_labels, bounded = "top5", "top-5 accuracy", True, True, True

    def update(self, outputs, labels, reference) -> None:
        labels = require(labels, "labels", self.name)
        logits = class_output(outputs, self.name)
        k = min(5, logits.shape[1])
        hit = (logits.topk(k, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
        self.total += float(hit.sum().item())
        self.count += len(labels)


@METRICS.register
class Agreement(Metric):
    """Top-1 agreement with the original model in [0, 1]: the share of samples whose highest class is the
    original's, averaged over the class-score outputs."""

    name, label, percent, bounded = "agreement", "agreement", True, True

    def update(self, outputs, labels, reference) -> None:
        pairs = [(o, r) for o, r in output_pairs(outputs, reference, self.name) if is_class_scores(r)]
        if not pairs:
            class_output({}, self.name)
        per_sample = sum((o.argmax(dim=1) == r.argmax(dim=1)).float() for o, r in pairs) / len(pairs)
        self.total += float(per_sample.sum().item())
        self.count += len(per_sample)


@METRICS.register
class KLDivergence(Metric):
    """Mean KL(original || model) of the softmax class probabilities per sample (nats), averaged over the
    class-score outputs. 0 = the same distributions; lower is better."""

    name, label, direction = "kl", "KL divergence", LOWER
    safe_drops = (0.01, 0.05)

    def update(self, outputs, labels, reference) -> None:
        pairs = [(o, r) for o, r in output_pairs(outputs, reference, self.name) if is_class_scores(r)]
        if not pairs:
            class_output({}, self.name)
        per_sample = 0.0
        for o, r in pairs:
            log_p, log_q = F.log_softmax(r, dim=1), F.log_softmax(o, dim=1)
            per_sample = per_sample + (log_p.exp() * (log_p - log_q)).sum(dim=1)
        per_sample = per_sample / len(pairs)
        self.total += float(per_sample.sum().item())
        self.count += len(per_sample)


@METRICS.register
class MSE(PerOutputMetric):
    """Mean squared difference from the original's output, per element; lower is better."""

    name, label, direction = "mse", "MSE", LOWER
    safe_drops = (0.001, 0.01)

    def accumulate(self, acc, out, ref) -> None:
        acc[0] += float(((out - ref) ** 2).sum().item())
        acc[1] += out.numel()

    def finish(self, acc) -> float:
        return acc[0] / acc[1] if acc[1] else float("nan")


@METRICS.register
class Cosine(PerOutputMetric):
    """Cosine similarity of each sample's output (flattened) with the original's, averaged over samples."""

    name, label = "cosine", "cosine similarity"
    safe_drops = (0.001, 0.01)

    def accumulate(self, acc, out, ref) -> None:
        acc[0] += float(F.cosine_similarity(out, ref, dim=1, eps=1e-12).sum().item())
        acc[1] += len(out)

    def finish(self, acc) -> float:
        return acc[0] / acc[1] if acc[1] else float("nan")


@METRICS.register
class PSNR(PerOutputMetric):
    """Peak signal-to-noise ratio (dB) of the output against the original's: 10 log10(R^2 / MSE), R the
    original's value range (max - min over the split), MSE over every element of the split; capped at
    `PSNR_CAP_DB` (identical outputs). Higher is better."""

    name, label, unit = "psnr", "PSNR", "dB"
    safe_drops = (60.0, 70.0)  # from the 100 dB of identical outputs: at least 40 and 30 dB

    def start(self) -> list[float]:
        return [0.0, 0.0, math.inf, -math.inf]  # squared error, elements, min and max of the reference

    def accumulate(self, acc, out, ref) -> None:
        acc[0] += float(((out - ref) ** 2).sum().item())
        acc[1] += out.numel()
        if ref.numel():
            acc[2] = min(acc[2], float(ref.min().item()))
            acc[3] = max(acc[3], float(ref.max().item()))

    def finish(self, acc) -> float:
        if not acc[1]:
            return float("nan")
        mse = acc[0] / acc[1]
        peak = acc[3] - acc[2] if acc[3] > acc[2] else max(abs(acc[2]), abs(acc[3]), 1.0)
        if mse <= 0:
            return PSNR_CAP_DB
        return min(PSNR_CAP_DB, 10.0 * math.log10(peak**2 / mse))


ACCURACY = base.ACCURACY  # what results made before metrics existed read as (equal to Accuracy.info())
base.KNOWN.update({name: cls.info() for name, cls in METRICS.items()})
METRIC_CHOICES = (AUTO, *METRICS)  # the built-in ones; `metric_choices()` also lists those registered later
