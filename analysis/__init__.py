"""The compression workbench's library: what the CLI, the notebooks and your own code call.

The names below are the library API, imported lazily (PEP 562): `import analysis` loads neither torch's
extras nor plotly nor pandas until a name is used. Each subpackage exports its own names as well
(`analysis.model`, `analysis.data`, `analysis.importance`, `analysis.sensitivity`, `analysis.transforms`,
`analysis.compression`, `analysis.runtime`, `analysis.store`, `analysis.report`, `analysis.metrics`, ...);
what an interactive front end needs beyond the library (previews, serving policy, uploads, loading) is in
`analysis.app_support`. The layering is in docs/architecture.md. Never imports streamlit (a test asserts it).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import analysis.startup  # noqa: F401  (first: Ctrl-C during the imports a name triggers is one line under `-m`)

# name -> (module, attribute in it): the whole library API.
_API: dict[str, tuple[str, str]] = {
    # models and data
    "load_model": ("analysis.model.specs", "load_model"),
    "DEFAULT_MODEL": ("analysis.model.specs", "DEFAULT_MODEL"),
    "DEFAULT_DATA": ("analysis.model.specs", "DEFAULT_DATA"),
    "load_data": ("analysis.data", "load_data"),
    "Dataset": ("analysis.data", "Dataset"),
    "ZOO": ("analysis.zoo", "ZOO"),
    "WorkbenchError": ("analysis.errors", "WorkbenchError"),
    # measuring
    "summarize": ("analysis.cost", "summarize"),
    "ModelSummary": ("analysis.cost", "ModelSummary"),
    "count_macs": ("analysis.cost", "count_macs"),
    "evaluate": ("analysis.evaluate", "evaluate"),
    "EvalResult": ("analysis.evaluate", "EvalResult"),
    "measure_latency": ("analysis.latency", "measure_latency"),
    "compare_latency": ("analysis.latency", "compare_latency"),
    "layer_times": ("analysis.latency", "layer_times"),
    "LatencyResult": ("analysis.latency", "LatencyResult"),
    # analysing
    "rank_channels": ("analysis.importance", "rank_channels"),
    "RankingResult": ("analysis.importance", "RankingResult"),
    "get_importance": ("analysis.importance", "get_importance"),
    "IMPORTANCE_CRITERIA": ("analysis.importance", "CRITERIA"),
    "sensitivity_sweep": ("analysis.sensitivity.sweep", "sensitivity_sweep"),
    "SensitivityResult": ("analysis.sensitivity.sweep", "SensitivityResult"),
    "sweep_kinds": ("analysis.sensitivity.kinds", "sweep_kinds"),
    "find_groups": ("analysis.transforms.groups", "find_groups"),
    # compressing
    "CompressionPlan": ("analysis.compression.plan", "CompressionPlan"),
    "LayerSettings": ("analysis.compression.plan", "LayerSettings"),
    "FinetuneSettings": ("analysis.compression.plan", "FinetuneSettings"),
    "load_plan": ("analysis.compression.plan", "load_plan"),
    "compress": ("analysis.compression.compress", "compress"),
    "save_model": ("analysis.runtime.artifacts", "save_model"),
    "CompressionResult": ("analysis.compression.result", "CompressionResult"),
    "finetune": ("analysis.compression.finetune", "finetune"),
    "suggest": ("analysis.compression.suggest", "suggest"),
    "suggest_mixed": ("analysis.compression.suggest", "suggest_mixed"),
    "uniform_plan": ("analysis.compression.suggest", "uniform_plan"),
    "Budget": ("analysis.compression.suggest", "Budget"),
    "run_schedule": ("analysis.compression.schedules", "run_schedule"),
    "ScheduleSettings": ("analysis.compression.schedules", "ScheduleSettings"),
    "SCHEDULE_METHODS": ("analysis.compression.schedules", "SCHEDULE_METHODS"),
    "SCHEDULE_TARGETS": ("analysis.compression.schedules", "SCHEDULE_TARGETS"),
    "NORMALIZATIONS": ("analysis.compression.global_rank", "NORMALIZATIONS"),
    # deploying and recording
    "RUNTIMES": ("analysis.runtime", "RUNTIMES"),
    "get_runtime": ("analysis.runtime", "get_runtime"),
    "save_artifact": ("analysis.runtime", "save_artifact"),
    "load_artifact": ("analysis.runtime", "load_artifact"),
    "ResultsStore": ("analysis.store", "ResultsStore"),
    "build_report": ("analysis.report.html", "build_report"),
    "write_csv": ("analysis.report.files", "write_csv"),
    "write_json": ("analysis.report.files", "write_json"),
}

__all__ = list(_API)


def __getattr__(name: str) -> Any:
    """Import a public name on first use (and keep it, so the next use is a plain attribute)."""
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


class _Library(types.ModuleType):
    """`analysis.evaluate` is both a module and the function it defines: importing the module must not
    replace the public function (the import system sets a package attribute for each submodule it loads)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _API:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Library
