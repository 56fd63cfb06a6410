"""The `Dataset` every loader returns (a leaf: loaders in `analysis.data` and `analysis.data.stream` build it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from analysis.model.inputs import InputBatch, InputSpec, num_samples, spec_of

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Evaluation split (`x`, `y`) and the split used for fine-tuning, calibration and data-driven criteria.

    `x` is one tensor for a single-input model, an `InputBatch` (several inputs, indexed together) for a
    model with several. `y` holds one integer label per sample, or is None for unlabelled data (metrics
    then compare with the original model's outputs). `x_train`/`y_train` fall back to the evaluation split
    where a spec has no training split.
    """

    spec: str
    x: torch.Tensor | InputBatch
    y: torch.Tensor | None
    x_train: torch.Tensor | InputBatch
    y_train: torch.Tensor | None
    num_classes: int
    has_train_split: bool = True

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    @property
    def input_shape(self) -> tuple[int, ...] | InputSpec:
        """Shape of one sample, without the batch dimension (an `InputSpec` for several inputs)."""
        if isinstance(self.x, InputBatch):
            return spec_of(self.x)
        return tuple(self.x.shape[1:])

    @property
    def input_spec(self) -> InputSpec:
        """The inputs' names, per-sample shapes and dtypes."""
        if isinstance(self.x, InputBatch):
            return spec_of(self.x)
        return InputSpec.single(tuple(self.x.shape[1:]), self.x.dtype)

    def samples(self, split: str = "test") -> int:
        return num_samples(self.x if split == "test" else self.x_train)

    def batches(
        self, split: str = "test", batch_size: int = 256, limit: int | None = None
    ) -> Iterator[tuple[torch.Tensor | InputBatch, torch.Tensor | None]]:
        """Yield `(x, y)` batches of the `test` (evaluation) or `train` split, in a fixed order (`y` None
        for unlabelled data)."""
        x, y = (self.x, self.y) if split == "test" else (self.x_train, self.y_train)
        n = len(x) if limit is None else min(limit, len(x))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield x[start:stop], None if y is None else y[start:stop]

    def subset(self, n: int) -> Dataset:
        """The first `n` samples of each split: for quick tests and previews."""
        return Dataset(
            self.spec,
            self.x[:n],
            None if self.y is None else self.y[:n],
            self.x_train[:n],
            None if self.y_train is None else self.y_train[:n],
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
