"""The torch trainer's input pipeline, built to keep a GPU fed.

* One training and one evaluation `DataLoader` per run: workers (default: the process's share of the
  available cores wherever items need decoding or augmenting) persist across epochs, memory is pinned
  on CUDA, and images travel as stored (uint8 for CIFAR-10 and image folders).
* `ActiveSampler` follows the example filter: each epoch it shuffles the current active subset by
  (seed, epoch) and hands this rank its shard; with ``repeats > 1`` it is timm's `RepeatAugSampler`
  (DeiT's repeated augmentation) over the active subset.
* `DeviceBatch` finishes a batch on the device: normalization (and resize), then for training timm's
  `RandomErasing` and `Mixup` (mixup / cutmix, soft targets with label smoothing).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from trilevel.data import Normalization

# RepeatAugSampler seeds its shuffle with the epoch alone; offsetting the epoch by the seed makes the
# order a function of (seed, epoch) like the plain sampler's.
_SEED_STRIDE = 1_000_003


class ActiveSampler(Sampler[int]):
    """Dataset indices of the active subset for one rank, reshuffled every epoch."""

    def __init__(self, active: np.ndarray, world: int, rank: int, seed: int, repeats: int = 1) -> None:
        self.world, self.rank, self.seed, self.repeats = world, rank, seed, repeats
        self.epoch = 0
        self.set_active(active)

    def set_active(self, active: np.ndarray) -> None:
        self.active = np.asarray(active, dtype=np.int64)
        positions = range(len(self.active))
        if self.repeats > 1:
            from timm.data.distributed_sampler import RepeatAugSampler

            self._inner: Any = RepeatAugSampler(
                positions, num_replicas=self.world, rank=self.rank, shuffle=True, num_repeats=self.repeats
            )
        else:
            self._inner = DistributedSampler(
                positions, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.seed
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        offset = self.seed * _SEED_STRIDE if self.repeats > 1 else 0
        self._inner.set_epoch(offset + self.epoch)
        return (int(self.active[i]) for i in self._inner)

    def __len__(self) -> int:
        return len(self._inner)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def needs_workers(dataset: Dataset) -> bool:
    """Whether items cost real work (decoding, augmentation); in-memory tensors without a transform
    are cheaper to index in the main process than to pass between processes."""
    return getattr(dataset, "samples", None) is not None or getattr(dataset, "augment", None) is not None


def default_workers(dataset: Dataset) -> int:
    """Cores per local process for datasets that need workers, else 0."""
    if not needs_workers(dataset):
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, available_cores() // max(1, local))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    device: torch.device,
    sampler: Sampler[int] | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A loader meant to live for the whole run (persistent workers, pinned memory on CUDA)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=drop_last,
    )


class DeviceBatch:
    """Moves a batch to the device and finishes it there: normalize (and resize), and for training
    random erasing and mixup/cutmix. Returns (images, targets, labels): targets are soft (mixup) or
    the labels."""

    def __init__(
        self,
        normalization: Normalization,
        device: torch.device,
        num_classes: int,
        reprob: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        self.normalization, self.device = normalization, device
        self.erase = None
        self.mix = None
        if reprob > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(reprob, mode="pixel", max_count=1, device=str(device))
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mix = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                label_smoothing=label_smoothing, num_classes=num_classes,
            )

    @property
    def soft_targets(self) -> bool:
        return self.mix is not None

    def __call__(self, images: Tensor, labels: Tensor, train: bool) -> tuple[Tensor, Tensor, Tensor]:
        images = self.normalization(images.to(self.device, non_blocking=True))
        labels = labels.to(self.device, non_blocking=True)
        targets = labels
        if train and self.erase is not None:
            images = self.erase(images)
        if train and self.mix is not None:
            images, targets = self.mix(images, labels)
        return images, targets, labels
