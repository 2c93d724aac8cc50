"""Integer reference kernels vs float PyTorch autograd of the same layers (docs/numerics.md §2.13)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as tf

from trilevel.config import CONFIGS
from trilevel.intref import blocks
from trilevel.intref.fixed import QTensor
from trilevel.intref.fracs import calibrate

# Tolerances of the integer reference vs float64 PyTorch on the same (dequantized) inputs, as a
# fraction of the reference tensor's max-abs, with fracs calibrated from the kernel's own stats.
FWD_TOL = 0.005
GRAD_TOL = 0.01


def q(a: np.ndarray) -> QTensor:
    return QTensor.from_float(np.asarray(a, dtype=np.float64))


def t(x: QTensor, grad: bool = True) -> torch.Tensor:
    return torch.tensor(x.to_float(np.float64), requires_grad=grad)


def rel_err(got: np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def zero_grads(params: dict[str, QTensor]) -> dict[str, np.ndarray]:
    return {k: np.zeros(v.data.shape, np.int64) for k, v in params.items()}


def acc_value(grads: dict[str, np.ndarray], fracs: dict[str, int], key: str) -> np.ndarray:
    return grads[key] * 2.0 ** -fracs[key]


def attn_params(rng: np.random.Generator, dim: int) -> dict[str, QTensor]:
    return {"norm1.weight": q(1 + 0.1 * rng.normal(size=dim)), "norm1.bias": q(0.05 * rng.normal(size=dim)),
            "attn.qkv.weight": q(0.06 * rng.normal(size=(3 * dim, dim))),
            "attn.qkv.bias": q(0.02 * rng.normal(size=3 * dim)),
            "attn.proj.weight": q(0.06 * rng.normal(size=(dim, dim))),
            "attn.proj.bias": q(0.02 * rng.normal(size=dim))}


def mlp_params(rng: np.random.Generator, dim: int, hidden: int) -> dict[str, QTensor]:
    return {"norm2.weight": q(1 + 0.1 * rng.normal(size=dim)), "norm2.bias": q(0.05 * rng.normal(size=dim)),
            "mlp.fc1.weight": q(0.06 * rng.normal(size=(hidden, dim))),
            "mlp.fc1.bias": q(0.02 * rng.normal(size=hidden)),
            "mlp.fc2.weight": q(0.04 * rng.normal(size=(dim, hidden))),
            "mlp.fc2.bias": q(0.02 * rng.normal(size=dim))}


def random_conn(rng: np.random.Generator, batch: int, length: int, keep: int) -> np.ndarray:
    """Connection lists [B, T - 1, keep + 1]: [CLS] key first, then `keep` ascending patch keys."""
    rows = [[np.concatenate([[0], np.sort(rng.choice(np.arange(1, length), keep, replace=False))])
             for _ in range(length - 1)] for _ in range(batch)]
    return np.array(rows, dtype=np.int64)


def torch_attn(x, p, heads, conn):
    batch, length, dim = x.shape
    z = tf.layer_norm(x, (dim,), p["norm1.weight"], p["norm1.bias"], 1e-6)
    qkv = tf.linear(z, p["attn.qkv.weight"], p["attn.qkv.bias"]).reshape(batch, length, 3, heads, -1)
    qh, kh, vh = qkv.permute(2, 0, 3, 1, 4)
    scores = (qh * (dim // heads) ** -0.5) @ kh.transpose(-2, -1)
    if conn is not None:
        mask = torch.zeros(batch, length, length, dtype=torch.bool)
        mask[:, :1] = True
        mask[:, 1:].scatter_(-1, torch.from_numpy(conn), True)
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
    probs = scores.softmax(-1)
    ctx = (probs @ vh).transpose(1, 2).reshape(batch, length, dim)
    return x + tf.linear(ctx, p["attn.proj.weight"], p["attn.proj.bias"]), probs


def torch_mlp(x, p):
    z = tf.layer_norm(x, (x.shape[-1],), p["norm2.weight"], p["norm2.bias"], 1e-6)
    h = tf.gelu(tf.linear(z, p["mlp.fc1.weight"], p["mlp.fc1.bias"]))
    return x + tf.linear(h, p["mlp.fc2.weight"], p["mlp.fc2.bias"])


def run_backward(bwd, dout, saved, params, keys, seed=11):
    """Calibrate the backward fracs from its own stats, then run it once more with fresh accumulators."""
    last = {}

    def run(fracs):
        grads = zero_grads(params)
        dx, stats, grad_fracs = bwd(dout, saved, params, grads, fracs, seed)
        last.update(dx=dx, grads=grads, grad_fracs=grad_fracs)
        return stats

    run(calibrate(run, keys))
    return last["dx"], last["grads"], last["grad_fracs"]


def check_backward(dx, grads, grad_fracs, dout, x_t, params_t):
    # Compare the branch gradient (dx minus the identity skip path) so the check is not dominated by dout.
    skip = dout.to_float(np.float64)
    assert rel_err(dx.to_float(np.float64) - skip, x_t.grad.numpy() - skip) < GRAD_TOL
    for name, p in params_t.items():
        assert rel_err(acc_value(grads, grad_fracs, name), p.grad) < GRAD_TOL, name


ATTN_CASES = [("demo", 2, 17, None), ("demo", 3, 17, 8), ("deit_tiny", 1, 197, None),
              ("deit_tiny", 1, 139, None), ("deit_tiny", 1, 98, 48), ("deit_tiny", 1, 69, 34)]


@pytest.mark.parametrize(("model", "batch", "length", "keep"), ATTN_CASES)
def test_attn_block_matches_torch(model, batch, length, keep):
    cfg = CONFIGS[model]
    rng = np.random.default_rng(length + batch)
    params = attn_params(rng, cfg.embed_dim)
    x = q(rng.normal(size=(batch, length, cfg.embed_dim)))
    conn = None if keep is None else random_conn(rng, batch, length, keep)
    fracs = calibrate(lambda f: blocks.attn_block_fwd(x, params, f, cfg.num_heads, conn)[1],
                      blocks.ATTN_FWD_FRACS)
    out, _, saved = blocks.attn_block_fwd(x, params, fracs, cfg.num_heads, conn)

    params_t = {k: t(v) for k, v in params.items()}
    x_t = t(x)
    ref, probs = torch_attn(x_t, params_t, cfg.num_heads, conn)
    assert rel_err(out.to_float(np.float64), ref) < FWD_TOL
    attn_sum = saved["attn_sum"] / 2.0**15
    assert rel_err(attn_sum, probs.sum(1)) < FWD_TOL
    if conn is not None:  # dropped connections carry exactly zero probability
        assert np.all(attn_sum[~blocks.connection_mask(conn, batch, length, 1)] == 0)

    dout = q(0.01 * rng.normal(size=out.data.shape))
    ref.backward(t(dout, grad=False))
    dx, grads, grad_fracs = run_backward(blocks.attn_block_bwd, dout, saved, params, blocks.ATTN_BWD_FRACS)
    check_backward(dx, grads, grad_fracs, dout, x_t, params_t)


MLP_CASES = [("demo", 4, 17), ("deit_tiny", 1, 197), ("deit_tiny", 2, 69)]


@pytest.mark.parametrize(("model", "batch", "length"), MLP_CASES)
def test_mlp_block_matches_torch(model, batch, length):
    cfg = CONFIGS[model]
    rng = np.random.default_rng(length * 7 + batch)
    params = mlp_params(rng, cfg.embed_dim, cfg.mlp_hidden)
    x = q(rng.normal(size=(batch, length, cfg.embed_dim)))
    fracs = calibrate(lambda f: blocks.mlp_block_fwd(x, params, f)[1], blocks.MLP_FWD_FRACS)
    out, _, saved = blocks.mlp_block_fwd(x, params, fracs)
    params_t = {k: t(v) for k, v in params.items()}
    x_t = t(x)
    ref = torch_mlp(x_t, params_t)
    assert rel_err(out.to_float(np.float64), ref) < FWD_TOL
    dout = q(0.01 * rng.normal(size=out.data.shape))
    ref.backward(t(dout, grad=False))
    dx, grads, grad_fracs = run_backward(blocks.mlp_block_bwd, dout, saved, params, blocks.MLP_BWD_FRACS)
    check_backward(dx, grads, grad_fracs, dout, x_t, params_t)


def test_block_matches_golden_model_block():
    """The golden model's own Block (float64, sparse 'gather' attention) vs attn + MLP kernels."""
    from trilevel.model import build_model

    cfg = CONFIGS["demo"]
    rng = np.random.default_rng(21)
    block = build_model("demo").blocks[0].double()
    params = {**attn_params(rng, cfg.embed_dim), **mlp_params(rng, cfg.embed_dim, cfg.mlp_hidden)}
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.copy_(torch.from_numpy(params[name].to_float(np.float64)))
    batch, length = 2, 13
    x = q(rng.normal(size=(batch, length, cfg.embed_dim)))
    conn = random_conn(rng, batch, length, 5)
    heads = cfg.num_heads
    fa = calibrate(lambda f: blocks.attn_block_fwd(x, params, f, heads, conn)[1], blocks.ATTN_FWD_FRACS)
    mid, _, saved_a = blocks.attn_block_fwd(x, params, fa, cfg.num_heads, conn)
    fm = calibrate(lambda f: blocks.mlp_block_fwd(mid, params, f)[1], blocks.MLP_FWD_FRACS)
    out, _, saved_m = blocks.mlp_block_fwd(mid, params, fm)

    x_t = t(x)
    h, attn_map = block.attn(block.norm1(x_t), torch.from_numpy(conn), 1, "gather", True)
    mid_t = x_t + h
    out_t = mid_t + block.mlp(block.norm2(mid_t))
    assert rel_err(mid.to_float(np.float64), mid_t) < FWD_TOL
    assert rel_err(out.to_float(np.float64), out_t) < 2 * FWD_TOL  # two blocks' rounding
    assert rel_err(saved_a["attn_sum"] / 2.0**15 / cfg.num_heads, attn_map) < FWD_TOL

    dout = q(0.01 * rng.normal(size=out.data.shape))
    out_t.backward(t(dout, grad=False))
    # Backward fracs: calibrate each half on its own, then chain.
    fm_b = calibrate(lambda f: blocks.mlp_block_bwd(dout, saved_m, params, zero_grads(params), f, 1)[1],
                     blocks.MLP_BWD_FRACS)
    grads = zero_grads(params)
    dmid, _, gf_m = blocks.mlp_block_bwd(dout, saved_m, params, grads, fm_b, 1)
    fa_b = calibrate(lambda f: blocks.attn_block_bwd(dmid, saved_a, params, zero_grads(params), f, 2)[1],
                     blocks.ATTN_BWD_FRACS)
    dx, _, gf_a = blocks.attn_block_bwd(dmid, saved_a, params, grads, fa_b, 2)
    skip = dout.to_float(np.float64)
    assert rel_err(dx.to_float(np.float64) - skip, x_t.grad.numpy() - skip) < 2 * GRAD_TOL
    for name, p in block.named_parameters():
        assert rel_err(acc_value(grads, {**gf_m, **gf_a}, name), p.grad) < 2 * GRAD_TOL, name
