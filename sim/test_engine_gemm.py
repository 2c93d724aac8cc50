"""GEMM commands on the RTL engine (C++ Verilator harness, CI array size) against sim/engine_ref.py,
the docs/engine.md semantics built from trilevel.intref (round_shift, align, saturate16): every flag
(ta, tb, bias, res, mask, sr, acc, stat), shapes that are not multiples of the array or the chunk,
negative and positive shifts, score multipliers; plus linear_fwd of intref itself lowered by hand."""

from __future__ import annotations

import engine_ref
import numpy as np
import pytest
from random_programs import rne_ties

from trilevel.accel import isa, rtlsim
from trilevel.accel.isa import Err, Mem, Op, encode
from trilevel.intref import layers
from trilevel.intref.fixed import QTensor

BASE = 0x8_0000_0000
CMD = 0x00F0_0000
CFG = isa.CI_SMALL
SPM_IMG = 0x100000      # DDR image of the SPM region the tests use
ACC_IMG = 0x300000
STAT_IMG = 0x380000
REGION = 8192           # SPM elements moved in and out per test


@pytest.fixture(scope="module")
def harness():
    return rtlsim.Harness(CFG, rtlsim.DdrModel(stall=0.1, seed=3))


def run(h: rtlsim.Harness, cmds: list[np.ndarray]) -> dict[str, int]:
    return h.execute(isa.program_words(cmds), BASE, CMD, max_cycles=5_000_000)


def load_spm(spm: np.ndarray) -> np.ndarray:
    return encode(Op.LOAD, sub=Mem.SPM, m=1, n=len(spm), index_base=SPM_IMG, push_next=1)


def exec_gemm(h, spm: np.ndarray, acc: np.ndarray | None, fields: dict[str, int]) -> tuple:
    """SPM (and ACC) images -> LOAD, GEMM, STORE back; returns (result, spm, acc, stat) read back."""
    h.write_mem(BASE + SPM_IMG, spm)
    cmds = []
    if acc is not None:
        h.write_mem(BASE + ACC_IMG, acc)
        cmds.append(encode(Op.LOAD, sub=Mem.ACC, m=1, n=len(acc), index_base=ACC_IMG))
    cmds += [load_spm(spm), encode(Op.GEMM, pop_prev=1, push_next=1, **fields)]
    cmds += [encode(Op.STORE, sub=Mem.SPM, m=1, n=len(spm), index_base=SPM_IMG, pop_prev=1)]
    if acc is not None:
        cmds.append(encode(Op.STORE, sub=Mem.ACC, m=1, n=len(acc), index_base=ACC_IMG))
    cmds += [encode(Op.STORE, sub=Mem.STAT, m=1, n=CFG.stat_slots, index_base=STAT_IMG), encode(Op.FINISH)]
    r = run(h, cmds)
    got_spm = h.read_mem(BASE + SPM_IMG, 2 * len(spm)).view(np.int16)
    got_acc = h.read_mem(BASE + ACC_IMG, 8 * len(acc)).view(np.int64) if acc is not None else None
    got_stat = h.read_mem(BASE + STAT_IMG, 8 * CFG.stat_slots).view(np.int64)
    return r, got_spm, got_acc, got_stat


def random_case(rng, trial: int) -> dict[str, int]:
    m, n, k = (int(rng.integers(1, 13)), int(rng.integers(1, 13)), int(rng.integers(1, 40)))
    ta, tb = bool(trial & 1), bool(trial & 2)
    flags = {"ta": ta, "tb": tb}
    a_stride = (m if ta else k) + int(rng.integers(0, 4))
    b_stride = (n if tb else k) + int(rng.integers(0, 4))
    layout = {"a_addr": 5, "b_addr": 1500, "c_addr": 3000, "d_addr": 4500, "e_addr": 5000, "f_addr": 7}
    f = dict(m=m, n=n, k=k, a_stride=a_stride, b_stride=b_stride, c_stride=n + int(rng.integers(0, 3)),
             e_stride=n + int(rng.integers(0, 3)), **layout, **flags)
    kind = trial % 5
    if kind == 4:
        f["acc"] = 1
        return f
    f["shift"] = int(rng.integers(-3, 30))
    f["imm"] = 1 if trial % 3 else int(rng.integers(-40000, 40000))
    f["sr"] = int(rng.integers(0, 2))
    f["seed"] = int(rng.integers(0, 1 << 32))
    f["index_base"] = int(rng.integers(0, 1 << 32))
    f["index_stride"] = int(rng.integers(0, 5000))
    f["bias"] = int(kind in (1, 3))
    f["shift2"] = int(rng.integers(-6, 20))
    if kind == 2:
        f["res"], f["shift3"] = 1, int(rng.integers(-8, 20))
    if kind == 3:
        f["mask"] = 1
    f["stat"], f["slot"] = 1, int(rng.integers(0, CFG.stat_slots))
    return f


@pytest.mark.parametrize("seed", [0, 1])
def test_gemm_bit_exact_random(harness, seed):
    rng = np.random.default_rng(seed)
    for trial in range(20):
        f = random_case(rng, trial)
        spm = rng.integers(-32768, 32768, size=REGION, dtype=np.int16)
        if f.get("mask"):     # a 0/1 mask with zeros
            e = spm[f["e_addr"]:f["e_addr"] + f["m"] * f["e_stride"]]
            e[:] = rng.integers(0, 2, size=e.size)
        if trial % 7 == 0:    # small values: no saturation, so the rounding itself is visible
            spm = (spm >> 10).astype(np.int16)
        acc = rng.integers(-(1 << 40), 1 << 40, size=1024, dtype=np.int64) if f.get("acc") else None
        exp_spm, exp_acc = spm.copy(), None if acc is None else acc.copy()
        exp_stat = np.zeros(CFG.stat_slots, dtype=np.int64)
        fields = isa.decode(encode(Op.GEMM, **f))
        engine_ref.gemm(fields, exp_spm, exp_acc, exp_stat)
        r, got_spm, got_acc, got_stat = exec_gemm(harness, spm, acc, f)
        assert r["error"] == 0, (f, Err(r["error"]).name)
        bad = np.flatnonzero(got_spm != exp_spm)
        assert bad.size == 0, f"trial {trial} {f}: {bad.size} SPM mismatches, first at {bad[:5]}"
        if acc is not None:
            assert np.array_equal(got_acc, exp_acc), f"trial {trial} {f}: ACC"
        assert np.array_equal(got_stat, exp_stat), f"trial {trial} {f}: STAT {got_stat[got_stat != exp_stat]}"
        c = harness.counters()
        assert c["MACS"] == f["m"] * f["n"] * f["k"]
        assert c["GEMM_BUSY"] >= -(-f["m"] // CFG.array_rows) * -(-f["n"] // CFG.array_cols) * f["k"]


@pytest.mark.parametrize("sr", [0, 1])
def test_gemm_rounding_at_small_shifts(harness, sr):
    """Small operands and shifts 1..4: many exact ties (RNE) and every SR threshold are exercised."""
    rng = np.random.default_rng(40 + sr)
    for shift in (1, 2, 3, 4):
        spm = rng.integers(-40, 40, size=REGION, dtype=np.int16)
        f = dict(m=12, n=11, k=5, a_addr=0, a_stride=5, b_addr=100, b_stride=5, c_addr=300, c_stride=11,
                 shift=shift, sr=sr, seed=99 + shift, index_base=5, index_stride=11, imm=1)
        expect = spm.copy()
        engine_ref.gemm(isa.decode(encode(Op.GEMM, **f)), expect, None, np.zeros(64, dtype=np.int64))
        r, got, _, _ = exec_gemm(harness, spm, None, f)
        assert r["error"] == 0
        bad = np.flatnonzero(got != expect)
        assert bad.size == 0, f"shift {shift} sr {sr}: {bad.size} SPM mismatches"


def _bias_alone(harness, rng, bias: np.ndarray, shift2: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """C = requantize(align(bias, shift2), shift) of a 1-row GEMM with A = 0: (sim/engine_ref's C, the
    RTL's)."""
    n = bias.size
    spm = np.zeros(REGION, dtype=np.int16)
    spm[2000:2000 + n] = rng.integers(-500, 500, n)         # B: its products with A = 0 vanish
    spm[4500:4500 + n] = bias
    f = dict(m=1, n=n, k=1, a_addr=0, a_stride=1, b_addr=2000, b_stride=1, c_addr=3000, c_stride=n,
             d_addr=4500, bias=1, shift2=shift2, shift=shift, imm=1)
    expect = spm.copy()
    engine_ref.gemm(isa.decode(encode(Op.GEMM, **f)), expect, None, np.zeros(64, dtype=np.int64))
    r, got, _, _ = exec_gemm(harness, spm, None, f)
    assert r["error"] == 0
    return expect[3000:3000 + n], got[3000:3000 + n]


@pytest.mark.parametrize("shift2", [1, 2, 3, 7, 15, 16, 17, 40])
def test_bias_right_alignment_rounds_half_to_even(harness, shift2):
    """C = align(bias, shift2) alone (requantizer shift 0 passes it through): the bias is rounded half to
    even at every kind of shift, exact halves and the int16 extremes included."""
    rng = np.random.default_rng(60 + shift2)
    bias = rne_ties(rng, shift2, 96)
    want, got = _bias_alone(harness, rng, bias, shift2, 0)
    scaled = bias.astype(np.float64) / 2.0**shift2
    np.testing.assert_array_equal(want, np.rint(scaled))     # numpy rounds half to even
    assert shift2 >= 16 or np.count_nonzero(scaled % 1 == 0.5) >= bias.size // 4
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("left", [1, 15, 16, 17, 31, 32, 33, 47])
def test_bias_left_alignment_is_exact(harness, left):
    """align(bias, -left) then a right requantization by `left`: every bias comes back unchanged, so each
    of the 0 / 16 / 32-bit steps and the product by 2**(left mod 16) of the alignment shows."""
    rng = np.random.default_rng(70 + left)
    bias = rng.integers(-32768, 32768, 64).astype(np.int16)
    want, got = _bias_alone(harness, rng, bias, -left, left)
    np.testing.assert_array_equal(want, bias)
    np.testing.assert_array_equal(got, bias)


def test_linear_fwd_of_intref_bit_exact(harness):
    """intref.layers.linear_fwd (y = x W^T + b + residual, RNE, stat) as one GEMM command."""
    rng = np.random.default_rng(5)
    t, din, dout = 17, 24, 20
    x = QTensor(rng.integers(-3000, 3000, size=(1, t, din), dtype=np.int16), 12)
    w = QTensor(rng.integers(-3000, 3000, size=(dout, din), dtype=np.int16), 14)
    b = QTensor(rng.integers(-3000, 3000, size=(dout,), dtype=np.int16), 13)
    res = QTensor(rng.integers(-3000, 3000, size=(1, t, dout), dtype=np.int16), 11)
    y, stats, _ = layers.linear_fwd(x, {"weight": w, "bias": b}, {"y": 10}, residual=res)
    fa = x.frac + w.frac
    spm = np.zeros(REGION, dtype=np.int16)
    spm[0:t * din] = x.data.ravel()
    spm[1000:1000 + dout * din] = w.data.ravel()
    spm[2000:2000 + dout] = b.data
    spm[2500:2500 + t * dout] = res.data.ravel()
    f = dict(m=t, n=dout, k=din, a_addr=0, a_stride=din, b_addr=1000, b_stride=din, c_addr=4000,
             c_stride=dout, d_addr=2000, e_addr=2500, e_stride=dout, bias=1, res=1, shift=fa - 10,
             shift2=b.frac - fa, shift3=res.frac - fa, imm=1, stat=1, slot=9)
    r, got, _, stat = exec_gemm(harness, spm, None, f)
    assert r["error"] == 0
    assert np.array_equal(got[4000:4000 + t * dout].reshape(1, t, dout), y.data)
    assert stat[9] == stats["y"]


@pytest.mark.parametrize("fields,code", [
    ({"m": 4, "n": 4, "k": 0}, Err.BAD_DIMS),
    ({"m": 4, "n": 4, "k": 4, "res": 1, "mask": 1}, Err.RESERVED_BITS),
    ({"m": 4, "n": 4, "k": 4, "shift": 63}, Err.BAD_SHIFT),
    ({"m": 4, "n": 4, "k": 4, "shift": -17}, Err.BAD_SHIFT),
    ({"m": 4, "n": 4, "k": 4, "bias": 1, "shift2": 70}, Err.BAD_SHIFT),
    ({"m": 4, "n": 4, "k": 4, "bias": 1, "shift2": -48}, Err.BAD_SHIFT),
    ({"m": 4, "n": 4, "k": 8, "a_addr": CFG.spm_elems - 20, "a_stride": 8, "shift": 99}, Err.BAD_SHIFT),
    ({"m": 4, "n": 4, "k": 8, "a_addr": CFG.spm_elems - 20, "a_stride": 8}, Err.SPM_RANGE),
    ({"m": 4, "n": 4, "k": 4, "acc": 1, "f_addr": CFG.acc_elems - 3, "c_stride": 4}, Err.SPM_RANGE),
], ids=["k0", "res+mask", "shift63", "shift-17", "shift2", "shift2-48", "shift-before-range", "a-range",
        "acc-range"])
def test_gemm_malformed(harness, fields, code):
    r = run(harness, [encode(Op.LOAD, sub=Mem.SPM, m=1, n=8, index_base=SPM_IMG),
                      encode(Op.GEMM, **fields), encode(Op.FINISH)])
    assert (Err(r["error"]), r["err_pc"]) == (code, 1)


def test_gemm_acc_overflow_is_acc_range(harness):
    spm = np.full(REGION, 32767, dtype=np.int16)
    acc = np.full(64, (1 << 47) - 10, dtype=np.int64)
    r, *_ = exec_gemm(harness, spm, acc, dict(m=2, n=2, k=3, a_stride=3, b_stride=3, acc=1, c_stride=2))
    assert Err(r["error"]) == Err.ACC_RANGE and r["err_pc"] == 2
