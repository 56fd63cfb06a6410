"""`mean-activation`: the mean of a channel's values after the layer's norm and activation, over calibration
samples and positions (Molchanov et al. 2017 compare it as a baseline criterion). Where no activation
directly follows the norm, the post-norm values are averaged as they are (and can be negative)."""

from __future__ import annotations

from typing import ClassVar

from analysis.importance.base import ActivationCriterion


class MeanActivationImportance(ActivationCriterion):
    """Mean post-norm, post-activation value over the train split (capped)."""

    name: ClassVar[str] = "mean-activation"
