"""Randomized programs on the HLS C++ engine's C-sim equal trilevel.accel.fsim (the command-level golden
model) bit for bit: every byte of DDR after the run (all on-chip memories and statistics stored back),
ERROR, ERR_PC, RETIRED and the exact counters (DDR bytes, MACs)."""

from __future__ import annotations

import numpy as np
import pytest
from test_engine_csim import Engine, _build_csim

from trilevel.accel import fsim, isa
from trilevel.accel.isa import Mem, Op, SoftmaxSub, Vec

QUARTER = 2048  # SPM elements per quarter; a command writes one quarter and reads the others
SPM_USED, ACC_USED, IDX_USED = 4 * QUARTER, 4096, 512
MASK_LISTS = 256  # IDX [0, 256): connection lists with entries < 16; TOPK writes IDX [256, 512)
DDR_BYTES = 1 << 20
EXACT_COUNTERS = ("DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(_build_csim().build())


class Gen:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.cmds: list[np.ndarray] = []
        self.ddr = np.zeros(DDR_BYTES, dtype=np.uint8)
        self.free = 1 << 16

    def r(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def put(self, arr: np.ndarray) -> int:
        addr = self.free
        self.ddr[addr : addr + arr.nbytes] = np.ascontiguousarray(arr).view(np.uint8).ravel()
        self.free = -(-(addr + arr.nbytes) // 64) * 64
        return addr

    def add(self, op: Op, **f: int) -> None:
        self.cmds.append(isa.encode(op, **f))

    def region(self, quarter: int, rows: int, cols: int) -> tuple[int, int]:
        """An address and row stride for a rows x cols operand inside SPM quarter `quarter`."""
        stride = cols + self.r(0, 3)
        span = (rows - 1) * stride + cols
        return quarter * QUARTER + self.r(0, QUARTER - span), stride

    def quarters(self) -> tuple[int, list[int]]:
        out = self.r(0, 3)
        return out, [q for q in range(4) if q != out]

    # ------------------------------------------------------------------------ commands
    def gemm(self) -> None:
        m, n, k = self.r(1, 40), self.r(1, 40), self.r(1, 40)
        out, ins = self.quarters()
        ta, tb, acc = self.r(0, 1), self.r(0, 1), self.rng.random() < 0.25
        a_addr, a_stride = self.region(ins[0], k if ta else m, m if ta else k)
        b_addr, b_stride = self.region(ins[1], k if tb else n, n if tb else k)
        f = dict(
            m=m, n=n, k=k, a_addr=a_addr, a_stride=a_stride, ta=ta, b_addr=b_addr, b_stride=b_stride, tb=tb
        )
        if acc:
            f.update(acc=1, f_addr=self.r(0, ACC_USED - 40 * 40), c_stride=n)
        else:
            c_addr, c_stride = self.region(out, m, n)
            f.update(
                c_addr=c_addr,
                c_stride=c_stride,
                shift=self.r(-2, 30),
                imm=int(self.rng.choice([1, 3, -2, 181])),
                sr=self.r(0, 1),
                seed=self.r(0, 2**32 - 1),
                index_base=self.r(0, 1000),
                index_stride=self.r(0, 99),
            )
            if self.r(0, 1):
                f.update(bias=1, d_addr=self.region(ins[2], 1, n)[0], shift2=self.r(-5, 5))
            e = self.r(0, 2)
            if e:
                e_addr, e_stride = self.region(ins[2], m, n)
                f.update(
                    e_addr=e_addr, e_stride=e_stride, res=int(e == 1), mask=int(e == 2), shift3=self.r(-5, 5)
                )
            if self.r(0, 1):
                f.update(stat=1, slot=self.r(0, 63))
        self.add(Op.GEMM, **f)

    def softmax(self) -> None:
        m, n = self.r(1, 20), self.r(1, 64)
        out, ins = self.quarters()
        a_addr, a_stride = self.region(ins[0], m, n)
        c_addr, c_stride = self.region(out, m, n)
        f = dict(m=m, n=n, a_addr=a_addr, a_stride=a_stride, c_addr=c_addr, c_stride=c_stride)
        if self.r(0, 1):
            e_addr, e_stride = self.region(ins[1], m, n)
            f.update(
                sub=SoftmaxSub.FWD, shift=self.r(0, 15), mask=self.r(0, 1), e_addr=e_addr, e_stride=e_stride
            )
            if self.r(0, 1):
                f.update(acc=1, d_addr=self.r(0, ACC_USED - 20 * 70), d_stride=n + self.r(0, 5))
        else:
            b_addr, b_stride = self.region(ins[1], m, n)
            f.update(
                sub=SoftmaxSub.BWD,
                b_addr=b_addr,
                b_stride=b_stride,
                shift=self.r(10, 45),
                seed=self.r(0, 2**32 - 1),
                index_base=self.r(0, 500),
                index_stride=n,
                stat=self.r(0, 1),
                slot=self.r(0, 63),
            )
        self.add(Op.SOFTMAX, **f)

    def layernorm(self) -> None:
        m, n = self.r(1, 16), self.r(2, 64)
        out, ins = self.quarters()
        x_addr, x_stride = self.region(ins[0], m, n)
        half = QUARTER // 2
        c_addr, e_addr = (
            out * QUARTER + self.r(0, half - m * n),
            out * QUARTER + half + self.r(0, half - m * n),
        )
        f_addr = self.r(0, ACC_USED - m)
        fwd = dict(
            m=m,
            n=n,
            a_addr=x_addr,
            a_stride=x_stride,
            b_addr=self.region(ins[1], 1, n)[0],
            d_addr=self.region(ins[2], 1, n)[0],
            c_addr=c_addr,
            c_stride=n,
            e_addr=e_addr,
            e_stride=n,
            f_addr=f_addr,
            shift=self.r(8, 20),
            shift2=self.r(-8, 4),
            shift4=self.r(4, 14),
            stat=self.r(0, 1),
            slot=self.r(0, 63),
        )
        self.add(Op.VEC, sub=Vec.LN_FWD, **fwd)
        # the backward over the same rows (XHAT and row statistics just written), into another quarter
        out2 = ins[0]
        dy_addr, dy_stride = self.region(ins[1], m, n)
        bwd = dict(
            m=m,
            n=n,
            a_addr=dy_addr,
            a_stride=dy_stride,
            b_addr=self.region(ins[2], 1, n)[0],
            e_addr=e_addr,
            e_stride=n,
            f_addr=f_addr,
            c_addr=self.region(out2, m, n)[0],
            c_stride=n,
            shift=self.r(10, 20),
            shift2=self.r(8, 20),
            shift3=self.r(0, 12),
            seed=self.r(0, 2**32 - 1),
            index_base=self.r(0, 100),
            index_stride=n,
            stat=self.r(0, 1),
            slot=self.r(0, 61),
        )
        if self.r(0, 1):
            d_addr, d_stride = self.region(ins[2], m, n)
            bwd.update(bias=1, d_addr=d_addr, d_stride=d_stride, shift4=self.r(-10, 10))
        self.add(Op.VEC, sub=Vec.LN_BWD, **bwd)

    def elementwise(self) -> None:
        m, n = self.r(1, 30), self.r(1, 60)
        out, ins = self.quarters()
        a_addr, a_stride = self.region(ins[0], m, n)
        b_addr, b_stride = self.region(ins[1], m, n)
        c_addr, c_stride = self.region(out, m, n)
        sub = Vec(int(self.rng.choice([Vec.GELU_FWD, Vec.GELU_BWD, Vec.COLSUM, Vec.COLDOT])))
        f = dict(sub=sub, m=m, n=n, a_addr=a_addr, a_stride=a_stride, b_addr=b_addr, b_stride=b_stride)
        if sub in (Vec.COLSUM, Vec.COLDOT):
            f.update(f_addr=self.r(0, ACC_USED - n))
        else:
            f.update(
                c_addr=c_addr,
                c_stride=c_stride,
                imm=self.r(4, 14),
                shift=self.r(10, 30),
                sr=1,
                seed=self.r(0, 2**32 - 1),
                index_base=self.r(0, 99),
                index_stride=n,
                stat=self.r(0, 1),
                slot=self.r(0, 63),
            )
        self.add(Op.VEC, **f)

    def mask_topk(self) -> None:
        n = self.r(16, 40)
        m, dense = self.r(1, 20), self.r(0, 2)
        k = self.r(1, min(n, 12))
        out, _ = self.quarters()
        c_addr, c_stride = self.region(out, m, n)
        self.add(
            Op.VEC,
            sub=Vec.MASK,
            m=m,
            n=n,
            k=k,
            imm=dense,
            b_addr=self.r(0, 40),
            b_stride=self.r(k, 12),
            c_addr=c_addr,
            c_stride=c_stride,
        )
        tm, tn = self.r(1, 8), self.r(1, 60)
        tk, lead = self.r(1, tn), self.r(0, 1)
        self.add(
            Op.TOPK,
            m=tm,
            n=tn,
            k=tk,
            imm=lead,
            a_addr=self.r(0, ACC_USED - 8 * 64),
            a_stride=tn + self.r(0, 3),
            c_addr=MASK_LISTS + self.r(0, 100),
            c_stride=lead + tk,
        )

    def build(self, commands: int) -> int:
        rng = self.rng
        spm = rng.integers(-4000, 4000, SPM_USED).astype(np.int16)
        acc = rng.integers(-(2**30), 2**30, ACC_USED).astype(np.int64)
        idx = np.concatenate([rng.integers(0, 16, MASK_LISTS), rng.integers(0, 2**16, IDX_USED - MASK_LISTS)])
        for mem, data in ((Mem.SPM, spm), (Mem.ACC, acc), (Mem.IDX, idx.astype(np.uint16))):
            self.add(
                Op.LOAD,
                sub=mem,
                m=1,
                n=data.size,
                index_base=self.put(data),
                index_stride=0,
                a_addr=0,
                push_next=int(mem == Mem.IDX),
            )
        first = True
        for _ in range(commands):
            before = len(self.cmds)
            rng.choice([self.gemm, self.softmax, self.layernorm, self.elementwise, self.mask_topk])()
            if first:
                self.cmds[before][0] |= 1 << isa.CONTROL["pop_prev"][0]
                first = False
        self.cmds[-1][0] |= 1 << isa.CONTROL["push_next"][0]
        for i, (mem, count) in enumerate(
            ((Mem.SPM, SPM_USED), (Mem.ACC, ACC_USED), (Mem.IDX, IDX_USED), (Mem.STAT, 64))
        ):
            size = isa.DDR_ELEM_BYTES[mem]
            addr = self.free
            self.free += -(-count * size // 64) * 64
            self.add(
                Op.STORE,
                sub=mem,
                m=1,
                n=count,
                index_base=addr,
                index_stride=0,
                a_addr=0,
                pop_prev=int(i == 0),
            )
        self.add(Op.FINISH)
        words = isa.program_words(self.cmds)
        self.ddr[: words.nbytes] = words.view(np.uint8)
        return len(self.cmds)


@pytest.mark.parametrize("seed", range(12))
def test_random_programs_csim_equals_fsim(engine, seed):
    gen = Gen(np.random.default_rng(1000 + seed))
    count = gen.build(commands=12)
    ddr_c, ddr_f = gen.ddr.copy(), gen.ddr.copy()
    got = engine.run(ddr_c, 0, count)
    want = fsim.FunctionalEngine(isa.PRODUCTION).run(ddr_f, 0, count)
    assert (got["error"], got["err_pc"]) == (want.error, want.err_pc), want.detail
    assert got["retired"] == want.retired
    if want.error == isa.Err.NONE:
        np.testing.assert_array_equal(ddr_c, ddr_f)
        for name in EXACT_COUNTERS:
            assert got["counters"][name] == want.counters[name], name


CORRUPTIONS = (
    (1, 0x00000000),  # m = n = 0: BAD_DIMS
    (0, 1 << 27),  # a reserved bit of word 0: RESERVED_BITS
    (0, 9),  # opcode 9: BAD_OPCODE
    (6, 0x00FFFFF0),  # a_addr at the top of the 24-bit range: SPM_RANGE where A is read
    (2, 0x007F0000),  # shift = 127 where a shift is used: BAD_SHIFT
)


@pytest.mark.parametrize("seed", range(10))
def test_random_faults_stop_both_at_the_same_command(engine, seed):
    gen = Gen(np.random.default_rng(2000 + seed))
    count = gen.build(commands=8)
    words = gen.ddr[: count * isa.COMMAND_BYTES].view("<u4").reshape(count, isa.WORDS)
    victim = int(gen.rng.integers(4, count - 5))  # a compute command between the LOADs and the STOREs
    word, value = CORRUPTIONS[seed % len(CORRUPTIONS)]
    if word == 0:
        words[victim, 0] = value if value < 16 else words[victim, 0] | value
    else:
        words[victim, word] = (
            words[victim, word] & ~np.uint32(0x00FFFFFF if word == 6 else 0xFFFFFFFF)
        ) | value
    ddr_c, ddr_f = gen.ddr.copy(), gen.ddr.copy()
    got = engine.run(ddr_c, 0, count)
    want = fsim.FunctionalEngine(isa.PRODUCTION).run(ddr_f, 0, count)
    assert (got["error"], got["err_pc"]) == (want.error, want.err_pc), want.detail
    assert got["retired"] == want.retired  # the commands before the failing one ran on both
    if want.error == isa.Err.NONE:  # the corrupted field was one this command does not use
        np.testing.assert_array_equal(ddr_c, ddr_f)
