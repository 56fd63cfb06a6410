"""`l2`: the L2 norm of each output channel's filter, sqrt(sum w^2). (Torch-Pruning's MagnitudeImportance
with p=2 returns the squared norm, sum w^2: the same ranking, a different number; this is the norm.)"""

from __future__ import annotations

from typing import ClassVar

import torch

from analysis.importance.base import CRITERIA_REGISTRY, WeightCriterion


@CRITERIA_REGISTRY.register
class L2Importance(WeightCriterion):
    """Filter L2 norm; weight-only (data is ignored)."""

    name: ClassVar[str] = "l2"

    def filter_scores(self, filters: torch.Tensor) -> torch.Tensor:
        return filters.pow(2).sum(dim=1).sqrt()
