"""pytest driver: builds hls/rtl/topk_unit.sv once and runs each cocotb testcase of tb_topk_unit."""

from __future__ import annotations

import pytest
from rtlsim import Unit, rtl_sources

PARAMS = {"NMAX": 256, "SCORE_W": 32}


@pytest.fixture(scope="module")
def topk() -> Unit:
    return Unit("topk_unit", "topk_unit", rtl_sources("topk_unit"), "tb_topk_unit", PARAMS).build()


@pytest.mark.parametrize("testcase", ["random_frames", "edge_cases", "torch_golden", "cycles", "bad_config"])
def test_topk_unit(topk: Unit, testcase: str) -> None:
    topk.check(testcase)
