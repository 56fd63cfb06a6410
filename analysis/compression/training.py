"""The training loop the schedules share: a budget of batches (fractions of an epoch allowed), an optional
penalty added to the loss (sparsity training), distillation from a teacher, a cosine learning-rate schedule,
and a clean stop. `analysis.finetune.finetune` is the whole-epoch recovery the one-shot plans use; this loop
exists because schedules fine-tune a few batches between steps and add a regularizer to the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from analysis.compression.finetune import LR_SCHEDULES, lr_scheduler, training_loss
from analysis.compression.finetune_settings import FinetuneSettings
from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.progress import Progress

Penalty = Callable[[nn.Module], torch.Tensor]


@dataclass
class TrainLog:
    """What one call trained: batches run, mean loss (nats, penalty included) and training accuracy in
    [0, 1] over them, and whether `should_stop` cut it short."""

    batches: int = 0
    loss: float = float("nan")
    accuracy: float = float("nan")
    penalty: float = 0.0
    stopped: bool = False
    losses: list[float] = field(default_factory=list)


def batches_for(epochs: float, n_samples: int, batch_size: int) -> int:
    """Batches in `epochs` (fractions allowed) over `n_samples` at `batch_size`: round(epochs x per epoch)."""
    per_epoch = (n_samples + batch_size - 1) // batch_size
    return int(round(float(epochs) * per_epoch))


def train(
    model: nn.Module,
    data: Dataset,
    batches: int,
    settings: FinetuneSettings,
    *,
    teacher: nn.Module | None = None,
    penalty: Penalty | None = None,
    lr_schedule: str = "cosine",
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainLog:
    """Train `model` IN PLACE for `batches` Adam steps over shuffled training batches (epoch after epoch).

    Loss: cross-entropy, or Hinton's distillation loss when `settings.distill` (then `teacher` is required,
    run in eval mode without gradients), plus `penalty(model)` where given. `torch.nn.utils.prune` masks
    stay in force. The model comes back in eval mode; the caller's RNG state is left alone.
    """
    # Long mostly by its signature and docstring; the body is one training loop.
    if lr_schedule not in LR_SCHEDULES:
        raise WorkbenchError(f"unknown lr_schedule {lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
    if settings.distill and teacher is None:
        raise WorkbenchError("distillation needs a teacher model (the uncompressed one)")
    if data.y_train is None and teacher is None:
        raise WorkbenchError(
            "the data has no labels: training then learns the original model's outputs (a teacher)"
        )
    log = TrainLog()
    n = len(data.x_train)
    if batches <= 0 or n == 0:
        return log
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    scheduler = lr_scheduler(optimizer, lr_schedule, batches, settings.warmup)
    generator = torch.Generator().manual_seed(settings.seed + seed)
    teacher_mode = teacher.training if teacher is not None else False
    loss_sum, penalty_sum, correct, seen = 0.0, 0.0, 0, 0
    order, cursor = torch.randperm(n, generator=generator), 0
    try:
        if teacher is not None:
            teacher.eval()
        model.train()
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed + seed)
            for step in range(batches):
                if should_stop is not None and should_stop():
                    log.stopped = True
                    break
                if cursor >= n:
                    order, cursor = torch.randperm(n, generator=generator), 0
                idx = order[cursor : cursor + settings.batch_size]
                cursor += settings.batch_size
                x = data.x_train[idx]
                y = None if data.y_train is None else data.y_train[idx]
                loss, logits = training_loss(model, teacher, x, y, settings)
                if penalty is not None:
                    extra = penalty(model)
                    penalty_sum += float(extra.detach()) * len(x)
                    loss = loss + extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                loss_sum += loss.item() * len(x)
                log.losses.append(loss.item())
                if logits is not None:
                    correct += int((logits.argmax(dim=1) == y).sum())
                seen += len(x)
                log.batches = step + 1
                if progress:
                    progress(step + 1, batches)
    finally:
        model.eval()
        if teacher is not None:
            teacher.train(teacher_mode)
    if seen:
        log.loss, log.penalty = loss_sum / seen, penalty_sum / seen
        log.accuracy = correct / seen if data.y_train is not None else float("nan")
    return log


BN_RECALIBRATION_SAMPLES = 512


def recalibrate_bn(
    model: nn.Module, data: Dataset, samples: int = BN_RECALIBRATION_SAMPLES, batch_size: int = 64
) -> bool:
    """Re-estimate every BatchNorm's running mean and variance IN PLACE from `samples` training samples
    (a cumulative average over forward passes, no gradient; everything else stays in eval mode). After
    channels are removed, the statistics the next layers' norms kept no longer describe their inputs; fresh
    ones recover much of the accuracy before any training (Li et al. 2020, "EagleEye", adaptive BN).
    Returns whether the model had a BatchNorm."""
    norms = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms or len(data.x_train) == 0:
        return False
    momenta = [m.momentum for m in norms]
    # A seeded sample of the split (a file sorted by class would otherwise give one class's statistics).
    n = min(samples, len(data.x_train))
    chosen = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))[:n]
    model.eval()
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch weighs the same
            m.train()
        with torch.no_grad():
            for start in range(0, n, batch_size):
                model(data.x_train[chosen[start : start + batch_size]])
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return True


__all__ = ["BN_RECALIBRATION_SAMPLES", "Penalty", "TrainLog", "batches_for", "recalibrate_bn", "train"]
