"""Random engine programs for the differential tests against trilevel.accel.fsim (the command-level golden
model): the RTL engine (sim/test_engine_vs_fsim.py, sim/test_engine_vec.py) and the HLS engine's C-sim
(tests/test_engine_csim_fsim.py, which puts sim/ on sys.path).

A program lives in a DDR image: its command words at offset 0, then LOADs of random SPM / ACC / IDX
contents, random compute commands (shapes, strides, flags, shifts, seeds; each writes one quarter of the
used SPM and reads the others), STOREs of every used memory and the STAT slots, FINISH; dependency tokens
order the LOADs, the compute commands and the STOREs. The generators draw only commands that are valid
for both engine configurations (isa.CI_SMALL and isa.PRODUCTION)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trilevel.accel import isa
from trilevel.accel.isa import Mem, Op, SoftmaxSub, Vec

QUARTER = 2048                    # SPM elements per quarter: a command writes one and reads the others
SPM_USED, ACC_USED, IDX_USED = 4 * QUARTER, 2048, 1024
LISTS = 256                       # IDX [0, 256): connection lists with entries < 16 (MASK reads them)
DDR_BYTES = 1 << 18
KINDS = ("gemm", "softmax", "layernorm", "elementwise", "mask", "topk")


def rne_ties(rng: np.random.Generator, shift: int, n: int) -> np.ndarray:
    """n int16 values for a right shift by `shift`: every other one an exact half (q 2**shift +
    2**(shift-1), q odd and even), the int16 extremes, -1 and 1 first, the rest random."""
    q = rng.integers(-(1 << max(0, 15 - shift)), 1 << max(0, 15 - shift), n)
    ties = np.clip(q * (1 << shift) + (1 << (shift - 1)), -32768, 32767)
    v = np.where(np.arange(n) % 2 == 0, ties, rng.integers(-32768, 32768, n))
    v[:4] = (-32768, 32767, -1, 1)
    return v.astype(np.int16)


class RandomProgram:
    """`build()` writes a random program into `ddr`; the helpers let a test write its own."""

    ELEMENTWISE = (Vec.GELU_FWD, Vec.GELU_BWD, Vec.COLSUM, Vec.COLDOT)

    def __init__(self, rng: np.random.Generator, gemm_mn: int = 24, spm_zeros: float = 0.0,
                 acc_ties: bool = False) -> None:
        """`gemm_mn`: largest GEMM m and n (above the array size: several tiles); `spm_zeros`: share of
        zero SPM elements (masked softmax entries, empty rows); `acc_ties`: half the time, small ACC
        values in the lower half and values beyond int32 in the top quarter (ties among the top-k scores,
        which TOPK saturates to int32)."""
        self.rng, self.cmds = rng, []
        self.gemm_mn, self.spm_zeros, self.acc_ties = gemm_mn, spm_zeros, acc_ties
        self.ddr = np.zeros(DDR_BYTES, dtype=np.uint8)
        self.free = 1 << 14

    # ------------------------------------------------------------------------------ helpers
    def r(self, lo: int, hi: int) -> int:
        """A random integer in [lo, hi]."""
        return int(self.rng.integers(lo, hi + 1))

    def put(self, arr: np.ndarray) -> int:
        """Copy `arr` into free DDR (64-byte aligned); returns its address."""
        addr = self.free
        self.ddr[addr: addr + arr.nbytes] = np.ascontiguousarray(arr).view(np.uint8).ravel()
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
        """The quarter a command writes and the three it reads."""
        out = self.r(0, 3)
        return out, [q for q in range(4) if q != out]

    # ------------------------------------------------------------------------------ commands
    def gemm(self) -> None:
        mn = self.gemm_mn
        m, n, k = self.r(1, mn), self.r(1, mn), self.r(1, 40)
        out, ins = self.quarters()
        ta, tb = self.r(0, 1), self.r(0, 1)
        a_addr, a_stride = self.region(ins[0], k if ta else m, m if ta else k)
        b_addr, b_stride = self.region(ins[1], k if tb else n, n if tb else k)
        f = dict(m=m, n=n, k=k, a_addr=a_addr, a_stride=a_stride, ta=ta, b_addr=b_addr, b_stride=b_stride,
                 tb=tb)
        if self.rng.random() < 0.25:
            f.update(acc=1, f_addr=self.r(0, ACC_USED - mn * mn), c_stride=n)
        else:
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
        self.add(Op.GEMM, **f)

    def softmax(self) -> None:
        m, n = self.r(1, 16), self.r(1, 64)
        out, ins = self.quarters()
        a_addr, a_stride = self.region(ins[0], m, n)
        c_addr, c_stride = self.region(out, m, n)
        f = dict(m=m, n=n, a_addr=a_addr, a_stride=a_stride, c_addr=c_addr, c_stride=c_stride)
        if self.r(0, 1):
            e_addr, e_stride = self.region(ins[1], m, n)
            f.update(sub=SoftmaxSub.FWD, shift=self.r(0, 15), mask=self.r(0, 1), e_addr=e_addr,
                     e_stride=e_stride)
            if self.r(0, 1):
                f.update(acc=1, d_addr=self.r(0, ACC_USED - 16 * 70), d_stride=n + self.r(0, 5))
        else:
            b_addr, b_stride = self.region(ins[1], m, n)
            f.update(sub=SoftmaxSub.BWD, b_addr=b_addr, b_stride=b_stride, shift=self.r(10, 45),
                     seed=self.r(0, 2**32 - 1), index_base=self.r(0, 500), index_stride=n, stat=self.r(0, 1),
                     slot=self.r(0, 63))
        self.add(Op.SOFTMAX, **f)

    def layernorm(self) -> None:
        """LN_FWD, then LN_BWD over the same rows (the XHAT and row statistics just written)."""
        m, n = self.r(1, 10), self.r(1, 70)
        out, ins = self.quarters()
        x_addr, x_stride = self.region(ins[0], m, n)
        half = QUARTER // 2
        c_addr = out * QUARTER + self.r(0, half - m * n)
        e_addr = out * QUARTER + half + self.r(0, half - m * n)
        f_addr = self.r(0, ACC_USED - m)
        self.add(Op.VEC, sub=Vec.LN_FWD, m=m, n=n, a_addr=x_addr, a_stride=x_stride,
                 b_addr=self.region(ins[1], 1, n)[0], d_addr=self.region(ins[2], 1, n)[0], c_addr=c_addr,
                 c_stride=n, e_addr=e_addr, e_stride=n, f_addr=f_addr, shift=self.r(4, 22),
                 shift2=self.r(-12, 6), shift4=self.r(-6, 30), stat=self.r(0, 1), slot=self.r(0, 63))
        dy_addr, dy_stride = self.region(ins[1], m, n)
        bwd = dict(m=m, n=n, a_addr=dy_addr, a_stride=dy_stride, b_addr=self.region(ins[2], 1, n)[0],
                   e_addr=e_addr, e_stride=n, f_addr=f_addr, c_addr=self.region(ins[0], m, n)[0], c_stride=n,
                   shift=self.r(8, 22), shift2=self.r(6, 22), shift3=self.r(-4, 14),
                   seed=self.r(0, 2**32 - 1), index_base=self.r(0, 2**32 - 1), index_stride=self.r(0, 300),
                   stat=self.r(0, 1), slot=self.r(0, 61))
        if self.r(0, 1):
            d_addr, d_stride = self.region(ins[2], m, n)
            bwd.update(bias=1, d_addr=d_addr, d_stride=d_stride, shift4=self.r(-12, 12))
        self.add(Op.VEC, sub=Vec.LN_BWD, **bwd)

    def elementwise(self) -> None:
        m, n = self.r(1, 12), self.r(1, 60)
        out, ins = self.quarters()
        a_addr, a_stride = self.region(ins[0], m, n)
        b_addr, b_stride = self.region(ins[1], m, n)
        c_addr, c_stride = self.region(out, m, n)
        sub = Vec(int(self.rng.choice(self.ELEMENTWISE)))
        f = dict(sub=sub, m=m, n=n, a_addr=a_addr, a_stride=a_stride, b_addr=b_addr, b_stride=b_stride)
        if sub in (Vec.COLSUM, Vec.COLDOT):
            f.update(f_addr=self.r(0, ACC_USED - n))
        else:
            f.update(c_addr=c_addr, c_stride=c_stride, imm=self.r(-3, 20), shift=self.r(-4, 34),
                     sr=self.r(0, 1), seed=self.r(0, 2**32 - 1), index_base=self.r(0, 2**32 - 1),
                     index_stride=self.r(0, 99), stat=self.r(0, 1), slot=self.r(0, 63))
        self.add(Op.VEC, **f)

    def mask(self) -> None:
        n = self.r(16, 40)
        m, dense = self.r(1, 12), self.r(0, 3)
        k = self.r(1, min(n, 12))
        out, _ = self.quarters()
        c_addr, c_stride = self.region(out, m, n)
        self.add(Op.VEC, sub=Vec.MASK, m=m, n=n, k=k, imm=dense, b_addr=self.r(0, 40), b_stride=self.r(k, 12),
                 c_addr=c_addr, c_stride=c_stride)

    def topk(self) -> None:
        """TOPK of ACC rows into IDX above the connection lists."""
        m, n = self.r(1, 6), self.r(1, 70)
        k, lead = self.r(1, n), self.r(0, 2)
        self.add(Op.TOPK, m=m, n=n, k=k, imm=lead, a_addr=self.r(0, ACC_USED - 6 * 74),
                 a_stride=n + self.r(0, 3), c_addr=LISTS + self.r(0, IDX_USED - LISTS - 6 * 75),
                 c_stride=lead + k + self.r(0, 2))

    # ------------------------------------------------------------------------------ program
    def build(self, commands: int, kinds: Sequence[str] = KINDS) -> int:
        """LOADs, `commands` random commands of `kinds` (a kind listed twice is drawn twice as often),
        STOREs, FINISH; returns the number of commands."""
        rng = self.rng
        spm = rng.integers(-4000, 4000, SPM_USED).astype(np.int16)
        spm[rng.random(SPM_USED) < self.spm_zeros] = 0
        acc = rng.integers(-(2**30), 2**30, ACC_USED).astype(np.int64)
        if self.acc_ties and rng.random() < 0.5:
            acc[: ACC_USED // 2] = rng.integers(-3, 3, ACC_USED // 2)
            wide = np.array([2**31 - 1, 2**31, 2**33, 2**40, 2**46])   # + a GEMM stays in 48 bits
            acc[-(ACC_USED // 4):] = rng.choice(np.concatenate([wide, -wide - 1]), ACC_USED // 4)
        idx = np.concatenate([rng.integers(0, 16, LISTS), rng.integers(0, 2**16, IDX_USED - LISTS)])
        for mem, data in ((Mem.SPM, spm), (Mem.ACC, acc), (Mem.IDX, idx.astype(np.uint16))):
            self.add(Op.LOAD, sub=mem, m=1, n=data.size, index_base=self.put(data),
                     push_next=int(mem == Mem.IDX))
        first = len(self.cmds)
        for _ in range(commands):
            getattr(self, str(rng.choice(kinds)))()
        self.cmds[first][0] |= 1 << isa.CONTROL["pop_prev"][0]
        self.cmds[-1][0] |= 1 << isa.CONTROL["push_next"][0]
        for i, (mem, count) in enumerate(((Mem.SPM, SPM_USED), (Mem.ACC, ACC_USED), (Mem.IDX, IDX_USED),
                                          (Mem.STAT, 64))):
            addr = self.free
            self.free += -(-count * isa.DDR_ELEM_BYTES[mem] // 64) * 64
            self.add(Op.STORE, sub=mem, m=1, n=count, index_base=addr, pop_prev=int(i == 0))
        self.add(Op.FINISH)
        words = isa.program_words(self.cmds)
        self.ddr[: words.nbytes] = words.view(np.uint8)
        return len(self.cmds)
