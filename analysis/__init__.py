"""The compression workbench's library: everything the app, the CLI and the notebooks call.

The names below are the public API (the app's pages import nothing else). Layout: leaf modules (specs,
data, zoo, cost, evaluate, latency, layers, validate, progress, errors, io, weight_stats), then `fx/`
(graph rewriting, the downstream runner), `importance/` (criteria registry), `sensitivity/` (groups,
sweeps), `compression/` (plan, pruning, quantization, fine-tuning, compress, suggest), `report/` (charts,
HTML, files), `workbench.py` (loading for an interactive front end) and `cli/`. Never imports streamlit
(a test asserts it).
"""

import analysis.startup  # noqa: F401  (first: Ctrl-C during the imports below is one line under `-m`)
from analysis.app_support.policy import (
    ServeMode,
    allowed_data_sources,
    allowed_model_sources,
    check_data_spec,
    check_model_spec,
    operator_architectures,
    parse_mode,
    public_message,
    serve_mode,
    strip_paths,
)
from analysis.app_support.preview import (
    apply_plan,
    artifact_bytes,
    compression_record,
    group_ratios,
    layer_groups,
    noisy_timings,
    predicted_drop_points,
    preview_cost,
    remeasure,
    run_points,
    suggestion_verdict,
)
from analysis.app_support.uploads import UploadStore, purge_older_than
from analysis.app_support.workbench import (
    Workbench,
    WorkbenchSpec,
    load_workbench,
    model_bytes,
    save_upload,
    state_digest,
)
from analysis.compression.compress import compress, save_model
from analysis.compression.finetune import FinetuneResult, distillation_loss, finetune
from analysis.compression.global_rank import NORMALIZATIONS
from analysis.compression.plan import CompressionPlan, FinetuneSettings, LayerSettings, load_plan
from analysis.compression.result import CompressionResult, ModelMetrics
from analysis.compression.schedules import METHODS as SCHEDULE_METHODS
from analysis.compression.schedules import TARGET_KINDS as SCHEDULE_TARGETS
from analysis.compression.schedules import ScheduleResult, ScheduleSettings, recovery_epochs, run_schedule
from analysis.compression.sparsity import sparsity_values
from analysis.compression.suggest import (
    Budget,
    MixedSuggestion,
    PlanSuggestion,
    suggest,
    suggest_mixed,
    suggest_plan,
    uniform_plan,
)
from analysis.cost import LayerCost, ModelSummary, count_macs, count_params, size_bytes, summarize
from analysis.data import DEFAULT_MAX_SAMPLES, Dataset, load_data
from analysis.devices import resolve_device
from analysis.distributed import ray_rank_channels, ray_sensitivity_sweep
from analysis.errors import WorkbenchError, first_line
from analysis.evaluate import EvalResult, evaluate
from analysis.fx.runner import DownstreamRunner, Edit
from analysis.importance import CRITERIA as IMPORTANCE_CRITERIA
from analysis.importance import Importance, RankingResult, get_importance, rank_channels
from analysis.io import to_json
from analysis.latency import (
    DEFAULT_BATCH_SIZE,
    NOISY_SPREAD,
    LatencyResult,
    compare_latency,
    latency_lock_busy,
    layer_times,
    measure_latency,
)
from analysis.metrics import (
    METRIC_CHOICES,
    METRICS,
    Metric,
    MetricInfo,
    Scoring,
    get_metric,
    score_value,
    scoring,
)
from analysis.model.inputs import InputBatch, InputField, InputSpec, ModelInputs, parse_input_spec
from analysis.model.layers import (
    call_model,
    copy_model,
    example_input,
    final_classifier,
    is_prunable,
    out_channels,
    output_layers,
    prunable_layers,
)
from analysis.model.outputs import flatten_outputs
from analysis.model.specs import DEFAULT_DATA, DEFAULT_MODEL, load_model, model_input_shape, parse_input_shape
from analysis.progress import Progress, progress_bar
from analysis.progress.eta import RunTimer, sigint_stops
from analysis.report import charts
from analysis.report.bundle import report_files
from analysis.report.cards import ModelCard, cost_vs_time, model_card
from analysis.report.files import safe_points, write_csv, write_json, write_markdown
from analysis.report.html import build_full_report, build_report
from analysis.report.tables import (
    comparison_frame,
    pareto_front,
    pareto_table,
    plan_from_table,
    run_point,
    uniform_layer_table,
)
from analysis.runtime import (
    RUNTIMES,
    compare_runtime_latency,
    evaluate_runtime,
    get_runtime,
    load_artifact,
    measure_runtime_latency,
    prepare,
    save_artifact,
)
from analysis.sensitivity.sweep import (
    DEFAULT_BITS,
    DEFAULT_RATIOS,
    SensitivityCurve,
    SensitivityResult,
    sensitivity_sweep,
)
from analysis.sensitivity.sweep import KINDS as SENSITIVITY_KINDS
from analysis.store import ResultsStore, model_fingerprint, plan_diff, public_environment
from analysis.store import compare as compare_runs
from analysis.store.mlflow_sink import log_compression
from analysis.transforms.fields import (
    apply_transforms,
    lowrank_sensitivity,
    quant_vs_kmeans,
    share_sensitivity,
    validate_transform_settings,
)
from analysis.transforms.groups import PruningGroup, find_groups
from analysis.transforms.pruning import prune_structured, prune_unstructured, pruning_groups
from analysis.transforms.quantization import fake_quantize, quantize_weights, quantized_size_bytes
from analysis.transforms.weight_stats import quantization_view, weight_histograms, weight_stats
from analysis.validate import parse_values
from analysis.zoo import ZOO

__all__ = [
    "apply_plan",
    "artifact_bytes",
    "compression_record",
    "group_ratios",
    "layer_groups",
    "predicted_drop_points",
    "suggestion_verdict",
    "remeasure",
    "noisy_timings",
    "NOISY_SPREAD",
    "recovery_epochs",
    "preview_cost",
    "run_points",
    "log_compression",
    "ray_rank_channels",
    "ray_sensitivity_sweep",
    "NORMALIZATIONS",
    "SCHEDULE_METHODS",
    "SCHEDULE_TARGETS",
    "ScheduleResult",
    "ScheduleSettings",
    "run_schedule",
    "sparsity_values",
    "apply_transforms",
    "lowrank_sensitivity",
    "quant_vs_kmeans",
    "share_sensitivity",
    "validate_transform_settings",
    "resolve_device",
    "latency_lock_busy",
    "ServeMode",
    "allowed_data_sources",
    "allowed_model_sources",
    "check_data_spec",
    "check_model_spec",
    "operator_architectures",
    "parse_mode",
    "public_message",
    "strip_paths",
    "serve_mode",
    "RunTimer",
    "sigint_stops",
    "RUNTIMES",
    "compare_runtime_latency",
    "evaluate_runtime",
    "get_runtime",
    "load_artifact",
    "measure_runtime_latency",
    "prepare",
    "save_artifact",
    "ResultsStore",
    "model_fingerprint",
    "plan_diff",
    "public_environment",
    "compare_runs",
    "UploadStore",
    "purge_older_than",
    "charts",
    "first_line",
    "Progress",
    "progress_bar",
    "parse_values",
    "to_json",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_BITS",
    "DEFAULT_RATIOS",
    "SENSITIVITY_KINDS",
    "ZOO",
    "copy_model",
    "example_input",
    "final_classifier",
    "is_prunable",
    "out_channels",
    "output_layers",
    "prunable_layers",
    "comparison_frame",
    "pareto_front",
    "pareto_table",
    "plan_from_table",
    "run_point",
    "uniform_layer_table",
    "ModelCard",
    "cost_vs_time",
    "model_card",
    "report_files",
    "safe_points",
    "quantization_view",
    "weight_histograms",
    "weight_stats",
    "Workbench",
    "WorkbenchSpec",
    "load_workbench",
    "model_bytes",
    "save_upload",
    "state_digest",
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
    "suggest_mixed",
    "MixedSuggestion",
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
    "InputBatch",
    "InputField",
    "InputSpec",
    "ModelInputs",
    "parse_input_spec",
    "call_model",
    "flatten_outputs",
    "METRIC_CHOICES",
    "METRICS",
    "Metric",
    "MetricInfo",
    "Scoring",
    "get_metric",
    "score_value",
    "scoring",
]
