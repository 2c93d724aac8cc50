"""The VEC unit of the RTL engine (hls/rtl/engine/engine_vec.sv) against trilevel.accel.fsim, the
command-level golden model: random programs with every VEC sub-operation (LN_FWD followed by LN_BWD on
the XHAT and row statistics it wrote, GELU_FWD/BWD, COLSUM, COLDOT, MASK) mixed with SOFTMAX and GEMM
commands equal fsim byte for byte (every on-chip memory and the STAT slots stored back, ERROR, ERR_PC,
RETIRED and the exact counters); each VEC error (BAD_DIMS, BAD_SHIFT, SPM_RANGE, ACC_RANGE, including
the ones found while a command runs) stops both at the same command with the same code; the LUT include
is generated from trilevel.intref.luts; and an engine whose GELU_BWD rounds RNE instead of SR
(MUTATION bit 2; the MUTATION=7 build shared with sim/test_engine_mutation.py) fails the comparison.
The random programs come from sim/random_programs.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from random_programs import SPM_USED, RandomProgram, rne_ties

from trilevel.accel import fsim, isa, rtlsim
from trilevel.accel.isa import Err, Mem, Op, Vec

CFG = isa.CI_SMALL
EXACT = ("DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")
VEC_KINDS = ("layernorm", "elementwise", "mask", "softmax")
GEN = Path(__file__).resolve().parents[1] / "hls" / "rtl" / "engine" / "gen_vec_luts.py"
needs_vec = pytest.mark.skipif("engine_vec" not in rtlsim.ENGINE_MODULES,
                               reason="engine_vec is not instantiated in engine_top yet")


@pytest.fixture(scope="module")
def rtl():
    return rtlsim.RtlEngine(CFG, rtlsim.DdrModel(stall=0.05, seed=23))


def compare(rtl, prog: RandomProgram, count: int, ddr_f: np.ndarray | None = None) -> fsim.RunResult:
    """The RTL and fsim run the program on copies of its DDR image (fsim on `ddr_f` when given, which the
    caller then reads) and must agree."""
    ddr_r = prog.ddr.copy()
    ddr_f = prog.ddr.copy() if ddr_f is None else ddr_f
    got = rtl.run(ddr_r, 0, count)
    want = fsim.FunctionalEngine(CFG).run(ddr_f, 0, count)
    assert (got.error, got.err_pc) == (want.error, want.err_pc), want.detail
    if want.error == Err.NONE:
        assert got.retired == want.retired
        bad = np.flatnonzero(ddr_r != ddr_f)
        assert bad.size == 0, f"{bad.size} DDR bytes differ, first at {bad[:8]}"
        for name in EXACT:
            assert got.counters[name] == want.counters[name], name
        assert got.counters["VEC_BUSY"] > 0
    return want


def test_vec_luts_are_generated():
    proc = subprocess.run([sys.executable, str(GEN), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@needs_vec
@pytest.mark.parametrize("kind", ["layernorm", "elementwise", "mask"])
def test_each_vec_kind_rtl_equals_fsim(rtl, kind):
    prog = RandomProgram(np.random.default_rng(5100 + len(kind)))
    compare(rtl, prog, prog.build(commands=6, kinds=(kind,)))


@needs_vec
@pytest.mark.parametrize("seed", range(4))
def test_random_vec_programs_rtl_equals_fsim(rtl, seed):
    prog = RandomProgram(np.random.default_rng(5000 + seed))
    want = compare(rtl, prog, prog.build(commands=10, kinds=VEC_KINDS))
    assert want.error == Err.NONE, want.detail


def _single(fields: dict[str, int], acc: np.ndarray | None = None, idx: np.ndarray | None = None,
            spm: np.ndarray | None = None) -> tuple:
    """A program: LOAD SPM (random unless given; and ACC / IDX), one VEC command, STOREs, FINISH."""
    prog = RandomProgram(np.random.default_rng(7))
    if spm is None:
        spm = prog.rng.integers(-3000, 3000, SPM_USED).astype(np.int16)
    cmds = [isa.encode(Op.LOAD, sub=Mem.SPM, m=1, n=SPM_USED, index_base=prog.put(spm))]
    if acc is not None:
        cmds.append(isa.encode(Op.LOAD, sub=Mem.ACC, m=1, n=acc.size, index_base=prog.put(acc)))
    if idx is not None:
        cmds.append(isa.encode(Op.LOAD, sub=Mem.IDX, m=1, n=idx.size, index_base=prog.put(idx)))
    cmds[-1][0] |= 1 << isa.CONTROL["push_next"][0]
    pc = len(cmds)
    cmds.append(isa.encode(Op.VEC, pop_prev=1, push_next=1, **fields))
    cmds.append(isa.encode(Op.STORE, sub=Mem.SPM, m=1, n=SPM_USED, index_base=prog.free, pop_prev=1))
    cmds.append(isa.encode(Op.FINISH))
    words = isa.program_words(cmds)
    prog.ddr[: words.nbytes] = words.view(np.uint8)
    return prog, len(cmds), pc


ROW = dict(m=3, n=20, a_addr=0, a_stride=20, b_addr=2048, b_stride=20, c_addr=4096, c_stride=20, d_addr=6144,
           d_stride=20, e_addr=7000, e_stride=20, f_addr=0)
ERROR_CASES = {
    "ln_row_too_long": (dict(ROW, sub=Vec.LN_FWD, n=CFG.max_dim + 1, a_stride=300, c_stride=300,
                             e_stride=300), Err.BAD_DIMS),
    "ln_bad_shift4": (dict(ROW, sub=Vec.LN_FWD, shift=8, shift4=63), Err.BAD_SHIFT),
    "ln_beta_align": (dict(ROW, sub=Vec.LN_FWD, shift=8, shift2=-48), Err.BAD_SHIFT),
    "ln_acc_range": (dict(ROW, sub=Vec.LN_FWD, shift=8, f_addr=CFG.acc_elems - 2), Err.SPM_RANGE),
    "lnb_slots": (dict(ROW, sub=Vec.LN_BWD, shift=8, shift2=8, stat=1, slot=62), Err.SPM_RANGE),
    "lnb_residual_align": (dict(ROW, sub=Vec.LN_BWD, shift=8, shift2=8, bias=1, shift4=-50), Err.BAD_SHIFT),
    "gelu_shift": (dict(ROW, sub=Vec.GELU_FWD, shift=-17), Err.BAD_SHIFT),
    "gelu_b_range": (dict(ROW, sub=Vec.GELU_BWD, shift=4, b_addr=CFG.spm_elems - 10), Err.SPM_RANGE),
    "colsum_zero_rows": (dict(ROW, sub=Vec.COLSUM, m=0), Err.BAD_DIMS),
    "coldot_f_range": (dict(ROW, sub=Vec.COLDOT, f_addr=CFG.acc_elems - 5), Err.SPM_RANGE),
    "mask_k_zero": (dict(ROW, sub=Vec.MASK, k=0, imm=1), Err.BAD_DIMS),
    "mask_negative_imm": (dict(ROW, sub=Vec.MASK, k=2, imm=-1), Err.BAD_DIMS),
    "mask_idx_range": (dict(ROW, sub=Vec.MASK, k=4, imm=0, b_addr=CFG.idx_elems - 6, b_stride=4),
                       Err.SPM_RANGE),
}


@needs_vec
@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_vec_checks_stop_rtl_and_fsim_alike(rtl, name):
    fields, code = ERROR_CASES[name]
    prog, count, pc = _single(fields)
    want = compare(rtl, prog, count)
    assert (want.error, want.err_pc) == (code, pc), want.detail


def _ln_beta_alone(rtl, rng, beta: np.ndarray, shift2: int, shift: int) -> np.ndarray:
    """Y of a 1-row LN_FWD with gamma = 0, i.e. requantize(align(beta, shift2), shift), as the RTL and fsim
    (equal byte for byte) wrote it."""
    n = beta.size
    spm = rng.integers(-3000, 3000, SPM_USED).astype(np.int16)
    spm[2048:2048 + n] = 0                                   # gamma
    spm[6144:6144 + n] = beta
    row = dict(ROW, m=1, n=n, a_stride=n, b_stride=n, c_stride=n, d_stride=n, e_stride=n)
    prog, count, _ = _single(dict(row, sub=Vec.LN_FWD, shift=shift, shift2=shift2, shift4=8), spm=spm)
    ddr = prog.ddr.copy()
    want = compare(rtl, prog, count, ddr)
    assert want.error == Err.NONE, want.detail
    return ddr[prog.free:prog.free + 2 * SPM_USED].view(np.int16)[4096:4096 + n]


@needs_vec
@pytest.mark.parametrize("shift2", [1, 2, 5, 15, 16, 30])
def test_ln_beta_right_alignment_rounds_half_to_even(rtl, shift2):
    """LN_FWD with gamma = 0 and shift 0: Y = align(beta, shift2) alone, rounded half to even (exact
    halves, the int16 extremes) as fsim rounds it."""
    rng = np.random.default_rng(80 + shift2)
    beta = rne_ties(rng, shift2, 120)
    y = _ln_beta_alone(rtl, rng, beta, shift2, 0)
    np.testing.assert_array_equal(y, np.rint(beta / 2.0**shift2))          # numpy rounds half to even


@needs_vec
@pytest.mark.parametrize("left", [3, 16, 17, 33, 47])
def test_ln_beta_left_alignment_is_exact(rtl, left):
    """LN_FWD with gamma = 0, shift2 = -left and shift = left: Y = beta exactly (each 16-bit step and the
    product by 2**(left mod 16) of the alignment shows)."""
    rng = np.random.default_rng(90 + left)
    beta = rng.integers(-32768, 32768, 64).astype(np.int16)
    np.testing.assert_array_equal(_ln_beta_alone(rtl, rng, beta, -left, left), beta)


@needs_vec
def test_errors_found_while_running(rtl):
    # LN_BWD: a row whose k makes shift3 + k leave -16..62 (row statistics from ACC)
    stats = np.array([1 << 20, (5 << 32) | 900, (60 << 32) | 700], dtype=np.int64)
    prog, count, pc = _single(dict(ROW, sub=Vec.LN_BWD, shift=8, shift2=8, shift3=3), acc=stats)
    want = compare(rtl, prog, count)
    assert (want.error, want.err_pc) == (Err.BAD_SHIFT, pc), want.detail
    # COLDOT: a column total outside 48 bits
    acc = np.full(64, (1 << 47) - 1, dtype=np.int64)      # any column with a positive sum overflows
    prog, count, pc = _single(dict(ROW, sub=Vec.COLDOT), acc=acc)
    want = compare(rtl, prog, count)
    assert (want.error, want.err_pc) == (Err.ACC_RANGE, pc), want.detail
    # MASK: a connection-list entry >= n
    lists = np.arange(64, dtype=np.uint16) % 8
    lists[5] = 20                                       # row 2 reads lists[4:8]
    prog, count, pc = _single(dict(ROW, sub=Vec.MASK, k=4, imm=1, b_addr=0, b_stride=4), idx=lists)
    want = compare(rtl, prog, count)
    assert (want.error, want.err_pc) == (Err.SPM_RANGE, pc), want.detail


@needs_vec
def test_broken_gelu_rounding_fails_the_comparison():
    """Mutation check: GELU_BWD rounding RNE instead of SR must not pass. The build is the MUTATION=7 one of
    sim/test_engine_mutation.py (its LOAD-stride and GEMM mutations cannot touch this program: single-row
    LOADs and STOREs, no GEMM), and the real RTL passes the same program."""
    mutant = rtlsim.RtlEngine.__new__(rtlsim.RtlEngine)
    lib = rtlsim.build(CFG, overrides={"MUTATION": 7})
    mutant.config, mutant.ddr_base, mutant.max_cycles, mutant.last_cycles = CFG, 0x8_0000_0000, 200_000_000, 0
    mutant.harness = rtlsim.Harness(CFG, rtlsim.DdrModel(), lib=lib)
    prog = RandomProgram(np.random.default_rng(77))
    prog.ELEMENTWISE = (Vec.GELU_BWD,)
    count = prog.build(commands=4, kinds=("elementwise",))
    compare(rtlsim.RtlEngine(CFG), prog, count)         # the real RTL passes this program
    with pytest.raises(AssertionError, match="DDR bytes differ"):
        compare(mutant, prog, count)
