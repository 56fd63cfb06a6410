"""`l1`: the L1 norm of each output channel's filter, sum |w| (Li et al. 2017, "Pruning Filters for
Efficient ConvNets"). Equal to Torch-Pruning's MagnitudeImportance(p=1, normalizer=None,
group_reduction="first") on the layer's own group, without needing a traced dependency graph."""

from __future__ import annotations

from typing import ClassVar

import torch

from analysis.importance.base import CRITERIA_REGISTRY, WeightCriterion


@CRITERIA_REGISTRY.register
class L1Importance(WeightCriterion):
    """Filter L1 norm; weight-only (data is ignored)."""

    name: ClassVar[str] = "l1"

    def filter_scores(self, filters: torch.Tensor) -> torch.Tensor:
        return filters.abs().sum(dim=1)
