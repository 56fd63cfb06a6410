"""The model a run works on: specs (`specs.py`: model and data specs -> nn.Module), Hugging Face models
(`hf.py`), named inputs and outputs (`inputs.py`, `outputs.py`) and the layers a model has (`layers.py`)."""

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

__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_MODEL",
    "InputBatch",
    "InputField",
    "InputSpec",
    "ModelInputs",
    "call_model",
    "copy_model",
    "example_input",
    "final_classifier",
    "flatten_outputs",
    "is_prunable",
    "load_model",
    "model_input_shape",
    "out_channels",
    "output_layers",
    "parse_input_shape",
    "parse_input_spec",
    "prunable_layers",
]
