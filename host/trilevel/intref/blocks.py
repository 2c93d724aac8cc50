"""Transformer block kernels of the integer reference: attention and MLP halves (docs/numerics.md §2.9-2.10).

Same convention as layers.py. Parameter names are the golden model's `blocks.<i>.` state_dict names:
attention: "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
"attn.proj.bias"; MLP: "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
"mlp.fc2.weight", "mlp.fc2.bias". `grads` uses the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import isqrt

import numpy as np

from trilevel.intref.fixed import PROB_FRAC, QTensor, max_abs_out, requantize, softmax_bwd_acc, softmax_fwd
from trilevel.intref.layers import (
    Saved,
    Stats,
    gelu_bwd,
    gelu_fwd,
    layernorm_bwd,
    layernorm_fwd,
    linear_bwd,
    linear_fwd,
    ln_xhat_frac,
    need_fracs,
    subseed,
)

ATTN_FWD_FRACS = ("ln", "qkv", "s", "ctx", "out")
ATTN_BWD_FRACS = ("dctx", "dp", "ds", "dqkv", "dln", "ln_g", "ln_t", "dx")
MLP_FWD_FRACS = ("ln", "h", "a", "out")
MLP_BWD_FRACS = ("da", "dh", "dln", "ln_g", "ln_t", "dx")
# Fracs the softmax unit accepts for its scores (§1.5); the host clamps "s" into this range.
SCORE_FRAC_RANGE = (0, 15)


def _sub(params: Mapping[str, QTensor], prefix: str) -> dict[str, QTensor]:
    return {name[len(prefix):]: p for name, p in params.items() if name.startswith(prefix)}


def _sub_grads(grads: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name[len(prefix):]: g for name, g in grads.items() if name.startswith(prefix)}


def _prefixed(d: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {prefix + k: v for k, v in d.items()}


def attn_scale(head_dim: int) -> tuple[int, int]:
    """1/sqrt(head_dim) as (multiplier, extra frac bits): (1, log4(hd)) for powers of 4 (a pure frac
    change), else (round(2**15 / sqrt(hd)), 15), a Q0.15 multiplier (§2.9)."""
    if head_dim < 1:
        raise ValueError(f"head_dim must be >= 1, got {head_dim}")
    root = isqrt(head_dim)
    if root * root == head_dim and root & (root - 1) == 0:
        return 1, root.bit_length() - 1
    return int(np.floor(2**15 / np.sqrt(head_dim) + 0.5)), 15


def connection_mask(conn: np.ndarray | None, batch: int, length: int, dense_rows: int) -> np.ndarray | None:
    """Boolean [B, T, T] mask of kept connections from conn [B, T - dense_rows, C] (dense rows all True)."""
    if conn is None:
        return None
    conn = np.asarray(conn)
    if conn.ndim != 3 or conn.shape[:2] != (batch, length - dense_rows):
        want = f"[B={batch}, T - dense_rows={length - dense_rows}, C]"
        raise ValueError(f"conn must be {want}, got {conn.shape}")
    if conn.size and (conn.min() < 0 or conn.max() >= length):
        raise ValueError(f"conn indices must lie in 0..{length - 1}")
    mask = np.zeros((batch, length, length), dtype=bool)
    mask[:, :dense_rows] = True
    rows = np.arange(dense_rows, length)[None, :, None]
    mask[np.arange(batch)[:, None, None], rows, conn] = True
    return mask


def _heads(t: np.ndarray, num_heads: int) -> np.ndarray:
    """[B, T, D] -> [B, H, T, hd]."""
    b, n, d = t.shape
    return t.reshape(b, n, num_heads, d // num_heads).transpose(0, 2, 1, 3)


def _merge(t: np.ndarray) -> np.ndarray:
    """[B, H, T, hd] -> [B, T, D]."""
    b, h, n, hd = t.shape
    return t.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


def attn_block_fwd(x: QTensor, params: Mapping[str, QTensor], fracs: Mapping[str, int], num_heads: int,
                   conn: np.ndarray | None = None, dense_rows: int = 1) -> tuple[QTensor, Stats, Saved]:
    """out = x + proj(attention(LN1(x))), attention per head over all keys or, for the rows after the
    `dense_rows` dense ones ([CLS]), over the keys in conn[B, T - dense_rows, C] (§1.4 lists).

    Returns (out, stats, saved); saved["attn_sum"] is the head-sum of the probabilities, int64
    [B, T, T] at frac 15 (0 on dropped connections): the top-k unit's input.
    """
    f = need_fracs(fracs, ATTN_FWD_FRACS, "attn_block_fwd")
    if not SCORE_FRAC_RANGE[0] <= f["s"] <= SCORE_FRAC_RANGE[1]:
        raise ValueError(f"attn_block_fwd: score frac must be in {SCORE_FRAC_RANGE}, got {f['s']}")
    batch, length, dim = x.data.shape
    if dim % num_heads:
        raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
    z, st_ln, sv_ln = layernorm_fwd(x, _sub(params, "norm1."), {"y": f["ln"]})
    qkv, st_qkv, _ = linear_fwd(z, _sub(params, "attn.qkv."), {"y": f["qkv"]})
    q, k, v = (_heads(part, num_heads) for part in np.split(qkv.data.astype(np.int64), 3, axis=-1))
    mult, extra = attn_scale(dim // num_heads)
    s_acc = np.einsum("bhqd,bhkd->bhqk", q, k) * mult
    s_shift = 2 * qkv.frac + extra - f["s"]
    scores = requantize(s_acc, s_shift, "rne")
    mask = connection_mask(conn, batch, length, dense_rows)
    probs = softmax_fwd(scores, f["s"], None if mask is None else mask[:, None])
    ctx_acc = np.einsum("bhqk,bhkd->bhqd", probs.astype(np.int64), v)
    ctx_shift = PROB_FRAC + qkv.frac - f["ctx"]
    ctx = QTensor(requantize(_merge(ctx_acc), ctx_shift, "rne"), f["ctx"])
    out, st_out, _ = linear_fwd(ctx, _sub(params, "attn.proj."), {"y": f["out"]}, residual=x)
    # Statistics cover only the computed (kept) connections: the accelerator never forms the others.
    s_kept = s_acc if mask is None else np.where(mask[:, None], s_acc, 0)
    stats = {"ln": st_ln["y"], "qkv": st_qkv["y"], "s": max_abs_out(s_kept, s_shift),
             "ctx": max_abs_out(ctx_acc, ctx_shift), "out": st_out["y"]}
    saved = {"ln": sv_ln, "z": z, "qkv": qkv, "probs": probs, "ctx": ctx, "num_heads": num_heads,
             "attn_sum": probs.astype(np.int64).sum(axis=1), "conn": conn, "dense_rows": dense_rows}
    return out, stats, saved


def attn_block_bwd(dout: QTensor, saved: Saved, params: Mapping[str, QTensor],
                   grads: Mapping[str, np.ndarray], fracs: Mapping[str, int], seed: int
                   ) -> tuple[QTensor, Stats, Stats]:
    """Backward of attn_block_fwd; SR points in ATTN_BWD_FRACS order (subseed(seed, i)).

    dctx = dout Wproj; dP = dctx_h V_h^T; dV = P^T dctx_h; dS = softmax_bwd; dQ = dS K scale,
    dK = dS^T Q scale, all three into one [B, T, 3D] dqkv tensor (one frac, one SR index space);
    dz = dqkv Wqkv; dx = LN1 backward of dz plus the residual dout, rounded once.
    """
    f = need_fracs(fracs, ATTN_BWD_FRACS, "attn_block_bwd")
    num_heads: int = saved["num_heads"]  # type: ignore[assignment]
    qkv: QTensor = saved["qkv"]  # type: ignore[assignment]
    probs = saved["probs"].astype(np.int64)  # type: ignore[union-attr]
    dim = dout.data.shape[-1]
    gf: Stats = {}

    dctx, st_dctx, g = linear_bwd(dout, {"x": saved["ctx"]}, _sub(params, "attn.proj."),
                                  _sub_grads(grads, "attn.proj."), {"dx": f["dctx"]}, subseed(seed, 0))
    gf.update(_prefixed(g, "attn.proj."))
    q, k, v = (_heads(part, num_heads) for part in np.split(qkv.data.astype(np.int64), 3, axis=-1))
    dctx_h = _heads(dctx.data.astype(np.int64), num_heads)
    dp_acc = np.einsum("bhqd,bhkd->bhqk", dctx_h, v)
    dp_shift = dctx.frac + qkv.frac - f["dp"]
    dp = requantize(dp_acc, dp_shift, "sr", subseed(seed, 1))
    ds_acc = softmax_bwd_acc(probs, dp)  # = softmax_bwd(P, dP, ...) before its rounding
    ds_shift = f["dp"] + 30 - f["ds"]
    ds = requantize(ds_acc, ds_shift, "sr", subseed(seed, 2)).astype(np.int64)
    mult, extra = attn_scale(dim // num_heads)
    dq_acc = np.einsum("bhqk,bhkd->bhqd", ds, k) * mult
    dk_acc = np.einsum("bhqk,bhqd->bhkd", ds, q) * mult
    dv_acc = np.einsum("bhqk,bhqd->bhkd", probs, dctx_h)
    # One [B, T, 3D] accumulator; Q/K parts at frac fds + fqkv + extra, V part at 15 + fdctx.
    shifts = np.concatenate([np.full(2 * dim, f["ds"] + qkv.frac + extra - f["dqkv"]),
                             np.full(dim, PROB_FRAC + dctx.frac - f["dqkv"])])
    dqkv_acc = np.concatenate([_merge(dq_acc), _merge(dk_acc), _merge(dv_acc)], axis=-1)
    dqkv = QTensor(requantize(dqkv_acc, shifts, "sr", subseed(seed, 3)), f["dqkv"])
    dz, st_dz, g = linear_bwd(dqkv, {"x": saved["z"]}, _sub(params, "attn.qkv."),
                              _sub_grads(grads, "attn.qkv."), {"dx": f["dln"]}, subseed(seed, 4))
    gf.update(_prefixed(g, "attn.qkv."))
    dx, st_ln, g = layernorm_bwd(dz, saved["ln"], _sub(params, "norm1."), _sub_grads(grads, "norm1."),
                                 {"g": f["ln_g"], "t": f["ln_t"], "dx": f["dx"]}, subseed(seed, 5),
                                 residual=dout)
    gf.update(_prefixed(g, "norm1."))
    mask = connection_mask(saved.get("conn"), dp_acc.shape[0], dp_acc.shape[-1],  # type: ignore[arg-type]
                           int(saved.get("dense_rows", 1)))  # type: ignore[arg-type]
    dp_kept = dp_acc if mask is None else np.where(mask[:, None], dp_acc, 0)
    stats = {"dctx": st_dctx["dx"], "dp": max_abs_out(dp_kept, dp_shift),
             "ds": max_abs_out(ds_acc, ds_shift),
             "dqkv": max_abs_out(dqkv_acc, shifts), "dln": st_dz["dx"],
             "ln_g": st_ln["g"], "ln_t": st_ln["t"], "dx": st_ln["dx"]}
    return dx, stats, gf


def mlp_block_fwd(x: QTensor, params: Mapping[str, QTensor], fracs: Mapping[str, int]
                  ) -> tuple[QTensor, Stats, Saved]:
    """out = x + fc2(GELU(fc1(LN2(x)))); RNE at "ln", "h", "a", "out"."""
    f = need_fracs(fracs, MLP_FWD_FRACS, "mlp_block_fwd")
    z, st_ln, sv_ln = layernorm_fwd(x, _sub(params, "norm2."), {"y": f["ln"]})
    h, st_h, _ = linear_fwd(z, _sub(params, "mlp.fc1."), {"y": f["h"]})
    a, st_a, sv_gelu = gelu_fwd(h, {"y": f["a"]})
    out, st_out, _ = linear_fwd(a, _sub(params, "mlp.fc2."), {"y": f["out"]}, residual=x)
    stats = {"ln": st_ln["y"], "h": st_h["y"], "a": st_a["y"], "out": st_out["y"]}
    return out, stats, {"ln": sv_ln, "z": z, "h": h, "a": a, "gelu": sv_gelu}


def mlp_block_bwd(dout: QTensor, saved: Saved, params: Mapping[str, QTensor], grads: Mapping[str, np.ndarray],
                  fracs: Mapping[str, int], seed: int) -> tuple[QTensor, Stats, Stats]:
    """Backward of mlp_block_fwd; SR points in MLP_BWD_FRACS order (subseed(seed, i))."""
    f = need_fracs(fracs, MLP_BWD_FRACS, "mlp_block_bwd")
    gf: Stats = {}
    da, st_da, g = linear_bwd(dout, {"x": saved["a"]}, _sub(params, "mlp.fc2."),
                              _sub_grads(grads, "mlp.fc2."), {"dx": f["da"]}, subseed(seed, 0))
    gf.update(_prefixed(g, "mlp.fc2."))
    dh, st_dh = gelu_bwd(da, saved["gelu"], {"dx": f["dh"]}, subseed(seed, 1))
    dz, st_dz, g = linear_bwd(dh, {"x": saved["z"]}, _sub(params, "mlp.fc1."), _sub_grads(grads, "mlp.fc1."),
                              {"dx": f["dln"]}, subseed(seed, 2))
    gf.update(_prefixed(g, "mlp.fc1."))
    dx, st_ln, g = layernorm_bwd(dz, saved["ln"], _sub(params, "norm2."), _sub_grads(grads, "norm2."),
                                 {"g": f["ln_g"], "t": f["ln_t"], "dx": f["dx"]}, subseed(seed, 3),
                                 residual=dout)
    gf.update(_prefixed(g, "norm2."))
    stats = {"da": st_da["dx"], "dh": st_dh["dx"], "dln": st_dz["dx"],
             "ln_g": st_ln["g"], "ln_t": st_ln["t"], "dx": st_ln["dx"]}
    return dx, stats, gf


def attn_grad_fracs(dim: int, fracs: Mapping[str, int], frac_dout: int, frac_ctx: int, frac_z: int) -> Stats:
    """The fracs of the gradients attn_block_bwd adds (its linear and LayerNorm backwards' grad_fracs):
    for a kernel that computes the block in one piece. `fracs`: ATTN_BWD_FRACS."""
    return {"attn.proj.weight": frac_dout + frac_ctx, "attn.proj.bias": frac_dout,
            "attn.qkv.weight": fracs["dqkv"] + frac_z, "attn.qkv.bias": fracs["dqkv"],
            "norm1.weight": fracs["dln"] + ln_xhat_frac(dim), "norm1.bias": fracs["dln"]}


def mlp_grad_fracs(dim: int, fracs: Mapping[str, int], frac_dout: int, frac_a: int, frac_z: int) -> Stats:
    """As attn_grad_fracs for mlp_block_bwd. `fracs`: MLP_BWD_FRACS."""
    return {"mlp.fc2.weight": frac_dout + frac_a, "mlp.fc2.bias": frac_dout,
            "mlp.fc1.weight": fracs["dh"] + frac_z, "mlp.fc1.bias": fracs["dh"],
            "norm2.weight": fracs["dln"] + ln_xhat_frac(dim), "norm2.bias": fracs["dln"]}
