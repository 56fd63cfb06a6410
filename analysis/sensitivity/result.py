"""What a sensitivity sweep returns (`SensitivityResult`, one `SensitivityCurve` per layer or group), in a
leaf module: the sweeps here (`analysis.sensitivity.sweep`) and the transforms' sweeps
(`analysis.sensitivity.transform_sweeps`: kinds lowrank and share) build the same result type. What a kind's
values are (JSON key, column) is its `SweepKind` (`analysis.sensitivity.kinds`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from analysis.errors import WorkbenchError
from analysis.metrics import ACCURACY, MetricInfo
from analysis.sensitivity.kinds import get_sweep_kind
from analysis.validate import few

_TOLERANCE = 1e-9  # accuracy drops are ratios of counts; this absorbs float noise in comparisons


@dataclass(frozen=True)
class SensitivityCurve:
    """One layer's (or group's) curve: `values` are ratios (pruning) or bit widths (quant), ascending for
    ratios and descending for bits (the sweep order); `accuracy` the score at each point in the sweep's
    metric (top-1 accuracy for accuracy sweeps: the field keeps its historical name); `members` lists a
    structured group's layers."""

    values: tuple[float, ...]
    accuracy: tuple[float, ...]
    loss: tuple[float, ...]
    members: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SensitivityResult:
    """A sweep's outcome. `layers` maps layer (or group) name -> curve; do not mutate it.

    Scores are in `metric` (top-1 accuracy in [0, 1] by default; `baseline_accuracy` and the curves'
    `accuracy` hold the score whatever the metric), loss the mean loss (cross-entropy in nats with labels),
    `seconds` the sweep's wall time. Drops are taken in the metric's direction (`metric.drop`).
    """

    kind: str
    baseline_accuracy: float
    baseline_loss: float
    seconds: float
    layers: dict[str, SensitivityCurve]
    notes: tuple[str, ...] = ()
    samples: int = 0
    max_drop: float | None = field(default=None)
    partial: bool = False  # stopped by `should_stop`: only the finished layers are here
    metric: MetricInfo = ACCURACY
    failed_layers: dict[str, str] = field(default_factory=dict)  # {name: error}: a Ray task failed for good

    @property
    def x_key(self) -> str:
        """ "bits" for quant and share, "ratios" otherwise (lowrank: kept rank fractions): the JSON key."""
        return get_sweep_kind(self.kind).x_key

    @property
    def bits_kind(self) -> bool:
        return get_sweep_kind(self.kind).bits

    def to_dict(self) -> dict:
        """docs/contract.md section 3's JSON: kind, baseline, seconds, layers {name: {ratios|bits, accuracy, loss,
        members?}}, plus samples, notes and `metric: {name, direction}`; scores are under the metric's
        name (`accuracy` for accuracy sweeps, `psnr`, ...)."""
        key = self.metric.name
        layers = {}
        for name, curve in self.layers.items():
            entry: dict = {
                self.x_key: [int(v) if self.bits_kind else float(v) for v in curve.values],
                key: list(curve.accuracy),
                "loss": list(curve.loss),
            }
            if curve.members is not None:
                entry["members"] = list(curve.members)
            layers[name] = entry
        out = {
            "kind": self.kind,
            "baseline": {key: self.baseline_accuracy, "loss": self.baseline_loss},
            "metric": self.metric.to_dict(self.baseline_accuracy),
            "seconds": self.seconds,
            "samples": self.samples,
            "layers": layers,
            "notes": list(self.notes),
        }
        if self.max_drop is not None:
            out["max_drop"] = self.max_drop
        out["partial"] = self.partial
        if self.failed_layers:
            out["failed_layers"] = dict(self.failed_layers)
        return out

    @classmethod
    def from_dict(cls, payload: Mapping) -> SensitivityResult:
        """Inverse of `to_dict` (JSON round trip)."""
        try:
            kind = payload["kind"]
            spec = get_sweep_kind(kind)  # an unknown kind is one line listing the known ones
            bits, key = spec.bits, spec.x_key
            metric = MetricInfo.from_dict(payload.get("metric"))
            score = metric.name
            layers = {}
            extra: dict = {"ranks": {}, "macs_saved": {}, "params_saved": {}}
            for name, entry in payload["layers"].items():
                values = tuple(int(v) if bits else float(v) for v in entry[key])
                if spec.saves_cost:
                    extra["ranks"][name] = tuple(int(v) for v in entry.get("rank", ()))
                    extra["macs_saved"][name] = tuple(int(v) for v in entry.get("macs_saved", ()))
                    extra["params_saved"][name] = tuple(int(v) for v in entry.get("params_saved", ()))
                members = tuple(entry["members"]) if entry.get("members") is not None else None
                layers[name] = SensitivityCurve(
                    values, tuple(map(float, entry[score])), tuple(map(float, entry["loss"])), members
                )
            common = {
                "kind": kind,
                "baseline_accuracy": float(payload["baseline"][score]),
                "baseline_loss": float(payload["baseline"]["loss"]),
                "seconds": float(payload["seconds"]),
                "layers": layers,
                "notes": tuple(payload.get("notes", ())),
                "samples": int(payload.get("samples", 0)),
                "max_drop": payload.get("max_drop"),
                "partial": bool(payload.get("partial", False)),
                "metric": metric,
                "failed_layers": {str(k): str(v) for k, v in (payload.get("failed_layers") or {}).items()},
            }
            if spec.saves_cost:
                return LowRankSensitivity(**common, **extra)
            return cls(**common)
        except (KeyError, TypeError) as exc:
            raise WorkbenchError(f"not a sensitivity result: missing or bad {exc}") from exc

    def to_frame(self):
        """Long form pandas DataFrame: layer, kind, the values' column (the kind's `column`: ratio, bits for
        quant/share, kept_rank for lowrank, with its rank and macs_saved), the score (column named after the
        metric: `accuracy`, `psnr`), loss; one row per point."""
        import pandas as pd

        spec = get_sweep_kind(self.kind)
        column = spec.column
        score = self.metric.name
        rows = [
            {"layer": name, "kind": self.kind, column: v, score: a, "loss": lo}
            for name, curve in self.layers.items()
            for v, a, lo in zip(curve.values, curve.accuracy, curve.loss, strict=True)
        ]
        columns = ["layer", "kind", column, score, "loss"]
        extra = {key: getattr(self, key, None) for key in ("ranks", "macs_saved")}
        if spec.saves_cost and all(v is not None for v in extra.values()):
            per_point = [
                (extra["ranks"][name][i], extra["macs_saved"][name][i])
                for name, curve in self.layers.items()
                for i in range(len(curve.values))
            ]
            for row, (rank, saved) in zip(rows, per_point, strict=True):
                row["rank"], row["macs_saved"] = rank, saved
            columns += ["rank", "macs_saved"]
        return pd.DataFrame(rows, columns=columns)

    def _curve(self, layer: str) -> SensitivityCurve:
        if layer not in self.layers:
            raise WorkbenchError(f"no layer {layer!r} in this sweep: choose one of {few(self.layers)}")
        return self.layers[layer]

    def drops(self, layer: str) -> list[float]:
        """Drop from the baseline at each swept point in the metric's units (positive = worse)."""
        return [self.metric.drop(self.baseline_accuracy, a) for a in self._curve(layer).accuracy]

    def max_safe_ratio(self, layer: str, max_drop: float) -> float:
        """The largest swept ratio up to which every swept ratio stays within `max_drop` of the baseline
        accuracy (0.0 where even the smallest does not). Pruning kinds only; see `min_safe_bits`."""
        if self.bits_kind:
            raise WorkbenchError(
                f"a {self.kind} sweep has bit widths, not ratios: use min_safe_bits(layer, max_drop)"
            )
        safe = 0.0
        for ratio, drop in zip(self._curve(layer).values, self.drops(layer), strict=True):
            if drop > max_drop + _TOLERANCE:
                break
            safe = float(ratio)
        return safe

    def min_safe_bits(self, layer: str, max_drop: float) -> int | None:
        """The smallest swept bit width down to which every swept width stays within `max_drop` of the
        baseline accuracy; None where even the widest does not (keep the layer in float)."""
        if not self.bits_kind:
            raise WorkbenchError(
                f"a {self.kind} sweep has ratios, not bit widths: use max_safe_ratio(layer, max_drop)"
            )
        curve = self._curve(layer)
        pairs = sorted(zip(curve.values, self.drops(layer), strict=True), reverse=True)
        safe = None
        for bits, drop in pairs:
            if drop > max_drop + _TOLERANCE:
                break
            safe = int(bits)
        return safe

    def safe_point(self, layer: str, max_drop: float) -> float | int | None:
        """`min_safe_bits` for quant and share sweeps, `max_safe_ratio` otherwise (lowrank: the smallest kept
        rank fraction, swept largest first, up to which every point stays within `max_drop`)."""
        if self.bits_kind:
            return self.min_safe_bits(layer, max_drop)
        return self.max_safe_ratio(layer, max_drop)


@dataclass(frozen=True)
class LowRankSensitivity(SensitivityResult):
    """A `lowrank` sweep: `SensitivityCurve.values` are kept rank fractions (descending, the sweep order);
    per layer and point also the rank, and the MACs (per sample) and params saved."""

    ranks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    macs_saved: dict[str, tuple[int, ...]] = field(default_factory=dict)
    params_saved: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = super().to_dict()
        for name, entry in out["layers"].items():
            entry["rank"] = list(self.ranks.get(name, ()))
            entry["macs_saved"] = list(self.macs_saved.get(name, ()))
            entry["params_saved"] = list(self.params_saved.get(name, ()))
        return out


__all__ = [
    "LowRankSensitivity",
    "SensitivityCurve",
    "SensitivityResult",
]
