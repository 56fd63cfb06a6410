"""Weight quantization at 2..16 bits (docs/contract.md section 5), and real int8 execution where a CPU kernel exists.

Fake quantization: per output channel c, scale_c = max|w_c| / (2^(b-1) - 1), and every weight becomes
round(w / scale_c) * scale_c, clamped to +-(2^(b-1) - 1) levels: symmetric, uniform, at most 2^b - 1
distinct values per channel (zero included). The weights stay float32 tensors, so the model runs float
kernels: its latency is *simulated* (the speed of a real b-bit kernel is not measured). Activations stay
float.

Real int8: PyTorch's CPU backends (fbgemm/x86, qnnpack) have a dynamic int8 kernel for `nn.Linear`: int8
weights, activations quantized per batch at run time. `to_int8_linear` swaps 8-bit Linear layers for that
kernel with exactly the fake-quantized weights above (same scales, same integers), so its latency is *real*.
torchao would be the modern route; it is not a dependency here, so `torch.ao.quantization`'s module is used.
Convolutions have no dynamic int8 kernel (static quantization needs calibration and fused modules), so they
stay fake-quantized.

Size is counted at b bits per weight plus one float32 scale per output channel; everything else (biases,
norms, unquantized layers) at its stored width.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.validate import UNTOUCHED_BITS
from analysis.validate import bits as check_bits

SCALE_BYTES = 4  # one float32 scale per output channel
INT8_BITS = 8


def levels(bits: int) -> int:
    """Number of positive levels at `bits`: 2^(b-1) - 1 (and as many negative ones, plus zero)."""
    return 2 ** (check_bits(bits) - 1) - 1


def channel_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel (dim 0) scale max|w_c| / (2^(b-1) - 1); 0 for an all-zero channel."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    return flat.abs().amax(dim=1) / levels(bits)


def fake_quantize(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight on its symmetric per-channel grid at `bits`, and the per-channel scales.

    Returns a new float tensor of the same shape; `weight` is not changed.
    """
    q = levels(bits)
    scales = channel_scales(weight, bits)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    safe = torch.where(scales > 0, scales, torch.ones_like(scales)).reshape(shape)
    ints = torch.clamp(torch.round(weight.detach() / safe), -q, q)
    return (ints * safe).to(weight.dtype), scales


@dataclass(frozen=True)
class QuantizedLayer:
    """One layer's weight quantization: bits, output channels, and the largest absolute rounding error."""

    name: str
    bits: int
    channels: int
    weights: int
    max_abs_error: float

    def to_dict(self) -> dict:
        return {
            "bits": self.bits,
            "channels": self.channels,
            "weights": self.weights,
            "max_abs_error": self.max_abs_error,
        }


def quantize_weights(model: nn.Module, bits: Mapping[str, int]) -> dict[str, QuantizedLayer]:
    """Fake-quantize, in place, the weight of each layer named in `bits` (32 = leave it).

    Meant for a copy the caller owns (`analysis.compression.compress` works on its own deep copy).
    """
    modules = dict(model.named_modules())
    done: dict[str, QuantizedLayer] = {}
    with torch.no_grad():
        for name, b in bits.items():
            if b == UNTOUCHED_BITS:
                continue
            module = modules.get(name)
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor):
                raise WorkbenchError(f"layer {name!r} has no weight to quantize")
            quantized, _ = fake_quantize(weight, b)
            error = float((quantized - weight).abs().max()) if weight.numel() else 0.0
            weight.copy_(quantized)
            done[name] = QuantizedLayer(name, b, weight.shape[0], weight.numel(), error)
    return done


def quantized_size_bytes(model: nn.Module, bits: Mapping[str, int]) -> int:
    """Bytes to store the model with each weight in `bits` at b bits plus a float32 scale per output channel.

    All other parameters and buffers count at their stored dtype.
    """
    quantized_params = {}
    modules = dict(model.named_modules())
    for name, b in bits.items():
        if b != UNTOUCHED_BITS and isinstance(getattr(modules.get(name), "weight", None), torch.Tensor):
            quantized_params[id(modules[name].weight)] = b
    total, seen = 0, set()
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        b = quantized_params.get(id(tensor))
        if b is None:
            total += tensor.numel() * tensor.element_size()
        else:
            total += math.ceil(tensor.numel() * b / 8) + tensor.shape[0] * SCALE_BYTES
    return total


def int8_backend() -> str | None:
    """The name of the CPU int8 dynamic-Linear kernel this torch can run, or None where there is none."""
    try:
        import torch.ao.nn.quantized.dynamic  # noqa: F401
    except ImportError:
        return None
    engine = torch.backends.quantized.engine
    if engine in (None, "none") or engine not in torch.backends.quantized.supported_engines:
        return None
    try:
        layer = _dynamic_linear(nn.Linear(4, 2), torch.full((2,), 1 / 127))
        with torch.inference_mode():
            layer(torch.ones(1, 4))
    except Exception:  # no kernel for this CPU/build: quantization stays simulated
        return None
    return f"torch.ao dynamic int8 Linear ({engine})"


def _dynamic_linear(linear: nn.Linear, scales: torch.Tensor) -> nn.Module:
    """A dynamic int8 Linear whose int8 weights are round(w / scale) with our per-channel scales."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    weight = linear.weight.detach().float()
    safe = torch.where(scales > 0, scales, torch.ones_like(scales)).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        qweight = torch.quantize_per_channel(
            weight, safe, torch.zeros(len(safe), dtype=torch.long), 0, torch.qint8
        )
        layer = DynamicLinear(
            linear.in_features, linear.out_features, bias_=linear.bias is not None, dtype=torch.qint8
        )
        bias = linear.bias.detach().float() if linear.bias is not None else None
        layer.set_weight_bias(qweight, bias)
    return layer


def to_int8_linear(model: nn.Module, bits: Mapping[str, int]) -> list[str]:
    """Swap, in place, every `nn.Linear` quantized at 8 bits for the real dynamic int8 kernel.

    Call after `quantize_weights`: the int8 weights are then exactly the fake-quantized ones. Returns the
    names of the swapped layers (empty where no kernel is available).
    """
    if int8_backend() is None:
        return []
    modules = dict(model.named_modules())
    swapped = []
    for name, b in bits.items():
        module = modules.get(name)
        if b != INT8_BITS or type(module) is not nn.Linear:
            continue
        layer = _dynamic_linear(module, channel_scales(module.weight, INT8_BITS))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer)
        swapped.append(name)
    return swapped


__all__ = [
    "QuantizedLayer",
    "channel_scales",
    "fake_quantize",
    "int8_backend",
    "levels",
    "quantize_weights",
    "quantized_size_bytes",
    "to_int8_linear",
]
