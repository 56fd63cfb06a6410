"""Metrics: how a model's outputs are scored, by name (CONTRACT section 10.7).

One registry, `METRICS` (name -> class): `accuracy` and `top5` score class scores against labels;
`agreement`, `kl`, `mse`, `cosine` and `psnr` score each output against the ORIGINAL model's output on the
same inputs (its *reference*), so unlabelled data is enough. `module:callable` names your own. `auto`
picks: `accuracy` where the data has labels and the model has one `(N, classes)` output; else
`agreement` where every output is class scores; else `psnr`. A metric that compares several outputs scores
each and averages them.

A metric accumulates over batches (`update`) and gives one number (`value`); its `direction` says whether
higher or lower is better, and every drop is taken in that direction (`MetricInfo.drop`). Metrics whose
samples each score 0..1 (`accuracy`, `top5`, `agreement`) are `bounded`: a sweep can stop a layer early
knowing the best the remaining samples could do.

`Scoring` binds a metric to a data set and the original model: it resolves `auto`, computes the reference
outputs once per split on a private copy, and gives `MetricTally`s (metric plus loss) that evaluation fills.
The loss is cross-entropy against labels where they fit, else the divergence from the reference
(cross-entropy against its top-1 class for class scores, mean squared error otherwise).
"""

from __future__ import annotations

import importlib
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from analysis.errors import WorkbenchError, first_line
from analysis.outputs import flatten_outputs, is_class_scores

HIGHER, LOWER = "higher", "lower"
PSNR_CAP_DB = 100.0  # identical outputs have infinite PSNR; 100 dB is below float32's rounding noise
AUTO = "auto"


@dataclass(frozen=True)
class MetricInfo:
    """A metric's name, direction (`higher` or `lower` is better), display label and unit; `percent` for a
    fraction shown as a percentage (accuracy)."""

    name: str
    direction: str = HIGHER
    label: str = ""  # how a page writes it: "PSNR", "top-5 accuracy"
    unit: str = ""
    percent: bool = False
    safe_drops: tuple[float, float] = (0.01, 0.02)  # the drops safe-point tables use by default
    needs_labels: bool = False  # scored against labels (else against the original model's outputs)

    @property
    def title(self) -> str:
        """`Accuracy`, `PSNR (dB)`: for chart axes and table headers."""
        text = self.label or self.name
        return text[0].upper() + text[1:] + (f" ({self.unit})" if self.unit else "")

    @property
    def higher_is_better(self) -> bool:
        return self.direction == HIGHER

    def drop(self, baseline: float, value: float) -> float:
        """How much worse `value` is than `baseline`, in the metric's units (positive = worse)."""
        return baseline - value if self.direction == HIGHER else value - baseline

    def format(self, value: float | None) -> str:
        """`99.72%`, `31.20 dB`, `0.00312`."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        if self.percent:
            return f"{value:.2%}"
        if self.unit:
            return f"{value:.2f} {self.unit}"
        return f"{value:.4g}"

    def format_drop(self, drop: float) -> str:
        """A drop in the metric's units: `0.50 points` for percentages, `1.20 dB`, `0.0031`."""
        if self.percent:
            return f"{drop * 100:.2f} points"
        return f"{drop:.2f} {self.unit}" if self.unit else f"{drop:.4g}"

    def to_dict(self, value: float | None = None) -> dict:
        """`{name, direction}` (+ `value` where given): the JSON `metric` object."""
        out: dict[str, Any] = {"name": self.name, "direction": self.direction}
        if value is not None:
            out["value"] = value
        return out

    @classmethod
    def from_dict(cls, payload: Mapping | None) -> MetricInfo:
        """The inverse of `to_dict` (None or a result without a `metric`: accuracy, as results always were)."""
        if not payload:
            return ACCURACY
        name = str(payload.get("name", "accuracy"))
        known = METRICS.get(name)
        if known is not None:
            return known.info()
        return cls(name, str(payload.get("direction", HIGHER)), name)


class Metric(ABC):
    """One way of scoring outputs. Subclasses set the class attributes and implement `update` and `value`.

    `update(outputs, labels, reference)`: `outputs` and `reference` are `{name: tensor}` (see
    `analysis.outputs.flatten_outputs`), `labels` the batch's labels or None. Bounded metrics keep
    `total` (the sum of per-sample scores, each in [0, 1]) and `count`.
    """

    name: ClassVar[str] = ""
    direction: ClassVar[str] = HIGHER
    label: ClassVar[str] = ""
    unit: ClassVar[str] = ""
    percent: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    bounded: ClassVar[bool] = False
    safe_drops: ClassVar[tuple[float, float]] = (0.01, 0.02)

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    @classmethod
    def info(cls) -> MetricInfo:
        return MetricInfo(
            cls.name,
            cls.direction,
            cls.label or cls.name,
            cls.unit,
            cls.percent,
            cls.safe_drops,
            cls.needs_labels,
        )

    @abstractmethod
    def update(
        self,
        outputs: Mapping[str, torch.Tensor],
        labels: torch.Tensor | None,
        reference: Mapping[str, torch.Tensor] | None,
    ) -> None: ...

    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


def _class_output(outputs: Mapping[str, torch.Tensor], what: str) -> torch.Tensor:
    for t in outputs.values():
        if is_class_scores(t):
            return t
    raise WorkbenchError(
        f"{what} needs an output of class scores (N, classes); this model gives "
        f"{', '.join(f'{k} {tuple(v.shape)}' for k, v in outputs.items())}: use --metric auto, psnr or cosine"
    )


def _need(value, what: str, name: str):
    if value is None:
        raise WorkbenchError(
            f"--metric {name} needs {what}: the data has none (use --metric auto or agreement for unlabelled data)"
            if what == "labels"
            else f"--metric {name} needs the original model's outputs ({what})"
        )
    return value


class Accuracy(Metric):
    """Top-1 accuracy in [0, 1] of the first class-score output against the labels."""

    name, label, percent, needs_labels, bounded = "accuracy", "accuracy", True, True, True

    def update(self, outputs, labels, reference) -> None:
        labels = _need(labels, "labels", self.name)
        logits = _class_output(outputs, self.name)
        self.total += float((logits.argmax(dim=1) == labels).sum().item())
        self.count += len(labels)


class Top5(Metric):
    """Top-5 accuracy in [0, 1]: the label is among the 5 highest scores (all of them under 5 classes)."""

    name, label, percent, needs_labels, bounded = "top5", "top-5 accuracy", True, True, True

    def update(self, outputs, labels, reference) -> None:
        labels = _need(labels, "labels", self.name)
        logits = _class_output(outputs, self.name)
        k = min(5, logits.shape[1])
        hit = (logits.topk(k, dim=1).indices == labels.unsqueeze(1)).any(dim=1)
        self.total += float(hit.sum().item())
        self.count += len(labels)


def _pairs(outputs, reference, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    reference = _need(reference, "a reference", name)
    missing = [k for k in reference if k not in outputs]
    if missing:
        raise WorkbenchError(f"the model no longer gives output {missing[0]!r}, which the original gave")
    return [(outputs[k].float(), reference[k].to(outputs[k].device).float()) for k in reference]


class Agreement(Metric):
    """Top-1 agreement with the original model in [0, 1]: the share of samples whose highest class is the
    original's, averaged over the class-score outputs."""

    name, label, percent, bounded = "agreement", "agreement", True, True

    def update(self, outputs, labels, reference) -> None:
        pairs = [(o, r) for o, r in _pairs(outputs, reference, self.name) if is_class_scores(r)]
        if not pairs:
            _class_output({}, self.name)
        per_sample = sum((o.argmax(dim=1) == r.argmax(dim=1)).float() for o, r in pairs) / len(pairs)
        self.total += float(per_sample.sum().item())
        self.count += len(per_sample)


class KLDivergence(Metric):
    """Mean KL(original || model) of the softmax class probabilities per sample (nats), averaged over the
    class-score outputs. 0 = the same distributions; lower is better."""

    name, label, direction = "kl", "KL divergence", LOWER
    safe_drops = (0.01, 0.05)

    def update(self, outputs, labels, reference) -> None:
        pairs = [(o, r) for o, r in _pairs(outputs, reference, self.name) if is_class_scores(r)]
        if not pairs:
            _class_output({}, self.name)
        per_sample = 0.0
        for o, r in pairs:
            log_p, log_q = F.log_softmax(r, dim=1), F.log_softmax(o, dim=1)
            per_sample = per_sample + (log_p.exp() * (log_p - log_q)).sum(dim=1)
        per_sample = per_sample / len(pairs)
        self.total += float(per_sample.sum().item())
        self.count += len(per_sample)


class _PerOutput(Metric):
    """A fidelity metric computed per output over the whole split, then averaged over the outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: dict[str, list[float]] = {}

    def update(self, outputs, labels, reference) -> None:
        reference = _need(reference, "a reference", self.name)
        for key, (o, r) in zip(reference, _pairs(outputs, reference, self.name), strict=True):
            acc = self.sums.setdefault(key, self.start())
            self.accumulate(acc, o.reshape(len(o), -1), r.reshape(len(r), -1))
        self.count += len(next(iter(reference.values())))

    def value(self) -> float:
        if not self.sums:
            return float("nan")
        return sum(self.finish(acc) for acc in self.sums.values()) / len(self.sums)

    def start(self) -> list[float]:
        return [0.0, 0.0]

    @abstractmethod
    def accumulate(self, acc: list[float], out: torch.Tensor, ref: torch.Tensor) -> None: ...

    @abstractmethod
    def finish(self, acc: list[float]) -> float: ...


class MSE(_PerOutput):
    """Mean squared difference from the original's output, per element; lower is better."""

    name, label, direction = "mse", "MSE", LOWER
    safe_drops = (0.001, 0.01)

    def accumulate(self, acc, out, ref) -> None:
        acc[0] += float(((out - ref) ** 2).sum().item())
        acc[1] += out.numel()

    def finish(self, acc) -> float:
        return acc[0] / acc[1] if acc[1] else float("nan")


class Cosine(_PerOutput):
    """Cosine similarity of each sample's output (flattened) with the original's, averaged over samples."""

    name, label = "cosine", "cosine similarity"
    safe_drops = (0.001, 0.01)

    def accumulate(self, acc, out, ref) -> None:
        acc[0] += float(F.cosine_similarity(out, ref, dim=1, eps=1e-12).sum().item())
        acc[1] += len(out)

    def finish(self, acc) -> float:
        return acc[0] / acc[1] if acc[1] else float("nan")


class PSNR(_PerOutput):
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


METRICS: dict[str, type[Metric]] = {
    m.name: m for m in (Accuracy, Top5, Agreement, KLDivergence, MSE, Cosine, PSNR)
}
ACCURACY = Accuracy.info()
METRIC_CHOICES = (AUTO, *METRICS)


class _CallableMetric(Metric):
    """A user's `module:callable`: called per batch as `fn(outputs, reference, labels)` (a single output is
    passed as a tensor, several as a dict), returning one score per sample or the batch's mean."""

    fn: ClassVar[Callable[..., Any]]

    def update(self, outputs, labels, reference) -> None:
        single = len(outputs) == 1
        out = next(iter(outputs.values())) if single else dict(outputs)
        ref = None if reference is None else (next(iter(reference.values())) if single else dict(reference))
        try:
            score = torch.as_tensor(type(self).fn(out, ref, labels), dtype=torch.float64).detach().cpu()
        except WorkbenchError:
            raise
        except Exception as exc:
            raise WorkbenchError(
                f"metric {self.name} failed: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        n = len(next(iter(outputs.values())))
        self.total += float(score.sum().item()) if score.ndim else float(score.item()) * n
        self.count += n


def _import_metric(spec: str) -> type[Metric]:
    module_name, _, attr = spec.rpartition(":")
    top = module_name.split(".")[0]
    if not module_name or not attr or top in sys.stdlib_module_names or top in ("builtins", "analysis"):
        raise WorkbenchError(
            f"unknown metric {spec!r}: use one of {', '.join(METRIC_CHOICES)} or your own module:callable"
        )
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise WorkbenchError(f"cannot load metric {spec!r}: {first_line(exc)}") from exc
    if isinstance(target, type) and issubclass(target, Metric):
        return target
    if not callable(target):
        raise WorkbenchError(f"metric {spec!r} is not callable")
    direction = getattr(target, "direction", HIGHER)
    if direction not in (HIGHER, LOWER):
        raise WorkbenchError(f"metric {spec!r}: direction must be 'higher' or 'lower', got {direction!r}")
    attrs = {"name": spec, "label": attr, "direction": direction, "fn": staticmethod(target)}
    return type(f"Metric_{attr}", (_CallableMetric,), attrs)


def get_metric(name: str) -> type[Metric]:
    """The metric class called `name` (a registry name or `module:callable`); unknown names are one line
    listing the known ones. `auto` is resolved by `Scoring`, not here."""
    key = name.strip()
    if key.lower() in METRICS:
        return METRICS[key.lower()]
    if ":" in key:
        return _import_metric(key)
    raise WorkbenchError(
        f"unknown metric {name!r}: use one of {', '.join(METRIC_CHOICES)} or module:callable"
    )


def check_metric_name(name: str | None) -> str:
    """`name` if it is `auto`, a registry name or looks like `module:callable` (loaded later)."""
    key = (name or AUTO).strip()
    if key.lower() in METRIC_CHOICES:
        return key.lower()
    if ":" in key:
        return key
    raise WorkbenchError(
        f"unknown metric {name!r}: use one of {', '.join(METRIC_CHOICES)} or module:callable"
    )


def auto_metric(outputs: Mapping[str, torch.Tensor], has_labels: bool) -> str:
    """What `auto` means for a model with these outputs (one batch) and data with or without labels."""
    tensors = list(outputs.values())
    if has_labels and len(tensors) == 1 and is_class_scores(tensors[0]):
        return "accuracy"
    if tensors and all(is_class_scores(t) for t in tensors):
        return "agreement"
    return "psnr"


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
        logits = _class_output(outputs, "a labelled loss")
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
        return F.cross_entropy(_class_output(outputs, "a labelled loss").float(), labels, reduction="none")
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
        from analysis.inputs import num_samples

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
    from analysis.layers import call_model, copy_model

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
    from analysis.inputs import take
    from analysis.layers import call_model, copy_model

    work = copy_model(model).eval()
    with torch.inference_mode():
        return flatten_outputs(call_model(work, take(data.x, slice(0, 2))))


def score_value(payload: Mapping) -> float | None:
    """A result's score in its metric: `metric.value`, else `accuracy` (results made before metrics)."""
    metric = payload.get("metric")
    if isinstance(metric, Mapping) and "value" in metric:
        return metric["value"]
    return payload.get("accuracy")


__all__ = [
    "ACCURACY",
    "AUTO",
    "HIGHER",
    "LOWER",
    "METRICS",
    "METRIC_CHOICES",
    "PSNR_CAP_DB",
    "Metric",
    "MetricInfo",
    "Reference",
    "Scoring",
    "MetricTally",
    "auto_metric",
    "batch_loss",
    "check_metric_name",
    "compute_reference",
    "get_metric",
    "per_sample_loss",
    "score_value",
    "scoring",
]
