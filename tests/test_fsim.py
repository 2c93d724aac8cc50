"""The functional simulator (trilevel.accel.fsim) on hand-encoded programs: the error codes and the
failing command, the dependency-token semantics (waiting, deadlock detection, module priorities) and the
exact counters. Its data semantics are covered kernel by kernel in tests/test_engine_kernels.py."""

from __future__ import annotations

import numpy as np
import pytest

from trilevel.accel import isa
from trilevel.accel.fsim import FunctionalEngine
from trilevel.accel.isa import Err, Mem, Module, Op, Vec

CFG = isa.CI_SMALL
DATA = 4096  # DDR offset of the test data (the program sits at 0)


def run(commands: list[np.ndarray], ddr: np.ndarray | None = None, priority: tuple[Module, ...] | None = None,
        engine: FunctionalEngine | None = None):
    program = isa.program_words(commands)
    if ddr is None:
        ddr = np.zeros(1 << 16, dtype=np.uint8)
    ddr[:program.nbytes] = program.view(np.uint8)
    engine = engine or FunctionalEngine(CFG, priority)
    return engine.run(ddr, 0, len(commands)), ddr


def load(**fields: int) -> np.ndarray:
    base = {"sub": Mem.SPM, "m": 1, "n": 4, "index_base": DATA, "index_stride": 8}
    return isa.encode(Op.LOAD, **{**base, **fields})


GOOD = load()
FINISH = isa.encode(Op.FINISH)
GEMM = {"m": 1, "n": 1, "k": 4, "a_addr": 0, "b_addr": 0, "c_addr": 8, "imm": 1}

BAD = {
    "opcode": (np.array([9] + [0] * 15, dtype=np.uint32), Err.BAD_OPCODE),
    "reserved bit": (np.array([int(Op.FINISH) | 1 << 30] + [0] * 15, dtype=np.uint32), Err.RESERVED_BITS),
    "VEC sub": (isa.encode(Op.VEC, sub=9, m=1, n=1), Err.RESERVED_BITS),
    "LOAD of STAT": (load(sub=Mem.STAT), Err.RESERVED_BITS),
    "LOAD pops prev": (load(pop_prev=1), Err.RESERVED_BITS),
    "GEMM res+mask": (isa.encode(Op.GEMM, res=1, mask=1, **GEMM), Err.RESERVED_BITS),
    "GEMM k=0": (isa.encode(Op.GEMM, **{**GEMM, "k": 0}), Err.BAD_DIMS),
    "softmax row > max_row": (isa.encode(Op.SOFTMAX, m=1, n=CFG.max_row + 1), Err.BAD_DIMS),
    "TOPK k > n": (isa.encode(Op.TOPK, m=1, n=4, k=5), Err.BAD_DIMS),
    "GEMM shift 63": (isa.encode(Op.GEMM, shift=63, **GEMM), Err.BAD_SHIFT),
    "GEMM shift -17": (isa.encode(Op.GEMM, shift=-17, **GEMM), Err.BAD_SHIFT),
    "softmax frac 16": (isa.encode(Op.SOFTMAX, m=1, n=4, shift=16), Err.BAD_SHIFT),
    "SPM overrun": (load(a_addr=CFG.spm_elems - 2), Err.SPM_RANGE),
    "stat slot": (isa.encode(Op.GEMM, stat=1, slot=CFG.stat_slots, **GEMM) if CFG.stat_slots < 64
                  else isa.encode(Op.VEC, sub=Vec.LN_BWD, m=1, n=4, stat=1, slot=62), Err.SPM_RANGE),
    "DDR overrun": (load(index_base=(1 << 16) - 4), Err.DDR_RANGE),
    "DDR row not element-aligned": (load(index_base=DATA + 1), Err.DDR_RANGE),
    "ACC over 48 bits": (load(sub=Mem.ACC, n=1), Err.ACC_RANGE),
    "pop with no producer": (isa.encode(Op.GEMM, pop_prev=1, **GEMM), Err.DEP_UNDERFLOW),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_error_code_stops_at_the_failing_command(case: str) -> None:
    bad, code = BAD[case]
    ddr = np.zeros(1 << 16, dtype=np.uint8)
    ddr[DATA:DATA + 8] = np.array([1 << 47], dtype="<i8").view(np.uint8)  # for the ACC case
    result, _ = run([GOOD, bad, GOOD, FINISH], ddr)
    assert (result.error, result.err_pc) == (code, 1), result.detail
    # The LOAD after a blocked COMPUTE command still runs (its own queue) before the deadlock shows.
    assert result.retired == (2 if code == Err.DEP_UNDERFLOW else 1)
    assert result.status == isa.CTRL_DONE | isa.CTRL_IDLE


def test_alignment_shifts_accept_left_shifts_beyond_the_requantizer() -> None:
    ddr = np.zeros(1 << 16, dtype=np.uint8)
    ddr[DATA:DATA + 8] = np.array([1, 2, 3, 4], dtype="<i2").view(np.uint8)
    cmds = [load(), isa.encode(Op.GEMM, bias=1, shift2=-47, d_addr=0, res=1, shift3=-20, e_addr=0, **GEMM),
            isa.encode(Op.GEMM, bias=1, shift2=-48, d_addr=0, **GEMM), FINISH]
    result, _ = run(cmds, ddr)
    assert (result.error, result.err_pc) == (Err.BAD_SHIFT, 2)


def test_gemm_transposes_epilogue_and_store() -> None:
    """C = A B^T with A read transposed, bias and residual aligned, RNE; stored to DDR and counted."""
    rng = np.random.default_rng(1)
    a = rng.integers(-300, 300, (3, 5)).astype(np.int16)  # [m, k], stored transposed
    b = rng.integers(-300, 300, (4, 5)).astype(np.int16)
    bias = rng.integers(-100, 100, 4).astype(np.int16)
    ddr = np.zeros(1 << 16, dtype=np.uint8)
    at = np.ascontiguousarray(a.T)  # [5, 3]: A(i, p) = at[p, i]
    for offset, arr in ((DATA, at), (DATA + 64, b), (DATA + 128, bias)):
        ddr[offset:offset + arr.nbytes] = arr.view(np.uint8).reshape(-1)
    cmds = [isa.encode(Op.LOAD, sub=Mem.SPM, m=5, n=3, index_base=DATA, index_stride=6, a_addr=0, a_stride=3,
                       push_next=0),
            isa.encode(Op.LOAD, sub=Mem.SPM, m=4, n=5, index_base=DATA + 64, index_stride=10, a_addr=100,
                       a_stride=5),
            isa.encode(Op.LOAD, sub=Mem.SPM, m=1, n=4, index_base=DATA + 128, index_stride=8, a_addr=200,
                       push_next=1),
            isa.encode(Op.GEMM, m=3, n=4, k=5, a_addr=0, a_stride=3, ta=1, b_addr=100, b_stride=5, c_addr=300,
                       c_stride=4, bias=1, d_addr=200, shift2=-2, shift=3, imm=1, stat=1, slot=5, pop_prev=1,
                       push_next=1),
            isa.encode(Op.STORE, sub=Mem.SPM, m=3, n=4, a_addr=300, a_stride=4, index_base=DATA + 256,
                       index_stride=8, pop_prev=1),
            isa.encode(Op.STORE, sub=Mem.STAT, m=1, n=1, a_addr=5, index_base=DATA + 512, index_stride=8),
            FINISH]
    result, ddr = run(cmds, ddr)
    assert result.error == Err.NONE, result.detail
    v = a.astype(np.int64) @ b.T.astype(np.int64) + (bias.astype(np.int64) << 2)
    q = np.clip(np.round(v / 8.0), -32768, 32767)  # RNE: numpy rounds half to even
    got = ddr[DATA + 256:DATA + 256 + 24].view("<i2").reshape(3, 4)
    assert np.array_equal(got, q)
    assert int(ddr[DATA + 512:DATA + 520].view("<i8")[0]) == int(np.abs(v).max()) >> 3
    c = result.counters
    assert c["MACS"] == 3 * 4 * 5 and c["RETIRED"] == len(cmds) == result.retired
    assert c["DDR_RD_BYTES"] == 64 * len(cmds) + (15 + 20 + 4) * 2
    assert c["DDR_WR_BYTES"] == 24 + 8


def test_tokens_order_modules_and_priorities_do_not_change_results() -> None:
    """A LOAD that must wait for COMPUTE (c2l) runs after it under every priority; without the token the
    DMA-first schedule overwrites the operand first (the simulator exposes the missing dependency)."""
    ddr = np.zeros(1 << 16, dtype=np.uint8)
    ddr[DATA:DATA + 16] = np.array([1, 1, 1, 1, 5, 5, 5, 5], dtype="<i2").view(np.uint8)

    def program(tokens: bool) -> list[np.ndarray]:
        return [load(push_next=1),
                isa.encode(Op.GEMM, pop_prev=1, push_prev=int(tokens), push_next=1, **GEMM),
                load(index_base=DATA + 8, pop_next=int(tokens)),
                isa.encode(Op.STORE, sub=Mem.SPM, m=1, n=1, a_addr=8, index_base=DATA + 64, index_stride=2,
                           pop_prev=1),
                FINISH]

    for priority in (None, (Module.LOAD, Module.STORE, Module.COMPUTE)):
        result, out = run(program(True), ddr.copy(), priority)
        assert result.error == Err.NONE and int(out[DATA + 64:DATA + 66].view("<i2")[0]) == 4
    result, out = run(program(False), ddr.copy(), (Module.LOAD, Module.STORE, Module.COMPUTE))
    assert int(out[DATA + 64:DATA + 66].view("<i2")[0]) == 100  # the race, visible


def test_deadlock_is_reported_not_hung() -> None:
    cmds = [isa.encode(Op.GEMM, pop_next=1, **GEMM),  # waits for a STORE token
            isa.encode(Op.STORE, sub=Mem.SPM, m=1, n=1, index_base=DATA, index_stride=2, pop_prev=1), FINISH]
    result, _ = run(cmds)
    assert (result.error, result.err_pc) == (Err.DEP_UNDERFLOW, 0)
