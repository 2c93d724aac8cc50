"""Fixed-point primitives of the integer datapath (docs/numerics.md §1), bit-exact, vectorized numpy.

Storage: int16 values plus one integer `frac` per tensor, real = value * 2**-frac. Accumulators are
int64 here (48-bit signed in hardware; the ranges in §1.1 keep them inside 48 bits). Every function is
the definition the HLS C++ kernels and the RTL units reproduce bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trilevel.intref.luts import EXP2_LUT, RECIP_LUT

INT16_MIN = -32768
INT16_MAX = 32767
FRAC_MIN = -16
FRAC_MAX = 40
ACC_BITS = 48
# choose_frac: scale so the max-abs lands in [2**(14 - HEADROOM_BITS), 2**(15 - HEADROOM_BITS)).
HEADROOM_BITS = 1
# choose_frac of an all-zero tensor (nothing to fit; keeps values up to +-1 representable).
ZERO_FRAC = 15
# Softmax constants (§1.5): round(log2(e) * 2**14), probabilities in Q0.15.
LOG2E_Q14 = 23637
PROB_FRAC = 15
# SR shifts wider than this would overflow int64 in acc + r (never needed: fracs are within [-16, 40]).
MAX_SHIFT = 62

_M32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class QTensor:
    """An int16 tensor with its power-of-two scale: real = data * 2**-frac."""

    data: np.ndarray
    frac: int

    def __post_init__(self) -> None:
        if not isinstance(self.data, np.ndarray) or self.data.dtype != np.int16:
            raise TypeError(f"QTensor data must be an int16 numpy array, got {type(self.data).__name__} "
                            f"{getattr(self.data, 'dtype', '')}")
        check_frac(self.frac)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def to_float(self, dtype: type = np.float32) -> np.ndarray:
        return dequantize(self.data, self.frac, dtype)

    @classmethod
    def from_float(cls, x: np.ndarray, frac: int | None = None) -> QTensor:
        """Quantize with `frac`, or with choose_frac(max|x|) when frac is None."""
        x = np.asarray(x)
        if frac is None:
            frac = choose_frac(float(np.max(np.abs(x))) if x.size else 0.0)
        return cls(quantize(x, frac), frac)


def check_frac(frac: int) -> int:
    if isinstance(frac, bool) or not isinstance(frac, (int, np.integer)) or not FRAC_MIN <= frac <= FRAC_MAX:
        raise ValueError(f"frac must be an integer in [{FRAC_MIN}, {FRAC_MAX}], got {frac!r}")
    return int(frac)


def hash32(seed: int, index: np.ndarray | int) -> np.ndarray:
    """§1.3 counter-based hash of (uint32 seed, element index) -> uint32 array shaped like `index`.

    Indices are taken mod 2**32 (only the low 32 bits enter `index * 0x9E3779B9`); negative ones are errors.
    """
    if not 0 <= int(seed) <= 0xFFFFFFFF:
        raise ValueError(f"seed must be a uint32, got {seed}")
    idx = np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"index must be an integer array, got dtype {idx.dtype}")
    if idx.dtype.kind == "i" and idx.size and idx.min() < 0:
        raise ValueError("index must be non-negative")
    x = (idx.astype(np.uint64) & _M32) * np.uint64(0x9E3779B9) & _M32
    x ^= np.uint64(seed)
    x ^= x >> np.uint64(16)
    x = x * np.uint64(0x21F0AAAD) & _M32
    x ^= x >> np.uint64(15)
    x = x * np.uint64(0x735A2D97) & _M32
    x ^= x >> np.uint64(15)
    return x.astype(np.uint32)


def flat_index(shape: tuple[int, ...], offset: int = 0) -> np.ndarray:
    """The default SR index: each element's flat row-major position (+ offset) in a tensor of `shape`."""
    return np.arange(offset, offset + int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)


def round_shift(acc: np.ndarray, shift: int | np.ndarray, mode: str, seed: int = 0,
                index: np.ndarray | None = None) -> np.ndarray:
    """§1.2 without the final saturation: acc * 2**-shift rounded (RNE or SR), as int64.

    `shift` is an int or an int array broadcastable to `acc` (e.g. one shift per row, as in
    LayerNorm). Kernels use this to report pre-saturation max-abs; requantize = saturate16(round_shift).
    Where shift <= 0 the result is clipped to +-2**32 (any such value saturates anyway).
    """
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iu":
        raise TypeError(f"acc must be an integer array, got dtype {acc.dtype}")
    if mode not in ("rne", "sr"):
        raise ValueError(f"mode must be 'rne' or 'sr', got {mode!r}")
    acc = acc.astype(np.int64)
    sh = np.asarray(shift)
    if sh.dtype.kind not in "iu":
        raise TypeError(f"shift must be an integer, got dtype {sh.dtype}")
    sh = sh.astype(np.int64)
    if sh.size and int(sh.max()) > MAX_SHIFT:
        raise ValueError(f"shift {int(sh.max())} > {MAX_SHIFT}: fracs out of range")
    if acc.size and int(np.max(np.abs(acc))) >= 1 << MAX_SHIFT:
        raise OverflowError("accumulator exceeds 62 bits")
    # Left shifts (shift <= 0): values with |acc| >= 2**15 or a shift beyond 16 saturate; clip first.
    left = np.clip(acc, -(1 << 15), 1 << 15) << np.minimum(np.maximum(-sh, 0), 17)
    pos = np.maximum(sh, 1)
    if mode == "rne":
        q = acc >> pos
        rem = acc & ((np.int64(1) << pos) - 1)
        half = np.int64(1) << (pos - 1)
        right = q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    else:
        index = flat_index(acc.shape) if index is None else np.broadcast_to(np.asarray(index), acc.shape)
        r = hash32(seed, index).astype(np.int64)
        r = np.where(pos <= 32, r & ((np.int64(1) << np.minimum(pos, 32)) - 1), r << np.maximum(pos - 32, 0))
        right = (acc + r) >> pos
    out = np.where(sh <= 0, left, right)
    return out if out.shape == acc.shape else np.broadcast_to(out, acc.shape).copy()


def max_abs_out(acc: np.ndarray, shift: int | np.ndarray = 0) -> int:
    """Pre-saturation max-abs of `acc` requantized by `shift` (int or per-element array), in output
    units (floor, exact Python int). Kernels report these in `stats` for the host's choose_frac_int."""
    acc = np.asarray(acc).astype(np.int64)
    if not acc.size:
        return 0
    sh = np.broadcast_to(np.asarray(shift, dtype=np.int64), acc.shape)
    mags = np.abs(acc)
    if int(sh.min()) >= 0:
        return int(np.max(mags >> sh))
    best = 0
    for s in np.unique(sh):  # exact Python ints: a left shift may exceed int64
        m = int(mags[sh == s].max())
        best = max(best, m >> int(s) if s >= 0 else m << int(-s))
    return best


def saturate16(v: np.ndarray) -> np.ndarray:
    return np.clip(v, INT16_MIN, INT16_MAX).astype(np.int16)


def requantize(acc: np.ndarray, shift: int, mode: str, seed: int = 0,
               index: np.ndarray | None = None) -> np.ndarray:
    """§1.2: int accumulator with frac `f_acc` -> int16 with frac `f_acc - shift`.

    mode "rne" (round half to even, forward activations) or "sr" (stochastic rounding with
    hash32(seed, index), gradients). `index` defaults to the flat row-major index of `acc`.
    """
    return saturate16(round_shift(acc, shift, mode, seed, index))


def quantize(x: np.ndarray, frac: int) -> np.ndarray:
    """Float -> int16 with frac: round half to even of x * 2**frac, saturated."""
    frac = check_frac(frac)
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("quantize: input has NaN or inf")
    return saturate16(np.rint(np.ldexp(x, frac)))


def dequantize(q: np.ndarray, frac: int, dtype: type = np.float32) -> np.ndarray:
    """int16 (or any int) with frac -> float; exact for int16 in float32."""
    frac = check_frac(frac)
    return np.ldexp(np.asarray(q).astype(dtype), -frac).astype(dtype)


def choose_frac(max_abs: float, headroom: int = HEADROOM_BITS) -> int:
    """The frac for a tensor whose largest magnitude is `max_abs` (a real value).

    With (m, e) = frexp(max_abs), m in [0.5, 1): frac = 15 - headroom - e, clamped to
    [FRAC_MIN, FRAC_MAX], so max_abs * 2**frac lies in [2**(14 - headroom), 2**(15 - headroom)).
    All-zero tensors get ZERO_FRAC. C++: `frexpf` gives the same e for float32 inputs.
    """
    max_abs = float(max_abs)
    if not np.isfinite(max_abs) or max_abs < 0:
        raise ValueError(f"max_abs must be finite and >= 0, got {max_abs}")
    if max_abs == 0.0:
        return ZERO_FRAC
    _, e = np.frexp(max_abs)
    return int(np.clip(15 - headroom - int(e), FRAC_MIN, FRAC_MAX))


def choose_frac_int(max_abs: int, frac: int, headroom: int = HEADROOM_BITS) -> int:
    """choose_frac of max_abs * 2**-frac for an integer max-abs (e.g. a kernel's stats entry)."""
    max_abs = int(max_abs)
    if max_abs < 0:
        raise ValueError(f"max_abs must be >= 0, got {max_abs}")
    if max_abs == 0:
        return ZERO_FRAC
    return int(np.clip(15 - headroom - max_abs.bit_length() + int(frac), FRAC_MIN, FRAC_MAX))


def topk_select(scores: np.ndarray, k: int) -> np.ndarray:
    """§1.4 top-k along the last axis: the k winners (larger value first, lower index on ties),
    returned in ascending index order, int64 array of shape scores.shape[:-1] + (k,)."""
    s = np.asarray(scores)
    if s.ndim < 1:
        raise ValueError("topk_select: scores must have at least one dimension")
    n = s.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"topk_select: k must be in [1, {n}], got {k}")
    if s.dtype.kind in "iub":
        key = -s.astype(np.int64)
    elif s.dtype.kind == "f":
        if np.isnan(s).any():
            raise ValueError("topk_select: scores contain NaN")
        key = -s.astype(np.float64)
    else:
        raise TypeError(f"topk_select: unsupported dtype {s.dtype}")
    order = np.argsort(key, axis=-1, kind="stable")[..., :k]
    return np.sort(order, axis=-1).astype(np.int64)


def bit_length(v: np.ndarray) -> np.ndarray:
    """Elementwise bit length of non-negative int64 values below 2**53 (frexp exponent, exact)."""
    return np.frexp(np.asarray(v, dtype=np.int64).astype(np.float64))[1].astype(np.int64)


def exp2_neg(u: np.ndarray) -> np.ndarray:
    """§1.5 e = 2**(-u/256) in Q1.15 for u >= 0 in Q.8: EXP2_LUT[u & 255] >> (u >> 8), 0 once u >> 8 >= 16."""
    u = np.asarray(u, dtype=np.int64)
    n = u >> 8
    e = EXP2_LUT[u & 255] >> np.minimum(n, 16)
    return np.where(n >= 16, 0, e)


def softmax_fwd(s: np.ndarray, frac_s: int, valid: np.ndarray | None = None) -> np.ndarray:
    """§1.5 softmax over the last axis of int16 scores (frac 0..15) -> int16 P in Q0.15.

    `valid` (bool, broadcastable to s) leaves masked entries out of max and sum; they get P = 0,
    and a row with no valid entry is all zero. Without a mask every entry takes part.
    """
    s = np.asarray(s)
    if s.dtype != np.int16:
        raise TypeError(f"softmax_fwd: scores must be int16, got {s.dtype}")
    if isinstance(frac_s, bool) or not 0 <= int(frac_s) <= 15:
        raise ValueError(f"softmax_fwd: frac_s must be in [0, 15], got {frac_s}")
    if s.ndim < 1 or s.shape[-1] == 0:
        raise ValueError("softmax_fwd: need a non-empty last axis")
    s64 = s.astype(np.int64)
    if valid is None:
        mask = np.ones(s.shape, dtype=bool)
    else:
        mask = np.broadcast_to(np.asarray(valid, dtype=bool), s.shape)
    m = np.max(np.where(mask, s64, INT16_MIN), axis=-1, keepdims=True)
    u = ((m - s64) * LOG2E_Q14) >> (int(frac_s) + 6)
    e = np.where(mask, exp2_neg(u), 0)
    total = e.sum(axis=-1, keepdims=True)
    empty = total == 0
    total = np.where(empty, 1 << 15, total)
    b = bit_length(total) - 1
    i = (total >> (b - 8)) & 255
    p = round_shift(e * RECIP_LUT[i], b + 1, "rne")  # one shift per row
    return saturate16(np.where(empty, 0, p))


def softmax_bwd(P: np.ndarray, dP: np.ndarray, frac_dp: int, frac_ds: int, seed: int,
                index: np.ndarray | None = None) -> np.ndarray:
    """§1.6 softmax backward over the last axis: int16 P (Q0.15) and dP (frac_dp) -> int16 dS (frac_ds), SR.

    `index` defaults to the flat row-major index of dS. Masked entries (P = 0) get dS = 0 up to SR
    (P_j = 0 makes the product 0 and floor((0 + r) / 2**shift) = 0).
    """
    P = np.asarray(P)
    dP = np.asarray(dP)
    if P.dtype != np.int16 or dP.dtype != np.int16:
        raise TypeError(f"softmax_bwd: P and dP must be int16, got {P.dtype}, {dP.dtype}")
    if P.shape != dP.shape:
        raise ValueError(f"softmax_bwd: shapes differ {P.shape} vs {dP.shape}")
    frac_dp, frac_ds = check_frac(frac_dp), check_frac(frac_ds)
    return requantize(softmax_bwd_acc(P, dP), frac_dp + 30 - frac_ds, "sr", seed, index)


def softmax_bwd_acc(P: np.ndarray, dP: np.ndarray) -> np.ndarray:
    """§1.6 accumulator P_j * ((dP_j << 15) - sum_k dP_k P_k), int64 at frac frac_dp + 30."""
    p64 = np.asarray(P).astype(np.int64)
    dp64 = np.asarray(dP).astype(np.int64)
    dot = np.sum(dp64 * p64, axis=-1, keepdims=True)
    return p64 * ((dp64 << 15) - dot)
