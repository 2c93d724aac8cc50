"""The HLS C++ engine's C-sim (hls/engine, build/csim/libtrilevel_csim.so) command by command against
trilevel.intref, on hand-encoded programs: DMA, GEMM, softmax, every VEC sub-operation, top-k, the
statistics, the error codes, the deadlock check and the counters."""

from __future__ import annotations

import ctypes
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trilevel import rtl_cycles
from trilevel.accel import isa
from trilevel.accel.isa import Err, Mem, Op, SoftmaxSub, Vec
from trilevel.intref import fixed, layers
from trilevel.intref.blocks import connection_mask
from trilevel.intref.fixed import QTensor

ROOT = Path(__file__).resolve().parents[1]
CONFIG_NAMES = ("array_rows", "array_cols", "spm_elems", "acc_elems", "idx_elems", "stat_slots", "vec_lanes",
                "softmax_units", "max_row", "axi_bytes", "queue_depth", "isa_version", "max_dim")
DDR_BYTES = 1 << 21
VITIS_SOURCES = ("engine.cpp", "dma.cpp", "compute.cpp")  # hls/tcl/engine.tcl's sources
PROGRAM_BYTES = 1 << 15  # room for 512 commands at DDR offset 0
WAITING_LOAD = {"sub": Mem.SPM, "m": 1, "n": 4, "index_base": PROGRAM_BYTES, "pop_next": 1}


def _build_csim():
    spec = importlib.util.spec_from_file_location("build_csim", ROOT / "hls" / "build_csim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Engine:
    """ctypes view of the engine C API."""

    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.lib.tl_engine_run.restype = ctypes.c_uint32
        self.lib.tl_engine_run.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint32,
                                           ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32),
                                           ctypes.POINTER(ctypes.c_uint32), ctypes.c_void_p]
        self.lib.tl_engine_set_queue_depth.argtypes = [ctypes.c_char_p, ctypes.c_int]
        out = (ctypes.c_uint32 * 16)()
        n = self.lib.tl_engine_config(out, 16)
        self.config = dict(zip(CONFIG_NAMES, out[:n], strict=True))

    def run(self, ddr: np.ndarray, cmd_addr: int, count: int) -> dict:
        err, pc, retired = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint32()
        counters = np.zeros(isa.N_COUNTERS, dtype=np.uint64)
        ctrl = self.lib.tl_engine_run(ddr.ctypes.data, ddr.nbytes, cmd_addr, count, ctypes.byref(err),
                                      ctypes.byref(pc), ctypes.byref(retired), counters.ctypes.data)
        return {"ctrl": ctrl, "error": Err(err.value), "err_pc": pc.value, "retired": retired.value,
                "counters": dict(zip(isa.COUNTERS, (int(c) for c in counters), strict=True))}

    def set_depth(self, name: str, depth: int) -> int:
        return self.lib.tl_engine_set_queue_depth(name.encode(), depth)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(_build_csim().build())


class Program:
    """A DDR image with a program at offset 0 and data after it. Commands are appended in program order;
    dependency tokens are added between phases (LOAD -> COMPUTE -> STORE, and back for reuse)."""

    def __init__(self) -> None:
        self.ddr = np.zeros(DDR_BYTES, dtype=np.uint8)
        self.cmds: list[tuple[Op, dict]] = []
        self.free = PROGRAM_BYTES
        self.results: list = []

    # ---------------------------------------------------------------------------- DDR data
    def alloc(self, nbytes: int, align: int = 16) -> int:
        addr = -(-self.free // align) * align
        self.free = addr + nbytes
        assert self.free <= DDR_BYTES
        return addr

    def put(self, arr: np.ndarray, align: int = 16) -> int:
        arr = np.ascontiguousarray(arr)
        addr = self.alloc(arr.nbytes, align)
        self.ddr[addr:addr + arr.nbytes] = arr.view(np.uint8).ravel()
        return addr

    def get(self, addr: int, dtype, shape) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.ddr[addr:addr + n].view(dtype).reshape(shape).copy()

    # ------------------------------------------------------------------------------ commands
    def add(self, op: Op, **fields: int) -> None:
        module = isa.MODULE_OF[op]
        if self.cmds and op != Op.FINISH:  # FINISH takes no tokens: it waits for the drain itself
            prev_op, prev = self.cmds[-1]
            pm = isa.MODULE_OF[prev_op]
            if pm == isa.Module.LOAD and module == isa.Module.COMPUTE:
                prev["push_next"], fields["pop_prev"] = 1, 1
            elif pm == isa.Module.COMPUTE and module == isa.Module.STORE and prev_op != Op.FINISH:
                prev["push_next"], fields["pop_prev"] = 1, 1
            elif pm == isa.Module.COMPUTE and module == isa.Module.LOAD:
                prev["push_prev"], fields["pop_next"] = 1, 1
            elif pm == isa.Module.STORE and module == isa.Module.COMPUTE:
                prev["push_prev"], fields["pop_next"] = 1, 1
        self.cmds.append((op, fields))

    def load(self, mem: Mem, arr: np.ndarray, at: int, stride: int | None = None, **extra: int) -> None:
        """Put a 2-D array into DDR and LOAD it to on-chip address `at` (row stride `stride`)."""
        arr = np.atleast_2d(arr)
        m, n = arr.shape
        ddr = self.put(arr)
        self.add(Op.LOAD, sub=mem, m=m, n=n, index_base=ddr, index_stride=arr.strides[0], a_addr=at,
                 a_stride=n if stride is None else stride, **extra)

    def store(self, mem: Mem, at: int, m: int, n: int, dtype, stride: int | None = None) -> int:
        """STORE an m x n on-chip region to fresh DDR; returns the result's index for `result()`."""
        size = np.dtype(dtype).itemsize
        ddr = self.alloc(m * n * size)
        self.add(Op.STORE, sub=mem, m=m, n=n, index_base=ddr, index_stride=n * size, a_addr=at,
                 a_stride=n if stride is None else stride)
        self.results.append((ddr, dtype, (m, n)))
        return len(self.results) - 1

    def stat(self, slot: int, count: int = 1) -> int:
        return self.store(Mem.STAT, slot, 1, count, np.int64)

    def run(self, engine: Engine, finish: bool = True) -> dict:
        if finish:
            self.add(Op.FINISH)
        words = isa.program_words([isa.encode(op, **f) for op, f in self.cmds])
        assert words.nbytes <= PROGRAM_BYTES
        self.ddr[:words.nbytes] = words.view(np.uint8)
        return engine.run(self.ddr, 0, len(self.cmds))

    def result(self, i: int) -> np.ndarray:
        addr, dtype, shape = self.results[i]
        return self.get(addr, dtype, shape)


def ok(res: dict) -> dict:
    assert res["error"] == Err.NONE, res
    assert res["ctrl"] & isa.CTRL_DONE
    return res


def rand16(rng, shape, lo=-3000, hi=3000) -> np.ndarray:
    return rng.integers(lo, hi, shape).astype(np.int16)


def idx_grid(m: int, n: int, base: int = 0, stride: int | None = None) -> np.ndarray:
    stride = n if stride is None else stride
    return (base + np.arange(m)[:, None] * stride + np.arange(n)[None, :]).astype(np.int64)


# ==================================================================================== config
def test_config_matches_production_build(engine):
    p = isa.PRODUCTION
    want = {name: getattr(p, name) for name in CONFIG_NAMES if name != "isa_version"}
    want["isa_version"] = isa.ISA_VERSION
    assert engine.config == want


# ======================================================================================= DMA
def test_load_store_strides_unaligned_and_partial_beats(engine):
    rng = np.random.default_rng(0)
    x = rand16(rng, (5, 7), -32768, 32767)
    prog = Program()
    # source rows 2-byte aligned but not beat aligned, with a DDR row stride larger than the row
    src = prog.alloc(5 * 40) + 6
    for r in range(5):
        prog.ddr[src + 40 * r: src + 40 * r + 14] = x[r].view(np.uint8)
    prog.add(Op.LOAD, sub=Mem.SPM, m=5, n=7, index_base=src, index_stride=40, a_addr=100, a_stride=9)
    dst = prog.alloc(5 * 30 + 16) + 2
    guard = prog.ddr[dst - 2: dst + 5 * 30 + 2].copy()
    guard[:] = 0xA5
    prog.ddr[dst - 2: dst + 5 * 30 + 2] = guard
    prog.add(Op.STORE, sub=Mem.SPM, m=5, n=7, index_base=dst, index_stride=30, a_addr=100, a_stride=9)
    res = ok(prog.run(engine))
    for r in range(5):
        np.testing.assert_array_equal(prog.get(dst + 30 * r, np.int16, (7,)), x[r])
        gap = prog.ddr[dst + 30 * r + 14: dst + 30 * (r + 1)]
        assert (gap == 0xA5).all(), "bytes between stored rows were overwritten"
    assert prog.ddr[dst - 2: dst].tolist() == [0xA5, 0xA5]
    c = res["counters"]
    assert c["DDR_RD_BYTES"] == 3 * 64 + 70 and c["DDR_WR_BYTES"] == 70
    assert c["RETIRED"] == 3 == res["retired"]


def test_gather_scatter_zero_acc_idx(engine):
    rng = np.random.default_rng(1)
    table = rand16(rng, (10, 6))
    rows = np.array([7, 2, 2, 9], dtype=np.uint16)
    prog = Program()
    prog.load(Mem.IDX, rows, at=50)
    base = prog.put(table)
    prog.add(Op.LOAD, sub=Mem.SPM, m=4, n=6, index_base=base, index_stride=12, a_addr=0, a_stride=6, ta=1,
             b_addr=50)
    prog.add(Op.LOAD, sub=Mem.SPM, m=2, n=6, a_addr=24, a_stride=6, tb=1)  # zero fill
    gathered = prog.store(Mem.SPM, 0, 6, 6, np.int16)
    # scatter rows 0..3 of SPM to rows 1, 4, 0, 3 of a fresh 5-row DDR table (row stride 16 bytes)
    prog.load(Mem.IDX, np.array([1, 4, 0, 3], dtype=np.uint16), at=60)
    out = prog.alloc(5 * 16)
    prog.add(Op.STORE, sub=Mem.SPM, m=4, n=6, index_base=out, index_stride=16, a_addr=0, a_stride=6, ta=1,
             b_addr=60)
    accv = rng.integers(-(2**46), 2**46, (3, 5))
    prog.load(Mem.ACC, accv, at=1000, stride=8)
    acc_out = prog.store(Mem.ACC, 1000, 3, 5, np.int64, stride=8)
    idx_out = prog.store(Mem.IDX, 50, 1, 4, np.uint16)
    ok(prog.run(engine))
    want = np.zeros((6, 6), np.int16)
    want[:4] = table[rows]
    np.testing.assert_array_equal(prog.result(gathered), want)
    got = prog.get(out, np.int16, (5, 8))[:, :6]
    for r, dest in enumerate([1, 4, 0, 3]):
        np.testing.assert_array_equal(got[dest], table[rows[r]])
    np.testing.assert_array_equal(prog.result(acc_out), accv)
    np.testing.assert_array_equal(prog.result(idx_out)[0], rows)


# ====================================================================================== GEMM
def gemm_ref(a, b, *, imm=1, bias=None, shift2=0, res=None, shift3=0, shift=0, mode="rne", seed=0,
             index=None, mask=None):
    dot = a.astype(np.int64) @ b.astype(np.int64).T
    v = dot * imm
    if bias is not None:
        v = v + layers.align(bias, shift2, 0)[None, :]
    if res is not None:
        v = v + layers.align(res, shift3, 0)
    y = fixed.requantize(v, shift, mode, seed, index)
    stat_src = v if mask is None else np.where(mask != 0, v, 0)
    return y, fixed.max_abs_out(stat_src, shift)


@pytest.mark.parametrize("m,n,k", [(5, 7, 9), (33, 40, 70), (64, 32, 32)])
def test_gemm_bias_residual_rne_and_stat(engine, m, n, k):
    rng = np.random.default_rng(m * 100 + n)
    x, w = rand16(rng, (m, k)), rand16(rng, (n, k))
    bias, resid = rand16(rng, (n,)), rand16(rng, (m, n))
    prog = Program()
    prog.load(Mem.SPM, x, at=0)
    prog.load(Mem.SPM, w, at=20000)
    prog.load(Mem.SPM, bias, at=40000)
    prog.load(Mem.SPM, resid, at=50000)
    prog.add(Op.GEMM, m=m, n=n, k=k, a_addr=0, a_stride=k, b_addr=20000, b_stride=k, c_addr=60000, c_stride=n,
             bias=1, d_addr=40000, shift2=-3, res=1, e_addr=50000, e_stride=n, shift3=2, shift=14, imm=1,
             stat=1, slot=5)
    y = prog.store(Mem.SPM, 60000, m, n, np.int16)
    st = prog.stat(5)
    res = ok(prog.run(engine))
    want, stat = gemm_ref(x, w, bias=bias, shift2=-3, res=resid, shift3=2, shift=14)
    np.testing.assert_array_equal(prog.result(y), want)
    assert prog.result(st)[0, 0] == stat
    tiles = -(-m // 32) * -(-n // 32)
    assert res["counters"]["MACS"] == m * n * k
    assert res["counters"]["GEMM_BUSY"] == tiles * k


def test_gemm_alignment_shifts_beyond_the_requantizer_range(engine):
    """Bias / residual alignment shifts accept -47..62 (a residual at frac 10 into an accumulator at 27)."""
    rng = np.random.default_rng(11)
    m, n, k = 6, 5, 8
    x, w = rand16(rng, (m, k), -30, 30), rand16(rng, (n, k), -30, 30)
    bias, resid = rand16(rng, (n,), -3, 3), rand16(rng, (m, n), -3, 3)
    prog = Program()
    prog.load(Mem.SPM, np.concatenate([x.ravel(), w.ravel(), bias, resid.ravel()]), at=0)
    prog.add(Op.GEMM, m=m, n=n, k=k, a_addr=0, a_stride=k, b_addr=m * k, b_stride=k, c_addr=1000, c_stride=n,
             bias=1, d_addr=m * k + n * k, shift2=-30, res=1, e_addr=m * k + n * k + n, e_stride=n,
             shift3=-17, shift=40, imm=1)
    y = prog.store(Mem.SPM, 1000, m, n, np.int16)
    ok(prog.run(engine))
    want, _ = gemm_ref(x, w, bias=bias, shift2=-30, res=resid, shift3=-17, shift=40)
    np.testing.assert_array_equal(prog.result(y), want)


def test_gemm_transposes_sr_imm_mask(engine):
    rng = np.random.default_rng(3)
    m, n, k = 37, 19, 45
    at = rand16(rng, (k, m))  # A stored transposed: A = at.T
    bt = rand16(rng, (k, n))  # B stored transposed
    mask = (rng.random((m, n)) < 0.4).astype(np.int16)
    prog = Program()
    prog.load(Mem.SPM, at, at=0, stride=m + 3)
    prog.load(Mem.SPM, bt, at=10000, stride=n)
    prog.load(Mem.SPM, mask, at=30000)
    prog.add(Op.GEMM, m=m, n=n, k=k, a_addr=0, a_stride=m + 3, ta=1, b_addr=10000, b_stride=n, tb=1,
             c_addr=40000, c_stride=n, shift=17, sr=1, seed=1234, index_base=77, index_stride=3 * n, imm=181,
             mask=1, e_addr=30000, e_stride=n, stat=1, slot=0)
    y = prog.store(Mem.SPM, 40000, m, n, np.int16)
    st = prog.stat(0)
    ok(prog.run(engine))
    want, stat = gemm_ref(at.T, bt.T, imm=181, shift=17, mode="sr", seed=1234,
                          index=idx_grid(m, n, 77, 3 * n), mask=mask)
    np.testing.assert_array_equal(prog.result(y), want)
    assert prog.result(st)[0, 0] == stat


def test_gemm_accumulate_weight_gradient_and_overflow(engine):
    rng = np.random.default_rng(4)
    rows, dout, din = 50, 24, 40
    dy, x = rand16(rng, (rows, dout)), rand16(rng, (rows, din))
    g0 = rng.integers(-(2**40), 2**40, (dout, din))
    prog = Program()
    prog.load(Mem.SPM, dy, at=0)
    prog.load(Mem.SPM, x, at=5000)
    prog.load(Mem.ACC, g0, at=100)
    # dW = dY^T X: A(i=o, p=r) = dy[r, o] (ta), B(j=d, p=r) = x[r, d] (tb), accumulated twice
    for _ in range(2):
        prog.add(Op.GEMM, m=dout, n=din, k=rows, a_addr=0, a_stride=dout, ta=1, b_addr=5000, b_stride=din,
                 tb=1, acc=1, f_addr=100, c_stride=din)
    g = prog.store(Mem.ACC, 100, dout, din, np.int64)
    ok(prog.run(engine))
    np.testing.assert_array_equal(prog.result(g), g0 + 2 * (dy.astype(np.int64).T @ x.astype(np.int64)))
    # overflow past 48 bits -> ACC_RANGE at that command
    prog = Program()
    prog.load(Mem.SPM, np.full((1, 4), 32767, np.int16), at=0)
    prog.load(Mem.ACC, np.array([[2**47 - 5]]), at=0)
    prog.add(Op.GEMM, m=1, n=1, k=4, a_addr=0, a_stride=4, b_addr=0, b_stride=4, acc=1, f_addr=0, c_stride=1)
    res = prog.run(engine)
    assert res["error"] == Err.ACC_RANGE and res["err_pc"] == 2


# =================================================================================== SOFTMAX
def test_softmax_forward_masked_with_head_sum(engine):
    rng = np.random.default_rng(5)
    m, n, frac = 13, 21, 9
    s = rand16(rng, (m, n), -6000, 6000)
    mask = (rng.random((m, n)) < 0.5).astype(np.int16)
    mask[3] = 0  # an empty row: all zero
    acc0 = rng.integers(0, 2**20, (m, n))
    prog = Program()
    prog.load(Mem.SPM, s, at=0)
    prog.load(Mem.SPM, mask, at=1000)
    prog.load(Mem.ACC, acc0, at=0, stride=n + 1)
    for mask_flag, c_addr in ((1, 2000), (0, 3000)):
        prog.add(Op.SOFTMAX, sub=SoftmaxSub.FWD, m=m, n=n, a_addr=0, a_stride=n, c_addr=c_addr, c_stride=n,
                 shift=frac, mask=mask_flag, e_addr=1000, e_stride=n, acc=mask_flag, d_addr=0, d_stride=n + 1)
    p_masked = prog.store(Mem.SPM, 2000, m, n, np.int16)
    p_dense = prog.store(Mem.SPM, 3000, m, n, np.int16)
    hs = prog.store(Mem.ACC, 0, m, n, np.int64, stride=n + 1)
    ok(prog.run(engine))
    want = fixed.softmax_fwd(s, frac, mask != 0)
    np.testing.assert_array_equal(prog.result(p_masked), want)
    np.testing.assert_array_equal(prog.result(p_dense), fixed.softmax_fwd(s, frac))
    np.testing.assert_array_equal(prog.result(hs), acc0 + want)


def test_softmax_backward_sr_and_stat(engine):
    rng = np.random.default_rng(6)
    m, n = 9, 30
    p = fixed.softmax_fwd(rand16(rng, (m, n)), 8)
    dp = rand16(rng, (m, n))
    shift = 12 + 30 - 10
    prog = Program()
    prog.load(Mem.SPM, p, at=0)
    prog.load(Mem.SPM, dp, at=500)
    prog.add(Op.SOFTMAX, sub=SoftmaxSub.BWD, m=m, n=n, a_addr=0, a_stride=n, b_addr=500, b_stride=n,
             c_addr=1000, c_stride=n, shift=shift, seed=99, index_base=5, index_stride=2 * n, stat=1, slot=7)
    ds = prog.store(Mem.SPM, 1000, m, n, np.int16)
    st = prog.stat(7)
    ok(prog.run(engine))
    acc = fixed.softmax_bwd_acc(p, dp)
    want = fixed.requantize(acc, shift, "sr", 99, idx_grid(m, n, 5, 2 * n))
    np.testing.assert_array_equal(prog.result(ds), want)
    assert prog.result(st)[0, 0] == fixed.max_abs_out(acc, shift)


# ======================================================================================= VEC
def test_layernorm_forward_backward_and_param_grads(engine):
    rng = np.random.default_rng(7)
    rows, dim = 11, 48
    x = QTensor(rand16(rng, (1, rows, dim), -20000, 20000), 11)
    gamma, beta = QTensor(rand16(rng, (dim,), 10000, 20000), 14), QTensor(rand16(rng, (dim,)), 13)
    params = {"weight": gamma, "bias": beta}
    y, st, saved = layers.layernorm_fwd(x, params, {"y": 10})
    dy = QTensor(rand16(rng, (1, rows, dim)), 12)
    resid = QTensor(rand16(rng, (1, rows, dim)), 9)
    grads = {"weight": np.zeros(dim, np.int64), "bias": np.zeros(dim, np.int64)}
    fr = {"g": 11, "t": 9, "dx": 10}
    dx, st_b, _ = layers.layernorm_bwd(dy, saved, params, grads, fr, seed=4321, residual=resid)
    fh = layers.ln_xhat_frac(dim)
    prog = Program()
    prog.load(Mem.SPM, x.data[0], at=0)
    prog.load(Mem.SPM, gamma.data, at=5000)
    prog.load(Mem.SPM, beta.data, at=5100)
    prog.load(Mem.SPM, dy.data[0], at=6000)
    prog.load(Mem.SPM, resid.data[0], at=7000)
    prog.add(Op.LOAD, sub=Mem.ACC, m=2, n=dim, a_addr=400, a_stride=100, tb=1)  # zero the gradients
    prog.add(Op.VEC, sub=Vec.LN_FWD, m=rows, n=dim, a_addr=0, a_stride=dim, b_addr=5000, d_addr=5100,
             e_addr=1000, e_stride=dim, c_addr=2000, c_stride=dim, f_addr=300, shift=fh + 14 - 10,
             shift2=13 - (fh + 14), shift4=11, stat=1, slot=1)
    prog.add(Op.VEC, sub=Vec.LN_BWD, m=rows, n=dim, a_addr=6000, a_stride=dim, b_addr=5000, e_addr=1000,
             e_stride=dim, f_addr=300, bias=1, d_addr=7000, d_stride=dim, c_addr=8000, c_stride=dim,
             shift=12 + 14 - fr["g"], shift2=fr["g"] + fh - fr["t"], shift3=fr["t"] + 20 - 11 - fr["dx"],
             shift4=9 - fr["t"] - 20 + 11, seed=4321, index_stride=dim, stat=1, slot=2)
    prog.add(Op.VEC, sub=Vec.COLDOT, m=rows, n=dim, a_addr=6000, a_stride=dim, b_addr=1000, b_stride=dim,
             f_addr=400)
    prog.add(Op.VEC, sub=Vec.COLSUM, m=rows, n=dim, a_addr=6000, a_stride=dim, f_addr=500)
    y_out = prog.store(Mem.SPM, 2000, rows, dim, np.int16)
    xhat_out = prog.store(Mem.SPM, 1000, rows, dim, np.int16)
    rowstat = prog.store(Mem.ACC, 300, 1, rows, np.int64)
    dx_out = prog.store(Mem.SPM, 8000, rows, dim, np.int16)
    gw, gb = prog.store(Mem.ACC, 400, 1, dim, np.int64), prog.store(Mem.ACC, 500, 1, dim, np.int64)
    stats = prog.stat(1, 4)
    ok(prog.run(engine))
    np.testing.assert_array_equal(prog.result(y_out), y.data[0])
    np.testing.assert_array_equal(prog.result(xhat_out), saved["xhat"][0])
    np.testing.assert_array_equal(prog.result(rowstat)[0],
                                  saved["rsqrt"][0, :, 0] | (saved["k"][0, :, 0] << 32))
    np.testing.assert_array_equal(prog.result(dx_out), dx.data[0])
    np.testing.assert_array_equal(prog.result(gw)[0], grads["weight"])
    np.testing.assert_array_equal(prog.result(gb)[0], grads["bias"])
    assert prog.result(stats)[0].tolist() == [st["y"], st_b["g"], st_b["t"], st_b["dx"]]


def test_gelu_forward_backward(engine):
    rng = np.random.default_rng(8)
    rows, dim = 7, 100
    h = QTensor(rand16(rng, (1, rows, dim), -32768, 32767), 12)
    a, st, saved = layers.gelu_fwd(h, {"y": 11})
    dy = QTensor(rand16(rng, (1, rows, dim)), 13)
    dh, st_b = layers.gelu_bwd(dy, saved, {"dx": 12}, seed=55)
    prog = Program()
    prog.load(Mem.SPM, h.data[0], at=0)
    prog.load(Mem.SPM, dy.data[0], at=1000)
    prog.add(Op.VEC, sub=Vec.GELU_FWD, m=rows, n=dim, a_addr=0, a_stride=dim, c_addr=2000, c_stride=dim,
             imm=12, shift=12 + 16 - 11, stat=1, slot=3)
    prog.add(Op.VEC, sub=Vec.GELU_BWD, m=rows, n=dim, a_addr=1000, a_stride=dim, b_addr=0, b_stride=dim,
             c_addr=3000, c_stride=dim, imm=12, shift=13 + 16 - 12, sr=1, seed=layers.subseed(55, 0),
             index_stride=dim, stat=1, slot=4)
    a_out = prog.store(Mem.SPM, 2000, rows, dim, np.int16)
    dh_out = prog.store(Mem.SPM, 3000, rows, dim, np.int16)
    stats = prog.stat(3, 2)
    ok(prog.run(engine))
    np.testing.assert_array_equal(prog.result(a_out), a.data[0])
    np.testing.assert_array_equal(prog.result(dh_out), dh.data[0])
    assert prog.result(stats)[0].tolist() == [st["y"], st_b["dx"]]


def test_connection_mask(engine):
    rng = np.random.default_rng(9)
    t, keep, dense = 17, 6, 1
    conn = np.sort(np.stack([rng.choice(t, keep, replace=False) for _ in range(t - dense)]), axis=1)
    prog = Program()
    prog.load(Mem.IDX, conn.astype(np.uint16), at=0, stride=keep + 2)
    prog.add(Op.VEC, sub=Vec.MASK, m=t, n=t, k=keep, b_addr=0, b_stride=keep + 2, c_addr=100, c_stride=t,
             imm=dense)
    out = prog.store(Mem.SPM, 100, t, t, np.int16)
    ok(prog.run(engine))
    want = connection_mask(conn[None], 1, t, dense)[0].astype(np.int16)
    np.testing.assert_array_equal(prog.result(out), want)


# ====================================================================================== TOPK
def test_topk_with_cls_prefix(engine):
    rng = np.random.default_rng(10)
    m, n, k = 6, 40, 9
    scores = rng.integers(0, 50, (m, n))  # many ties: lower index wins
    prog = Program()
    prog.load(Mem.ACC, scores, at=0)
    prog.add(Op.TOPK, m=m, n=n, k=k, a_addr=0, a_stride=n, c_addr=10, c_stride=k + 1, imm=1)
    out = prog.store(Mem.IDX, 10, m, k + 1, np.uint16)
    res = ok(prog.run(engine))
    want = np.concatenate([np.zeros((m, 1), np.int64), fixed.topk_select(scores, k) + 1], axis=1)
    np.testing.assert_array_equal(prog.result(out), want)
    assert res["counters"]["TOPK_BUSY"] == rtl_cycles.topk_stream_cycles(m, n, k)


def test_topk_saturates_scores_to_int32(engine):
    """TOPK ranks the ACC scores saturated to int32: scores beyond it tie at the bound, lower index first."""
    big = [2**40, 2**33, 2**31, 2**31 - 1, -(2**40), 5, 2**47 - 1, -(2**31) - 1]
    scores = np.array([big, big[::-1]], dtype=np.int64)
    m, n, k = 2, len(big), 3
    prog = Program()
    prog.load(Mem.ACC, scores, at=0)
    prog.add(Op.TOPK, m=m, n=n, k=k, a_addr=0, a_stride=n, c_addr=0, c_stride=k, imm=0)
    out = prog.store(Mem.IDX, 0, m, k, np.uint16)
    ok(prog.run(engine))
    want = fixed.topk_select(np.clip(scores, -(2**31), 2**31 - 1), k)
    np.testing.assert_array_equal(want, [[0, 1, 2], [1, 4, 5]])  # 48-bit comparisons: [0, 1, 6], [1, 6, 7]
    np.testing.assert_array_equal(prog.result(out), want)


# ==================================================================================== errors
def single(engine, op_word0: int | None = None, **cmd) -> dict:
    prog = Program()
    prog.cmds.append(cmd.pop("op_fields"))
    words = isa.program_words([isa.encode(op, **f) for op, f in prog.cmds])
    if op_word0 is not None:
        words[0] = op_word0
    prog.ddr[:words.nbytes] = words.view(np.uint8)
    return engine.run(prog.ddr, 0, 1)


@pytest.mark.parametrize("word0,err", [(7, Err.BAD_OPCODE), (15, Err.BAD_OPCODE),
                                       (int(Op.GEMM) | 1 << 26, Err.RESERVED_BITS),
                                       (int(Op.VEC) | 9 << 8, Err.RESERVED_BITS),
                                       (int(Op.LOAD) | 1 << 4, Err.RESERVED_BITS)])
def test_malformed_command_word0(engine, word0, err):
    res = single(engine, word0, op_fields=(Op.GEMM, {"m": 1, "n": 1, "k": 1, "imm": 1}))
    assert res["error"] == err and res["err_pc"] == 0 and res["ctrl"] & isa.CTRL_DONE


@pytest.mark.parametrize("op,fields,err", [
    (Op.GEMM, {"m": 0, "n": 1, "k": 1}, Err.BAD_DIMS),
    (Op.GEMM, {"m": 2, "n": 2, "k": 2, "a_addr": isa.PRODUCTION.spm_elems - 3, "a_stride": 2}, Err.SPM_RANGE),
    (Op.GEMM, {"m": 1, "n": 1, "k": 1, "shift": 63}, Err.BAD_SHIFT),
    (Op.GEMM, {"m": 1, "n": 1, "k": 1, "res": 1, "mask": 1}, Err.RESERVED_BITS),
    (Op.GEMM, {"m": 1, "n": 1, "k": 1, "res": 1, "shift3": -48}, Err.BAD_SHIFT),
    (Op.GEMM, {"m": 1, "n": 1, "k": 1, "shift": -17}, Err.BAD_SHIFT),
    (Op.SOFTMAX, {"m": 1, "n": 300}, Err.BAD_DIMS),
    (Op.SOFTMAX, {"m": 1, "n": 4, "shift": 16}, Err.BAD_SHIFT),
    (Op.TOPK, {"m": 1, "n": 4, "k": 5}, Err.BAD_DIMS),
    (Op.LOAD, {"sub": Mem.SPM, "m": 1, "n": 8, "index_base": DDR_BYTES - 8}, Err.DDR_RANGE),
    (Op.LOAD, {"sub": Mem.SPM, "m": 1, "n": 8, "index_base": 1001}, Err.DDR_RANGE),
    (Op.STORE, {"sub": Mem.IDX, "m": 1, "n": 8, "a_addr": isa.PRODUCTION.idx_elems - 4}, Err.SPM_RANGE),
])
def test_malformed_command_fields(engine, op, fields, err):
    res = single(engine, op_fields=(op, fields))
    assert res["error"] == err and res["err_pc"] == 0


def test_acc_range_on_load_and_column_sums(engine):
    prog = Program()
    prog.load(Mem.ACC, np.array([[5, 1 << 47]], dtype=np.int64), at=0)  # 2**47 is outside 48 bits
    res = prog.run(engine)
    assert (res["error"], res["err_pc"]) == (Err.ACC_RANGE, 0)
    prog = Program()
    prog.load(Mem.ACC, np.array([[(1 << 47) - 40000]], dtype=np.int64), at=0)
    prog.load(Mem.SPM, np.full((2, 1), 30000, np.int16), at=0)
    prog.add(Op.VEC, sub=Vec.COLSUM, m=2, n=1, a_addr=0, a_stride=1, f_addr=0)
    res = prog.run(engine)
    assert (res["error"], res["err_pc"]) == (Err.ACC_RANGE, 2)


def test_program_outside_the_ddr_window_runs_nothing(engine):
    prog = Program()
    prog.load(Mem.SPM, np.ones((1, 4), np.int16), at=0)
    words = isa.program_words([isa.encode(op, **f) for op, f in prog.cmds])
    prog.ddr[:words.nbytes] = words.view(np.uint8)
    for cmd_addr, count in ((0, DDR_BYTES // 64 + 1), (32, 1)):
        res = engine.run(prog.ddr, cmd_addr, count)
        assert (res["error"], res["err_pc"], res["retired"]) == (Err.DDR_RANGE, 0, 0)


def test_error_reports_the_failing_command_and_stops(engine):
    prog = Program()
    prog.load(Mem.SPM, np.ones((1, 4), np.int16), at=0)
    prog.add(Op.GEMM, m=1, n=1, k=4, a_addr=0, a_stride=4, b_addr=0, b_stride=4, c_addr=10, c_stride=1, imm=1)
    prog.add(Op.TOPK, m=1, n=4, k=0)  # BAD_DIMS at command 2
    prog.store(Mem.SPM, 10, 1, 1, np.int16)
    res = prog.run(engine)
    assert res["error"] == Err.BAD_DIMS and res["err_pc"] == 2 and res["retired"] == 2
    # a malformed command: the commands before it still run, then the run stops at it
    prog = Program()
    prog.load(Mem.SPM, np.ones((1, 4), np.int16), at=0)
    prog.add(Op.GEMM, m=1, n=1, k=4, a_addr=0, a_stride=4, b_addr=0, b_stride=4, c_addr=10, c_stride=1, imm=1)
    prog.store(Mem.SPM, 10, 1, 1, np.int16)
    words = isa.program_words([isa.encode(op, **f) for op, f in prog.cmds] + [isa.encode(Op.FINISH)])
    bad = words.copy()
    bad[2 * isa.WORDS] = 12  # the STORE becomes opcode 12
    prog.ddr[:bad.nbytes] = bad.view(np.uint8)
    res = engine.run(prog.ddr, 0, 4)
    assert (res["error"], res["err_pc"], res["retired"]) == (Err.BAD_OPCODE, 2, 2)
    # the engine is usable again right after
    prog = Program()
    prog.load(Mem.SPM, np.ones((1, 4), np.int16), at=0)
    ok(prog.run(engine))


# ================================================================================== deadlock
def test_pop_without_producer_is_reported_not_hung(engine, capfd):
    prog = Program()
    prog.add(Op.GEMM, m=1, n=1, k=1, imm=1, pop_prev=1)  # no LOAD ever pushes l2c
    res = prog.run(engine)
    assert res["error"] == Err.DEP_UNDERFLOW and res["err_pc"] == 0
    err = capfd.readouterr().err
    assert "deadlock" in err and "compute waits on l2c (empty, depth 64)" in err


def _reuse_program() -> Program:
    """Three LOADs that each wait for COMPUTE to free a buffer, then the three computes that free them.
    Correct with load_q depth >= 2 (two LOADs wait in the queue + one in the head register)..."""
    prog = Program()
    for _ in range(3):
        prog.cmds.append((Op.LOAD, WAITING_LOAD.copy()))
    for _ in range(3):
        prog.cmds.append((Op.GEMM, {"m": 1, "n": 1, "k": 1, "imm": 1, "push_prev": 1}))
    return prog


def test_shrunk_queue_deadlock_names_the_queue(engine, capfd):
    ok(_reuse_program().run(engine))
    assert engine.set_depth("load_q", 1) == 1
    try:
        res = _reuse_program().run(engine)
    finally:
        assert engine.set_depth("load_q", 0) == isa.PRODUCTION.queue_depth
    assert res["error"] == Err.DEP_UNDERFLOW
    err = capfd.readouterr().err
    assert "fetch waits on load_q (full, depth 1)" in err and "load waits on c2l (empty" in err
    ok(_reuse_program().run(engine))  # depth restored
    assert engine.set_depth("no_such_queue", 3) == -1


def _free_then_load_program() -> Program:
    """COMPUTE frees three buffers (c2l tokens) and runs two more commands before the LOADs that take
    the tokens come in program order."""
    prog = Program()
    for i in range(5):
        prog.cmds.append((Op.GEMM, {"m": 1, "n": 1, "k": 1, "imm": 1, "push_prev": int(i < 3)}))
    for _ in range(3):
        prog.cmds.append((Op.LOAD, WAITING_LOAD.copy()))
    return prog


def test_shrunk_token_queue_deadlock_names_it(engine, capfd):
    ok(_free_then_load_program().run(engine, finish=False))
    # c2l depth 2: the third push blocks COMPUTE; with compute_q depth 1 fetch then blocks on the fifth
    # command and never delivers the LOADs that would drain c2l.
    engine.set_depth("c2l", 2)
    engine.set_depth("compute_q", 1)
    try:
        res = _free_then_load_program().run(engine, finish=False)
    finally:
        engine.set_depth("c2l", 0)
        engine.set_depth("compute_q", 0)
    assert res["error"] == Err.DEP_UNDERFLOW and res["err_pc"] == 2
    err = capfd.readouterr().err
    assert "compute waits on c2l (full, depth 2) at command 2" in err
    assert "fetch waits on compute_q (full, depth 1) at command 4" in err


# ================================================================================== counters
def test_cycle_model_of_one_gemm(engine):
    m, n, k = 70, 50, 64
    prog = Program()
    prog.add(Op.GEMM, m=m, n=n, k=k, a_addr=0, a_stride=k, b_addr=0, b_stride=k, c_addr=20000, c_stride=n,
             imm=1)
    res = ok(prog.run(engine))
    c = res["counters"]
    gemm = rtl_cycles.gemm_cycles(m, n, k, 32, 32)
    fetch = 120 + 4  # the first command arrives after one DDR latency and one 4-beat command
    assert c["CYCLES"] == fetch + gemm + 1  # + FINISH
    assert c["MACS"] == m * n * k and c["RETIRED"] == 2 and c["DDR_RD_BYTES"] == 128


# ================================================================== ap_int flavour (synthesized loops)
def test_ap_flavour_runs_the_synthesizable_gemm_with_the_same_bits(engine):
    """--flavor ap compiles the PE-array GEMM (skewed tile buffers, ap_int<48> accumulators, II=1 loops)
    and the rank-based top-k instead of the fast C-sim paths: a mixed program gives the same DDR bytes."""
    from test_engine_csim_fsim import GEMM_MN, RandomProgram  # sim/random_programs.py

    ap = Engine(_build_csim().build(ROOT / "build" / "csim" / "libtrilevel_engine_ap.so", "ap"))
    for seed in (3, 4):
        gen = RandomProgram(np.random.default_rng(3000 + seed), gemm_mn=GEMM_MN)
        count = gen.build(commands=6)
        ddr_fast, ddr_ap = gen.ddr.copy(), gen.ddr.copy()
        want, got = engine.run(ddr_fast, 0, count), ap.run(ddr_ap, 0, count)
        assert got["error"] == want["error"] == Err.NONE
        np.testing.assert_array_equal(ddr_ap, ddr_fast)
        assert got["counters"] == want["counters"]


# ============================================================================= Vitis HLS flow
def test_vitis_testbench_on_golden_vectors(engine, tmp_path):
    """hls/tb/tb_engine.cpp (the csim_design testbench), compiled as Vitis compiles the top (-DTL_VITIS:
    ap_uint<128> gmem, ap_int PE array), is bit-exact on hls/gen_vectors.py's program (every unit; golden
    image from fsim) and fails on a corrupted expectation."""
    build = _build_csim()
    gen = subprocess.run([sys.executable, str(ROOT / "hls" / "gen_vectors.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    tb = tmp_path / "tb_engine"
    cmd = ["g++", "-O1", "-std=c++14", "-w", "-DTL_VITIS", f"-I{ROOT / 'hls' / 'engine'}",
           f"-I{build.DEFAULT_LIB.parent / 'include'}", f"-I{build.ap_types_dir()}",
           str(ROOT / "hls" / "tb" / "tb_engine.cpp"),
           *(str(ROOT / "hls" / "engine" / f) for f in VITIS_SOURCES), "-o", str(tb)]
    comp = subprocess.run(cmd, capture_output=True, text=True)
    assert comp.returncode == 0, comp.stderr[-2000:]
    run = subprocess.run([str(tb), str(tmp_path / "engine")], capture_output=True, text=True)
    assert run.returncode == 0 and "bit-exact" in run.stdout, run.stderr
    expected = tmp_path / "engine" / "expected.bin"
    raw = bytearray(expected.read_bytes())
    raw[PROGRAM_BYTES // 8 + 5000] ^= 1  # a byte of the stored results
    expected.write_bytes(bytes(raw))
    run = subprocess.run([str(tb), str(tmp_path / "engine")], capture_output=True, text=True)
    assert run.returncode == 1 and "differs from the reference" in run.stderr


def test_tcl_script_synthesizes_the_engine_top():
    tcl = (ROOT / "hls" / "tcl" / "engine.tcl").read_text()
    assert re.search(rf"^set top {isa.HLS_TOP}$", tcl, re.M)
    sources = re.search(r"^set sources \{(.*)\}$", tcl, re.M).group(1).split()
    assert sorted(sources) == sorted(VITIS_SOURCES)
    engine_cpp = (ROOT / "hls" / "engine" / "engine.cpp").read_text()
    assert re.search(rf"^uint32_t {isa.HLS_TOP}\(ap_uint<128>\* gmem, uint32_t cmd_addr, uint32_t cmd_count, "
                     rf"uint32_t\* err_pc,\s+uint64_t counters\[{isa.N_COUNTERS}\]\)", engine_cpp, re.M)
    for arg in ("cmd_addr", "cmd_count", "err_pc", "counters", "return"):
        assert f"INTERFACE s_axilite port = {arg} bundle = control" in engine_cpp
    for queue in ("load_q", "compute_q", "store_q", "l2c", "c2l", "c2s", "s2c"):
        assert f"STREAM variable = tl_{queue} depth = TL_QUEUE_DEPTH" in engine_cpp
    common = (ROOT / "hls" / "tcl" / "common.tcl").read_text()
    for needle in ("xczu9eg-ffvb1156-2-e", "TRILEVEL_HLS_CLOCK_MHZ", "-DTL_VITIS", "tb_engine.cpp",
                   "csim_design", "csynth_design", "export_design -format ip_catalog"):
        assert needle in common


def test_every_runtime_loop_has_a_tripcount():
    """Synthesizable style: every loop of the synthesized sources whose bound is not a compile-time
    constant declares LOOP_TRIPCOUNT (C-sim-only branches excluded)."""
    constant = re.compile(r"<\s*(TL_[A-Z_]+|\d+|TL_CMD_WORDS / 4)\s*$")
    csim_only = re.compile(r"#ifdef TRILEVEL_FAST_CSIM.*?#(else|endif)|#ifndef __SYNTHESIS__.*?#endif", re.S)
    missing = []
    for name in VITIS_SOURCES:
        source = (ROOT / "hls" / "engine" / name).read_text()
        text = csim_only.sub(lambda m: "\n" * m.group(0).count("\n"), source)
        lines = text.splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"\s*for \((.*?);(.*?);(.*?)\)", line)
            if not m or constant.search(m.group(2).strip()) or "UNROLL" in lines[i + 1]:
                continue
            if "LOOP_TRIPCOUNT" not in "\n".join(lines[i + 1:i + 4]):
                missing.append(f"{name}:{i + 1}: {line.strip()}")
    assert not missing, missing
    assert len(re.findall("LOOP_TRIPCOUNT", "".join((ROOT / "hls" / "engine" / n).read_text()
                                                    for n in VITIS_SOURCES))) >= 30


def test_run_hls_without_vitis_prints_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    assert shutil.which("vitis_hls", path=env["PATH"]) is None
    script = str(ROOT / "hls" / "run_hls.sh")
    result = subprocess.run(["bash", script], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "vitis_hls not found" in lines[0]


# ============================================================================== build script
def test_build_is_skipped_when_unchanged(engine):
    build = _build_csim()
    lib = build.DEFAULT_LIB
    before = lib.stat().st_mtime_ns
    assert build.build() == lib
    assert lib.stat().st_mtime_ns == before


def test_build_failure_is_one_clear_line(tmp_path):
    cmd = [sys.executable, str(ROOT / "hls" / "build_csim.py"), "--out", str(tmp_path / "x.so"), "--config",
           "no_such_config"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_config" in lines[0]


def test_ci_config_build_reports_its_sizes(tmp_path):
    """--config ci compiles the engine at isa.CI_SMALL (the RTL's CI build, a 4 x 4 array); it runs."""
    ci = Engine(_build_csim().build(tmp_path / "ci.so", "fast", config="ci"))
    want = {name: getattr(isa.CI_SMALL, name) for name in CONFIG_NAMES if name != "isa_version"}
    assert {k: v for k, v in ci.config.items() if k != "isa_version"} == want
    rng = np.random.default_rng(12)
    x, w = rand16(rng, (9, 11)), rand16(rng, (6, 11))
    prog = Program()
    prog.load(Mem.SPM, x, at=0)
    prog.load(Mem.SPM, w, at=200)
    prog.add(Op.GEMM, m=9, n=6, k=11, a_addr=0, a_stride=11, b_addr=200, b_stride=11, c_addr=400,
             c_stride=6, shift=9, imm=1)
    y = prog.store(Mem.SPM, 400, 9, 6, np.int16)
    res = ok(prog.run(ci))
    np.testing.assert_array_equal(prog.result(y), gemm_ref(x, w, shift=9)[0])
    assert res["counters"]["GEMM_BUSY"] == 3 * 2 * 11  # ceil(9/4) x ceil(6/4) tiles of k = 11


# ======================================================================== the requantizer alone
@pytest.mark.parametrize("mode", ["rne", "sr"])
def test_requantizer_over_its_shift_range(engine, mode):
    """GEMM with k = 1 and B = 1 makes v = a * imm: the epilogue's round/saturate (docs/numerics.md 1.2, SR
    through hash32) against trilevel.intref.fixed.requantize at every shift -16..62, ties and extremes."""
    rng = np.random.default_rng(13)
    a = np.concatenate([[0, 1, -1, 2, -2, 3, -3, 32767, -32768, 16384, -16384],
                        rng.integers(-32768, 32768, 117)]).astype(np.int16)
    m = a.size
    for imm in (1, 3, 1 << 15, (1 << 31) - 1, -(1 << 31)):
        prog, outs = Program(), []
        prog.load(Mem.SPM, np.concatenate([a, [1]]).astype(np.int16), at=0)
        shifts = [s for s in range(-16, 63) if s <= 0 or abs(int(imm)) * 32768 < 1 << 62]
        for i, shift in enumerate(shifts):
            prog.add(Op.GEMM, m=m, n=1, k=1, a_addr=0, a_stride=1, b_addr=m, b_stride=1,
                     c_addr=1000 + m * i, c_stride=1, shift=shift, imm=imm, sr=int(mode == "sr"),
                     seed=0xDEADBEEF, index_base=i * 977, index_stride=3)
        for i in range(len(shifts)):
            outs.append(prog.store(Mem.SPM, 1000 + m * i, m, 1, np.int16))
        ok(prog.run(engine))
        v = a.astype(np.int64) * imm
        for i, shift in enumerate(shifts):
            want = fixed.requantize(v[:, None], shift, mode, 0xDEADBEEF, idx_grid(m, 1, i * 977, 3))
            np.testing.assert_array_equal(prog.result(outs[i]), want, err_msg=f"imm {imm} shift {shift}")
