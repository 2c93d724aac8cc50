"""DynamicViT (Rao et al. 2021) trained from scratch, the paper's "DynamicViT*" row.

Before each block of ``cfg.prune_blocks`` a prediction module (an MLP on each token's local feature
concatenated with the mean feature of the tokens still kept) scores every patch token as keep / drop.
Training: a hard Gumbel-softmax sample (straight-through gradients) decides, decisions only shrink from
stage to stage, and dropped tokens stay in the tensor but vanish as keys from every other token's
attention (so training saves no MACs, as in the paper's "0%" time reduction). A keep-ratio loss
``weight * mean_s (mean_i keep_s,i - rho_s)^2`` pulls stage s toward ``rho_s = R_T^(s+1)`` of the
patches. Inference: each stage really keeps the ``keep_count(R_T, n)`` top-scored tokens. The
distillation losses of the original (a pretrained teacher) are not used: training is from scratch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trilevel.baselines import forward
from trilevel.baselines.methods import TrainingMethod, own_selector_config, register_method
from trilevel.config import ViTConfig, keep_count
from trilevel.macs import MacCounter
from trilevel.model import ForwardInfo, VisionTransformer
from trilevel.selectors import topk_indices


class KeepPredictor(nn.Module):
    """Per-token log-probabilities [B, N, 2] of (keep, drop) from local and kept-mean global features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.local = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.score = nn.Sequential(
            nn.Linear(dim, dim // 2),
            nn.GELU(),
            nn.Linear(dim // 2, dim // 4),
            nn.GELU(),
            nn.Linear(dim // 4, 2),
        )

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        h = self.local(x)
        local, global_ = h.split(h.shape[-1] // 2, dim=-1)
        weight = keep[..., None].to(h.dtype)
        global_ = (global_ * weight).sum(dim=1, keepdim=True) / weight.sum(dim=1, keepdim=True).clamp_min(
            1e-6
        )
        return self.score(torch.cat([local, global_.expand_as(local)], dim=-1)).log_softmax(dim=-1)

    def macs_per_token(self) -> int:
        return sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))


class DynamicViT(VisionTransformer):
    """The golden model plus one KeepPredictor per pruning stage; `forward` as VisionTransformer's."""

    def __init__(self, cfg: ViTConfig, **kwargs: Any) -> None:
        if not cfg.cls_token:
            raise ValueError("DynamicViT classifies from [CLS]; pick a model with a [CLS] token")
        super().__init__(cfg, **kwargs)
        self.predictors = nn.ModuleList(KeepPredictor(cfg.embed_dim) for _ in cfg.prune_blocks)
        self.last_decisions: list[Tensor] = []  # training: the stages' keep masks [B, N] of the last pass
        self.last_targets: list[float] = []

    def forward(
        self, x: Tensor, keep_token: float = 1.0, keep_attn: float = 1.0, return_info: bool = False
    ) -> Tensor | tuple[Tensor, ForwardInfo]:
        cfg = self.cfg
        keep_count(keep_token, 1)
        x = forward.embed(self, x)
        batch = x.shape[0]
        keep = x.new_ones(batch, cfg.num_patches)  # training: the current hard decisions
        patch_ids = torch.arange(cfg.num_patches, device=x.device).expand(batch, -1)
        self.last_decisions, self.last_targets = [], []
        tokens, kept_patches, cls_attn_var = [], [], None
        for i, block in enumerate(self.blocks):
            if i in cfg.prune_blocks:
                stage = cfg.prune_blocks.index(i)
                log_probs = self.predictors[stage](x[:, 1:], keep)
                if self.training:
                    keep = F.gumbel_softmax(log_probs, hard=True)[..., 0] * keep
                    self.last_decisions.append(keep)
                    self.last_targets.append(keep_token ** (stage + 1))
                else:
                    idx = topk_indices(
                        log_probs[..., 0].detach().float(), keep_count(keep_token, x.shape[1] - 1)
                    )
                    x = torch.cat(
                        [x[:, :1], x[:, 1:].gather(1, idx[..., None].expand(-1, -1, x.shape[2]))], dim=1
                    )
                    patch_ids = patch_ids.gather(1, idx)
                    keep = keep.gather(1, idx)
                kept_patches.append(patch_ids)
            tokens.append(x.shape[1])
            masked = self.training and bool(self.last_decisions)
            key_keep = torch.cat([keep.new_ones(batch, 1), keep], dim=1) if masked else None
            h, attn_map = forward.attention_with_keep(block.attn, block.norm1(x), key_keep)
            x = x + block.drop_path(h)
            if i == cfg.depth - 1:
                cls_attn_var = forward.attention_variance(attn_map, True)
            x = x + block.drop_path(block.mlp(block.norm2(x)))
        logits = forward.classify(self, x)
        if not return_info:
            return logits
        return logits, ForwardInfo(
            cls_attn_var, tokens, list(tokens), kept_patches, [None] * len(kept_patches)
        )

    def keep_ratio_loss(self) -> Tensor | None:
        """mean over stages and examples of (fraction kept - target)^2, for the last training pass."""
        if not self.last_decisions:
            return None
        losses = [
            (d.float().mean(dim=1) - t) ** 2
            for d, t in zip(self.last_decisions, self.last_targets, strict=True)
        ]
        return torch.stack(losses).mean()


@register_method("dynamicvit")
class DynamicViTMethod(TrainingMethod):
    """Train a DynamicViT; ``ratio_weight`` (default 2.0, the original's) scales the keep-ratio loss."""

    def __init__(self, ratio_weight: float = 2.0) -> None:
        if ratio_weight < 0:
            raise ValueError(f"ratio_weight must be >= 0, got {ratio_weight}")
        self.ratio_weight = ratio_weight
        self.kept_fraction: list[float] = []

    def build_model(self, name: str, **kwargs: Any) -> VisionTransformer:
        cfg, model_args = own_selector_config(self.name, name, kwargs)
        return DynamicViT(cfg, **model_args)

    def extra_loss(self, model: VisionTransformer) -> Tensor | None:
        loss = model.keep_ratio_loss()
        if model.last_decisions:
            self.kept_fraction = [float(d.detach().float().mean()) for d in model.last_decisions]
        return None if loss is None else self.ratio_weight * loss

    def count_macs(self, counter: MacCounter, keep_token: float, keep_attn: float, train: bool) -> int:
        """Training keeps every token (masking); inference drops them. Plus the predictors' MACs."""
        cfg = counter.cfg
        per_token = KeepPredictor(cfg.embed_dim).macs_per_token()
        if train:
            return counter.count(1.0, 1.0, train=True) + 3 * per_token * cfg.num_patches * len(
                cfg.prune_blocks
            )
        tokens, _ = counter.plan(keep_token, 1.0)
        # The predictor before block b sees the patches entering block b (the plan's pruning follows it).
        entering = [tokens[b] - 1 for b in cfg.prune_blocks]
        return counter.count(keep_token, 1.0) + per_token * sum(entering)

    def metrics(self) -> dict[str, Any]:
        return {"dynamicvit_kept_fraction": self.kept_fraction}
