"""Parameters, MACs and FLOPs per layer and in total (docs/contract.md section 5: FLOPs = 2 x MACs).

Two independent counters, so a number is never taken on faith:
- `torch.utils.flop_counter.FlopCounterMode` sees every aten convolution and matrix product, functional calls
  included, and attributes them to the module that ran them. It misses two things, which we handle: the CPU
  kernel of `scaled_dot_product_attention` (we register a formula for it), and the fused fast path of
  `nn.MultiheadAttention` under `no_grad` (we count with autograd enabled, where that path does not run).
- `thop` counts per module from forward hooks, but only modules it has a rule for: no functional matmuls and no
  attention. Its rules for norms and pooling count elementwise ops, which are not MACs; we keep only its
  counts for MAC-type layers.
The summary's MACs (the definition's: convolutions, linear layers, matrix products) are the first count; where the totals differ by more than 1%, `differences` names the layers
and ops that account for it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from analysis.concurrency import ModuleScopes, private_copy
from analysis.model.inputs import InputSpec, ModelInputs, as_input_spec
from analysis.model.layers import call_model

MAC_MODULE_TYPES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
    nn.Bilinear,
    nn.RNNBase,
    nn.RNNCellBase,
)
AGREEMENT_TOLERANCE = 0.01


@dataclass(frozen=True)
class LayerCost:
    """One module's own parameters and MACs (for one sample), and its output shape (batch of 1)."""

    name: str
    type: str
    params: int
    macs: int
    output_shape: list[int] | None
    macs_thop: int | None = None  # None: thop has no MAC rule for this module
    ops: dict[str, int] = field(default_factory=dict)  # MACs per aten op, from FlopCounterMode

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class ModelSummary:
    """Per-layer and total cost of one forward pass of one sample of `input_shape` (a per-sample shape, or
    an `InputSpec` for a model with several inputs)."""

    input_shape: tuple[int, ...] | InputSpec
    layers: list[LayerCost]
    total_params: int
    total_macs: int
    macs_thop: int
    differences: list[str]

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    @property
    def counters_agree(self) -> bool:
        return _close(self.macs_thop, self.total_macs)

    def to_dict(self) -> dict:
        """The `summary` JSON of docs/contract.md section 3: `total`, `layers`, plus the cross-check."""
        return {
            "input_shape": as_input_spec(self.input_shape).to_json(),
            "total": {"params": self.total_params, "macs": self.total_macs, "flops": self.total_flops},
            "layers": [
                {k: v for k, v in asdict(layer).items() if k != "ops"} | {"flops": layer.flops}
                for layer in self.layers
            ],
            "crosscheck": {
                "macs_thop": self.macs_thop,
                "agree_within_1pct": self.counters_agree,
                "differences": self.differences,
            },
        }

    def to_frame(self):
        """One row per layer: name, type, params, macs, flops, share of MACs, output shape."""
        import pandas as pd

        rows = [
            {
                "name": layer.name,
                "type": layer.type,
                "params": layer.params,
                "macs": layer.macs,
                "flops": layer.flops,
                "macs_share": layer.macs / self.total_macs if self.total_macs else 0.0,
                "output_shape": "x".join(map(str, layer.output_shape or [])),
            }
            for layer in self.layers
        ]
        return pd.DataFrame(
            rows, columns=["name", "type", "params", "macs", "flops", "macs_share", "output_shape"]
        )


def _close(a: int, b: int, tol: float = AGREEMENT_TOLERANCE) -> bool:
    return abs(a - b) <= tol * max(abs(a), abs(b), 1)


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode has formulas for the CUDA attention kernels but not for the CPU one.
    return sdpa_flop_count(query, key, value)


def _flop_counter_macs(model: nn.Module, x: ModelInputs) -> tuple[dict[str, dict[str, int]], dict]:
    """Self MACs per module and aten op, and the output shape of every module (hooks `model`: pass a copy)."""
    root = type(model).__name__
    shapes: dict[str, list[int] | None] = {}
    handles = []
    for name, module in model.named_modules():

        def post(m, a, out, n=name):
            first = out[0] if isinstance(out, (tuple, list)) and out else out
            shapes[n] = list(first.shape) if isinstance(first, torch.Tensor) else None

        handles.append(module.register_forward_hook(post))
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    # Its own ModuleTracker hooks every module in the process (other sessions' too): hook only this copy.
    counter.mod_tracker = ModuleScopes(model)
    try:
        # Autograd on: nn.MultiheadAttention's fused fast path (invisible to the counter) only runs without it.
        with torch.enable_grad(), counter:
            call_model(model, x)
    finally:
        for h in handles:
            h.remove()
    inclusive: dict[str, dict[str, int]] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = "" if key == root else key.removeprefix(root + ".")
        inclusive[name] = {str(op).removeprefix("aten."): int(v) // 2 for op, v in ops.items()}
    own: dict[str, dict[str, int]] = {}
    children = {n: [f"{n}.{c}" if n else c for c, _ in m.named_children()] for n, m in model.named_modules()}
    for name, ops in inclusive.items():
        rest = dict(ops)
        for child in children.get(name, []):
            for op, v in inclusive.get(child, {}).items():
                rest[op] = rest.get(op, 0) - v
        own[name] = {op: v for op, v in rest.items() if v > 0}
    return own, shapes


class _ByName(nn.Module):
    """Calls the model with its inputs by name: thop passes inputs by position only."""

    def __init__(self, inner: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner, self.names = inner, names

    def forward(self, *args: torch.Tensor):
        return self.inner(**dict(zip(self.names, args, strict=True)))


def _thop_macs(model: nn.Module, x: ModelInputs) -> dict[str, int]:
    """thop's MACs for each MAC-type module (on a copy: thop leaves buffers behind on modules it skips)."""
    from thop import profile

    clone = copy.deepcopy(model)
    names = {id(m): n for n, m in clone.named_modules()}
    result: dict[str, int] = {}

    def collect(module: nn.Module, info: dict, prefix: str) -> None:
        for child_name, (ops, _params, sub) in info.items():
            child = module.get_submodule(child_name)
            full = f"{prefix}.{child_name}" if prefix else child_name
            if isinstance(child, MAC_MODULE_TYPES):
                result[names[id(child)]] = int(ops)
            collect(child, sub, full)

    if isinstance(x, dict):
        root, inputs = _ByName(clone, list(x)), tuple(x.values())
    else:
        root, inputs = clone, (x if isinstance(x, tuple) else (x,))
    with torch.no_grad():
        _, _, info = profile(root, inputs=inputs, verbose=False, ret_layer_info=True)
    collect(root, info, "")
    return result


def summarize(model: nn.Module, input_shape: tuple[int, ...] | InputSpec) -> ModelSummary:
    """Parameters and MACs per layer for one sample of `input_shape` (no batch dimension), or of each
    input an `InputSpec` describes (several positional inputs, inputs by name, integer ids).

    Layers listed: every leaf module, and any other module that does matrix work itself (a functional
    matmul or attention in its forward). The model is left as it was (mode and state).
    """
    x = as_input_spec(input_shape).zeros(1)
    work = private_copy(model).eval()  # hooked below: never the caller's (possibly shared) model
    own, shapes = _flop_counter_macs(work, x)
    thop = _thop_macs(work, x)

    layers: list[LayerCost] = []
    for name, module in model.named_modules():
        ops = own.get(name, {})
        is_leaf = next(module.children(), None) is None
        if not (is_leaf or ops):
            continue
        layers.append(
            LayerCost(
                name=name or "(model)",
                type=type(module).__name__,
                params=sum(p.numel() for p in module.parameters(recurse=False)),
                macs=sum(ops.values()),
                output_shape=shapes.get(name),
                macs_thop=thop.get(name),
                ops=ops,
            )
        )
    total_macs = sum(layer.macs for layer in layers)
    macs_thop = sum(thop.values())
    differences = []
    if not _close(macs_thop, total_macs):
        for layer in layers:
            seen_by_thop = layer.macs_thop or 0
            if not _close(seen_by_thop, layer.macs):
                why = (
                    "thop has no rule for it" if layer.macs_thop is None else f"thop counts {seen_by_thop:,}"
                )
                ops = ", ".join(f"{op} {v:,}" for op, v in sorted(layer.ops.items()))
                differences.append(f"{layer.name} ({layer.type}): {layer.macs:,} MACs in {ops}; {why}")
    return ModelSummary(
        input_shape=input_shape if isinstance(input_shape, InputSpec) else tuple(input_shape),
        layers=layers,
        total_params=sum(p.numel() for p in model.parameters()),
        total_macs=total_macs,
        macs_thop=macs_thop,
        differences=differences,
    )


def onnx_summary(payload: dict, model: nn.Module) -> dict:
    """`summary` JSON of an ONNX model (`OnnxModule`), which torch sees as a module without parameters or
    layers: params counted from the ONNX initializers, MACs and FLOPs null (the graph runs outside torch),
    with a note saying so. Any other model's payload comes back unchanged."""
    bytes_ = getattr(model, "model_bytes", None)
    if bytes_ is None or not hasattr(model, "session"):
        return payload
    import onnx

    graph = onnx.load_from_string(bytes_).graph
    # Weights are float or 8-bit; 32/64-bit integer initializers are shape and axis constants.
    shapes_only = (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
    params = sum(math.prod(i.dims) for i in graph.initializer if i.data_type not in shapes_only)
    out = dict(payload)
    out["total"] = {"params": params, "macs": None, "flops": None}
    out["layers"] = []
    out["crosscheck"] = {"macs_thop": None, "agree_within_1pct": None, "differences": []}
    note = (
        "an ONNX model: params are the values of its float and 8-bit initializers (int8 weights count the "
        "same; shape constants are left out); "
        "MACs and FLOPs are not counted, because the graph runs on ONNX Runtime, outside torch"
    )
    out["notes"] = [*payload.get("notes", []), note]
    return out


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not zero (pruned weights are zeros until they are removed)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...] | InputSpec) -> int:
    """Total MACs of one sample, per docs/contract.md section 5."""
    return summarize(model, input_shape).total_macs


def size_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers at their stored dtypes."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
