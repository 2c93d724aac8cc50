"""A numpy model of the engine's on-chip commands (docs/engine.md), built from trilevel.intref's
primitives: the expected values of the RTL engine tests. Memories are flat numpy arrays (SPM int16,
ACC int64 holding 48-bit values, STAT int64); fields are isa.decode() dictionaries."""

from __future__ import annotations

import numpy as np

from trilevel.intref.fixed import round_shift, saturate16
from trilevel.intref.layers import align

INT63 = (1 << 63) - 1
ACC_LIMIT = 1 << 47


def _matrix(mem: np.ndarray, base: int, stride: int, rows: int, cols: int, transposed: bool) -> np.ndarray:
    """X(r, c) = mem[base + r*stride + c], or mem[base + c*stride + r] when transposed."""
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    addr = base + (c * stride + r if transposed else r * stride + c)
    return mem[addr]


def units(v: np.ndarray, shift: int) -> int:
    """Max |v| in output units (|v| >> s, or |v| << -s saturating at 2**63 - 1)."""
    if v.size == 0:
        return 0
    mag = int(np.max(np.abs(v.astype(object))))
    return min(mag >> shift if shift >= 0 else mag << -shift, INT63)


def gemm(f: dict[str, int], spm: np.ndarray, acc: np.ndarray, stat: np.ndarray) -> None:
    """Executes one GEMM command in place (docs/engine.md "GEMM")."""
    m, n, k = f["m"], f["n"], f["k"]
    a = _matrix(spm, f["a_addr"], f["a_stride"], m, k, bool(f["ta"])).astype(np.int64)
    b = _matrix(spm, f["b_addr"], f["b_stride"], n, k, bool(f["tb"])).astype(np.int64)
    dot = a @ b.T
    rows = np.arange(m)[:, None]
    cols = np.arange(n)[None, :]
    if f["acc"]:
        addr = f["f_addr"] + rows * f["c_stride"] + cols
        new = acc[addr] + dot
        if np.any(np.abs(new) >= ACC_LIMIT) and (np.any(new >= ACC_LIMIT) or np.any(new < -ACC_LIMIT)):
            raise OverflowError("ACC_RANGE")
        acc[addr] = new
        return
    v = dot * np.int64(f["imm"])
    e = None
    if f["res"] or f["mask"]:
        e = _matrix(spm, f["e_addr"], f["e_stride"], m, n, False).astype(np.int64)
    if f["bias"]:
        v = v + align(spm[f["d_addr"] + np.arange(n)], f["shift2"], 0)[None, :]
    if f["res"]:
        v = v + align(e, f["shift3"], 0)
    index = (f["index_base"] + rows * f["index_stride"] + cols) & 0xFFFFFFFF
    mode = "sr" if f["sr"] else "rne"
    out = saturate16(round_shift(v, f["shift"], mode, f["seed"], index.astype(np.uint32)))
    spm[f["c_addr"] + rows * f["c_stride"] + cols] = out
    if f["stat"]:
        kept = v[e != 0] if f["mask"] else v
        stat[f["slot"]] = max(int(stat[f["slot"]]), units(kept, f["shift"]))
