"""cocotb testbench of the engine top (hls/rtl/engine/engine_top.sv) with cocotbext-axi models: an
AxiLiteMaster programs the registers, an AxiRam with random backpressure on all five channels is the
DDR. Protocol and error cases at the CI array size: a program (LOAD, GEMM, STORE) bit-exact with
sim/engine_ref.py; a malformed command gives ERROR, ERR_PC, ap_done and the interrupt pin, never a
hang; the counters count; a reset in the middle of a program leaves the engine idle and ready."""

from __future__ import annotations

import logging
import random

import cocotb
import engine_ref
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam
from tbutil import CLOCK_NS, pause_pattern, start

from trilevel.accel import isa
from trilevel.accel.isa import Err, Mem, Op, encode

RAM_BYTES = 1 << 20
BASE = 0x40_0000_0000 % RAM_BYTES     # DDR_BASE; the RAM wraps addresses modulo its size
CMD = 0x80000
SPM_IMG = 0x10000
REG = {name: off for name, (off, _) in isa.REGISTERS.items()}


class EngineTB:
    def __init__(self, dut, seed: int, busy: float = 0.0):
        self.dut = dut
        self.rng = random.Random(seed)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=RAM_BYTES)
        if busy:
            for ch in (self.ram.write_if.aw_channel, self.ram.write_if.w_channel, self.ram.write_if.b_channel,
                       self.ram.read_if.ar_channel, self.ram.read_if.r_channel):
                ch.set_pause_generator(pause_pattern(self.rng, busy))
        for model in (self.axil.write_if, self.axil.read_if, self.ram.write_if, self.ram.read_if):
            model.log.setLevel(logging.WARNING)

    async def init(self) -> None:
        await start(self.dut, reset_cycles=8)

    async def write(self, name: str, value: int) -> None:
        await self.axil.write_dword(REG[name], value & 0xFFFFFFFF)

    async def read(self, name: str, offset: int = 0) -> int:
        return await self.axil.read_dword(REG[name] + offset)

    async def counters(self) -> dict[str, int]:
        out = {}
        for i, name in enumerate(isa.COUNTERS):
            lo = await self.read("COUNTERS", 8 * i)
            out[name] = lo | await self.read("COUNTERS", 8 * i + 4) << 32
        return out

    async def start_program(self, cmds: list[np.ndarray]) -> None:
        words = isa.program_words(cmds)
        self.ram.write(BASE + CMD, words.tobytes())
        await self.write("DDR_BASE_LO", BASE)
        await self.write("DDR_BASE_HI", 0)
        await self.write("CMD_ADDR", CMD)
        await self.write("CMD_COUNT", len(cmds))
        await self.write("CTRL", isa.CTRL_START)

    async def wait_done(self, timeout_cycles: int = 200_000) -> tuple[int, int]:
        """Poll CTRL until ap_done; returns (CTRL, cycles waited). Fails on a hang."""
        for waited in range(0, timeout_cycles, 50):
            ctrl = await self.read("CTRL")
            if ctrl & isa.CTRL_DONE:
                return ctrl, waited
            await ClockCycles(self.dut.clk, 50)
        raise AssertionError(f"engine not done after {timeout_cycles} cycles")


def gemm_program(rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, dict]:
    spm = rng.integers(-2000, 2000, size=4096, dtype=np.int16)
    f = dict(m=9, n=7, k=21, a_addr=0, a_stride=21, b_addr=1000, b_stride=21, c_addr=2000, c_stride=7,
             d_addr=3000, bias=1, shift=12, shift2=-3, sr=1, seed=1234, index_base=77, index_stride=7, imm=1,
             stat=1, slot=5)
    cmds = [encode(Op.LOAD, sub=Mem.SPM, m=1, n=spm.size, index_base=SPM_IMG, push_next=1),
            encode(Op.GEMM, pop_prev=1, push_next=1, **f),
            encode(Op.STORE, sub=Mem.SPM, m=1, n=spm.size, index_base=SPM_IMG, pop_prev=1),
            encode(Op.STORE, sub=Mem.STAT, m=1, n=8, index_base=SPM_IMG + 0x4000),
            encode(Op.FINISH)]
    return cmds, spm, f


@cocotb.test()
async def program_under_backpressure(dut):
    """LOAD / GEMM / STORE with random backpressure on every AXI channel: bits equal the model."""
    tb = EngineTB(dut, seed=1, busy=0.4)
    await tb.init()
    rng = np.random.default_rng(7)
    cmds, spm, f = gemm_program(rng)
    tb.ram.write(BASE + SPM_IMG, spm.tobytes())
    await tb.start_program(cmds)
    ctrl, _ = await tb.wait_done()
    assert ctrl & isa.CTRL_IDLE and await tb.read("ERROR") == 0
    expect = spm.copy()
    stat = np.zeros(64, dtype=np.int64)
    engine_ref.gemm(isa.decode(encode(Op.GEMM, **f)), expect, None, stat)
    got = np.frombuffer(tb.ram.read(BASE + SPM_IMG, 2 * spm.size), dtype=np.int16)
    assert np.array_equal(got, expect)
    got_stat = np.frombuffer(tb.ram.read(BASE + SPM_IMG + 0x4000, 64), dtype=np.int64)
    assert np.array_equal(got_stat, stat[:8])


@cocotb.test()
async def malformed_command_raises_error_and_irq(dut):
    tb = EngineTB(dut, seed=2, busy=0.2)
    await tb.init()
    await tb.write("GIE", 1)
    await tb.write("IER", 1)
    bad = encode(Op.LOAD, sub=Mem.SPM, m=1, n=8, index_base=SPM_IMG)
    bad[0] |= 1 << 29                                   # a reserved bit
    ok = encode(Op.LOAD, sub=Mem.SPM, m=1, n=8, index_base=SPM_IMG)
    await tb.start_program([ok, ok, bad, ok, encode(Op.FINISH)])
    for _ in range(20_000):                             # the interrupt pin, not a poll, ends the wait
        await RisingEdge(dut.clk)
        if dut.irq.value == 1:
            break
    assert dut.irq.value == 1, "no interrupt"
    assert await tb.read("ERROR") == Err.RESERVED_BITS
    assert await tb.read("ERR_PC") == 2 and await tb.read("ERR_PC_CTRL") == 1
    ctrl = await tb.read("CTRL")
    assert ctrl & isa.CTRL_DONE and ctrl & isa.CTRL_IDLE
    assert not await tb.read("CTRL") & isa.CTRL_DONE    # ap_done clears on read
    await tb.write("ISR", 1)                             # toggle-on-write clears the interrupt
    await ClockCycles(dut.clk, 2)
    assert dut.irq.value == 0
    # unknown opcode and a dependency pop nobody satisfies: errors, not hangs
    opcode = ok.copy()
    opcode[0] = (opcode[0] & ~0xF) | 12
    await tb.start_program([ok, opcode])
    await tb.wait_done()
    assert (await tb.read("ERROR"), await tb.read("ERR_PC")) == (Err.BAD_OPCODE, 1)
    await tb.start_program([ok, encode(Op.GEMM, m=1, n=1, k=1, pop_prev=1), encode(Op.FINISH)])
    await tb.wait_done()
    assert (await tb.read("ERROR"), await tb.read("ERR_PC")) == (Err.DEP_UNDERFLOW, 1)


@cocotb.test()
async def counters_count(dut):
    tb = EngineTB(dut, seed=3, busy=0.1)
    await tb.init()
    rng = np.random.default_rng(8)
    cmds, spm, f = gemm_program(rng)
    tb.ram.write(BASE + SPM_IMG, spm.tobytes())
    t0 = get_sim_time("ns")
    await tb.start_program(cmds)
    await tb.wait_done()
    elapsed = (get_sim_time("ns") - t0) / CLOCK_NS    # includes the register writes and the polling
    c = await tb.counters()
    assert c["RETIRED"] == len(cmds)
    assert c["MACS"] == f["m"] * f["n"] * f["k"]
    assert c["DDR_RD_BYTES"] == 64 * len(cmds) + 2 * spm.size
    assert c["DDR_WR_BYTES"] == 2 * spm.size + 8 * 8
    assert 0 < c["GEMM_BUSY"] < c["CYCLES"] and 0 < c["LOAD_BUSY"] < c["CYCLES"]
    assert 0 < c["STORE_BUSY"] < c["CYCLES"] and c["DMA_STALL"] > 0
    assert elapsed - 120 <= c["CYCLES"] <= elapsed
    # ap_start clears them
    await tb.start_program([encode(Op.FINISH)])
    await tb.wait_done()
    c2 = await tb.counters()
    assert c2["RETIRED"] == 1 and c2["MACS"] == 0 and c2["DDR_RD_BYTES"] == 64


@cocotb.test()
async def reset_mid_program(dut):
    tb = EngineTB(dut, seed=4, busy=0.3)
    await tb.init()
    big = [encode(Op.LOAD, sub=Mem.SPM, m=64, n=256, index_base=0x20000, index_stride=512, a_stride=256),
           encode(Op.STORE, sub=Mem.SPM, m=64, n=256, index_base=0x60000, index_stride=512, a_stride=256),
           encode(Op.FINISH)]
    await tb.start_program(big)
    await ClockCycles(dut.clk, 600)
    assert not await tb.read("CTRL") & isa.CTRL_IDLE            # still running
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    assert await tb.read("CTRL") & isa.CTRL_IDLE
    # ready: a new program runs to completion with correct data
    data = np.arange(16, dtype=np.int16)
    tb.ram.write(BASE + 0x1000, data.tobytes())
    await tb.start_program([encode(Op.LOAD, sub=Mem.SPM, m=1, n=16, index_base=0x1000, a_addr=3),
                            encode(Op.FINISH)])
    await tb.wait_done()
    await tb.start_program([encode(Op.STORE, sub=Mem.SPM, m=1, n=16, index_base=0x1100, a_addr=3),
                            encode(Op.FINISH)])
    await tb.wait_done()
    assert await tb.read("ERROR") == 0
    assert np.array_equal(np.frombuffer(tb.ram.read(BASE + 0x1100, 32), dtype=np.int16), data)
