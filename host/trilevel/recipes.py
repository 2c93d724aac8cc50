"""Training recipes: the defaults `trilevel train` uses for whatever the command line leaves out.

* ``demo`` (the 6-block demo ViT, its mean-pooled ``demo_gap``, and the digits-sized timm models
  ``swin_demo`` and ``pit_demo``): the README demo recipe, 16 epochs
  at batch 32, AdamW lr 2e-3, no augmentation or regularization; `trilevel train --model demo --data
  digits --out X` reaches >= 90%.
* ``deit`` (``deit_tiny``/``deit_small``/``deit_base`` and any other model): DeiT's ImageNet recipe,
  which the paper trains with: 300 epochs, lr 5e-4 x global batch / 512, weight decay 0.05, drop-path
  0.1, label smoothing 0.1, RandomResizedCrop (bicubic) + RandAugment rand-m9-mstd0.5-inc1, random
  erasing 0.25, mixup 0.8 / cutmix 1.0, repeated augmentation x3 (under DDP), model EMA 0.99996.

Every recipe derives the schedules from the number of epochs as the paper does at 300: lr warm-up
epochs / 60 (5), keep-ratio warm-up epochs / 30 (10) and decay epochs / 3 (100), a remove-and-restore
round every epochs / 10 (30). Explicit settings always win over the recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    epochs: int
    batch_size: int  # per process
    base_lr: float  # the peak lr is base_lr * global batch / lr_batch (linear scaling)
    lr_batch: int
    weight_decay: float
    drop_path: float
    label_smoothing: float
    augment: bool  # timm training transform: RandomResizedCrop (bicubic), flip, auto_augment
    auto_augment: str | None
    reprob: float  # random erasing probability (per image, on the device)
    mixup: float  # mixup alpha (0: off)
    cutmix: float  # cutmix alpha (0: off)
    repeated_aug: int  # repeats per image under DDP (1: off)
    ema_decay: float  # model EMA decay (0: off)

    def lr(self, global_batch: int) -> float:
        return self.base_lr * global_batch / self.lr_batch


DEMO = Recipe(
    "demo", epochs=16, batch_size=32, base_lr=2e-3, lr_batch=32, weight_decay=0.05, drop_path=0.0,
    label_smoothing=0.0, augment=False, auto_augment=None, reprob=0.0, mixup=0.0, cutmix=0.0,
    repeated_aug=1, ema_decay=0.0,
)
DEIT = Recipe(
    "deit", epochs=300, batch_size=128, base_lr=5e-4, lr_batch=512, weight_decay=0.05, drop_path=0.1,
    label_smoothing=0.1, augment=True, auto_augment="rand-m9-mstd0.5-inc1", reprob=0.25, mixup=0.8,
    cutmix=1.0, repeated_aug=3, ema_decay=0.99996,
)
RECIPES: dict[str, Recipe] = {r.name: r for r in (DEMO, DEIT)}
DEMO_MODELS = ("demo", "demo_gap", "swin_demo", "pit_demo")  # the models trained with DEMO by default
# The accelerator trainer's defaults: its layer-wise kernels implement neither of these.
RECIPE_OFF: dict[str, Any] = {
    "drop_path": 0.0, "label_smoothing": 0.0, "augment": False, "auto_augment": None, "reprob": 0.0,
    "mixup": 0.0, "cutmix": 0.0, "repeated_aug": 1, "ema_decay": 0.0,
}

# The schedules' lengths as fractions of the run (the paper's 5, 10, 100 and 30 of 300 epochs).
LR_WARMUP_FRACTION, KEEP_WARMUP_FRACTION, KEEP_DECAY_FRACTION = 1 / 60, 1 / 30, 1 / 3
EXAMPLE_PERIOD_FRACTION = 0.1
# A keep-ratio decay shorter than this many steps is a jump rather than a schedule.
MIN_DECAY_STEPS = 20


def recipe_for(model: str) -> Recipe:
    """The recipe a model trains with by default: the demo recipe for the demo models (``demo``, its
    mean-pooled ``demo_gap``, ``swin_demo``, ``pit_demo``), DeiT's otherwise."""
    return DEMO if model in DEMO_MODELS else DEIT


def default_example_period(epochs: int) -> int:
    return max(1, round(epochs * EXAMPLE_PERIOD_FRACTION))


@dataclass(frozen=True)
class RunLengths:
    """What `schedule_warnings` needs to know about a resolved run."""

    epochs: int
    iters_per_epoch: int
    warmup_epochs: float
    keep_targets: tuple[float, float]  # R_T, R_A targets
    keep_warmup_epochs: float
    keep_decay_epochs: float
    example_rounds: int  # remove-and-restore rounds the filter wants (0: example level off)
    example_period: int
    example_window: str  # "round" | "run"
    ema_decay: float


def schedule_warnings(run: RunLengths) -> list[str]:
    """One sentence per schedule the run is too short for, each saying what to change."""
    notes = []
    total = run.epochs * run.iters_per_epoch
    if run.warmup_epochs > run.epochs:
        notes.append(
            f"the lr warm-up ({run.warmup_epochs:g} epochs) is longer than the run ({run.epochs}): "
            "lower --warmup-epochs or raise --epochs"
        )
    if min(run.keep_targets) < 1.0:
        reach = run.keep_warmup_epochs + run.keep_decay_epochs
        decay_steps = round(run.keep_decay_epochs * run.iters_per_epoch)
        if reach > run.epochs:
            notes.append(
                f"R_T/R_A reach their targets only after {reach:g} epochs but the run has {run.epochs}: "
                "lower --keep-warmup-epochs/--keep-decay-epochs or raise --epochs"
            )
        if 0 < decay_steps < MIN_DECAY_STEPS:
            need = math.ceil(MIN_DECAY_STEPS / run.iters_per_epoch)
            notes.append(
                f"the keep-ratio decay lasts only {decay_steps} steps, a jump rather than a schedule: "
                f"raise --keep-decay-epochs to >= {need} (or --epochs), or lower --batch-size"
            )
    if run.example_rounds:
        last = run.example_rounds * run.example_period
        if last > run.epochs:
            fit = run.epochs // run.example_period
            period = max(1, run.epochs // run.example_rounds)
            lower = f" or lower --example-period to {period}" if period < run.example_period else ""
            notes.append(
                f"only {fit} of the example filter's {run.example_rounds} remove-and-restore rounds fit in "
                f"{run.epochs} epochs (one every {run.example_period}): raise --epochs to >= {last}{lower}"
            )
        if run.example_period < 2 and run.example_window == "round":
            notes.append(
                "with --example-period 1 each forgetting window holds one presentation, so no example "
                "can have a forgetting event (rounds rank by [CLS]-attention variance only): raise "
                "--example-period to >= 2 or pass --example-window run"
            )
    if run.ema_decay > 0 and total < 1.0 / (1.0 - run.ema_decay):
        horizon = 1.0 / (1.0 - run.ema_decay)
        lower = f"lower --ema-decay (e.g. {1.0 - 10.0 / total:.4g}) or " if total > 10 else ""
        notes.append(
            f"the EMA (decay {run.ema_decay:g}) averages over ~{horizon:.0f} steps but the run has {total}: "
            f"its weights stay near the initialization; {lower}pass --ema-decay 0"
        )
    return notes
