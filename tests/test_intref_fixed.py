"""The §1 primitives of trilevel.intref.fixed against direct, independent definitions."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from trilevel.intref import fixed, luts

M32 = 0xFFFFFFFF


def hash32_py(seed: int, index: int) -> int:
    x = (seed ^ (index * 0x9E3779B9)) & M32
    x ^= x >> 16
    x = (x * 0x21F0AAAD) & M32
    x ^= x >> 15
    x = (x * 0x735A2D97) & M32
    x ^= x >> 15
    return x


def rne_py(acc: int, shift: int) -> int:
    """Round half to even of acc / 2**shift with Python's exact Fraction rounding, then saturate."""
    v = round(Fraction(acc, 1 << shift)) if shift > 0 else acc * (1 << -shift)
    return max(-32768, min(32767, v))


def sr_py(acc: int, shift: int, seed: int, index: int) -> int:
    r = hash32_py(seed, index)
    r = r & ((1 << shift) - 1) if shift <= 32 else r << (shift - 32)
    return max(-32768, min(32767, (acc + r) // (1 << shift)))


def test_hash32_matches_plain_python():
    rng = np.random.default_rng(0)
    idx = np.concatenate([np.arange(64), rng.integers(0, 2**32, 200), [2**32 - 1]]).astype(np.int64)
    for seed in (0, 1, 0xDEADBEEF, M32):
        got = fixed.hash32(seed, idx)
        assert got.dtype == np.uint32
        assert got.tolist() == [hash32_py(seed, int(i)) for i in idx]
    assert fixed.hash32(7, np.arange(6, dtype=np.uint32).reshape(2, 3)).shape == (2, 3)


def test_hash32_bits_look_uniform():
    h = fixed.hash32(12345, np.arange(1 << 16))
    bits = (h[:, None] >> np.arange(32, dtype=np.uint32)) & 1
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.01)


@pytest.mark.parametrize("bad", [-1, 2**32])
def test_hash32_rejects_bad_seed(bad):
    with pytest.raises(ValueError):
        fixed.hash32(bad, np.arange(3))


def test_hash32_rejects_negative_index():
    with pytest.raises(ValueError):
        fixed.hash32(1, np.array([0, -1]))


def test_requantize_rne_ties_and_saturation():
    acc = np.array([1, 2, 3, 5, 6, 7, -1, -2, -3, -5, -6, -7, 2**20, -(2**20)], dtype=np.int64)
    got = fixed.requantize(acc, 1, "rne")
    # x.5 goes to the even neighbour: 0.5->0, 1.5->2, 2.5->2, 3.5->4, and symmetric for negatives.
    assert got.tolist() == [0, 1, 2, 2, 3, 4, 0, -1, -2, -2, -3, -4, 32767, -32768]
    assert got.dtype == np.int16


@pytest.mark.parametrize("shift", [-20, -3, 0, 1, 2, 7, 15, 31, 32, 33, 40, 47])
def test_requantize_matches_exact_definition(shift):
    rng = np.random.default_rng(shift + 100)
    acc = rng.integers(-(2**47), 2**47, 300) >> rng.integers(0, 47, 300)
    acc = np.concatenate([acc, [0, 1, -1, 2**46, -(2**47)]]).astype(np.int64)
    seed = 0xC0FFEE
    rne = fixed.requantize(acc, shift, "rne")
    sr = fixed.requantize(acc, shift, "sr", seed=seed)
    assert rne.tolist() == [rne_py(int(a), shift) for a in acc]
    exact = sr_py if shift > 0 else (lambda a, shift, seed, i: rne_py(a, shift))
    assert sr.tolist() == [exact(int(a), shift, seed, i) for i, a in enumerate(acc)]


def test_requantize_sr_default_index_is_flat_row_major_and_explicit_index_is_used():
    acc = np.arange(-600, 600, dtype=np.int64).reshape(3, 4, 100) * 37
    default = fixed.requantize(acc, 9, "sr", seed=5)
    flat = fixed.requantize(acc.reshape(-1), 9, "sr", seed=5).reshape(acc.shape)
    assert np.array_equal(default, flat)
    shifted = fixed.requantize(acc, 9, "sr", seed=5, index=fixed.flat_index(acc.shape, offset=1))
    assert not np.array_equal(default, shifted)


def test_requantize_sr_is_unbiased():
    # Mean over many seeds of SR(acc / 2**shift) approaches the exact quotient; RNE would be biased.
    acc = np.array([1, 3, 77, -77, 1000, -1001, 5 * 2**12 + 1], dtype=np.int64)
    for shift in (4, 12, 36):
        a = acc << max(0, shift - 12)
        results = np.stack([fixed.requantize(a, shift, "sr", seed=s).astype(np.float64) for s in range(3000)])
        exact = a / 2.0**shift
        # SR gives floor or ceil of the exact value: variance <= 1/4, 5 sigma = 5 * 0.5 / sqrt(3000).
        assert np.all(np.abs(results.mean(axis=0) - exact) < 5 * 0.5 / math.sqrt(3000))
        assert np.all((results == np.floor(exact)) | (results == np.ceil(exact)))


def test_requantize_rejects_bad_input():
    with pytest.raises(ValueError):
        fixed.requantize(np.array([1]), 3, "nearest")
    with pytest.raises(TypeError):
        fixed.requantize(np.array([1.5]), 3, "rne")
    with pytest.raises(ValueError):
        fixed.requantize(np.array([1]), 70, "rne")


def test_quantize_rne_saturation_and_dequantize_roundtrip():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0, 0.25], dtype=np.float32)
    q = fixed.quantize(x, 0)
    assert q.tolist() == [0, 2, 2, 0, -2, 1000, -1000, 0]
    assert fixed.quantize(np.array([1.0, -2.0]), 15).tolist() == [32767, -32768]
    q = np.arange(-32768, 32768, 97, dtype=np.int16)
    for frac in (-16, 0, 8, 40):
        assert np.array_equal(fixed.quantize(fixed.dequantize(q, frac), frac), q)
    with pytest.raises(ValueError):
        fixed.quantize(np.array([np.nan]), 3)
    with pytest.raises(ValueError):
        fixed.quantize(np.array([1.0]), 41)


@pytest.mark.parametrize("max_abs", [2.0**-20, 0.003, 0.5, 1.0, 1.7, 3.0, 100.0, 3e5])
def test_choose_frac_places_max_abs_in_headroom_band(max_abs):
    frac = fixed.choose_frac(max_abs)
    scaled = max_abs * 2.0**frac
    assert 2**13 <= scaled < 2**14
    assert fixed.choose_frac(max_abs, headroom=0) == frac + 1
    # The integer variant agrees with the real-valued one.
    q = int(round(max_abs * 2**20))
    if q > 0:
        assert fixed.choose_frac_int(q, 20) == fixed.choose_frac(q * 2.0**-20)


def test_choose_frac_clamps_and_handles_zero():
    assert fixed.choose_frac(0.0) == fixed.ZERO_FRAC
    assert fixed.choose_frac(1e30) == fixed.FRAC_MIN
    assert fixed.choose_frac(1e-30) == fixed.FRAC_MAX
    with pytest.raises(ValueError):
        fixed.choose_frac(float("nan"))


def topk_by_definition(s: list, k: int) -> list[int]:
    """§1.4 literally: i is selected iff fewer than k elements beat it."""
    n = len(s)
    beats = [[s[j] > s[i] or (s[j] == s[i] and j < i) for j in range(n)] for i in range(n)]
    return [i for i in range(n) if sum(beats[i]) < k]


def test_topk_select_matches_definition_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(60):
        n = int(rng.integers(1, 40))
        s = rng.integers(-3, 4, n).astype(np.int16)  # many ties
        k = int(rng.integers(1, n + 1))
        assert fixed.topk_select(s, k).tolist() == topk_by_definition(s.tolist(), k)
    s = rng.normal(size=(5, 30))
    got = fixed.topk_select(s, 7)
    assert got.shape == (5, 7)
    for row, idx in zip(s, got, strict=True):
        assert idx.tolist() == topk_by_definition(row.tolist(), 7)
        assert set(idx.tolist()) == set(torch.topk(torch.from_numpy(row), 7).indices.tolist())


def test_topk_select_all_equal_and_bounds():
    assert fixed.topk_select(np.zeros(10, np.int16), 4).tolist() == [0, 1, 2, 3]
    assert fixed.topk_select(np.arange(5), 5).tolist() == [0, 1, 2, 3, 4]
    assert fixed.topk_select(np.array([-32768, 32767, 0], dtype=np.int16), 1).tolist() == [1]
    for k in (0, 6):
        with pytest.raises(ValueError):
            fixed.topk_select(np.arange(5), k)


def softmax_py(s: list[int], fs: int) -> list[int]:
    """§1.5 for one row, line by line with Python ints."""
    m = max(s)
    e = []
    for v in s:
        u = ((m - v) * 23637) >> (fs + 6)
        n, f = u >> 8, u & 255
        e.append(0 if n >= 16 else int(luts.EXP2_LUT[f]) >> n)
    total = sum(e)
    b = total.bit_length() - 1
    i = (total >> (b - 8)) & 255
    return [rne_py(int(ej) * int(luts.RECIP_LUT[i]), b + 1) for ej in e]


def test_luts_match_formulas():
    assert luts.EXP2_LUT[0] == 32768 and luts.EXP2_LUT.size == 256
    assert np.all(np.abs(luts.EXP2_LUT - 2.0 ** (-np.arange(256) / 256) * 2**15) <= 0.5)
    assert np.all(np.abs(luts.RECIP_LUT - 2**16 / (1 + (np.arange(256) + 0.5) / 256)) <= 0.5)
    assert np.all(np.diff(luts.EXP2_LUT) < 0) and np.all(np.diff(luts.RECIP_LUT) < 0)
    mid = (np.arange(2048) - 1024 + 0.5) / 128
    phi = 0.5 * (1 + torch.erf(torch.from_numpy(mid) / 2**0.5)).numpy()
    pdf = np.exp(-0.5 * mid**2) / np.sqrt(2 * np.pi)
    assert np.all(np.abs(luts.PHI_LUT - phi * 2**16) <= 0.5)
    assert np.all(np.abs(luts.DGELU_LUT - (phi + mid * pdf) * 2**16) <= 0.5)
    assert luts.PHI_LUT[0] == 0 and luts.PHI_LUT[-1] == 2**16 and luts.DGELU_LUT[-1] == 2**16
    i = np.arange(4096)
    expect = np.where(i < 1024, 2**20 / np.sqrt(np.maximum(i, 1)), 2**20 / np.sqrt(i + 0.5))
    assert np.all(np.abs(luts.RSQRT_LUT - expect) <= 0.5)


def test_lut_writers(tmp_path):
    header = luts.write_c_header(tmp_path / "luts.h").read_text()
    assert "static const uint32_t EXP2_LUT[256]" in header and "#define RECIP_LUT_SIZE 256" in header
    paths = luts.write_memh(tmp_path / "memh")
    for p in paths:
        lut = luts.LUTS[p.stem.upper()]
        words = [int(w, 16) for w in p.read_text().split()]
        mask = (1 << lut.width) - 1
        assert words == [int(v) & mask for v in lut.values]


def test_softmax_fwd_matches_row_definition():
    rng = np.random.default_rng(2)
    for fs in (0, 4, 8, 12, 15):
        s = rng.integers(-32768, 32768, size=(6, 33)).astype(np.int16) >> rng.integers(0, 15, (6, 1))
        s = s.astype(np.int16)
        got = fixed.softmax_fwd(s, fs)
        for row, p in zip(s, got, strict=True):
            assert p.tolist() == softmax_py([int(v) for v in row], fs)


def softmax_error_bound(p: np.ndarray, n: int) -> np.ndarray:
    """docs/numerics.md §2.14: |P/2**15 - softmax| <= 2**-8 * p + (n + 1) * 2**-16 for a row of n scores."""
    return 2.0**-8 * p + (n + 1) * 2.0**-16


def test_softmax_fwd_close_to_float():
    rng = np.random.default_rng(3)
    for fs in (0, 4, 8, 11, 15):
        for n in (1, 2, 17, 69, 197):
            rows = [fixed.quantize(rng.normal(scale=rng.uniform(0.1, 6.0), size=(8, n)), fs)]
            # Adversarial rows: one winner over n - 1 equal losers, and one loser under n - 1 equal winners.
            for d in range(0, 32768, 1021):
                r = np.zeros((2, n), np.int16)
                r[0, 1:] = -d
                r[1, 0] = -d
                rows.append(r)
            s = np.concatenate(rows)
            exact = torch.softmax(torch.from_numpy(fixed.dequantize(s, fs, np.float64)), -1).numpy()
            p = fixed.softmax_fwd(s, fs) / 2.0**15
            assert np.all(np.abs(p - exact) <= softmax_error_bound(exact, n))


def test_softmax_fwd_all_equal_and_masked_rows():
    p = fixed.softmax_fwd(np.full((3, 8), 1234, dtype=np.int16), 8)
    assert np.all(p == p[0, 0]) and abs(p[0, 0] / 2**15 - 1 / 8) < 2**-9
    one = fixed.softmax_fwd(np.array([[5]], dtype=np.int16), 3)
    assert abs(one[0, 0] / 2**15 - 1.0) < 2**-8
    s = np.array([[100, -20000, 30, 32767], [1, 2, 3, 4]], dtype=np.int16)
    valid = np.array([[True, True, True, False], [False, False, False, False]])
    p = fixed.softmax_fwd(s, 8, valid)
    assert p[0, 3] == 0 and p[1].tolist() == [0, 0, 0, 0]
    assert np.array_equal(p[0, :3], fixed.softmax_fwd(s[:1, :3], 8)[0])
    with pytest.raises(ValueError):
        fixed.softmax_fwd(s, 16)
    with pytest.raises(TypeError):
        fixed.softmax_fwd(s.astype(np.int32), 8)


def test_softmax_bwd_matches_definition_and_float():
    rng = np.random.default_rng(4)
    s = fixed.quantize(rng.normal(size=(4, 5, 40)), 10)
    P = fixed.softmax_fwd(s, 10)
    dp_real = rng.normal(scale=0.5, size=P.shape)
    frac_dp, frac_ds, seed = 13, 14, 99
    dP = fixed.quantize(dp_real, frac_dp)
    dS = fixed.softmax_bwd(P, dP, frac_dp, frac_ds, seed)
    # Row-by-row exact definition with Python ints and the flat row-major SR index.
    flat_p, flat_dp = P.reshape(-1, 40).tolist(), dP.reshape(-1, 40).tolist()
    expect = []
    for r, (prow, dprow) in enumerate(zip(flat_p, flat_dp, strict=True)):
        dot = sum(a * b for a, b in zip(prow, dprow, strict=True))
        for j in range(40):
            acc = prow[j] * ((dprow[j] << 15) - dot)
            expect.append(sr_py(acc, frac_dp + 30 - frac_ds, seed, r * 40 + j))
    assert dS.reshape(-1).tolist() == expect
    # Against autograd of softmax at the same probabilities: dS = P * (dP - sum(P * dP)).
    p_t = torch.from_numpy(P / 2.0**15)
    dp_t = torch.from_numpy(fixed.dequantize(dP, frac_dp, np.float64))
    ref = p_t * (dp_t - (p_t * dp_t).sum(-1, keepdim=True))
    assert np.abs(fixed.dequantize(dS, frac_ds, np.float64) - ref.numpy()).max() <= 2.0**-frac_ds


def test_softmax_bwd_zero_probability_gives_zero_gradient():
    P = np.array([[32767, 0, 0]], dtype=np.int16)
    dP = np.array([[100, -3000, 32767]], dtype=np.int16)
    for seed in range(20):
        assert fixed.softmax_bwd(P, dP, 8, 8, seed)[0, 1:].tolist() == [0, 0]


def test_qtensor_validates():
    q = fixed.QTensor.from_float(np.array([0.1, -2.0]))
    assert q.data.dtype == np.int16 and q.frac == fixed.choose_frac(2.0)
    assert np.allclose(q.to_float(), [0.1, -2.0], atol=2.0**-q.frac)
    with pytest.raises(TypeError):
        fixed.QTensor(np.zeros(3, np.int32), 4)
    with pytest.raises(ValueError):
        fixed.QTensor(np.zeros(3, np.int16), 99)
