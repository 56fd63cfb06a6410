"""`mean-activation`: the mean of a channel's values after the layer's norm and activation, over calibration
samples and positions (Molchanov et al. 2017 compare it as a baseline criterion). Where no activation
directly follows the norm, the post-norm values are averaged as they are (and can be negative)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from analysis.importance.base import DEFAULT_MAX_SAMPLES, Progress
from analysis.importance.calibration import activation_scores

if TYPE_CHECKING:
    from analysis.data import Dataset


class MeanActivationImportance:
    """Mean post-norm, post-activation value over the train split (capped)."""

    name: ClassVar[str] = "mean-activation"
    data_driven: ClassVar[bool] = True
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
        result = activation_scores(
            model, data, layers, ("mean-activation",), max_samples=max_samples, progress=progress
        )
        return result.scores["mean-activation"]
