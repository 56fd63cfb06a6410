"""The model a run works on: specs (`specs.py`: model and data specs -> nn.Module), Hugging Face models
(`hf.py`), named inputs and outputs (`inputs.py`, `outputs.py`) and the layers a model has (`layers.py`)."""

from __future__ import annotations

from analysis.registry import lazy_exports

# name -> the module that defines it (`specs` and `loading` sit beside the runtimes: a model spec may name an
# .onnx file, which runs through ONNX Runtime; loading them lazily keeps `analysis.model.inputs` light)
_EXPORTS: dict[str, str] = {
    "DEFAULT_DATA": "analysis.model.specs",
    "DEFAULT_MODEL": "analysis.model.specs",
    "InputBatch": "analysis.model.inputs",
    "InputField": "analysis.model.inputs",
    "InputSpec": "analysis.model.inputs",
    "ModelInputs": "analysis.model.inputs",
    "call_model": "analysis.model.layers",
    "copy_model": "analysis.model.layers",
    "example_input": "analysis.model.layers",
    "final_classifier": "analysis.model.layers",
    "flatten_outputs": "analysis.model.outputs",
    "is_prunable": "analysis.model.layers",
    "load_model": "analysis.model.specs",
    "model_input_shape": "analysis.model.specs",
    "out_channels": "analysis.model.layers",
    "output_layers": "analysis.model.layers",
    "parse_input_shape": "analysis.model.specs",
    "parse_input_spec": "analysis.model.inputs",
    "prunable_layers": "analysis.model.layers",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
