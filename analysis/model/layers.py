"""Layer helpers every part of the library shares: which layers are prunable, their widths, the layers a
model's outputs expose, attention heads, a safe deep copy and a fixed example batch. A leaf: it imports only
torch and the validation (and Torch-Pruning, inside the functions that trace the channel graph).

Prunable (docs/contract.md section 5): Conv1d/2d/3d (any groups), ConvTranspose1d/2d/3d with groups 1, or
Linear. The layers whose output channels a model output exposes
(`output_layers`, found in the channel dependency graph) never lose their outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import nn

from analysis.errors import WorkbenchError, first_line
from analysis.model.inputs import InputBatch, InputSpec, ModelInputs, as_input_spec, as_model_inputs
from analysis.model.outputs import flatten_outputs
from analysis.validate import check_layer_names

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def is_prunable(module: nn.Module) -> bool:
    """Conv1d/2d/3d (any groups: a grouped conv loses the same positions in each group), ConvTranspose1d/
    2d/3d with groups 1, or Linear."""
    if isinstance(module, (nn.Linear, *_CONV)):
        return True
    if isinstance(module, _CONV_TRANSPOSE):  # not a subclass of Conv*d
        return module.groups == 1
    return False


def out_channels(module: nn.Module) -> int:
    """Number of output channels (conv filters, linear neurons) of a prunable layer."""
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def filter_rows(module: nn.Module) -> torch.Tensor:
    """A prunable layer's weight with one row per output channel (a view: a transposed conv stores its
    weight as in x out x kernel, so its rows are the weight's columns)."""
    weight = module.weight
    return weight.transpose(0, 1) if getattr(module, "transposed", False) else weight


FUSED_QKV = "qkv"


def attention_heads(model: nn.Module) -> dict[str, tuple[str, int]]:
    """The query, key and value Linear layers of every attention module written the Hugging Face way (a
    module with `num_attention_heads` or `num_heads` and Linear children `query`/`key`/`value` or
    `q_proj`/`k_proj`/`v_proj` of one width that the heads divide), or timm's way (one Linear child
    `qkv`: queries, keys and values one after the other, `fused_sections` each), by name ->
    (attention module, heads). nn.MultiheadAttention packs its projections into one weight and is not
    listed."""
    found: dict[str, tuple[str, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            continue
        heads = getattr(module, "num_attention_heads", getattr(module, "num_heads", None))
        if not isinstance(heads, int) or heads < 1:
            continue
        fused = getattr(module, FUSED_QKV, None)
        if isinstance(fused, nn.Linear) and fused.out_features % (3 * heads) == 0:
            found[f"{name}.{FUSED_QKV}" if name else FUSED_QKV] = (name, heads)
        for trio in (("query", "key", "value"), ("q_proj", "k_proj", "v_proj")):
            layers = [getattr(module, child, None) for child in trio]
            if not all(isinstance(layer, nn.Linear) for layer in layers):
                continue
            widths = {layer.out_features for layer in layers}
            if len(widths) == 1 and widths.pop() % heads == 0:
                prefix = f"{name}." if name else ""
                found.update({f"{prefix}{child}": (name, heads) for child in trio})
    return found


def fused_sections(name: str) -> int:
    """How many equal sections (queries, keys, values) the outputs of attention layer `name` (a key of
    `attention_heads`) hold: 3 for a fused `qkv`, else 1."""
    return 3 if name.rsplit(".", 1)[-1] == FUSED_QKV else 1


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


InputsLike: TypeAlias = tuple[int, ...] | Sequence[tuple[int, ...]] | InputSpec | InputBatch | ModelInputs
"""What the pruning functions take for a model's inputs: one input's shape without the batch, a sequence of
shapes (one per positional input), an `InputSpec`, or inputs themselves."""


def example_inputs(spec: InputsLike, batch_size: int = 2) -> ModelInputs:
    """Inputs to trace or run `spec` with: `example_input` of a shape (or of each shape of a sequence, as a
    tuple), `InputSpec.example` of an input description, and inputs (`InputBatch`, tensor, tuple of
    tensors, dict) as they are."""
    if isinstance(spec, (InputSpec, InputBatch, torch.Tensor, Mapping)):
        return spec.example(batch_size) if isinstance(spec, InputSpec) else as_model_inputs(spec)
    items = list(spec)
    if all(isinstance(d, int) for d in items):
        return example_input(tuple(items), batch_size)
    if all(isinstance(x, torch.Tensor) for x in items):
        return tuple(items)
    return tuple(example_input(tuple(shape), batch_size) for shape in items)


def flat_outputs(output: Any) -> list[torch.Tensor]:
    """Every tensor of a model's output, in order (`analysis.model.outputs.flatten_outputs` without the names)."""
    return list(flatten_outputs(output).values())


def output_shapes(model: nn.Module, inputs: ModelInputs) -> list[tuple[int, ...]]:
    """The shape of every output tensor of `model` on `inputs` (`flat_outputs` order), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return [tuple(t.shape) for t in flat_outputs(call_model(model, inputs))]
    finally:
        model.train(was_training)


TRACE_BATCH = 2


def trace_batch(inputs: ModelInputs) -> ModelInputs:
    """`TRACE_BATCH` copies of the first sample of `inputs`: the batch every channel graph is traced on,
    so the groups found never depend on the batch a caller happens to pass (one sample hides reshapes
    that fold the batch in). Inputs without one common leading batch size are used as they are."""
    tensors = [t for t in flat_outputs(inputs) if isinstance(t, torch.Tensor)]
    if not tensors or any(t.ndim == 0 for t in tensors) or len({t.shape[0] for t in tensors}) != 1:
        return inputs

    def repeat(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value[:1].expand(TRACE_BATCH, *value.shape[1:]).clone()
        if isinstance(value, Mapping):
            return {k: repeat(v) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(repeat(v) for v in value)
        return value

    return repeat(inputs)


def channel_graph(model: nn.Module, inputs: ModelInputs):
    """Torch-Pruning's dependency graph of `model`, traced on `trace_batch(inputs)` through `call_model`,
    with every tensor of the output (tuple, dict, `ModelOutput`) an output node and split sections mapped
    by their output index. Parameters' `requires_grad` and the mode are restored, hooks removed; trace a
    private copy when the model is shared (the graph holds the model's modules)."""
    import torch_pruning as tp

    outputs: list[torch.Tensor] = []

    def traced(out: Any) -> list[torch.Tensor]:
        outputs.extend(flat_outputs(out))
        return [t for t in outputs if t.grad_fn is not None]

    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:  # the graph is traced through autograd
        p.requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                model, trace_batch(inputs), forward_fn=call_model, output_transform=traced, verbose=False
            )
    except Exception as exc:  # torch-pruning fails in many ways on exotic graphs
        raise WorkbenchError(f"could not build the channel dependency graph: {first_line(exc, 200)}") from exc
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)
    # An output computed by a module is that module's node, not an output node: remember those too.
    graph.output_grad_fns = {t.grad_fn for t in outputs if t.grad_fn is not None}
    graph.output_shapes = [tuple(t.shape) for t in outputs]  # on trace_batch(inputs), as output_shapes
    _map_split_sections(graph)
    return graph


def _map_split_sections(graph) -> None:
    """Give each consumer of a channel split the section it really reads. Torch-Pruning 1.6.1 pairs a
    split's sections with its consumers in the order the backward trace met them, not by output index, so
    a split whose second branch is traced first (`a, b = x.split(...)`, b used last) swaps the sections;
    here each consumer's section comes from the output index autograd records, and the node's own mapping
    is switched off so Torch-Pruning does not overwrite it."""
    from torch_pruning import ops
    from torch_pruning.dependency.index_mapping import _SplitIndexMapping

    for node in graph.module2node.values():
        if node.type != ops.OPTYPE.SPLIT or node.module.offsets is None or not node.enable_index_mapping:
            continue
        offsets = node.module.offsets
        section = {}
        for out in node.outputs:
            indices = {nr for fn, nr in getattr(out.grad_fn, "next_functions", ()) if fn is node.grad_fn}
            if len(indices) != 1 or max(indices) + 1 >= len(offsets):
                section = None  # a consumer of two sections at once, or sizes unknown: keep Torch-Pruning's
                break
            section[out] = indices.pop()
        if not section:
            node.module.sections_unmapped = True  # groups through it say their simulation is approximate
            continue
        for out, k in section.items():
            for dep in node.dependencies:
                if dep.target is out:
                    dep.index_mapping[0] = _SplitIndexMapping(offset=offsets[k : k + 2], reverse=False)
            for dep in out.dependencies:
                if dep.target is node:
                    dep.index_mapping[0] = _SplitIndexMapping(offset=offsets[k : k + 2], reverse=True)
        node.enable_index_mapping = False


def touches_output(graph, group) -> bool:
    """Whether a Torch-Pruning group of `channel_graph`'s reaches a model output: an output node, or a
    module whose output tensor is itself an output and whose output channels the group removes."""
    from torch_pruning import ops

    for item in group.items:
        target = item.dep.target
        if isinstance(target.module, ops._OutputOp):
            return True
        if target.grad_fn in graph.output_grad_fns and graph.is_out_channel_pruning_fn(item.dep.handler):
            return True
    return False


ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def output_layers(model: nn.Module, example_inputs: ModelInputs) -> list[str]:
    """The prunable layers whose output channels a model output exposes, in `named_modules()` order: every
    Conv/Linear whose channel group (`channel_graph`) reaches an output tensor, for every output of a
    tuple, dict or `ModelOutput`. Removing their channels would change an output's shape, so they keep
    them. The model is not changed."""
    model = copy_model(model)  # traced with hooks and requires_grad flips: never the caller's model
    graph = channel_graph(model, example_inputs)
    names = {m: n for n, m in model.named_modules()}
    exposed: set[str] = set()
    for group in graph.get_all_groups(root_module_types=ROOT_TYPES):
        if touches_output(graph, group):
            for item in group.items:
                target = item.dep.target.module
                if (
                    target in names
                    and is_prunable(target)
                    and graph.is_out_channel_pruning_fn(item.dep.handler)
                ):
                    exposed.add(names[target])
    return [n for n in names.values() if n in exposed]


def final_classifier(model: nn.Module, input_shape: InputsLike) -> str | None:
    """The last (in `named_modules()` order) of the `output_layers`: for a classifier, the layer whose
    outputs are the classes. `input_shape` is one input's shape or anything `example_inputs` takes."""
    found = output_layers(model, example_inputs(input_shape))
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
