"""Low-rank factorization of Linear and Conv2d layers by truncated SVD (a real structural change).

- **Linear** W (out x in) ~ A B becomes two Linear layers: `in -> r` (weight B, no bias) then `r -> out`
  (weight A, the original bias).
- **Conv2d** k x k (out x in) is factored through its weight reshaped to out x (in k k): a k x k
  convolution with r outputs (same stride, padding, dilation and padding mode, no bias) followed by a 1x1
  convolution r -> out carrying the bias. Grouped convolutions (groups != 1) are refused.

Which rank-r weight: W_r = U_r U_r^T W, the projection of the layer's outputs on r directions U_r.
- Without data, U_r are the top-r left singular vectors of W: W_r is the truncated SVD, the best rank-r
  approximation in the Frobenius norm (Eckart-Young; the squared error is the sum of the discarded squared
  singular values).
- With calibration inputs (`output_moments`), U_r are the top-r eigenvectors of the outputs' second moment
  E[y y^T] (y = W x, before the bias): W_r is then the best rank-r approximation of the layer's *outputs*
  on that data, min E||(W - W_r) x||^2 (Zhang et al. 2015, "Efficient and accurate approximations of
  nonlinear convolutional networks", linear case). This is what `compress` and the `lowrank` sweep use: a
  plain SVD drops weight directions regardless of how much input energy they carry. On the first conv of
  `zoo:digits-cnn`, whose 3x3 image patches are dominated by their mean, the plain SVD at rank 7 of 9
  loses 85 points (the dropped direction shifts every channel's mean past its BatchNorm statistics) while
  rank 1 loses 70: not monotone. The output-optimal W_r loses 0.0 at rank 7 and falls monotonically.

The A and B factors carry the same scale (each row of U_r^T W split by the square root of its norm; with
no data that is the usual sqrt(S) on each side), which helps fine-tuning afterwards.

The rank is a fraction of the full rank min(out, in k k) kept (`rank`: r = max(1, round(rank x full))) or an
energy threshold (`rank_energy`: the smallest r whose spectrum keeps that share of the energy: squared
singular values of W without data, eigenvalues of E[y y^T] with it). Per output position the factored
layer does r x (in k k + out) MACs instead of out x (in k k), and stores as many weights; a rank at which
that is not smaller is refused. The factored layer replaces the original as an `nn.Sequential`, so its
state-dict names become `layer.0.*` and `layer.1.*`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn

from analysis.errors import WorkbenchError
from analysis.model.inputs import InputBatch, as_input_spec, to_device
from analysis.model.layers import call_model, copy_model

# Training samples whose layer outputs choose each rank-r weight, in `compress` and the `lowrank` sweep alike.
CALIBRATION_SAMPLES = 512


@dataclass(frozen=True)
class LowRankSpec:
    """How far to factor one layer: `rank` (fraction of the full rank kept, in (0, 1)) or `rank_energy`
    (share of the squared singular values kept, in (0, 1]); exactly one of the two."""

    rank: float | None = None
    rank_energy: float | None = None

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.rank_energy is None):
            raise WorkbenchError("give exactly one of rank (fraction of full rank) or rank_energy (0-1]")
        if self.rank is not None:
            object.__setattr__(self, "rank", check_rank(self.rank))
        else:
            object.__setattr__(self, "rank_energy", check_rank_energy(self.rank_energy))


def check_rank(value, where: str = "rank") -> float:
    """`value` as a kept-rank fraction in (0, 1); WorkbenchError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WorkbenchError(
            f"{where} must be a number in (0, 1), the fraction of the full rank kept, got {value!r}"
        )
    if not 0.0 < float(value) < 1.0:
        raise WorkbenchError(
            f"{where} {value} is outside (0, 1): give the fraction of the full rank kept, e.g. 0.25"
        )
    return float(value)


def check_rank_energy(value, where: str = "rank_energy") -> float:
    """`value` as a kept share of squared singular values in (0, 1]; WorkbenchError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WorkbenchError(f"{where} must be a number in (0, 1], the share of energy kept, got {value!r}")
    if not 0.0 < float(value) <= 1.0:
        raise WorkbenchError(f"{where} {value} is outside (0, 1]: give the share of sum(s^2) kept, e.g. 0.9")
    return float(value)


def as_spec(value: LowRankSpec | float | Mapping) -> LowRankSpec:
    """A LowRankSpec from a spec, a bare fraction (= `rank`) or a dict with `rank` or `rank_energy`."""
    if isinstance(value, LowRankSpec):
        return value
    if isinstance(value, Mapping):
        return LowRankSpec(rank=value.get("rank"), rank_energy=value.get("rank_energy"))
    return LowRankSpec(rank=value)


@dataclass(frozen=True)
class LowRankChoice:
    """The rank chosen for one layer and what it saves. `energy_kept` is the share of sum(s^2) kept;
    params count weights plus bias; MACs are per sample (None where no input shape was given)."""

    layer: str
    full_rank: int
    rank: int
    energy_kept: float
    params_before: int
    params_after: int
    macs_before: int | None = None
    macs_after: int | None = None

    @property
    def params_saved(self) -> int:
        return self.params_before - self.params_after

    @property
    def macs_saved(self) -> int | None:
        return None if self.macs_before is None else self.macs_before - self.macs_after

    def to_dict(self) -> dict:
        return asdict(self) | {"params_saved": self.params_saved, "macs_saved": self.macs_saved}


def factorable(module: nn.Module) -> bool:
    """Whether SVD can factor `module`: an nn.Linear or a groups=1 nn.Conv2d (`_check_layer` says why not)."""
    return type(module) is nn.Linear or (type(module) is nn.Conv2d and module.groups == 1)


def _check_layer(name: str, module: nn.Module) -> None:
    if type(module) is nn.Linear:
        return
    if type(module) is nn.Conv2d:
        if module.groups != 1:
            raise WorkbenchError(
                f"layer {name!r} is a grouped/depthwise conv (groups={module.groups}): SVD factors only "
                "groups=1 convolutions; leave it out or prune it instead"
            )
        return
    raise WorkbenchError(
        f"layer {name!r} is a {type(module).__name__}: low-rank factorization takes nn.Linear and nn.Conv2d"
    )


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as a float64 matrix out x (in k k) (a Linear's weight as it is)."""
    w = module.weight.detach()
    return w.reshape(w.shape[0], -1).double()


def singular_values(module: nn.Module) -> torch.Tensor:
    """Singular values (float64, descending) of the layer's weight matrix."""
    return torch.linalg.svdvals(weight_matrix(module))


def _eigh(moment: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and eigenvectors of a symmetric matrix, on one thread: LAPACK's result
    depends on the thread count in the last bits, and a sweep split over Ray workers must give the same
    numbers as one process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(moment)
    finally:
        torch.set_num_threads(threads)


def _energies(module: nn.Module, moment: torch.Tensor | None) -> torch.Tensor:
    """The spectrum a rank is chosen on, as energies (descending, float64, length = full rank): squared
    singular values of W, or with `moment` the eigenvalues of the outputs' E[y y^T]."""
    full = min(module.weight.shape[0], module.weight[0].numel())
    if moment is None:
        return singular_values(module) ** 2
    return _eigh(moment)[0].flip(0)[:full].clamp_min(0.0)


def _basis(module: nn.Module, r: int, moment: torch.Tensor | None) -> torch.Tensor:
    """U_r (out x r, float64): the output directions kept (see the module docstring)."""
    if moment is None:
        u, _, _ = torch.linalg.svd(weight_matrix(module), full_matrices=False)
        return u[:, :r]
    _, vectors = _eigh(moment)
    return vectors.flip(1)[:, :r]


def rank_for(spec: LowRankSpec, s: torch.Tensor, energies: bool = False) -> int:
    """The rank `spec` asks for, given the singular values `s` (descending; with `energies`, `s` already
    holds squared singular values or eigenvalues)."""
    full = len(s)
    if spec.rank is not None:
        return max(1, min(full, round(spec.rank * full)))
    energy = torch.cumsum(s if energies else s**2, 0)
    total = float(energy[-1])
    if total == 0.0:
        return 1
    # smallest r with kept energy >= threshold; the tolerance keeps rank_energy=1 from needing float luck
    return int(torch.searchsorted(energy / total, torch.tensor(spec.rank_energy - 1e-12, dtype=s.dtype))) + 1


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def choose_rank(
    name: str,
    module: nn.Module,
    spec: LowRankSpec | float | Mapping,
    positions: int | None = None,
    moment: torch.Tensor | None = None,
) -> LowRankChoice:
    """The rank for `module` under `spec`, and the params (and MACs, given the number of output
    `positions` per sample: H_out x W_out for a conv, 1 for a Linear on flat inputs) before and after.
    `moment` (the layer's `output_moments` entry) measures the energy kept on data.

    Refuses, with a one-line WorkbenchError, a rank that would not save MACs and params.
    """
    _check_layer(name, module)
    spec = as_spec(spec)
    energy = _energies(module, moment)
    r = rank_for(spec, energy, energies=True)
    out, cols = module.weight.shape[0], module.weight[0].numel()
    full = min(out, cols)
    before = out * cols
    after = r * (cols + out)
    if after >= before:
        best = (before - 1) // (cols + out)
        hint = (
            f"ranks up to {best} ({best / full:.3f} of {full}) save something"
            if best >= 1
            else "no rank saves anything on this shape"
        )
        raise WorkbenchError(
            f"layer {name!r}: rank {r} of {full} would not save MACs or params ({after} >= {before} weights "
            f"per position); {hint}"
        )
    bias = module.bias.numel() if module.bias is not None else 0
    kept = float(energy[:r].sum() / energy.sum()) if float(energy.sum()) > 0 else 1.0
    return LowRankChoice(
        layer=name,
        full_rank=full,
        rank=r,
        energy_kept=kept,
        params_before=_params(module),
        params_after=after + bias,
        macs_before=None if positions is None else before * positions,
        macs_after=None if positions is None else after * positions,
    )


def _factors(module: nn.Module, r: int, moment: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B), float64, with A @ B = W_r: A is out x r, B is r x (in k k), rows of B and columns of A
    scaled alike."""
    u = _basis(module, r, moment)
    b = u.T @ weight_matrix(module)
    root = b.norm(dim=1).sqrt().clamp_min(1e-30)
    return u * root, b / root[:, None]


def truncated_weight(module: nn.Module, r: int, moment: torch.Tensor | None = None) -> torch.Tensor:
    """W_r reshaped to the weight's shape, in its dtype: the truncated SVD without `moment`, the best rank-r
    approximation of the outputs with it (see the module docstring)."""
    a, b = _factors(module, r, moment)
    return (a @ b).reshape(module.weight.shape).to(module.weight.dtype)


def factor_layer(module: nn.Module, r: int, moment: torch.Tensor | None = None) -> nn.Sequential:
    """A new nn.Sequential of two layers whose composition is `truncated_weight(module, r, moment)`."""
    w = module.weight
    a, b = _factors(module, r, moment)
    first = b.to(w.dtype)  # r x (in k k)
    second = a.to(w.dtype)  # out x r
    has_bias = module.bias is not None
    factory = {"device": w.device, "dtype": w.dtype}
    if type(module) is nn.Linear:
        a = nn.Linear(module.in_features, r, bias=False, **factory)
        b = nn.Linear(r, module.out_features, bias=has_bias, **factory)
        shape_a, shape_b = (r, module.in_features), (module.out_features, r)
    else:
        a = nn.Conv2d(
            module.in_channels,
            r,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            bias=False,
            padding_mode=module.padding_mode,
            **factory,
        )
        b = nn.Conv2d(r, module.out_channels, 1, bias=has_bias, **factory)
        shape_a, shape_b = a.weight.shape, b.weight.shape
    with torch.no_grad():
        a.weight.copy_(first.reshape(shape_a))
        b.weight.copy_(second.reshape(shape_b))
        if has_bias:
            b.bias.copy_(module.bias.detach())
    return nn.Sequential(a, b).train(module.training)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def output_positions(model: nn.Module, layers, input_shape) -> dict[str, int]:
    """Output positions per sample of each layer (H_out x W_out for a conv, the product of the leading
    dims for a Linear), from one forward pass of a private copy with hooks."""
    work = copy.deepcopy(model).eval()
    found: dict[str, int] = {}
    handles = []
    for name in layers:
        module = work.get_submodule(name)

        def hook(m, _inp, out, name=name):
            channel_dim = -1 if isinstance(m, nn.Linear) else 1
            found[name] = out.numel() // out.shape[channel_dim]  # batch of one

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            p = next(work.parameters(), None)
            dtype = p.dtype if p is not None else torch.float32
            call_model(work, to_device(as_input_spec(input_shape).zeros(1), "cpu", dtype))
    finally:
        for h in handles:
            h.remove()
    return found


def output_moments(
    model: nn.Module, layers, inputs: torch.Tensor | InputBatch, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """E[y y^T] (float64, out x out) of each layer's outputs before its bias, over every sample and output
    position of `inputs` (calibration samples, batch first; the training split): the metric in which
    `truncated_weight(..., moment)` is the best rank-r approximation. Runs a private eval-mode copy."""
    work = copy.deepcopy(model).eval()
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}
    handles = []
    for name in layers:
        module = work.get_submodule(name)

        def hook(m, _inp, out, name=name):
            y = out if m.bias is None else out - m.bias.reshape(-1, *[1] * (out.dim() - 2))
            y = y.movedim(1, -1) if isinstance(m, nn.Conv2d) else y
            y = y.reshape(-1, y.shape[-1]).double()
            sums[name] = sums.get(name, 0) + y.T @ y
            rows[name] = rows.get(name, 0) + len(y)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for start in range(0, len(inputs), batch_size):
                call_model(work, inputs[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {name: sums[name] / rows[name] for name in sums}


def plan_factorization(
    model: nn.Module,
    specs: Mapping[str, LowRankSpec | float | Mapping],
    input_shape: tuple[int, ...] | None = None,
    moments: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, LowRankChoice]:
    """The rank and savings per layer that `factorize` would apply (nothing is changed). MACs are filled
    in where `input_shape` (one sample, no batch dim) is given; `moments` (`output_moments`) measure the
    energy kept on data."""
    modules = dict(model.named_modules())
    for name in specs:
        if name not in modules or not name:
            raise WorkbenchError(f"no layer named {name!r} in the model: use a name from named_modules()")
    positions = output_positions(model, list(specs), input_shape) if input_shape else {}
    moments = moments or {}
    return {
        name: choose_rank(name, modules[name], spec, positions.get(name), moments.get(name))
        for name, spec in specs.items()
    }


def factorize(
    model: nn.Module,
    specs: Mapping[str, LowRankSpec | float | Mapping],
    calibration: torch.Tensor | None = None,
    moments: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A deep copy of `model` with each layer in `specs` replaced by its rank-r factorization.

    `specs` maps a layer name to a LowRankSpec, a bare kept-rank fraction, or {"rank": ...} /
    {"rank_energy": ...}. With `calibration` inputs (training samples) each layer keeps the rank-r
    approximation of its outputs on them, else its truncated SVD (`moments`: their `output_moments`, where
    already measured). The model handed in is not changed.
    """
    if moments is None:
        moments = output_moments(model, list(specs), calibration) if calibration is not None else {}
    choices = plan_factorization(model, specs, moments=moments)
    work = copy_model(model)
    with torch.no_grad():
        for name, choice in choices.items():
            new = factor_layer(work.get_submodule(name), choice.rank, moments.get(name))
            _set_module(work, name, new)
    return work


__all__ = [
    "LowRankChoice",
    "LowRankSpec",
    "as_spec",
    "check_rank",
    "check_rank_energy",
    "choose_rank",
    "factor_layer",
    "factorable",
    "factorize",
    "output_moments",
    "output_positions",
    "plan_factorization",
    "rank_for",
    "singular_values",
    "truncated_weight",
]
