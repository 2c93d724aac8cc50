"""The simulation forms of the RTL (`+define+TL_SIM_FORMS`, what the rtlsim harness builds by default:
engine_mem's memories as element arrays, the GEMM grid paused while empty, the requantizer's thermometer
as a word operation; docs/rtl.md "Simulation forms") against the RTL that Yosys synthesizes, on the same
programs and the same DDR stall pattern: every byte of the DDR image, the error, every hardware counter
(cycles and unit-busy cycles included) and the region-conflict cycles must be equal. The programs mix
every command kind, concurrent DMA and GEMM with buffers in one SPM region (conflict cycles), windows
across region boundaries, and a lowered attention block."""

from __future__ import annotations

import numpy as np
import pytest
from random_programs import KINDS, RandomProgram
from test_engine_mem_conflicts import CONFLICT_HI, CONFLICT_LO, LAYOUTS
from test_engine_mem_conflicts import program as conflict_program

from trilevel.accel import isa, lower, rtlsim
from trilevel.accel.rtlsim_bench import random_inputs

CFG = isa.CI_SMALL


def engine(sim_forms: bool) -> rtlsim.RtlEngine:
    return rtlsim.RtlEngine(CFG, rtlsim.DdrModel(stall=0.05, seed=17), sim_forms=sim_forms)


@pytest.fixture(scope="module")
def forms() -> dict[str, rtlsim.RtlEngine]:
    return {"synthesized": engine(False), "simulation": engine(True)}


def run_both(forms: dict[str, rtlsim.RtlEngine], ddr: np.ndarray, count: int, cmd_addr: int = 0) -> dict:
    runs = {}
    for name, rtl in forms.items():
        image = ddr.copy()
        got = rtl.run(image, cmd_addr, count)
        h = rtl.harness
        conflicts = h.read_reg(CONFLICT_LO) | h.read_reg(CONFLICT_HI) << 32
        runs[name] = (image, got, conflicts)
    (img_s, got_s, conf_s), (img_f, got_f, conf_f) = runs["synthesized"], runs["simulation"]
    assert (got_f.error, got_f.err_pc, got_f.retired) == (got_s.error, got_s.err_pc, got_s.retired)
    bad = np.flatnonzero(img_f != img_s)
    assert bad.size == 0, f"{bad.size} DDR bytes differ, first at {bad[:8]}"
    assert got_f.counters == got_s.counters
    assert conf_f == conf_s
    return {"counters": got_s.counters, "conflicts": conf_s, "error": got_s.error}


@pytest.mark.parametrize("seed", range(6))
def test_random_programs_equal(forms, seed):
    prog = RandomProgram(np.random.default_rng(7000 + seed), spm_zeros=0.2, acc_ties=True)
    count = prog.build(commands=8, kinds=KINDS)
    run = run_both(forms, prog.ddr, count)
    assert run["error"] == isa.Err.NONE and run["counters"]["CYCLES"] > 0


@pytest.mark.parametrize("layout", ["one_region", "straddle"])
def test_region_conflicts_equal(forms, layout):
    ddr, count = conflict_program(LAYOUTS[layout])
    run = run_both(forms, ddr, count)
    assert run["error"] == isa.Err.NONE
    assert (run["conflicts"] > 0) == (layout == "one_region")


def test_lowered_attention_block_equal():
    """A lowered attention forward (2 images of 17 tokens: partial tiles, softmax, VEC), through the board
    driver on each form: outputs, statistics and every counter equal."""
    from trilevel.config import CONFIGS as MODELS

    prog = lower.representative("attn_fwd", MODELS["demo"], 17, None, 2, CFG)
    inputs = random_inputs(np.random.default_rng(3), prog, 17, None, {})
    runs = []
    for sim_forms in (False, True):
        lib = rtlsim.build(CFG, sim_forms=sim_forms)
        driver = rtlsim.rtlsim_backend(CFG, rtlsim.DdrModel(stall=0.05, seed=17), lib=lib).driver
        runs.append(driver.run(prog, inputs, seed=7))
    synth, sim = runs
    assert sim.stats == synth.stats
    assert sim.outputs.keys() == synth.outputs.keys()
    for name in synth.outputs:
        assert np.array_equal(sim.outputs[name], synth.outputs[name]), name
    assert sim.counters == synth.counters and synth.counters["MACS"] > 0
