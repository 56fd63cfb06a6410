"""A model's inputs: what they are (`InputSpec`: names, per-sample shapes, dtypes, positional or by name)
and samples of them (`InputBatch`: several input tensors indexed together).

A single-input model is described by one positional field and its data stays one tensor, exactly as
before; only models with several inputs (positional: `forward(self, a, b)`, or by name: `input_ids`,
`attention_mask`) meet `InputBatch`. The helpers here (`num_samples`, `take`, `to_device`, `cat_inputs`,
`as_model_inputs`) accept both, so code that slices, moves or concatenates samples has one path.

A leaf: it imports only torch and the errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.limits import check_sample_shape

DTYPE_NAMES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "long": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


@dataclass(frozen=True)
class InputField:
    """One input of a model: its `name` (forward's parameter), per-sample `shape` (no batch dimension),
    `dtype`, whether it is passed by name (`keyword`), and for integer inputs the exclusive upper bound
    `high` of random example values (a vocabulary size; None: example values are 0). `fill` (0 or 1) makes
    examples constant instead (an attention mask of ones)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    keyword: bool = False
    high: int | None = None
    fill: int | None = None

    def example(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        shape = (batch_size, *self.shape)
        if self.fill is not None:
            return torch.full(shape, self.fill, dtype=self.dtype)
        if self.dtype.is_floating_point:
            return torch.randn(shape, generator=generator).to(self.dtype)
        if self.high is not None and self.high > 1:
            return torch.randint(0, self.high, shape, generator=generator, dtype=torch.int64).to(self.dtype)
        return torch.zeros(shape, dtype=self.dtype)

    def to_dict(self) -> dict:
        out: dict = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": str(self.dtype).removeprefix("torch."),
        }
        if self.keyword:
            out["keyword"] = True
        return out


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: its input fields, in `forward`'s order. Positional fields come first and are
    passed as one tensor (a single field) or a tuple; keyword fields go in a dict (then every field does,
    by name: `model(**inputs)`)."""

    fields: tuple[InputField, ...]
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.fields:
            raise WorkbenchError("a model takes at least one input")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise WorkbenchError(f"input names must differ, got {', '.join(names)}")

    @classmethod
    def single(cls, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> InputSpec:
        """One positional input of per-sample `shape` (the form every single-input model has)."""
        return cls((InputField("x", tuple(int(d) for d in shape), dtype),))

    @property
    def form(self) -> str:
        """`tensor` (one positional input), `tuple` (several positional) or `dict` (by name)."""
        if any(f.keyword for f in self.fields):
            return "dict"
        return "tensor" if len(self.fields) == 1 else "tuple"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return tuple(f.shape for f in self.fields)

    @property
    def shape(self) -> tuple[int, ...]:
        """The per-sample shape of a single-input model; for several inputs, a one-line error."""
        if self.form != "tensor":
            raise WorkbenchError(
                f"this model takes {len(self.fields)} inputs ({self.describe()}), not one shape"
            )
        return self.fields[0].shape

    def pack(self, tensors: Sequence[torch.Tensor]) -> ModelInputs:
        """Tensors in field order -> the model's input form (a tensor, a tuple or a dict by name)."""
        if self.form == "tensor":
            return tensors[0]
        if self.form == "tuple":
            return tuple(tensors)
        return dict(zip(self.names, tensors, strict=True))

    def example(self, batch_size: int = 2, seed: int = 0) -> ModelInputs:
        """A fixed random batch (seeded): floats ~ N(0, 1), integer ids below `high`, masks of ones. For a
        single float input it equals `torch.randn((batch_size, *shape), generator=seed 0)`."""
        generator = torch.Generator().manual_seed(seed)
        return self.pack([f.example(batch_size, generator) for f in self.fields])

    def zeros(self, batch_size: int = 1) -> ModelInputs:
        """A batch of zeros (masks: ones), e.g. for checking that the model runs on this description."""
        return self.pack(
            [torch.full((batch_size, *f.shape), f.fill or 0, dtype=f.dtype) for f in self.fields]
        )

    def describe(self) -> str:
        """The `--input-shape` text of this description, batch 1: `1,3,32,32` or `1,128;1,64`, with
        `name=` and `:dtype` where they are not the defaults."""
        parts = []
        for f in self.fields:
            text = ",".join(map(str, (1, *f.shape)))
            if f.dtype != torch.float32:
                text += ":" + str(f.dtype).removeprefix("torch.")
            parts.append(f"{f.name}={text}" if f.keyword else text)
        return ";".join(parts)

    def to_json(self) -> list[int] | list[dict]:
        """The JSON `input_shape`: the per-sample shape for one float positional input (as always), else one
        entry per input with its name, shape and dtype."""
        if self.form == "tensor" and self.fields[0].dtype == torch.float32:
            return list(self.fields[0].shape)
        return [f.to_dict() for f in self.fields]


ModelInputs: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]
"""A batch of a model's inputs: one tensor (one positional input), a tuple (several positional inputs, in
`forward`'s order) or a dict (inputs passed by name, e.g. `input_ids`, `attention_mask`). Torch-Pruning's
`example_inputs`, `torch.onnx.export` and `torch.export` accept the same three forms."""


def as_input_spec(value: InputSpec | Sequence[int]) -> InputSpec:
    """An `InputSpec` from itself or from a per-sample shape (one positional float input)."""
    if isinstance(value, InputSpec):
        return value
    return InputSpec.single(tuple(value))


def _parse_dims(text: str, whole: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        dims = ()
    if len(dims) < 2 or any(d <= 0 for d in dims):
        raise WorkbenchError(
            f"cannot parse input shape {whole!r}: give positive integers with the batch first, like "
            "1,3,224,224 (several inputs: 1,128;1,64, in forward's order)"
        )
    return check_sample_shape(dims[1:], f"input shape {whole!r}:")


def parse_input_spec(text: str, names: Sequence[str] = ()) -> InputSpec:
    """`--input-shape` text -> `InputSpec`. One shape per input, `;` between them, in `forward`'s order:
    `1,3,224,224` or `1,128;1,64`. An entry may name its input (`attention_mask=1,16`; named inputs are
    passed by name) and give a dtype (`1,16:int64`). Unnamed inputs take `names` (forward's positional
    parameters) in order, else `x` for a single input and `input0`, `input1`, ... for several."""
    entries = [e.strip() for e in text.split(";")]
    if not text.strip() or any(not e for e in entries):
        raise WorkbenchError(
            f"cannot parse input shape {text!r}: give positive integers with the batch first, like "
            "1,3,224,224 (several inputs: 1,128;1,64)"
        )
    fields = []
    for i, entry in enumerate(entries):
        name, eq, rest = entry.partition("=")
        if not eq:
            name, rest = "", entry
        dims_text, colon, dtype_text = rest.partition(":")
        dtype = torch.float32
        if colon:
            key = dtype_text.strip().lower()
            if key not in DTYPE_NAMES:
                raise WorkbenchError(
                    f"unknown input dtype {dtype_text!r} in {text!r}: use {', '.join(DTYPE_NAMES)}"
                )
            dtype = DTYPE_NAMES[key]
        default = names[i] if i < len(names) else ("x" if len(entries) == 1 else f"input{i}")
        fields.append(InputField(name.strip() or default, _parse_dims(dims_text, text), dtype, bool(eq)))
    return InputSpec(tuple(fields))


def forward_parameters(model: nn.Module) -> list[inspect.Parameter]:
    """The parameters of `model.forward` that can take an input (not *args/**kwargs)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return []
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    return [p for p in params if p.kind in kinds]


def positional_names(model: nn.Module) -> list[str]:
    """Names of forward's parameters that can be passed by position, in order."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in forward_parameters(model) if p.kind in positional]


def required_inputs(model: nn.Module) -> list[str]:
    """Forward's parameters without a default: the inputs a call must give."""
    return [p.name for p in forward_parameters(model) if p.default is inspect.Parameter.empty]


# ---- samples of several inputs -------------------------------------------------------------------------


class InputBatch:
    """Samples of a several-input model, indexed together: `len` is the number of samples, indexing (an
    int, slice, index list or tensor) picks the same samples of every input. `inputs` is the model's
    form (a tuple, or a dict by name): `call_model(model, batch.inputs)`."""

    def __init__(self, parts: Sequence[torch.Tensor] | Mapping[str, torch.Tensor]) -> None:
        self.parts: tuple[torch.Tensor, ...] | dict[str, torch.Tensor]
        self.parts = dict(parts) if isinstance(parts, Mapping) else tuple(parts)
        tensors = self.tensors()
        if not tensors:
            raise WorkbenchError("a batch of inputs needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            sizes = ", ".join(str(len(t)) for t in tensors)
            raise WorkbenchError(f"the inputs have different numbers of samples ({sizes}): they must match")

    def tensors(self) -> list[torch.Tensor]:
        return list(self.parts.values()) if isinstance(self.parts, dict) else list(self.parts)

    @property
    def inputs(self) -> tuple[torch.Tensor, ...] | dict[str, torch.Tensor]:
        return self.parts

    def map(self, fn) -> InputBatch:
        """The same inputs with `fn` applied to each tensor."""
        if isinstance(self.parts, dict):
            return InputBatch({k: fn(v) for k, v in self.parts.items()})
        return InputBatch([fn(v) for v in self.parts])

    def __len__(self) -> int:
        return len(self.tensors()[0])

    def __getitem__(self, index) -> InputBatch:
        return self.map(lambda t: t[index])

    def take(self, indices) -> InputBatch:
        return self[torch.as_tensor(list(indices), dtype=torch.long)]

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self._named().items()}
        return f"InputBatch({shapes})"

    def _named(self) -> dict[str, torch.Tensor]:
        if isinstance(self.parts, dict):
            return self.parts
        return {str(i): t for i, t in enumerate(self.parts)}


def as_model_inputs(x) -> ModelInputs:
    """What a model is called with: an `InputBatch`'s tuple or dict, anything else as it is."""
    return x.inputs if isinstance(x, InputBatch) else x


def num_samples(x) -> int:
    """Samples in a batch of inputs (a tensor, an `InputBatch`, a tuple or a dict of tensors)."""
    if isinstance(x, Mapping):
        return len(next(iter(x.values())))
    if isinstance(x, tuple):
        return len(x[0])
    return len(x)


def take(x, index):
    """The samples at `index` (slice, list or tensor of indices) of a batch of inputs."""
    if isinstance(x, Mapping):
        return {k: v[index] for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(v[index] for v in x)
    return x[index]


def map_tensors(x, fn):
    """`fn` applied to every tensor of a batch of inputs, keeping its form."""
    if isinstance(x, InputBatch):
        return x.map(fn)
    if isinstance(x, Mapping):
        return {k: fn(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(fn(v) for v in x)
    return fn(x)


def to_device(x, device: torch.device | str, dtype: torch.dtype | None = None):
    """A batch of inputs moved to `device`, floating tensors cast to `dtype` (integer ids stay integers)."""
    device = torch.device(device)

    def move(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, non_blocking=device.type == "cuda")
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            t = t.to(dtype)
        return t

    return map_tensors(x, move)


def cat_inputs(batches: Iterable) -> object:
    """Batches of inputs concatenated along the samples (tensors or `InputBatch`es of the same form)."""
    batches = list(batches)
    first = batches[0]
    if isinstance(first, InputBatch):
        if isinstance(first.parts, dict):
            return InputBatch({k: torch.cat([b.parts[k] for b in batches]) for k in first.parts})
        return InputBatch([torch.cat([b.parts[i] for b in batches]) for i in range(len(first.parts))])
    return torch.cat(batches)


def spec_of(x, names: Sequence[str] = ()) -> InputSpec:
    """The `InputSpec` of a batch of inputs (per-sample shapes and dtypes of its tensors)."""
    if isinstance(x, InputBatch):
        x = x.parts
    if isinstance(x, Mapping):
        return InputSpec(tuple(InputField(k, tuple(v.shape[1:]), v.dtype, True) for k, v in x.items()))
    if isinstance(x, tuple):
        labels = list(names) + [f"input{i}" for i in range(len(names), len(x))]
        return InputSpec(tuple(InputField(labels[i], tuple(v.shape[1:]), v.dtype) for i, v in enumerate(x)))
    return InputSpec.single(tuple(x.shape[1:]), x.dtype)


__all__ = [
    "InputBatch",
    "InputField",
    "InputSpec",
    "ModelInputs",
    "as_input_spec",
    "as_model_inputs",
    "cat_inputs",
    "forward_parameters",
    "map_tensors",
    "num_samples",
    "parse_input_spec",
    "positional_names",
    "required_inputs",
    "spec_of",
    "take",
    "to_device",
]
