"""`mean-activation`: the mean of a channel's values after the layer's norm and activation, over calibration
samples and positions (Molchanov et al. 2017 compare it as a baseline criterion). Where no activation
directly follows the norm, the post-norm values are averaged as they are (and can be negative)."""

from __future__ import annotations

from typing import ClassVar

import torch

from analysis.importance.base import CRITERIA_REGISTRY, ActivationCriterion


@CRITERIA_REGISTRY.register
class MeanActivationImportance(ActivationCriterion):
    """Mean post-norm, post-activation value over the train split (capped)."""

    name: ClassVar[str] = "mean-activation"
    needs: ClassVar[tuple[str, ...]] = ("sums", "values")

    def from_statistics(self, statistics: dict[str, torch.Tensor], samples: int) -> torch.Tensor:
        return statistics["sums"] / statistics["values"].clamp(min=1)
