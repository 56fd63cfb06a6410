"""The transforms a plan applies to a layer (pruning, quantization, low-rank, weight sharing, low-bit) and
the coupled channel groups they act on."""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "PruningGroup": "analysis.transforms.groups",
    "find_groups": "analysis.transforms.groups",
    "prune_structured": "analysis.transforms.pruning",
    "prune_unstructured": "analysis.transforms.pruning",
    "pruning_groups": "analysis.transforms.pruning",
    "fake_quantize": "analysis.transforms.quantization",
    "quantize_weights": "analysis.transforms.quantization",
    "quantized_size_bytes": "analysis.transforms.quantization",
    "apply_transforms": "analysis.transforms.fields",
    "validate_transform_settings": "analysis.transforms.fields",
    "TransformHandler": "analysis.transforms.registry",
    "register_transform": "analysis.transforms.registry",
    "unregister_transform": "analysis.transforms.registry",
    "transform_columns": "analysis.transforms.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (the submodules import each other; importing them all here
    would make every `analysis.transforms.x` import load the whole package)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
