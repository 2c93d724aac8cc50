"""Start a trilevel model from a timm or DeiT checkpoint file (`trilevel train --init PATH`).

The golden model's parameter names are timm's VisionTransformer names, so a DeiT state dict loads
as it is; this module unwraps the usual containers, resamples the position embedding to another
image size, and leaves the classifier at its initialization when the number of classes differs
(fine-tuning). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Keys of the checkpoint dicts that DeiT's main.py and timm's train.py write around the weights.
_CONTAINERS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")
_HEAD = ("head.weight", "head.bias")


def _unwrap(state: Any) -> dict[str, Tensor]:
    while isinstance(state, dict):
        inner = next((state[k] for k in _CONTAINERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError("expected a state dict of tensors (optionally under 'model' or 'state_dict')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_init(model: nn.Module, path: str | Path) -> list[str]:
    """Copy a timm/DeiT checkpoint's weights into ``model``; returns notes on what was adapted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--init checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files that are not checkpoints
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--init {path} is not a readable torch checkpoint: {first_line}") from None
    try:
        state = _unwrap(raw)
    except ValueError as err:
        raise ValueError(f"--init {path}: {err}") from None
    if "dist_token" in state:
        raise ValueError(f"--init {path} is a distilled DeiT (dist_token); use a non-distilled checkpoint")
    own = model.state_dict()
    notes = []
    pos = state.get("pos_embed")
    if pos is not None and pos.shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        grid = int((own["pos_embed"].shape[1] - 1) ** 0.5)
        state["pos_embed"] = resample_abs_pos_embed(pos, new_size=(grid, grid), num_prefix_tokens=1)
        notes.append(f"pos_embed resampled from {tuple(pos.shape)} to {tuple(own['pos_embed'].shape)}")
    if any(k in state and state[k].shape != own[k].shape for k in _HEAD):
        for key in _HEAD:
            state.pop(key, None)
        notes.append(f"classifier left at its initialization ({model.head.out_features} classes)")
    wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3])
        raise ValueError(f"--init {path} does not fit the model: {shapes}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in _HEAD]
    if missing or unexpected:
        raise ValueError(
            f"--init {path} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return notes
