"""Sensitivity: per-layer sensitivity sweeps of every kind and their results."""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "lowrank_sensitivity": "analysis.sensitivity.transform_sweeps",
    "quant_vs_kmeans": "analysis.sensitivity.transform_sweeps",
    "share_sensitivity": "analysis.sensitivity.transform_sweeps",
    "BITS_KINDS": "analysis.sensitivity.result",
    "DEFAULT_BITS": "analysis.sensitivity.sweep",
    "DEFAULT_RATIOS": "analysis.sensitivity.sweep",
    "SensitivityCurve": "analysis.sensitivity.sweep",
    "SensitivityResult": "analysis.sensitivity.sweep",
    "sensitivity_sweep": "analysis.sensitivity.sweep",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (the submodules import each other; importing them all here
    would make every `analysis.sensitivity.x` import load the whole package)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
