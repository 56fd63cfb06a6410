"""Budgets for suggested plans (`macs=0.5`, `latency=0.6`, `size=0.5`, `drop=0.01`) and the MAC model that predicts
a structured plan's MACs from layer costs and the groups' channel maps, without pruning."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from analysis.cost import summarize
from analysis.errors import WorkbenchError
from analysis.transforms.groups import PruningGroup
from analysis.transforms.pruning import prune_structured

BUDGET_KINDS = {
    "macs": "macs",
    "latency": "latency",
    "size": "size",
    "bytes": "size",
    "drop": "drop",
    "accuracy": "drop",
}
FRACTION_KINDS = ("macs", "latency", "size")


@dataclass(frozen=True)
class Budget:
    """`macs` / `latency` / `size` (stored bytes, params x bits / 8): the fraction of the original to keep,
    in (0, 1]; `drop`: the largest drop allowed in the sweep's metric, in its units (accuracy: 0.01 = one
    point; PSNR: 1.0 = 1 dB)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("macs", "latency", "size", "drop"):
            raise WorkbenchError(f"unknown budget {self.kind!r}: use macs=F, latency=F, size=F or drop=D")
        v = self.value
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise WorkbenchError(f"budget {self.kind} must be a number, got {v!r}")
        if self.kind in FRACTION_KINDS and not 0.0 < v <= 1.0:
            raise WorkbenchError(f"budget {self.kind}={v}: give the fraction to keep, in (0, 1], e.g. 0.5")
        if self.kind == "drop" and not v >= 0.0:
            raise WorkbenchError(
                f"budget drop={v}: give a non-negative drop in the metric's units, e.g. 0.01 for one point "
                "of accuracy"
            )

    @classmethod
    def parse(cls, text: str | Budget) -> Budget:
        """`"macs=0.5"`, `"latency=0.6"`, `"size=0.5"` or `"drop=0.01"` (`accuracy=` is an alias of `drop=`,
        `bytes=` of `size=`)."""
        if isinstance(text, Budget):
            return text
        key, sep, value = str(text).partition("=")
        kind = BUDGET_KINDS.get(key.strip().lower())
        if not sep or kind is None:
            raise WorkbenchError(
                f"cannot read budget {text!r}: use macs=0.5, latency=0.6, size=0.5 or drop=0.01"
            )
        try:
            number = float(value)
        except ValueError:
            raise WorkbenchError(f"budget {text!r}: {value!r} is not a number") from None
        return cls(kind, number)

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


class MacModel:
    """MACs per sample of `model` with given per-group ratios, from layer costs and group channel maps."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], groups: list[PruningGroup]) -> None:
        summary = summarize(model, input_shape)
        self.total = summary.total_macs
        self.groups = {g.name: g for g in groups}
        modules = dict(model.named_modules())
        self.layer_macs = {layer.name: layer.macs for layer in summary.layers if layer.macs}
        self.layer_params = {layer.name: layer.params for layer in summary.layers if layer.params}
        # layer -> [(group, dim, number of its indices in that group)]
        self.links: dict[str, list[tuple[str, str, int]]] = {}
        self.widths: dict[str, tuple[int, int, bool]] = {}
        for g in groups:
            for m in g.members:
                module = modules.get(m.name)
                if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                    continue
                self.links.setdefault(m.name, []).append((g.name, m.dim, len(m.idxs)))
                if isinstance(module, nn.Linear):
                    self.widths[m.name] = (module.out_features, module.in_features, False)
                else:
                    depthwise = module.groups > 1 and module.groups == module.in_channels
                    self.widths[m.name] = (module.out_channels, module.in_channels, depthwise)

    def removed_fraction(self, group: str, ratio: float) -> float:
        g = self.groups[group]
        return g.channels_to_remove(ratio) / g.channels if ratio > 0 else 0.0

    def macs(self, ratios: Mapping[str, float]) -> float:
        """Predicted MACs per sample with each group at its ratio (groups not named: unpruned)."""
        return self._scaled(self.layer_macs, ratios)

    def params(self, ratios: Mapping[str, float]) -> float:
        """Predicted parameters with each group at its ratio: a Conv/Linear's weights scale as its MACs do;
        other layers (BatchNorm, ...) are counted whole, so the saving is slightly underestimated."""
        return self._scaled(self.layer_params, ratios)

    def _scaled(self, costs: Mapping[str, int], ratios: Mapping[str, float]) -> float:
        total = 0.0
        for name, base in costs.items():
            links = self.links.get(name)
            if not links:
                total += base
                continue
            out_total, in_total, depthwise = self.widths[name]
            out_gone = in_gone = 0.0
            for group, dim, count in links:
                frac = self.removed_fraction(group, ratios.get(group, 0.0))
                if dim == "out":
                    out_gone += frac * count
                else:
                    in_gone += frac * count
            out_keep = max(0.0, 1.0 - out_gone / out_total)
            in_keep = max(0.0, 1.0 - in_gone / in_total)
            total += base * (out_keep if depthwise else out_keep * in_keep)
        return total


def structured_curves(sensitivity, groups: list[PruningGroup], max_ratio: float):
    """Per group: [(ratio, cumulative max drop, cumulative max loss increase)], starting at (0, 0, 0)."""
    from analysis.sensitivity.sweep import SensitivityResult

    if isinstance(sensitivity, Mapping):
        sensitivity = SensitivityResult.from_dict(sensitivity)
    if sensitivity.kind != "structured":
        raise WorkbenchError(
            f"suggested plans need a structured sensitivity sweep, got kind {sensitivity.kind!r}: "
            "run `sensitivity --kind structured`"
        )
    known = {g.name for g in groups}
    unknown = [name for name in sensitivity.layers if name not in known]
    if unknown:
        raise WorkbenchError(
            f"the sensitivity sweep has group {unknown[0]!r}, which this model does not: "
            "was it run on another model?"
        )
    curves = {}
    for name, curve in sensitivity.layers.items():
        points = [(0.0, 0.0, 0.0)]
        worst_drop = worst_loss = 0.0
        for r, acc, loss in sorted(zip(curve.values, curve.accuracy, curve.loss, strict=True)):
            if r <= 0 or r > max_ratio + 1e-12:
                continue
            # A curve that wiggles back up is noise: never predict that pruning more helps.
            worst_drop = max(worst_drop, sensitivity.metric.drop(sensitivity.baseline_accuracy, acc))
            worst_loss = max(worst_loss, loss - sensitivity.baseline_loss)
            points.append((float(r), worst_drop, worst_loss))
        curves[name] = points
    return sensitivity, curves


def pruned_copy(model: nn.Module, ratios: Mapping[str, float], input_shape, criterion: str, data):
    """A deep copy of `model` with the groups structurally pruned at `ratios` (0 = untouched)."""
    pruned = copy.deepcopy(model).eval()
    active = {name: r for name, r in ratios.items() if r > 0}
    prune_structured(pruned, active, input_shape, criteria=dict.fromkeys(active, criterion), data=data)
    return pruned
