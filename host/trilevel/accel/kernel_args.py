"""Argument layouts and checks shared by the backends that run the HLS kernels (`csim`, `pynq`).

Both hand the same C++ kernels the same operands: one definition here keeps them identical. Buffer
layouts map the kernel's C argument names (the pynq register names) to (shape, dtype).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from trilevel.intref.fixed import QTensor
from trilevel.intref.optim import AdamWScalars, SgdmScalars

# Parameter order of the block kernels (the C `params` pointer tables, `pfrac` arrays).
ATTN_PARAMS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
)
MLP_PARAMS = (
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
Layout = dict[str, tuple[tuple[int, ...], type]]


def attn_param_shapes(dim: int) -> tuple[tuple[int, ...], ...]:
    """Shapes of ATTN_PARAMS for embed dim `dim`."""
    return ((dim,), (dim,), (3 * dim, dim), (3 * dim,), (dim, dim), (dim,))


def mlp_param_shapes(dim: int, hidden: int) -> tuple[tuple[int, ...], ...]:
    """Shapes of MLP_PARAMS for embed dim `dim` and hidden width `hidden`."""
    return ((dim,), (dim,), (hidden, dim), (hidden,), (dim, hidden), (dim,))


# ------------------------------------------------------------------------------------- block layouts
def _block_fwd_outputs(nb: int, nt: int, dim: int) -> Layout:
    """What every block forward returns: out, and its LayerNorm's z, xhat, rsqrt, kk."""
    tokens = (nb, nt, dim)
    return {
        "out": (tokens, np.int16),
        "z": (tokens, np.int16),
        "xhat": (tokens, np.int16),
        "rsqrt": ((nb, nt, 1), np.int32),
        "kk": ((nb, nt, 1), np.int32),
    }


def mlp_fwd_outputs(nb: int, nt: int, dim: int, hidden: int) -> Layout:
    """Output buffers of the mlp_fwd kernel."""
    hidden_act = ((nb, nt, hidden), np.int16)
    return {**_block_fwd_outputs(nb, nt, dim), "h": hidden_act, "a": hidden_act}


def attn_fwd_outputs(nb: int, nt: int, dim: int, num_heads: int) -> Layout:
    """Output buffers of the attn_fwd kernel (probs in the compact layout of compact_probs)."""
    return {
        **_block_fwd_outputs(nb, nt, dim),
        "qkv": ((nb, nt, 3 * dim), np.int16),
        "ctx": ((nb, nt, dim), np.int16),
        "probs": ((nb, num_heads, nt, nt), np.int16),
        "attn_sum": ((nb, nt, nt), np.int32),
    }


def _ln_saved(out: Mapping[str, np.ndarray], frac_x: int) -> dict[str, object]:
    return {
        "xhat": out["xhat"],
        "rsqrt": out["rsqrt"].astype(np.int64),
        "k": out["kk"].astype(np.int64),
        "frac_x": frac_x,
    }


def mlp_fwd_saved(out: Mapping[str, np.ndarray], frac_x: int, f: Mapping[str, int]) -> dict[str, object]:
    """intref.blocks.mlp_block_fwd's `saved` from the kernel's outputs."""
    h = QTensor(out["h"], f["h"])
    return {
        "ln": _ln_saved(out, frac_x),
        "z": QTensor(out["z"], f["ln"]),
        "h": h,
        "a": QTensor(out["a"], f["a"]),
        "gelu": {"x": h},
    }


def saved_ln_inputs(ln: Mapping[str, object], nb: int, nt: int) -> dict[str, np.ndarray]:
    """The backward kernels' LayerNorm operands (xhat, rsqrt, kk) from a forward's saved["ln"]."""
    return {
        "xhat": np.ascontiguousarray(ln["xhat"], dtype=np.int16),
        "rsqrt": np.ascontiguousarray(ln["rsqrt"], dtype=np.int32).reshape(nb, nt),
        "kk": np.ascontiguousarray(ln["k"], dtype=np.int32).reshape(nb, nt),
    }


# ---------------------------------------------------------------------------------- attention layouts
def check_heads(dim: int, num_heads: int) -> None:
    """The HLS attention kernels' head split: dim divisible by num_heads, a power-of-4 head_dim."""
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
    head_dim = dim // num_heads
    if head_dim & (head_dim - 1) or (head_dim.bit_length() - 1) % 2:
        raise ValueError(
            f"the HLS attention kernels need a power-of-4 head_dim (1/sqrt as a shift), got {head_dim}"
        )


def conn_lists(
    conn: np.ndarray | None, batch: int, length: int, dense_rows: int
) -> tuple[np.ndarray | None, int]:
    """Validated int32 connection lists [B, T - dense_rows, C] (or None) and C (0 without)."""
    if conn is None:
        return None, 0
    c = np.asarray(conn)
    if (
        c.dtype.kind not in "iu"
        or c.ndim != 3
        or c.shape[:2] != (batch, length - dense_rows)
        or not c.shape[2]
    ):
        raise ValueError(
            f"conn must be integer [B={batch}, T - dense_rows={length - dense_rows}, C], "
            f"got {c.dtype} {c.shape}"
        )
    if c.min() < 0 or c.max() >= length:
        raise ValueError(f"conn indices must lie in 0..{length - 1}")
    if np.any(np.diff(np.sort(c, axis=-1), axis=-1) == 0):
        raise ValueError("conn rows must not repeat a key")
    return np.ascontiguousarray(c, dtype=np.int32), c.shape[2]


def dense_probs(compact: np.ndarray, conn: np.ndarray | None, dense_rows: int) -> np.ndarray:
    """Scatter compact probabilities [B, H, T, T] to the dense layout (0 on dropped connections)."""
    if conn is None:
        return compact
    r, c = dense_rows, conn.shape[2]
    dense = np.zeros_like(compact)
    dense[:, :, :r] = compact[:, :, :r]
    keys = np.broadcast_to(conn[:, None], compact[:, :, r:, :c].shape)
    np.put_along_axis(dense[:, :, r:], keys, compact[:, :, r:, :c], axis=-1)
    return dense


def compact_probs(dense: np.ndarray, conn: np.ndarray | None, dense_rows: int) -> np.ndarray:
    """Gather dense probabilities [B, H, T, T] into the kernel's compact layout (row q: its C keys)."""
    if conn is None:
        return np.ascontiguousarray(dense, dtype=np.int16)
    r, c = dense_rows, conn.shape[2]
    compact = np.zeros(dense.shape, np.int16)
    compact[:, :, :r] = dense[:, :, :r]
    keys = np.broadcast_to(conn[:, None], dense[:, :, r:, :c].shape)
    compact[:, :, r:, :c] = np.take_along_axis(dense[:, :, r:], keys, axis=-1)
    return compact


def attn_fwd_saved(
    out: Mapping[str, np.ndarray],
    frac_x: int,
    f: Mapping[str, int],
    num_heads: int,
    conn: np.ndarray | None,
    conn_i32: np.ndarray | None,
    dense_rows: int,
) -> dict[str, object]:
    """intref.blocks.attn_block_fwd's `saved` from the kernel's outputs, plus "probs_compact";
    conn_i32: conn as conn_lists returned it."""
    return {
        "ln": _ln_saved(out, frac_x),
        "z": QTensor(out["z"], f["ln"]),
        "qkv": QTensor(out["qkv"], f["qkv"]),
        "probs": dense_probs(out["probs"], conn_i32, dense_rows),
        "ctx": QTensor(out["ctx"], f["ctx"]),
        "num_heads": num_heads,
        "attn_sum": out["attn_sum"].astype(np.int64),
        "conn": conn,
        "dense_rows": dense_rows,
        "probs_compact": out["probs"],
    }


def saved_attn_layout(
    saved: Mapping[str, object], batch: int, length: int
) -> tuple[np.ndarray | None, int, int, np.ndarray]:
    """An attention forward's connections for attn_bwd: (int32 conn or None, C, dense_rows, compact probs).
    A reference-made `saved` has no "probs_compact": its dense probabilities are gathered."""
    dense_rows = int(saved.get("dense_rows", 1))
    conn, keep = conn_lists(saved.get("conn"), batch, length, dense_rows)
    probs = saved.get("probs_compact")
    if probs is None:
        probs = compact_probs(np.asarray(saved["probs"]), conn, dense_rows)
    return conn, keep, dense_rows, np.ascontiguousarray(probs, dtype=np.int16)


def named_stats(names: tuple[str, ...], stats: np.ndarray) -> dict[str, int]:
    """A kernel's stats array as {frac name: max |value|}."""
    return dict(zip(names, map(int, stats), strict=False))


# ------------------------------------------------------------------------------------------- top-k
def topk_args(
    scores: np.ndarray, k: int, connections: bool, has_cls: bool, max_n: int | None = None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Checked topk_prune operands: (int32 scores, output shape).

    Tokens: scores [B, N] -> [B, k]; connections: attn_sum [B, T, T] -> [B, T - r, k + r] with
    r = has_cls (the CLS row and column stay dense). `max_n`: the unit's largest N, if checked here.
    """
    s = np.asarray(scores)
    if connections and (s.ndim != 3 or s.shape[1] != s.shape[2]):
        raise ValueError(f"attn_sum must be [B, T, T], got {s.shape}")
    if not connections and s.ndim != 2:
        raise ValueError(f"token scores must be [B, N], got {s.shape}")
    if s.dtype.kind not in "iu":
        raise TypeError(f"top-k scores must be integers, got {s.dtype}")
    if s.size and (s.min() < -(2**31) or s.max() >= 2**31):
        raise ValueError("top-k scores must fit int32")
    nb, n = s.shape[0], s.shape[1]
    r = int(connections and has_cls)
    if not 1 <= k <= n - r:
        raise ValueError(f"top-k: k must be in [1, {n - r}], got {k}")
    if max_n is not None and n > max_n:
        raise ValueError(f"top-k: {n} scores exceed the unit's maximum {max_n}")
    shape = (nb, n - r, k + r) if connections else (nb, k)
    return np.ascontiguousarray(s, dtype=np.int32), shape


# --------------------------------------------------------------------------------------- optimizer
def check_optimizer_args(
    kernel: str,
    master: np.ndarray,
    m: np.ndarray,
    v: np.ndarray | None,
    grad_acc: np.ndarray,
    batch: int,
    contiguous: bool = True,
) -> None:
    """optimizer_step's operands: int64 grad_acc, batch >= 1, writeable float32 master/m/v of its shape
    (C-contiguous too where the kernel updates them in place, not through a copy)."""
    if not isinstance(grad_acc, np.ndarray) or grad_acc.dtype != np.int64:
        raise TypeError(
            f"{kernel}: gradient accumulator must be int64, got {getattr(grad_acc, 'dtype', None)}"
        )
    if batch < 1:
        raise ValueError(f"{kernel}: batch must be >= 1, got {batch}")
    for name, a in (("master", master), ("m", m)) + ((("v", v),) if v is not None else ()):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != grad_acc.shape:
            raise ValueError(
                f"{kernel}: {name} must be float32 {grad_acc.shape}, got "
                f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}"
            )
        if contiguous and not (a.flags.c_contiguous and a.flags.writeable):
            raise ValueError(f"{kernel}: {name} must be a writeable C-contiguous array (updated in place)")
        if not a.flags.writeable:
            raise ValueError(f"{kernel}: {name} must be writeable (updated in place)")


def adamw_scalars(s: AdamWScalars) -> list[np.float32]:
    """AdamWScalars in the kernel's `scal` order."""
    return [
        s.decay,
        s.beta1,
        s.one_minus_beta1,
        s.beta2,
        s.one_minus_beta2,
        s.step_size,
        s.inv_sqrt_bc2,
        s.eps,
    ]


def sgdm_scalars(s: SgdmScalars) -> list[np.float32]:
    """SgdmScalars in the kernel's `scal` order."""
    return [s.lr, s.momentum, s.weight_decay]


def scal_array(scalars: list) -> np.ndarray:
    """The kernel's 8-entry float32 `scal` array (unused entries 0)."""
    return np.array(list(scalars) + [0.0] * (8 - len(scalars)), np.float32)
