"""Layer kernels (linear, LayerNorm, GELU, add) and frac control: edge cases and conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as tf

from trilevel.intref import blocks, layers, luts
from trilevel.intref.fixed import QTensor, choose_frac, quantize, requantize
from trilevel.intref.fracs import FracController, calibrate, clamp_frac

FWD_TOL = 0.005  # as in test_intref_kernels / docs/numerics.md §2.13
GRAD_TOL = 0.01


def q(a, frac=None) -> QTensor:
    return QTensor.from_float(np.asarray(a, dtype=np.float64), frac)


def f64(x: QTensor) -> np.ndarray:
    return x.to_float(np.float64)


def rel_err(got, ref) -> float:
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize(("batch", "length", "din", "dout"), [(3, 17, 64, 10), (1, 197, 768, 192)])
def test_linear_matches_torch_and_accumulates_micro_batches(batch, length, din, dout):
    rng = np.random.default_rng(din)
    x, b = q(rng.normal(size=(batch, length, din))), q(rng.normal(size=dout))
    w = q(0.05 * rng.normal(size=(dout, din)))
    params = {"weight": w, "bias": b}
    fracs = calibrate(lambda f: layers.linear_fwd(x, params, f)[1], layers.LINEAR_FWD_FRACS)
    y, _, saved = layers.linear_fwd(x, params, fracs)
    xt, wt, bt = (torch.tensor(f64(a), requires_grad=True) for a in (x, w, b))
    ref = tf.linear(xt, wt, bt)
    assert rel_err(f64(y), ref) < FWD_TOL
    dy = q(rng.normal(size=y.data.shape))
    ref.backward(torch.tensor(f64(dy)))
    grads = {"weight": np.zeros(w.data.shape, np.int64), "bias": np.zeros(dout, np.int64)}
    dx_frac = choose_frac(float(xt.grad.abs().max()))
    dx, stats, gf = layers.linear_bwd(dy, saved, params, grads, {"dx": dx_frac}, seed=3)
    assert rel_err(f64(dx), xt.grad) < GRAD_TOL
    # dW and db are exact integer sums: equal to the float gradient up to float64 rounding.
    assert np.allclose(grads["weight"] * 2.0 ** -gf["weight"], wt.grad.numpy(), rtol=1e-9, atol=0)
    assert np.allclose(grads["bias"] * 2.0 ** -gf["bias"], bt.grad.numpy(), rtol=1e-9, atol=0)
    # A second micro-batch with the same fracs adds exactly.
    before = grads["weight"].copy()
    layers.linear_bwd(dy, saved, params, grads, {"dx": dx_frac}, seed=3, need_dx=False)
    assert np.array_equal(grads["weight"], 2 * before)
    assert stats["dx"] <= 32767


def test_linear_saturates_and_reports_pre_saturation_max():
    x = QTensor(np.full((1, 2, 4), 30000, np.int16), 8)
    w = QTensor(np.full((3, 4), 30000, np.int16), 14)
    y, stats, _ = layers.linear_fwd(x, {"weight": w}, {"y": 10})
    assert np.all(y.data == 32767)
    exact = 4 * 30000 * 30000 >> (8 + 14 - 10)
    assert stats["y"] == exact > 32767
    # The host's rule moves the frac so the value fits next time.
    assert clamp_frac("y", FracController({"y": 10}).fracs["y"]) == 10
    ctrl = FracController({"y": 10})
    ctrl.update(stats)
    y2, stats2, _ = layers.linear_fwd(x, {"weight": w}, {"y": ctrl["y"]})
    assert stats2["y"] < 2**14 and np.all(y2.data < 32767)


def test_linear_rejects_bad_shapes_and_missing_fracs():
    x = QTensor(np.zeros((1, 2, 4), np.int16), 8)
    with pytest.raises(ValueError):
        layers.linear_fwd(x, {"weight": QTensor(np.zeros((3, 5), np.int16), 8)}, {"y": 8})
    with pytest.raises(KeyError):
        layers.linear_fwd(x, {"weight": QTensor(np.zeros((3, 4), np.int16), 8)}, {})
    with pytest.raises(OverflowError):
        grads = {"weight": np.full((3, 4), 2**47 - 1, np.int64)}
        ones = QTensor(np.ones((1, 2, 4), np.int16), 0)
        layers.linear_bwd(QTensor(np.ones((1, 2, 3), np.int16), 0), {"x": ones},
                          {"weight": QTensor(np.ones((3, 4), np.int16), 0)}, grads, {"dx": 0}, 0)


def test_sr_index_spans_the_batch():
    """SR index = flat row-major index over [B, T, D]: image 0 of a batch rounds like a lone image."""
    rng = np.random.default_rng(5)
    w = q(0.1 * rng.normal(size=(8, 16)))
    dy = q(rng.normal(size=(2, 5, 8)))
    x = q(rng.normal(size=(2, 5, 16)))
    grads = {"weight": np.zeros((8, 16), np.int64)}
    both, _, _ = layers.linear_bwd(dy, {"x": x}, {"weight": w}, grads, {"dx": 16}, seed=9)
    first = {"x": QTensor(x.data[:1], x.frac)}
    one, _, _ = layers.linear_bwd(QTensor(dy.data[:1], dy.frac), first, {"weight": w},
                                  {"weight": np.zeros((8, 16), np.int64)}, {"dx": 16}, seed=9)
    assert np.array_equal(both.data[:1], one.data)
    acc = np.einsum("bto,od->btd", dy.data.astype(np.int64), w.data.astype(np.int64))
    expect = requantize(acc, dy.frac + w.frac - 16, "sr", layers.subseed(9, 0))
    assert np.array_equal(both.data, expect)


def torch_ln(x, g, b):
    return tf.layer_norm(x, (x.shape[-1],), g, b, 1e-6)


def ln_case(dim: int, constant_row: bool):
    rng = np.random.default_rng(dim)
    xf = rng.normal(size=(2, 9, dim))
    xf[0, 0, 3] = 60.0  # an outlier channel: x_hat reaches ~sqrt(D)
    if constant_row:
        xf[1, 1] = 0.75  # variance 0: output = beta
    x, g, b = q(xf), q(1 + 0.2 * rng.normal(size=dim)), q(0.1 * rng.normal(size=dim))
    params = {"weight": g, "bias": b}
    fracs = calibrate(lambda f: layers.layernorm_fwd(x, params, f)[1], layers.LAYERNORM_FWD_FRACS)
    y, _, saved = layers.layernorm_fwd(x, params, fracs)
    xt, gt, bt = (torch.tensor(f64(a), requires_grad=True) for a in (x, g, b))
    return rng, x, params, y, saved, (xt, gt, bt), torch_ln(xt, gt, bt)


@pytest.mark.parametrize("dim", [64, 192, 768])
def test_layernorm_fwd_matches_torch_with_outlier_and_constant_rows(dim):
    _, _, params, y, saved, _, ref = ln_case(dim, constant_row=True)
    assert rel_err(f64(y), ref) < FWD_TOL
    b = params["bias"]
    assert np.array_equal(y.data[1, 1], requantize(b.data.astype(np.int64), b.frac - y.frac, "rne"))
    assert np.abs(saved["xhat"]).max() < 32767  # x_hat never saturates (§2.7)
    assert np.abs(saved["xhat"]).max() > 2 ** (14 - (15 - layers.ln_xhat_frac(dim)))  # the outlier is large


@pytest.mark.parametrize("dim", [64, 192, 768])
def test_layernorm_bwd_matches_torch(dim):
    rng, _, params, y, saved, (xt, gt, bt), ref = ln_case(dim, constant_row=False)
    dy = q(rng.normal(size=y.data.shape))
    ref.backward(torch.tensor(f64(dy)))
    grads = {"weight": np.zeros(dim, np.int64), "bias": np.zeros(dim, np.int64)}
    last = {}

    def run(f):
        grads["weight"][:] = 0
        grads["bias"][:] = 0
        last["dx"], stats, last["gf"] = layers.layernorm_bwd(dy, saved, params, grads, f, seed=4)
        return stats

    run(calibrate(run, layers.LAYERNORM_BWD_FRACS))
    assert rel_err(f64(last["dx"]), xt.grad) < GRAD_TOL
    assert rel_err(grads["weight"] * 2.0 ** -last["gf"]["weight"], gt.grad) < GRAD_TOL
    assert rel_err(grads["bias"] * 2.0 ** -last["gf"]["bias"], bt.grad) < 1e-9


def test_rsqrt_lookup_relative_error():
    w = np.unique(np.concatenate([np.arange(1, 5000), (1.37 ** np.arange(20, 130)).astype(np.int64)]))
    rs, k = layers.rsqrt_lookup(w)
    approx = rs * 2.0 ** -(luts.RSQRT_FRAC + k)
    assert np.all(np.abs(approx * np.sqrt(w) - 1) < 2.8e-4)  # §2.7 bound: 0.25/1024 + 2**-15
    assert np.all(w >> (2 * k) < 1 << luts.RSQRT_BITS)


def test_gelu_matches_torch_and_saturates_outside_range():
    rng = np.random.default_rng(8)
    edges = [-40.0, -8.5, -8.0, 8.0, 9.0, 63.0]
    hf = np.concatenate([rng.normal(scale=3, size=500), edges]).reshape(1, 1, -1)
    h = q(hf, 9)  # range +-64
    y, stats, saved = layers.gelu_fwd(h, {"y": 9})
    ht = torch.tensor(f64(h), requires_grad=True)
    ref = tf.gelu(ht)
    assert np.abs(f64(y) - ref.detach().numpy()).max() <= 0.242 * 2**-8 + 2**-10  # §2.8 bound + rounding
    assert np.all(f64(y)[hf >= 8] == f64(h)[hf >= 8])  # x * 1 exactly
    assert np.all(y.data[hf < -8] == 0)
    dy = q(rng.normal(size=hf.shape))
    ref.backward(torch.tensor(f64(dy)))
    dx, _ = layers.gelu_bwd(dy, saved, {"dx": 12}, seed=2)
    assert np.abs(f64(dx) - ht.grad.numpy()).max() <= np.abs(f64(dy)).max() * 0.8 * 2**-8 + 2**-12
    assert np.all(dx.data[hf < -8] == 0)


def test_gelu_index_cells():
    h = np.array([-32768, -1025, -1024, -1, 0, 1, 1023, 1024, 32767], np.int16)
    assert layers.gelu_index(h, 7).tolist() == [0, 0, 0, 1023, 1024, 1025, 2047, 2047, 2047]
    assert layers.gelu_index(np.array([3], np.int16), 0).tolist() == [1024 + 3 * 128]
    assert layers.gelu_index(np.array([-1], np.int16), 12).tolist() == [1023]  # floor


def test_add_aligns_then_rounds_once():
    a = QTensor(np.array([3, -3, 100], np.int16), 2)
    b = QTensor(np.array([1, 1, -32768], np.int16), 4)
    out, stats = layers.add(a, b, 3)
    # exact sums at frac 4: 13, -11, 400 - 32768; RNE to frac 3.
    assert out.data.tolist() == requantize(np.array([13, -11, 400 - 32768]), 1, "rne").tolist()
    assert stats["y"] == abs(400 - 32768) >> 1


def test_align_is_exact_left_and_rne_right():
    v = np.array([5, -5, 6, 7])
    assert layers.align(v, 2, 5).tolist() == [40, -40, 48, 56]
    assert layers.align(v, 3, 2).tolist() == [2, -2, 3, 4]  # 2.5 -> 2, -2.5 -> -2, 3, 3.5 -> 4
    rows = layers.align(np.array([[6], [6]]), 3, np.array([[2], [5]]))
    assert rows.ravel().tolist() == [3, 24]


def test_frac_controller_and_limits():
    ctrl = FracController({"s": 12, "out": 8}, decay_steps=2)
    ctrl.update({"s": 10, "out": 40000})  # tiny scores would want frac > 15: clamped
    assert ctrl["s"] == 12 and ctrl["out"] == 8 - 2  # "s" waits one more step before growing
    ctrl.update({"s": 10})
    assert ctrl["s"] == 15
    assert ctrl.view("", ["out"]) == {"out": 6}
    assert clamp_frac("blocks.3.attn.s", 30) == 15


def test_attention_all_equal_scores_give_uniform_probabilities():
    rng = np.random.default_rng(12)
    dim, heads = 64, 4
    params = {"norm1.weight": q(np.ones(dim)), "norm1.bias": q(np.zeros(dim)),
              "attn.qkv.weight": QTensor(np.zeros((3 * dim, dim), np.int16), 10),
              "attn.qkv.bias": q(np.concatenate([np.zeros(2 * dim), rng.normal(size=dim)])),
              "attn.proj.weight": q(0.1 * rng.normal(size=(dim, dim))), "attn.proj.bias": q(np.zeros(dim))}
    x = q(rng.normal(size=(2, 17, dim)))
    fracs = {"ln": 12, "qkv": 12, "s": 15, "ctx": 12, "out": 12}
    _, _, saved = blocks.attn_block_fwd(x, params, fracs, heads)
    probs = saved["probs"]
    assert np.all(probs == probs[0, 0, 0, 0])  # q = k = 0: every score equal
    assert abs(probs[0, 0, 0, 0] / 2**15 - 1 / 17) < 2**-8
    grads = {k: np.zeros(v.data.shape, np.int64) for k, v in params.items()}
    dout = q(rng.normal(size=(2, 17, dim)))
    bwd_fracs = dict.fromkeys(blocks.ATTN_BWD_FRACS, 12)
    dx, stats, _ = blocks.attn_block_bwd(dout, saved, params, grads, bwd_fracs, seed=1)
    assert dx.data.shape == x.data.shape and set(stats) == set(blocks.ATTN_BWD_FRACS)


def test_attention_rejects_bad_connection_lists():
    x = QTensor(np.zeros((1, 5, 8), np.int16), 8)
    with pytest.raises(ValueError):
        blocks.connection_mask(np.zeros((1, 5, 2), np.int64), 1, 5, 1)  # needs T - 1 rows
    with pytest.raises(ValueError):
        blocks.connection_mask(np.full((1, 4, 2), 5), 1, 5, 1)
    with pytest.raises(ValueError):
        blocks.attn_block_fwd(x, {}, {"ln": 8, "qkv": 8, "s": 16, "ctx": 8, "out": 8}, 2)


def test_attn_scale():
    assert blocks.attn_scale(16) == (1, 2) and blocks.attn_scale(64) == (1, 3)
    assert blocks.attn_scale(1) == (1, 0)
    mult, extra = blocks.attn_scale(32)
    assert extra == 15 and abs(mult / 2**15 - 32**-0.5) < 2**-16
    assert quantize(np.array([0.5]), 1).tolist() == [1]
