"""Counters of error runs equal fsim's: RETIRED and the DDR byte counters (64 bytes per retired
command) must not count a command that was queued or waiting for its token when an earlier command
failed and was then dropped (a STORE waiting on pop_prev behind a failing COMPUTE command).
Without b74f87f (a module must not take its next command in the cycle it raises an error) every case
here fails with RETIRED 2 vs fsim's 1 and DDR_RD_BYTES + 64 (checked on a copy of the tree with that
change reverted)."""

from __future__ import annotations

import numpy as np
import pytest

from trilevel.accel import fsim, isa, rtlsim
from trilevel.accel.isa import Err, Mem, Op, Vec

CFG = isa.CI_SMALL
COUNTED = ("RETIRED", "DDR_RD_BYTES", "DDR_WR_BYTES", "MACS")


@pytest.fixture(scope="module")
def rtl():
    return rtlsim.RtlEngine(CFG, rtlsim.DdrModel(stall=0.05, seed=5))


def _program(bad: dict[str, int], op: Op, store_pop: int) -> tuple[np.ndarray, int, int]:
    ddr = np.zeros(1 << 16, dtype=np.uint8)
    spm = np.random.default_rng(1).integers(-3000, 3000, 1024).astype(np.int16)
    ddr[4096: 4096 + spm.nbytes] = spm.view(np.uint8)
    cmds = [isa.encode(Op.LOAD, sub=Mem.SPM, m=1, n=spm.size, index_base=4096, push_next=1),
            isa.encode(op, pop_prev=1, push_next=1, **bad),
            isa.encode(Op.STORE, sub=Mem.SPM, m=1, n=256, index_base=16384, pop_prev=store_pop),
            isa.encode(Op.STORE, sub=Mem.SPM, m=1, n=64, index_base=20480),
            isa.encode(Op.FINISH)]
    words = isa.program_words(cmds)
    ddr[: words.nbytes] = words.view(np.uint8)
    return ddr, len(cmds), 1


GEMM = dict(m=4, n=4, k=4, a_addr=0, a_stride=4, b_addr=64, b_stride=4, c_addr=128, c_stride=4, shift=4)
CASES = {
    "gemm_bad_dims": (Op.GEMM, dict(GEMM, m=0), Err.BAD_DIMS),
    "gemm_bad_shift": (Op.GEMM, dict(GEMM, shift=127), Err.BAD_SHIFT),
    "gemm_spm_range": (Op.GEMM, dict(GEMM, c_addr=CFG.spm_elems - 3), Err.SPM_RANGE),
    "vec_bad_dims": (Op.VEC, dict(sub=Vec.COLSUM, m=0, n=8, a_addr=0, a_stride=8, f_addr=0), Err.BAD_DIMS),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_run_counters_equal_fsim(rtl, name):
    op, fields, code = CASES[name]
    ddr, count, pc = _program(fields, op, store_pop=1)
    ddr_r, ddr_f = ddr.copy(), ddr.copy()
    got = rtl.run(ddr_r, 0, count)
    want = fsim.FunctionalEngine(CFG).run(ddr_f, 0, count)
    assert (want.error, want.err_pc) == (code, pc), want.detail
    assert (got.error, got.err_pc) == (want.error, want.err_pc)
    assert got.retired == want.retired == 1
    for name_ in COUNTED:
        assert got.counters[name_] == want.counters[name_], name_
