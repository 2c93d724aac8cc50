"""Golden model: DeiT layout, TA-selector semantics against a loop-based reference, gather == mask."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trilevel.config import ViTConfig, get_config, keep_count
from trilevel.model import ForwardInfo, VisionTransformer, build_model, token_plan
from trilevel.selectors import ClsAttentionTokenPolicy, TokenPolicy

# 16 patches + [CLS], two selectors back to back: the second one sees the first one's sparse attention.
SMALL = ViTConfig("small_test", 8, 2, 1, 5, 16, 4, 2, 2.0, (1, 2))
SMALL_NO_CLS = dataclasses.replace(SMALL, cls_token=False)


def make_model(cfg: ViTConfig, seed: int = 0, **kwargs) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(cfg, **kwargs).double().eval()


def make_images(cfg: ViTConfig, batch: int = 3, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=gen, dtype=torch.float64)


def brute_force_topk(scores: list[float], k: int) -> list[int]:
    """numerics.md 1.4 literally: i is selected iff fewer than k elements beat it."""
    def beaten_by(i: int) -> int:
        return sum(s > scores[i] or (s == scores[i] and j < i) for j, s in enumerate(scores))

    return [i for i in range(len(scores)) if beaten_by(i) < k]


def reference_forward(
    model: VisionTransformer, images: torch.Tensor, keep_token: float, keep_attn: float
) -> tuple[torch.Tensor, torch.Tensor, list[list[list[int]]]]:
    """docs/algorithm.md restated one example at a time: dense attention with -inf on dropped
    connections, selections by brute force. Returns logits, cls_attn_var, kept patches per selector."""
    cfg = model.cfg
    r = int(cfg.cls_token)
    heads, head_dim = cfg.num_heads, cfg.head_dim
    all_logits, all_var, all_kept = [], [], []
    for image in images:
        proj = model.patch_embed.proj
        x = F.conv2d(image[None], proj.weight, proj.bias, stride=cfg.patch_size).flatten(2)[0].T
        if r:
            x = torch.cat([model.cls_token[0], x])
        x = x + model.pos_embed[0]
        ids = list(range(cfg.num_patches))  # original patch index of each patch token
        allowed = None  # [L, L] kept connections; None = dense
        kept_log = []
        for i, block in enumerate(model.blocks):
            length = x.shape[0]
            h = F.layer_norm(x, (cfg.embed_dim,), block.norm1.weight, block.norm1.bias, 1e-6)
            q, k, v = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias).split(cfg.embed_dim, dim=1)
            q, k, v = (t.reshape(length, heads, head_dim).transpose(0, 1) for t in (q, k, v))
            scores = q @ k.transpose(1, 2) / math.sqrt(head_dim)
            if allowed is not None:
                scores = scores.masked_fill(~allowed, float("-inf"))
            probs = scores.softmax(-1)
            out = (probs @ v).transpose(0, 1).reshape(length, cfg.embed_dim)
            x = x + F.linear(out, block.attn.proj.weight, block.attn.proj.bias)
            attn = probs.mean(0).detach()
            token_score = attn[0, 1:] if r else attn.sum(0)
            if i == cfg.depth - 1:
                all_var.append(token_score.var(correction=0))
            if i in cfg.prune_blocks:
                n = length - r
                kept = brute_force_topk(token_score.tolist(), keep_count(keep_token, n))
                positions = list(range(r)) + [r + j for j in kept]
                x, attn = x[positions], attn[positions][:, positions]
                ids = [ids[j] for j in kept]
                kept_log.append(ids)
                k_tok, k_attn = len(kept), keep_count(keep_attn, len(kept))
                allowed = None
                if k_attn < k_tok:
                    allowed = torch.zeros(r + k_tok, r + k_tok, dtype=torch.bool)
                    allowed[:r] = True  # [CLS] row dense
                    for row in range(r, r + k_tok):
                        allowed[row, :r] = True  # every patch query keeps the [CLS] key
                        for key in brute_force_topk(attn[row, r:].tolist(), k_attn):
                            allowed[row, r + key] = True
            h = F.layer_norm(x, (cfg.embed_dim,), block.norm2.weight, block.norm2.bias, 1e-6)
            x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(h)))
        x = F.layer_norm(x, (cfg.embed_dim,), model.norm.weight, model.norm.bias, 1e-6)
        all_logits.append(model.head(x[0] if r else x.mean(0)))
        all_kept.append(kept_log)
    return torch.stack(all_logits), torch.stack(all_var), all_kept


def test_state_dict_names_match_timm_deit() -> None:
    model = build_model("demo")
    expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    for i in range(model.cfg.depth):
        for layer in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            expected |= {f"blocks.{i}.{layer}.weight", f"blocks.{i}.{layer}.bias"}
    expected |= {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    state = model.state_dict()
    assert set(state) == expected
    cfg = model.cfg
    assert state["pos_embed"].shape == (1, cfg.num_tokens, cfg.embed_dim)
    assert state["blocks.0.attn.qkv.weight"].shape == (3 * cfg.embed_dim, cfg.embed_dim)
    assert isinstance(model.patch_embed.proj, nn.Conv2d)
    # A checkpoint saved by one model loads strictly into another.
    VisionTransformer(cfg).load_state_dict(state, strict=True)


def test_init_like_deit() -> None:
    model = build_model("deit_small")
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(m.eps == 1e-6 for m in norms)
    assert model.blocks[0].mlp.act.approximate == "none"  # exact erf GELU
    fc1 = model.blocks[5].mlp.fc1
    assert abs(fc1.weight.std().item() - 0.02) < 1e-3 and not fc1.bias.any()
    assert abs(model.pos_embed.std().item() - 0.02) < 2e-3


@pytest.mark.parametrize("cfg", [SMALL, SMALL_NO_CLS], ids=["cls", "no_cls"])
@pytest.mark.parametrize("impl", ["gather", "mask"])
@pytest.mark.parametrize("ratios", [(0.6, 0.5), (0.5, 0.25), (0.9, 1.0), (1.0, 0.3)])
def test_matches_loop_reference(cfg: ViTConfig, impl: str, ratios: tuple[float, float]) -> None:
    model = make_model(cfg, attn_impl=impl)
    images = make_images(cfg)
    with torch.no_grad():
        logits, info = model(images, *ratios, return_info=True)
        ref_logits, ref_var, ref_kept = reference_forward(model, images, *ratios)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(info.cls_attn_var, ref_var, rtol=1e-9, atol=1e-14)
    for stage, kept in enumerate(info.kept_patches):
        assert kept.tolist() == [example[stage] for example in ref_kept]


@pytest.mark.parametrize("cfg", [get_config("demo"), SMALL_NO_CLS], ids=["cls", "no_cls"])
def test_mask_and_gather_agree_in_outputs_and_gradients(cfg: ViTConfig) -> None:
    results = []
    for impl in ("gather", "mask"):
        model = make_model(cfg, attn_impl=impl)
        images = make_images(cfg).requires_grad_(True)
        logits, info = model(images, 0.6, 0.4, return_info=True)
        (logits * torch.linspace(-1, 1, logits.shape[1], dtype=logits.dtype)).sum().backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        results.append((logits.detach(), images.grad, grads, info))
    (out_g, dx_g, grads_g, info_g), (out_m, dx_m, grads_m, info_m) = results
    assert any(c is not None for c in info_g.connections)  # the sparse path really ran
    torch.testing.assert_close(out_g, out_m, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(dx_g, dx_m, rtol=1e-9, atol=1e-11)
    for name, grad in grads_g.items():
        assert grad is not None and bool(grad.abs().sum() > 0), name
        torch.testing.assert_close(grad, grads_m[name], rtol=1e-8, atol=1e-11, msg=name)
    assert info_g.tokens_per_block == info_m.tokens_per_block
    assert info_g.keys_per_query == info_m.keys_per_query
    for a, b in zip(info_g.connections, info_m.connections, strict=True):
        assert (a is None and b is None) or torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("sparse", [True, False], ids=["masked", "dense"])
def test_fused_sdpa_path_matches_explicit_softmax(dtype: torch.dtype, sparse: bool) -> None:
    """attn_impl="mask" without an attention map runs F.scaled_dot_product_attention; with one, the
    explicit softmax. Both must give the same outputs and gradients (input and weights)."""
    torch.manual_seed(0)
    attn = build_model(SMALL).blocks[0].attn.to(dtype)
    batch, length, dense_rows = 3, 9, 1
    conn = None
    if sparse:  # every patch row keeps [CLS] and 3 random patch keys, ascending
        rows = length - dense_rows
        picks = torch.rand(batch, rows, rows).argsort(-1)[..., :3].sort(-1).values
        conn = torch.cat([torch.zeros(batch, rows, 1, dtype=torch.long), picks + 1], dim=-1)
    x = torch.randn(batch, length, SMALL.embed_dim, dtype=dtype)
    results = []
    for need_map in (False, True):
        attn.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out, attn_map = attn(xi, conn, dense_rows, "mask", need_map)
        assert (attn_map is not None) == need_map
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in attn.named_parameters()}))
    (out_f, dx_f, grads_f), (out_e, dx_e, grads_e) = results
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}
    torch.testing.assert_close(out_f, out_e, **tol)
    torch.testing.assert_close(dx_f, dx_e, **tol)
    for name, grad in grads_f.items():
        assert bool(grad.abs().sum() > 0), name
        torch.testing.assert_close(grad, grads_e[name], **tol, msg=name)


def test_mask_impl_uses_sdpa_exactly_where_no_attention_map_is_needed(monkeypatch) -> None:
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(kwargs.get("attn_mask") is not None)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting_sdpa)
    cfg = get_config("demo")  # 6 blocks, selectors after blocks 1, 3, 4
    images = make_images(cfg).float()
    build_model(cfg, attn_impl="mask")(images, 0.6, 0.4, return_info=True)
    # No map needed in block 0 (dense) and block 2 (masked); block 5 (masked) only without return_info.
    assert calls == [False, True]
    calls.clear()
    build_model(cfg, attn_impl="mask")(images, 0.6, 0.4)
    assert calls == [False, True, True]
    calls.clear()
    build_model(cfg, attn_impl="gather")(images, 0.6, 0.4)
    assert calls == []


def test_unit_ratios_give_the_dense_model_exactly() -> None:
    cfg = get_config("demo")
    images = make_images(cfg).float()
    torch.manual_seed(0)
    model = VisionTransformer(cfg).eval()
    dense = VisionTransformer(dataclasses.replace(cfg, prune_blocks=())).eval()
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        logits, info = model(images, 1.0, 1.0, return_info=True)
        assert torch.equal(logits, dense(images))
        assert torch.equal(logits, model(images))  # the defaults are the dense ratios
    assert info.tokens_per_block == [cfg.num_tokens] * cfg.depth == info.keys_per_query
    assert all(c is None for c in info.connections)


@pytest.mark.parametrize("keep_token", [0.25, 0.5, 0.7, 0.9, 1.0])
@pytest.mark.parametrize("keep_attn", [0.3, 1.0])
def test_kept_token_count_at_every_stage(keep_token: float, keep_attn: float) -> None:
    cfg = get_config("demo")
    model = make_model(cfg)
    seen: list[int] = []  # tokens entering each block's attention and MLP, observed by hooks
    for block in model.blocks:
        block.norm1.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
        block.norm2.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[1]))
    with torch.no_grad():
        logits, info = model(make_images(cfg, batch=2), keep_token, keep_attn, return_info=True)
    assert logits.shape == (2, cfg.num_classes)
    patches, expected_attn, expected_mlp, expected_keys, keys = cfg.num_patches, [], [], [], cfg.num_tokens
    for i in range(cfg.depth):
        expected_attn.append(1 + patches)
        expected_keys.append(keys)
        if i in cfg.prune_blocks:
            patches = keep_count(keep_token, patches)
            keys = 1 + keep_count(keep_attn, patches)  # [CLS] + kept patch keys (all of them if dense)
        expected_mlp.append(1 + patches)
    assert seen[0::2] == expected_attn and seen[1::2] == expected_mlp
    assert info.tokens_per_block == expected_attn
    assert info.keys_per_query == expected_keys
    assert (info.tokens_per_block, info.keys_per_query) == token_plan(cfg, keep_token, keep_attn)
    for kept, conn in zip(info.kept_patches, info.connections, strict=True):
        assert bool((kept[:, 1:] > kept[:, :-1]).all())  # ascending original order
        if conn is not None:
            assert conn.shape[1] == kept.shape[1] and bool((conn[..., 0] == 0).all())  # [CLS] key kept


def test_deit_tiny_token_schedule() -> None:
    cfg = get_config("deit_tiny")
    model = build_model(cfg).eval()
    with torch.no_grad():
        logits, info = model(torch.randn(1, 3, 224, 224), keep_token=0.7, return_info=True)
    assert logits.shape == (1, 1000)
    assert info.tokens_per_block == [197] * 4 + [139] * 3 + [98] * 3 + [69] * 2
    assert info.keys_per_query == info.tokens_per_block  # R_A = 1: dense attention


def test_no_cls_variant() -> None:
    model = make_model(SMALL_NO_CLS)
    assert model.cls_token is None and "cls_token" not in model.state_dict()
    with torch.no_grad():
        logits, info = model(make_images(SMALL_NO_CLS), 0.5, 0.5, return_info=True)
    assert logits.shape == (3, SMALL_NO_CLS.num_classes)
    assert info.tokens_per_block == [16, 16, 8, 4]  # no [CLS]: exactly keep_count(R_T, N) tokens
    assert info.keys_per_query == [16, 16, 4, 2]  # connection top-k on every row, no extra key
    assert info.connections[-1].shape == (3, 4, 2)  # every row is sparse


def test_cls_attention_variance_is_detached_and_positive() -> None:
    model = VisionTransformer(get_config("demo"))
    images = make_images(model.cfg).float()
    _, info = model(images, 0.7, 0.5, return_info=True)
    assert isinstance(info, ForwardInfo)
    assert info.cls_attn_var.shape == (3,) and not info.cls_attn_var.requires_grad
    assert bool((info.cls_attn_var > 0).all())


class KeepLastTokens(TokenPolicy):
    """A policy written outside the package: keeps the last k patches."""

    def select(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        n = scores.shape[1]
        return torch.arange(n - k, n).expand(scores.shape[0], k)


class Descending(ClsAttentionTokenPolicy):
    def select(self, scores: torch.Tensor, k: int) -> torch.Tensor:
        return super().select(scores, k).flip(-1)


def test_policies_plug_in_without_touching_the_model() -> None:
    cfg = get_config("demo")
    model = make_model(cfg, token_policy=KeepLastTokens(), attn_policy="longformer")
    with torch.no_grad():
        _, info = model(make_images(cfg), 0.5, 0.5, return_info=True)
    assert info.kept_patches[0][0].tolist() == list(range(8, 16))
    assert info.kept_patches[-1][0].tolist() == list(range(14, 16))
    window = info.connections[0][0]  # patch row 0 of 8 keeps [CLS] + its 4 nearest patches
    assert window[0].tolist() == [0, 1, 2, 3, 4] and window[4].tolist() == [0, 3, 4, 5, 6]
    bad = make_model(cfg, token_policy=Descending())
    with pytest.raises(ValueError, match="ascending"):
        bad(make_images(cfg), 0.5)


def test_rejects_bad_input() -> None:
    model = build_model("demo")
    with pytest.raises(ValueError, match="expected images"):
        model(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="keep ratio"):
        model(torch.randn(2, 1, 8, 8), keep_token=0.0)
    with pytest.raises(ValueError, match="keep ratio"):
        model(torch.randn(2, 1, 8, 8), keep_attn=1.5)
    with pytest.raises(ValueError, match="attn_impl"):
        build_model("demo", attn_impl="sparse")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("deit_huge")


def test_build_model_overrides() -> None:
    model = build_model("demo", num_classes=3, attn_impl="mask", drop_path=0.1)
    assert model.cfg.num_classes == 3 and model.head.out_features == 3 and model.attn_impl == "mask"
    assert build_model(SMALL, depth=2, prune_blocks=(1,)).cfg.depth == 2


def test_drop_path_only_in_training() -> None:
    cfg = get_config("demo")
    model = make_model(cfg, drop_path=0.5)
    images = make_images(cfg)
    with torch.no_grad():
        assert torch.equal(model(images, 0.7), model(images, 0.7))  # eval: deterministic
        model.train()
        torch.manual_seed(3)
        noisy = model(images, 0.7)
    model.eval()
    assert not torch.allclose(noisy, model(images, 0.7).detach())


def test_selector_index_checks_need_no_host_sync_off_the_cpu():
    """On an accelerator the index checks are device-side asserts: nothing reads a value back to the host.
    Meta tensors have no values at all, so any host read (``bool``, ``.item()``) fails on them."""
    from trilevel.model import _check_indices
    from trilevel.selectors import topk_indices

    kept = torch.tensor([[0, 2, 5]], device="meta")
    _check_indices(kept, (1, 3), 6, "token")  # device asserts only
    assert topk_indices(torch.zeros(2, 5, device="meta"), 3).shape == (2, 3)  # NaN check on the device too
    with pytest.raises(RuntimeError, match="meta"):
        _check_indices(kept, (1, 3), 6, "token", host_sync=True)  # --debug-checks: host reads
    with pytest.raises(ValueError, match="outside"):  # the CPU always checks on the host
        _check_indices(torch.tensor([[0, 2, 6]]), (1, 3), 6, "token")
