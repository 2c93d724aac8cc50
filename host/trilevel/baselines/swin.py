"""Tri-Level's token level on timm's Swin Transformer (a model without [CLS]), patched into timm's own
modules the way ToMe patches timm: the classes of the model, its blocks, their window attention and the
patch-merging layers are swapped for subclasses that share one pruning state; the parameters stay
timm's, so timm checkpoints load unchanged.

What token pruning means under windows and patch merging (docs/baselines.md, "Swin"):

* The feature map keeps its [B, H, W, C] shape: windows need full M x M tiles, and shifted windows
  re-partition the map every other block. Pruning is a keep mask over the map.
* A pruned token is gone as a key: every window's softmax excludes it (it still attends to itself, so
  its row is defined) and its attention and MLP updates are dropped, so its feature stays what it was
  when it was pruned (no compute is needed for it).
* Token scores are the cumulative attention: the head-mean attention a token receives from the kept
  queries of its window (column sums); the selectors run after the attention of ``prune_blocks``
  (global block indices; default 3, 6, 9 of Swin-T's 12, as DeiT's) and keep ``keep_count(R_T, n)`` of
  an image's ``n`` kept tokens.
* Patch merging merges all four children (pruned ones with their frozen features); the merged token is
  kept if any child was kept.
* The head averages all positions, as timm's Swin (pruned tokens contribute their frozen features).
  The example filter's statistic is the variance over the kept tokens of the last block's scores.

Attention-level pruning is not applied (``keep_attn`` must be 1): a per-query connection list would not
survive the next block's shifted re-partition. At ``keep_token = 1`` the patched model computes exactly
timm's function (a test).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from timm.models.swin_transformer import (
    PatchMerging,
    SwinTransformer,
    SwinTransformerBlock,
    WindowAttention,
    window_partition,
    window_reverse,
)
from torch import Tensor

from trilevel.config import keep_count
from trilevel.model import ForwardInfo


@dataclass
class PruneState:
    prune_blocks: tuple[int, ...]
    last_block: int
    keep_token: float = 1.0
    keep: Tensor | None = None  # [B, H, W] bool at the current stage's resolution
    tokens: list[int] = field(default_factory=list)  # kept tokens (first image) entering each block
    variance: Tensor | None = None


def kept_top(scores: Tensor, keep: Tensor, ratio: float) -> Tensor:
    """Per image, the keep_count(ratio, n) kept tokens with the largest scores (ties: lower index)."""
    flat_scores, flat_keep = scores.flatten(1).float(), keep.flatten(1)
    counts = flat_keep.sum(dim=1).tolist()
    want = torch.tensor([keep_count(ratio, int(n)) for n in counts], device=keep.device)
    ranked = torch.where(flat_keep, flat_scores, torch.full_like(flat_scores, float("-inf")))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=keep.device).expand_as(order)
    )
    return (rank < want[:, None]).view_as(keep)


class ScoringWindowAttention(WindowAttention):
    """timm's window attention with a key mask; also returns the head-mean probabilities."""

    def forward_masked(self, x: Tensor, mask: Tensor | None, key_keep: Tensor) -> tuple[Tensor, Tensor]:
        windows, area, _ = x.shape
        q, k, v = self.qkv(x).reshape(windows, area, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        scores = (q * self.scale) @ k.transpose(-2, -1) + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            scores = scores.view(-1, num_win, self.num_heads, area, area) + mask[None, :, None]
            scores = scores.view(-1, self.num_heads, area, area)
        allowed = key_keep[:, None, None, :] | torch.eye(area, dtype=torch.bool, device=x.device)
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
        out = (self.attn_drop(probs) @ v).transpose(1, 2).reshape(windows, area, -1)
        return self.proj_drop(self.proj(out)), probs.detach().mean(dim=1)


class PrunableSwinBlock(SwinTransformerBlock):
    """A Swin block that honours the model's keep mask and runs a TA-selector when asked."""

    _tl_state: PruneState
    _tl_index: int

    def _masked_attn(self, x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """timm's `_attn` with pruned keys removed; returns the output and each token's attention
        received from the kept queries of its window, [B, H, W]."""
        batch, height, width, channels = x.shape
        shift = tuple(self.shift_size)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
            keep = torch.roll(keep, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        win = tuple(self.window_size)
        pad_h, pad_w = (win[0] - height % win[0]) % win[0], (win[1] - width % win[1]) % win[1]
        x = torch.nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        keep = torch.nn.functional.pad(keep, (0, pad_w, 0, pad_h), value=True)  # timm's zero padding is a key
        _, hp, wp, _ = x.shape
        x_windows = window_partition(x, win).view(-1, self.window_area, channels)
        keep_windows = window_partition(keep[..., None], win).view(-1, self.window_area)
        mask = self.get_attn_mask(x) if getattr(self, "dynamic_mask", False) else self.attn_mask
        out, probs = self.attn.forward_masked(x_windows, mask, keep_windows)
        received = (probs * keep_windows[:, :, None]).sum(dim=1)  # column sums over kept queries
        out = window_reverse(out.view(-1, *win, channels), win, hp, wp)[:, :height, :width]
        received = window_reverse(received.view(-1, *win, 1), win, hp, wp)[:, :height, :width, 0]
        if any(shift):
            out = torch.roll(out, shifts=shift, dims=(1, 2))
            received = torch.roll(received, shifts=shift, dims=(1, 2))
        return out, received

    def forward(self, x: Tensor) -> Tensor:
        state = self._tl_state
        batch, height, width, channels = x.shape
        if self._tl_index == 0 or state.keep is None:
            state.keep = torch.ones(batch, height, width, dtype=torch.bool, device=x.device)
        keep = state.keep
        state.tokens.append(int(keep[0].sum()))
        h, received = self._masked_attn(self.norm1(x), keep)
        x = x + keep[..., None] * self.drop_path1(h)
        if self._tl_index in state.prune_blocks and state.keep_token < 1.0:
            keep = state.keep = kept_top(received, keep, state.keep_token)
        if self._tl_index == state.last_block:
            flat, kept = received.flatten(1).float(), keep.flatten(1).float()
            mean = (flat * kept).sum(1) / kept.sum(1)
            state.variance = (((flat - mean[:, None]) ** 2) * kept).sum(1) / kept.sum(1)
        update = self.drop_path2(self.mlp(self.norm2(x.reshape(batch, -1, channels))))
        return x + (keep[..., None] * update.reshape(batch, height, width, channels))


class MaskedPatchMerging(PatchMerging):
    """timm's patch merging; the merged token is kept if any of its 2 x 2 children was kept."""

    _tl_state: PruneState

    def forward(self, x: Tensor) -> Tensor:
        state = self._tl_state
        if state.keep is not None:
            keep = state.keep
            keep = torch.nn.functional.pad(keep, (0, keep.shape[2] % 2, 0, keep.shape[1] % 2), value=False)
            state.keep = keep.view(keep.shape[0], keep.shape[1] // 2, 2, keep.shape[2] // 2, 2).any(4).any(2)
        return super().forward(x)


class TriLevelSwin(SwinTransformer):
    """`forward(x, keep_token, keep_attn=1.0, return_info=False)` like the golden model's."""

    _tl_state: PruneState

    def forward(  # type: ignore[override]
        self, x: Tensor, keep_token: float = 1.0, keep_attn: float = 1.0, return_info: bool = False
    ) -> Tensor | tuple[Tensor, ForwardInfo]:
        if keep_attn != 1.0:
            raise ValueError("Swin: attention-level pruning is not supported (keep_attn must be 1)")
        keep_count(keep_token, 1)
        state = self._tl_state
        state.keep_token, state.keep, state.tokens, state.variance = keep_token, None, [], None
        logits = self.forward_head(self.forward_features(x))
        if not return_info:
            return logits
        return logits, ForwardInfo(state.variance, list(state.tokens), list(state.tokens))


def apply_token_pruning(model: SwinTransformer, prune_blocks: tuple[int, ...] = (3, 6, 9)) -> TriLevelSwin:
    """Patch a timm SwinTransformer in place (parameters untouched) and return it."""
    if not isinstance(model, SwinTransformer):
        raise TypeError(f"expected a timm SwinTransformer, got {type(model).__name__}")
    blocks = [block for stage in model.layers for block in stage.blocks]
    if any(not 0 <= b < len(blocks) for b in prune_blocks):
        raise ValueError(f"prune_blocks {prune_blocks} outside 0..{len(blocks) - 1}")
    state = PruneState(tuple(prune_blocks), len(blocks) - 1)
    model.__class__ = TriLevelSwin
    model._tl_state = state
    for index, block in enumerate(blocks):
        block.__class__ = PrunableSwinBlock
        block._tl_state, block._tl_index = state, index
        block.attn.__class__ = ScoringWindowAttention
    for stage in model.layers:
        if isinstance(stage.downsample, PatchMerging):
            stage.downsample.__class__ = MaskedPatchMerging
            stage.downsample._tl_state = state
    return model  # type: ignore[return-value]


def build_swin(name: str = "swin_tiny_patch4_window7_224", **kwargs: Any) -> TriLevelSwin:
    """A timm Swin (randomly initialized; kwargs go to `timm.create_model`) with token pruning."""
    import timm

    return apply_token_pruning(timm.create_model(name, pretrained=False, **kwargs))
