"""`taylor`: first-order Taylor estimate of the loss change from removing a channel (Molchanov et al. 2017,
"Pruning Convolutional Neural Networks for Resource Efficient Inference"): per sample,
|sum over positions of a x dL/da| with a the channel's feature map after the layer's norm and L that sample's
cross-entropy, averaged over samples. Computed with captum's LayerGradientXActivation in the shared
calibration pass (see `calibration.py`). Molchanov et al. average over positions and then L2-normalise per
layer; this sums over positions (docs/contract.md section 5) and leaves the numbers unnormalised: the ranking within
a layer is the same."""

from __future__ import annotations

from typing import ClassVar

import torch

from analysis.importance.base import CRITERIA_REGISTRY, ActivationCriterion


@CRITERIA_REGISTRY.register
class TaylorImportance(ActivationCriterion):
    """Mean over samples of |sum over positions of activation x gradient|, after the norm."""

    name: ClassVar[str] = "taylor"
    needs: ClassVar[tuple[str, ...]] = ("taylor",)

    def from_statistics(self, statistics: dict[str, torch.Tensor], samples: int) -> torch.Tensor:
        return statistics["taylor"] / samples
