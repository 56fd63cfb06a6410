"""Loading what a command works on: the model, the data (the digits only where the model fits them), a
balanced subset for --limit, and the inputs a model declares."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from analysis.data import DIGITS_INPUT_SHAPE, Dataset
from analysis.data.checks import model_outputs
from analysis.errors import WorkbenchError
from analysis.model.inputs import InputSpec
from analysis.model.specs import (
    DEFAULT_DATA,
    check_input_shape,
    declared_inputs,
    load_fitted_data,
    load_model,
    model_input_shape,
    parse_input_shape,
)

DIGITS_CLASSES = 10
NO_DATA_NOTE = "no --data given, and the model is not made for the digits: accuracy not measured"


def balanced(data: Dataset, n: int | None) -> Dataset:
    """`data` cut to `n` samples per split, a seeded class-balanced subset (`data_stream.balanced_subset`;
    unlabelled data: a seeded subset), kept in the data's own order; `data` itself when `n` is None or
    covers everything."""
    if n is None or (n >= len(data.x) and n >= len(data.x_train)):
        return data
    from analysis.data.stream import balanced_subset

    def cut(x, y):
        labels = y if y is not None else torch.zeros(len(x), dtype=torch.long)
        index = balanced_subset(labels, n).sort().values
        xs = x[index] if isinstance(x, torch.Tensor) else x.take(index.tolist())
        return xs, None if y is None else y[index]

    x, y = cut(data.x, data.y)
    same = data.x_train is data.x and data.y_train is data.y
    x_train, y_train = (x, y) if same else cut(data.x_train, data.y_train)
    return dataclasses.replace(data, x=x, y=y, x_train=x_train, y_train=y_train)


@dataclass
class Loaded:
    model: nn.Module
    data: Dataset | None
    input_shape: tuple[int, ...] | InputSpec
    notes: list[str] = field(default_factory=list)


def digits_fit(spec: str, model: nn.Module, shape: tuple[int, ...] | InputSpec | None) -> bool:
    """Whether the digits may stand in for absent `--data`: a zoo model, or a model taking 1x16x16 inputs
    (as given or declared) with 10 outputs. Never digits resized to another shape."""
    if spec.startswith("zoo:"):
        return True
    if isinstance(shape, InputSpec):
        return False
    if shape is not None and tuple(shape) != DIGITS_INPUT_SHAPE:
        return False
    try:
        return model_outputs(model, DIGITS_INPUT_SHAPE) == DIGITS_CLASSES
    except Exception:
        return False  # the model does not take 1x16x16 inputs: not a digits model


def load_inputs(args: argparse.Namespace, need_data: bool = False, allow_no_data: bool = False) -> Loaded:
    """The model, the data (when given or needed) and the per-sample input shape from common args.

    Without `--data`, a command that needs data gets the digits only where `digits_fit`; otherwise it is
    one line (or, with `allow_no_data`, `data` is None and `notes` says why)."""
    model = load_model(args.model, weights=args.weights, trust_pickle=args.trust_pickle)
    explicit = parse_input_shape(args.input_shape, model) if getattr(args, "input_shape", None) else None
    data_spec = getattr(args, "data", None)
    declared = explicit or declared_inputs(model)
    notes: list[str] = []
    if not data_spec and need_data and not digits_fit(args.model, model, declared):
        if not allow_no_data:
            raise WorkbenchError(
                f"no --data given, and {args.model} is not made for the digits (they are the default only "
                "for zoo models and 1x16x16 models with 10 outputs): give --data"
            )
        notes.append(NO_DATA_NOTE)
        need_data = False
    data = None
    if data_spec or need_data:
        data, shape = load_fitted_data(model, data_spec or DEFAULT_DATA, explicit)
        data = balanced(data, getattr(args, "limit", None))
    else:
        shape = model_input_shape(model, explicit, args.model)
        check_input_shape(model, shape)
    return Loaded(model, data, shape, notes)
