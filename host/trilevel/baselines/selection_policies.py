"""Token- and attention-level baselines of the paper's Tables 1 and 3, as TA-selector policies.

* token ``evit`` (Liang et al. 2022): keep the top-k patches by [CLS] attention and fuse the dropped
  ones into one extra token, the sum of the dropped tokens weighted by their [CLS] attention (the
  official code's `extra_token`; the weights are not renormalized).
* attention ``magnitude``: each query keeps the k keys with the largest head-mean |q.k| / sqrt(d_h),
  ranked before the softmax.
* attention ``longformer2d`` (Beltagy et al. 2020, on the image grid): each patch query keeps the k kept
  patches nearest to it on the 2-D patch grid (a square neighbourhood: Chebyshev distance, then
  Euclidean, then the lower index); the model adds the global [CLS] key to every row and keeps the
  [CLS] row dense, Longformer's global attention.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from trilevel.selectors import (
    AttentionPolicy,
    TokenPolicy,
    register_attention_policy,
    register_token_policy,
    topk_indices,
)


@register_token_policy("evit")
class EViTTokenPolicy(TokenPolicy):
    """EViT: the paper's top-k selection plus one fused token of the inattentive patches."""

    merged_tokens: ClassVar[int] = 1

    def select(self, scores: Tensor, k: int) -> Tensor:
        return topk_indices(scores, k)

    def merge(self, patches: Tensor, scores: Tensor, kept: Tensor) -> Tensor:
        dropped = torch.ones_like(scores, dtype=torch.bool).scatter_(1, kept, False)
        weights = torch.where(dropped, scores, torch.zeros_like(scores)).to(patches.dtype)
        return (weights[..., None] * patches).sum(dim=1, keepdim=True)


@register_attention_policy("magnitude")
class MagnitudeAttentionPolicy(AttentionPolicy):
    """Top-k of each query row by the pre-softmax magnitude |q.k| / sqrt(d_h) (head mean)."""

    score_map: ClassVar[str] = "logit_magnitude"

    def select(self, attn: Tensor, k: int) -> Tensor:
        return topk_indices(attn, k)


def grid_closeness(positions: Tensor, grid: int) -> Tensor:
    """[B, K, K] ranking keys of key j for query i: larger is nearer on the patch grid (Chebyshev
    distance first, Euclidean distance second; `topk_indices` breaks remaining ties by lower index)."""
    rows, cols = positions // grid, positions % grid
    d_row = (rows[:, :, None] - rows[:, None, :]).abs()
    d_col = (cols[:, :, None] - cols[:, None, :]).abs()
    chebyshev = torch.maximum(d_row, d_col)
    squared = d_row**2 + d_col**2
    return -(chebyshev * (2 * grid * grid + 1) + squared)


@register_attention_policy("longformer2d")
class Longformer2DAttentionPolicy(AttentionPolicy):
    """Longformer's sliding window on the 2-D patch grid: the k nearest kept patches (incl. itself)."""

    def select(self, attn: Tensor, k: int) -> Tensor:
        """Without positions the keys must be a whole square grid in raster order."""
        batch, m, n = attn.shape
        grid = round(n**0.5)
        if m != n or grid * grid != n:
            raise ValueError(f"longformer2d needs the patch positions for a {m} x {n} map")
        positions = torch.arange(n, device=attn.device).expand(batch, n)
        return self.select_at(attn, k, positions, grid)

    def select_at(self, attn: Tensor, k: int, positions: Tensor, grid: int) -> Tensor:
        if bool((positions < 0).any()):
            raise ValueError("longformer2d cannot place merged tokens on the grid")
        return topk_indices(grid_closeness(positions, grid), k)
