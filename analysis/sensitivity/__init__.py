"""Sensitivity: per-layer sensitivity sweeps of every kind and their results."""

from __future__ import annotations

from analysis.registry import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
