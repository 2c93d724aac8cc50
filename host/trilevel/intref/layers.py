"""Layer kernels of the integer reference: linear, LayerNorm, GELU, aligned add (docs/numerics.md §2).

The uniform kernel convention (blocks.py follows it too):

    y, stats, saved = <kernel>_fwd(x, params, fracs, ...)
    dx, stats, grad_fracs = <kernel>_bwd(dy, saved, params, grads, fracs, seed, ...)

* Tensors are `QTensor`s with a leading batch dimension [B, T, D].
* `params` maps names (the golden model's state_dict names, relative to the layer) to QTensors.
* `fracs` maps every requantization point of the kernel (the keys in `<KERNEL>_FRACS`) to the frac the
  host chose; `stats` maps the same keys to the max-abs before saturation, in units of that frac.
* `grads` maps parameter names to caller-owned int64 accumulators the backward ADDS to; `grad_fracs`
  gives their fracs (frac of dY + frac of X: fixed while the host keeps fracs fixed over a step).
* SR points are numbered in `<KERNEL>_FRACS` order; point i uses `subseed(seed, i)` and the flat
  row-major index of its output tensor (all B images of the call included).
"""

from __future__ import annotations

from collections.abc import Mapping
from math import isqrt

import numpy as np

from trilevel.intref.fixed import (
    ACC_BITS,
    QTensor,
    check_frac,
    hash32,
    max_abs_out,
    requantize,
    round_shift,
)
from trilevel.intref.luts import (
    DGELU_LUT,
    GELU_CELLS,
    GELU_IN_FRAC,
    GELU_LUT_FRAC,
    PHI_LUT,
    RSQRT_BITS,
    RSQRT_FRAC,
    RSQRT_LUT,
)

Stats = dict[str, int]
Saved = dict[str, object]

LINEAR_FWD_FRACS = ("y",)
LINEAR_BWD_FRACS = ("dx",)
LAYERNORM_FWD_FRACS = ("y",)
LAYERNORM_BWD_FRACS = ("g", "t", "dx")
GELU_FWD_FRACS = ("y",)
GELU_BWD_FRACS = ("dx",)

# LayerNorm eps as a power of two (2**-20 = 0.95e-6, the golden model uses 1e-6), and the largest input
# frac the integer eps term supports (larger fracs use 24: eps shrinks for inputs below 2**-10).
LN_EPS_LOG2 = -20
LN_MAX_IN_FRAC = 24


def subseed(seed: int, point: int) -> int:
    """The SR seed of a kernel's `point`-th rounding point: hash32(seed, point)."""
    return int(hash32(seed, np.array(point, dtype=np.int64)))


def need_fracs(fracs: Mapping[str, int], keys: tuple[str, ...], kernel: str) -> dict[str, int]:
    missing = [k for k in keys if k not in fracs]
    if missing:
        raise KeyError(f"{kernel}: missing fracs {missing} (needs {keys})")
    return {k: check_frac(fracs[k]) for k in keys}


def check_acc48(acc: np.ndarray, what: str) -> None:
    """Assert a gradient accumulator stays inside the 48-bit DSP accumulator range."""
    if acc.size and int(np.max(np.abs(acc))) >= 1 << (ACC_BITS - 1):
        raise OverflowError(f"{what}: accumulator exceeds {ACC_BITS} bits; lower the gradient fracs")


def align(v: np.ndarray, frac_from: int | np.ndarray, frac_to: int | np.ndarray) -> np.ndarray:
    """v (frac_from) expressed at frac_to as int64: exact left shift, or RNE right shift (§2.3)."""
    shift = np.asarray(frac_from, dtype=np.int64) - np.asarray(frac_to, dtype=np.int64)
    v = np.asarray(v).astype(np.int64)
    left = v << np.maximum(-shift, 0)
    if int(np.max(shift)) <= 0:
        return left
    return np.where(shift <= 0, left, round_shift(v, np.maximum(shift, 1), "rne"))


def _accumulate(grads: Mapping[str, np.ndarray], name: str, value: np.ndarray) -> None:
    acc = grads[name]
    if acc.dtype != np.int64 or acc.shape != value.shape:
        raise ValueError(f"grads[{name!r}]: need int64 {value.shape}, got {acc.dtype} {acc.shape}")
    acc += value
    check_acc48(acc, name)


def _check_x(x: QTensor, dim: int, kernel: str) -> None:
    if not isinstance(x, QTensor):
        raise TypeError(f"{kernel}: expected a QTensor, got {type(x).__name__}")
    if x.data.ndim != 3 or x.data.shape[-1] != dim:
        raise ValueError(f"{kernel}: expected [B, T, {dim}], got {x.data.shape}")


# ----------------------------------------------------------------------------------------------- linear
def linear_fwd(x: QTensor, params: Mapping[str, QTensor], fracs: Mapping[str, int],
               residual: QTensor | None = None) -> tuple[QTensor, Stats, Saved]:
    """y = x W^T + b (+ residual), RNE to fracs["y"]. params: "weight" [Dout, Din], "bias" [Dout] or absent.

    Accumulator frac fa = frac_x + frac_w; bias and residual are aligned to fa (§2.3) before rounding.
    """
    f = need_fracs(fracs, LINEAR_FWD_FRACS, "linear_fwd")
    w = params["weight"]
    _check_x(x, w.data.shape[1], "linear_fwd")
    fa = x.frac + w.frac
    acc = np.einsum("btd,od->bto", x.data.astype(np.int64), w.data.astype(np.int64))
    bias = params.get("bias")
    if bias is not None:
        acc += align(bias.data, bias.frac, fa)
    if residual is not None:
        if residual.data.shape != acc.shape:
            raise ValueError(f"linear_fwd: residual {residual.data.shape} != output {acc.shape}")
        acc += align(residual.data, residual.frac, fa)
    shift = fa - f["y"]
    y = QTensor(requantize(acc, shift, "rne"), f["y"])
    return y, {"y": max_abs_out(acc, shift)}, {"x": x}


def linear_bwd(dy: QTensor, saved: Saved, params: Mapping[str, QTensor], grads: Mapping[str, np.ndarray],
               fracs: Mapping[str, int], seed: int, need_dx: bool = True
               ) -> tuple[QTensor | None, Stats, Stats]:
    """dX = dY W (W read in its stored [Dout, Din] layout) with SR to fracs["dx"]; ADDS dY^T X to
    grads["weight"] (frac fdy + fx) and sum dY to grads["bias"] (frac fdy) when present."""
    x: QTensor = saved["x"]  # type: ignore[assignment]
    w = params["weight"]
    _check_x(dy, w.data.shape[0], "linear_bwd")
    dy64 = dy.data.astype(np.int64)
    _accumulate(grads, "weight", np.einsum("bto,btd->od", dy64, x.data.astype(np.int64)))
    grad_fracs = {"weight": dy.frac + x.frac}
    if "bias" in params and params["bias"] is not None:
        _accumulate(grads, "bias", dy64.sum(axis=(0, 1)))
        grad_fracs["bias"] = dy.frac
    if not need_dx:
        return None, {}, grad_fracs
    f = need_fracs(fracs, LINEAR_BWD_FRACS, "linear_bwd")
    acc = np.einsum("bto,od->btd", dy64, w.data.astype(np.int64))
    shift = dy.frac + w.frac - f["dx"]
    dx = QTensor(requantize(acc, shift, "sr", subseed(seed, 0)), f["dx"])
    return dx, {"dx": max_abs_out(acc, shift)}, grad_fracs


# -------------------------------------------------------------------------------------------- layernorm
def ln_xhat_frac(dim: int) -> int:
    """Frac of the normalized value x_hat: |x_hat| <= sqrt(D - 1) always fits (§2.7)."""
    return 15 - isqrt(dim - 1).bit_length()


def ln_eps_term(dim: int, frac_x: int) -> int:
    """eps * D**2 * 2**(2 fx) as an integer (eps = 2**LN_EPS_LOG2, fx capped at LN_MAX_IN_FRAC)."""
    e = 2 * min(frac_x, LN_MAX_IN_FRAC) + LN_EPS_LOG2
    return dim * dim << e if e >= 0 else dim * dim >> -e


def rsqrt_lookup(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1/sqrt(w) ~ RSQRT_LUT[w >> 2k] * 2**-(RSQRT_FRAC + k) for w >= 0; returns (lut value, k).

    k = max(0, ceil((bit_length(w) - 12) / 2)), so the index w >> 2k has at most 12 bits.
    """
    w = np.asarray(w, dtype=np.int64)
    bl = np.frexp(w.astype(np.float64))[1].astype(np.int64)  # exact bit length: w < 2**53
    k = np.maximum(0, (bl - RSQRT_BITS + 1) // 2)
    return RSQRT_LUT[w >> (2 * k)], k


def layernorm_fwd(x: QTensor, params: Mapping[str, QTensor], fracs: Mapping[str, int]
                  ) -> tuple[QTensor, Stats, Saved]:
    """Integer LayerNorm over the last axis (§2.7): params "weight" (gamma), "bias" (beta); RNE to fracs["y"].

    S1 = sum X, S2 = sum X^2, c = D X - S1, W = D S2 - S1^2 + eps term; x_hat = RNE(c * RSQRT_LUT[.],
    RSQRT_FRAC + k - fh) at frac fh = ln_xhat_frac(D); y = RNE(x_hat gamma + beta aligned).
    """
    f = need_fracs(fracs, LAYERNORM_FWD_FRACS, "layernorm_fwd")
    gamma, beta = params["weight"], params["bias"]
    dim = gamma.data.shape[0]
    _check_x(x, dim, "layernorm_fwd")
    x64 = x.data.astype(np.int64)
    s1 = x64.sum(axis=-1, keepdims=True)
    s2 = (x64 * x64).sum(axis=-1, keepdims=True)
    w = dim * s2 - s1 * s1 + ln_eps_term(dim, x.frac)
    rs, k = rsqrt_lookup(w)
    fh = ln_xhat_frac(dim)
    xhat = requantize((dim * x64 - s1) * rs, RSQRT_FRAC + k - fh, "rne")
    fa = fh + gamma.frac
    acc = xhat.astype(np.int64) * gamma.data.astype(np.int64) + align(beta.data, beta.frac, fa)
    shift = fa - f["y"]
    y = QTensor(requantize(acc, shift, "rne"), f["y"])
    return y, {"y": max_abs_out(acc, shift)}, {"xhat": xhat, "rsqrt": rs, "k": k, "frac_x": x.frac}


def layernorm_bwd(dy: QTensor, saved: Saved, params: Mapping[str, QTensor], grads: Mapping[str, np.ndarray],
                  fracs: Mapping[str, int], seed: int, residual: QTensor | None = None
                  ) -> tuple[QTensor, Stats, Stats]:
    """LayerNorm backward (§2.7), SR points "g", "t", "dx"; `residual` (the skip path's gradient) is
    added in the dx accumulator before its single rounding. ADDS dy*x_hat to grads["weight"]
    (frac fdy + fh) and sum dy to grads["bias"] (frac fdy).

    g = SR(dy gamma); A = sum g; Bs = RNE(sum g x_hat, fh); t = ((D g - A) << fh) - x_hat Bs;
    t_hat = SR(t, fg + fh - ft); dx = SR(t_hat * rsqrt (+ residual aligned), ft + RSQRT_FRAC + k - fx - fdx).
    """
    f = need_fracs(fracs, LAYERNORM_BWD_FRACS, "layernorm_bwd")
    gamma = params["weight"]
    dim = gamma.data.shape[0]
    _check_x(dy, dim, "layernorm_bwd")
    xhat = saved["xhat"].astype(np.int64)  # type: ignore[union-attr]
    fh = ln_xhat_frac(dim)
    dy64 = dy.data.astype(np.int64)
    _accumulate(grads, "weight", (dy64 * xhat).sum(axis=(0, 1)))
    _accumulate(grads, "bias", dy64.sum(axis=(0, 1)))
    grad_fracs = {"weight": dy.frac + fh, "bias": dy.frac}

    g_acc = dy64 * gamma.data.astype(np.int64)
    g_shift = dy.frac + gamma.frac - f["g"]
    g = requantize(g_acc, g_shift, "sr", subseed(seed, 0)).astype(np.int64)
    a_sum = g.sum(axis=-1, keepdims=True)
    b_sum = round_shift((g * xhat).sum(axis=-1, keepdims=True), fh, "rne")
    t = ((dim * g - a_sum) << fh) - xhat * b_sum
    t_shift = f["g"] + fh - f["t"]
    t_hat = requantize(t, t_shift, "sr", subseed(seed, 1)).astype(np.int64)
    frac_acc = f["t"] + RSQRT_FRAC + saved["k"] - saved["frac_x"]  # per row
    acc = t_hat * saved["rsqrt"]
    if residual is not None:
        if residual.data.shape != acc.shape:
            raise ValueError(f"layernorm_bwd: residual {residual.data.shape} != {acc.shape}")
        acc = acc + align(residual.data, residual.frac, frac_acc)
    shift = frac_acc - f["dx"]
    dx = QTensor(requantize(acc, shift, "sr", subseed(seed, 2)), f["dx"])
    stats = {"g": max_abs_out(g_acc, g_shift), "t": max_abs_out(t, t_shift), "dx": max_abs_out(acc, shift)}
    return dx, stats, grad_fracs


# ------------------------------------------------------------------------------------------------- GELU
def gelu_index(h: np.ndarray, frac_h: int) -> np.ndarray:
    """LUT cell of h: clip(floor(h * 2**(7 - frac_h)), -1024, 1023) + 1024 (inputs beyond +-8 saturate)."""
    h = np.asarray(h).astype(np.int64)
    s = GELU_IN_FRAC - frac_h
    scaled = h << s if s >= 0 else h >> -s
    half = GELU_CELLS // 2
    return np.clip(scaled, -half, half - 1) + half


def gelu_fwd(x: QTensor, fracs: Mapping[str, int]) -> tuple[QTensor, Stats, Saved]:
    """y = RNE(x * PHI_LUT[cell(x)], frac_x + 16 - fy): x * Phi(x) with Phi at the cell midpoint (§2.8)."""
    f = need_fracs(fracs, GELU_FWD_FRACS, "gelu_fwd")
    acc = x.data.astype(np.int64) * PHI_LUT[gelu_index(x.data, x.frac)]
    shift = x.frac + GELU_LUT_FRAC - f["y"]
    return QTensor(requantize(acc, shift, "rne"), f["y"]), {"y": max_abs_out(acc, shift)}, {"x": x}


def gelu_bwd(dy: QTensor, saved: Saved, fracs: Mapping[str, int], seed: int) -> tuple[QTensor, Stats]:
    """dx = SR(dy * DGELU_LUT[cell(x)], frac_dy + 16 - fdx) (§2.8)."""
    f = need_fracs(fracs, GELU_BWD_FRACS, "gelu_bwd")
    x: QTensor = saved["x"]  # type: ignore[assignment]
    acc = dy.data.astype(np.int64) * DGELU_LUT[gelu_index(x.data, x.frac)]
    shift = dy.frac + GELU_LUT_FRAC - f["dx"]
    return QTensor(requantize(acc, shift, "sr", subseed(seed, 0)), f["dx"]), {"dx": max_abs_out(acc, shift)}


# ------------------------------------------------------------------------------------------ aligned add
def add(a: QTensor, b: QTensor, frac: int, mode: str = "rne", seed: int = 0) -> tuple[QTensor, Stats]:
    """a + b at frac `frac`: both aligned to F = max(fa, fb) (exact), then one rounding (RNE or SR)."""
    frac = check_frac(frac)
    if a.data.shape != b.data.shape:
        raise ValueError(f"add: shapes differ {a.data.shape} vs {b.data.shape}")
    top = max(a.frac, b.frac)
    acc = align(a.data, a.frac, top) + align(b.data, b.frac, top)
    shift = top - frac
    return QTensor(requantize(acc, shift, mode, seed), frac), {"y": max_abs_out(acc, shift)}
