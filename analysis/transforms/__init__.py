"""The transforms a plan applies to a layer (pruning, quantization, low-rank, weight sharing, low-bit) and
the coupled channel groups they act on."""

from __future__ import annotations

from analysis.registry import lazy_exports

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "PruningGroup": "analysis.transforms.groups",
    "find_groups": "analysis.transforms.groups",
    "prune_structured": "analysis.transforms.pruning",
    "prune_unstructured": "analysis.transforms.pruning",
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

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
