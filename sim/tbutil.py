"""Shared pieces of the cocotb testbenches: clock/reset, backpressure patterns, handshake timestamps."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

CLOCK_NS = 10


async def start(dut, reset_cycles: int = 4, has_reset: bool = True) -> None:
    """Start the clock and hold `rst` (active high) for a few cycles."""
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
    if has_reset:
        dut.rst.value = 1
    await ClockCycles(dut.clk, reset_cycles)
    if has_reset:
        dut.rst.value = 0
    await RisingEdge(dut.clk)


def pause_pattern(rng: random.Random, busy: float, length: int = 997) -> Iterator[bool]:
    """An endless pause generator (True = pause this cycle) with pause probability `busy`."""
    return itertools.cycle([rng.random() < busy for _ in range(length)])


def to_signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def to_unsigned(value: int, bits: int) -> int:
    return int(value) & ((1 << bits) - 1)


class FireLog:
    """Records the cycle number of every handshake (tvalid & tready) on the given stream prefixes.

    Signals are sampled at the falling edge, where everything driven at the rising edge has settled,
    so cycle numbers of input and output transfers are directly comparable.
    """

    def __init__(self, dut, prefixes: list[str]):
        self.dut, self.cycle = dut, 0
        self.fires: dict[str, list[tuple[int, bool]]] = {p: [] for p in prefixes}
        self._signals = {p: (getattr(dut, f"{p}_tvalid"), getattr(dut, f"{p}_tready"),
                             getattr(dut, f"{p}_tlast", None)) for p in prefixes}
        cocotb.start_soon(self._run())

    async def _run(self) -> None:
        while True:
            await FallingEdge(self.dut.clk)
            self.cycle += 1
            for p, (valid, ready, last) in self._signals.items():
                if valid.value == 1 and ready.value == 1:
                    self.fires[p].append((self.cycle, bool(last is not None and last.value == 1)))

    def clear(self) -> None:
        for v in self.fires.values():
            v.clear()

    def cycles(self, prefix: str) -> list[int]:
        return [c for c, _ in self.fires[prefix]]

    def last_cycles(self, prefix: str) -> list[int]:
        return [c for c, last in self.fires[prefix] if last]
