"""Forward-pass pieces shared by the baselines that run their own loop over the golden model's modules
(DynamicViT, S²ViTE's token selector): the same parameters and layers, another token schedule."""

from __future__ import annotations

import torch
from torch import Tensor

from trilevel.model import Attention, VisionTransformer
from trilevel.selectors import token_scores


def embed(model: VisionTransformer, images: Tensor) -> Tensor:
    """Patch embedding, [CLS] (if any) and position embedding: [B, L, D], as the model's forward."""
    cfg = model.cfg
    expected = (cfg.in_chans, cfg.img_size, cfg.img_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"expected images [B, {', '.join(map(str, expected))}], got {tuple(images.shape)}")
    x = model.patch_embed(images)
    if model.cls_token is not None:
        x = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    return x + model.pos_embed


def classify(model: VisionTransformer, x: Tensor) -> Tensor:
    """Final norm and head: on [CLS], or on the mean of all tokens without it."""
    x = model.norm(x)
    return model.head(x[:, 0] if model.cfg.cls_token else x.mean(dim=1))


def attention_with_keep(
    attn: Attention, x: Tensor, keep: Tensor | None, eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Attention whose keys are weighted by `keep` [B, L] in {0, 1} (None: all kept), DynamicViT's
    masked softmax: exp(s_ij) * m_ij / sum_j exp(s_ij) * m_ij with m_ij = keep_j, or 1 where i == j
    (every token still attends to itself), and eps smoothing. Returns the projected output and the
    detached head-mean probabilities [B, L, L]."""
    batch, length, dim = x.shape
    q, k, v = attn.qkv(x).reshape(batch, length, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    scores = (q * attn.scale) @ k.transpose(-2, -1)
    if keep is None:
        probs = scores.softmax(dim=-1)
    else:
        eye = torch.eye(length, device=x.device, dtype=scores.dtype)
        weight = keep[:, None, None, :].to(scores.dtype)
        weight = weight + (1.0 - weight) * eye
        exp = (scores - scores.amax(dim=-1, keepdim=True).detach()).exp() * weight
        probs = (exp + eps / length) / (exp.sum(dim=-1, keepdim=True) + eps)
    out = (probs @ v).transpose(1, 2).reshape(batch, length, dim)
    return attn.proj(out), probs.detach().mean(dim=1)


def attention_variance(attn_map: Tensor, has_cls: bool) -> Tensor:
    """The example filter's statistic: variance over the patches of the token scores (fp32)."""
    return token_scores(attn_map, has_cls).float().var(dim=-1, correction=0)
