"""Binary, ternary and power-of-two weights: *simulated* (the weights stay float32 tensors holding the
low-bit values, and run on float kernels; sizes are counted at the low-bit width).

- **binary** (BinaryConnect's sign with the BWN / XNOR-Net scaling, Rastegari et al. 2016): per output
  channel c, W_c ~ alpha_c sign(W_c) with alpha_c = mean |W_c| (the L2-optimal scale for a sign pattern).
  sign(0) is taken as +1, so every weight is +-alpha_c. 1 bit per weight plus one float32 scale per channel.
- **ternary** (TWN, Li, Zhang and Liu 2016): per output channel, threshold delta_c = 0.7 mean |W_c|;
  weights with |w| > delta_c become alpha_c sign(w), the rest 0, with alpha_c the mean |w| of those above
  the threshold. 2 bits per weight plus one float32 scale per channel.
- **pow2** (INQ, Zhou et al. 2017, without its incremental re-training): weights in {0, +-2^k}. Per layer,
  with s = max |W|: n1 = floor(log2(4 s / 3)) is the largest exponent, and at b bits there are 2^(b-2)
  exponents n1, n1 - 1, ..., n2 = n1 + 1 - 2^(b-2) (INQ's n2 = n1 + 1 - 2^(b-1)/2: one bit goes to zero /
  sign). |w| rounds to the level beta with 3 beta / 4 <= |w| < 3 beta / 2 (the next level down's halfway
  point), and below 2^n2 / 2 to 0. b bits per weight plus the layer's n1 (counted as 4 bytes); no scales
  (a shift replaces the multiply, which is INQ's point). The default is INQ's 5 bits.
"""

from __future__ import annotations

import math

import torch

from analysis.errors import WorkbenchError

WEIGHT_KINDS = ("binary", "ternary", "pow2")
TERNARY_THRESHOLD = 0.7  # TWN's delta = 0.7 E|W|
POW2_DEFAULT_BITS = 5  # INQ's headline setting (lossless 5-bit ResNets on ImageNet)
POW2_MIN_BITS, POW2_MAX_BITS = 3, 8
SCALE_BYTES = 4
EXPONENT_BYTES = 4
LABEL = "simulated (float weights holding the low-bit values; float kernels)"


def check_kind(value, where: str = "weights") -> str:
    """`value` as one of binary, ternary, pow2; WorkbenchError otherwise."""
    if not isinstance(value, str) or value.strip().lower() not in WEIGHT_KINDS:
        raise WorkbenchError(f"{where} must be one of {', '.join(WEIGHT_KINDS)}, got {value!r}")
    return value.strip().lower()


def _per_channel(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().reshape(weight.shape[0], -1)


def binarize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha_c sign(W_c), alpha_c = mean |W_c| per output channel); sign(0) = +1. `weight` is unchanged."""
    flat = _per_channel(weight)
    alpha = flat.abs().mean(dim=1)
    signs = torch.where(flat >= 0, 1.0, -1.0).to(flat.dtype)
    return (signs * alpha[:, None]).reshape(weight.shape), alpha


def ternarize(
    weight: torch.Tensor, threshold: float = TERNARY_THRESHOLD
) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN: (alpha_c sign(w) where |w| > delta_c else 0, alpha_c) per output channel, delta_c = threshold x
    mean |W_c|, alpha_c = mean of |w| > delta_c (0 for a channel with none)."""
    flat = _per_channel(weight)
    mag = flat.abs()
    delta = threshold * mag.mean(dim=1, keepdim=True)
    above = mag > delta
    count = above.sum(dim=1)
    alpha = torch.where(
        count > 0, (mag * above).sum(dim=1) / count.clamp(min=1), torch.zeros_like(count, dtype=flat.dtype)
    )
    values = torch.sign(flat) * above * alpha[:, None]
    return values.reshape(weight.shape), alpha


def pow2_exponents(weight: torch.Tensor, bits: int = POW2_DEFAULT_BITS) -> tuple[int, int]:
    """INQ's (n1, n2): the largest and smallest exponent for this layer at `bits` bits."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not POW2_MIN_BITS <= bits <= POW2_MAX_BITS:
        raise WorkbenchError(
            f"pow2 bits must be a whole number in {POW2_MIN_BITS}..{POW2_MAX_BITS}, got {bits!r}"
        )
    s = float(weight.detach().abs().max()) if weight.numel() else 0.0
    if s == 0.0:
        return 0, 0
    n1 = math.floor(math.log2(4.0 * s / 3.0))
    return n1, n1 + 1 - 2 ** (bits - 2)


def pow2_quantize(weight: torch.Tensor, bits: int = POW2_DEFAULT_BITS) -> tuple[torch.Tensor, int]:
    """Weights in {0, +-2^n2, ..., +-2^n1} (INQ's rule, see the module docstring) and n1."""
    n1, n2 = pow2_exponents(weight, bits)
    w = weight.detach()
    mag = w.abs()
    if float(mag.max() if w.numel() else 0.0) == 0.0:
        return torch.zeros_like(w), n1
    safe = torch.where(mag > 0, mag, torch.ones_like(mag))
    # level beta = 2^k with 3 beta / 4 <= |w| < 3 beta / 2  <=>  k = floor(log2(4 |w| / 3))
    k = torch.floor(torch.log2(4.0 * safe / 3.0)).clamp(max=n1)
    level = torch.pow(2.0, k).to(w.dtype)
    keep = (mag > 0) & (mag >= 2.0**n2 / 2) & (k >= n2 - 1)
    level = torch.where(k < n2, torch.full_like(level, 2.0**n2), level)  # between 2^n2/2 and 3*2^n2/4
    return torch.where(keep, torch.sign(w) * level, torch.zeros_like(w)), n1


def lowbit_weight(weight: torch.Tensor, kind: str, bits: int = POW2_DEFAULT_BITS) -> torch.Tensor:
    """The weight as `kind` (binary, ternary or pow2 at `bits`) would store it, as a float tensor."""
    kind = check_kind(kind)
    if kind == "binary":
        return binarize(weight)[0]
    if kind == "ternary":
        return ternarize(weight)[0]
    return pow2_quantize(weight, bits)[0]


def lowbit_size_bytes(weight: torch.Tensor, kind: str, bits: int = POW2_DEFAULT_BITS) -> int:
    """Stored bytes of a `kind` weight: 1 bit (binary) or 2 bits (ternary) per weight plus a float32 scale
    per output channel; pow2 at `bits` per weight plus the layer's exponent."""
    kind = check_kind(kind)
    n = weight.numel()
    if kind == "binary":
        return math.ceil(n / 8) + weight.shape[0] * SCALE_BYTES
    if kind == "ternary":
        return math.ceil(2 * n / 8) + weight.shape[0] * SCALE_BYTES
    return math.ceil(bits * n / 8) + EXPONENT_BYTES


__all__ = [
    "LABEL",
    "POW2_DEFAULT_BITS",
    "WEIGHT_KINDS",
    "binarize",
    "check_kind",
    "lowbit_size_bytes",
    "lowbit_weight",
    "pow2_exponents",
    "pow2_quantize",
    "ternarize",
]
