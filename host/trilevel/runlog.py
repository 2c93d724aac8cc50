"""Run bookkeeping shared by every trainer backend (torch, reference, csim, pynq): the per-epoch metrics
schema and its JSON-lines log, atomic checkpoints and RNG capture/restore for exact resumption.

Checkpoints hold only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads them:
numpy arrays are stored as tensors and converted back by the consumers (``np.asarray``).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from trilevel.fileio import atomic_write

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"


class EpochMetrics(TypedDict):
    """One line of ``metrics.jsonl`` (one per epoch). Ratios are those in force at the epoch's end."""

    epoch: int  # 1-based number of the epoch just finished
    wall_s: float  # training + evaluation time of this epoch
    images: int  # training images processed this epoch (all ranks)
    active_examples: int  # size of the example filter's active subset this epoch
    keep_example: float
    keep_token: float
    keep_attn: float
    lr: float  # learning rate at the epoch's last step
    train_loss: float  # mean over the epoch's training images
    train_top1: float  # on the training images as presented (augmented, sparse forward)
    test_top1: float  # on the test split at the ratios in force
    macs_per_image: int  # forward MACs per image at the ratios in force (FlopCounterMode)
    train_macs: int  # training MACs (forward + backward, counted) spent this epoch
    cumulative_wall_s: float
    cumulative_images: int
    cumulative_train_macs: int
    filter_round: bool  # whether a remove-and-restore round ran at this epoch's end


METRIC_KEYS: tuple[str, ...] = tuple(EpochMetrics.__annotations__)


def append_metrics(out_dir: str | Path, record: EpochMetrics | dict[str, Any]) -> None:
    """Append one record as a JSON line to ``out_dir/metrics.jsonl`` (flushed and fsynced)."""
    missing = [key for key in METRIC_KEYS if key not in record]
    if missing:
        raise ValueError(f"metrics record lacks {missing}")
    path = Path(out_dir) / METRICS_FILE
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(out_dir: str | Path, last_epoch: int) -> list[dict[str, Any]]:
    """Drop records after ``last_epoch`` (written after the last checkpoint of an interrupted run)."""
    kept = [r for r in read_metrics(out_dir) if r["epoch"] <= last_epoch]
    path = Path(out_dir) / METRICS_FILE
    if path.exists():
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return kept


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through `atomic_write`: a crash leaves either the old or the new checkpoint."""
    atomic_write(path, lambda tmp: torch.save(to_checkpoint_safe(obj), tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def to_checkpoint_safe(obj: Any) -> Any:
    """Recursively turn numpy arrays/scalars into tensors/Python scalars (weights_only-loadable)."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {key: to_checkpoint_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_checkpoint_safe(value) for value in obj)
    return obj


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's legacy global, torch's CPU and every CUDA generator."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
