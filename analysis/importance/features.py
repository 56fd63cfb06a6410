"""Where each prunable layer's channels are measured: the feature map after its norm and after its activation.

Found from the `torch.fx`-traced graph, not from module order, so `torch.relu(bn(conv(x)))`,
`F.relu(...)`, `x.relu()` and `nn.ReLU` modules are all recognised, and a norm defined before its conv in
`__init__` is still matched to the right conv. Rules, applied from each call of the layer in the graph:

- the layer's **norm** is the single consumer of the layer's output (skipping Identity/Dropout), when that
  consumer is a norm (BatchNorm*, GroupNorm, LayerNorm, InstanceNorm*, RMSNorm, or their functional forms);
- the layer's **activation** is the single consumer of the norm's output (or of the layer's output where there
  is no norm), when that consumer is an element-wise activation (ReLU, ReLU6, GELU, SiLU, ...; module,
  `torch.*`, `F.*` or tensor method).

A layer whose output feeds a residual add or is read twice has no activation of its own: its APoZ and mean
activation are then measured on the post-norm map. Where the model cannot be traced (data-dependent control
flow), every criterion is measured at the layer's own output and a note says so. A MultiheadAttention's
`out_proj` (never called as a module) is measured on the attention's output, which is its output.

One module: the feature graph's tracing and the taps inserted at its measurement points share the same sites.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from analysis.concurrency import symbolic_trace
from analysis.errors import first_line
from analysis.model.layers import out_channels, prunable_layers

NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.RMSNorm,
)
NORM_FUNCTIONS = {
    F.batch_norm,
    F.layer_norm,
    F.group_norm,
    F.instance_norm,
    F.rms_norm,
    torch.batch_norm,
    torch.layer_norm,
    torch.group_norm,
}
ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
)
ACTIVATION_FUNCTIONS = {
    torch.relu,
    torch.relu_,
    F.relu,
    F.relu_,
    F.relu6,
    F.leaky_relu,
    F.leaky_relu_,
    F.prelu,
    F.rrelu,
    F.elu,
    F.selu,
    F.celu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.hardtanh_,
    F.softplus,
    torch.sigmoid,
    torch.tanh,
    F.sigmoid,
    F.tanh,
}
ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}
# Activations with f(0) != 0: zeroing a channel before them is not the same as removing it.
NONZERO_AT_ZERO = {
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Softplus,
    torch.sigmoid,
    F.sigmoid,
    F.hardsigmoid,
    F.softplus,
}
NONZERO_AT_ZERO_METHODS = {"sigmoid", "sigmoid_"}
PASSTHROUGH_MODULES: tuple[type[nn.Module], ...] = (nn.Identity, nn.modules.dropout._DropoutNd)
PASSTHROUGH_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
PASSTHROUGH_METHODS = {"contiguous"}


@dataclass(frozen=True)
class Site:
    """One call of a layer in the traced graph: the fx nodes whose outputs are measured.

    `norm_node` is the node after which the post-norm map is read: the norm, or (no norm) the last
    pass-through op (Identity, Dropout) after the layer, or None when the layer's own output is read.
    """

    layer_node: str
    norm_node: str | None
    activation_node: str | None
    activation_keeps_zero: bool = True

    @property
    def post_norm_node(self) -> str:
        """The node whose output is the channel's feature map after its norm (the layer's own if none)."""
        return self.norm_node or self.layer_node

    @property
    def post_activation_node(self) -> str:
        """The node whose output is the feature map after norm and activation (post-norm if no activation)."""
        return self.activation_node or self.post_norm_node


@dataclass(frozen=True)
class LayerFeatures:
    """What follows one prunable layer, in words and as graph sites.

    `norm_module` is the norm's module name when it is a module (the source of `bn-scale`'s gamma);
    `norm` and `activation` describe what was found (None: nothing). `channel_dim` is 1 for convolutions
    and -1 for Linear (channels last).
    """

    layer: str
    channels: int
    channel_dim: int
    norm: str | None
    norm_module: str | None
    activation: str | None
    sites: tuple[Site, ...]

    def to_dict(self) -> dict[str, object]:
        return {"norm": self.norm, "activation": self.activation, "calls": len(self.sites)}


@dataclass(frozen=True)
class FeatureGraph:
    """The prunable layers' features; `graph_module` is the traced graph (it shares the model's modules)."""

    layers: dict[str, LayerFeatures]
    graph_module: fx.GraphModule | None
    note: str | None = None

    @property
    def traced(self) -> bool:
        return self.graph_module is not None


def _kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """'norm', 'activation', 'passthrough' or None for one graph node."""
    if node.op == "call_module":
        module = modules.get(str(node.target))
        if isinstance(module, NORM_MODULES):
            return "norm"
        if isinstance(module, ACTIVATION_MODULES):
            return "activation"
        if isinstance(module, PASSTHROUGH_MODULES):
            return "passthrough"
    elif node.op == "call_function":
        if node.target in NORM_FUNCTIONS:
            return "norm"
        if node.target in ACTIVATION_FUNCTIONS:
            return "activation"
        if node.target in PASSTHROUGH_FUNCTIONS:
            return "passthrough"
    elif node.op == "call_method":
        if node.target in ACTIVATION_METHODS:
            return "activation"
        if node.target in PASSTHROUGH_METHODS:
            return "passthrough"
    return None


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[str(node.target)]).__name__})"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    target = node.target
    name = getattr(target, "__name__", str(target))
    for prefix, namespace in (("F", F), ("torch", torch)):
        if getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    return name


def _keeps_zero(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether the activation maps 0 to 0 (ReLU, GELU, SiLU, tanh, ...; not sigmoid or softplus)."""
    if node.op == "call_module":
        return type(modules[str(node.target)]) not in NONZERO_AT_ZERO
    if node.op == "call_method":
        return node.target not in NONZERO_AT_ZERO_METHODS
    return node.target not in NONZERO_AT_ZERO


def _only_user(node: fx.Node) -> fx.Node | None:
    """The single node that reads `node`'s output (None when zero or several read it)."""
    users = list(node.users)
    return users[0] if len(users) == 1 and users[0].args and users[0].args[0] is node else None


def _follow(node: fx.Node, modules: dict[str, nn.Module], wanted: str) -> tuple[fx.Node | None, fx.Node]:
    """From `node`, step over pass-through ops; return (the next node if it is of kind `wanted`, last node)."""
    current = node
    while True:
        user = _only_user(current)
        if user is None:
            return None, current
        kind = _kind(user, modules)
        if kind == "passthrough":
            current = user
            continue
        return (user if kind == wanted else None), current


def _layer_outputs(
    gm: fx.GraphModule, modules: dict[str, nn.Module], wanted: dict[str, list[Site]]
) -> list[tuple[fx.Node, str]]:
    """(node whose value is the layer's output, layer name) for every call of a wanted layer, in graph order.

    A MultiheadAttention's `out_proj` is never called as a module (the attention reads its weight), but the
    attention's first output is exactly out_proj's output: that value stands in for it.
    """
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        if target in wanted:
            found.append((node, target))
        elif isinstance(modules.get(target), nn.MultiheadAttention) and f"{target}.out_proj" in wanted:
            for user in node.users:
                if user.op == "call_function" and user.target is operator.getitem and user.args[1] == 0:
                    found.append((user, f"{target}.out_proj"))
    return found


def trace(model: nn.Module) -> tuple[fx.GraphModule | None, str | None]:
    """The fx-traced graph of `model` (sharing its modules), or None and the reason tracing failed."""
    try:
        return symbolic_trace(model), None
    except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError, ...)
        return None, f"torch.fx could not trace the model ({first_line(exc, 160)})"


def find_features(model: nn.Module, layers: list[str] | None = None) -> FeatureGraph:
    """For each prunable layer (or those in `layers`), its following norm and activation, from the fx graph.

    Where tracing fails, every layer is measured at its own output (no norm, no activation) and `note` says
    why. The model is not changed.
    """
    wanted = prunable_layers(model, layers)
    gm, note = trace(model)
    modules = dict(model.named_modules())
    result: dict[str, LayerFeatures] = {}
    if gm is None:
        for name, module in wanted.items():
            result[name] = LayerFeatures(
                name, out_channels(module), -1 if isinstance(module, nn.Linear) else 1, None, None, None, ()
            )
        return FeatureGraph(result, None, note)
    sites: dict[str, list[Site]] = {name: [] for name in wanted}
    first_norm: dict[str, tuple[str, str | None]] = {}
    first_act: dict[str, str] = {}
    for node, name in _layer_outputs(gm, modules, sites):
        norm, last = _follow(node, modules, "norm")
        act, _ = _follow(norm if norm is not None else last, modules, "activation")
        if norm is not None and name not in first_norm:
            first_norm[name] = (
                _describe(norm, modules),
                str(norm.target) if norm.op == "call_module" else None,
            )
        if act is not None and name not in first_act:
            first_act[name] = _describe(act, modules)
        post_norm = norm if norm is not None else last
        sites[name].append(
            Site(
                node.name,
                post_norm.name if post_norm is not node else None,
                act.name if act is not None else None,
                act is None or _keeps_zero(act, modules),
            )
        )
    for name, module in wanted.items():
        norm_text, norm_module = first_norm.get(name, (None, None))
        result[name] = LayerFeatures(
            name,
            out_channels(module),
            -1 if isinstance(module, nn.Linear) else 1,
            norm_text,
            norm_module,
            first_act.get(name),
            tuple(sites[name]),
        )
    missing = [name for name, s in sites.items() if not s]
    if missing:
        note = f"layers never called in forward, measured nowhere: {', '.join(missing[:5])}"
    return FeatureGraph(result, gm, note)


class Tap(nn.Module):
    """Identity that hands the tensor passing through to `callback` and optionally masks one channel.

    `mask` (a 1-D float tensor of channel multipliers) zeroes channels along `channel_dim`, which is how the
    plain oracle loop simulates pruning a channel after its norm.
    """

    def __init__(self, channel_dim: int, callback: Callable[[torch.Tensor], None] | None = None) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.callback = callback
        self.mask: torch.Tensor | None = None
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.mask is not None:
            shape = [1] * x.ndim
            shape[self.channel_dim] = -1
            x = x * self.mask.to(x.device).view(shape)  # the mask is made on the CPU
        if self.callback is not None:
            self.callback(x)
        return x


@dataclass
class Tapped:
    """A runnable module with taps after each layer's norm (`post_norm`) and after its activation
    (`post_activation`), one tap per call site. Built on a private copy of the model."""

    module: nn.Module
    post_norm: dict[str, list[Tap]]
    post_activation: dict[str, list[Tap]]
    attribution_modules: dict[str, list[nn.Module]]  # whose output is the post-norm map (for captum)


def build_tapped(model_copy: nn.Module, features: FeatureGraph) -> Tapped:
    """Insert `Tap` modules into `model_copy` (which the caller owns) at each layer's measurement points.

    Traced models get taps as new graph nodes of a GraphModule over `model_copy`'s modules; untraceable
    ones get a forward hook on each layer of the copy that passes its output through a tap (measured at
    the layer's own output; captum then attributes to the layer module itself).
    """
    post_norm: dict[str, list[Tap]] = {name: [] for name in features.layers}
    post_act: dict[str, list[Tap]] = {name: [] for name in features.layers}
    if not features.traced:
        attribution: dict[str, list[nn.Module]] = {}
        for name, lf in features.layers.items():
            tap = Tap(lf.channel_dim)
            layer = model_copy.get_submodule(name)
            layer.register_forward_hook(lambda module, args, out, tap=tap: tap(out))
            post_norm[name].append(tap)
            post_act[name].append(tap)
            attribution[name] = [layer]
        return Tapped(model_copy, post_norm, post_act, attribution)
    gm, _ = trace(model_copy)
    if gm is None:  # traced before, on the same architecture: cannot happen short of a bug
        raise RuntimeError("model traced once but not twice")
    nodes = {node.name: node for node in gm.graph.nodes}
    counter = 0

    def insert_after(node: fx.Node, tap: Tap) -> None:
        nonlocal counter
        target = f"_importance_tap_{counter}"
        counter += 1
        gm.add_submodule(target, tap)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(target, (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)

    for name, lf in features.layers.items():
        for site in lf.sites:
            # Insert the post-activation tap first: its node then sits after the post-norm tap's node.
            act_tap = Tap(lf.channel_dim)
            same_point = site.post_activation_node == site.post_norm_node
            if not same_point:
                insert_after(nodes[site.post_activation_node], act_tap)
            norm_tap = Tap(lf.channel_dim)
            insert_after(nodes[site.post_norm_node], norm_tap)
            post_norm[name].append(norm_tap)
            post_act[name].append(norm_tap if same_point else act_tap)
    gm.graph.lint()
    gm.recompile()
    return Tapped(gm, post_norm, post_act, {name: list(taps) for name, taps in post_norm.items()})
