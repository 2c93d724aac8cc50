"""Token and connection selection of the integer reference (docs/numerics.md §1.4, §2.11).

Inputs are the head-sum attention probabilities `attn_sum` [B, T, T] (int64, frac 15) that
attn_block_fwd saves; the index conventions are those of the golden model (trilevel.model).
"""

from __future__ import annotations

import numpy as np

from trilevel.config import keep_count
from trilevel.intref.fixed import QTensor, topk_select


def token_scores(attn_sum: np.ndarray, has_cls: bool = True) -> np.ndarray:
    """[B, N] patch-token scores: the [CLS] row without its [CLS] entry, else the column sums."""
    attn_sum = np.asarray(attn_sum)
    if attn_sum.ndim != 3 or attn_sum.shape[1] != attn_sum.shape[2]:
        raise ValueError(f"attn_sum must be [B, T, T], got {attn_sum.shape}")
    return attn_sum[:, 0, 1:] if has_cls else attn_sum.sum(axis=1)


def topk_tokens(scores: np.ndarray, k: int) -> np.ndarray:
    """idx [B, k]: the k best patch tokens per image (0-based among the patches), ascending."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"token scores must be [B, N], got {scores.shape}")
    return topk_select(scores, k)


def topk_connections(attn_sum: np.ndarray, k: int, has_cls: bool = True) -> np.ndarray:
    """conn [B, T - r, k + r] (r = 1 with [CLS]) for an attention map over the kept tokens only.

    Each patch query row keeps its k best patch keys (ascending, shifted by r to token positions);
    with [CLS] the [CLS] key 0 comes first in every row and the [CLS] row stays dense (not listed).
    """
    attn_sum = np.asarray(attn_sum)
    if attn_sum.ndim != 3 or attn_sum.shape[1] != attn_sum.shape[2]:
        raise ValueError(f"attn_sum must be [B, T, T], got {attn_sum.shape}")
    r = int(has_cls)
    keys = topk_select(attn_sum[:, r:, r:], k) + r
    if has_cls:
        keys = np.concatenate([np.zeros(keys.shape[:2] + (1,), dtype=np.int64), keys], axis=-1)
    return keys


def gather_tokens(x: QTensor, idx: np.ndarray, has_cls: bool = True) -> QTensor:
    """Keep [CLS] (if any) and the patch tokens idx [B, k] (0-based among patches), in that order."""
    r = int(has_cls)
    idx = np.asarray(idx)
    rows = np.arange(x.data.shape[0])[:, None]
    kept = x.data[rows, idx + r]
    data = np.concatenate([x.data[:, :r], kept], axis=1) if r else kept
    return QTensor(np.ascontiguousarray(data), x.frac)


def gather_tokens_bwd(dy: QTensor, idx: np.ndarray, length: int, has_cls: bool = True) -> QTensor:
    """Scatter the kept tokens' gradient back to [B, length, D]; dropped tokens get 0."""
    r = int(has_cls)
    batch, _, dim = dy.data.shape
    out = np.zeros((batch, length, dim), dtype=np.int16)
    out[:, :r] = dy.data[:, :r]
    out[np.arange(batch)[:, None], np.asarray(idx) + r] = dy.data[:, r:]
    return QTensor(out, dy.frac)


def gather_attn(attn_sum: np.ndarray, idx: np.ndarray, has_cls: bool = True) -> np.ndarray:
    """attn_sum restricted to [CLS] + the kept tokens idx (rows and columns): [B, k + r, k + r]."""
    r = int(has_cls)
    pos = np.asarray(idx) + r
    if r:
        pos = np.concatenate([np.zeros((pos.shape[0], 1), dtype=pos.dtype), pos], axis=1)
    rows = np.arange(pos.shape[0])[:, None, None]
    return np.asarray(attn_sum)[rows, pos[:, :, None], pos[:, None, :]]


def prune(x: QTensor, attn_sum: np.ndarray, keep_token: float, keep_attn: float, has_cls: bool = True
          ) -> tuple[QTensor, np.ndarray, np.ndarray | None]:
    """The TA-selector between a block's attention and its MLP (golden model semantics).

    Returns (kept tokens, idx [B, k], conn [B, k, k_attn + r] or None when every key is kept).
    """
    r = int(has_cls)
    n = x.data.shape[1] - r
    k = keep_count(keep_token, n)
    idx = topk_tokens(token_scores(attn_sum, has_cls), k)
    kept = gather_tokens(x, idx, has_cls)
    k_attn = keep_count(keep_attn, k)
    conn = None if k_attn == k else topk_connections(gather_attn(attn_sum, idx, has_cls), k_attn, has_cls)
    return kept, idx, conn
