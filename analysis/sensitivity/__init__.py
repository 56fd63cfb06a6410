"""Sensitivity: per-layer sensitivity sweeps of every kind (each described once, `analysis.sensitivity.kinds`)
and their results."""

from __future__ import annotations

from analysis.registry import lazy_exports

# name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "lowrank_sensitivity": "analysis.sensitivity.transform_sweeps",
    "quant_vs_kmeans": "analysis.sensitivity.transform_sweeps",
    "share_sensitivity": "analysis.sensitivity.transform_sweeps",
    "DEFAULT_BITS": "analysis.sensitivity.kinds",
    "DEFAULT_RATIOS": "analysis.sensitivity.kinds",
    "SWEEP_KINDS": "analysis.sensitivity.kinds",
    "SweepKind": "analysis.sensitivity.kinds",
    "basic_kinds": "analysis.sensitivity.kinds",
    "bits_kinds": "analysis.sensitivity.kinds",
    "get_sweep_kind": "analysis.sensitivity.kinds",
    "register_sweep_kind": "analysis.sensitivity.kinds",
    "sweep_kinds": "analysis.sensitivity.kinds",
    "SensitivityCurve": "analysis.sensitivity.sweep",
    "SensitivityResult": "analysis.sensitivity.sweep",
    "sensitivity_sweep": "analysis.sensitivity.sweep",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
