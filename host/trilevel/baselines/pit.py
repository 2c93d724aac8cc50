"""Tri-Level's token level on timm's PiT (Pooling-based ViT), patched into timm's modules like the Swin
patch (`trilevel.baselines.swin`): PiT keeps a [CLS] token, so tokens are scored by the paper's rule
(the head-mean [CLS] attention row), but its stages end in a depth-wise convolution over the full
spatial grid, so pruning is a keep mask over the grid, as for Swin:

* a pruned token is removed as a key from the attention of every later block of the model (it still
  attends to itself), its attention and MLP updates are dropped (its feature is frozen);
* the selectors run after the attention of ``prune_blocks`` (global indices over PiT's blocks; default
  3, 6, 9 as DeiT's: PiT-Ti/S have 2 + 6 + 4 blocks) and keep ``keep_count(R_T, n)`` of an image's ``n``
  kept patch tokens;
* the pooling convolution sees the whole grid (frozen features included) and a pooled token is kept if
  any of the 2 x 2 patches under its stride was kept; [CLS] is always kept;
* the example filter's statistic is the variance over the kept patches of the last block's [CLS] row.

Attention-level pruning is not applied (``keep_attn`` must be 1). At ``keep_token = 1`` the patched
model computes timm's PiT (a test).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.pit import PoolingVisionTransformer, Transformer
from torch import Tensor, nn

from trilevel.baselines.swin import PruneState, kept_top
from trilevel.config import keep_count
from trilevel.model import ForwardInfo


def _masked_attention(attn: nn.Module, x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """timm's Attention with pruned keys removed; returns the output and head-mean probabilities."""
    batch, length, _ = x.shape
    q, k, v = attn.qkv(x).reshape(batch, length, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(q), attn.k_norm(k)
    allowed = keep[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=x.device)
    probs = ((q * attn.scale) @ k.transpose(-2, -1)).masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    out = (attn.attn_drop(probs) @ v).transpose(1, 2).reshape(batch, length, -1)
    return attn.proj_drop(attn.proj(attn.norm(out))), probs.detach().mean(dim=1)


class PrunablePiTStage(Transformer):
    """A PiT stage whose blocks honour the model's keep mask and run TA-selectors when asked."""

    _tl_state: PruneState
    _tl_first: int  # global index of the stage's first block

    def forward(self, x: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        grid, cls_tokens = x
        state = self._tl_state
        token_length = cls_tokens.shape[1]
        if self.pool is not None:
            grid, cls_tokens = self.pool(grid, cls_tokens)
        batch, channels, height, width = grid.shape
        if state.keep is None:
            state.keep = torch.ones(batch, height, width, dtype=torch.bool, device=grid.device)
        else:  # pooled token kept if any patch under its stride was kept
            keep = state.keep
            keep = torch.nn.functional.pad(keep, (0, keep.shape[2] % 2, 0, keep.shape[1] % 2), value=False)
            state.keep = keep.view(batch, keep.shape[1] // 2, 2, keep.shape[2] // 2, 2).any(4).any(2)
        tokens = self.norm(torch.cat([cls_tokens, grid.flatten(2).transpose(1, 2)], dim=1))
        for offset, block in enumerate(self.blocks):
            index = self._tl_first + offset
            keep_seq = torch.cat([state.keep.new_ones(batch, token_length), state.keep.flatten(1)], dim=1)
            state.tokens.append(int(keep_seq[0].sum()))
            h, probs = _masked_attention(block.attn, block.norm1(tokens), keep_seq)
            tokens = tokens + keep_seq[..., None] * block.drop_path1(block.ls1(h))
            cls_row = probs[:, 0, token_length:].reshape(batch, height, width)
            if index in state.prune_blocks and state.keep_token < 1.0:
                state.keep = kept_top(cls_row, state.keep, state.keep_token)
                keep_seq = torch.cat([keep_seq[:, :token_length], state.keep.flatten(1)], dim=1)
            if index == state.last_block:
                flat, kept = cls_row.flatten(1).float(), state.keep.flatten(1).float()
                mean = (flat * kept).sum(1) / kept.sum(1)
                state.variance = (((flat - mean[:, None]) ** 2) * kept).sum(1) / kept.sum(1)
            update = block.drop_path2(block.ls2(block.mlp(block.norm2(tokens))))
            tokens = tokens + keep_seq[..., None] * update
        cls_tokens, patches = tokens[:, :token_length], tokens[:, token_length:]
        return patches.transpose(1, 2).reshape(batch, channels, height, width), cls_tokens


class TriLevelPiT(PoolingVisionTransformer):
    """`forward(x, keep_token, keep_attn=1.0, return_info=False)` like the golden model's."""

    _tl_state: PruneState

    def forward(  # type: ignore[override]
        self, x: Tensor, keep_token: float = 1.0, keep_attn: float = 1.0, return_info: bool = False
    ) -> Tensor | tuple[Tensor, ForwardInfo]:
        if keep_attn != 1.0:
            raise ValueError("PiT: attention-level pruning is not supported (keep_attn must be 1)")
        keep_count(keep_token, 1)
        state = self._tl_state
        state.keep_token, state.keep, state.tokens, state.variance = keep_token, None, [], None
        logits = self.forward_head(self.forward_features(x))
        if not return_info:
            return logits
        return logits, ForwardInfo(state.variance, list(state.tokens), list(state.tokens))


def apply_token_pruning(
    model: PoolingVisionTransformer, prune_blocks: tuple[int, ...] = (3, 6, 9)
) -> TriLevelPiT:
    """Patch a timm PiT in place (parameters untouched) and return it."""
    if not isinstance(model, PoolingVisionTransformer):
        raise TypeError(f"expected a timm PoolingVisionTransformer, got {type(model).__name__}")
    depth = sum(len(stage.blocks) for stage in model.transformers)
    if any(not 0 <= b < depth for b in prune_blocks):
        raise ValueError(f"prune_blocks {prune_blocks} outside 0..{depth - 1}")
    state = PruneState(tuple(prune_blocks), depth - 1)
    model.__class__ = TriLevelPiT
    model._tl_state = state
    first = 0
    for stage in model.transformers:
        stage.__class__ = PrunablePiTStage
        stage._tl_state, stage._tl_first = state, first
        first += len(stage.blocks)
    return model  # type: ignore[return-value]


def build_pit(name: str = "pit_ti_224", **kwargs: Any) -> TriLevelPiT:
    """A timm PiT (randomly initialized; kwargs go to `timm.create_model`) with token pruning."""
    import timm

    return apply_token_pruning(timm.create_model(name, pretrained=False, **kwargs))
