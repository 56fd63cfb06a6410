"""A model's outputs as named tensors: one tensor, a tuple or list, a dict, or a Hugging Face `ModelOutput`
(an ordered dict whose unset fields are left out), nested to any depth.

`flatten_outputs(out)` gives `{name: tensor}` in the model's own order: `output` for a single tensor,
`0`, `1`, ... for a tuple, the keys for a dict (`logits`), dotted paths where they nest
(`hidden_states.2`). Scoring, export (every ONNX output named) and the checks all read outputs through it.
A leaf: it imports only torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

SINGLE_OUTPUT = "output"


def flatten_outputs(out: object, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a model output by name, in order (non-tensor leaves such as None are left out)."""
    if isinstance(out, torch.Tensor):
        return {prefix or SINGLE_OUTPUT: out}
    found: dict[str, torch.Tensor] = {}
    if isinstance(out, Mapping):
        items = list(out.items())
    elif isinstance(out, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(out)]
    else:
        to_tuple = getattr(out, "to_tuple", None)  # a ModelOutput that is not a Mapping in some versions
        items = [(str(i), v) for i, v in enumerate(to_tuple())] if callable(to_tuple) else []
    for key, value in items:
        found.update(flatten_outputs(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def output_names(out: object) -> list[str]:
    """Names of a model output's tensors (`flatten_outputs` order), safe as ONNX output names."""
    return [onnx_name(name) for name in flatten_outputs(out)]


def onnx_name(name: str) -> str:
    """A name ONNX tools print and match easily: letters, digits and underscores."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return safe if safe and not safe[0].isdigit() else f"output_{safe}"


def is_class_scores(t: torch.Tensor) -> bool:
    """Whether an output looks like class scores: floating, (N, classes) with at least two classes."""
    return t.is_floating_point() and t.ndim == 2 and t.shape[1] >= 2


def describe_outputs(out: object) -> str:
    """`logits 2x10, hidden 2x8x4`: the outputs' names and shapes, for messages."""
    return ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in flatten_outputs(out).items())


__all__ = [
    "SINGLE_OUTPUT",
    "describe_outputs",
    "flatten_outputs",
    "is_class_scores",
    "onnx_name",
    "output_names",
]
