"""pytest driver: builds hls/rtl/mac_array.sv (a non-square 4 x 6 array) once per PE form and runs
tb_mac_array: the fabric form (what every simulation builds) and the TL_DSP48E2 form synth_report.py
synthesizes (each PE's multiply-add an instantiated DSP48E2, modelled by sim/rtl/DSP48E2.sv)."""

from __future__ import annotations

import pytest
from rtlsim import SIM_DIR, Unit, rtl_sources

PARAMS = {"ROWS": 4, "COLS": 6}


@pytest.fixture(scope="module", params=["fabric", "dsp48e2"])
def mac(request: pytest.FixtureRequest) -> Unit:
    sources = rtl_sources("mac_array", "mac_pe", "trilevel_requant", "trilevel_requant_decode")
    if request.param == "fabric":
        return Unit("mac_array", "mac_array", sources, "tb_mac_array", PARAMS).build()
    return Unit("mac_array", "mac_array", [*sources, SIM_DIR / "rtl" / "DSP48E2.sv"], "tb_mac_array", PARAMS,
                build_name="mac_array_dsp48e2", defines={"TL_DSP48E2": 1}).build()


@pytest.mark.parametrize("testcase", ["random_tiles", "edge_cases", "torch_golden", "cycles"])
def test_mac_array(mac: Unit, testcase: str) -> None:
    mac.check(testcase)
