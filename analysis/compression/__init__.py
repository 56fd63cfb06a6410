"""Compression: the plan (and its settings), applying it (`compress`), the result, recovery training,
schedules beyond one-shot pruning, and suggested plans for a budget."""

from __future__ import annotations

from analysis.registry import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
