"""C-sim building blocks (hls/src/trilevel_units.cpp) and primitives vs trilevel.intref.fixed, bit for bit;
the build script and the ap_int flavor (the Vitis flow is the engine's: tests/test_engine_csim.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trilevel import csim
from trilevel.intref import fixed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lib() -> csim.CSim:
    return csim.CSim(csim.build())


def test_hash32_matches_reference(lib):
    rng = np.random.default_rng(1)
    idx = np.concatenate([np.arange(100), rng.integers(0, 2**32, 2000), [2**32 - 1]]).astype(np.uint64)
    for seed in (0, 1, 0xDEADBEEF, 2**32 - 1):
        np.testing.assert_array_equal(lib.hash32(seed, idx), fixed.hash32(seed, idx))


@pytest.mark.parametrize("mode", ["rne", "sr"])
def test_requantize_matches_reference(lib, mode):
    rng = np.random.default_rng(2)
    for shift in (-20, -3, 0, 1, 2, 5, 15, 16, 31, 32, 33, 40, 47, 62):
        acc = rng.integers(-(2**46), 2**46, 4000)
        h = 1 << (min(max(shift, 1), 46) - 1)
        acc[:12] = [0, 1, -1, h, -h, 3 * h, -3 * h, 5 * h, 32767, 32768, -32769, 2**40]  # ties, saturation
        index = rng.integers(0, 2**32, acc.shape, dtype=np.uint64)
        got = lib.requantize(acc, shift, mode, seed=77, index=index)
        np.testing.assert_array_equal(
            got, fixed.requantize(acc, shift, mode, 77, index), err_msg=f"shift {shift}"
        )
    # the default index is the flat row-major position
    acc = rng.integers(-(2**30), 2**30, (7, 9))
    np.testing.assert_array_equal(lib.requantize(acc, 12, mode, 5), fixed.requantize(acc, 12, mode, 5))


@pytest.mark.parametrize("n", [197, 139, 98, 69, 17])
def test_topk_unit_matches_reference(lib, n):
    rng = np.random.default_rng(n)
    ties = rng.integers(-3, 3, (20, n))  # many equal scores: the lower index must win
    wide = rng.integers(-(2**20), 2**20, (20, n))
    for scores in (ties, wide, np.zeros((1, n), np.int64)):
        for k in sorted({1, 2, n // 2, n - 1 or 1, n}):
            got = lib.topk_select(scores, k)
            np.testing.assert_array_equal(got, fixed.topk_select(scores, k), err_msg=f"k {k}")
            assert np.all(np.diff(got, axis=-1) > 0)


@pytest.mark.parametrize("n", [197, 139, 98, 69, 17, 1])
def test_softmax_unit_matches_reference(lib, n):
    rng = np.random.default_rng(n + 1000)
    for frac_s in (0, 6, 12, 15):
        s = rng.integers(-32768, 32768, (30, n)).astype(np.int16)
        s[0] = 7  # all-equal row
        s[1, :] = -32768
        s[1, 0] = 32767  # one dominant element
        P = lib.softmax_fwd(s, frac_s)
        np.testing.assert_array_equal(P, fixed.softmax_fwd(s, frac_s))
    dP = rng.integers(-32768, 32768, P.shape).astype(np.int16)
    for frac_dp, frac_ds in ((10, 10), (12, 4), (3, 20), (0, 15)):
        np.testing.assert_array_equal(
            lib.softmax_bwd(P, dP, frac_dp, frac_ds, 9), fixed.softmax_bwd(P, dP, frac_dp, frac_ds, 9)
        )


@pytest.mark.parametrize("mode", ["rne", "sr"])
def test_gemm_tile_matches_reference(lib, mode):
    rng = np.random.default_rng(3)
    for m, n, k in ((70, 45, 200), (1, 1, 1), (33, 65, 1536), (197, 64, 16)):
        a = rng.integers(-32768, 32768, (m, k)).astype(np.int16)
        w = rng.integers(-32768, 32768, (n, k)).astype(np.int16)
        b = rng.integers(-(2**40), 2**40, n)
        acc = a.astype(np.int64) @ w.T.astype(np.int64) + b
        shift = 26
        y, peak = lib.gemm_nt(a, w, b, shift, mode, seed=3)
        np.testing.assert_array_equal(y, fixed.requantize(acc, shift, mode, 3))
        assert peak == np.abs(acc).max()


def test_ap_int_flavor_agrees_with_fast_flavor(lib, tmp_path):
    ap = csim.CSim(csim.build(tmp_path / "libtrilevel_csim_ap.so", flavor="ap", sources=["linear"]))
    assert not ap.fast and lib.fast
    rng = np.random.default_rng(4)
    a = rng.integers(-32768, 32768, (40, 96)).astype(np.int16)
    w = rng.integers(-32768, 32768, (36, 96)).astype(np.int16)
    b = rng.integers(-(2**35), 2**35, 36)
    for mode in ("rne", "sr"):
        y_ap, peak_ap = ap.gemm_nt(a, w, b, 22, mode, seed=11)
        y_fast, peak_fast = lib.gemm_nt(a, w, b, 22, mode, seed=11)
        np.testing.assert_array_equal(y_ap, y_fast)
        assert peak_ap == peak_fast
    s = rng.integers(-32768, 32768, (8, 139)).astype(np.int16)
    np.testing.assert_array_equal(ap.softmax_fwd(s, 9), lib.softmax_fwd(s, 9))
    np.testing.assert_array_equal(
        ap.topk_select(s.astype(np.int64), 97), lib.topk_select(s.astype(np.int64), 97)
    )
    # a whole kernel: linear forward and backward
    x = fixed.QTensor(rng.integers(-8000, 8000, (2, 69, 48)).astype(np.int16), 12)
    params = {"weight": fixed.QTensor(w[:, :48].copy(), 16), "bias": fixed.QTensor(w[:, 0].copy(), 13)}
    y_ap, st_ap, _ = ap.linear_fwd(x, params, {"y": 10})
    y_fast, st_fast, _ = lib.linear_fwd(x, params, {"y": 10})
    np.testing.assert_array_equal(y_ap.data, y_fast.data)
    assert st_ap == st_fast
    dy = fixed.QTensor(rng.integers(-4000, 4000, (2, 69, 36)).astype(np.int16), 14)
    g_ap = {"weight": np.zeros((36, 48), np.int64), "bias": np.zeros(36, np.int64)}
    g_fast = {k: v.copy() for k, v in g_ap.items()}
    dx_ap, sb_ap, _ = ap.linear_bwd(dy, {"x": x}, params, g_ap, {"dx": 12}, seed=9)
    dx_fast, sb_fast, _ = lib.linear_bwd(dy, {"x": x}, params, g_fast, {"dx": 12}, seed=9)
    np.testing.assert_array_equal(dx_ap.data, dx_fast.data)
    assert sb_ap == sb_fast and all(np.array_equal(g_ap[k], g_fast[k]) for k in g_ap)


def test_build_is_skipped_when_unchanged(lib):
    before = lib.path.stat().st_mtime_ns
    csim.build()
    assert lib.path.stat().st_mtime_ns == before


def test_build_failure_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "hls" / "build_csim.py"),
            "--out",
            str(tmp_path / "x.so"),
            "--sources",
            "no_such_kernel",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_kernel" in lines[0]


def test_missing_library_names_make_csim(tmp_path):
    with pytest.raises(csim.CSimError, match="make csim"):
        csim.CSim(tmp_path / "missing.so")


def test_bad_input_gives_clear_errors(lib):
    with pytest.raises(TypeError, match="int16"):
        lib.softmax_fwd(np.zeros((2, 3), np.int32), 4)
    with pytest.raises(ValueError, match="k must be"):
        lib.topk_select(np.zeros((2, 5), np.int32), 6)
    with pytest.raises(ValueError, match="frac_s"):
        lib.softmax_fwd(np.zeros((2, 3), np.int16), 16)
