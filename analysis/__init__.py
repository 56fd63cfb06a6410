"""The compression workbench's library: everything the app, the CLI and the notebooks call.

Never imports streamlit (a test asserts it).
"""

from analysis.cost import LayerCost, ModelSummary, count_macs, count_params, size_bytes, summarize
from analysis.data import Dataset, load_data
from analysis.errors import WorkbenchError
from analysis.evaluate import EvalResult, evaluate
from analysis.latency import LatencyResult, compare_latency, layer_times, measure_latency
from analysis.specs import DEFAULT_DATA, DEFAULT_MODEL, load_model, model_input_shape, parse_input_shape

__all__ = [
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
