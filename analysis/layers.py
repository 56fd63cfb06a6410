"""Layer helpers every part of the library shares: which layers are prunable, their widths, the final
classifier, a safe deep copy and a fixed example batch. A leaf: it imports only torch and the validation.

Prunable (CONTRACT section 5): Conv1d/2d/3d with groups 1 or depthwise (groups == in == out channels), or
Linear. The final classifier (the last prunable layer the forward pass runs) never loses its outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from analysis.inputs import InputBatch, InputSpec, ModelInputs, as_input_spec, as_model_inputs
from analysis.validate import check_layer_names


def is_prunable(module: nn.Module) -> bool:
    """Conv1d/2d/3d with groups 1 or depthwise (groups == in == out channels), or Linear."""
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):  # ConvTranspose*d is not a subclass
        return module.groups == 1 or module.groups == module.in_channels == module.out_channels
    return False


def out_channels(module: nn.Module) -> int:
    """Number of output channels (conv filters, linear neurons) of a prunable layer."""
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def prunable_layers(model: nn.Module, layers: Iterable[str] | None = None) -> dict[str, nn.Module]:
    """The prunable layers of `model` by name, in module order; only those in `layers` when given.

    Raises WorkbenchError for a name that is not a module of the model or is not prunable.
    """
    found = {name: m for name, m in model.named_modules() if name and is_prunable(m)}
    if layers is None:
        return found
    wanted = check_layer_names(model, [layers] if isinstance(layers, str) else list(layers), found)
    keep = set(wanted)
    return {name: m for name, m in found.items() if name in keep}


def call_model(model: nn.Module, inputs: ModelInputs | InputBatch) -> Any:
    """`model(x)`, `model(*inputs)` or `model(**inputs)` for the three forms of `ModelInputs` (an
    `InputBatch` of several inputs is called with its tuple or dict)."""
    inputs = as_model_inputs(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def example_input(input_shape: InputSpec | tuple[int, ...], batch_size: int = 2) -> ModelInputs:
    """A fixed random batch (seed 0) of `batch_size` samples: the same input for every model traced or
    timed, so runs are comparable (two samples by default, so batch norms see a real batch). A per-sample
    shape gives one tensor; an `InputSpec` of several inputs gives a tuple or dict (`InputSpec.example`)."""
    return as_input_spec(input_shape).example(batch_size)


def final_layers(model: nn.Module, example_inputs: ModelInputs) -> list[str]:
    """The layers whose outputs are the model's outputs: every prunable layer whose output tensor the model
    returns as one of its outputs (a tuple, dict or `ModelOutput` of several heads), and the last prunable
    layer the forward pass runs."""
    from analysis.outputs import flatten_outputs

    model = copy_model(model).eval()  # hooked below: never the caller's (possibly shared) model
    order: list[str] = []
    # The tensors are kept (not only their ids): a freed tensor's id is reused by a later one.
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    names = {m: n for n, m in model.named_modules()}

    def record(mod: nn.Module, _inp: Any, out: Any) -> None:
        order.append(names[mod])
        if isinstance(out, torch.Tensor):
            produced[id(out)] = (names[mod], out)

    hooks = [m.register_forward_hook(record) for m in model.modules() if is_prunable(m)]
    try:
        with torch.no_grad():
            outputs = flatten_outputs(call_model(model, example_inputs))
    finally:
        for h in hooks:
            h.remove()
    returned = [produced[id(t)][0] for t in outputs.values() if id(t) in produced and produced[id(t)][1] is t]
    return list(dict.fromkeys(returned + order[-1:]))


def final_classifier(model: nn.Module, input_shape: InputSpec | tuple[int, ...]) -> str | None:
    """The final classifier: the last prunable layer the forward pass runs (it keeps its outputs)."""
    found = final_layers(model, example_input(input_shape))
    return found[-1] if found else None


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of `model`, also when `torch.nn.utils.prune` masks are attached (their cached masked
    weight is a non-leaf tensor, which plain `copy.deepcopy` refuses; the copy gets a detached clone)."""
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)
