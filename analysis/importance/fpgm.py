"""`fpgm`: distance of each filter to the geometric median of the layer's filters (He et al. 2019, "Filter
Pruning via Geometric Median").

Computed, as in the authors' code, by the usual approximation: a filter's score is the sum of its Euclidean
distances to all the layer's other filters. The filters with the smallest sums are those nearest the
geometric median, i.e. the most replaceable, and are pruned first. Torch-Pruning's FPGMImportance is not
used because it measures distances between |w|^p rather than between the filters w themselves, which
makes two filters of opposite sign look identical.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from analysis.importance.base import CRITERIA_REGISTRY, WeightCriterion


def sum_of_distances(w: torch.Tensor) -> torch.Tensor:
    """For a C x D filter matrix, each row's summed Euclidean distance to all rows (float64 inside)."""
    w = w.double()
    return torch.cdist(w.unsqueeze(0), w.unsqueeze(0), p=2).squeeze(0).sum(dim=1)


@CRITERIA_REGISTRY.register
class FPGMImportance(WeightCriterion):
    """Summed distance to the layer's other filters (geometric-median approximation); weight-only."""

    name: ClassVar[str] = "fpgm"

    def filter_scores(self, filters: torch.Tensor) -> torch.Tensor:
        return sum_of_distances(filters)
