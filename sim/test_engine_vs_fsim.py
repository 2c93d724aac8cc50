"""Random programs on the RTL engine (Verilator, C++ harness) equal trilevel.accel.fsim, the
command-level golden model the C-sim engine is also tested against: every byte of the DDR image after
the run (all on-chip memories and the STAT slots stored back), ERROR, ERR_PC, RETIRED and the exact
counters (DDR bytes, MACs). Programs use the commands the RTL implements (LOAD, STORE, GEMM, SOFTMAX,
TOPK, FINISH)
with random shapes, strides, flags, shifts and dependency tokens; corrupted fields must stop both
engines at the same command with the same error."""

from __future__ import annotations

import numpy as np
import pytest

from trilevel.accel import fsim, isa, rtlsim
from trilevel.accel.isa import Mem, Op, SoftmaxSub

CFG = isa.CI_SMALL
QUARTER = 2048
SPM_USED, ACC_USED, IDX_USED = 4 * QUARTER, 2048, 512
DDR_BYTES = 1 << 18
EXACT = ("DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")


@pytest.fixture(scope="module")
def rtl():
    return rtlsim.RtlEngine(CFG, rtlsim.DdrModel(stall=0.05, seed=11))


class Program:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.cmds = rng, []
        self.ddr = np.zeros(DDR_BYTES, dtype=np.uint8)
        self.free = 1 << 14

    def r(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def put(self, arr: np.ndarray) -> int:
        addr = self.free
        self.ddr[addr: addr + arr.nbytes] = np.ascontiguousarray(arr).view(np.uint8).ravel()
        self.free = -(-(addr + arr.nbytes) // 64) * 64
        return addr

    def region(self, quarter: int, rows: int, cols: int) -> tuple[int, int]:
        stride = cols + self.r(0, 3)
        span = (rows - 1) * stride + cols
        return quarter * QUARTER + self.r(0, QUARTER - span), stride

    def gemm(self) -> dict[str, int]:
        m, n, k = self.r(1, 24), self.r(1, 24), self.r(1, 40)
        quarters = list(self.rng.permutation(4))
        out, ins = int(quarters[0]), [int(q) for q in quarters[1:]]
        ta, tb = self.r(0, 1), self.r(0, 1)
        a_addr, a_stride = self.region(ins[0], k if ta else m, m if ta else k)
        b_addr, b_stride = self.region(ins[1], k if tb else n, n if tb else k)
        f = dict(m=m, n=n, k=k, a_addr=a_addr, a_stride=a_stride, ta=ta, b_addr=b_addr, b_stride=b_stride,
                 tb=tb)
        if self.rng.random() < 0.25:
            f.update(acc=1, f_addr=self.r(0, ACC_USED - 24 * 24), c_stride=n)
            return f
        c_addr, c_stride = self.region(out, m, n)
        f.update(c_addr=c_addr, c_stride=c_stride, shift=self.r(-2, 30),
                 imm=int(self.rng.choice([1, 3, -2, 181])), sr=self.r(0, 1), seed=self.r(0, 2**32 - 1),
                 index_base=self.r(0, 1000), index_stride=self.r(0, 99))
        if self.r(0, 1):
            f.update(bias=1, d_addr=self.region(ins[2], 1, n)[0], shift2=self.r(-5, 5))
        e = self.r(0, 2)
        if e:
            e_addr, e_stride = self.region(ins[2], m, n)
            f.update(e_addr=e_addr, e_stride=e_stride, res=int(e == 1), mask=int(e == 2),
                     shift3=self.r(-5, 5))
        if self.r(0, 1):
            f.update(stat=1, slot=self.r(0, 63))
        return f

    def topk(self) -> dict[str, int]:
        m, n = self.r(1, 6), self.r(1, 70)
        k, lead = self.r(1, n), self.r(0, 2)
        f = dict(m=m, n=n, k=k, imm=lead, a_addr=self.r(0, ACC_USED - 6 * 74), a_stride=n + self.r(0, 3),
                 c_addr=self.r(0, IDX_USED - 6 * 75), c_stride=lead + k + self.r(0, 2))
        return f

    def softmax(self) -> dict[str, int]:
        m, n = self.r(1, 12), self.r(1, 64)
        quarters = [int(q) for q in self.rng.permutation(4)]
        out, ins = quarters[0], quarters[1:]
        a_addr, a_stride = self.region(ins[0], m, n)
        c_addr, c_stride = self.region(out, m, n)
        f = dict(m=m, n=n, a_addr=a_addr, a_stride=a_stride, c_addr=c_addr, c_stride=c_stride)
        if self.r(0, 1):
            e_addr, e_stride = self.region(ins[1], m, n)
            f.update(sub=SoftmaxSub.FWD, shift=self.r(0, 15), mask=self.r(0, 1), e_addr=e_addr,
                     e_stride=e_stride)
            if self.r(0, 1):
                f.update(acc=1, d_addr=self.r(0, ACC_USED - 12 * 70), d_stride=n + self.r(0, 5))
        else:
            b_addr, b_stride = self.region(ins[1], m, n)
            f.update(sub=SoftmaxSub.BWD, b_addr=b_addr, b_stride=b_stride, shift=self.r(10, 45),
                     seed=self.r(0, 2**32 - 1), index_base=self.r(0, 500), index_stride=n, stat=self.r(0, 1),
                     slot=self.r(0, 63))
        return f

    def build(self, gemms: int) -> int:
        rng = self.rng
        spm = rng.integers(-4000, 4000, SPM_USED).astype(np.int16)
        spm[rng.random(SPM_USED) < 0.3] = 0           # zeros: masked softmax entries, empty rows
        acc = rng.integers(-(2**30), 2**30, ACC_USED).astype(np.int64)
        if rng.random() < 0.5:       # ties among the top-k scores
            acc[: ACC_USED // 2] = rng.integers(-3, 3, ACC_USED // 2)
        idx = rng.integers(0, 1 << 16, IDX_USED).astype(np.uint16)
        for mem, data in ((Mem.SPM, spm), (Mem.IDX, idx), (Mem.ACC, acc)):
            self.cmds.append(isa.encode(Op.LOAD, sub=mem, m=1, n=data.size, index_base=self.put(data),
                                        push_next=int(mem == Mem.ACC)))
        for i in range(gemms):
            pick = self.rng.random()
            op, f = ((Op.TOPK, self.topk()) if pick < 0.25 else (Op.SOFTMAX, self.softmax()) if pick < 0.5
                     else (Op.GEMM, self.gemm()))
            self.cmds.append(isa.encode(op, pop_prev=int(i == 0), push_next=int(i == gemms - 1), **f))
        for i, (mem, count) in enumerate(((Mem.SPM, SPM_USED), (Mem.ACC, ACC_USED), (Mem.IDX, IDX_USED),
                                          (Mem.STAT, 64))):
            addr = self.free
            self.free += -(-count * isa.DDR_ELEM_BYTES[mem] // 64) * 64
            self.cmds.append(isa.encode(Op.STORE, sub=mem, m=1, n=count, index_base=addr,
                                        pop_prev=int(i == 0)))
        self.cmds.append(isa.encode(Op.FINISH))
        words = isa.program_words(self.cmds)
        self.ddr[: words.nbytes] = words.view(np.uint8)
        return len(self.cmds)


@pytest.mark.parametrize("seed", range(10))
def test_random_programs_rtl_equals_fsim(rtl, seed):
    prog = Program(np.random.default_rng(3000 + seed))
    count = prog.build(gemms=8)
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
    prog = Program(np.random.default_rng(4000 + seed))
    count = prog.build(gemms=5)
    words = prog.ddr[: count * isa.COMMAND_BYTES].view("<u4").reshape(count, isa.WORDS)
    victim = int(prog.rng.integers(3, 8))            # one of the GEMMs / TOPKs
    word, value = CORRUPTIONS[seed % len(CORRUPTIONS)]
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
