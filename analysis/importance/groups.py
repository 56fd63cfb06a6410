"""Criteria scored per coupled channel group: what structured pruning ranks units by.

A group (`analysis.transforms.groups.PruningGroup`, found above this package) is read through the small
`ChannelGroup` protocol below, so the criteria need nothing from the transforms: its name, its unit count,
and the members whose outputs it removes, each with the unit every index belongs to. As Torch-Pruning's
pruner asks its `Importance` for a group's scores, the transforms ask `group_scores`, which hands each
criterion its groups (`Criterion.score_groups`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from analysis.data import DEFAULT_MAX_SAMPLES
from analysis.importance.base import get_importance

if TYPE_CHECKING:
    from analysis.data import Dataset


class ChannelMember(Protocol):
    """One module a group's removal touches: `dim` "out" (its outputs go) or "in"; `idxs[k]`, an index in
    that dimension, belongs to the group's unit `root_idxs[k]`."""

    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> str: ...
    @property
    def idxs(self) -> tuple[int, ...]: ...
    @property
    def root_idxs(self) -> tuple[int, ...]: ...


class ChannelGroup(Protocol):
    """Layers that lose the same units together (`channels` units, numbered from 0)."""

    @property
    def name(self) -> str: ...
    @property
    def channels(self) -> int: ...
    @property
    def members(self) -> Sequence[ChannelMember]: ...
    @property
    def out_layers(self) -> list[str]: ...


def group_scores(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    criteria: Mapping[str, str] | str,
    data: Dataset | None = None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
) -> dict[str, torch.Tensor]:
    """Per group (by name), one float64 score per unit, higher = more important.

    `criteria` is one criterion name for every group, or group name -> criterion (default `l1`); each
    criterion, built with `max_samples`, scores its groups in one call (`Criterion.score_groups`).
    """
    by_criterion: dict[str, list[ChannelGroup]] = {}
    for g in groups:
        name = criteria if isinstance(criteria, str) else criteria.get(g.name, "l1")
        by_criterion.setdefault(name, []).append(g)
    scores: dict[str, torch.Tensor] = {}
    for criterion, chosen in by_criterion.items():
        scores |= get_importance(criterion, max_samples=max_samples).score_groups(model, chosen, data)
    return scores
