"""Compression: the plan (and its settings), applying it (`compress`), the result, recovery training,
schedules beyond one-shot pruning, and suggested plans for a budget."""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it (`compress`, `finetune` and `suggest` are modules here: those functions
# are `analysis.compress`, `analysis.finetune`, `analysis.suggest`)
_EXPORTS: dict[str, str] = {
    "CompressionPlan": "analysis.compression.plan",
    "LayerSettings": "analysis.compression.plan",
    "FinetuneSettings": "analysis.compression.plan",
    "load_plan": "analysis.compression.plan",
    "CompressionResult": "analysis.compression.result",
    "ModelMetrics": "analysis.compression.result",
    "FinetuneResult": "analysis.compression.finetune",
    "distillation_loss": "analysis.compression.training",
    "Budget": "analysis.compression.suggest",
    "MixedSuggestion": "analysis.compression.suggest",
    "PlanSuggestion": "analysis.compression.suggest",
    "suggest_mixed": "analysis.compression.suggest",
    "suggest_plan": "analysis.compression.suggest",
    "uniform_plan": "analysis.compression.suggest",
    "ScheduleResult": "analysis.compression.schedules",
    "ScheduleSettings": "analysis.compression.schedules",
    "recovery_epochs": "analysis.compression.schedules",
    "run_schedule": "analysis.compression.schedules",
    "sparsity_values": "analysis.compression.sparsity",
    "NORMALIZATIONS": "analysis.compression.global_rank",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import an exported name on first use (the submodules import each other; importing them all here
    would make every `analysis.compression.x` import load the whole package)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
