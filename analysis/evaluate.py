"""Top-1 accuracy and mean cross-entropy over a data split."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from analysis.concurrency import eval_view
from analysis.data import Dataset
from analysis.data.checks import check_batch_size, check_finite_result, check_labels_tensor
from analysis.errors import WorkbenchError
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
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> EvalResult:
    """Accuracy and loss of `model` on `data`'s evaluation split (or `train`), under inference mode.

    The model is run in eval mode and never changed (a model in training mode is copied first). `device`
    (auto, cpu, cuda[:N]) and `dtype` (float16, bfloat16) evaluate a private copy there instead; the loss
    is computed in float32. Raises WorkbenchError for a batch size below 1, no samples, labels outside the
    model's outputs, or a non-finite loss.
    """
    check_batch_size(batch_size)
    if limit is not None and limit < 1:
        raise WorkbenchError(f"limit must be at least 1 sample, got {limit}")
    dev, cast = None, None
    if device is not None or dtype is not None:
        from analysis.devices import on_device, parse_dtype, resolve_device

        dev, cast = resolve_device(device or "cpu"), parse_dtype(dtype)
        model = on_device(model, dev, cast).eval()
    else:
        model = eval_view(model)
    correct, loss_sum, seen = 0, 0.0, 0
    total = len(data.x if split == "test" else data.x_train) if limit is None else limit
    with torch.inference_mode():
        for x, y in data.batches(split, batch_size, limit):
            if dev is not None:
                from analysis.devices import to_inputs

                x, y = to_inputs(x, dev, cast), y.to(dev)
            logits = model(x).float()
            if logits.ndim == 2:
                check_labels_tensor(y, logits.shape[1])
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(dim=1) == y).sum().item()
            seen += len(y)
            if progress:
                progress(seen, total)
    if seen == 0:
        raise WorkbenchError(f"the {split} split has no samples: give a data set with at least one")
    result = EvalResult(correct / seen, loss_sum / seen, seen)
    check_finite_result(result.to_dict(), what="evaluation")
    return result
