"""Swin and PiT from timm as `trilevel train --model` choices (torch backend): building them with the
token level patched in (`trilevel.baselines.swin`, `trilevel.baselines.pit`), what a run may ask of
them, and their token plan for MAC counting (`trilevel.macs.TimmMacCounter`).

Pruning in these models is a keep mask over the feature map (docs/baselines.md): the dense kernels
still run every token, so the trainer reports the algorithmic MACs (pruned tokens skipped) as
``macs_per_image`` and the dense ones it executes as ``macs_executed_per_image``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from trilevel.config import TimmModelConfig, get_timm_config, keep_count


def build_timm_model(
    cfg: TimmModelConfig | str,
    *,
    drop_path: float | None = None,
    attn_impl: str | None = None,
    token_policy: str | None = None,
    attn_policy: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """A randomly initialized timm Swin/PiT with token pruning, ``model.cfg`` its config. ``overrides``
    (img_size, in_chans, num_classes) size it for the data; the other keywords are the golden model's
    (`trilevel.model.build_model`) and are refused where they do not apply."""
    if isinstance(cfg, str):
        cfg = get_timm_config(cfg)
    if overrides:
        cfg = dataclasses.replace(cfg, **overrides)
    chosen = [flag for flag, value in (("token_policy", token_policy), ("attn_policy", attn_policy)) if value]
    if chosen:
        raise ValueError(f"{', '.join(chosen)}: for the ViT models only, not {cfg.name}")
    if attn_impl == "gather":
        raise ValueError(f"attn_impl gather: {cfg.name} prunes with a keep mask (dense kernels); use mask")
    import timm  # ~1 s: only when such a model is built

    kwargs: dict[str, Any] = dict(cfg.timm_kwargs)
    kwargs.update(img_size=cfg.img_size, in_chans=cfg.in_chans, num_classes=cfg.num_classes)
    if drop_path:
        kwargs["drop_path_rate"] = drop_path
    try:
        model = timm.create_model(cfg.timm_name, pretrained=False, **kwargs)
    except (AssertionError, RuntimeError) as err:  # timm asserts on sizes it cannot tile
        raise ValueError(f"{cfg.name} at {cfg.img_size}px: timm refuses the size ({err})") from None
    if cfg.family == "swin":
        from trilevel.baselines.swin import apply_token_pruning
    else:
        from trilevel.baselines.pit import apply_token_pruning

        if min(model.patch_embed.grid_size) < 1:  # timm builds it, the first forward would fail
            patch = model.patch_embed.patch_size[0]
            raise ValueError(
                f"{cfg.name}: {cfg.img_size}px images are smaller than its {patch}px patches; use larger "
                "images (--img-size) or pit_demo"
            )
    model = apply_token_pruning(model, cfg.prune_blocks)  # type: ignore[arg-type]
    model.cfg = cfg
    return model


def check_timm_run(model: str, settings: dict[str, Any]) -> None:
    """Refuse, in one line (ValueError), what the patched timm models do not implement. ``settings``:
    the run's TrainConfig fields (keep_attn, method, compile, init, token_policy, attn_policy)."""
    why = {
        "--keep-attn < 1": settings.get("keep_attn", 1.0) < 1.0,  # windows re-partition every block
        "--method": settings.get("method") is not None,
        "--compile": bool(settings.get("compile")),
        "--init": settings.get("init") is not None,
        "--token-policy": settings.get("token_policy") is not None,
        "--attn-policy": settings.get("attn_policy") is not None,
    }
    bad = [flag for flag, refused in why.items() if refused]
    if bad:
        raise ValueError(
            f"--model {model}: {', '.join(bad)} not supported for Swin/PiT (the token and example levels "
            "only; --compile and --init are the golden ViT's; docs/baselines.md)"
        )


def timm_token_plan(dense_tokens: list[int], cfg: TimmModelConfig, keep_token: float) -> list[int]:
    """Kept tokens (incl. [CLS] for PiT) entering each block at ``keep_token``, given the tokens per
    block of a dense pass. Each selector keeps ``keep_count(R_T, n)``; a merged (Swin) or pooled (PiT)
    token is kept if any child was, which depends on where the kept tokens lie, so the plan takes the
    upper bound ``min(n, N_next)`` (kept tokens spread out), and the MACs saving it gives is a lower
    bound."""
    cls = int(cfg.cls_token)
    plan, kept = [], dense_tokens[0] - cls
    for block, total in enumerate(dense_tokens):
        if block and total != dense_tokens[block - 1]:  # a new stage: merged / pooled grid
            kept = min(kept, total - cls)
        plan.append(kept + cls)
        if block in cfg.prune_blocks:
            kept = keep_count(keep_token, kept)
    return plan
