"""pytest driver: builds hls/rtl/gemm_tile.sv (4 x 3 array, KMAX 64) once and runs tb_gemm_tile."""

from __future__ import annotations

import pytest
from rtlsim import Unit, rtl_sources

PARAMS = {"ROWS": 4, "COLS": 3, "KMAX": 64}


@pytest.fixture(scope="module")
def gemm() -> Unit:
    sources = rtl_sources("gemm_tile", "mac_array", "mac_pe", "trilevel_requant", "trilevel_requant_decode")
    return Unit("gemm_tile", "gemm_tile", sources, "tb_gemm_tile", PARAMS).build()


@pytest.mark.parametrize("testcase", ["random_calls", "cycles"])
def test_gemm_tile(gemm: Unit, testcase: str) -> None:
    gemm.check(testcase)
