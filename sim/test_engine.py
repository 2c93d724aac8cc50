"""pytest driver of tb_engine.py: builds the engine top (CI size) once with cocotb's runner and runs
its cocotb testcases (cocotbext-axi AxiLiteMaster + AxiRam with random backpressure)."""

from __future__ import annotations

import pytest
from rtlsim import RTL_DIR, Unit

from trilevel.accel import isa, rtlsim


@pytest.fixture(scope="module")
def engine() -> Unit:
    params = rtlsim.engine_parameters(isa.CI_SMALL)
    return Unit("engine_top", "engine_top", rtlsim.engine_sources(), "tb_engine", params,
                includes=[RTL_DIR / "engine"]).build()


@pytest.mark.parametrize("testcase", ["program_under_backpressure", "malformed_command_raises_error_and_irq",
                                      "counters_count", "reset_mid_program"])
def test_engine_top(engine: Unit, testcase: str) -> None:
    engine.check(testcase)
