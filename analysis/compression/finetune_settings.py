"""Fine-tuning settings of a plan (`finetune`, docs/contract.md section 4): a leaf module, so the plan, the
training loops and the schedules can all import it without importing each other."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from analysis import validate

MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65536
FINETUNE_KEYS = (
    "epochs",
    "distill",
    "temperature",
    "alpha",
    "lr",
    "batch_size",
    "seed",
    "lr_schedule",
    "recipe",
    "warmup",
)
LR_SCHEDULES = ("constant", "cosine")
RECIPES = ("default", "recovery")
# The recovery recipe (analysis.compression.schedules.recovery_finetune; measured, README).
RECOVERY_LR = (
    3e-3  # measured: 1e-3 left a residual net 2.2 points down after 9 epochs at 50% filters, 3e-3 0.6
)
RECOVERY_LR_SCHEDULE = "cosine"
RECOVERY_WARMUP = 0.1  # fraction of the steps with a linear learning-rate warm-up (measured: README)


@dataclass(frozen=True)
class FinetuneSettings:
    """Recovery training after pruning: `epochs` over the training split (0 = none), optionally distilling
    from the uncompressed model (Hinton et al. 2015: `temperature` T, weight `alpha` on the soft targets,
    soft loss scaled by T^2). Adam with learning rate `lr`, `lr_schedule` after a linear warm-up over the
    first `warmup` fraction of the steps (0 = none); shuffling seeded by `seed`."""

    epochs: int = 0
    distill: bool = False
    temperature: float = 4.0
    alpha: float = 0.5
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0
    lr_schedule: str = "constant"
    recipe: str = "default"
    warmup: float = 0.0

    def __post_init__(self) -> None:
        def whole(name: str, minimum: int, maximum: int | None = None) -> None:
            value = validate.whole(getattr(self, name), f"finetune: {name}", minimum, maximum)
            object.__setattr__(self, name, value)

        def number(name: str, low: float, high: float, low_open: bool) -> None:
            value = validate.in_range(getattr(self, name), f"finetune: {name}", low, high, low_open)
            object.__setattr__(self, name, value)

        # Upper bounds: a typo such as 1e12 epochs would otherwise run until the machine is switched off.
        whole("epochs", 0, MAX_EPOCHS)
        whole("batch_size", 1, MAX_BATCH_SIZE)
        whole("seed", 0, 2**63 - 1)
        number("temperature", 0.0, 1e6, True)
        number("alpha", 0.0, 1.0, False)
        number("lr", 0.0, 10.0, True)
        number("warmup", 0.0, 0.5, False)
        validate.flag(self.distill, "finetune: distill")
        object.__setattr__(
            self, "lr_schedule", validate.choice(self.lr_schedule, LR_SCHEDULES, "lr_schedule", "finetune")
        )
        object.__setattr__(self, "recipe", validate.choice(self.recipe, RECIPES, "recipe", "finetune"))

    @property
    def recovers(self) -> bool:
        """Whether the plan asks for the recovery recipe."""
        return self.recipe == "recovery"

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in FINETUNE_KEYS}


RECOVERY_BATCHES = 400  # optimizer steps the recovery aims for, whatever the data size (measured, README)
RECOVERY_MIN_EPOCHS, RECOVERY_MAX_EPOCHS = 3, 30


def recovery_epochs(n_train: int, batch_size: int = 32) -> int:
    """Epochs of recovery for `n_train` training samples: about `RECOVERY_BATCHES` optimizer steps, between
    `RECOVERY_MIN_EPOCHS` and `RECOVERY_MAX_EPOCHS` (small data gets more passes, large data fewer)."""
    per_epoch = max(1, (int(n_train) + batch_size - 1) // batch_size)
    return max(RECOVERY_MIN_EPOCHS, min(RECOVERY_MAX_EPOCHS, math.ceil(RECOVERY_BATCHES / per_epoch)))


def recovery_finetune(n_train: int, **overrides: Any) -> FinetuneSettings:
    """The default recovery recipe: distillation on (T=4, alpha=0.5), Adam at `RECOVERY_LR` with a linear
    warm-up over `RECOVERY_WARMUP` of the steps and a cosine decay (pass `lr_schedule=RECOVERY_LR_SCHEDULE`
    to `finetune`), epochs from `recovery_epochs`."""
    values: dict[str, Any] = {
        "epochs": recovery_epochs(n_train),
        "distill": True,
        "lr": RECOVERY_LR,
        "warmup": RECOVERY_WARMUP,
        "lr_schedule": RECOVERY_LR_SCHEDULE,
        "recipe": "recovery",
    }
    values.update(overrides)
    return FinetuneSettings(**values)


__all__ = [
    "RECOVERY_BATCHES",
    "RECOVERY_WARMUP",
    "FINETUNE_KEYS",
    "recovery_epochs",
    "recovery_finetune",
    "LR_SCHEDULES",
    "RECIPES",
    "FinetuneSettings",
]
