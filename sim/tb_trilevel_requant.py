"""cocotb testbench of hls/rtl/trilevel_requant.sv: thousands of (acc, shift, mode, seed, index) vectors,
one per cycle, against trilevel.intref.fixed.requantize (docs/numerics.md 1.2, 1.3). The RNE-only
build (SR = 0) gets mode 0 only, with random seed / index_k it must ignore."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge
from tbutil import start, to_signed, to_unsigned

from trilevel.intref import fixed

LATENCY = 4


def vectors(rng: np.random.Generator, acc_w: int, count: int) -> list[tuple[int, int, int, int, int]]:
    top = min(1 << (acc_w - 1), (1 << fixed.MAX_SHIFT) - 1)   # the reference takes |acc| < 2**62
    special = [0, 1, -1, top - 1, -top, 3, -3, 5 << 20, -(5 << 20), (1 << 40) + (1 << 39), -(1 << 39)]
    out = []
    for i in range(count):
        if i < len(special) * 8:
            acc = special[i % len(special)]
        else:
            acc = int(rng.integers(-top, top)) >> int(rng.integers(0, acc_w))
        if i % 5:
            shift = int(rng.integers(-40, fixed.MAX_SHIFT + 1))
        else:
            shift = int(rng.choice([-17, -16, -15, 0, 1, 32, 33, 47, 48, 62]))
        seed, index = int(rng.integers(0, 1 << 32)), int(rng.integers(0, 1 << 32))
        out.append((acc, shift, int(rng.integers(0, 2)), seed, index))
    return out


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def random_vectors(dut):
    """One vector per cycle through the 4-stage pipeline; every output equals the reference."""
    acc_w = int(dut.ACC_W.value)
    sr = int(dut.SR.value)
    dut.en.value, dut.acc.value, dut.shift.value, dut.mode.value = 1, 0, 0, 0
    dut.seed.value, dut.index_k.value = 0, 0
    await start(dut, has_reset=False)  # a pure pipeline: no reset
    vecs = vectors(np.random.default_rng(1), acc_w, 6000)
    if not sr:
        vecs = [(acc, shift, 0, seed, index) for acc, shift, _, seed, index in vecs]
    got: list[int] = []
    for cycle in range(len(vecs) + LATENCY):
        if cycle < len(vecs):
            acc, shift, mode, seed, index = vecs[cycle]
            dut.acc.value = to_unsigned(acc, acc_w)
            dut.shift.value = to_unsigned(shift, 8)
            dut.mode.value, dut.seed.value = mode, seed
            dut.index_k.value = (index * 0x9E3779B9) & 0xFFFFFFFF   # the caller's index * K
        await FallingEdge(dut.clk)
        if cycle >= LATENCY:
            got.append(to_signed(int(dut.q.value), 16))
        await RisingEdge(dut.clk)
    for (acc, shift, mode, seed, index), q in zip(vecs, got, strict=True):
        want = int(fixed.requantize(np.array([acc]), shift, "sr" if mode else "rne", seed,
                                    np.array([index]))[0])
        assert q == want, f"acc={acc} shift={shift} mode={mode} seed={seed} index={index}: {q} != {want}"
