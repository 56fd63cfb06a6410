"""What a metric is: `MetricInfo` (name, direction, units: what results carry) and `Metric` (how outputs are
scored, batch by batch), with the helpers the built-in metrics share."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from analysis.errors import WorkbenchError
from analysis.model.outputs import is_class_scores

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
        if name in KNOWN:
            return KNOWN[name]
        return cls(name, str(payload.get("direction", HIGHER)), name)


ACCURACY = MetricInfo("accuracy", HIGHER, "accuracy", percent=True, needs_labels=True)
KNOWN: dict[str, MetricInfo] = {}  # the registry's metrics by name (`analysis.metrics.builtin` fills it)


class Metric(ABC):
    """One way of scoring outputs. Subclasses set the class attributes and implement `update` and `value`.

    `update(outputs, labels, reference)`: `outputs` and `reference` are `{name: tensor}` (see
    `analysis.model.outputs.flatten_outputs`), `labels` the batch's labels or None. Bounded metrics keep
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


def class_output(outputs: Mapping[str, torch.Tensor], what: str) -> torch.Tensor:
    for t in outputs.values():
        if is_class_scores(t):
            return t
    raise WorkbenchError(
        f"{what} needs an output of class scores (N, classes); this model gives "
        f"{', '.join(f'{k} {tuple(v.shape)}' for k, v in outputs.items())}: use --metric auto, psnr or cosine"
    )


def require(value, what: str, name: str):
    if value is None:
        raise WorkbenchError(
            f"--metric {name} needs {what}: the data has none (use --metric auto or agreement for unlabelled data)"
            if what == "labels"
            else f"--metric {name} needs the original model's outputs ({what})"
        )
    return value


def output_pairs(outputs, reference, name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    reference = require(reference, "a reference", name)
    missing = [k for k in reference if k not in outputs]
    if missing:
        raise WorkbenchError(f"the model no longer gives output {missing[0]!r}, which the original gave")
    return [(outputs[k].float(), reference[k].to(outputs[k].device).float()) for k in reference]


class PerOutputMetric(Metric):
    """A fidelity metric computed per output over the whole split, then averaged over the outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: dict[str, list[float]] = {}

    def update(self, outputs, labels, reference) -> None:
        reference = require(reference, "a reference", self.name)
        for key, (o, r) in zip(reference, output_pairs(outputs, reference, self.name), strict=True):
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
