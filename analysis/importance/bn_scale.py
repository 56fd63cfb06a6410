"""`bn-scale`: |gamma| of the norm that follows the layer (Liu et al. 2017, "Network Slimming").

The following norm is found from the fx-traced graph (`features.py`), not module order. A layer with no
following norm module that has one affine weight per channel (no norm, a functional norm, a non-affine
norm, a LayerNorm over more than the channels) gets NaN for every channel: there is no gamma to read, and
a made-up number would be ranked as if it meant something. Callers that prune by `bn-scale` must refuse
such layers (`analysis.importance.has_nan_scores`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from analysis.importance.base import CRITERIA_REGISTRY, Criterion
from analysis.importance.features import find_features


def norm_gamma(model: nn.Module, norm_module: str | None, channels: int) -> torch.Tensor | None:
    """The norm's per-channel scale (detached copy), or None where there is no such parameter."""
    if norm_module is None:
        return None
    weight = getattr(model.get_submodule(norm_module), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.numel() != channels:
        return None
    return weight.detach().float().flatten().clone()


@CRITERIA_REGISTRY.register
class BNScaleImportance(Criterion):
    """|gamma| of the following norm; NaN for layers without one. Weight-only (data is ignored)."""

    name: ClassVar[str] = "bn-scale"
    may_be_nan: ClassVar[bool] = True
    nan_note: ClassVar[str] = "is NaN for layers without a following per-channel norm"

    def scores(self, model, data, layers, max_samples, context) -> dict[str, torch.Tensor]:
        features = context.features or find_features(model, None if layers is None else list(layers))
        result: dict[str, torch.Tensor] = {}
        for i, (name, lf) in enumerate(features.layers.items()):
            gamma = norm_gamma(model, lf.norm_module, lf.channels)
            result[name] = gamma.abs() if gamma is not None else torch.full((lf.channels,), float("nan"))
            context.report(i + 1, len(features.layers))
        return result
