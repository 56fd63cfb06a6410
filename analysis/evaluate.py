"""Top-1 accuracy and mean cross-entropy over a data split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from analysis.data import Dataset
from analysis.progress import Progress


@dataclass(frozen=True)
class EvalResult:
    """Top-1 accuracy in [0, 1], mean cross-entropy loss (nats), and how many samples were seen."""

    accuracy: float
    loss: float
    samples: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def evaluate(
    model: nn.Module,
    data: Dataset,
    split: str = "test",
    batch_size: int = 256,
    limit: int | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Accuracy and loss of `model` on `data`'s evaluation split (or `train`), under inference mode.

    The model is put in eval mode and handed back in the mode it came in.
    """
    was_training = model.training
    model.eval()
    correct, loss_sum, seen = 0, 0.0, 0
    total = len(data.x if split == "test" else data.x_train) if limit is None else limit
    try:
        with torch.inference_mode():
            for x, y in data.batches(split, batch_size, limit):
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(dim=1) == y).sum().item()
                seen += len(y)
                if progress:
                    progress(seen, total)
    finally:
        model.train(was_training)
    if seen == 0:
        return EvalResult(float("nan"), float("nan"), 0)
    return EvalResult(correct / seen, loss_sum / seen, seen)
