"""cocotb testbench of hls/rtl/mac_array.sv: tiles vs numpy int64 GEMM + trilevel.intref.fixed.requantize."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource
from rtlsim import record_cycles
from tbutil import FireLog, pause_pattern, start, to_signed, to_unsigned

from trilevel import rtl_cycles
from trilevel.intref import fixed

ACC_W = 48


@dataclass
class Tile:
    a: np.ndarray        # [ROWS, K] int16
    b: np.ndarray        # [K, COLS] int16
    e: np.ndarray        # [ROWS, COLS] int64 addend (bias / residual at the accumulator frac)
    m: int
    n: int
    shift: int
    mode: int            # 0 RNE, 1 SR
    seed: int
    base: int
    stride: int

    @property
    def k(self) -> int:
        return self.a.shape[1]

    def expected(self) -> tuple[np.ndarray, int]:
        acc = self.a.astype(np.int64) @ self.b.astype(np.int64) + self.e
        rows, cols = acc.shape
        index = (self.base + np.arange(rows)[:, None] * self.stride + np.arange(cols)[None, :]) & 0xFFFFFFFF
        c = fixed.requantize(acc, self.shift, "sr" if self.mode else "rne", self.seed, index)
        return c, int(np.abs(acc[: self.m, : self.n]).max())


def pack(lanes: np.ndarray, bits: int) -> int:
    return sum(to_unsigned(int(v), bits) << (bits * i) for i, v in enumerate(lanes))


def unpack(word: int, count: int, bits: int) -> list[int]:
    return [to_signed(word >> (bits * i), bits) for i in range(count)]


class MacTB:
    def __init__(self, dut, seed: int, busy_in: float = 0.0, busy_out: float = 0.0):
        self.dut = dut
        self.rows, self.cols = int(dut.ROWS.value), int(dut.COLS.value)
        self.rng = random.Random(seed)
        bus = AxiStreamBus.from_prefix
        self.src_a = AxiStreamSource(bus(dut, "s_axis_a"), dut.clk, dut.rst, byte_lanes=1)
        self.src_b = AxiStreamSource(bus(dut, "s_axis_b"), dut.clk, dut.rst, byte_lanes=1)
        self.src_e = AxiStreamSource(bus(dut, "s_axis_e"), dut.clk, dut.rst, byte_lanes=1)
        self.sink = AxiStreamSink(bus(dut, "m_axis_c"), dut.clk, dut.rst, byte_lanes=1)
        for bfm in (self.src_a, self.src_b, self.src_e):
            if busy_in:
                bfm.set_pause_generator(pause_pattern(self.rng, busy_in))
        if busy_out:
            self.sink.set_pause_generator(pause_pattern(self.rng, busy_out))
        for bfm in (self.src_a, self.src_b, self.src_e, self.sink):
            bfm.log.setLevel(logging.WARNING)
        self.log = FireLog(dut, ["s_axis_a", "m_axis_c"])

    async def init(self) -> None:
        d = self.dut
        for name in ("cfg_k", "cfg_m", "cfg_n", "cfg_shift", "cfg_mode", "cfg_seed", "cfg_index_base",
                     "cfg_index_stride"):
            getattr(d, name).value = 0
        await start(d)

    def _apply(self, t: Tile) -> None:
        d = self.dut
        d.cfg_k.value, d.cfg_m.value, d.cfg_n.value = t.k, t.m, t.n
        d.cfg_shift.value, d.cfg_mode.value = to_unsigned(t.shift, 8), t.mode
        d.cfg_seed.value, d.cfg_index_base.value, d.cfg_index_stride.value = t.seed, t.base, t.stride

    async def _drive_config(self, tiles: list[Tile]) -> None:
        """Sideband config: tile t's values are on the pins from tile t-1's first beat on."""
        self._apply(tiles[0])
        beats, boundary, t = 0, 0, 0
        while t < len(tiles):
            await FallingEdge(self.dut.clk)
            if self.dut.s_axis_a_tvalid.value == 1 and self.dut.s_axis_a_tready.value == 1:
                is_first = beats == boundary
                beats += 1
                if is_first:
                    boundary += tiles[t].k
                    t += 1
                    await RisingEdge(self.dut.clk)   # the first beat is taken at this edge
                    if t < len(tiles):
                        self._apply(tiles[t])

    async def run(self, tiles: list[Tile]) -> list[tuple[np.ndarray, int]]:
        driver = cocotb.start_soon(self._drive_config(tiles))
        for t in tiles:
            await self.src_a.send(AxiStreamFrame([pack(t.a[:, p], 16) for p in range(t.k)]))
            await self.src_b.send(AxiStreamFrame([pack(t.b[p, :], 16) for p in range(t.k)]))
            await self.src_e.send(AxiStreamFrame([pack(t.e[i, :], ACC_W) for i in range(self.rows)]))
        out = []
        for _ in tiles:
            frame = await self.sink.recv()
            assert len(frame.tdata) == self.rows, f"{len(frame.tdata)} rows, want {self.rows}"
            c = np.array([unpack(w, self.cols, 16) for w in frame.tdata], dtype=np.int64)
            tuser = frame.tuser[-1] if isinstance(frame.tuser, list) else frame.tuser
            out.append((c, int(tuser)))
        await driver
        return out

    async def check(self, tiles: list[Tile]) -> None:
        for i, (t, (c, peak)) in enumerate(zip(tiles, await self.run(tiles), strict=True)):
            want, want_peak = t.expected()
            assert np.array_equal(c, want), (f"tile {i} K={t.k} shift={t.shift} mode={t.mode}\n"
                                             f"got\n{c}\nwant\n{want}")
            assert peak == want_peak, f"tile {i}: peak {peak} != {want_peak}"
        assert self.dut.err.value == 0, "err raised on valid tiles"

    def random_tile(self, rng: np.random.Generator, k: int | None = None) -> Tile:
        k = k if k is not None else int(rng.choice([1, 2, 3, 5, 8, 16, 33, 64, 200]))
        kind = rng.integers(0, 3)
        hi = [1 << 15, 64, 4][kind]   # full range, small values, heavy ties / exact halves
        a = rng.integers(-hi, hi, (self.rows, k)).clip(-32768, 32767).astype(np.int16)
        b = rng.integers(-hi, hi, (k, self.cols)).clip(-32768, 32767).astype(np.int16)
        e = rng.integers(-(1 << 40), 1 << 40, (self.rows, self.cols)) >> int(rng.integers(0, 41))
        mode = int(rng.integers(0, 2))
        shift = int(rng.choice([-20, -3, 0, 1, 2, 7, 15, 24, 31, 32, 33, 40, 47, 50, 62]))
        return Tile(a, b, e.astype(np.int64), int(rng.integers(1, self.rows + 1)),
                    int(rng.integers(1, self.cols + 1)), shift, mode, int(rng.integers(0, 1 << 32)),
                    int(rng.integers(0, 1 << 32)), int(rng.integers(0, 1 << 12)))


@cocotb.test(timeout_time=400, timeout_unit="ms")
async def random_tiles(dut):
    """Hundreds of random tiles back to back (config changing per tile), random backpressure."""
    tb = MacTB(dut, seed=1, busy_in=0.3, busy_out=0.4)
    await tb.init()
    rng = np.random.default_rng(2)
    tiles = 0
    while tiles < 300:
        group = [tb.random_tile(rng) for _ in range(int(rng.integers(1, 12)))]
        await tb.check(group)
        tiles += len(group)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def edge_cases(dut):
    """Saturation both ways, RNE ties, K = 1, all-equal operands, zero tiles, index wrap-around."""
    tb = MacTB(dut, seed=3, busy_in=0.1, busy_out=0.1)
    await tb.init()
    r, c = tb.rows, tb.cols
    full = lambda shape, v: np.full(shape, v, dtype=np.int16)  # noqa: E731
    zeros = np.zeros((r, c), dtype=np.int64)
    tiles = [
        Tile(full((r, 7), 32767), full((7, c), 32767), zeros, r, c, 10, 0, 0, 0, 0),     # +saturation
        Tile(full((r, 7), -32768), full((7, c), 32767), zeros, r, c, 10, 0, 0, 0, 0),    # -saturation
        Tile(full((r, 1), -32768), full((1, c), -32768), zeros, r, c, 0, 1, 5, 0, 0),    # max product
        Tile(full((r, 3), 1), full((3, c), 1), np.tile(np.arange(c) - c // 2, (r, 1)), r, c, 1, 0, 0, 0, 0),
        Tile(full((r, 3), 3), full((3, c), 1), zeros, r, c, 1, 0, 0, 0, 0),              # 9 / 2
        Tile(full((r, 2), 0), full((2, c), 0), zeros, r, c, 40, 1, 7, 0xFFFFFFF0, 3),     # zero, SR
        Tile(full((r, 2), -1), full((2, c), 1), zeros, 1, 1, 62, 1, 9, 0xFFFFFFFF, 1),    # tiny negative
        Tile(full((r, 4), 5), full((4, c), 5), zeros, r, c, -30, 0, 0, 0, 0),             # left shift
    ]
    await tb.check(tiles)


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def torch_golden(dut):
    """A float GEMM tiled over the array: dequantized RNE output within half an LSB of torch.matmul."""
    import torch

    tb = MacTB(dut, seed=4)
    await tb.init()
    gen = torch.Generator().manual_seed(5)
    fa, fb, fo = 12, 13, 8
    k = 48
    x = torch.randn(tb.rows, k, generator=gen, dtype=torch.float64)
    w = torch.randn(k, tb.cols, generator=gen, dtype=torch.float64) / 8
    a, b = fixed.quantize(x.numpy(), fa), fixed.quantize(w.numpy(), fb)
    zeros = np.zeros((tb.rows, tb.cols), dtype=np.int64)
    tile = Tile(a, b, zeros, tb.rows, tb.cols, fa + fb - fo, 0, 0, 0, 0)
    c, _ = (await tb.run([tile]))[0]
    ref = (torch.from_numpy(fixed.dequantize(a, fa, np.float64))
           @ torch.from_numpy(fixed.dequantize(b, fb, np.float64)))
    err = np.abs(c / 2**fo - ref.numpy())
    assert err.max() <= 2 ** -(fo + 1), f"max error {err.max()} > half an output LSB"


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def cycles(dut):
    """No backpressure: latency, tile interval and steady-state utilization vs trilevel.rtl_cycles."""
    tb = MacTB(dut, seed=6)
    await tb.init()
    rng = np.random.default_rng(7)
    r, c = tb.rows, tb.cols
    for k in (1, max(r, c) - 1, max(r, c), 16, 64, 192):
        if k < 1:
            continue
        tiles = [tb.random_tile(rng, k) for _ in range(8)]
        tb.log.clear()
        await tb.check(tiles)
        firsts = tb.log.cycles("s_axis_a")[::k]
        lasts = tb.log.last_cycles("m_axis_c")
        latency = lasts[0] - firsts[0]
        interval = {y - x for x, y in zip(lasts, lasts[1:], strict=False)}   # tile to tile, at the output
        total = lasts[-1] - firsts[0]
        assert latency == rtl_cycles.mac_array_cycles(1, k, r, c), (k, latency)
        assert interval == {rtl_cycles.mac_array_interval(k, r, c)}, (k, interval)
        assert total == rtl_cycles.mac_array_cycles(len(tiles), k, r, c), (k, total)
        steady = len(tiles) * k / (len(tiles) * min(interval))
        record_cycles("mac_array", f"{r}x{c}_k{k}", {
            "rows": r, "cols": c, "k": k, "tiles": len(tiles), "latency": latency,
            "interval": min(interval), "stream_cycles": total,
            "utilization_steady": steady,
            "utilization_with_fill": len(tiles) * k * r * c / (r * c * total)})
        await ClockCycles(dut.clk, 2)
