"""A model's score in a metric (top-1 accuracy by default for labelled classifiers) and its mean loss over
a data split (`analysis.metrics` says how outputs are scored)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from analysis.concurrency import eval_view
from analysis.data import Dataset
from analysis.data.checks import check_batch_size, check_finite_result, check_labels_tensor
from analysis.errors import WorkbenchError
from analysis.metrics import ACCURACY, MetricInfo, Scoring, scoring
from analysis.model.inputs import num_samples
from analysis.model.layers import call_model
from analysis.model.outputs import flatten_outputs
from analysis.progress import Progress


@dataclass(frozen=True)
class EvalResult:
    """The score in `metric` (`accuracy`: top-1 in [0, 1], the default), the mean loss (nats for
    cross-entropy), and how many samples were seen. The first field keeps its historical name: it holds
    the score whatever the metric (`score` is the same number)."""

    accuracy: float
    loss: float
    samples: int
    metric: MetricInfo = ACCURACY

    @property
    def score(self) -> float:
        return self.accuracy

    def to_dict(self) -> dict:
        """`{accuracy, loss, samples}` for accuracy (as always); other metrics put the score under their own
        name (`psnr`); both add `metric: {name, direction, value}`."""
        return {
            self.metric.name: self.accuracy,
            "loss": self.loss,
            "samples": self.samples,
            "metric": self.metric.to_dict(self.accuracy),
        }


def evaluate(
    model: nn.Module,
    data: Dataset,
    split: str = "test",
    batch_size: int = 256,
    limit: int | None = None,
    progress: Progress | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    metric: str | Scoring = "auto",
) -> EvalResult:
    """`model`'s score in `metric` and its mean loss on `data`'s evaluation split (or `train`), under
    inference mode.

    `metric`: a name (`auto`, `accuracy`, `psnr`, ... or `module:callable`, resolved against `model` itself,
    so a fidelity metric scores it perfect) or a `Scoring` built on the ORIGINAL model, which is how a
    compressed model is compared with it. The model is run in eval mode and never changed (a model in
    training mode is copied first). `device` (auto, cpu, cuda[:N]) and `dtype` (float16, bfloat16)
    evaluate a private copy there instead; scores and losses are computed in float32. Raises
    WorkbenchError for a batch size below 1, no samples, labels outside the model's outputs, or a
    non-finite loss.
    """
    check_batch_size(batch_size)
    if limit is not None and limit < 1:
        raise WorkbenchError(f"limit must be at least 1 sample, got {limit}")
    dev, cast = None, None
    if device is not None or dtype is not None:
        from analysis.devices import parse_dtype, resolve_device

        dev, cast = resolve_device(device or "cpu"), parse_dtype(dtype)  # a missing GPU: one line, first
    score = scoring(metric, model, data)
    reference = score.reference(split, limit, batch_size)
    if dev is not None:
        from analysis.devices import on_device

        model = on_device(model, dev, cast).eval()
    else:
        model = eval_view(model)
    tally = score.tally()
    seen = 0
    total = num_samples(data.x if split == "test" else data.x_train) if limit is None else limit
    with torch.inference_mode():
        for x, y in data.batches(split, batch_size, limit):
            if dev is not None:
                from analysis.model.inputs import to_device

                x, y = to_device(x, dev, cast), None if y is None else y.to(dev)
            out = call_model(model, x)
            n = num_samples(x)
            if score.uses_labels:
                (logits,) = flatten_outputs(out).values()
                check_labels_tensor(y, logits.shape[1])
            tally.update(out, y, None if reference is None else reference.slice(seen, seen + n))
            seen += n
            if progress:
                progress(seen, total)
    if seen == 0:
        raise WorkbenchError(f"the {split} split has no samples: give a data set with at least one")
    result = EvalResult(tally.value(), tally.loss, seen, score.info)
    check_finite_result({score.name: result.accuracy, "loss": result.loss}, what="evaluation")
    return result
