"""`l2`: the L2 norm of each output channel's filter, sqrt(sum w^2). (Torch-Pruning's MagnitudeImportance
with p=2 returns the squared norm, sum w^2: the same ranking, a different number; this is the norm.)"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from analysis.importance.base import DEFAULT_MAX_SAMPLES, Progress, weight_scores

if TYPE_CHECKING:
    from analysis.data import Dataset


class L2Importance:
    """Filter L2 norm; weight-only (data is ignored)."""

    name: ClassVar[str] = "l2"
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
        return weight_scores(model, layers, lambda w: w.pow(2).sum(dim=1).sqrt(), progress)
