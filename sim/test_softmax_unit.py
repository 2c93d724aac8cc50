"""pytest driver: builds hls/rtl/softmax_unit.sv once (LUTs by trilevel.intref.luts), runs tb_softmax_unit."""

from __future__ import annotations

import pytest
from rtlsim import BUILD_ROOT, Unit, rtl_sources, simulator, string_param

from trilevel.intref.luts import write_memh


@pytest.fixture(scope="module")
def softmax() -> Unit:
    luts = {p.stem: p for p in write_memh(BUILD_ROOT / f"softmax_unit_{simulator()}" / "luts")}
    params = {"NMAX": 256, "EXP2_FILE": string_param(luts["exp2_lut"]),
              "RECIP_FILE": string_param(luts["recip_lut"])}
    sources = rtl_sources("softmax_unit", "trilevel_requant", "trilevel_requant_decode")
    return Unit("softmax_unit", "softmax_unit", sources, "tb_softmax_unit", params).build()


@pytest.mark.parametrize("testcase", ["forward_random", "backward_random", "mixed_back_to_back",
                                      "torch_golden", "cycles"])
def test_softmax_unit(softmax: Unit, testcase: str) -> None:
    softmax.check(testcase)
