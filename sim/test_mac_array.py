"""pytest driver: builds hls/rtl/mac_array.sv (a non-square 4 x 6 array) once and runs tb_mac_array."""

from __future__ import annotations

import pytest
from rtlsim import Unit, rtl_sources

PARAMS = {"ROWS": 4, "COLS": 6}


@pytest.fixture(scope="module")
def mac() -> Unit:
    sources = rtl_sources("mac_array", "mac_pe", "trilevel_requant")
    return Unit("mac_array", "mac_array", sources, "tb_mac_array", PARAMS).build()


@pytest.mark.parametrize("testcase", ["random_tiles", "edge_cases", "torch_golden", "cycles"])
def test_mac_array(mac: Unit, testcase: str) -> None:
    mac.check(testcase)
