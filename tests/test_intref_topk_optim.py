"""Token/connection selection vs the golden model, and the optimizer kernels vs torch.optim."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trilevel.config import keep_count
from trilevel.intref import optim, topk
from trilevel.intref.fixed import QTensor, choose_frac, topk_select
from trilevel.model import build_model


def random_attn_sum(rng, batch, length, heads=3, ties=False):
    """A head-sum of `heads` softmax-like rows at frac 15 (integers, optionally with many ties)."""
    if ties:
        return rng.integers(0, 4, size=(batch, length, length)).astype(np.int64) * 1000
    p = rng.dirichlet(np.ones(length), size=(batch, heads, length))
    return np.round(p * 2**15).astype(np.int64).sum(axis=1)


PRUNE_CASES = [(197, True, False), (17, True, True), (16, False, True), (69, True, False)]


@pytest.mark.parametrize(("length", "has_cls", "ties"), PRUNE_CASES)
def test_prune_matches_golden_model(length, has_cls, ties):
    rng = np.random.default_rng(length)
    batch, dim = 2, 8
    attn_sum = random_attn_sum(rng, batch, length, ties=ties)
    x = QTensor(rng.integers(-1000, 1000, size=(batch, length, dim)).astype(np.int16), 8)
    model = build_model("demo", cls_token=has_cls)
    n = length - int(has_cls)
    patch_ids = torch.arange(n).expand(batch, -1)
    # The golden TA-selector ranks the float head-mean; the integer head-sum ranks the same way.
    golden_x, golden_conn, golden_ids = model._ta_select(torch.tensor(x.data, dtype=torch.float64),
                                                         torch.tensor(attn_sum / 3.0), 0.7, 0.7, patch_ids)
    kept, idx, conn = topk.prune(x, attn_sum, 0.7, 0.7, has_cls)
    assert idx.tolist() == golden_ids.tolist()
    assert np.array_equal(kept.data, golden_x.numpy().astype(np.int16))
    assert conn is not None and np.array_equal(conn, golden_conn.numpy())
    k = keep_count(0.7, n)
    assert kept.data.shape == (batch, k + int(has_cls), dim)
    assert conn.shape == (batch, k, keep_count(0.7, k) + int(has_cls))


def test_topk_tokens_and_connections_definition():
    rng = np.random.default_rng(1)
    attn_sum = random_attn_sum(rng, 3, 10, ties=True)
    scores = topk.token_scores(attn_sum, True)
    assert np.array_equal(scores, attn_sum[:, 0, 1:])
    assert np.array_equal(topk.topk_tokens(scores, 4), topk_select(scores, 4))
    conn = topk.topk_connections(attn_sum, 3, has_cls=True)
    assert conn.shape == (3, 9, 4) and np.all(conn[..., 0] == 0)
    for b in range(3):
        for row in range(1, 10):
            assert conn[b, row - 1, 1:].tolist() == (topk_select(attn_sum[b, row, 1:], 3) + 1).tolist()
    # Without [CLS]: every row sparse, column sums as token scores.
    assert np.array_equal(topk.token_scores(attn_sum, False), attn_sum.sum(axis=1))
    assert topk.topk_connections(attn_sum, 10, has_cls=False).shape == (3, 10, 10)
    with pytest.raises(ValueError):
        topk.topk_tokens(scores, 0)


def test_gather_tokens_and_its_backward():
    x = QTensor(np.arange(2 * 6 * 3, dtype=np.int16).reshape(2, 6, 3), 4)
    idx = np.array([[0, 3], [2, 4]])
    kept = topk.gather_tokens(x, idx)
    assert kept.data[:, 0].tolist() == x.data[:, 0].tolist()
    assert kept.data[1, 1:].tolist() == x.data[1, [3, 5]].tolist()
    back = topk.gather_tokens_bwd(kept, idx, 6)
    assert np.array_equal(back.data[:, [0, 1, 4]][0], x.data[0, [0, 1, 4]])
    assert np.all(back.data[0, [2, 3, 5]] == 0)
    sub = topk.gather_attn(np.arange(2 * 36).reshape(2, 6, 6), idx)
    assert sub.shape == (2, 3, 3) and sub[1, 1, 2] == 36 + 3 * 6 + 5


def test_adamw_step_matches_torch():
    rng = np.random.default_rng(3)
    shape, frac, batch = (48, 32), 20, 4
    master = (0.05 * rng.normal(size=shape)).astype(np.float32)
    p = torch.nn.Parameter(torch.tensor(master.copy()))
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    m, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for step in range(1, 6):
        acc = rng.integers(-(2**24), 2**24, size=shape).astype(np.int64)
        p.grad = torch.tensor((acc * 2.0**-frac / batch).astype(np.float32))
        opt.step()
        w = optim.adamw_step(master, m, v, acc, frac, batch, optim.AdamWScalars.at(step, lr=1e-3))
        assert np.allclose(master, p.detach().numpy(), rtol=1e-5, atol=1e-7)
        assert w.frac == choose_frac(float(np.abs(master).max()))
        assert np.abs(w.to_float() - master).max() <= 2.0 ** -(w.frac + 1)
    state = opt.state[p]
    # torch updates m with lerp, this kernel with beta1 * m + (1 - beta1) * g: float32 rounding apart.
    assert np.allclose(m, state["exp_avg"].numpy(), rtol=1e-5, atol=1e-6 * np.abs(m).max())
    assert np.allclose(v, state["exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-6 * np.abs(v).max())


def test_adamw_step_is_deterministic_float32():
    rng = np.random.default_rng(4)
    acc = rng.integers(-(2**30), 2**30, size=100).astype(np.int64)
    runs = []
    for _ in range(2):
        master = np.linspace(-1, 1, 100, dtype=np.float32)
        m, v = np.zeros(100, np.float32), np.zeros(100, np.float32)
        optim.adamw_step(master, m, v, acc, 30, 8, optim.AdamWScalars.at(1, lr=5e-4))
        runs.append((master, m, v))
    assert all(a.dtype == np.float32 for a in runs[0])
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    with pytest.raises(ValueError):
        optim.adamw_step(np.zeros(3, np.float64), np.zeros(3, np.float32), np.zeros(3, np.float32),
                         np.zeros(3, np.int64), 10, 1, optim.AdamWScalars.at(1, lr=1e-3))


def test_sgdm_step_matches_torch():
    rng = np.random.default_rng(5)
    master = rng.normal(size=50).astype(np.float32)
    p = torch.nn.Parameter(torch.tensor(master.copy()))
    opt = torch.optim.SGD([p], lr=0.01, momentum=0.9, weight_decay=1e-4)
    buf = np.zeros(50, np.float32)
    for step in range(4):
        acc = rng.integers(-(2**20), 2**20, size=50).astype(np.int64)
        p.grad = torch.tensor((acc * 2.0**-16 / 2).astype(np.float32))
        opt.step()
        optim.sgdm_step(master, buf, acc, 16, 2, optim.SgdmScalars.at(0.01, 0.9, 1e-4), first=step == 0)
        assert np.allclose(master, p.detach().numpy(), rtol=1e-6, atol=1e-7)
