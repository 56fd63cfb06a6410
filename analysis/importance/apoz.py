"""`apoz`: average percentage of zeros (Hu et al. 2016, "Network Trimming"), as a fraction in [0, 1].

The fraction of a channel's values, over calibration samples and positions, that are exactly zero after
the layer's norm and activation (found from the traced graph: `nn.ReLU`, `torch.relu`, `F.relu` and
`x.relu()` alike). Reported raw, so here LOWER means more important (`higher_is_important = False`):
pruning removes the highest. Where no activation directly follows (a conv whose BN feeds a residual add),
it is measured on the post-norm map and is then close to 0 everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from analysis.importance.base import DEFAULT_MAX_SAMPLES, Progress
from analysis.importance.calibration import activation_scores

if TYPE_CHECKING:
    from analysis.data import Dataset


class APoZImportance:
    """Fraction of zeros after norm + activation, over the train split (capped); higher = prune first."""

    name: ClassVar[str] = "apoz"
    data_driven: ClassVar[bool] = True
    higher_is_important: ClassVar[bool] = False

    def __call__(
        self,
        model: nn.Module,
        data: Dataset | None = None,
        layers: Iterable[str] | None = None,
        *,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        progress: Progress | None = None,
    ) -> dict[str, torch.Tensor]:
        result = activation_scores(model, data, layers, ("apoz",), max_samples=max_samples, progress=progress)
        return result.scores["apoz"]
