"""Compression plans (docs/contract.md section 4): what to prune, how, and at how many bits, per layer.

A plan is plain data. It round-trips through JSON, validates its values when it is built, and checks its
layer names against a model when it is applied (`check_layers`). Applying it is `analysis.compression.compress`.

```json
{"default": {"prune": 0.0, "criterion": "l1", "structured": true, "bits": 32},
 "layers":  {"features.3": {"prune": 0.5}, "classifier.2": {"prune": 0, "bits": 8}},
 "finetune": {"epochs": 0, "distill": false}}
```

A layer entry overrides `default` key by key. `bits: 32` means untouched.

docs/contract.md section 8 adds, per layer, `rank` / `rank_energy` (SVD), `share_bits` (k-means sharing) and
`weights` (binary | ternary | pow2), and any field registered in `analysis.transforms.registry` (each value
checked by its handler), checked on each resolved layer by
`analysis.transforms.fields.validate_transform_settings` (refused combinations are one-line errors);
top-level `huffman` (count shared indices Huffman-coded) and `schedule` (`ScheduleSettings`: iterative,
AGP, slimming, group lasso). `finetune` takes `lr_schedule` (constant | cosine) and `recipe`: `recovery`
fills what the plan leaves unsaid with the schedules' recovery recipe (distillation on, cosine decay, Adam
at 1e-3, and with `epochs` 0 or absent the epochs `recovery_epochs` picks for the data size).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import nn

from analysis import validate
from analysis.compression.finetune_settings import (
    FINETUNE_KEYS,
    RECOVERY_LR,
    RECOVERY_LR_SCHEDULE,
    RECOVERY_WARMUP,
    FinetuneSettings,
)
from analysis.errors import WorkbenchError
from analysis.transforms.registry import BASE_LAYER_KEYS, layer_keys, transform_fields
from analysis.validate import UNTOUCHED_BITS

LAYER_KEYS = BASE_LAYER_KEYS
# The plan's top-level keys (docs/contract.md sections 4 and 8); a layer entry's are the registry's
# `layer_keys()`, read when a plan is parsed so that a transform registered later is accepted.
PLAN_KEYS = ("default", "layers", "finetune", "huffman", "schedule")


def known_criteria() -> tuple[str, ...]:
    """Names the plan's `criterion` accepts: the importance registry's (docs/contract.md section 5)."""
    from analysis.importance.base import CRITERIA

    return CRITERIA


def _where(layer: str | None) -> str:
    return f"layer {layer!r}" if layer else "default"


def _json_number(value: Any, key: str, layer: str | None) -> Any:
    """A plan is JSON: a number written as a string ("0.5") is a mistake to point out, as `true` is."""
    if isinstance(value, str):
        raise WorkbenchError(
            f"{_where(layer)}: {key} {value!r} is a string; write the number without quotes, e.g. "
            f'"{key}": {"0.5" if key == "prune" else "8"}'
        )
    return value


def _check_prune(value: Any, layer: str | None) -> float:
    return validate.ratio(_json_number(value, "prune", layer), _where(layer))


def _check_bits(value: Any, layer: str | None) -> int:
    return validate.bits(_json_number(value, "bits", layer), f"{_where(layer)}, bits {value}", untouched=True)


def _check_criterion(value: Any, layer: str | None) -> str:
    return validate.criterion(value, known_criteria(), _where(layer))


def _check_structured(value: Any, layer: str | None) -> bool:
    return validate.flag(value, f"{_where(layer)}: structured")


_CHECKS = {
    "prune": _check_prune,
    "criterion": _check_criterion,
    "structured": _check_structured,
    "bits": _check_bits,
}


def _registered_field(self: Any, name: str) -> Any:
    """A registered transform field kept in `extra` (None when unset), read as an attribute."""
    if name.startswith("__") or name == "extra":
        raise AttributeError(name)
    extra = self.__dict__.get("extra") or {}
    if name in extra or name in transform_fields():
        return extra.get(name)
    raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _own_fields() -> set[str]:
    """The keys `LayerSettings` and `LayerOverride` hold as dataclass fields (the base keys and the
    built-in transforms); any other registered transform field is kept in `extra`."""
    return {f.name for f in dataclasses.fields(LayerSettings)} - {"extra"}


def _split_extra(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` as dataclass keyword arguments: registered fields beyond the built-in ones go in `extra`."""
    own = _own_fields()
    out = {k: v for k, v in values.items() if k in own}
    extra = {k: v for k, v in values.items() if k not in own and v is not None}
    return out | ({"extra": extra} if extra else {})


@dataclass(frozen=True)
class LayerSettings:
    """Fully resolved settings of one layer: prune ratio in [0, 1), ranking criterion, structured (remove
    whole output channels) or unstructured (zero single weights), and weight bits (32 = untouched)."""

    prune: float = 0.0
    criterion: str = "l1"
    structured: bool = True
    bits: int = UNTOUCHED_BITS
    rank: float | None = None
    rank_energy: float | None = None
    share_bits: int | None = None
    weights: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    def __post_init__(self) -> None:
        for key in LAYER_KEYS:
            object.__setattr__(self, key, _CHECKS[key](getattr(self, key), None))
        fields = _transform_fields(self.to_dict(), None)
        own = _own_fields()
        for key in own - set(LAYER_KEYS):
            object.__setattr__(self, key, fields.get(key))
        object.__setattr__(self, "extra", {k: v for k, v in fields.items() if k not in own})

    __getattr__ = _registered_field

    @property
    def transforms(self) -> dict[str, Any]:
        """The transform fields that are set (rank | rank_energy, share_bits, weights, registered ones)."""
        return {key: getattr(self, key) for key in transform_fields() if getattr(self, key) is not None}

    @property
    def prunes(self) -> bool:
        return self.prune > 0.0

    @property
    def quantizes(self) -> bool:
        return self.bits != UNTOUCHED_BITS

    def to_dict(self) -> dict[str, Any]:
        # Transform keys only when set, so plans without them keep their docs/contract.md section 4 form.
        return {key: getattr(self, key) for key in LAYER_KEYS} | self.transforms


@dataclass(frozen=True)
class LayerOverride:
    """One layer's entry in a plan: only the keys it sets (None = take the plan's default)."""

    prune: float | None = None
    criterion: str | None = None
    structured: bool | None = None
    bits: int | None = None
    rank: float | None = None
    rank_energy: float | None = None
    share_bits: int | None = None
    weights: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)

    __getattr__ = _registered_field

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in layer_keys() if getattr(self, key) is not None}


def _transform_fields(settings: Mapping[str, Any], layer: str | None) -> dict[str, Any]:
    """The transform fields of `settings`, normalized; a bad value or refused combination is one line."""
    from analysis.transforms.fields import validate_transform_settings

    return validate_transform_settings(layer or "", settings)


def _layer_settings(raw: Any) -> LayerSettings:
    if isinstance(raw, LayerSettings):
        return raw
    if not isinstance(raw, Mapping):
        raise WorkbenchError(f"plan 'default' must be an object like {{\"prune\": 0.5}}, got {raw!r}")
    validate.known_keys(raw, layer_keys(), "default")
    return LayerSettings(**_split_extra(raw))


def _layer_override(name: Any, raw: Any) -> LayerOverride:
    if not isinstance(name, str) or not name:
        raise WorkbenchError(f"plan layer names must be non-empty strings, got {name!r}")
    if isinstance(raw, LayerOverride):
        raw = raw.to_dict()
    if not isinstance(raw, Mapping):
        raise WorkbenchError(
            f'layer {name!r}: its entry must be an object like {{"prune": 0.5}}, got {raw!r}'
        )
    validate.known_keys(raw, layer_keys(), f"layer {name!r}")
    checked = {key: _CHECKS[key](value, name) for key, value in raw.items() if key in LAYER_KEYS}
    transforms = {key: value for key, value in raw.items() if key not in LAYER_KEYS and value is not None}
    checked.update(_transform_fields(transforms, name))
    return LayerOverride(**_split_extra(checked))


def _finetune_settings(raw: Any) -> FinetuneSettings:
    """A plan's `finetune`: absent, null or false is none; `true`, `{}` or any object that asks for epochs
    is the recovery recipe for whatever it leaves unsaid (`"recipe": "default"` keeps the plain loop)."""
    if isinstance(raw, FinetuneSettings):
        return raw
    if raw is None or raw is False:
        return FinetuneSettings()
    if raw is True:
        raw = {}
    if not isinstance(raw, Mapping):
        raise WorkbenchError(f"plan 'finetune' must be an object like {{\"epochs\": 3}} or true, got {raw!r}")
    validate.known_keys(raw, FINETUNE_KEYS, "finetune")
    values = dict(raw)
    if "recipe" not in values:  # {"epochs": 0} asks for no training: nothing to fill in
        values["recipe"] = "default" if values.get("epochs") == 0 else "recovery"
    if values["recipe"] == "recovery":
        # What the plan leaves unsaid comes from the recovery recipe (schedules.recovery_finetune).
        values.setdefault("distill", True)
        values.setdefault("lr_schedule", RECOVERY_LR_SCHEDULE)
        values.setdefault("lr", RECOVERY_LR)
        values.setdefault("warmup", RECOVERY_WARMUP)
    return FinetuneSettings(**values)


def _schedule(raw: Any):
    if raw is None:
        return None
    from analysis.compression.schedules import ScheduleSettings

    return ScheduleSettings.from_dict(raw)


def _flag(raw: Any, what: str) -> bool:
    return validate.flag(raw, what)


@dataclass(frozen=True)
class CompressionPlan:
    """Per-layer pruning and quantization settings plus optional fine-tuning (docs/contract.md section 4).

    `default` applies to every prunable layer (Conv*d with groups 1 or depthwise, Linear); `layers` maps a
    `named_modules()` name to the keys it overrides. Plain dicts are accepted for all three fields.
    The layers whose output channels are a model output (the final classifier among them) keep them:
    `default` does not prune them structurally, and a `layers` entry that does is refused (one line).
    """

    default: LayerSettings = field(default_factory=LayerSettings)
    layers: Mapping[str, LayerOverride] = field(default_factory=dict)
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    huffman: bool = False
    schedule: Any = None  # analysis.compression.schedules.ScheduleSettings, or None for one-shot

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", _layer_settings(self.default))
        if not isinstance(self.layers, Mapping):
            raise WorkbenchError(f"plan 'layers' must map layer names to objects, got {self.layers!r}")
        # A private copy: changing the caller's dict later must not change a frozen plan.
        object.__setattr__(
            self, "layers", {name: _layer_override(name, raw) for name, raw in self.layers.items()}
        )
        object.__setattr__(self, "finetune", _finetune_settings(self.finetune))
        object.__setattr__(self, "huffman", _flag(self.huffman, "plan: huffman"))
        object.__setattr__(self, "schedule", _schedule(self.schedule))
        # Every layer a plan names must resolve to an allowed combination (the default's checked itself).
        for name in self.layers:
            self.settings_for(name)
        if self.scheduled and self.prunes_per_layer:
            raise WorkbenchError(
                f"plan: schedule {self.schedule.method!r} removes channels itself: drop the per-layer "
                '"prune" values or the schedule'
            )

    @property
    def scheduled(self) -> bool:
        """Whether a schedule (other than the per-layer one-shot) prunes the model."""
        return self.schedule is not None and self.schedule.method != "oneshot"

    @property
    def prunes_per_layer(self) -> bool:
        return any(s.prune > 0 for s in [self.default] + [self.settings_for(n) for n in self.layers])

    def __hash__(self) -> int:
        return hash(self.to_json())

    def settings_for(self, layer: str) -> LayerSettings:
        """The resolved settings of `layer`: its overrides on top of `default`, key by key."""
        override = self.layers.get(layer)
        if override is None:
            return self.default
        merged = self.default.to_dict() | override.to_dict()
        _transform_fields(merged, layer)  # a refused combination names the layer, not the default
        return LayerSettings(**_split_extra(merged))

    def names(self, layer: str, key: str | None = None) -> bool:
        """Whether the plan names `layer` explicitly (and sets `key` for it, when given)."""
        override = self.layers.get(layer)
        if override is None:
            return False
        return key is None or override.to_dict().get(key) is not None

    def check_layers(self, model: nn.Module) -> None:
        """Raise WorkbenchError naming the first plan layer that `model` lacks or cannot prune/quantize."""
        from analysis.model.layers import prunable_layers

        validate.check_layer_names(model, self.layers, prunable_layers(model))

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (docs/contract.md section 4 keys; section 8's `huffman` and `schedule` when
        set)."""
        out = {
            "default": self.default.to_dict(),
            "layers": {name: override.to_dict() for name, override in self.layers.items()},
            "finetune": self.finetune.to_dict(),
        }
        if self.huffman:
            out["huffman"] = True
        if self.schedule is not None:
            out["schedule"] = self.schedule.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompressionPlan:
        """Build a plan from its JSON form; unknown keys and bad values raise WorkbenchError."""
        if not isinstance(data, Mapping):
            raise WorkbenchError(
                f"a plan must be a JSON object with 'default', 'layers', 'finetune', got {data!r}"
            )
        # "about" is free-form information (e.g. what `plan suggest` predicted); it is not part of the plan.
        unknown = sorted(set(data) - {*PLAN_KEYS, "about"})
        if unknown:
            raise WorkbenchError(f"plan: unknown key {unknown[0]!r}: use {', '.join(PLAN_KEYS)}")
        # Absent or null means "nothing set"; any other non-object (0, "", []) is an error, not "empty".
        return cls(
            default={} if data.get("default") is None else data["default"],
            layers={} if data.get("layers") is None else data["layers"],
            finetune=data.get("finetune"),
            huffman=False if data.get("huffman") is None else data["huffman"],
            schedule=data.get("schedule"),
        )

    @classmethod
    def from_json(cls, text: str) -> CompressionPlan:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise WorkbenchError(f"the plan is not valid JSON: {str(exc)[:200]}") from exc
        return cls.from_dict(data)

    @classmethod
    def uniform(
        cls,
        prune: float = 0.0,
        *,
        bits: int = UNTOUCHED_BITS,
        criterion: str = "l1",
        structured: bool = True,
        finetune: FinetuneSettings | Mapping[str, Any] | None = None,
    ) -> CompressionPlan:
        """The same ratio and bits for every prunable layer (the final classifier keeps its outputs)."""
        return cls(
            default=LayerSettings(prune=prune, criterion=criterion, structured=structured, bits=bits),
            finetune=finetune,
        )

    def with_layers(self, layers: Mapping[str, Mapping[str, Any]]) -> CompressionPlan:
        """A copy with `layers` merged into the overrides, key by key."""
        merged = {name: o.to_dict() for name, o in self.layers.items()}
        for name, raw in layers.items():
            merged[name] = {**merged.get(name, {}), **dict(raw)}
        return replace(self, layers=merged)

    def with_finetune(self, **settings: Any) -> CompressionPlan:
        """A copy with the given fine-tuning settings changed."""
        return replace(self, finetune={**self.finetune.to_dict(), **settings})


def load_plan(path: str | Path) -> CompressionPlan:
    """Read a plan from a JSON file; a missing file or bad content raises WorkbenchError."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"plan file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkbenchError(f"cannot read plan {path}: {exc}") from exc
    try:
        return CompressionPlan.from_json(text)
    except WorkbenchError as exc:
        raise WorkbenchError(f"{path}: {exc}") from exc


__all__ = [
    "CompressionPlan",
    "FinetuneSettings",
    "LayerOverride",
    "LayerSettings",
    "load_plan",
]
