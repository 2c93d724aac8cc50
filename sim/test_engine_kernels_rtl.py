"""Every kernel lowered to engine commands (trilevel.accel.lower) runs on the RTL engine (Verilator, CI_SMALL
build) through the board's own driver (rtlsim.rtlsim_backend: pynq MMIO and allocate on the simulated
device) and equals trilevel.intref (the reference backend) bit for bit at demo shapes: linear fwd/bwd,
LayerNorm fwd/bwd with and without the residual, top-k tokens and connections, the MLP block and the
attention block, dense and with connection lists (MASK + masked GEMM/softmax). The checks are those of
tests/test_engine_kernels.py, which runs them on fsim and the C-sim engine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trilevel.accel import isa, rtlsim

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_engine_kernels import (  # noqa: E402
    Case,
    check_attn,
    check_linear_and_norm,
    check_mlp,
    check_topk,
    demo_case,
)


@pytest.fixture(scope="module")
def rtl():
    return rtlsim.rtlsim_backend(isa.CI_SMALL, rtlsim.DdrModel(stall=0.02, seed=9))


def test_linear_layernorm_topk_on_rtl(rtl):
    case = demo_case()
    check_linear_and_norm(rtl, case)
    check_topk(rtl, case)


@pytest.mark.parametrize("keep_attn", [1.0, 0.5])
def test_blocks_on_rtl(rtl, keep_attn):
    case = demo_case()
    check_attn(rtl, case, None if keep_attn == 1.0 else case.conn(keep_attn))
    check_mlp(rtl, case)


def test_blocks_on_rtl_one_image(rtl):
    """One image: the backward blocks hand dH (MLP), dctx and dQKV (attention) to their next stage on chip."""
    case = Case(batch=1, length=17, dim=64, heads=4, hidden=128, seed=3)
    check_attn(rtl, case, None)
    check_attn(rtl, case, case.conn(0.5))
    check_mlp(rtl, case)
