"""Mutation check of the engine tests: an engine built with MUTATION=7 (bit 0: LOAD row stride one
element off, bit 1: +1 before every GEMM requantization, bit 2: GELU_BWD rounding, checked by
sim/test_engine_vec.py on the same build) must fail the bit-exactness tests that pass on the real RTL
(sim/test_engine_rtlsim.py, sim/test_engine_gemm.py run against it)."""

from __future__ import annotations

import pytest
import test_engine_gemm as gemm_tests
import test_engine_rtlsim as dma_tests

from trilevel.accel import isa, rtlsim


@pytest.fixture(scope="module")
def mutant_lib():
    return rtlsim.build(isa.CI_SMALL, overrides={"MUTATION": 7})


def test_broken_dma_stride_fails_the_load_store_test(mutant_lib):
    with pytest.raises(AssertionError, match="trial"):
        dma_tests.test_load_store_bit_exact(mutant_lib, {})


def test_broken_rounding_fails_the_gemm_test(mutant_lib):
    h = rtlsim.Harness(isa.CI_SMALL, rtlsim.DdrModel(), lib=mutant_lib)
    for sr in (0, 1):
        with pytest.raises(AssertionError, match="SPM mismatches"):
            gemm_tests.test_gemm_rounding_at_small_shifts(h, sr)
