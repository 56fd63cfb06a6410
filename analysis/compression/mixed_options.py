"""The options of a mixed suggestion: per layer or group, the rank, bits or pruning levels its sensitivity
sweep measured, with the accuracy each costs and the MACs and bytes each saves (`suggest_mixed` chooses
among them). Sweeps come as results or their JSON; a missing one is run here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.metrics import ACCURACY, MetricInfo
from analysis.validate import UNTOUCHED_BITS


def method_kinds() -> dict[str, str]:
    """Sweep kind -> the mixed method its sweep guides (`SweepKind.mixed_method`: structured -> prune,
    lowrank -> rank, quant -> bits)."""
    from analysis.sensitivity.kinds import get_sweep_kind, sweep_kinds

    return {kind: method for kind in sweep_kinds() if (method := get_sweep_kind(kind).mixed_method)}


@dataclass(frozen=True)
class Option:
    """One point of one unit's curve; method "" is the unit untouched. `drop`/`loss`: predicted accuracy
    drop / loss increase (accuracy units, nats), made non-decreasing along the curve; savings are alone."""

    method: str
    level: float
    drop: float = 0.0
    loss: float = 0.0
    macs_saved: float = 0.0
    bytes_saved: float = 0.0


NONE = Option("", 0.0)


def _as_sweep(obj):
    """A SensitivityResult from a result or its JSON dict (`SensitivityResult.from_dict`: the one parser)."""
    from analysis.sensitivity.sweep import SensitivityResult

    if isinstance(obj, SensitivityResult):
        return obj
    if not isinstance(obj, Mapping):
        raise WorkbenchError(
            f"not a sensitivity result: {type(obj).__name__}; give a sweep result or its JSON"
        )
    return SensitivityResult.from_dict(obj)


def sweeps_by_method(sweeps) -> dict[str, Any]:
    if sweeps is None:
        return {}
    items = list(sweeps.values()) if isinstance(sweeps, Mapping) and "kind" not in sweeps else (
        [sweeps] if isinstance(sweeps, Mapping) or not isinstance(sweeps, Sequence) else list(sweeps)
    )  # fmt: skip
    out: dict[str, Any] = {}
    guides = method_kinds()
    for item in items:
        result = _as_sweep(item)
        method = guides.get(result.kind)
        if method is None:
            kinds = ", ".join(guides)
            raise WorkbenchError(f"a {result.kind!r} sweep cannot guide a mixed plan: give {kinds} sweeps")
        if method in out:
            raise WorkbenchError(f"two {result.kind!r} sweeps given: give one per kind")
        out[method] = result
    return out


def _monotone(points, baseline_acc: float, baseline_loss: float, metric: MetricInfo = ACCURACY):
    """[(x, drop, loss increase)] in the given order (least to most compressed), never predicting that
    compressing more helps (a curve that wiggles back up is noise); drops in `metric`'s direction."""
    worst_drop = worst_loss = 0.0
    out = []
    for x, acc, loss in points:
        worst_drop = max(worst_drop, metric.drop(baseline_acc, acc))
        worst_loss = max(worst_loss, loss - baseline_loss)
        out.append((x, worst_drop, worst_loss))
    return out


def layer_options(model: nn.Module, sweeps: Mapping[str, Any], methods, notes: list[str]):
    """Per layer: the rank and bits options from the lowrank and quant sweeps."""
    from analysis.transforms.quantization import SCALE_BYTES

    modules = dict(model.named_modules())
    options: dict[str, list[Option]] = {}

    def weight_of(name: str, kind: str):
        module = modules.get(name) if name else None
        if module is None or not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise WorkbenchError(
                f"the {kind} sweep has layer {name!r}, which this model lacks: another model?"
            )
        return module.weight

    if "rank" in methods and "rank" in sweeps:
        sens = sweeps["rank"]
        for name, curve in sens.layers.items():
            w = weight_of(name, "lowrank")
            macs = sens.macs_saved.get(name, ())
            params = sens.params_saved.get(name, ())
            if len(macs) != len(curve.values) or len(params) != len(curve.values):
                raise WorkbenchError(
                    f"the lowrank sweep of {name!r} lacks MACs/params saved per point: rerun it"
                )
            rows = sorted(
                zip(curve.values, curve.accuracy, curve.loss, macs, params, strict=True), reverse=True
            )
            mono = _monotone(
                [(r[0], r[1], r[2]) for r in rows], sens.baseline_accuracy, sens.baseline_loss, sens.metric
            )
            for (f, drop, loss), row in zip(mono, rows, strict=True):
                options.setdefault(name, []).append(
                    Option("rank", float(f), drop, loss, float(row[3]), float(row[4]) * w.element_size())
                )
    if "bits" in methods and "bits" in sweeps:
        sens = sweeps["bits"]
        for name, curve in sens.layers.items():
            w = weight_of(name, "quant")
            rows = sorted(zip(curve.values, curve.accuracy, curve.loss, strict=True), reverse=True)
            rows = [r for r in rows if r[0] < UNTOUCHED_BITS]
            for b, drop, loss in _monotone(rows, sens.baseline_accuracy, sens.baseline_loss, sens.metric):
                stored = math.ceil(w.numel() * b / 8) + w.shape[0] * SCALE_BYTES
                saved = w.numel() * w.element_size() - stored
                if saved > 0:
                    options.setdefault(name, []).append(Option("bits", int(b), drop, loss, 0.0, float(saved)))
    return options


def run_sweep(method, model, data, ratios, rank_fractions, bits, limit, progress, metric="auto"):
    """The sweep of the kind that guides `method`, at the values given for its parameter (its defaults for
    None): `ratios` for prune, `rank_fractions` for rank, `bits` for bits."""
    from analysis.sensitivity.kinds import get_sweep_kind
    from analysis.sensitivity.sweep import sensitivity_sweep

    kind = next(k for k, m in method_kinds().items() if m == method)
    spec = get_sweep_kind(kind)
    given = {"ratios": ratios, "ranks": rank_fractions, "bits": bits}[spec.parameter]
    values = {"bits": given} if spec.bits else {"ratios": given}
    return sensitivity_sweep(model, data, kind=kind, limit=limit, progress=progress, metric=metric, **values)


__all__ = ["NONE", "Option", "layer_options", "method_kinds", "run_sweep", "sweeps_by_method"]
