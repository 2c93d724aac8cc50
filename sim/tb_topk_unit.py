"""cocotb testbench of hls/rtl/topk_unit.sv vs trilevel.intref.fixed.topk_select (docs/numerics.md 1.4)."""

from __future__ import annotations

import logging
import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource
from rtlsim import record_cycles
from tbutil import FireLog, pause_pattern, start, to_unsigned

from trilevel import rtl_cycles
from trilevel.config import keep_count
from trilevel.intref import fixed

SCORE_W = 32
NMAX_TEST = 197  # the longest frame the tests send (DeiT: 197 tokens)


class TopkTB:
    def __init__(self, dut, seed: int, busy_in: float = 0.0, busy_out: float = 0.0):
        self.dut = dut
        self.rng = random.Random(seed)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst, byte_lanes=1)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst, byte_lanes=1)
        if busy_in:
            self.source.set_pause_generator(pause_pattern(self.rng, busy_in))
        if busy_out:
            self.sink.set_pause_generator(pause_pattern(self.rng, busy_out))
        for bfm in (self.source, self.sink):
            bfm.log.setLevel(logging.WARNING)
        self.log = FireLog(dut, ["s_axis", "m_axis"])

    async def init(self) -> None:
        self.dut.cfg_n.value = 1
        self.dut.cfg_k.value = 1
        await start(self.dut)

    async def run_group(self, frames: list[np.ndarray], k: int) -> list[list[int]]:
        """Send frames of one length back to back with cfg (n, k); return the received index lists."""
        n = len(frames[0])
        self.dut.cfg_n.value = n
        self.dut.cfg_k.value = k
        for f in frames:
            await self.source.send(AxiStreamFrame([to_unsigned(int(v), SCORE_W) for v in f]))
        return [list((await self.sink.recv()).tdata) for _ in frames]

    async def check_group(self, frames: list[np.ndarray], k: int) -> None:
        got = await self.run_group(frames, k)
        for f, g in zip(frames, got, strict=True):
            want = fixed.topk_select(np.asarray(f, dtype=np.int64), k).tolist()
            assert g == want, f"n={len(f)} k={k} scores={list(f)}: got {g}, want {want}"
        assert self.dut.err.value == 0, "err raised on a valid frame"


def random_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores with a random value range: narrow ranges give many ties."""
    kind = rng.integers(0, 4)
    if kind == 0:
        return rng.integers(0, 4, n)                                  # heavy ties
    if kind == 1:
        return rng.integers(-(1 << 31), 1 << 31, n)                   # full 32-bit range
    if kind == 2:
        return rng.integers(0, 12 * 32768, n)                         # head-sums of Q0.15 rows
    return rng.integers(-50, 50, n)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def random_frames(dut):
    """Several hundred random frames, random n/k, ties, random backpressure on both sides."""
    tb = TopkTB(dut, seed=1, busy_in=0.3, busy_out=0.4)
    await tb.init()
    rng = np.random.default_rng(2)
    frames_done = 0
    while frames_done < 320:
        n = int(rng.integers(1, NMAX_TEST + 1)) if rng.random() < 0.7 else int(rng.integers(1, 24))
        k = int(rng.integers(1, n + 1))
        count = int(rng.integers(1, 5))
        await tb.check_group([random_scores(rng, n) for _ in range(count)], k)
        frames_done += count
    dut._log.info("checked %d random frames", frames_done)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def edge_cases(dut):
    """Ties, all-equal inputs, K = N, K = 1, n = 1, extreme values, back-to-back frames."""
    tb = TopkTB(dut, seed=3, busy_in=0.2, busy_out=0.2)
    await tb.init()
    lo, hi = -(1 << 31), (1 << 31) - 1
    cases = [
        ([np.full(197, 7)], 1),
        ([np.full(197, 7)], 138),
        ([np.full(197, -3)], 197),
        ([np.array([5])], 1),
        ([np.array([1, 1]), np.array([2, 1]), np.array([1, 2])], 1),
        ([np.array([lo, hi, lo, hi, 0])], 2),
        ([np.array([hi] * 3 + [lo] * 3)], 4),
        ([np.arange(197)[::-1].copy(), np.arange(197)], 69),
        ([np.array([3, 1, 3, 2, 3, 1, 2])], 3),
        ([np.array([0, 0, 1, 1, 0, 1, 1, 0])], 3),
    ]
    for frames, k in cases:
        await tb.check_group(frames, k)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def torch_golden(dut):
    """Distinct float scores (fixed-point coded): the selected set equals torch.topk's."""
    import torch

    tb = TopkTB(dut, seed=4)
    await tb.init()
    gen = torch.Generator().manual_seed(5)
    for n, ratio in [(196, 0.7), (138, 0.7), (97, 0.7), (64, 0.5), (16, 0.3)]:
        k = keep_count(ratio, n)
        x = torch.randperm(1 << 20, generator=gen)[:n].double() / 4096.0  # distinct reals
        codes = np.asarray((x * 4096).round().long())
        got = (await tb.run_group([codes], k))[0]
        want = sorted(torch.topk(x, k).indices.tolist())
        assert got == want, f"n={n} k={k}: rtl {got} vs torch {want}"


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def cycles(dut):
    """No backpressure: latency and back-to-back interval equal trilevel.rtl_cycles; recorded to JSON."""
    tb = TopkTB(dut, seed=6)
    await tb.init()
    rng = np.random.default_rng(7)
    for n, k in [(197, 138), (196, 138), (139, 98), (69, 21), (16, 5), (1, 1)]:
        frames = 6
        # The last index is selected when its score is the unique maximum: the worst-case latency.
        rows = [rng.integers(0, 1000, n) for _ in range(frames)]
        for r in rows:
            r[-1] = 5000
        tb.log.clear()
        await tb.check_group(rows, k)
        firsts = tb.log.cycles("s_axis")[::n]
        lasts = tb.log.last_cycles("m_axis")
        latency = lasts[0] - firsts[0]
        intervals = {b - a for a, b in zip(firsts, firsts[1:], strict=False)}
        out_intervals = {b - a for a, b in zip(lasts, lasts[1:], strict=False)}
        assert latency == rtl_cycles.topk_cycles(n, k), (n, k, latency)
        assert intervals == {rtl_cycles.topk_interval(n)} == out_intervals, (n, intervals, out_intervals)
        total = lasts[-1] - firsts[0]
        assert total == rtl_cycles.topk_stream_cycles(frames, n, k), (n, k, total)
        record_cycles("topk_unit", f"n{n}_k{k}", {"n": n, "k": k, "latency": latency,
                                                  "interval": intervals.pop(), "frames": frames,
                                                  "stream_cycles": total})
        await ClockCycles(dut.clk, 3)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def bad_config(dut):
    """k > n raises the sticky err flag (and the unit still answers with k clamped to n)."""
    tb = TopkTB(dut, seed=8)
    await tb.init()
    dut.cfg_n.value = 4
    dut.cfg_k.value = 9
    await tb.source.send(AxiStreamFrame([3, 1, 4, 1]))
    got = list((await tb.sink.recv()).tdata)
    assert got == [0, 1, 2, 3]
    await RisingEdge(dut.clk)
    assert dut.err.value == 1

