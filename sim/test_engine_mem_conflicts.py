"""Memory region conflicts (engine_mem): one copy of each memory, every region a true dual-port RAM,
so a cycle that needs more than 2 accesses in one region is served over extra clock cycles while
the engine's datapath is frozen (global clock enable). Results and the exact counters must not
change; only cycles do. A program with LOAD, GEMM and STORE running at the same time is run with all
its buffers in ONE SPM region (conflicts) and spread over four regions (none), both equal to fsim
byte for byte; the RTL-only conflict-cycle register (AXI-Lite 0xE0 / 0xE4) counts the extra cycles."""

from __future__ import annotations

import numpy as np
import pytest

from trilevel.accel import fsim, isa, rtlsim
from trilevel.accel.isa import Mem, Op

CFG = isa.CI_SMALL
REGION = 8 * 2048                  # SPM region of the CI build: SPM_LANES (8) x 2048 rows
EXACT = ("DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")
M, N, K = 24, 24, 64
CONFLICT_LO, CONFLICT_HI = 0xE0, 0xE4


@pytest.fixture(scope="module")
def rtl():
    return rtlsim.RtlEngine(CFG, rtlsim.DdrModel(stall=0.05, seed=3))


def conflict_cycles(engine: rtlsim.RtlEngine) -> int:
    h = engine.harness
    return h.read_reg(CONFLICT_LO) | h.read_reg(CONFLICT_HI) << 32


def program(place: dict[str, int], seed: int = 0) -> tuple[np.ndarray, int]:
    """LOAD Y, A, B; LOAD Z (independent) || GEMM0 (tiny barrier) -> STORE Y || GEMM1 (A x B -> C);
    STORE C; FINISH. Y / Z are 4096 elements, so the DMA overlaps the GEMMs."""
    rng = np.random.default_rng(seed)
    ddr = np.zeros(1 << 18, dtype=np.uint8)
    free = 1 << 12

    def put(arr: np.ndarray) -> int:
        nonlocal free
        addr = free
        ddr[addr: addr + arr.nbytes] = arr.view(np.uint8)
        free = -(-(addr + arr.nbytes) // 64) * 64
        return addr

    a = rng.integers(-300, 300, M * K).astype(np.int16)
    b = rng.integers(-300, 300, K * N).astype(np.int16)
    y = rng.integers(-3000, 3000, 4096).astype(np.int16)
    z = rng.integers(-3000, 3000, 4096).astype(np.int16)
    gemm = dict(k=K, a_addr=place["A"], a_stride=K, b_addr=place["B"], b_stride=K, tb=0, imm=1, shift=6)
    out_y, out_c = 1 << 16, (1 << 16) + 16384
    cmds = [
        isa.encode(Op.LOAD, sub=Mem.SPM, m=1, n=y.size, a_addr=place["Y"], index_base=put(y)),
        isa.encode(Op.LOAD, sub=Mem.SPM, m=1, n=a.size, a_addr=place["A"], index_base=put(a)),
        isa.encode(Op.LOAD, sub=Mem.SPM, m=1, n=b.size, a_addr=place["B"], index_base=put(b), push_next=1),
        isa.encode(Op.LOAD, sub=Mem.SPM, m=1, n=z.size, a_addr=place["Z"], index_base=put(z)),
        isa.encode(Op.GEMM, m=1, n=1, c_addr=place["C"] + M * N, c_stride=1, pop_prev=1, push_next=1, **gemm),
        isa.encode(Op.GEMM, m=M, n=N, c_addr=place["C"], c_stride=N, push_next=1, **gemm),
        isa.encode(Op.STORE, sub=Mem.SPM, m=1, n=y.size, a_addr=place["Y"], index_base=out_y, pop_prev=1),
        isa.encode(Op.STORE, sub=Mem.SPM, m=M, n=N, a_addr=place["C"], a_stride=N, index_base=out_c,
                   index_stride=2 * N, pop_prev=1),
        isa.encode(Op.FINISH),
    ]
    words = isa.program_words(cmds)
    ddr[: words.nbytes] = words.view(np.uint8)
    return ddr, len(cmds)


ONE_REGION = dict(A=0, B=2048, C=4096, Y=6144, Z=10240)
SPREAD = dict(Y=0, Z=8192, A=REGION + 512, B=2 * REGION + 512, C=3 * REGION + 512)
# A, B, C (LOADed, GEMM-read, GEMM-written, STOREd) across a region boundary at an unaligned element:
# windows served by two regions; no two buffers overlap (LOAD Z runs concurrently with the GEMMs)
STRADDLE = dict(A=REGION - 733, B=2 * REGION - 1001, C=3 * REGION - 299, Y=REGION + 2001, Z=3 * REGION + 1003)
LAYOUTS = {"one_region": ONE_REGION, "spread": SPREAD, "straddle": STRADDLE}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_concurrent_dma_and_gemm_equal_fsim(rtl, layout):
    place = LAYOUTS[layout]
    ddr, count = program(place)
    ddr_r, ddr_f = ddr.copy(), ddr.copy()
    got = rtl.run(ddr_r, 0, count)
    want = fsim.FunctionalEngine(CFG).run(ddr_f, 0, count)
    assert (got.error, got.err_pc) == (want.error, want.err_pc) == (isa.Err.NONE, 0), want.detail
    bad = np.flatnonzero(ddr_r != ddr_f)
    assert bad.size == 0, f"{bad.size} DDR bytes differ, first at {bad[:8]}"
    for name in EXACT:
        assert got.counters[name] == want.counters[name], name
    conflicts = conflict_cycles(rtl)
    assert conflicts < got.counters["CYCLES"]
    if layout == "one_region":
        # GEMM A + B loads, its C writes, the LOAD's writes and the STORE's reads share one region
        assert conflicts > 0
    elif layout == "spread":
        assert conflicts == 0


def test_conflict_cycles_are_the_difference(rtl):
    """The same program in both layouts: the one-region run is slower by about its conflict cycles
    (DDR stalls are random, so only roughly)."""
    runs = {}
    for name, place in (("one", ONE_REGION), ("spread", SPREAD)):
        ddr, count = program(place)
        got = rtl.run(ddr, 0, count)
        runs[name] = (got.counters["CYCLES"], conflict_cycles(rtl))
    (c_one, k_one), (c_spread, k_spread) = runs["one"], runs["spread"]
    assert k_spread == 0 and k_one > 0
    assert c_one > c_spread


def test_acc_and_idx_across_region_boundaries(rtl):
    """ACC (CI: 4096-element regions) and IDX windows that straddle a boundary, LOAD then STORE back."""
    rng = np.random.default_rng(5)
    ddr = np.zeros(1 << 17, dtype=np.uint8)
    acc = rng.integers(-(2**40), 2**40, 1000).astype(np.int64)
    idx = rng.integers(0, 1 << 16, 3000).astype(np.uint16)
    ddr[4096: 4096 + acc.nbytes] = acc.view(np.uint8)
    ddr[16384: 16384 + idx.nbytes] = idx.view(np.uint8)
    acc_at = 4096 - 333                       # ACC region boundary of the CI build: 4 lanes x 1024
    cmds = [isa.encode(Op.LOAD, sub=Mem.ACC, m=1, n=acc.size, a_addr=acc_at, index_base=4096),
            isa.encode(Op.LOAD, sub=Mem.IDX, m=1, n=idx.size, a_addr=1001, index_base=16384),
            isa.encode(Op.LOAD, sub=Mem.ACC, m=4, n=250, a_addr=2 * 4096 - 501, a_stride=251, index_base=4096,
                       index_stride=2000, push_next=1),
            isa.encode(Op.GEMM, m=1, n=1, k=1, pop_prev=1, push_next=1, imm=1),
            isa.encode(Op.STORE, sub=Mem.ACC, m=1, n=acc.size, a_addr=acc_at, index_base=1 << 15, pop_prev=1),
            isa.encode(Op.STORE, sub=Mem.ACC, m=4, n=250, a_addr=2 * 4096 - 501, a_stride=251,
                       index_base=(1 << 15) + 8192, index_stride=2048),
            isa.encode(Op.STORE, sub=Mem.IDX, m=1, n=idx.size, a_addr=1001, index_base=(1 << 15) + 20480),
            isa.encode(Op.FINISH)]
    words = isa.program_words(cmds)
    ddr[: words.nbytes] = words.view(np.uint8)
    ddr_r, ddr_f = ddr.copy(), ddr.copy()
    got = rtl.run(ddr_r, 0, len(cmds))
    want = fsim.FunctionalEngine(CFG).run(ddr_f, 0, len(cmds))
    assert (got.error, got.err_pc) == (want.error, want.err_pc) == (isa.Err.NONE, 0), want.detail
    bad = np.flatnonzero(ddr_r != ddr_f)
    assert bad.size == 0, f"{bad.size} DDR bytes differ, first at {bad[:8]}"
    for name in EXACT:
        assert got.counters[name] == want.counters[name], name
