"""Read and write PyTorch checkpoints in the shapes this project meets.

Accepted inputs: a plain state dict, or a dict holding one under ``model`` (DeiT and `trilevel train
--backend torch` checkpoints) or ``state_dict``, or a layer-wise trainer checkpoint (`trilevel train
--backend reference|csim|pynq`: its fp32 master weights under ``net``). The model config comes from the
checkpoint's ``model_config`` entry (the trainers record the exact ViTConfig fields), else its
``config`` entry when that describes a model (a ViTConfig, its field dict, or a config name), otherwise
from the caller. Files are read with ``torch.load(weights_only=True)``: no code runs on loading.
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
from trilevel.userinput import unreadable


class CheckpointError(ExportError):
    """A checkpoint that cannot be read or does not fit the requested model."""


def _layerwise_masters(obj: Any, cfg: ViTConfig | None) -> dict[str, torch.Tensor] | None:
    """The golden-model state dict of a layer-wise trainer checkpoint (None if `obj` is not one): its
    fp32 master weights, the patch embedding stored [D, C*p*p] given back its conv shape."""
    net = obj.get("net") if isinstance(obj, Mapping) else None
    weights = net.get("weights") if isinstance(net, Mapping) else None
    master = weights.get("master") if isinstance(weights, Mapping) else None
    if not isinstance(master, Mapping) or cfg is None:
        return None
    state = {k: torch.as_tensor(v) for k, v in master.items()}
    name = "patch_embed.proj.weight"
    if name in state:
        p = cfg.patch_size
        state[name] = state[name].reshape(cfg.embed_dim, cfg.in_chans, p, p)
    return state


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
    if not isinstance(obj, Mapping):
        return None
    for key in ("model_config", "config"):  # a trainer's "config" is its run settings, not a model
        cfg = _config_from(obj.get(key))
        if cfg is not None:
            return cfg
    return None


def _config_from(cfg: Any) -> ViTConfig | None:
    if isinstance(cfg, ViTConfig):
        return cfg
    if isinstance(cfg, str):
        return get_config(cfg)
    if isinstance(cfg, Mapping):  # ViTConfig fields; those with defaults may be absent (older files)
        fields = dataclasses.fields(ViTConfig)
        required = {f.name for f in fields if f.default is dataclasses.MISSING}
        if required <= set(cfg):
            values = {f.name: cfg[f.name] for f in fields if f.name in cfg}
            values["prune_blocks"] = tuple(values["prune_blocks"])
            return ViTConfig(**values)
    return None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ViTConfig | None]:
    """(state dict, config if the checkpoint records one)."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint") from None
    except Exception as e:  # torch raises many types for corrupt files (zip, pickle, EOF, ...)
        raise CheckpointError(unreadable(path, e)) from None
    model_cfg = obj.get("model_config") if isinstance(obj, Mapping) else None
    if isinstance(model_cfg, Mapping) and "timm_name" in model_cfg:  # trilevel train --model swin_*/pit_*
        raise CheckpointError(
            f"{path}: {model_cfg.get('name')!r} is a timm Swin/PiT model; ONNX export and the board pack "
            "take the ViT models only (its 'model' entry is a timm state dict for timm.create_model)"
        )
    try:
        cfg = _config_of(obj)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config entry: {e}") from None
    masters = _layerwise_masters(obj, cfg)
    return (masters if masters is not None else _state_dict_of(obj, str(path))), cfg


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
