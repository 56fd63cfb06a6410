"""Sparsity training: a penalty during training pushes whole channels towards zero, then they are pruned.

- **Network slimming** (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network
  Slimming"): `strength x sum |gamma|` over every BatchNorm scale is added to the loss (its subgradient is
  `strength x sign(gamma)`, what the paper's code adds after backward); channels are then ranked globally
  by |gamma| (a coupled group sums its members' |gamma|) and the smallest go, to a threshold or a target.
- **SSL group lasso** (Wen et al. 2016, "Learning Structured Sparsity in Deep Neural Networks"):
  `strength x sum over filters of ||W_filter||_2`; in a coupled group the filter group of one channel is
  every out-member's filter for it together (sqrt of the summed squares), so one norm per prunable channel.
  Channels whose norm ends below a threshold (or the smallest, to a target) are pruned.

`bn_scales` and `filter_norms` give the values whose histograms before and after training are the
evidence that the penalty worked (a mass of near-zero values appears).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from analysis.transforms.groups import PruningGroup

SPARSITY_METHODS = ("slimming", "group-lasso")


def _norms(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None
    }


def slimming_penalty(model: nn.Module, strength: float) -> torch.Tensor:
    """`strength x sum |gamma|` over the scales of every affine BatchNorm of `model` (differentiable)."""
    terms = [m.weight.abs().sum() for m in _norms(model).values()]
    if not terms:
        return torch.zeros(())
    return float(strength) * torch.stack(terms).sum()


def bn_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """|gamma| per channel of every affine BatchNorm, by module name (detached copies)."""
    return {name: m.weight.detach().abs().flatten().clone() for name, m in _norms(model).items()}


def _filter_rows(model: nn.Module, group: PruningGroup) -> torch.Tensor:
    """The group's filters as one row per root channel: every Conv/Linear out-member's filter for that
    channel, concatenated (rows in root-channel order)."""
    parts = []
    for m in group.members:
        module = model.get_submodule(m.name)
        if m.dim != "out" or not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        order = sorted(range(len(m.root_idxs)), key=lambda k: m.root_idxs[k])
        rows = torch.tensor([m.idxs[k] for k in order], dtype=torch.long)
        parts.append(module.weight.flatten(1).index_select(0, rows))
    return torch.cat(parts, dim=1)


def group_norms(model: nn.Module, groups: Sequence[PruningGroup]) -> dict[str, torch.Tensor]:
    """Per group, one L2 norm per channel over its filters (differentiable; see `_filter_rows`)."""
    return {g.name: torch.linalg.vector_norm(_filter_rows(model, g), dim=1) for g in groups}


def group_lasso_penalty(model: nn.Module, groups: Sequence[PruningGroup], strength: float) -> torch.Tensor:
    """`strength x sum over channels of ||filters of the channel||_2` over `groups` (differentiable)."""
    terms = [norms.sum() for norms in group_norms(model, groups).values()]
    if not terms:
        return torch.zeros(())
    return float(strength) * torch.stack(terms).sum()


def filter_norms(model: nn.Module, groups: Sequence[PruningGroup]) -> dict[str, torch.Tensor]:
    """The group-lasso norms per channel, by group name (detached copies), for histograms."""
    with torch.no_grad():
        return {name: t.detach().clone() for name, t in group_norms(model, groups).items()}


def sparsity_values(model: nn.Module, method: str, groups: Sequence[PruningGroup]) -> dict[str, list[float]]:
    """The evidence for `method`: |gamma| per BatchNorm (slimming) or filter-group norms (group lasso)."""
    values = bn_scales(model) if method == "slimming" else filter_norms(model, groups)
    return {name: [float(v) for v in t] for name, t in values.items()}


def channel_values(model: nn.Module, method: str, groups: Sequence[PruningGroup]) -> dict[str, torch.Tensor]:
    """Per group, the value a sparsity method prunes by (higher = kept): group-lasso norms, or for
    slimming the sum over the group's out-members' following BatchNorms of |gamma| (`bn-scale`; a group
    with a layer that no BatchNorm follows gets +inf: slimming leaves it whole, as the paper does)."""
    if method == "group-lasso":
        return {name: t.double() for name, t in filter_norms(model, groups).items()}
    from analysis.errors import WorkbenchError
    from analysis.importance import group_scores

    values = {}
    for g in groups:  # a group without a BatchNorm after each of its layers has no gamma: it is not pruned
        try:
            values.update(group_scores(model, [g], {g.name: "bn-scale"}))
        except WorkbenchError:
            values[g.name] = torch.full((g.channels,), float("inf"), dtype=torch.float64)
    return values


__all__ = [
    "SPARSITY_METHODS",
    "bn_scales",
    "channel_values",
    "filter_norms",
    "group_lasso_penalty",
    "group_norms",
    "slimming_penalty",
    "sparsity_values",
]
