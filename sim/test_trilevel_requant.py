"""pytest driver: hls/rtl/trilevel_requant.sv at the MAC array's 48-bit accumulator width and the
engine's 64-bit one against trilevel.intref.fixed.requantize, and the engine's RNE-only build (SR = 0)
(the 58-bit softmax-backward instance is covered by tb_softmax_unit)."""

from __future__ import annotations

import pytest
from rtlsim import Unit, rtl_sources


@pytest.mark.parametrize(("acc_w", "sr"), [(48, 1), (64, 1), (64, 0)])
def test_trilevel_requant(acc_w: int, sr: int) -> None:
    sources = rtl_sources("trilevel_requant", "trilevel_requant_decode")
    unit = Unit("trilevel_requant", "trilevel_requant", sources,
                "tb_trilevel_requant", {"ACC_W": acc_w, "SR": sr},
                build_name=f"trilevel_requant_w{acc_w}" + ("" if sr else "_rne")).build()
    unit.check("random_vectors")
