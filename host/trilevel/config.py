"""Model configurations shared by the golden model, the integer reference and the accelerator host."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ViTConfig:
    name: str
    img_size: int
    patch_size: int
    in_chans: int
    num_classes: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    # 0-based blocks after whose attention a TA-selector prunes tokens and connections.
    prune_blocks: tuple[int, ...]
    cls_token: bool = True

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + int(self.cls_token)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        bad = [b for b in self.prune_blocks if not 0 <= b < self.depth]
        if bad or list(self.prune_blocks) != sorted(set(self.prune_blocks)):
            raise ValueError(
                f"prune_blocks {self.prune_blocks} must be increasing and within 0..{self.depth - 1}"
            )


CONFIGS: dict[str, ViTConfig] = {
    # 8x8 digits, 2x2 patches: 16 patches + [CLS]; trains in minutes on 2 CPU cores.
    "demo": ViTConfig("demo", 8, 2, 1, 10, 64, 6, 4, 2.0, (1, 3, 4)),
    "deit_tiny": ViTConfig("deit_tiny", 224, 16, 3, 1000, 192, 12, 3, 4.0, (3, 6, 9)),
    "deit_small": ViTConfig("deit_small", 224, 16, 3, 1000, 384, 12, 6, 4.0, (3, 6, 9)),
    "deit_base": ViTConfig("deit_base", 224, 16, 3, 1000, 768, 12, 12, 4.0, (3, 6, 9)),
    # Without [CLS]: the head reads the mean of all tokens; the TA-selector scores tokens by the
    # attention they receive (column sums), the example filter uses those scores' variance.
    "demo_gap": ViTConfig("demo_gap", 8, 2, 1, 10, 64, 6, 4, 2.0, (1, 3, 4), cls_token=False),
    "deit_tiny_gap": ViTConfig("deit_tiny_gap", 224, 16, 3, 1000, 192, 12, 3, 4.0, (3, 6, 9), False),
    "deit_small_gap": ViTConfig("deit_small_gap", 224, 16, 3, 1000, 384, 12, 6, 4.0, (3, 6, 9), False),
}


@dataclass(frozen=True)
class TimmModelConfig:
    """A timm model with Tri-Level's token level patched into its modules (`trilevel.baselines.swin`,
    `trilevel.baselines.pit`; built by `trilevel.baselines.timm_models.build_timm_model`)."""

    name: str
    family: str  # "swin" (no [CLS]: cumulative-attention scores) | "pit" ([CLS] attention scores)
    timm_name: str  # the timm.create_model name
    img_size: int
    in_chans: int
    num_classes: int
    # Global block indices after whose attention a TA-selector prunes tokens (a keep mask).
    prune_blocks: tuple[int, ...]
    # Architecture overrides for timm.create_model (the demo-sized variants), as (key, value) pairs.
    timm_kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def cls_token(self) -> bool:
        return self.family == "pit"


TIMM_CONFIGS: dict[str, TimmModelConfig] = {
    "swin_tiny": TimmModelConfig(
        "swin_tiny", "swin", "swin_tiny_patch4_window7_224", 224, 3, 1000, (3, 6, 9)
    ),
    "pit_ti": TimmModelConfig("pit_ti", "pit", "pit_ti_224", 224, 3, 1000, (3, 6, 9)),
    "pit_s": TimmModelConfig("pit_s", "pit", "pit_s_224", 224, 3, 1000, (3, 6, 9)),
    # Demo sizes for 8x8 digits, 6 blocks as the demo ViT. Swin: 2x2 patches and 2x2 windows, 4 + 2
    # blocks (16 tokens in 4 windows, shifted every other block, then 4 after patch merging), selectors
    # after blocks 1 and 3 (a selector in the 4-token stage would leave too few tokens for the example
    # filter's variance; 1x1 patches learned digits poorly: 79% in 16 epochs against 94%). PiT: 2x2
    # patches at stride 1, 2 + 4 blocks (49 tokens + [CLS], then 16 after pooling), selectors after
    # 1, 3, 4 as the demo ViT.
    "swin_demo": TimmModelConfig(
        "swin_demo", "swin", "swin_tiny_patch4_window7_224", 8, 1, 10, (1, 3),
        (("patch_size", 2), ("window_size", 2), ("embed_dim", 32), ("depths", (4, 2)),
         ("num_heads", (2, 4)), ("mlp_ratio", 2.0)),
    ),  # fmt: skip
    "pit_demo": TimmModelConfig(
        "pit_demo", "pit", "pit_ti_224", 8, 1, 10, (1, 3, 4),
        (("patch_size", 2), ("stride", 1), ("base_dims", (16, 16)), ("depth", (2, 4)), ("heads", (2, 4)),
         ("mlp_ratio", 2.0)),
    ),  # fmt: skip
}
# Every --model name of `trilevel train` / `trilevel compare` (the torch trainer).
MODEL_NAMES: tuple[str, ...] = tuple(sorted([*CONFIGS, *TIMM_CONFIGS]))


def get_timm_config(name: str, **overrides) -> TimmModelConfig:
    """A timm model config by name; keyword overrides (img_size, in_chans, num_classes) replace fields."""
    try:
        cfg = TIMM_CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown timm model {name!r}; choose from {', '.join(TIMM_CONFIGS)}") from None
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def model_config(name: str) -> ViTConfig | TimmModelConfig:
    """The config of any trainable model name (a golden ViT or a patched timm model)."""
    if name in TIMM_CONFIGS:
        return TIMM_CONFIGS[name]
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}") from None


def get_config(name: str, **overrides) -> ViTConfig:
    """Look up a named config; keyword overrides (e.g. num_classes=10, img_size=32) replace fields."""
    try:
        cfg = CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(CONFIGS)}") from None
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


def keep_count(ratio: float, n: int) -> int:
    """ceil(ratio * n) clamped to 1..n, immune to float noise (0.7 * 10 = 7.000000000000001 keeps 7).

    The one definition of "how many to keep" used by the golden model, the integer reference,
    the kernels' host drivers and the RTL test vectors.
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"keep ratio must be in (0, 1], got {ratio}")
    return min(n, max(1, math.ceil(ratio * n - 1e-6)))
