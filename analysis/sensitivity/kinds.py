"""The sensitivity sweep kinds: one `SweepKind` each, in `SWEEP_KINDS` (the `analysis.registry.Registry`
style of the criteria, runtimes and schedule methods).

A `SweepKind` says everything the rest of the workbench needs about a kind, so that no reader names one:
what its values are (the label of tables and axes, the defaults, the CLI option and page field they come
from, the result's column and JSON key, which way compresses more), the sentence the HTML report prints,
the `suggest_mixed` method its sweep guides and its own sweep function where it has one. The sweep, its
result, the CLI, the Sensitivity, Report and History pages, the reports and `suggest_mixed` read it here.

The built-in kinds register below. A registered transform's kind (`analysis.transforms.registry`: a
handler with `kind` set) is a kind too, described from its handler with no second registration:
`sweep_kinds()` and `get_sweep_kind(name)` read both registries on every call, so a late registration
shows up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from analysis.errors import WorkbenchError
from analysis.registry import Registry
from analysis.transforms.registry import TRANSFORMS, TransformHandler


@dataclass(frozen=True)
class SweepKind:
    """One sensitivity sweep kind.

    `values` names its values in the plural ("ratios", "bits", "rank fractions"), `axis` titles a chart's
    values axis; `parameter` is the option they come from (`--ratios`, `--bits`, `--ranks`; the Sensitivity
    page's field of that name) and `defaults` what it sweeps without one; `column` is the values' column in
    `SensitivityResult.to_frame` and `bits` whether they are bit widths (JSON key `bits`, not `ratios`; the
    safe point is then the smallest safe width). `lower_compresses_more`: smaller values compress more (charts
    put them to the right). `unit`: what one curve is (`groups` for structured). `safe_label` heads the safe
    points columns, `safe_text` says in a sentence what the safe point is. `stops_early`: the Sensitivity
    page passes its early-stop drop. `all_points`: the page lists every point instead of the safe points.
    `saves_cost`: each point also records the rank and the MACs and params it saves. `mixed_method`: the
    `suggest_mixed` method its sweep guides. `sweep`: "module:function" of its own sweep (`function(model,
    data, values, layers, progress, **options)`), None where the shared edit loop runs it. `handler`: the
    transform that adds it, if any."""

    name: str
    description: str
    text: str
    values: str = "ratios"
    axis: str = "pruning ratio (fraction removed)"
    parameter: str = "ratios"
    defaults: tuple = ()
    column: str = "ratio"
    bits: bool = False
    lower_compresses_more: bool = False
    unit: str = "layers"
    safe_label: str = "max ratio"
    safe_text: str = "largest ratio"
    stops_early: bool = True
    all_points: bool = False
    saves_cost: bool = False
    mixed_method: str | None = None
    sweep: str | None = None
    handler: TransformHandler | None = None

    def __post_init__(self) -> None:
        if self.parameter not in ("ratios", "bits", "ranks"):
            raise WorkbenchError(f"sweep kind {self.name!r}: parameter must be ratios, bits or ranks")

    @property
    def x_key(self) -> str:
        """The JSON key of its values in a result: "bits" or "ratios"."""
        return "bits" if self.bits else "ratios"

    def sweep_function(self) -> Callable | None:
        """Its own sweep function (imported on first use), None for the shared edit loop."""
        if self.sweep is None:
            return None
        module, name = self.sweep.split(":")
        return getattr(importlib.import_module(module), name)


DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_BITS = (2, 3, 4, 6, 8)
SWEEP_KINDS: Registry[SweepKind] = Registry("sensitivity kind")


def register_sweep_kind(kind: SweepKind) -> SweepKind:
    """Add `kind` under its name (one already taken, here or by another transform, is a one-line error).
    A transform's kind needs no registration: this one is for describing it by hand (the built-in ones)."""
    if any(h.kind == kind.name and h is not kind.handler for h in TRANSFORMS.values()):
        raise WorkbenchError(f"sensitivity kind {kind.name!r} is already registered by a transform")
    return SWEEP_KINDS.register(kind.name, kind, description=kind.description)


def _from_handler(handler: TransformHandler) -> SweepKind:
    """The kind a registered transform adds, described from its handler."""
    label = handler.sweep_label or handler.field
    plural = "bits" if handler.values_are_bits else f"{label} values"
    return SweepKind(
        name=str(handler.kind),
        description=(handler.__doc__ or handler.field).strip().split("\n\n")[0].replace("\n", " "),
        text=f"Each layer's {handler.field} is set to each swept value (transform {handler.field!r}).",
        values=plural,
        axis=label,
        parameter="bits" if handler.values_are_bits else "ratios",
        defaults=tuple(handler.sweep_values),
        column="bits" if handler.values_are_bits else handler.field,
        bits=handler.values_are_bits,
        lower_compresses_more=handler.values_are_bits,
        safe_label="min bits" if handler.values_are_bits else f"max {label}",
        safe_text="smallest bit width" if handler.values_are_bits else f"largest {label}",
        handler=handler,
    )


def _handler_kinds() -> dict[str, TransformHandler]:
    """The transforms' kinds that are not registered here: kind -> handler."""
    return {h.kind: h for h in TRANSFORMS.values() if h.kind and h.kind not in SWEEP_KINDS}


def sweep_kinds() -> tuple[str, ...]:
    """Every sensitivity sweep kind: the registered ones, then each transform's kind, in registration order."""
    return SWEEP_KINDS.names() + tuple(_handler_kinds())


def get_sweep_kind(name: str) -> SweepKind:
    """The kind called `name`; an unknown name is one line listing the known ones."""
    if name in SWEEP_KINDS:
        return SWEEP_KINDS.get(name)
    handler = _handler_kinds().get(name) if isinstance(name, str) else None
    if handler is None:
        raise WorkbenchError(f"unknown sensitivity kind {name!r}: choose one of {', '.join(sweep_kinds())}")
    return _from_handler(handler)


def basic_kinds() -> tuple[str, ...]:
    """The kinds `report` runs by default: those the shared edit loop sweeps with no transform."""
    return tuple(n for n, k in SWEEP_KINDS.items() if k.sweep is None and k.handler is None)


def bits_kinds() -> tuple[str, ...]:
    """The kinds whose values are bit widths."""
    return tuple(n for n in sweep_kinds() if get_sweep_kind(n).bits)


# ---------------------------------------------------------------------------------------- the built-in kinds

_BITS = {"values": "bits", "axis": "bits per weight", "parameter": "bits", "column": "bits", "bits": True}
_BITS |= {"lower_compresses_more": True, "safe_label": "min bits", "safe_text": "smallest bit width"}

for _kind in (
    SweepKind(
        "structured",
        "Each coupled group loses its lowest-L1 output channels, with every layer coupled to them.",
        "Each group's lowest-L1 output channels are removed with every layer coupled to them (residual adds, "
        "concatenations, norms, the next layers' inputs), simulated exactly by zeroing.",
        defaults=DEFAULT_RATIOS,
        unit="groups",
        mixed_method="prune",
    ),
    SweepKind(
        "unstructured",
        "Each layer's smallest-magnitude weights are zeroed.",
        "Each layer's smallest-magnitude weights are zeroed.",
        defaults=DEFAULT_RATIOS,
    ),
    SweepKind(
        "quant",
        "Each layer's weights fake-quantized, symmetric per output channel.",
        "Each layer's weights are fake-quantized: symmetric, per output channel, 2^(b-1) - 1 levels each "
        "side; activations stay float.",
        defaults=DEFAULT_BITS,
        mixed_method="bits",
        **_BITS,
    ),
    SweepKind(
        "lowrank",
        "Each Linear / Conv2d layer replaced by its truncated SVD at a kept rank fraction.",
        "Each Linear / Conv2d layer is replaced by its truncated SVD at the kept fraction of its full "
        "rank (before fine-tuning); the dotted lines give the MACs per sample each point saves.",
        values="rank fractions",
        axis="kept rank fraction (of the full rank)",
        parameter="ranks",
        defaults=TRANSFORMS["rank"].sweep_values,
        column="kept_rank",
        lower_compresses_more=True,
        safe_label="min kept rank",
        safe_text="smallest kept rank fraction",
        stops_early=False,
        all_points=True,
        saves_cost=True,
        mixed_method="rank",
        sweep="analysis.sensitivity.transform_sweeps:lowrank_sensitivity",
        handler=TRANSFORMS["rank"],
    ),
    SweepKind(
        "share",
        "Each layer's weights shared by k-means with 2^bits centroids.",
        "Each layer's weights are shared by k-means (2^bits centroids, linear initialization), as in "
        "Deep Compression; before centroid fine-tuning.",
        **(_BITS | {"defaults": TRANSFORMS["share_bits"].sweep_values}),
        stops_early=False,
        all_points=True,
        sweep="analysis.sensitivity.transform_sweeps:share_sensitivity",
        handler=TRANSFORMS["share_bits"],
    ),
):
    register_sweep_kind(_kind)


__all__ = [
    "DEFAULT_BITS",
    "DEFAULT_RATIOS",
    "SWEEP_KINDS",
    "SweepKind",
    "basic_kinds",
    "bits_kinds",
    "get_sweep_kind",
    "register_sweep_kind",
    "sweep_kinds",
]
