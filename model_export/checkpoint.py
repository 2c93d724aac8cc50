"""Read and write PyTorch checkpoints in the shapes this project meets.

Accepted inputs: a plain state dict, or a dict holding one under ``model`` (DeiT and `trilevel train`
checkpoints) or ``state_dict``. The model config comes from the checkpoint's ``config`` entry when it
has one (a ViTConfig, its field dict, or a config name), otherwise from the caller.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from model_export.pack import ExportError, config_to_json
from trilevel.config import ViTConfig, get_config
from trilevel.fileio import atomic_write


class CheckpointError(ExportError):
    """A checkpoint that cannot be read or does not fit the requested model."""


def _state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return dict(obj)
    raise CheckpointError(
        f"{source}: no state dict found (expected tensors, or a 'model'/'state_dict' entry)"
    )


def _config_of(obj: Any) -> ViTConfig | None:
    cfg = obj.get("config") if isinstance(obj, Mapping) else None
    if isinstance(cfg, ViTConfig):
        return cfg
    if isinstance(cfg, str):
        return get_config(cfg)
    if isinstance(cfg, Mapping):
        fields = {f.name for f in dataclasses.fields(ViTConfig)}
        if fields <= set(cfg):
            values = {k: cfg[k] for k in fields}
            values["prune_blocks"] = tuple(values["prune_blocks"])
            return ViTConfig(**values)
    return None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ViTConfig | None]:
    """(state dict, config if the checkpoint records one)."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: cannot load checkpoint: {e}") from None
    try:
        cfg = _config_of(obj)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid 'config' entry: {e}") from None
    return _state_dict_of(obj, str(path)), cfg


def resolve_config(ckpt_cfg: ViTConfig | None, model: str | None, source: str) -> ViTConfig:
    """The checkpoint's own config, else the named one; both given must agree."""
    if model is None:
        if ckpt_cfg is None:
            raise CheckpointError(f"{source}: the checkpoint records no model config; pass --model")
        return ckpt_cfg
    named = get_config(model)
    if ckpt_cfg is not None and ckpt_cfg != named:
        raise CheckpointError(
            f"{source}: the checkpoint's config {ckpt_cfg.name!r} differs from --model {model!r}"
        )
    return named


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], cfg: ViTConfig) -> None:
    """Atomically write ``{"model": state_dict, "config": <ViTConfig fields>}``."""
    obj = {"model": dict(state_dict), "config": config_to_json(cfg)}
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
