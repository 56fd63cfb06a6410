"""Recovery training after compression: fine-tuning, optionally with knowledge distillation.

Distillation follows Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network": the
student matches the teacher's softened distribution at temperature T, and the soft term is scaled by T^2
so its gradients keep their size as T changes:

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

with the KL divergence averaged over the batch. The teacher is the uncompressed model, in eval mode.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from analysis.compression.finetune_settings import LR_SCHEDULES, FinetuneSettings
from analysis.data import Dataset
from analysis.devices import on_device, resolve_device
from analysis.errors import WorkbenchError
from analysis.model.inputs import to_device
from analysis.model.layers import call_model, copy_model
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


@dataclass(frozen=True)
class FinetuneResult:
    """The trained model, and per epoch the mean training loss (nats) and training accuracy in [0, 1]
    (empty for unlabelled data, where the loss is the distance from the teacher's outputs)."""

    model: nn.Module = field(repr=False)
    epochs: int
    distilled: bool
    losses: list[float]
    train_accuracy: list[float]
    seconds: float
    settings: FinetuneSettings

    def to_dict(self) -> dict:
        return {
            "epochs": self.epochs,
            "distilled": self.distilled,
            "losses": self.losses,
            "train_accuracy": self.train_accuracy,
            "seconds": self.seconds,
            "settings": self.settings.to_dict(),
        }


def finetune(
    model: nn.Module,
    data: Dataset,
    settings: FinetuneSettings | None = None,
    teacher: nn.Module | None = None,
    progress: Progress | None = None,
    inplace: bool = False,
    lr_schedule: str = "constant",
    device: str | torch.device | None = None,
) -> FinetuneResult:
    """Train `model` for `settings.epochs` epochs over `data`'s training split with Adam.

    With `settings.distill`, `teacher` (required) supplies soft targets; it is only run, in eval mode,
    without gradients, and is handed back in the mode it came in. The model is copied first unless
    `inplace` (for callers that own it); `torch.nn.utils.prune` masks on it stay in force throughout, so
    pruned weights stay zero. The model comes back in eval mode. `progress(done, total)` counts batches.
    `lr_schedule`: `constant`, or `cosine` (the rate decays from `settings.lr` to 0 over all batches).
    `device` (auto, cpu, cuda[:N]) trains a private copy there (the teacher too) and brings the weights
    back: the result's model is on the model's own device (with `inplace`, `model` gets the new weights).
    """
    # Long: one training loop with its device, schedule and teacher set-up and restore around it.
    if lr_schedule not in LR_SCHEDULES:
        raise WorkbenchError(f"unknown lr_schedule {lr_schedule!r}: use one of {', '.join(LR_SCHEDULES)}")
    settings = settings or FinetuneSettings()
    if settings.distill and teacher is None:
        raise WorkbenchError("distillation needs a teacher model (the uncompressed one)")
    labelled = data.y_train is not None
    if not labelled and teacher is None:
        raise WorkbenchError(
            "the data has no labels: fine-tuning then learns the original model's outputs, so give it as teacher"
        )
    if len(data.x_train) == 0:
        raise WorkbenchError("the data has no training samples to fine-tune on")
    home = next((p.device for p in model.parameters()), torch.device("cpu"))
    dev = None if device is None else resolve_device(device)
    if dev is not None and dev == home:
        dev = None  # already there: the usual path
    if dev is not None:
        student = on_device(model, dev)
        teacher = None if teacher is None else on_device(teacher, dev)
    else:
        student = model if inplace else copy_model(model)
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise WorkbenchError("the model has no trainable parameters to fine-tune")
    start = time.perf_counter()
    n = len(data.x_train)
    batch = settings.batch_size
    steps_per_epoch = (n + batch - 1) // batch
    total = settings.epochs * steps_per_epoch
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    scheduler = lr_scheduler(optimizer, lr_schedule, total, settings.warmup)
    generator = torch.Generator().manual_seed(settings.seed)
    teacher_mode = teacher.training if teacher is not None else False
    losses: list[float] = []
    accuracies: list[float] = []
    done = 0
    try:
        if teacher is not None:
            teacher.eval()
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)  # dropout and the like, without touching the caller's RNG
            for _ in range(settings.epochs):
                student.train()
                order = torch.randperm(n, generator=generator)
                loss_sum, correct = 0.0, 0
                for begin in range(0, n, batch):
                    idx = order[begin : begin + batch]
                    x = data.x_train[idx]
                    y = data.y_train[idx] if labelled else None
                    if dev is not None:
                        x = to_device(x, dev)
                        y = None if y is None else y.to(dev, non_blocking=True)
                    loss, logits = training_loss(student, teacher, x, y, settings)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    loss_sum += loss.item() * len(x)
                    if logits is not None:
                        correct += int((logits.argmax(dim=1) == y).sum())
                    done += 1
                    if progress:
                        progress(done, total)
                losses.append(loss_sum / n)
                if labelled:
                    accuracies.append(correct / n)
    finally:
        student.eval()
        if teacher is not None:
            teacher.train(teacher_mode)
    if dev is not None:
        student = student.to(home)
        if inplace:
            model.load_state_dict(student.state_dict())
            student = model.eval()
    return FinetuneResult(
        model=student,
        epochs=settings.epochs,
        distilled=settings.distill,
        losses=losses,
        train_accuracy=accuracies,
        seconds=time.perf_counter() - start,
        settings=settings,
    )


__all__ = ["FinetuneResult", "distillation_loss", "finetune", "label_free_loss", "training_loss"]
