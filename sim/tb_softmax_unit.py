"""cocotb testbench of hls/rtl/softmax_unit.sv against trilevel.intref.fixed.softmax_fwd / softmax_bwd.

Backward rows carry key positions (SR index = index_base + key_j, as for gathered connections)."""

from __future__ import annotations

import logging
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource
from rtlsim import record_cycles
from tbutil import FireLog, pause_pattern, start, to_signed, to_unsigned

from trilevel import rtl_cycles
from trilevel.intref import fixed
from trilevel.intref.luts import RECIP_LUT

NMAX_TEST = 197
PEAK_MASK = (1 << 48) - 1


def ref_fwd_peak(s: np.ndarray, fs: int) -> int:
    """max_j e_j * RECIP_LUT[i]: the forward accumulator peak the unit reports (docs/numerics.md 1.5)."""
    s64 = s.astype(np.int64)
    e = fixed.exp2_neg(((s64.max() - s64) * fixed.LOG2E_Q14) >> (fs + 6))
    total = int(e.sum())
    b = total.bit_length() - 1
    return int(e.max()) * int(RECIP_LUT[(total >> (b - 8)) & 255])


def ref_bwd_peak(p: np.ndarray, dp: np.ndarray) -> int:
    p64, dp64 = p.astype(np.int64), dp.astype(np.int64)
    dot = int(np.sum(p64 * dp64))
    acc = [int(a) * ((int(g) << 15) - dot) for a, g in zip(p64, dp64, strict=True)]  # exact Python ints
    return max(abs(a) for a in acc) & PEAK_MASK


class SoftmaxTB:
    def __init__(self, dut, seed: int, busy_in: float = 0.0, busy_out: float = 0.0):
        self.dut = dut
        self.rng = random.Random(seed)
        bus = AxiStreamBus.from_prefix
        self.src_a = AxiStreamSource(bus(dut, "s_axis_a"), dut.clk, dut.rst, byte_lanes=1)
        self.src_b = AxiStreamSource(bus(dut, "s_axis_b"), dut.clk, dut.rst, byte_lanes=1)
        self.src_key = AxiStreamSource(bus(dut, "s_axis_key"), dut.clk, dut.rst, byte_lanes=1)
        self.sink = AxiStreamSink(bus(dut, "m_axis"), dut.clk, dut.rst, byte_lanes=1)
        self.peak = AxiStreamSink(bus(dut, "m_axis_peak"), dut.clk, dut.rst, byte_lanes=1)
        for bfm in (self.src_a, self.src_b, self.src_key):
            if busy_in:
                bfm.set_pause_generator(pause_pattern(self.rng, busy_in))
        for bfm in (self.sink, self.peak):
            if busy_out:
                bfm.set_pause_generator(pause_pattern(self.rng, busy_out))
        for bfm in (self.src_a, self.src_b, self.src_key, self.sink, self.peak):
            bfm.log.setLevel(logging.WARNING)
        self.log = FireLog(dut, ["s_axis_a", "m_axis"])

    async def init(self) -> None:
        d = self.dut
        d.cfg_n.value, d.cfg_backward.value, d.cfg_frac_in.value, d.cfg_frac_out.value = 1, 0, 0, 0
        d.cfg_seed.value, d.cfg_index_base.value = 0, 0
        await start(d)

    def configure(self, n: int, backward: int, frac_in: int, frac_out: int = 0, seed: int = 0,
                  base: int = 0) -> None:
        d = self.dut
        d.cfg_n.value, d.cfg_backward.value = n, backward
        d.cfg_frac_in.value, d.cfg_frac_out.value = to_unsigned(frac_in, 8), to_unsigned(frac_out, 8)
        d.cfg_seed.value, d.cfg_index_base.value = seed, base

    async def rows(self, a_rows: list[np.ndarray], b_rows: list[np.ndarray] | None = None,
                   key_rows: list[np.ndarray] | None = None) -> list[tuple[np.ndarray, int]]:
        """Send rows back to back (config already set); return (out row int16, peak) per row."""
        for i, a in enumerate(a_rows):
            await self.src_a.send(AxiStreamFrame([to_unsigned(int(v), 16) for v in a]))
            if b_rows is not None:
                await self.src_b.send(AxiStreamFrame([to_unsigned(int(v), 16) for v in b_rows[i]]))
                await self.src_key.send(AxiStreamFrame([int(v) for v in key_rows[i]]))
        out = []
        for _ in a_rows:
            row = np.array([to_signed(v, 16) for v in (await self.sink.recv()).tdata], dtype=np.int16)
            peak = (await self.peak.recv()).tdata
            assert len(peak) == 1, f"one peak beat per row, got {len(peak)}"
            out.append((row, int(peak[0])))
        return out

    async def check_fwd(self, rows: list[np.ndarray], fs: int) -> None:
        self.configure(len(rows[0]), 0, fs)
        for s, (p, peak) in zip(rows, await self.rows(rows), strict=True):
            want = fixed.softmax_fwd(s.astype(np.int16), fs)
            assert np.array_equal(p, want), (f"fwd n={len(s)} fs={fs} s={s.tolist()}\n"
                                             f" got {p.tolist()}\nwant {want.tolist()}")
            assert peak == ref_fwd_peak(s, fs), (peak, ref_fwd_peak(s, fs))
        assert self.dut.err.value == 0

    async def check_bwd(self, p_rows: list[np.ndarray], dp_rows: list[np.ndarray], fdp: int, fds: int,
                        seed: int, base: int, key_rows: list[np.ndarray] | None = None) -> None:
        n = len(p_rows[0])
        if key_rows is None:   # gathered connections: ascending key positions out of a longer row
            key_rows = [np.sort(np.random.default_rng(seed + i).choice(max(n, 197), n, replace=False))
                        for i in range(len(p_rows))]
        self.configure(n, 1, fdp, fds, seed, base)
        got = await self.rows(p_rows, dp_rows, key_rows)
        for p, dp, key, (ds, peak) in zip(p_rows, dp_rows, key_rows, got, strict=True):
            index = (base + key.astype(np.int64)) & 0xFFFFFFFF
            want = fixed.softmax_bwd(p.astype(np.int16), dp.astype(np.int16), fdp, fds, seed, index)
            assert np.array_equal(ds, want), (f"bwd n={n} fdp={fdp} fds={fds}\n"
                                              f" got {ds.tolist()}\nwant {want.tolist()}")
            assert peak == ref_bwd_peak(p, dp), (peak, ref_bwd_peak(p, dp))
        assert self.dut.err.value == 0


def random_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    kind = rng.integers(0, 4)
    if kind == 0:
        return rng.integers(-32768, 32768, n)
    if kind == 1:
        return rng.integers(-3, 3, n)                      # ties
    if kind == 2:
        return np.full(n, int(rng.integers(-32768, 32768)))  # all equal
    return rng.normal(0, 4000, n).clip(-32768, 32767).astype(np.int64)


@cocotb.test(timeout_time=400, timeout_unit="ms")
async def forward_random(dut):
    """Random rows (all fracs 0..15, ties, all-equal, extremes) with random backpressure."""
    tb = SoftmaxTB(dut, seed=1, busy_in=0.3, busy_out=0.3)
    await tb.init()
    rng = np.random.default_rng(2)
    done = 0
    while done < 220:
        n = int(rng.integers(1, NMAX_TEST + 1)) if rng.random() < 0.6 else int(rng.integers(1, 16))
        count = int(rng.integers(1, 4))
        await tb.check_fwd([random_scores(rng, n) for _ in range(count)], int(rng.integers(0, 16)))
        done += count
    # adversarial: one winner over equal losers, and the reverse; full-scale extremes
    for n in (197, 2, 1):
        await tb.check_fwd([np.r_[32767, np.full(n - 1, -32768)], np.r_[np.full(n - 1, 5), -9]], 0)


@cocotb.test(timeout_time=400, timeout_unit="ms")
async def backward_random(dut):
    """P from the forward reference, random dP and fracs, SR indices, saturation; backpressure."""
    tb = SoftmaxTB(dut, seed=3, busy_in=0.3, busy_out=0.3)
    await tb.init()
    rng = np.random.default_rng(4)
    done = 0
    while done < 220:
        n = int(rng.integers(1, NMAX_TEST + 1)) if rng.random() < 0.6 else int(rng.integers(1, 16))
        count = int(rng.integers(1, 4))
        p_rows = [fixed.softmax_fwd(random_scores(rng, n).astype(np.int16), int(rng.integers(0, 16)))
                  for _ in range(count)]
        if rng.random() < 0.2:  # arbitrary P (not a distribution): exercises the full 57-bit product
            p_rows = [rng.integers(-32768, 32768, n) for _ in range(count)]
        dp_rows = [rng.integers(-32768, 32768, n) for _ in range(count)]
        fdp = int(rng.integers(-16, 41))
        fds = int(np.clip(fdp + int(rng.integers(-12, 20)), -16, 40))  # shifts from small (saturating) up
        seed, base = int(rng.integers(0, 1 << 32)), int(rng.integers(0, 1 << 32))
        keys = None if rng.random() < 0.7 else [rng.integers(0, 1 << 16, n) for _ in range(count)]
        await tb.check_bwd(p_rows, dp_rows, fdp, fds, seed, base, keys)
        done += count


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def mixed_back_to_back(dut):
    """Forward and backward rows alternate without idle time between groups."""
    tb = SoftmaxTB(dut, seed=5)
    await tb.init()
    rng = np.random.default_rng(6)
    for i in range(12):
        n = int(rng.integers(1, 60))
        if i % 2:
            p = [fixed.softmax_fwd(random_scores(rng, n).astype(np.int16), 8) for _ in range(3)]
            await tb.check_bwd(p, [rng.integers(-32768, 32768, n) for _ in range(3)], 12, 10, i, 100 * i)
        else:
            await tb.check_fwd([random_scores(rng, n) for _ in range(3)], int(rng.integers(0, 16)))


@cocotb.test(timeout_time=400, timeout_unit="ms")
async def torch_golden(dut):
    """Forward P vs float torch.softmax within docs/numerics.md 2.14: 2**-8 p + (n + 1) 2**-16."""
    import torch

    tb = SoftmaxTB(dut, seed=7)
    await tb.init()
    rng = np.random.default_rng(8)
    for n, fs in [(197, 10), (139, 12), (43, 8), (16, 15)]:
        s = rng.normal(0, 3 * (1 << fs), n).clip(-32768, 32767).astype(np.int16)
        tb.configure(n, 0, fs)
        p = (await tb.rows([s]))[0][0].astype(np.float64) / 2**15
        ref = torch.softmax(torch.tensor(s, dtype=torch.float64) / 2**fs, 0).numpy()
        bound = 2**-8 * ref + (n + 1) * 2**-16
        assert np.all(np.abs(p - ref) <= bound), f"n={n}: worst {np.max(np.abs(p - ref) - bound)} over bound"


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def cycles(dut):
    """No backpressure: latency and interval of forward and backward rows equal trilevel.rtl_cycles."""
    tb = SoftmaxTB(dut, seed=9)
    await tb.init()
    rng = np.random.default_rng(10)
    frames = 5
    for n in (197, 139, 64, 17, 1):
        for backward in (0, 1):
            tb.log.clear()
            a = [rng.integers(-32768, 32768, n) for _ in range(frames)]
            if backward:
                p = [fixed.softmax_fwd(x.astype(np.int16), 9) for x in a]
                await tb.check_bwd(p, [rng.integers(-32768, 32768, n) for _ in range(frames)], 10, 11, 1, 0)
            else:
                await tb.check_fwd(a, 9)
            firsts = tb.log.cycles("s_axis_a")[::n]
            lasts = tb.log.last_cycles("m_axis")
            latency = lasts[0] - firsts[0]
            intervals = {y - x for x, y in zip(lasts, lasts[1:], strict=False)}
            if backward:
                want_latency = rtl_cycles.softmax_bwd_cycles(n)
                want_interval = rtl_cycles.softmax_bwd_interval(n)
            else:
                want_latency, want_interval = rtl_cycles.softmax_cycles(n), rtl_cycles.softmax_interval(n)
            assert latency == want_latency, (n, backward, latency, want_latency)
            assert intervals == {want_interval}, (n, backward, intervals, want_interval)
            record_cycles("softmax_unit", f"{'bwd' if backward else 'fwd'}_n{n}",
                          {"n": n, "direction": "backward" if backward else "forward",
                           "latency": latency, "interval": want_interval, "frames": frames})
            await ClockCycles(dut.clk, 4)
