"""cocotb testbench of hls/rtl/gemm_tile.sv (the element-stream blackbox of gemm_tile() around mac_array)
against the C-sim model's definition: C = requantize(A . W^T + E), peak = max |A . W^T + E|."""

from __future__ import annotations

import logging
import random

import cocotb
import numpy as np
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource
from rtlsim import record_cycles
from tbutil import FireLog, pause_pattern, start, to_signed, to_unsigned

from trilevel import rtl_cycles
from trilevel.intref import fixed


class GemmTB:
    def __init__(self, dut, seed: int, busy_in: float = 0.0, busy_out: float = 0.0):
        self.dut = dut
        self.rows, self.cols, self.kmax = int(dut.ROWS.value), int(dut.COLS.value), int(dut.KMAX.value)
        self.rng = random.Random(seed)
        bus = AxiStreamBus.from_prefix
        self.srcs = [AxiStreamSource(bus(dut, p), dut.clk, dut.rst, byte_lanes=1)
                     for p in ("s_axis_a", "s_axis_b", "s_axis_e")]
        self.sink = AxiStreamSink(bus(dut, "m_axis_c"), dut.clk, dut.rst, byte_lanes=1)
        self.peak = AxiStreamSink(bus(dut, "m_axis_peak"), dut.clk, dut.rst, byte_lanes=1)
        for bfm in self.srcs:
            if busy_in:
                bfm.set_pause_generator(pause_pattern(self.rng, busy_in))
        for bfm in (self.sink, self.peak):
            if busy_out:
                bfm.set_pause_generator(pause_pattern(self.rng, busy_out))
        for bfm in (*self.srcs, self.sink, self.peak):
            bfm.log.setLevel(logging.WARNING)
        self.log = FireLog(dut, ["s_axis_a", "m_axis_c"])

    async def init(self) -> None:
        for name in ("cfg_m", "cfg_n", "cfg_kd", "cfg_shift", "cfg_mode", "cfg_seed", "cfg_index_base",
                     "cfg_index_stride"):
            getattr(self.dut, name).value = 0
        await start(self.dut)

    async def call(self, a: np.ndarray, w: np.ndarray, e: np.ndarray, shift: int, mode: int, seed: int,
                   base: int, stride: int) -> None:
        """One gemm_tile() call; checks C and the peak against the reference."""
        d = self.dut
        (m, kd), n = a.shape, w.shape[0]
        d.cfg_m.value, d.cfg_n.value, d.cfg_kd.value = m, n, kd
        d.cfg_shift.value, d.cfg_mode.value = to_unsigned(shift, 8), mode
        d.cfg_seed.value, d.cfg_index_base.value, d.cfg_index_stride.value = seed, base, stride
        # The element streams carry no tlast in hls::stream; one frame per stream is just a batch here.
        await self.srcs[0].send(AxiStreamFrame([to_unsigned(v, 16) for v in a.reshape(-1).tolist()]))
        await self.srcs[1].send(AxiStreamFrame([to_unsigned(v, 16) for v in w.reshape(-1).tolist()]))
        await self.srcs[2].send(AxiStreamFrame([to_unsigned(v, 48) for v in e.reshape(-1).tolist()]))
        c = np.array([to_signed(v, 16) for v in (await self.sink.recv()).tdata], dtype=np.int64)
        peak = (await self.peak.recv()).tdata
        acc = a.astype(np.int64) @ w.astype(np.int64).T + e
        index = (base + np.arange(m)[:, None] * stride + np.arange(n)[None, :]) & 0xFFFFFFFF
        want = fixed.requantize(acc, shift, "sr" if mode else "rne", seed, index)
        got = c.reshape(m, n)
        assert np.array_equal(got, want), f"m={m} n={n} kd={kd}\ngot {got}\nwant {want}"
        assert list(peak) == [int(np.abs(acc).max())], (list(peak), int(np.abs(acc).max()))

    def random_call(self, rng: np.random.Generator) -> tuple:
        m, n = int(rng.integers(1, self.rows + 1)), int(rng.integers(1, self.cols + 1))
        kd = int(rng.choice([1, 2, 7, 16, int(rng.integers(1, self.kmax + 1))]))
        hi = int(rng.choice([1 << 15, 100, 3]))
        a = rng.integers(-hi, hi, (m, kd)).clip(-32768, 32767)
        w = rng.integers(-hi, hi, (n, kd)).clip(-32768, 32767)
        e = rng.integers(-(1 << 36), 1 << 36, (m, n)) >> int(rng.integers(0, 37))
        return (a, w, e, int(rng.integers(-4, 45)), int(rng.integers(0, 2)), int(rng.integers(0, 1 << 32)),
                int(rng.integers(0, 1 << 32)), int(rng.integers(1, 400)))


@cocotb.test(timeout_time=400, timeout_unit="ms")
async def random_calls(dut):
    """Random calls (m < ROWS and n < COLS padding, kd up to KMAX, RNE/SR), random backpressure."""
    tb = GemmTB(dut, seed=1, busy_in=0.3, busy_out=0.4)
    await tb.init()
    rng = np.random.default_rng(2)
    for _ in range(60):
        await tb.call(*tb.random_call(rng))


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def cycles(dut):
    """No backpressure: one call's latency equals trilevel.rtl_cycles.gemm_tile_cycles."""
    tb = GemmTB(dut, seed=3)
    await tb.init()
    rng = np.random.default_rng(4)
    r, c = tb.rows, tb.cols
    for m, n, kd in [(r, c, 16), (r, c, tb.kmax), (1, 1, 1), (r - 1, 2, 9)]:
        tb.log.clear()
        a, w = rng.integers(-99, 99, (m, kd)), rng.integers(-99, 99, (n, kd))
        await tb.call(a, w, np.zeros((m, n), dtype=np.int64), 3, 0, 0, 0, n)
        latency = tb.log.last_cycles("m_axis_c")[-1] - tb.log.cycles("s_axis_a")[0]
        want = rtl_cycles.gemm_tile_cycles(m, n, kd, r, c)
        assert latency == want, (m, n, kd, latency, want)
        record_cycles("gemm_tile", f"{r}x{c}_m{m}_n{n}_kd{kd}",
                      {"rows": r, "cols": c, "m": m, "n": n, "kd": kd, "latency": latency})
