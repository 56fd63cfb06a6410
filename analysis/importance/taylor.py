"""`taylor`: first-order Taylor estimate of the loss change from removing a channel (Molchanov et al. 2017,
"Pruning Convolutional Neural Networks for Resource Efficient Inference"): per sample,
|sum over positions of a x dL/da| with a the channel's feature map after the layer's norm and L that sample's
cross-entropy, averaged over samples. Computed with captum's LayerGradientXActivation in the shared
calibration pass (see `calibration.py`). Molchanov et al. average over positions and then L2-normalise per
layer; this sums over positions (CONTRACT section 5) and leaves the numbers unnormalised: the ranking within
a layer is the same."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from analysis.importance.base import DEFAULT_MAX_SAMPLES, Progress
from analysis.importance.calibration import activation_scores

if TYPE_CHECKING:
    from analysis.data import Dataset


class TaylorImportance:
    """Mean over samples of |sum over positions of activation x gradient|, after the norm."""

    name: ClassVar[str] = "taylor"
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
            model, data, layers, ("taylor",), max_samples=max_samples, progress=progress
        )
        return result.scores["taylor"]
