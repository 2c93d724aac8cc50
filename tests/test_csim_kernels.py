"""Every C-sim kernel (hls/src/*.cpp through trilevel.csim) equals the integer reference trilevel.intref
bit for bit: outputs, saved state, stats, gradient accumulators and their fracs, at the demo and
DeiT-Tiny shapes and the pruned token counts 197 -> 139 -> 98 -> 69."""

from __future__ import annotations

import numpy as np
import pytest

from trilevel import csim
from trilevel.accel.kernel_args import ATTN_PARAMS, MLP_PARAMS, attn_param_shapes, mlp_param_shapes
from trilevel.config import CONFIGS, keep_count
from trilevel.intref import blocks, layers, optim, topk
from trilevel.intref.fixed import QTensor

DEMO, TINY = CONFIGS["demo"], CONFIGS["deit_tiny"]
TOKENS = (197, 139, 98, 69)  # DeiT-Tiny at R_T = 0.7 after blocks 4, 7, 10


@pytest.fixture(scope="module")
def lib() -> csim.CSim:
    return csim.CSim(csim.build())


def qt(rng: np.random.Generator, shape: tuple[int, ...], frac: int, amp: int = 8000) -> QTensor:
    return QTensor(rng.integers(-amp, amp + 1, shape).astype(np.int16), frac)


def block_params(rng: np.random.Generator, dim: int, hidden: int) -> dict[str, QTensor]:
    """Random block parameters with the golden model's names and realistic magnitudes."""
    shapes = dict(
        zip(ATTN_PARAMS + MLP_PARAMS, attn_param_shapes(dim) + mlp_param_shapes(dim, hidden), strict=True)
    )
    params = {}
    for name, shape in shapes.items():
        if name.startswith("norm") and name.endswith("weight"):
            params[name] = QTensor(rng.integers(12000, 20000, shape).astype(np.int16), 14)
        else:
            params[name] = qt(rng, shape, 16 if name.endswith("weight") else 15, 3000)
    return params


def zero_grads(params: dict[str, QTensor]) -> dict[str, np.ndarray]:
    return {name: np.zeros(p.data.shape, np.int64) for name, p in params.items()}


def random_conn(rng: np.random.Generator, batch: int, length: int, keep: int) -> np.ndarray:
    """conn [B, T - 1, keep + 1]: key 0 ([CLS]) then `keep` distinct patch keys, ascending."""
    rows = [
        np.sort(rng.choice(np.arange(1, length), keep, replace=False)) for _ in range(batch * (length - 1))
    ]
    keys = np.asarray(rows).reshape(batch, length - 1, keep)
    return np.concatenate([np.zeros((batch, length - 1, 1), np.int64), keys], axis=-1)


def assert_same(got: object, want: object, where: str = "") -> None:
    """Recursive bit-exact comparison of kernel results (QTensors, arrays, dicts, scalars)."""
    if isinstance(want, QTensor):
        assert isinstance(got, QTensor) and got.frac == want.frac, f"{where}: frac {got} vs {want.frac}"
        np.testing.assert_array_equal(got.data, want.data, err_msg=where)
    elif isinstance(want, np.ndarray):
        np.testing.assert_array_equal(np.asarray(got), want, err_msg=where)
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want), f"{where}: {len(got)} items vs {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=False)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, dict):
        for key, value in want.items():
            assert key in got, f"{where}: missing {key!r}"
            assert_same(got[key], value, f"{where}.{key}")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def assert_grads(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert got[name].any(), f"{name}: no gradient accumulated"


# ------------------------------------------------------------------------------------------- linear
@pytest.mark.parametrize(
    ("batch", "tokens", "din", "dout"),
    [
        (4, DEMO.num_tokens, DEMO.embed_dim, DEMO.num_classes),  # demo head
        (2, DEMO.num_patches, DEMO.patch_size**2 * DEMO.in_chans, DEMO.embed_dim),  # demo patch embedding
        (
            1,
            TINY.num_patches,
            TINY.patch_size**2 * TINY.in_chans,
            TINY.embed_dim,
        ),  # DeiT-Tiny patch embedding
        *[(1, t, 48, 40) for t in TOKENS],
    ],
)
def test_linear_matches_reference(lib, batch, tokens, din, dout):
    rng = np.random.default_rng(tokens * 7 + din)
    x = qt(rng, (batch, tokens, din), 12)
    params = {"weight": qt(rng, (dout, din), 16, 3000), "bias": qt(rng, (dout,), 13, 3000)}
    residual = qt(rng, (batch, tokens, dout), 11)
    for res, frac_y in ((None, 12), (residual, 11), (None, 16)):  # frac 16: many outputs saturate
        got = lib.linear_fwd(x, params, {"y": frac_y}, res)
        want = layers.linear_fwd(x, params, {"y": frac_y}, res)
        assert_same(got[:2], want[:2], "linear_fwd")
    dy = qt(rng, (batch, tokens, dout), 14, 4000)
    grads_c, grads_r = zero_grads(params), zero_grads(params)
    for step in range(2):  # the accumulators ADD over micro-batches
        got = lib.linear_bwd(dy, {"x": x}, params, grads_c, {"dx": 13}, seed=100 + step)
        want = layers.linear_bwd(dy, {"x": x}, params, grads_r, {"dx": 13}, seed=100 + step)
        assert_same(got, want, "linear_bwd")
    assert_grads(grads_c, grads_r)
    got = lib.linear_bwd(dy, {"x": x}, {"weight": params["weight"]}, grads_c, {}, seed=1, need_dx=False)
    want = layers.linear_bwd(dy, {"x": x}, {"weight": params["weight"]}, grads_r, {}, seed=1, need_dx=False)
    assert got[0] is None and want[0] is None
    assert_same(got[1:], want[1:], "linear_bwd without dx")
    assert_grads(grads_c, grads_r)


def test_linear_bwd_48_bit_overflow_is_reported(lib):
    rng = np.random.default_rng(5)
    x = QTensor(np.full((1, 64, 32), 32767, np.int16), 10)
    params = {"weight": qt(rng, (8, 32), 14)}
    dy = QTensor(np.full((1, 64, 8), 32767, np.int16), 10)
    grads = {"weight": np.full((8, 32), 2**47 - 2**30, np.int64)}
    with pytest.raises(OverflowError, match="48 bits"):
        lib.linear_bwd(dy, {"x": x}, params, grads, {"dx": 10}, seed=0)
    with pytest.raises(OverflowError):
        layers.linear_bwd(
            dy, {"x": x}, params, {"weight": np.full((8, 32), 2**47 - 2**30, np.int64)}, {"dx": 10}, 0
        )


# ---------------------------------------------------------------------------------------- layernorm
@pytest.mark.parametrize(("dim", "tokens"), [(DEMO.embed_dim, DEMO.num_tokens), (TINY.embed_dim, 69)])
def test_layernorm_matches_reference(lib, dim, tokens):
    rng = np.random.default_rng(dim)
    x = qt(rng, (2, tokens, dim), 10, 9000)
    x.data[0, 0] = 77  # a constant row: zero variance, the eps term alone
    params = {
        "weight": QTensor(rng.integers(12000, 20000, dim).astype(np.int16), 14),
        "bias": qt(rng, (dim,), 13),
    }
    got, want = lib.layernorm_fwd(x, params, {"y": 12}), layers.layernorm_fwd(x, params, {"y": 12})
    assert_same(got, want, "layernorm_fwd")
    dy, residual = qt(rng, (2, tokens, dim), 13, 5000), qt(rng, (2, tokens, dim), 12, 5000)
    for res in (None, residual):
        grads_c, grads_r = zero_grads(params), zero_grads(params)
        fracs = {"g": 13, "t": 12, "dx": 13}
        got = lib.layernorm_bwd(
            dy, got[2] if isinstance(got[2], dict) else want[2], params, grads_c, fracs, 5, res
        )
        want_b = layers.layernorm_bwd(dy, want[2], params, grads_r, fracs, 5, res)
        assert_same(got, want_b, "layernorm_bwd")
        assert_grads(grads_c, grads_r)
        got = lib.layernorm_fwd(x, params, {"y": 12})


# -------------------------------------------------------------------------------------------- MLP
MLP_FWD = {"ln": 12, "h": 11, "a": 11, "out": 10}
MLP_BWD = {"da": 14, "dh": 14, "dln": 14, "ln_g": 14, "ln_t": 12, "dx": 14}


@pytest.mark.parametrize(
    ("cfg", "batch", "tokens"),
    [
        (DEMO, 3, DEMO.num_tokens),
        (DEMO, 2, keep_count(0.7, DEMO.num_patches) + 1),
        (TINY, 1, 197),
        (TINY, 1, 69),
    ],
)
def test_mlp_block_matches_reference(lib, cfg, batch, tokens):
    rng = np.random.default_rng(tokens)
    params = block_params(rng, cfg.embed_dim, cfg.mlp_hidden)
    x = qt(rng, (batch, tokens, cfg.embed_dim), 10)
    got = lib.mlp_block_fwd(x, params, MLP_FWD)
    want = blocks.mlp_block_fwd(x, params, MLP_FWD)
    assert_same(got, want, "mlp_block_fwd")
    dout = qt(rng, (batch, tokens, cfg.embed_dim), 14, 4000)
    grads_c, grads_r = zero_grads(params), zero_grads(params)
    got_b = lib.mlp_block_bwd(dout, got[2], params, grads_c, MLP_BWD, seed=31)
    want_b = blocks.mlp_block_bwd(dout, want[2], params, grads_r, MLP_BWD, seed=31)
    assert_same(got_b, want_b, "mlp_block_bwd")
    for name in ("norm2.weight", "mlp.fc1.weight", "mlp.fc2.bias"):
        np.testing.assert_array_equal(grads_c[name], grads_r[name], err_msg=name)
        assert grads_c[name].any()


# -------------------------------------------------------------------------------------- attention
ATTN_FWD = {"ln": 12, "qkv": 11, "s": 8, "ctx": 11, "out": 10}
ATTN_BWD = {"dctx": 14, "dp": 14, "ds": 14, "dqkv": 14, "dln": 14, "ln_g": 14, "ln_t": 12, "dx": 14}
ATTN_CASES = [
    (DEMO, 2, DEMO.num_tokens, None),  # dense
    (DEMO, 2, DEMO.num_tokens, keep_count(0.5, DEMO.num_patches)),  # connection-sparse
    (TINY, 1, 197, None),  # full DeiT-Tiny block, dense
    (TINY, 1, 139, keep_count(0.7, 138)),  # pruned token counts with sparse connections
    (TINY, 1, 98, keep_count(0.5, 97)),
    (TINY, 1, 69, keep_count(0.3, 68)),
]


@pytest.mark.parametrize(("cfg", "batch", "tokens", "keep"), ATTN_CASES)
def test_attn_block_matches_reference(lib, cfg, batch, tokens, keep):
    rng = np.random.default_rng(tokens + (keep or 0))
    params = block_params(rng, cfg.embed_dim, cfg.mlp_hidden)
    heads, dim = cfg.num_heads, cfg.embed_dim
    x = qt(rng, (batch, tokens, dim), 10)
    conn = None if keep is None else random_conn(rng, batch, tokens, keep)
    got = lib.attn_block_fwd(x, params, ATTN_FWD, heads, conn)
    want = blocks.attn_block_fwd(x, params, ATTN_FWD, heads, conn)
    assert_same(got[0], want[0], "out")
    saved_keys = ("z", "qkv", "ctx", "probs", "attn_sum", "ln")
    assert_same({k: got[2][k] for k in saved_keys}, {k: want[2][k] for k in saved_keys}, "saved")
    dout = qt(rng, (batch, tokens, dim), 14, 4000)
    grads_c, grads_r = zero_grads(params), zero_grads(params)
    got_b = lib.attn_block_bwd(dout, got[2], params, grads_c, ATTN_BWD, seed=77)
    want_b = blocks.attn_block_bwd(dout, want[2], params, grads_r, ATTN_BWD, seed=77)
    assert_same(got_b[0], want_b[0], "dx")
    assert_same(got_b[2], want_b[2], "grad_fracs")
    for name in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight"):
        np.testing.assert_array_equal(grads_c[name], grads_r[name], err_msg=name)
        assert grads_c[name].any()
    # Statistics too (sparse: over the kept connections only, the ones the kernels compute).
    assert got[1] == want[1] and got_b[1] == want_b[1]


def test_attn_bwd_accepts_the_reference_saved_state(lib):
    """Backends swap 1:1: the C-sim backward runs from what the reference forward saved (dense), and from
    a sparse saved state that carries only the dense probabilities (gathered back by conn)."""
    rng = np.random.default_rng(11)
    params = block_params(rng, DEMO.embed_dim, DEMO.mlp_hidden)
    x = qt(rng, (2, DEMO.num_tokens, DEMO.embed_dim), 10)
    dout = qt(rng, x.shape, 14, 4000)
    conn = random_conn(rng, 2, DEMO.num_tokens, 6)
    sparse = lib.attn_block_fwd(x, params, ATTN_FWD, DEMO.num_heads, conn)[2]
    sparse_dense_only = {k: v for k, v in sparse.items() if k != "probs_compact"}
    for saved, ref_saved in (
        (blocks.attn_block_fwd(x, params, ATTN_FWD, DEMO.num_heads)[2],) * 2,
        (sparse_dense_only, blocks.attn_block_fwd(x, params, ATTN_FWD, DEMO.num_heads, conn)[2]),
    ):
        grads_c, grads_r = zero_grads(params), zero_grads(params)
        got = lib.attn_block_bwd(dout, saved, params, grads_c, ATTN_BWD, seed=3)
        want = blocks.attn_block_bwd(dout, ref_saved, params, grads_r, ATTN_BWD, seed=3)
        assert_same((got[0], got[2]), (want[0], want[2]), "attn_block_bwd")
        for name in ("norm1.weight", "attn.qkv.weight", "attn.proj.weight"):
            np.testing.assert_array_equal(grads_c[name], grads_r[name], err_msg=name)


def test_attn_rejects_bad_input(lib):
    rng = np.random.default_rng(12)
    params = block_params(rng, DEMO.embed_dim, DEMO.mlp_hidden)
    x = qt(rng, (1, DEMO.num_tokens, DEMO.embed_dim), 10)
    with pytest.raises(ValueError, match="power-of-4"):
        lib.attn_block_fwd(x, params, ATTN_FWD, 2)  # head_dim 32
    with pytest.raises(ValueError, match="conn"):
        lib.attn_block_fwd(x, params, ATTN_FWD, DEMO.num_heads, np.zeros((1, 3, 2), np.int64))
    with pytest.raises(KeyError, match="missing fracs"):
        lib.attn_block_fwd(x, params, {"ln": 12}, DEMO.num_heads)
    with pytest.raises(TypeError, match="QTensor"):
        lib.attn_block_fwd(x.data, params, ATTN_FWD, DEMO.num_heads)


# ------------------------------------------------------------------------------------------ top-k
@pytest.mark.parametrize("tokens", TOKENS + (DEMO.num_tokens,))
def test_topk_prune_matches_reference(lib, tokens):
    rng = np.random.default_rng(tokens)
    attn_sum = rng.integers(0, 3 * 32768, (3, tokens, tokens))
    attn_sum[0] = 5  # all-equal scores: the lower index wins every tie
    n = tokens - 1
    scores = topk.token_scores(attn_sum)
    for k in (1, keep_count(0.7, n), n):
        np.testing.assert_array_equal(lib.topk_tokens(scores, k), topk.topk_tokens(scores, k))
    col_scores = topk.token_scores(attn_sum, has_cls=False)
    np.testing.assert_array_equal(lib.topk_tokens(col_scores, 5), topk.topk_tokens(col_scores, 5))
    for k in (1, keep_count(0.3, n), n):
        for has_cls in (True, False):
            np.testing.assert_array_equal(
                lib.topk_connections(attn_sum, k, has_cls), topk.topk_connections(attn_sum, k, has_cls)
            )


# -------------------------------------------------------------------------------------- optimizer
def test_adamw_and_sgdm_match_reference_bit_for_bit(lib):
    rng = np.random.default_rng(8)
    shape = (192, 48)
    master = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    state_c = [master.copy(), np.zeros(shape, np.float32), np.zeros(shape, np.float32)]
    state_r = [a.copy() for a in state_c]
    for step in range(1, 4):
        acc = rng.integers(-(2**40), 2**40, shape)
        acc[0, :4] = 0
        s = optim.AdamWScalars.at(step, lr=5e-4)
        got = lib.adamw_step(*state_c, acc, 38, 16, s)
        want = optim.adamw_step(*state_r, acc, 38, 16, s)
        assert_same(got, want, f"adamw step {step}")
        for a, b in zip(state_c, state_r, strict=False):
            np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    buf_c, buf_r = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    for first in (True, False, False):
        acc = rng.integers(-(2**36), 2**36, shape)
        s = optim.SgdmScalars.at(0.05, momentum=0.9, weight_decay=1e-4)
        got = lib.sgdm_step(state_c[0], buf_c, acc, 33, 8, s, first)
        want = optim.sgdm_step(state_r[0], buf_r, acc, 33, 8, s, first)
        assert_same(got, want, "sgdm")
        np.testing.assert_array_equal(buf_c.view(np.uint32), buf_r.view(np.uint32))
    zeros = np.zeros(8, np.float32)
    got = lib.sgdm_step(
        zeros, np.zeros(8, np.float32), np.zeros(8, np.int64), 0, 1, optim.SgdmScalars.at(0.1)
    )
    assert got.frac == optim.requantize_master(np.zeros(8, np.float32)).frac and not got.data.any()


def test_optimizer_rejects_bad_state(lib):
    acc = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="float32"):
        lib.adamw_step(
            np.zeros(4),
            np.zeros(4, np.float32),
            np.zeros(4, np.float32),
            acc,
            0,
            1,
            optim.AdamWScalars.at(1, 1e-3),
        )
    with pytest.raises(ValueError, match="NaN"):
        lib.sgdm_step(
            np.array([np.nan, 0, 0, 0], np.float32),
            np.zeros(4, np.float32),
            acc,
            0,
            1,
            optim.SgdmScalars.at(0.1),
        )
