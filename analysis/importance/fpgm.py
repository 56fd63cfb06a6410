"""`fpgm`: distance of each filter to the geometric median of the layer's filters (He et al. 2019, "Filter
Pruning via Geometric Median").

Computed, as in the authors' code, by the usual approximation: a filter's score is the sum of its Euclidean
distances to all the layer's other filters. The filters with the smallest sums are those nearest the
geometric median, i.e. the most replaceable, and are pruned first. Torch-Pruning's FPGMImportance is not
used because it measures distances between |w|^p rather than between the filters w themselves, which
makes two filters of opposite sign look identical.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from analysis.importance.base import DEFAULT_MAX_SAMPLES, Progress, weight_scores

if TYPE_CHECKING:
    from analysis.data import Dataset


def sum_of_distances(w: torch.Tensor) -> torch.Tensor:
    """For a C x D filter matrix, each row's summed Euclidean distance to all rows (float64 inside)."""
    w = w.double()
    return torch.cdist(w.unsqueeze(0), w.unsqueeze(0), p=2).squeeze(0).sum(dim=1)


class FPGMImportance:
    """Summed distance to the layer's other filters (geometric-median approximation); weight-only."""

    name: ClassVar[str] = "fpgm"
    data_driven: ClassVar[bool] = False
    higher_is_important: ClassVar[bool] = True

    def __call__(
        self,
        model: nn.Module,
        data: Dataset | None = None,
        layers: Iterable[str] | None = None,
        *,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        return weight_scores(model, layers, sum_of_distances, progress)
