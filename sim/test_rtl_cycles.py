"""trilevel.rtl_cycles: argument checks and the utilization the closed forms imply (the exact values are
asserted against Verilator by the unit testbenches' `cycles` cases)."""

from __future__ import annotations

import pytest

from trilevel import rtl_cycles


def test_mac_array_reaches_full_utilization_on_long_reductions() -> None:
    # DeiT-S MLP fc1 on a 32 x 32 array: 197 x 1536 outputs, reduction 384.
    assert rtl_cycles.mac_utilization(224, 1536, 384, 32, 32) > 0.99
    # Short reductions are paced by the drain: k < max(rows, cols) leaves PEs idle.
    assert rtl_cycles.mac_array_interval(8, 32, 32) == 32


def test_stream_formulas_add_intervals() -> None:
    assert rtl_cycles.topk_stream_cycles(1, 197, 138) == rtl_cycles.topk_cycles(197, 138)
    want = 2 * rtl_cycles.topk_interval(64) + rtl_cycles.topk_cycles(64, 9)
    assert rtl_cycles.topk_stream_cycles(3, 64, 9) == want
    assert (rtl_cycles.softmax_stream_cycles(4, 50, backward=True)
            == 3 * rtl_cycles.softmax_bwd_interval(50) + rtl_cycles.softmax_bwd_cycles(50))


@pytest.mark.parametrize("call", [
    lambda: rtl_cycles.topk_cycles(0, 1),
    lambda: rtl_cycles.topk_cycles(4, 5),
    lambda: rtl_cycles.softmax_cycles(-3),
    lambda: rtl_cycles.gemm_cycles(1, 1, 1.5, 4, 4),
    lambda: rtl_cycles.gemm_tile_cycles(5, 1, 1, 4, 4),
])
def test_bad_arguments_raise(call) -> None:
    with pytest.raises(ValueError):
        call()
