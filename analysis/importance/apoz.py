"""`apoz`: average percentage of zeros (Hu et al. 2016, "Network Trimming"), as a fraction in [0, 1].

The fraction of a channel's values, over calibration samples and positions, that are exactly zero after
the layer's norm and activation (found from the traced graph: `nn.ReLU`, `torch.relu`, `F.relu` and
`x.relu()` alike). Reported raw, so here LOWER means more important (`higher_is_important = False`):
pruning removes the highest. Where no activation directly follows (a conv whose BN feeds a residual add),
it is measured on the post-norm map and is then close to 0 everywhere."""

from __future__ import annotations

from typing import ClassVar

import torch

from analysis.importance.base import CRITERIA_REGISTRY, ActivationCriterion


@CRITERIA_REGISTRY.register
class APoZImportance(ActivationCriterion):
    """Fraction of zeros after norm + activation, over the train split (capped); higher = prune first."""

    name: ClassVar[str] = "apoz"
    higher_is_important: ClassVar[bool] = False
    needs: ClassVar[tuple[str, ...]] = ("zeros", "values")

    def from_statistics(self, statistics: dict[str, torch.Tensor], samples: int) -> torch.Tensor:
        return statistics["zeros"] / statistics["values"].clamp(min=1)
