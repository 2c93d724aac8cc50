"""Per-iteration schedules: the TA-selector keep ratio (warm-up, cosine decay) and a cosine learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass


def _check_iteration(iteration: int) -> None:
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")


@dataclass(frozen=True)
class KeepRatioSchedule:
    """Keep ratio at an iteration: 1.0 for `warmup_iters`, then a cosine from 1.0 down to `target` over
    `decay_iters`, then `target` (paper: 10 warm-up and 100 decay epochs of 300). Used for R_T and R_A."""

    target: float
    warmup_iters: int = 0
    decay_iters: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"target keep ratio must be in (0, 1], got {self.target}")
        if self.warmup_iters < 0 or self.decay_iters < 0:
            raise ValueError(f"iteration counts must be >= 0, got {self.warmup_iters}, {self.decay_iters}")

    @classmethod
    def from_epochs(
        cls, target: float, warmup_epochs: float, decay_epochs: float, iters_per_epoch: int
    ) -> KeepRatioSchedule:
        if iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
        return cls(target, round(warmup_epochs * iters_per_epoch), round(decay_epochs * iters_per_epoch))

    def __call__(self, iteration: int) -> float:
        _check_iteration(iteration)
        step = iteration - self.warmup_iters
        if step < 0:
            return 1.0
        if step >= self.decay_iters:
            return self.target
        return self.target + (1.0 - self.target) * 0.5 * (1.0 + math.cos(math.pi * step / self.decay_iters))


def cosine_lr(
    iteration: int, base_lr: float, total_iters: int, warmup_iters: int = 0, min_lr: float = 0.0
) -> float:
    """Learning rate at an iteration: linear warm-up base_lr * (i + 1) / warmup_iters, then a cosine
    from base_lr to min_lr that reaches min_lr at `total_iters` (and stays there)."""
    _check_iteration(iteration)
    if total_iters < 1 or not 0 <= warmup_iters <= total_iters:
        msg = f"need 0 <= warmup_iters ({warmup_iters}) <= total_iters ({total_iters}), total_iters >= 1"
        raise ValueError(msg)
    if base_lr < 0 or not 0 <= min_lr <= base_lr:
        raise ValueError(f"need 0 <= min_lr ({min_lr}) <= base_lr ({base_lr})")
    if iteration < warmup_iters:
        return base_lr * (iteration + 1) / warmup_iters
    decay = total_iters - warmup_iters
    progress = min(1.0, (iteration - warmup_iters) / decay) if decay else 1.0
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
