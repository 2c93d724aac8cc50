"""Tri-Level's token level patched into timm's Swin Transformer (a model without [CLS])."""

from __future__ import annotations

import copy

import pytest
import torch

from trilevel.config import keep_count

timm_swin = pytest.importorskip("timm.models.swin_transformer")

from trilevel.baselines.swin import apply_token_pruning  # noqa: E402  (needs timm)


def _tiny_swin() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm_swin.SwinTransformer(
        img_size=32, patch_size=2, in_chans=3, num_classes=10, embed_dim=32, depths=(2, 2, 2),
        num_heads=(2, 2, 2), window_size=4,
    )  # fmt: skip
    return model.eval()


def _images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_unpruned_patched_swin_is_timms_swin() -> None:
    plain = _tiny_swin()
    patched = apply_token_pruning(copy.deepcopy(plain), prune_blocks=(1, 2, 4))
    torch.testing.assert_close(patched(_images(), keep_token=1.0), plain(_images()), rtol=1e-5, atol=1e-5)
    assert set(patched.state_dict()) == set(plain.state_dict())  # timm's parameter names


def _window_scores(model: torch.nn.Module, block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Brute force: per window, head-mean softmax(q k^T * scale + relative bias) column sums."""
    attn = block.attn
    batch, height, width, channels = x.shape
    win = block.window_size[0]
    received = torch.zeros(batch, height, width)
    for b in range(batch):
        for r0 in range(0, height, win):
            for c0 in range(0, width, win):
                tokens = x[b, r0 : r0 + win, c0 : c0 + win].reshape(-1, channels)
                q, k, _ = (
                    attn.qkv(tokens).reshape(-1, 3, attn.num_heads, channels // attn.num_heads).unbind(1)
                )
                scores = torch.einsum("ihd,jhd->hij", q * attn.scale, k) + attn._get_rel_pos_bias()[0]
                received[b, r0 : r0 + win, c0 : c0 + win] = scores.softmax(-1).mean(0).sum(0).view(win, win)
    return received


def test_selector_keeps_top_k_by_cumulative_attention_and_freezes_pruned_tokens() -> None:
    model = apply_token_pruning(_tiny_swin(), prune_blocks=(2, 4))  # first blocks of stages 2, 3: no shift
    blocks = [b for stage in model.layers for b in stage.blocks]
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, block in enumerate(blocks):
        block.register_forward_hook(
            lambda m, inp, out, i=i: seen.__setitem__(i, (inp[0].detach(), out.detach()))
        )
    normed: list[torch.Tensor] = []
    blocks[2].norm1.register_forward_hook(lambda _m, _i, out: normed.append(out.detach()))
    _, info = model(_images(), keep_token=0.5, return_info=True)

    scores = _window_scores(model, blocks[2], normed[0]).flatten(1)  # every token is kept before block 2
    k = keep_count(0.5, 64)
    kept = torch.zeros(2, 64, dtype=torch.bool)
    for b in range(2):
        kept[b, torch.argsort(scores[b], descending=True, stable=True)[:k]] = True
    # Block 3 (same stage) leaves exactly the pruned tokens unchanged.
    before, after = (t.flatten(1, 2) for t in seen[3])
    unchanged = (before == after).all(dim=-1)
    assert torch.equal(unchanged, ~kept)
    assert info.tokens_per_block[:4] == [256, 256, 64, 32]
    assert info.tokens_per_block[4] <= 16 and info.tokens_per_block[5] == keep_count(
        0.5, info.tokens_per_block[4]
    )
    assert info.cls_attn_var.shape == (2,) and bool((info.cls_attn_var > 0).all())


def test_swin_refuses_attention_level_pruning() -> None:
    model = apply_token_pruning(_tiny_swin(), prune_blocks=(1,))
    with pytest.raises(ValueError, match="keep_attn"):
        model(_images(), keep_token=0.5, keep_attn=0.5)
    with pytest.raises(ValueError, match="prune_blocks"):
        apply_token_pruning(_tiny_swin(), prune_blocks=(6,))


# --- PiT: [CLS] scores, pooling over the whole grid ------------------------------------------------

timm_pit = pytest.importorskip("timm.models.pit")

from trilevel.baselines.pit import apply_token_pruning as apply_pit_pruning  # noqa: E402


def _tiny_pit() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm_pit.PoolingVisionTransformer(
        img_size=32, patch_size=4, stride=2, base_dims=(16, 16, 16), depth=(2, 2, 2), heads=(2, 2, 2),
        num_classes=10,
    )  # fmt: skip
    return model.eval()


def test_unpruned_patched_pit_is_timms_pit() -> None:
    plain = _tiny_pit()
    patched = apply_pit_pruning(copy.deepcopy(plain), prune_blocks=(1, 3))
    torch.testing.assert_close(patched(_images(), keep_token=1.0), plain(_images()), rtol=1e-5, atol=1e-5)


def test_pit_selector_keeps_top_k_by_cls_attention_and_freezes_pruned_tokens() -> None:
    model = apply_pit_pruning(_tiny_pit(), prune_blocks=(2, 4))  # the first blocks of stages 2 and 3
    blocks = [b for stage in model.transformers for b in stage.blocks]
    normed: list[torch.Tensor] = []
    blocks[2].norm1.register_forward_hook(lambda _m, _i, out: normed.append(out.detach()))
    entering_block3: list[torch.Tensor] = []
    blocks[3].norm1.register_forward_pre_hook(lambda _m, inp: entering_block3.append(inp[0].detach()))
    stage_out: list[torch.Tensor] = []
    model.transformers[1].register_forward_hook(lambda _m, _i, out: stage_out.append(out[0].detach()))
    _, info = model(_images(), keep_token=0.5, return_info=True)

    attn = blocks[2].attn
    x = normed[0]  # [B, 1 + 64, C], every token kept before block 2
    q, k, _ = attn.qkv(x).reshape(2, 65, 3, attn.num_heads, -1).unbind(2)
    cls_row = torch.einsum("bhd,bjhd->bhj", q[:, 0] * attn.scale, k).softmax(-1).mean(1)[:, 1:]
    k_keep = keep_count(0.5, 64)
    assert info.tokens_per_block[:4] == [1 + 225, 1 + 225, 1 + 64, 1 + k_keep]
    # The stage's grid output: pruned patches are exactly their features entering block 3 (frozen).
    entering = entering_block3[0][:, 1:]
    out = stage_out[0].flatten(2).transpose(1, 2)
    for b in range(2):
        kept = set(torch.argsort(cls_row[b], descending=True, stable=True)[:k_keep].tolist())
        frozen = {j for j in range(64) if torch.equal(out[b, j], entering[b, j])}
        assert frozen == set(range(64)) - kept
    with pytest.raises(ValueError, match="keep_attn"):
        model(_images(), keep_token=0.5, keep_attn=0.5)
