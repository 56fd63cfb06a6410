"""One handler per plan field: the transforms registry (the way torchao registers a handler per config).

A transform is a per-layer plan field (`rank`, `share_bits`, `weights`, ...). Its `TransformHandler` says
everything the rest of the workbench needs about it, and each reader looks it up here instead of naming it:
- the plan (`analysis.compression.plan`): which keys a layer entry accepts, and `check` for each value;
- `compress` (`analysis.transforms.fields.apply_transforms`): `apply` on each layer that sets the field,
  `size_bytes` for the stored size;
- the sensitivity sweeps (`analysis.sensitivity.kinds`, `analysis.sensitivity.sweep`): `kind`, the sweep
  kind it adds, its default `sweep_values` and their `sweep_label`, and `sweep_weight`, the weight one
  point evaluates;
- the Compress page's preview (`analysis.app_support.preview.preview_transforms`): `changes_cost`, whether
  the MACs and params it counts before Apply must apply the field;
- the store's plan diff (`analysis.store.compare`): the column order, `layer_keys()`;
- the Compress page: `column`, the per-layer editor's widget.

Adding a transform is one handler class and one `register_transform(Handler())`;
`unregister_transform(field)` removes it.
The built-in fields (`rank`, `rank_energy`, `share_bits`, `weights`) are `builtin`: `apply_transforms` and
the sweeps keep their own code for them (factoring replaces a layer by two; sharing codes a codebook), and
refused combinations between them stay in `fields.validate_transform_settings`. Any other handler goes
through the generic path: its `sweep_weight` / `apply_weight` give a layer's new weight, of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.transforms import lowbit, lowrank, sharing

# The plan's own per-layer keys, before any transform (docs/contract.md section 4).
BASE_LAYER_KEYS = ("prune", "criterion", "structured", "bits")
# The sweep kinds that are not a transform field: pruning (structured, unstructured) and `bits` (quant).
BASE_SWEEP_KINDS = ("structured", "unstructured", "quant")


@dataclass(frozen=True)
class Column:
    """How the Compress page edits a field per layer: a `number` input (`low`..`high` by `step`) or a
    `select` over `options`; `off` is the value shown for "not set"; `state_key` the session-state prefix
    of each layer's widget (`{state_key}::{layer}`)."""

    label: str
    widget: str = "number"
    off: Any = 0.0
    options: tuple = ()
    low: float = 0.0
    high: float = 1.0
    step: float = 0.05
    state_key: str = ""

    def value(self, shown: Any) -> Any:
        """The plan value for what the widget shows: None when it shows `off` (or nothing)."""
        return None if shown is None or shown == self.off else shown


class TransformHandler:
    """What one per-layer plan field means everywhere. Subclasses set `field` and implement `check`; a
    non-builtin one also implements `apply_weight` (compress) and, with `kind` set, `sweep_weight`."""

    field: str = ""
    kind: str | None = None  # the sensitivity sweep kind it adds, if any
    sweep_values: tuple = ()  # the values a sweep of `kind` takes by default
    sweep_label: str = ""  # what those values are, on a chart's axis and in tables (default: `field`)
    values_are_bits: bool = False  # a sweep's values are bit widths (JSON key "bits", not "ratios")
    column: Column | None = None  # the Compress page's per-layer widget, if any
    builtin: bool = False  # applied and swept by the workbench's own code, not the generic path
    needs: str = "a layer with a weight"  # what `applies_to` asks of a layer, for the error naming one
    changes_cost: bool = False  # changes MACs or params: the Compress page's preview applies it to count

    def check(self, value: Any, where: str) -> Any:
        """`value` normalized, or a one-line WorkbenchError saying what is allowed (`where`: the layer)."""
        raise NotImplementedError

    def applies_to(self, module: nn.Module) -> bool:
        """Whether `module` can take the field (default: any module with a weight; `needs` says it in
        words). `compress` skips the layers a plan's default reaches that cannot, and refuses one named."""
        return isinstance(getattr(module, "weight", None), torch.Tensor)

    def apply_weight(self, weight: torch.Tensor, value: Any) -> torch.Tensor:
        """The layer's new weight (same shape and dtype) with the field at `value`."""
        raise NotImplementedError

    def sweep_weight(self, weight: torch.Tensor, value: Any) -> torch.Tensor:
        """The weight one sweep point evaluates (default: what `compress` applies)."""
        return self.apply_weight(weight, value)

    def size_bytes(self, weight: torch.Tensor, value: Any) -> int:
        """The stored size of the transformed weight (default: unchanged)."""
        return weight.numel() * weight.element_size()

    def apply(self, module: nn.Module, value: Any, *, huffman: bool = False) -> dict:
        """Apply the field to `module` in place; the layer's entry in `compress`'s `transforms` sizes, with
        the transformed weight's stored `bytes` (`huffman`: the plan's top-level flag)."""
        with torch.no_grad():
            weight = module.weight
            weight.copy_(self.apply_weight(weight, value).to(weight.dtype))
        return {
            "transform": self.field,
            "value": value,
            "bytes": self.size_bytes(weight, value),
            "float32_bytes": weight.numel() * weight.element_size(),
        }


TRANSFORMS: dict[str, TransformHandler] = {}


def register_transform(handler: TransformHandler | type[TransformHandler]) -> TransformHandler:
    """Add `handler` (an instance or a class taking no arguments) under its `field`; returns the instance.
    A field or sweep kind already taken is a one-line error."""
    if isinstance(handler, type):
        handler = handler()
    name = handler.field
    if not isinstance(name, str) or not name.isidentifier():
        raise WorkbenchError(f"a transform's field must be a plain name like 'scale', got {name!r}")
    if name in TRANSFORMS or name in BASE_LAYER_KEYS:
        raise WorkbenchError(f"transform field {name!r} is already registered: unregister it first")
    if handler.kind is not None and handler.kind in _taken_kinds():
        raise WorkbenchError(f"sweep kind {handler.kind!r} is already taken: choose another kind")
    TRANSFORMS[name] = handler
    return handler


def unregister_transform(field: str) -> None:
    """Remove the transform registered under `field` (nothing if there is none)."""
    TRANSFORMS.pop(field, None)


def get_transform(field: str) -> TransformHandler:
    """The handler of plan field `field`; an unknown one is a one-line error listing the known ones."""
    if field not in TRANSFORMS:
        raise WorkbenchError(f"unknown transform {field!r}: use one of {', '.join(TRANSFORMS)}")
    return TRANSFORMS[field]


def transform_fields() -> tuple[str, ...]:
    """The per-layer plan fields the registry adds, in registration order."""
    return tuple(TRANSFORMS)


def layer_keys() -> tuple[str, ...]:
    """Every key a plan's layer entry accepts, in the order a reader expects them."""
    return BASE_LAYER_KEYS + transform_fields()


def _taken_kinds() -> tuple[str, ...]:
    """The sweep kinds a new transform cannot take: pruning and quant, and every transform's `kind` (the
    whole list, with its descriptions, is `analysis.sensitivity.kinds`)."""
    return BASE_SWEEP_KINDS + tuple(h.kind for h in TRANSFORMS.values() if h.kind)


def transform_columns() -> dict[str, Column]:
    """The Compress page's per-layer transform columns, field -> Column, in registration order."""
    return {name: h.column for name, h in TRANSFORMS.items() if h.column is not None}


# ------------------------------------------------------------------------------- the built-in transforms


class Rank(TransformHandler):
    """SVD factorization at a kept rank fraction (`analysis.transforms.lowrank`)."""

    field, kind, builtin, changes_cost = "rank", "lowrank", True, True
    sweep_values = (0.75, 0.5, 0.25, 0.125)
    column = Column("rank fraction (0 = off)", "number", 0.0, low=0.0, high=1.0, step=0.05, state_key="rank")
    needs = "a Linear or groups=1 Conv2d layer"

    def check(self, value: Any, where: str) -> float:
        return lowrank.check_rank(value, f"{where}: rank")

    def applies_to(self, module: nn.Module) -> bool:
        return lowrank.factorable(module)


class RankEnergy(TransformHandler):
    """SVD factorization at the rank that keeps a share of the squared singular values."""

    field, builtin, changes_cost = "rank_energy", True, True
    needs = Rank.needs

    def check(self, value: Any, where: str) -> float:
        return lowrank.check_rank_energy(value, f"{where}: rank_energy")

    def applies_to(self, module: nn.Module) -> bool:
        return lowrank.factorable(module)


class ShareBits(TransformHandler):
    """k-means weight sharing with a 2^bits codebook (`analysis.transforms.sharing`)."""

    field, kind, builtin, values_are_bits = "share_bits", "share", True, True
    sweep_values = (8, 6, 5, 4, 3, 2, 1)
    column = Column("share bits (0 = off)", "select", 0, options=tuple(range(9)), state_key="share")

    def check(self, value: Any, where: str) -> int:
        return sharing.check_share_bits(value, f"{where}: share_bits")

    def apply(self, module: nn.Module, value: Any, *, huffman: bool = False) -> dict:
        weight = module.weight
        with torch.no_grad():
            shared = sharing.share_weight(weight, value)
            weight.copy_(shared.weight(weight.dtype))
        return {
            "transform": "share",
            "bits": value,
            "centroids": len(shared.centroids),
            "huffman": huffman,
            "float32_bytes": weight.numel() * weight.element_size(),
            **shared.size_bytes(huffman),
        }


class Weights(TransformHandler):
    """Binary, ternary or power-of-two weights (`analysis.transforms.lowbit`, simulated)."""

    field, builtin = "weights", True
    column = Column("weights", "select", "float", options=("float", *lowbit.WEIGHT_KINDS), state_key="wts")

    def check(self, value: Any, where: str) -> str:
        return lowbit.check_kind(value, f"{where}: weights")

    def apply(self, module: nn.Module, value: Any, *, huffman: bool = False) -> dict:
        weight = module.weight
        with torch.no_grad():
            weight.copy_(lowbit.lowbit_weight(weight, value))
        return {
            "transform": value,
            "bytes": lowbit.lowbit_size_bytes(weight, value),
            "float32_bytes": weight.numel() * weight.element_size(),
            "label": lowbit.LABEL,
        }


for _handler in (Rank, RankEnergy, ShareBits, Weights):
    register_transform(_handler)

__all__ = [
    "BASE_LAYER_KEYS",
    "BASE_SWEEP_KINDS",
    "TRANSFORMS",
    "Column",
    "TransformHandler",
    "transform_columns",
    "get_transform",
    "layer_keys",
    "register_transform",
    "transform_fields",
    "unregister_transform",
]
