"""Layer helpers every part of the library shares: which layers are prunable, their widths, the final
classifier, a safe deep copy and a fixed example batch. A leaf: it imports only torch and the validation.

Prunable (CONTRACT section 5): Conv1d/2d/3d with groups 1 or depthwise (groups == in == out channels), or
Linear. The final classifier (the last prunable layer the forward pass runs) never loses its outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import torch
from torch import nn

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


ModelInputs: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]
"""A batch of a model's inputs: one tensor (one positional input), a tuple (several positional inputs, in
`forward`'s order) or a dict (inputs passed by name, e.g. `input_ids`, `attention_mask`). Torch-Pruning's
`example_inputs`, `torch.onnx.export` and `torch.export` accept the same three forms."""


def call_model(model: nn.Module, inputs: ModelInputs) -> Any:
    """`model(x)`, `model(*inputs)` or `model(**inputs)` for the three forms of `ModelInputs`."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def example_input(input_shape: tuple[int, ...], batch_size: int = 2) -> torch.Tensor:
    """A fixed random batch (seed 0) of `batch_size` samples: the same input for every model traced or
    timed, so runs are comparable (two samples by default, so batch norms see a real batch)."""
    return torch.randn((batch_size, *input_shape), generator=torch.Generator().manual_seed(0))


def final_layers(model: nn.Module, example_inputs: torch.Tensor) -> list[str]:
    """The layers whose outputs are the model's outputs: the last prunable layer the forward pass runs."""
    model = copy_model(model).eval()  # hooked below: never the caller's (possibly shared) model
    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, _inp, _out: order.append(names[mod]))
        for m in model.modules()
        if is_prunable(m)
    ]
    try:
        with torch.no_grad():
            model(example_inputs)
    finally:
        for h in hooks:
            h.remove()
    return order[-1:]


def final_classifier(model: nn.Module, input_shape: tuple[int, ...]) -> str | None:
    """The final classifier: the last prunable layer the forward pass runs (it keeps its outputs)."""
    found = final_layers(model, example_input(input_shape))
    return found[0] if found else None


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of `model`, also when `torch.nn.utils.prune` masks are attached (their cached masked
    weight is a non-leaf tensor, which plain `copy.deepcopy` refuses; the copy gets a detached clone)."""
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)
