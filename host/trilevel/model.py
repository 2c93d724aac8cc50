"""Float PyTorch golden model: a DeiT-style ViT with Tri-Level E-ViT's TA-selectors.

A TA-selector sits after the attention (and its residual add) of every block in `cfg.prune_blocks`:
it keeps the most informative patch tokens (the tensor really shrinks) and, inside the kept set, the
strongest attention connections of each patch query, which the following blocks use until the next
selector. Exact semantics: docs/algorithm.md. Parameter names follow timm's DeiT, so pretrained DeiT
checkpoints load with `load_state_dict`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trilevel.config import TIMM_CONFIGS, ViTConfig, get_config, keep_count
from trilevel.selectors import AttentionPolicy, TokenPolicy, make_attention_policy, make_token_policy

ATTN_IMPLS = ("gather", "mask")


@dataclass
class ForwardInfo:
    """Side information of one forward pass (all tensors detached)."""

    # [B] variance over patches of the last block's head-mean [CLS] attention row (without [CLS]);
    # models without [CLS]: variance of that map's column sums. Population variance (divide by N).
    cls_attn_var: Tensor
    tokens_per_block: list[int]  # tokens (incl. [CLS]) entering each block's attention
    keys_per_query: list[int]  # keys per patch query in each block (incl. the [CLS] key); all tokens if dense
    # Per TA-selector: [B, K] kept patches as indices into the input image's patch grid (ascending).
    kept_patches: list[Tensor] = field(default_factory=list)
    # Per TA-selector: [B, rows, keys] kept keys (token positions after the gather) of each sparse query
    # row (patch rows; every row without [CLS]), or None where attention stays dense.
    connections: list[Tensor | None] = field(default_factory=list)


def token_plan(
    cfg: ViTConfig, keep_token: float = 1.0, keep_attn: float = 1.0, merged_tokens: int = 0
) -> tuple[list[int], list[int]]:
    """(tokens_per_block, keys_per_query) of a forward pass, without running it (for MAC counting).
    `merged_tokens`: tokens the token policy appends at a selector that drops some (EViT: 1)."""
    cls = int(cfg.cls_token)
    tokens, keys = [], []
    n_tokens, n_keys = cfg.num_tokens, cfg.num_tokens
    for block in range(cfg.depth):
        tokens.append(n_tokens)
        keys.append(n_keys)
        if block in cfg.prune_blocks:
            kept = keep_count(keep_token, n_tokens - cls)
            merged = merged_tokens if kept < n_tokens - cls else 0
            n_tokens = kept + cls + merged
            n_keys = keep_count(keep_attn, kept) + cls if not merged else n_tokens
    return tokens, keys


class PatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, N, D], patches in row-major order


class Attention(nn.Module):
    """Multi-head self-attention over all connections, or over per-row kept connections.

    Implementations (`impl`, identical results up to float rounding):
    * "gather": the MAC-faithful path the accelerator mirrors. Sparse rows score only their kept keys;
      dense blocks and the [CLS] row use an explicit softmax.
    * "mask": dense scores with dropped connections set to -inf (the official code's way; saves no
      attention MACs). Blocks that need no attention map run `F.scaled_dot_product_attention` with a
      boolean mask (fused kernels on GPU); TA-selector blocks and the last block under `return_info`
      keep the explicit softmax, whose probabilities they return.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, conn: Tensor | None, dense_rows: int, impl: str, need_map: bool
    ) -> tuple[Tensor, Tensor | None]:
        """`conn` [B, L - dense_rows, n]: kept key positions of each sparse row (None: all dense).

        Returns the projected output and, if `need_map`, the detached head-mean attention [B, L, L]
        (zeros on dropped connections).
        """
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if impl == "mask" and not need_map:
            # Fused attention (flash / memory-efficient kernels on GPU) with a boolean keep mask.
            mask = None if conn is None else connection_mask(conn, length, dense_rows)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
            attn_map = None
        elif conn is not None and impl == "gather":
            out, attn_map = _sparse_attention(q * self.scale, k, v, conn, dense_rows, need_map)
        else:
            scores = (q * self.scale) @ k.transpose(-2, -1)
            if conn is not None:
                dropped = ~connection_mask(conn, length, dense_rows)[:, None]
                scores = scores.masked_fill(dropped, float("-inf"))
            probs = scores.softmax(dim=-1)
            out = probs @ v
            attn_map = probs.detach().mean(dim=1) if need_map else None
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim)), attn_map

    @torch.no_grad()
    def logit_magnitude(self, x: Tensor, conn: Tensor | None, dense_rows: int) -> Tensor:
        """Head-mean |q.k| / sqrt(d_h) before the softmax, [B, L, L], 0 on dropped connections
        (the connection scores of magnitude-based attention policies; recomputed, no gradient)."""
        batch, length, _ = x.shape
        q, k, _ = self.qkv(x).reshape(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        magnitude = ((q * self.scale) @ k.transpose(-2, -1)).abs().float().mean(dim=1)
        if conn is not None:
            magnitude = magnitude.masked_fill(~connection_mask(conn, length, dense_rows), 0.0)
        return magnitude


def connection_mask(conn: Tensor, length: int, dense_rows: int) -> Tensor:
    """Boolean [B, L, L] mask of the kept connections (dense rows all True)."""
    mask = conn.new_zeros(conn.shape[0], length, length, dtype=torch.bool)
    mask[:, :dense_rows] = True
    mask[:, dense_rows:].scatter_(-1, conn, True)
    return mask


def _sparse_attention(
    q: Tensor, k: Tensor, v: Tensor, conn: Tensor, dense_rows: int, need_map: bool
) -> tuple[Tensor, Tensor | None]:
    """Attention computed only on the kept connections: each sparse query row gets its own copy of
    its kept keys and values (one `index_select` per tensor, laid out [B, H, M, n, hd] so the two
    batched products need no further copies; the backward is a single `index_add`)."""
    batch, heads, length, head_dim = q.shape
    parts = []
    if dense_rows:
        dense_probs = (q[:, :, :dense_rows] @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, H, r, L]
        parts.append(dense_probs @ v)
    rows, kept = conn.shape[1], conn.shape[2]
    # Row of (b, h, conn[b, m, j]) in K and V flattened to [B * H * L, hd].
    offsets = torch.arange(batch * heads, device=q.device).view(batch, heads, 1, 1) * length
    flat = (conn[:, None] + offsets).reshape(-1)
    k_kept = k.reshape(-1, head_dim).index_select(0, flat).view(batch, heads, rows, kept, head_dim)
    v_kept = v.reshape(-1, head_dim).index_select(0, flat).view(batch, heads, rows, kept, head_dim)
    sparse_scores = q[:, :, dense_rows:, None] @ k_kept.transpose(-2, -1)  # [B, H, M, 1, n]
    sparse_probs = sparse_scores.softmax(dim=-1)
    parts.append((sparse_probs @ v_kept).squeeze(-2))
    attn_map = None
    if need_map:
        attn_map = sparse_probs.new_zeros(batch, length, length)  # softmax dtype (fp32 under autocast)
        if dense_rows:
            attn_map[:, :dense_rows] = dense_probs.detach().mean(dim=1)
        attn_map[:, dense_rows:].scatter_(-1, conn, sparse_probs.detach().squeeze(-2).mean(dim=1))
    return torch.cat(parts, dim=2), attn_map


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf), as DeiT
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per example while training."""

    def __init__(self, prob: float) -> None:
        super().__init__()
        self.prob = prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.prob == 0.0:
            return x
        keep = 1.0 - self.prob
        alive = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(keep)
        return x * alive / keep


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden)


class VisionTransformer(nn.Module):
    """DeiT-style ViT; `forward(x, keep_token, keep_attn)` applies the TA-selectors at runtime ratios."""

    def __init__(
        self,
        cfg: ViTConfig,
        token_policy: TokenPolicy | str | None = None,
        attn_policy: AttentionPolicy | str | None = None,
        attn_impl: str = "gather",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        self.cfg = cfg
        self.token_policy = make_token_policy(token_policy)
        self.attn_policy = make_attention_policy(attn_policy)
        self.attn_impl = attn_impl
        # Check the selectors' index values with host syncs on accelerators too (CPU always checks;
        # otherwise accelerators assert on the device, without stalling the host).
        self.debug_checks = False
        dim = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cfg.cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, dim))
        rates = torch.linspace(0, drop_path, cfg.depth).tolist()  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, cfg.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self, x: Tensor, keep_token: float = 1.0, keep_attn: float = 1.0, return_info: bool = False
    ) -> Tensor | tuple[Tensor, ForwardInfo]:
        cfg = self.cfg
        expected = (cfg.in_chans, cfg.img_size, cfg.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected images [B, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        keep_count(keep_token, 1)  # validate both ratios up front
        keep_count(keep_attn, 1)
        batch = x.shape[0]
        dense_rows = int(cfg.cls_token)
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(batch, -1, -1), x], dim=1)
        x = x + self.pos_embed
        conn: Tensor | None = None
        patch_ids = torch.arange(cfg.num_patches, device=x.device).expand(batch, -1)
        tokens, keys, kept_patches, connections = [], [], [], []
        cls_attn_var = None
        last = cfg.depth - 1
        for i, block in enumerate(self.blocks):
            prune = i in cfg.prune_blocks
            tokens.append(x.shape[1])
            keys.append(x.shape[1] if conn is None else conn.shape[-1])
            normed = block.norm1(x)
            h, attn_map = block.attn(
                normed, conn, dense_rows, self.attn_impl, prune or (return_info and i == last)
            )
            x = x + block.drop_path(h)
            if return_info and i == last:
                cls_attn_var = _attention_variance(attn_map, cfg.cls_token)
            if prune:
                conn_map = attn_map
                if self.attn_policy.score_map == "logit_magnitude":
                    conn_map = block.attn.logit_magnitude(normed, conn, dense_rows)
                x, conn, patch_ids = self._ta_select(x, attn_map, keep_token, keep_attn, patch_ids, conn_map)
                kept_patches.append(patch_ids)
                connections.append(conn)
            x = x + block.drop_path(block.mlp(block.norm2(x)))
        x = self.norm(x)
        logits = self.head(x[:, 0] if cfg.cls_token else x.mean(dim=1))
        if not return_info:
            return logits
        return logits, ForwardInfo(cls_attn_var, tokens, keys, kept_patches, connections)

    def _ta_select(
        self,
        x: Tensor,
        attn_map: Tensor,
        keep_token: float,
        keep_attn: float,
        patch_ids: Tensor,
        conn_map: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Gather the kept tokens (plus any the token policy merges from the rest), then choose the
        kept connections inside the kept set, ranked on `conn_map` (default: `attn_map`)."""
        has_cls = self.cfg.cls_token
        r = int(has_cls)
        batch, length, dim = x.shape
        n = length - r
        k = keep_count(keep_token, n)
        with torch.no_grad():
            scores = self.token_policy.scores(attn_map, has_cls)
            idx = self.token_policy.select(scores, k)
        _check_indices(idx, (batch, k), n, "token", self.debug_checks)
        patches = x[:, r:].gather(1, idx[..., None].expand(-1, -1, dim))
        merged = self.token_policy.merge(x[:, r:], scores, idx) if k < n else None
        x = torch.cat([x[:, :r], patches, *([] if merged is None else [merged])], dim=1)
        patch_ids = patch_ids.gather(1, idx)
        k_attn = keep_count(keep_attn, k)
        if merged is not None:  # merged tokens have no place in the attention map yet: dense attention
            if k_attn < k:
                raise ValueError(f"token policy {self.token_policy.name!r} merges tokens; use keep_attn 1")
            return x, None, torch.cat([patch_ids, patch_ids.new_full(merged.shape[:2], -1)], dim=1)
        if k_attn == k:
            return x, None, patch_ids
        with torch.no_grad():
            ranked = attn_map if conn_map is None else conn_map
            sub = ranked[:, r:, r:].gather(1, idx[:, :, None].expand(-1, -1, n))
            sub = sub.gather(2, idx[:, None, :].expand(-1, k, -1))  # [B, k, k] kept patch x kept patch
            grid = self.cfg.img_size // self.cfg.patch_size
            keys = self.attn_policy.select_at(sub, k_attn, patch_ids, grid)
        _check_indices(keys, (batch, k, k_attn), k, "attention", self.debug_checks)
        conn = keys + r
        if has_cls:  # every patch query keeps the [CLS] key
            conn = torch.cat([conn.new_zeros(batch, k, 1), conn], dim=-1)
        return x, conn, patch_ids


def _attention_variance(attn_map: Tensor, has_cls: bool) -> Tensor:
    scores = attn_map[:, 0, 1:] if has_cls else attn_map.sum(dim=1)
    if scores.dtype in (torch.float16, torch.bfloat16):  # autocast: rank examples in fp32
        scores = scores.float()
    return scores.var(dim=-1, correction=0)


def _check_indices(
    idx: Tensor, shape: tuple[int, ...], bound: int, kind: str, host_sync: bool = False
) -> None:
    """A policy's output must be ascending, distinct indices in 0..bound-1 of the expected shape.

    Shape and dtype are host metadata (free). The values are checked on the host (ValueError) on the
    CPU or with ``host_sync``; on an accelerator they become device-side asserts, which cost no
    device-to-host synchronization (a failure surfaces at the next sync as a device error)."""
    if tuple(idx.shape) != shape or idx.dtype != torch.long:
        raise ValueError(f"{kind} policy returned {tuple(idx.shape)} {idx.dtype}, expected {shape} int64")
    if torch.compiler.is_exporting() or not idx.numel():  # values cannot be traced; ONNX tests compare
        return
    in_range = (idx.min() >= 0) & (idx.max() < bound)
    ascending = (idx[..., 1:] > idx[..., :-1]).all()
    if idx.device.type != "cpu" and not host_sync:
        torch._assert_async(in_range, f"{kind} policy returned indices outside 0..{bound - 1}")
        torch._assert_async(ascending, f"{kind} policy must return strictly ascending indices per row")
        return
    if not bool(in_range):
        raise ValueError(f"{kind} policy returned indices outside 0..{bound - 1}")
    if not bool(ascending):
        raise ValueError(f"{kind} policy must return strictly ascending indices per row")


_MODEL_ARGS = ("token_policy", "attn_policy", "attn_impl", "drop_path")


def build_model(name_or_cfg: str | ViTConfig, **overrides) -> VisionTransformer:
    """Build a model from a config name or ViTConfig; other keywords override config fields
    (e.g. num_classes=10), except token_policy/attn_policy/attn_impl/drop_path, which go to the model.
    A timm model name (``TIMM_CONFIGS``: swin_*, pit_*) builds that timm model with the token level
    patched in (`trilevel.baselines.timm_models.build_timm_model`; same forward signature)."""
    if isinstance(name_or_cfg, str) and name_or_cfg in TIMM_CONFIGS:
        from trilevel.baselines.timm_models import build_timm_model

        return build_timm_model(name_or_cfg, **overrides)  # type: ignore[return-value]
    model_args = {key: overrides.pop(key) for key in _MODEL_ARGS if key in overrides}
    if isinstance(name_or_cfg, ViTConfig):
        cfg = dataclasses.replace(name_or_cfg, **overrides) if overrides else name_or_cfg
    else:
        cfg = get_config(name_or_cfg, **overrides)
    return VisionTransformer(cfg, **model_args)


__all__ = ["ATTN_IMPLS", "ForwardInfo", "VisionTransformer", "build_model", "connection_mask", "token_plan"]
