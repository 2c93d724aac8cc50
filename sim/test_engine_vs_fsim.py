"""Random programs on the RTL engine (Verilator, C++ harness) equal trilevel.accel.fsim, the
command-level golden model the C-sim engine is also tested against: every byte of the DDR image after
the run (all on-chip memories and the STAT slots stored back), ERROR, ERR_PC, RETIRED and the exact
counters (DDR bytes, MACs). Programs use the commands the RTL implements (LOAD, STORE, GEMM, SOFTMAX,
TOPK, FINISH)
with random shapes, strides, flags, shifts and dependency tokens (sim/random_programs.py, shared with the
C-sim's and the VEC unit's tests); corrupted fields must stop both engines at the same command with the
same error."""

from __future__ import annotations

import numpy as np
import pytest
from random_programs import RandomProgram

from trilevel.accel import fsim, isa, rtlsim
from trilevel.accel.isa import Op

CFG = isa.CI_SMALL
EXACT = ("DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")
KINDS = ("gemm", "gemm", "softmax", "topk")     # half GEMMs


@pytest.fixture(scope="module")
def rtl():
    return rtlsim.RtlEngine(CFG, rtlsim.DdrModel(stall=0.05, seed=11))


def program(seed: int) -> RandomProgram:
    return RandomProgram(np.random.default_rng(seed), spm_zeros=0.3, acc_ties=True)


@pytest.mark.parametrize("seed", range(10))
def test_random_programs_rtl_equals_fsim(rtl, seed):
    prog = program(3000 + seed)
    count = prog.build(commands=8, kinds=KINDS)
    ddr_r, ddr_f = prog.ddr.copy(), prog.ddr.copy()
    got = rtl.run(ddr_r, 0, count)
    want = fsim.FunctionalEngine(CFG).run(ddr_f, 0, count)
    assert (got.error, got.err_pc) == (want.error, want.err_pc), want.detail
    assert got.retired == want.retired
    if want.error == isa.Err.NONE:
        bad = np.flatnonzero(ddr_r != ddr_f)
        assert bad.size == 0, f"{bad.size} DDR bytes differ, first at {bad[:8]}"
        for name in EXACT:
            assert got.counters[name] == want.counters[name], name


def test_topk_saturates_scores_to_int32_on_rtl(rtl):
    """TOPK ranks the ACC scores saturated to int32 (docs/engine.md): scores beyond it tie at the bound, the
    lower index first; 48-bit comparisons would select [0, 1, 6] and [1, 6, 7]."""
    big = [2**40, 2**33, 2**31, 2**31 - 1, -(2**40), 5, 2**47 - 1, -(2**31) - 1]
    scores = np.array([big, big[::-1]], dtype=np.int64)
    m, n, k = 2, len(big), 3
    prog = RandomProgram(np.random.default_rng(0))
    prog.add(Op.LOAD, sub=isa.Mem.ACC, m=1, n=scores.size, index_base=prog.put(scores), push_next=1)
    prog.add(Op.TOPK, m=m, n=n, k=k, a_addr=0, a_stride=n, c_addr=0, c_stride=k, imm=0, pop_prev=1,
             push_next=1)
    out = prog.free
    prog.add(Op.STORE, sub=isa.Mem.IDX, m=1, n=m * k, index_base=out, pop_prev=1)
    prog.add(Op.FINISH)
    words = isa.program_words(prog.cmds)
    prog.ddr[: words.nbytes] = words.view(np.uint8)
    got = rtl.run(prog.ddr, 0, len(prog.cmds))
    assert got.error == isa.Err.NONE, got
    got_idx = prog.ddr[out: out + 2 * m * k].view("<u2").reshape(m, k)
    np.testing.assert_array_equal(got_idx, [[0, 1, 2], [1, 4, 5]])


CORRUPTIONS = (
    (1, 0x00000000),       # m = n = 0: BAD_DIMS
    (0, 1 << 27),          # a reserved bit of word 0: RESERVED_BITS
    (0, 9),                # opcode 9: BAD_OPCODE
    (6, 0x00FFFFF0),       # a_addr at the top of the 24-bit range: SPM_RANGE
    (2, 0x007F0000),       # shift = 127: BAD_SHIFT
    (0, 1 << 8),           # sub = 1 on a GEMM: RESERVED_BITS
)


@pytest.mark.parametrize("seed", range(6))
def test_corrupted_command_stops_rtl_and_fsim_alike(rtl, seed):
    prog = program(4000 + seed)
    word, value = CORRUPTIONS[seed % len(CORRUPTIONS)]
    gemm_only = (word, value) == (0, 1 << 8)        # sub = 1 is a valid SOFTMAX
    count = prog.build(commands=5, kinds=KINDS + ("gemm",) * 5 * gemm_only)
    words = prog.ddr[: count * isa.COMMAND_BYTES].view("<u4").reshape(count, isa.WORDS)
    compute = range(3, 8)                           # the commands between the LOADs and the STOREs
    victim = int(prog.rng.choice([i for i in compute if not gemm_only or words[i, 0] & 0xF == Op.GEMM]))
    w = words[victim]
    if word == 0:
        w[0] = (w[0] & ~np.uint32(0xF)) | value if value < 16 else w[0] | value
    else:
        w[word] = (w[word] & ~np.uint32(0x00FFFFFF if word == 6 else 0xFFFFFFFF)) | value
    ddr_r, ddr_f = prog.ddr.copy(), prog.ddr.copy()
    got = rtl.run(ddr_r, 0, count)
    want = fsim.FunctionalEngine(CFG).run(ddr_f, 0, count)
    assert want.error != isa.Err.NONE
    assert (got.error, got.err_pc) == (want.error, want.err_pc), want.detail
    assert got.retired == want.retired
