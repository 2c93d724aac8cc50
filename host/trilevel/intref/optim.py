"""Optimizer kernels (docs/numerics.md §2.12): fp32 master weights and moments, element-wise, in one
fixed operation order (C++ compiled with -ffp-contract=off reproduces it bit for bit).

The per-step scalars are computed once on the host in float64 and rounded to float32 (`AdamWScalars`,
`SgdmScalars`); the element-wise part uses float32 only. After the update the int16 weights are
re-derived: frac = choose_frac(max |master|), data = quantize(master, frac).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trilevel.intref.fixed import QTensor, choose_frac, quantize

f32 = np.float32


def grad_from_acc(acc: np.ndarray, frac: int, batch: int) -> np.ndarray:
    """g = float32(acc) * float32(2**-frac) / float32(batch): int64 -> fp32 rounds to nearest even."""
    if acc.dtype != np.int64:
        raise TypeError(f"gradient accumulator must be int64, got {acc.dtype}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return (acc.astype(f32) * f32(2.0**-frac)) / f32(batch)


@dataclass(frozen=True)
class AdamWScalars:
    decay: np.float32  # 1 - lr * weight_decay
    beta1: np.float32
    one_minus_beta1: np.float32
    beta2: np.float32
    one_minus_beta2: np.float32
    step_size: np.float32  # lr / (1 - beta1**t)
    inv_sqrt_bc2: np.float32  # 1 / sqrt(1 - beta2**t)
    eps: np.float32

    @classmethod
    def at(cls, step: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
           weight_decay: float = 0.05) -> AdamWScalars:
        """Scalars of step `step` (1-based), as torch.optim.AdamW defines them."""
        if step < 1:
            raise ValueError(f"step is 1-based, got {step}")
        return cls(f32(1.0 - lr * weight_decay), f32(beta1), f32(1.0 - beta1), f32(beta2), f32(1.0 - beta2),
                   f32(lr / (1.0 - beta1**step)), f32(1.0 / math.sqrt(1.0 - beta2**step)), f32(eps))


def adamw_step(master: np.ndarray, m: np.ndarray, v: np.ndarray, grad_acc: np.ndarray, grad_frac: int,
               batch: int, s: AdamWScalars) -> QTensor:
    """One AdamW update in place on float32 master/m/v; returns the re-derived int16 weights.

        g = grad_from_acc(grad_acc, grad_frac, batch)
        p = p * decay
        m = beta1 * m + one_minus_beta1 * g
        v = beta2 * v + (one_minus_beta2 * g) * g
        p = p - step_size * (m / (sqrt(v) * inv_sqrt_bc2 + eps))
    """
    for name, a in (("master", master), ("m", m), ("v", v)):
        if a.dtype != f32 or a.shape != grad_acc.shape:
            raise ValueError(f"{name} must be float32 {grad_acc.shape}, got {a.dtype} {a.shape}")
    g = grad_from_acc(grad_acc, grad_frac, batch)
    master *= s.decay
    m[...] = s.beta1 * m + s.one_minus_beta1 * g
    v[...] = s.beta2 * v + (s.one_minus_beta2 * g) * g
    master -= s.step_size * (m / (np.sqrt(v) * s.inv_sqrt_bc2 + s.eps))
    return requantize_master(master)


@dataclass(frozen=True)
class SgdmScalars:
    lr: np.float32
    momentum: np.float32
    weight_decay: np.float32

    @classmethod
    def at(cls, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> SgdmScalars:
        return cls(f32(lr), f32(momentum), f32(weight_decay))


def sgdm_step(master: np.ndarray, buf: np.ndarray, grad_acc: np.ndarray, grad_frac: int, batch: int,
              s: SgdmScalars, first: bool = False) -> QTensor:
    """SGD with momentum (torch.optim.SGD, dampening 0), in place; `first` marks the first step.

        g = grad_from_acc(...) + weight_decay * p
        buf = g if first else momentum * buf + g
        p = p - lr * buf
    """
    for name, a in (("master", master), ("buf", buf)):
        if a.dtype != f32 or a.shape != grad_acc.shape:
            raise ValueError(f"{name} must be float32 {grad_acc.shape}, got {a.dtype} {a.shape}")
    g = grad_from_acc(grad_acc, grad_frac, batch) + s.weight_decay * master
    buf[...] = g if first else s.momentum * buf + g
    master -= s.lr * buf
    return requantize_master(master)


def requantize_master(master: np.ndarray) -> QTensor:
    """int16 weights from fp32 masters: frac from the max-abs (choose_frac), RNE, saturate."""
    max_abs = float(np.max(np.abs(master))) if master.size else 0.0
    frac = choose_frac(max_abs)
    return QTensor(quantize(master, frac), frac)
