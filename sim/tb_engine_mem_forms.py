"""cocotb testbench of sim/rtl/engine_mem_forms.sv: engine_mem's synthesized and simulation forms under the
same random traffic, compared every cycle: `done` (the conflict stalls) and every read port's data.

The memory is small (3 regions of 64 rows x 8 lanes, 1536 elements) so that ports collide: several
accesses per region (conflict cycles), two write ports on the same elements in one cycle (the higher
port wins), reads of elements written in the same cycle (read-first), windows across region boundaries,
beyond DEPTH (rows 192..255 read 0) and wrapping at the top of the decoded address range. Requests are
held while `done` is low, as the engine's frozen requesters hold theirs. Narrow ports (RD_LANES /
WR_LANES) read 0 beyond their lanes in both forms."""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge
from tbutil import start

CYCLES = 4000


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def random_traffic(dut):
    ew, lanes, nr, nw, aw = (int(getattr(dut, n).value) for n in ("EW", "LANES", "NR", "NW", "AW"))
    rd_lanes = int(dut.RD_LANES.value)
    rl = [(rd_lanes >> (8 * p)) & 0xFF or lanes for p in range(nr)]
    beyond = sum(((1 << ((lanes - rl[p]) * ew)) - 1) << ((p * lanes + rl[p]) * ew) for p in range(nr))
    rng = random.Random(11)
    region = int(dut.REGION_ROWS.value) * lanes
    # a few addresses many requests share: in region 0, and windows across its upper boundary
    hot = [rng.randrange(region - lanes) for _ in range(4)] + [region - 3, region - 1]

    def address() -> int:
        return rng.choice(hot) if rng.random() < 0.5 else rng.randrange(1 << aw)

    dut.we.value, dut.re.value, dut.wmask.value = 0, 0, 0
    dut.waddr.value, dut.raddr.value, dut.wdata.value = 0, 0, 0
    await start(dut)
    stalls = writes = 0
    for cycle in range(CYCLES):
        await FallingEdge(dut.clk)                            # this cycle's requests have settled
        done_rtl, done_sim = int(dut.done_rtl.value), int(dut.done_sim.value)
        assert done_sim == done_rtl, f"cycle {cycle}: done {done_sim} (simulation form) != {done_rtl}"
        got, want = int(dut.rdata_sim.value), int(dut.rdata_rtl.value)
        assert got == want, f"cycle {cycle}: read data differ in lanes " + str(
            [i for i in range(nr * lanes) if (got ^ want) >> (i * ew) & ((1 << ew) - 1)])
        assert got & beyond == 0, f"cycle {cycle}: a narrow port reads data beyond its lanes"
        await RisingEdge(dut.clk)
        if not done_rtl:
            stalls += 1
            continue                                          # hold the requests (frozen requesters)
        re = rng.getrandbits(nr)
        we = rng.getrandbits(nw) | rng.getrandbits(nw)
        dut.re.value, dut.we.value = re, we
        dut.raddr.value = sum(address() << (p * aw) for p in range(nr))
        dut.waddr.value = sum(address() << (w * aw) for w in range(nw))
        dut.wmask.value = rng.getrandbits(nw * lanes) | rng.getrandbits(nw * lanes)
        dut.wdata.value = rng.getrandbits(nw * lanes * ew)
        writes += bin(we).count("1")
    assert stalls > CYCLES // 20, f"only {stalls} conflict cycles: the traffic does not collide"
    assert writes > CYCLES // 2
