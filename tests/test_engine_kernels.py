"""Every kernel lowered to engine commands (trilevel.accel.lower) and run through the engine driver on a
simulated board (pynq MMIO/allocate over a non-coherent DDR) equals trilevel.intref bit for bit: outputs,
saved state, statistics and gradient accumulators. Demo shapes on the production and the CI (RTL) engine
configurations; DeiT-T shapes at the pruned token counts with connection lists; independence of the
result from the module schedule (the dependency tokens are sufficient); the C-sim engine once built."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from trilevel.accel import isa, lower
from trilevel.accel.engine import EngineBackend, EngineOverflowError, csim_engine_available
from trilevel.accel.fsim import FunctionalEngine
from trilevel.accel.isa import Module
from trilevel.accel.reference_backend import ReferenceBackend
from trilevel.config import CONFIGS, keep_count
from trilevel.intref import topk
from trilevel.intref.fixed import QTensor

REF = ReferenceBackend()


def assert_same(got: Any, want: Any, what: str = "") -> None:
    """Recursive bit-exact equality of kernel results (QTensors, arrays, dicts, ints)."""
    if isinstance(want, QTensor):
        assert isinstance(got, QTensor) and got.frac == want.frac, what
        got, want = got.data, want.data
    if isinstance(want, tuple | list):
        assert isinstance(got, tuple | list) and len(got) == len(want), what
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{what}[{i}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (what, sorted(got), sorted(want))
        for key in want:
            assert_same(got[key], want[key], f"{what}.{key}")
    elif isinstance(want, np.ndarray) or isinstance(got, np.ndarray):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape, (what, got.shape, want.shape)
        bad = np.argwhere(got != want)
        assert bad.size == 0, f"{what}: {len(bad)} elements differ, first at {bad[:3].tolist()}"
    else:
        assert got == want, (what, got, want)


class Case:
    """Random inputs of one block's kernels (dim, heads, hidden) with plausible fracs."""

    def __init__(self, batch: int, length: int, dim: int, heads: int, hidden: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.batch, self.length, self.dim, self.heads, self.hidden = batch, length, dim, heads, hidden
        self.x = self.q((batch, length, dim), 12)
        d, h = dim, hidden
        shapes = {"norm1.weight": (d,), "norm1.bias": (d,), "attn.qkv.weight": (3 * d, d),
                  "attn.qkv.bias": (3 * d,), "attn.proj.weight": (d, d), "attn.proj.bias": (d,),
                  "norm2.weight": (d,), "norm2.bias": (d,), "mlp.fc1.weight": (h, d), "mlp.fc1.bias": (h,),
                  "mlp.fc2.weight": (d, h), "mlp.fc2.bias": (d,)}
        self.shapes = shapes
        self.params = {n: self.q(s, 14 if n.endswith("weight") else 13,
                                 20000 if n.startswith("norm") and n.endswith("weight") else 3000)
                       for n, s in shapes.items()}

    def q(self, shape: tuple[int, ...], frac: int, scale: int = 3000) -> QTensor:
        return QTensor(self.rng.integers(-scale, scale, size=shape).astype(np.int16), frac)

    def group(self, prefix: tuple[str, ...]) -> dict[str, QTensor]:
        return {n: p for n, p in self.params.items() if n.startswith(prefix)}

    def grads(self, prefix: tuple[str, ...], fresh: bool = False) -> dict[str, np.ndarray]:
        """Accumulators the backward adds to; all zero when `fresh` (a step's first micro-batch)."""
        return {n: np.zeros(s, np.int64) if fresh else self.rng.integers(-1000, 1000, size=s).astype(np.int64)
                for n, s in self.shapes.items() if n.startswith(prefix)}

    def conn(self, keep_attn: float) -> np.ndarray:
        k = keep_count(keep_attn, self.length - 1)
        scores = self.rng.integers(0, 1 << 15, size=(self.batch, self.length, self.length))
        return topk.topk_connections(scores, k)


ATTN_FWD = {"ln": 12, "qkv": 11, "s": 9, "ctx": 12, "out": 11}
ATTN_BWD = {"dctx": 12, "dp": 12, "ds": 14, "dqkv": 12, "dln": 12, "ln_g": 12, "ln_t": 10, "dx": 12}
MLP_FWD = {"ln": 12, "h": 11, "a": 11, "out": 11}
MLP_BWD = {"da": 12, "dh": 12, "dln": 12, "ln_g": 12, "ln_t": 10, "dx": 12}


def both(call: Callable[[Any], Any], engine: EngineBackend) -> tuple[Any, Any]:
    return call(engine), call(REF)


def check_attn(engine: EngineBackend, case: Case, conn: np.ndarray | None, fresh: bool = False) -> None:
    params = case.group(("norm1.", "attn."))
    got, want = both(lambda be: be.attn_block_fwd(case.x, params, ATTN_FWD, case.heads, conn, 1), engine)
    assert_same(got, want, "attn_block_fwd")
    dout = case.q(case.x.shape, 13)
    grads = case.grads(("norm1.", "attn."), fresh)
    g_eng, g_ref = {k: v.copy() for k, v in grads.items()}, {k: v.copy() for k, v in grads.items()}
    got = engine.attn_block_bwd(dout, got[2], params, g_eng, ATTN_BWD, 77)
    want = REF.attn_block_bwd(dout, want[2], params, g_ref, ATTN_BWD, 77)
    assert_same(got, want, "attn_block_bwd")
    assert_same(g_eng, g_ref, "attn grads")


def check_mlp(engine: EngineBackend, case: Case, fresh: bool = False) -> None:
    params = case.group(("norm2.", "mlp."))
    got, want = both(lambda be: be.mlp_block_fwd(case.x, params, MLP_FWD), engine)
    assert_same(got, want, "mlp_block_fwd")
    dout = case.q(case.x.shape, 13)
    grads = case.grads(("norm2.", "mlp."), fresh)
    g_eng, g_ref = {k: v.copy() for k, v in grads.items()}, {k: v.copy() for k, v in grads.items()}
    got = engine.mlp_block_bwd(dout, got[2], params, g_eng, MLP_BWD, 55)
    want = REF.mlp_block_bwd(dout, want[2], params, g_ref, MLP_BWD, 55)
    assert_same(got, want, "mlp_block_bwd")
    assert_same(g_eng, g_ref, "mlp grads")


def check_linear_and_norm(engine: EngineBackend, case: Case) -> None:
    x, dim = case.x, case.dim
    params = {"weight": case.q((3 * dim, dim), 14), "bias": case.q((3 * dim,), 13)}
    for residual in (None, case.q((case.batch, case.length, 3 * dim), 11)):
        for p in (params, {"weight": params["weight"]}):
            got, want = both(lambda be, p=p, r=residual: be.linear_fwd(x, p, {"y": 10}, r), engine)
            assert_same(got, want, "linear_fwd")
    dy = case.q((case.batch, case.length, 3 * dim), 12)
    for need_dx in (True, False):
        grads = {"weight": case.rng.integers(-9, 9, (3 * dim, dim)), "bias": np.arange(3 * dim)}
        g_eng = {k: v.astype(np.int64) for k, v in grads.items()}
        g_ref = {k: v.astype(np.int64) for k, v in grads.items()}
        got = engine.linear_bwd(dy, {"x": x}, params, g_eng, {"dx": 11}, 1234, need_dx)
        want = REF.linear_bwd(dy, {"x": x}, params, g_ref, {"dx": 11}, 1234, need_dx)
        assert_same(got, want, "linear_bwd")
        assert_same(g_eng, g_ref, "linear grads")
    norm = {"weight": case.q((dim,), 14, 20000), "bias": case.q((dim,), 13)}
    got, want = both(lambda be: be.layernorm_fwd(x, norm, {"y": 12}), engine)
    assert_same(got, want, "layernorm_fwd")
    for residual in (None, case.q(x.shape, 10)):
        g_eng = {"weight": np.zeros(dim, np.int64), "bias": np.ones(dim, np.int64)}
        g_ref = {k: v.copy() for k, v in g_eng.items()}
        fr = {"g": 12, "t": 10, "dx": 13}
        dyn = case.q(x.shape, 12)
        assert_same(engine.layernorm_bwd(dyn, got[2], norm, g_eng, fr, 99, residual),
                    REF.layernorm_bwd(dyn, want[2], norm, g_ref, fr, 99, residual), "layernorm_bwd")
        assert_same(g_eng, g_ref, "layernorm grads")


def check_topk(engine: EngineBackend, case: Case) -> None:
    rng = case.rng
    scores = rng.integers(0, 40, size=(case.batch, case.length, case.length))  # many ties
    for k in (1, 5, case.length - 1):
        cls_row = scores[:, 0, 1:]
        assert_same(engine.topk_tokens(cls_row, k), REF.topk_tokens(cls_row, k), "topk_tokens")
        assert_same(engine.topk_connections(scores, k), REF.topk_connections(scores, k), "topk_connections")
    assert_same(engine.topk_connections(scores, 3, has_cls=False), REF.topk_connections(scores, 3, False),
                "topk_connections without [CLS]")


@pytest.fixture(scope="module", params=["zcu102", "ci"])
def fsim(request) -> EngineBackend:
    return EngineBackend.fsim(isa.CONFIGS[request.param])


NEEDS_CSIM = pytest.mark.skipif(not csim_engine_available(), reason="no C-sim engine library (make csim)")


def demo_case() -> Case:
    return Case(batch=3, length=17, dim=64, heads=4, hidden=128)


def test_linear_layernorm_topk_at_demo_shapes(fsim: EngineBackend) -> None:
    case = demo_case()
    check_linear_and_norm(fsim, case)
    check_topk(fsim, case)


@pytest.mark.parametrize("keep_attn, fresh", [(1.0, False), (0.5, False), (0.5, True)])
def test_blocks_at_demo_shapes(fsim: EngineBackend, keep_attn: float, fresh: bool) -> None:
    case = demo_case()
    check_attn(fsim, case, None if keep_attn == 1.0 else case.conn(keep_attn), fresh)
    check_mlp(fsim, case, fresh)


@pytest.mark.parametrize("tokens, keep_attn", [(197, 1.0), (139, 0.7), (98, 0.5), (69, 0.5)])
def test_blocks_at_deit_tiny_shapes(tokens: int, keep_attn: float) -> None:
    """DeiT-T (D=192, 3 heads, MLP 768) at the token counts of its pruned stages, with connection lists."""
    engine = EngineBackend.fsim(isa.PRODUCTION)
    case = Case(batch=1, length=tokens, dim=192, heads=3, hidden=768, seed=tokens)
    check_attn(engine, case, None if keep_attn == 1.0 else case.conn(keep_attn))
    check_mlp(engine, case)


@NEEDS_CSIM
@pytest.mark.parametrize("dim, heads", [(384, 6), (768, 12)])
def test_deit_small_and_base_widths(dim: int, heads: int) -> None:
    """DeiT-S/B embedding widths (LayerNorm rows up to max_dim, weights tiled through the scratchpad) on
    fsim and the C-sim engine; a few tokens keep it fast."""
    case = Case(batch=1, length=5, dim=dim, heads=heads, hidden=4 * dim, seed=dim)
    for engine in (EngineBackend.fsim(isa.PRODUCTION), EngineBackend.csim()):
        check_linear_and_norm(engine, case)
        check_attn(engine, case, case.conn(0.5))
        check_mlp(engine, case)


@pytest.mark.parametrize("priority", list(itertools.permutations(Module)))
def test_results_do_not_depend_on_the_module_schedule(priority: tuple[Module, ...]) -> None:
    """Any module may run ahead as far as its tokens allow (here: each priority order of the three
    modules); the results stay exact, so the derived dependency tokens cover every hazard."""
    engine = EngineBackend.simulated(FunctionalEngine(isa.CI_SMALL, priority=priority), "fsim")
    case = Case(batch=2, length=9, dim=32, heads=2, hidden=64, seed=5)
    check_attn(engine, case, case.conn(0.5))
    check_mlp(engine, case)
    check_linear_and_norm(engine, case)


@pytest.mark.parametrize("kernel", ["attn_bwd", "mlp_bwd", "linear_bwd", "layernorm_bwd"])
def test_fresh_gradients_are_zero_filled_not_read(kernel: str) -> None:
    """A backward whose accumulators start at zero (the engine backends pick it when all are zero) reads
    none of them from DDR: each gradient's LOADs become zero fills; the rest of the program is the same."""
    vit = CONFIGS["deit_tiny"]
    adding, fresh = (lower.representative(kernel, vit, 69, None, 1, isa.PRODUCTION, "head", f).summary()
                     for f in (False, True))
    grad_bytes = (8 * {"attn_bwd": 4 * 192 * 192 + 6 * 192, "mlp_bwd": 2 * 192 * 768 + 768 + 3 * 192,
                       "linear_bwd": 192 * 1000 + 1000, "layernorm_bwd": 2 * 192}[kernel])
    assert adding["ddr_read_bytes"] - fresh["ddr_read_bytes"] == grad_bytes
    assert {k: adding[k] for k in ("commands", "per_op", "ddr_write_bytes", "macs")} == \
        {k: fresh[k] for k in ("commands", "per_op", "ddr_write_bytes", "macs")}


def test_programs_are_cached_and_seeds_bound_per_call() -> None:
    args = (isa.PRODUCTION, 34, 64, 192, True, True, 12, 14, 11)
    prog = lower.linear_bwd(*args)
    assert lower.linear_bwd(*args) is prog
    a, b = prog.bind(1).reshape(-1, isa.WORDS), prog.bind(2).reshape(-1, isa.WORDS)
    differ = np.argwhere(a != b)
    assert differ.size and set(differ[:, 1].tolist()) == {isa.FIELDS["seed"][0]}  # only the seed word
    ops = {isa.Op(int(w[0]) & 0xF) for w in a}
    assert ops >= {isa.Op.LOAD, isa.Op.GEMM, isa.Op.VEC, isa.Op.STORE, isa.Op.FINISH}
    summary = prog.summary()
    assert summary["macs"] == 34 * 64 * 192 * 2 + summary["relays"]  # dX and dW (+1 per relay)


def test_engine_errors_name_the_kernel_and_command() -> None:
    engine = EngineBackend.fsim(isa.CI_SMALL)
    case = Case(batch=1, length=5, dim=16, heads=2, hidden=32)
    grads = {"weight": np.full((48, 16), (1 << 47) - 1, np.int64), "bias": np.zeros(48, np.int64)}
    p = {"weight": case.q((48, 16), 14), "bias": case.q((48,), 13)}
    dy = case.q((1, 5, 48), 12)
    with pytest.raises(EngineOverflowError, match=r"ACC_RANGE in linear_bwd at command \d+: GEMM") as err:
        engine.linear_bwd(dy, {"x": case.x}, p, grads, {"dx": 11}, 3)
    assert isinstance(err.value, OverflowError)  # as the reference's 48-bit check
    with pytest.raises(OverflowError):
        REF.linear_bwd(dy, {"x": case.x}, p, {k: v.copy() for k, v in grads.items()}, {"dx": 11}, 3)
    too_long = engine.config.max_dim + 1
    with pytest.raises(lower.LoweringError, match="max_dim"):
        engine.layernorm_fwd(QTensor(np.zeros((1, 2, too_long), np.int16), 10),
                             {"weight": QTensor(np.ones(too_long, np.int16), 14),
                              "bias": QTensor(np.ones(too_long, np.int16), 14)}, {"y": 10})


@NEEDS_CSIM
@pytest.mark.parametrize("keep_attn", [1.0, 0.5])
def test_csim_engine_at_demo_shapes(keep_attn: float) -> None:
    engine = EngineBackend.csim()
    case = demo_case()
    check_attn(engine, case, None if keep_attn == 1.0 else case.conn(keep_attn))
    check_mlp(engine, case)
    check_linear_and_norm(engine, case)
    check_topk(engine, case)


@NEEDS_CSIM
@pytest.mark.parametrize("tokens, keep_attn", [(197, 1.0), (139, 0.7), (98, 0.5), (69, 0.5)])
def test_csim_engine_at_deit_tiny_shapes(tokens: int, keep_attn: float) -> None:
    engine = EngineBackend.csim()
    case = Case(batch=1, length=tokens, dim=192, heads=3, hidden=768, seed=tokens)
    check_attn(engine, case, None if keep_attn == 1.0 else case.conn(keep_attn))
    check_mlp(engine, case)


def test_replayed_programs_equal_freshly_lowered_ones() -> None:
    """New fracs at known shapes reuse the program's structure (only shift/imm fields change)."""
    shape = lower.AttnShape(2, 9, 32, 2, 1, 4)
    pf = tuple((n, 14) for n in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                 "attn.proj.weight", "attn.proj.bias"))
    fracs = [lower.fracs_key({**ATTN_FWD, "s": s, "out": 13 - s}, tuple(ATTN_FWD)) for s in (9, 7)]
    raw = lower.attn_block_fwd.__wrapped__
    lower._TEMPLATES.clear()
    fresh = raw(isa.CI_SMALL, shape, 12, pf, fracs[1])
    lower._TEMPLATES.clear()
    raw(isa.CI_SMALL, shape, 12, pf, fracs[0])
    replayed = raw(isa.CI_SMALL, shape, 12, pf, fracs[1])
    assert np.array_equal(replayed.words, fresh.words) and replayed.seed_sites == fresh.seed_sites
    assert not np.array_equal(replayed.words, raw(isa.CI_SMALL, shape, 12, pf, fracs[0]).words)


@pytest.mark.parametrize("spm_elems", [6_000, 4_500])
def test_every_tiling_path_on_a_tiny_engine(spm_elems: int) -> None:
    """A build with tiny memories forces every tiling path of the lowering: weight tiles narrower than
    the layer (forward and dX), several ACC blocks for a weight gradient, several token tiles, MASK
    rows in IDX-sized chunks, LayerNorm and GELU row tiles, and the staged block lowerings where the
    fused ones do not fit (6000: staged attention, fused MLP; 4500: both staged)."""
    tiny = dataclasses.replace(isa.CI_SMALL, name="tiny", spm_elems=spm_elems, acc_elems=1_200, idx_elems=16)
    engine = EngineBackend.fsim(tiny)
    case = Case(batch=6, length=9, dim=32, heads=2, hidden=64, seed=9)
    qkv = lower.linear_fwd(tiny, 54, 32, 96, 12, 14, 13, None, 11)
    gemms = [isa.decode(w) for w in qkv.words.reshape(-1, isa.WORDS) if int(w[0]) & 0xF == isa.Op.GEMM]
    assert max(g["n"] for g in gemms) < 96  # the weight did not fit half the SPM: column tiles
    mlp = lower.mlp_block_fwd(tiny, 54, 32, 64, 12, tuple((n, 14) for n in sorted(case.shapes)),
                              lower.fracs_key(MLP_FWD, tuple(MLP_FWD)))
    z = mlp.buffers["z"]
    reloads_z = any(int(w[0]) & 0xF == isa.Op.LOAD and z.offset <= int(w[4]) < z.offset + z.nbytes
                    for w in mlp.words.reshape(-1, isa.WORDS))
    assert reloads_z == (spm_elems == 4_500)  # fused on chip: LN2's output never comes back from DDR
    check_attn(engine, case, case.conn(0.5))
    check_mlp(engine, case)
    check_linear_and_norm(engine, case)


def test_attention_without_dense_rows() -> None:
    """dense_rows=0 (no [CLS]): every query row follows its connection list."""
    engine = EngineBackend.fsim(isa.CI_SMALL)
    case = Case(batch=2, length=8, dim=32, heads=2, hidden=64, seed=3)
    scores = case.rng.integers(0, 1 << 15, size=(2, 8, 8))
    conn = topk.topk_connections(scores, 3, has_cls=False)
    params = case.group(("norm1.", "attn."))
    got = engine.attn_block_fwd(case.x, params, ATTN_FWD, case.heads, conn, 0)
    want = REF.attn_block_fwd(case.x, params, ATTN_FWD, case.heads, conn, 0)
    assert_same(got, want, "attn_block_fwd dense_rows=0")
    dout = case.q(case.x.shape, 13)
    grads = case.grads(("norm1.", "attn."))
    g_eng, g_ref = {k: v.copy() for k, v in grads.items()}, {k: v.copy() for k, v in grads.items()}
    assert_same(engine.attn_block_bwd(dout, got[2], params, g_eng, ATTN_BWD, 5),
                REF.attn_block_bwd(dout, want[2], params, g_ref, ATTN_BWD, 5), "attn_block_bwd dense_rows=0")
    assert_same(g_eng, g_ref, "grads")


@pytest.mark.parametrize("engine_name", ["fsim", pytest.param("csim", marks=NEEDS_CSIM)])
def test_deit_tiny_linears_norm_and_selector(engine_name: str) -> None:
    """The patch embedding (768 -> 192 over 196 patches, dW only), the head (192 -> 1000 on [CLS]), the
    final LayerNorm and the TA-selector top-k of DeiT-T's first pruned stage (196 -> 137 tokens, 42 keys)."""
    engine = EngineBackend.fsim() if engine_name == "fsim" else EngineBackend.csim()
    rng = np.random.default_rng(7)

    def q(shape: tuple[int, ...], frac: int) -> QTensor:
        return QTensor(rng.integers(-3000, 3000, shape).astype(np.int16), frac)

    patches, patch_w = q((1, 196, 768), 12), {"weight": q((192, 768), 15), "bias": q((192,), 13)}
    assert_same(engine.linear_fwd(patches, patch_w, {"y": 10}), REF.linear_fwd(patches, patch_w, {"y": 10}))
    g_eng = {"weight": np.zeros((192, 768), np.int64), "bias": np.zeros(192, np.int64)}
    g_ref = {k: v.copy() for k, v in g_eng.items()}
    d_emb = q((1, 196, 192), 14)
    assert_same(engine.linear_bwd(d_emb, {"x": patches}, patch_w, g_eng, {}, 3, need_dx=False),
                REF.linear_bwd(d_emb, {"x": patches}, patch_w, g_ref, {}, 3, need_dx=False))
    assert_same(g_eng, g_ref, "patch embedding grads")
    cls, norm = q((4, 1, 192), 11), {"weight": q((192,), 14), "bias": q((192,), 13)}
    got, want = engine.layernorm_fwd(cls, norm, {"y": 12}), REF.layernorm_fwd(cls, norm, {"y": 12})
    assert_same(got, want, "final norm")
    head = {"weight": q((1000, 192), 15), "bias": q((1000,), 13)}
    assert_same(engine.linear_fwd(got[0], head, {"y": 9}), REF.linear_fwd(want[0], head, {"y": 9}), "head")
    g_eng = {"weight": np.ones((1000, 192), np.int64), "bias": np.ones(1000, np.int64)}
    g_ref = {k: v.copy() for k, v in g_eng.items()}
    dlogits = q((4, 1, 1000), 16)
    assert_same(engine.linear_bwd(dlogits, {"x": got[0]}, head, g_eng, {"dx": 13}, 4),
                REF.linear_bwd(dlogits, {"x": want[0]}, head, g_ref, {"dx": 13}, 4), "head bwd")
    assert_same(g_eng, g_ref, "head grads")
    scores = rng.integers(0, 3 << 15, size=(2, 197, 197))
    assert_same(engine.topk_tokens(scores[:, 0, 1:], 137), REF.topk_tokens(scores[:, 0, 1:], 137))
    kept = scores[:, :138, :138]
    assert_same(engine.topk_connections(kept, 42), REF.topk_connections(kept, 42))


@pytest.mark.parametrize("spm_elems,variant", [(120_000, "grown"), (64_000, "streamed"), (30_000, "tiled")])
def test_linear_fwd_overlap_variants(spm_elems: int, variant: str) -> None:
    """The three forward-linear lowerings, bit-exact with and without bias and residual: every operand
    resident with the computed rectangle grown piece by piece (grown), x resident with the weight streamed
    through two n-tile buffers (streamed), and row tiles past a resident weight tile (tiled)."""
    config = dataclasses.replace(isa.CI_SMALL, name="lin", spm_elems=spm_elems)
    engine = EngineBackend.fsim(config)
    rng = np.random.default_rng(5)
    rows, din, dout = 90, 32, 256
    x = QTensor(rng.integers(-3000, 3000, (2, 45, din)).astype(np.int16), 12)
    params = {"weight": QTensor(rng.integers(-3000, 3000, (dout, din)).astype(np.int16), 14),
              "bias": QTensor(rng.integers(-3000, 3000, (dout,)).astype(np.int16), 13)}
    residual = QTensor(rng.integers(-3000, 3000, (2, 45, dout)).astype(np.int16), 11)
    for res in (None, residual):
        for p in (params, {"weight": params["weight"]}):
            got, want = both(lambda be, p=p, r=res: be.linear_fwd(x, p, {"y": 10}, r), engine)
            assert_same(got, want, f"linear_fwd {variant}")
    prog = lower.linear_fwd(config, rows, din, dout, 12, 14, 13, 11, 10)
    gemms = [isa.decode(w) for w in prog.words.reshape(-1, isa.WORDS) if int(w[0]) & 0xF == isa.Op.GEMM]
    shapes = {(g["m"], g["n"]) for g in gemms}
    if variant == "grown":  # pieces: the first GEMM is one row piece by one column piece
        assert (gemms[0]["m"], gemms[0]["n"]) == (lower.GROW_ROWS, lower.GROW_COLS) and len(shapes) > 2
    elif variant == "streamed":  # first n-tile in row chunks, then all rows per n-tile
        assert gemms[0]["m"] < rows and (rows, lower.STREAM_COLS) in shapes
    else:
        assert all(m < rows for m, _ in shapes)


@pytest.mark.parametrize("acc_elems", [16_384, 300])
def test_weight_gradient_resident_blocks(acc_elems: int) -> None:
    """The weight gradient with dY and X resident and the ACC blocks rotating through GRAD_BUFS regions:
    whole gradient rows per block (16384) and column blocks when not even one row fits a region (300)."""
    config = dataclasses.replace(isa.CI_SMALL, name="wgrad", acc_elems=acc_elems)
    engine = EngineBackend.fsim(config)
    rng = np.random.default_rng(8)
    din, dout = 32, 256
    x = QTensor(rng.integers(-3000, 3000, (2, 45, din)).astype(np.int16), 12)
    dy = QTensor(rng.integers(-3000, 3000, (2, 45, dout)).astype(np.int16), 12)
    params = {"weight": QTensor(rng.integers(-3000, 3000, (dout, din)).astype(np.int16), 14),
              "bias": QTensor(rng.integers(-3000, 3000, (dout,)).astype(np.int16), 13)}
    for need_dx in (True, False):
        grads = {"weight": rng.integers(-9, 9, (dout, din)), "bias": np.arange(dout)}
        g_eng = {k: v.astype(np.int64) for k, v in grads.items()}
        g_ref = {k: v.astype(np.int64) for k, v in grads.items()}
        got = engine.linear_bwd(dy, {"x": x}, params, g_eng, {"dx": 11}, 77, need_dx)
        want = REF.linear_bwd(dy, {"x": x}, params, g_ref, {"dx": 11}, 77, need_dx)
        assert_same(got, want, "linear_bwd")
        assert_same(g_eng, g_ref, "linear grads")
    prog = lower.linear_bwd(config, 90, din, dout, True, True, 12, 14, 11)
    accs = [isa.decode(w) for w in prog.words.reshape(-1, isa.WORDS)
            if int(w[0]) & 0xF == isa.Op.GEMM and isa.decode(w)["acc"]]
    assert len(accs) > 1 and all(g["k"] == 90 for g in accs)  # one GEMM over all tokens per block
    assert all(g["n"] == din for g in accs) == (acc_elems == 16_384)
