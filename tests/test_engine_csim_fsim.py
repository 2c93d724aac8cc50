"""Randomized programs on the HLS C++ engine's C-sim equal trilevel.accel.fsim (the command-level golden
model) bit for bit: every byte of DDR after the run (all on-chip memories and statistics stored back),
ERROR, ERR_PC, RETIRED and the exact counters (DDR bytes, MACs). The programs come from
sim/random_programs.py, shared with the RTL engine's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_engine_csim import Engine, _build_csim

from trilevel.accel import fsim, isa

sys.path.append(str(Path(__file__).resolve().parents[1] / "sim"))
from random_programs import RandomProgram  # noqa: E402

EXACT_COUNTERS = ("DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")
GEMM_MN = 40  # GEMMs up to 40 x 40: several tiles of the 32 x 32 array


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(_build_csim().build())


@pytest.mark.parametrize("seed", range(12))
def test_random_programs_csim_equals_fsim(engine, seed):
    gen = RandomProgram(np.random.default_rng(1000 + seed), gemm_mn=GEMM_MN)
    count = gen.build(commands=12)
    ddr_c, ddr_f = gen.ddr.copy(), gen.ddr.copy()
    got = engine.run(ddr_c, 0, count)
    want = fsim.FunctionalEngine(isa.PRODUCTION).run(ddr_f, 0, count)
    assert (got["error"], got["err_pc"]) == (want.error, want.err_pc), want.detail
    assert got["retired"] == want.retired
    if want.error == isa.Err.NONE:
        np.testing.assert_array_equal(ddr_c, ddr_f)
        for name in EXACT_COUNTERS:
            assert got["counters"][name] == want.counters[name], name


CORRUPTIONS = (
    (1, 0x00000000),  # m = n = 0: BAD_DIMS
    (0, 1 << 27),  # a reserved bit of word 0: RESERVED_BITS
    (0, 9),  # opcode 9: BAD_OPCODE
    (6, 0x00FFFFF0),  # a_addr at the top of the 24-bit range: SPM_RANGE where A is read
    (2, 0x007F0000),  # shift = 127 where a shift is used: BAD_SHIFT
)


@pytest.mark.parametrize("seed", range(10))
def test_random_faults_stop_both_at_the_same_command(engine, seed):
    gen = RandomProgram(np.random.default_rng(2000 + seed), gemm_mn=GEMM_MN)
    count = gen.build(commands=8)
    words = gen.ddr[: count * isa.COMMAND_BYTES].view("<u4").reshape(count, isa.WORDS)
    victim = int(gen.rng.integers(4, count - 5))  # a compute command between the LOADs and the STOREs
    word, value = CORRUPTIONS[seed % len(CORRUPTIONS)]
    if word == 0:
        words[victim, 0] = value if value < 16 else words[victim, 0] | value
    else:
        words[victim, word] = (
            words[victim, word] & ~np.uint32(0x00FFFFFF if word == 6 else 0xFFFFFFFF)
        ) | value
    ddr_c, ddr_f = gen.ddr.copy(), gen.ddr.copy()
    got = engine.run(ddr_c, 0, count)
    want = fsim.FunctionalEngine(isa.PRODUCTION).run(ddr_f, 0, count)
    assert (got["error"], got["err_pc"]) == (want.error, want.err_pc), want.detail
    assert got["retired"] == want.retired  # the commands before the failing one ran on both
    if want.error == isa.Err.NONE:  # the corrupted field was one this command does not use
        np.testing.assert_array_equal(ddr_c, ddr_f)
