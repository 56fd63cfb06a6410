"""`l1`: the L1 norm of each output channel's filter, sum |w| (Li et al. 2017, "Pruning Filters for
Efficient ConvNets"). Equal to Torch-Pruning's MagnitudeImportance(p=1, normalizer=None,
group_reduction="first") on the layer's own group, without needing a traced dependency graph."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from analysis.importance.base import DEFAULT_MAX_SAMPLES, Progress, weight_scores

if TYPE_CHECKING:
    from analysis.data import Dataset


class L1Importance:
    """Filter L1 norm; weight-only (data is ignored)."""

    name: ClassVar[str] = "l1"
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
        return weight_scores(model, layers, lambda w: w.abs().sum(dim=1), progress)
