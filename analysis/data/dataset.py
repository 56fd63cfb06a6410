"""The `Dataset` every loader returns (a leaf: loaders in `analysis.data` and `analysis.data.stream` build it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Evaluation split (`x`, `y`) and the split used for fine-tuning, calibration and data-driven criteria.

    `x_train`/`y_train` fall back to the evaluation split where a spec has no training split.
    """

    spec: str
    x: torch.Tensor
    y: torch.Tensor
    x_train: torch.Tensor
    y_train: torch.Tensor
    num_classes: int
    has_train_split: bool = True

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        return tuple(self.x.shape[1:])

    def batches(
        self, split: str = "test", batch_size: int = 256, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield `(x, y)` batches of the `test` (evaluation) or `train` split, in a fixed order."""
        x, y = (self.x, self.y) if split == "test" else (self.x_train, self.y_train)
        n = len(x) if limit is None else min(limit, len(x))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield x[start:stop], y[start:stop]

    def subset(self, n: int) -> Dataset:
        """The first `n` samples of each split: for quick tests and previews."""
        return Dataset(
            self.spec,
            self.x[:n],
            self.y[:n],
            self.x_train[:n],
            self.y_train[:n],
            self.num_classes,
            self.has_train_split,
        )


def resize_images(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Resize N x C x H x W images to `shape` (C, H, W), repeating or averaging channels."""
    c, h, w = shape
    if x.shape[2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    if x.shape[1] != c:
        x = x.mean(dim=1, keepdim=True).expand(-1, c, -1, -1).contiguous()
    return x
