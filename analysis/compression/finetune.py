"""Recovery training after compression: `finetune` trains a copy of the model for whole epochs (optionally
distilling from the uncompressed model) through the one training loop, `training.train`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from analysis.compression.finetune_settings import FinetuneSettings
from analysis.compression.training import train
from analysis.data import Dataset
from analysis.devices import on_device, resolve_device
from analysis.errors import WorkbenchError
from analysis.model.layers import copy_model
from analysis.progress import Progress


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
    settings = settings or FinetuneSettings()
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
    if not any(p.requires_grad for p in student.parameters()):
        raise WorkbenchError("the model has no trainable parameters to fine-tune")
    start = time.perf_counter()
    steps_per_epoch = math.ceil(len(data.x_train) / settings.batch_size)
    log = train(student, data, settings.epochs * steps_per_epoch, settings, teacher=teacher,
                lr_schedule=lr_schedule, progress=progress, device=dev)  # fmt: skip
    if dev is not None:
        student = student.to(home)
        if inplace:
            model.load_state_dict(student.state_dict())
            student = model.eval()
    return FinetuneResult(
        model=student,
        epochs=settings.epochs,
        distilled=settings.distill,
        losses=log.epoch_losses,
        train_accuracy=log.epoch_accuracies,
        seconds=time.perf_counter() - start,
        settings=settings,
    )


__all__ = ["FinetuneResult", "finetune"]
