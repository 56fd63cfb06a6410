"""The one training loop: a budget of batches (fractions of an epoch allowed), Adam, a constant or cosine
learning-rate schedule with warm-up, an optional penalty added to the loss (the hook sparsity training uses),
distillation from a teacher, a device, and a clean stop. `finetune.finetune` (whole-epoch recovery after a
one-shot plan) and the schedules (a few batches between steps) both run it.

Distillation follows Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network": the
student matches the teacher's softened distribution at temperature T, and the soft term is scaled by T^2
so its gradients keep their size as T changes:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

with the KL divergence averaged over the batch. The teacher is the uncompressed model, in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from analysis.compression.finetune_settings import LR_SCHEDULES, FinetuneSettings
from analysis.data import Dataset
from analysis.errors import WorkbenchError
from analysis.model.inputs import to_device
from analysis.model.layers import call_model
from analysis.model.outputs import flatten_outputs, is_class_scores
from analysis.progress import Progress


def lr_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total: int, warmup: float = 0.0):
    """The learning-rate schedule of one training run of `total` steps: `constant` or `cosine` (to 0 over
    the run), after a linear warm-up from 0 over the first `warmup` fraction of the steps (Goyal et al.
    2017: the first steps after pruning see large gradients; warming up keeps them from undoing what the
    surviving weights knew). None where the rate stays constant."""
    ramp = int(round(warmup * total))
    if ramp <= 0:
        if schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
        return None

    def factor(step: int) -> float:
        if step < ramp:
            return (step + 1) / (ramp + 1)
        if schedule != "cosine":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - ramp) / max(total - ramp, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Hinton et al.'s loss: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy.

    KL is summed over classes and averaged over the batch; cross-entropy is the batch mean, in nats.
    """
    if temperature <= 0:
        raise WorkbenchError(f"temperature must be positive, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise WorkbenchError(f"alpha must be in [0, 1], got {alpha}")
    t = float(temperature)
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits.detach() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, targets)
    return alpha * t * t * soft + (1.0 - alpha) * hard


def label_free_loss(student_out: object, teacher_out: object, temperature: float = 4.0) -> torch.Tensor:
    """Training on unlabelled data: match the teacher's (the original model's) outputs, averaged over
    outputs: T^2 KL of the softened class distributions for class scores (Hinton et al.'s soft term), mean
    squared error for any other output."""
    student, teacher = flatten_outputs(student_out), flatten_outputs(teacher_out)
    t = float(temperature)
    terms = []
    for key, target in teacher.items():
        out = student[key]
        if is_class_scores(target):
            terms.append(
                t * t * F.kl_div(
                    F.log_softmax(out / t, dim=1), F.log_softmax(target.detach() / t, dim=1),
                    reduction="batchmean", log_target=True,
                )
            )  # fmt: skip
        else:
            terms.append(F.mse_loss(out, target.detach()))
    return torch.stack(terms).mean()


def training_loss(
    student: nn.Module, teacher: nn.Module | None, x, y: torch.Tensor | None, settings: FinetuneSettings
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch's training loss and the student's class scores (None for unlabelled data): cross-entropy,
    Hinton's distillation loss with `settings.distill`, or without labels `label_free_loss` against the
    teacher's outputs."""
    out = call_model(student, x)
    if y is None:
        with torch.no_grad():
            teacher_out = call_model(teacher, x)
        return label_free_loss(out, teacher_out, settings.temperature), None
    logits = _single(out)
    if settings.distill:
        with torch.no_grad():
            teacher_logits = _single(call_model(teacher, x))
        return distillation_loss(logits, teacher_logits, y, settings.temperature, settings.alpha), logits
    return F.cross_entropy(logits, y), logits


def _single(out: object) -> torch.Tensor:
    """The class scores of a model with one output (labelled training needs exactly one)."""
    outputs = flatten_outputs(out)
    if len(outputs) != 1:
        raise WorkbenchError(
            f"training with labels needs one (N, classes) output; this model gives {len(outputs)}: give data "
            "without labels ('y') to train it on the original model's outputs"
        )
    return next(iter(outputs.values()))


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
    epoch_losses: list[float] = field(default_factory=list)  # per pass over the training split (full passes)
    epoch_accuracies: list[float] = field(default_factory=list)  # the same, labelled data only


def batches_for(epochs: float, n_samples: int, batch_size: int) -> int:
    """Batches in `epochs` (fractions allowed) over `n_samples` at `batch_size`: round(epochs x per epoch)."""
    per_epoch = (n_samples + batch_size - 1) // batch_size
    return int(round(float(epochs) * per_epoch))


def _checked(lr_schedule: str, settings: FinetuneSettings, data: Dataset, teacher: nn.Module | None) -> None:
    if lr_schedule not in LR_SCHEDULES:
        raise WorkbenchError(f"unknown lr_schedule {lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
    if settings.distill and teacher is None:
        raise WorkbenchError("distillation needs a teacher model (the uncompressed one)")
    if data.y_train is None and teacher is None:
        raise WorkbenchError(
            "the data has no labels: training then learns the original model's outputs, so give it as teacher"
        )


class _Tally:
    """Running sums of one call and of the current pass over the training split."""

    def __init__(self) -> None:
        self.loss = self.penalty = 0.0
        self.correct = self.seen = 0
        self.epoch_loss, self.epoch_correct = 0.0, 0

    def add(self, loss: float, penalty: float, correct: int, n: int) -> None:
        self.loss += loss * n
        self.penalty += penalty * n
        self.correct += correct
        self.seen += n
        self.epoch_loss += loss * n
        self.epoch_correct += correct

    def end_epoch(self, log: TrainLog, n: int, labelled: bool) -> None:
        log.epoch_losses.append(self.epoch_loss / n)
        if labelled:
            log.epoch_accuracies.append(self.epoch_correct / n)
        self.epoch_loss, self.epoch_correct = 0.0, 0


def _step(
    model, teacher, x, y, settings, penalty: Penalty | None, optimizer, scheduler
) -> tuple[float, float, int]:
    """One optimizer step: (loss, penalty, correct predictions)."""
    loss, logits = training_loss(model, teacher, x, y, settings)
    extra = 0.0
    if penalty is not None:
        added = penalty(model)
        extra = float(added.detach())
        loss = loss + added
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    correct = int((logits.argmax(dim=1) == y).sum()) if logits is not None else 0
    return loss.item(), extra, correct


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
    device: torch.device | None = None,
) -> TrainLog:
    """Train `model` IN PLACE for `batches` Adam steps over shuffled training batches (epoch after epoch).

    Loss: cross-entropy, or Hinton's distillation loss when `settings.distill` (then `teacher` is required,
    run in eval mode without gradients), plus `penalty(model)` where given (the hook sparsity training
    adds a regularizer through). `device`: where the model (and teacher) already are; each batch is moved
    there. `torch.nn.utils.prune` masks stay in force. The model comes back in eval mode; the caller's RNG
    state is left alone.
    """
    _checked(lr_schedule, settings, data, teacher)
    log = TrainLog()
    n = len(data.x_train)
    if batches <= 0 or n == 0:
        return log
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=settings.lr)
    scheduler = lr_scheduler(optimizer, lr_schedule, batches, settings.warmup)
    generator = torch.Generator().manual_seed(settings.seed + seed)
    teacher_mode = teacher.training if teacher is not None else False
    tally = _Tally()
    order, cursor = torch.randperm(n, generator=generator), 0
    try:
        if teacher is not None:
            teacher.eval()
        model.train()
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed + seed)  # dropout and the like, without touching the caller's RNG
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
                if device is not None:
                    x = to_device(x, device)
                    y = None if y is None else y.to(device, non_blocking=True)
                loss, extra, correct = _step(model, teacher, x, y, settings, penalty, optimizer, scheduler)
                tally.add(loss, extra, correct, len(x))
                log.losses.append(loss)
                log.batches = step + 1
                if cursor >= n:
                    tally.end_epoch(log, n, data.y_train is not None)
                if progress:
                    progress(step + 1, batches)
    finally:
        model.eval()
        if teacher is not None:
            teacher.train(teacher_mode)
    if tally.seen:
        log.loss, log.penalty = tally.loss / tally.seen, tally.penalty / tally.seen
        log.accuracy = tally.correct / tally.seen if data.y_train is not None else float("nan")
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
