"""The compression workbench's library: everything the app, the CLI and the notebooks call.

Never imports streamlit (a test asserts it).
"""

from analysis.compression.compress import CompressionResult, ModelMetrics, compress, save_model
from analysis.compression.finetune import FinetuneResult, distillation_loss, finetune
from analysis.compression.plan import CompressionPlan, FinetuneSettings, LayerSettings, load_plan
from analysis.compression.pruning import prune_structured, prune_unstructured, pruning_groups
from analysis.compression.quantization import fake_quantize, quantize_weights, quantized_size_bytes
from analysis.compression.suggest import Budget, PlanSuggestion, suggest, suggest_plan, uniform_plan
from analysis.cost import LayerCost, ModelSummary, count_macs, count_params, size_bytes, summarize
from analysis.data import Dataset, load_data
from analysis.errors import WorkbenchError
from analysis.evaluate import EvalResult, evaluate
from analysis.fx.graph import DownstreamRunner, Edit
from analysis.importance import CRITERIA as IMPORTANCE_CRITERIA
from analysis.importance import Importance, RankingResult, get_importance, rank_channels
from analysis.latency import LatencyResult, compare_latency, layer_times, measure_latency
from analysis.report.html import build_full_report, build_report, write_csv, write_json, write_markdown
from analysis.sensitivity.groups import PruningGroup, find_groups
from analysis.sensitivity.sweep import SensitivityCurve, SensitivityResult, sensitivity_sweep
from analysis.specs import DEFAULT_DATA, DEFAULT_MODEL, load_model, model_input_shape, parse_input_shape

__all__ = [
    "CompressionResult",
    "ModelMetrics",
    "compress",
    "save_model",
    "FinetuneResult",
    "distillation_loss",
    "finetune",
    "CompressionPlan",
    "FinetuneSettings",
    "LayerSettings",
    "load_plan",
    "prune_structured",
    "prune_unstructured",
    "pruning_groups",
    "fake_quantize",
    "quantize_weights",
    "quantized_size_bytes",
    "Budget",
    "PlanSuggestion",
    "suggest",
    "suggest_plan",
    "uniform_plan",
    "IMPORTANCE_CRITERIA",
    "Importance",
    "RankingResult",
    "get_importance",
    "rank_channels",
    "DownstreamRunner",
    "Edit",
    "PruningGroup",
    "SensitivityCurve",
    "SensitivityResult",
    "build_full_report",
    "build_report",
    "find_groups",
    "sensitivity_sweep",
    "write_csv",
    "write_json",
    "write_markdown",
    "DEFAULT_DATA",
    "DEFAULT_MODEL",
    "LatencyResult",
    "LayerCost",
    "ModelSummary",
    "compare_latency",
    "count_macs",
    "count_params",
    "layer_times",
    "measure_latency",
    "size_bytes",
    "summarize",
    "Dataset",
    "EvalResult",
    "WorkbenchError",
    "evaluate",
    "load_data",
    "load_model",
    "model_input_shape",
    "parse_input_shape",
]
