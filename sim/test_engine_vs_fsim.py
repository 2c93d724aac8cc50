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
    count = prog.build(commands=5, kinds=KINDS)
    words = prog.ddr[: count * isa.COMMAND_BYTES].view("<u4").reshape(count, isa.WORDS)
    word, value = CORRUPTIONS[seed % len(CORRUPTIONS)]
    compute = range(3, 8)                           # the commands between the LOADs and the STOREs
    gemm_only = (word, value) == (0, 1 << 8)        # sub = 1 is a valid SOFTMAX
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
