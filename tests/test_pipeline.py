"""Input pipeline: the active-subset sampler, device-side batch finishing, persistent loaders."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from trilevel.data import AugmentSpec, Normalization, TensorImageDataset, load_dataset
from trilevel.pipeline import ActiveSampler, DeviceBatch, default_workers, make_loader


def test_active_sampler_shards_the_active_subset_and_follows_it():
    active = np.arange(0, 200, 2)  # 100 active examples
    ranks = [ActiveSampler(active, world=2, rank=r, seed=5) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    shards = [list(s) for s in ranks]
    assert [len(s) for s in shards] == [50, 50] and sorted(shards[0] + shards[1]) == active.tolist()
    again = ActiveSampler(active, world=2, rank=0, seed=5)
    again.set_epoch(3)
    assert list(again) == shards[0]  # a function of (seed, epoch)
    again.set_epoch(4)
    assert list(again) != shards[0]
    other_seed = ActiveSampler(active, world=2, rank=0, seed=6)
    other_seed.set_epoch(3)
    assert list(other_seed) != shards[0]
    again.set_active(np.array([7, 9, 11, 13]))
    picked = list(again)
    assert len(again) == len(picked) == 2 and set(picked) <= {7, 9, 11, 13}


def test_repeated_augmentation_presents_each_image_three_times_across_ranks():
    active = np.arange(512) * 3
    ranks = [ActiveSampler(active, world=2, rank=r, seed=0, repeats=3) for r in (0, 1)]
    shards = [list(s) for s in ranks]
    # timm's RepeatAugSampler: each rank gets len / world samples of the 3x repeated, shuffled list.
    assert [len(s) for s in shards] == [256, 256]
    counts = Counter(shards[0] + shards[1])
    assert set(counts) <= set(active.tolist()) and max(counts.values()) <= 3
    assert sum(c > 1 for c in counts.values()) > 50  # repeats land in the same epoch


def test_device_batch_normalizes_mixes_and_erases():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    labels = torch.arange(8) % 4
    norm = Normalization(255.0, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), 8)
    plain = DeviceBatch(norm, torch.device("cpu"), 4)
    x, targets, y = plain(images, labels, train=True)
    want = torch.nn.functional.interpolate(
        (images.float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / 0.2, size=(8, 8),
        mode="bilinear", antialias=True,
    )
    assert x.shape == (8, 3, 8, 8) and torch.allclose(x, want, atol=1e-5)
    assert torch.equal(targets, labels) and torch.equal(y, labels) and not plain.soft_targets
    mixing = DeviceBatch(norm, torch.device("cpu"), 4, mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    x_mix, soft, y = mixing(images, labels, train=True)
    assert mixing.soft_targets and soft.shape == (8, 4) and torch.allclose(soft.sum(-1), torch.ones(8))
    assert not torch.allclose(x_mix, want) and torch.equal(y, labels)
    erasing = DeviceBatch(norm, torch.device("cpu"), 4, reprob=1.0)
    x_erased, _, _ = erasing(images, labels, train=True)
    assert (x_erased != want).any(dim=(1, 2, 3)).all()  # every image got a patch
    x_eval, _, _ = erasing(images, labels, train=False)
    assert torch.allclose(x_eval, want, atol=1e-5)  # evaluation batches are never erased or mixed


def test_loader_workers_persist_and_default_by_dataset(tmp_path):
    digits, _ = load_dataset("digits")
    assert default_workers(digits) == 0  # in-memory tensors: the main process
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    augmented = TensorImageDataset(images, torch.arange(12) % 3, 3, (0.5,) * 3, (0.25,) * 3,
                                   augment=AugmentSpec(auto_augment=None), img_size=8)
    assert default_workers(augmented) >= 1
    augmented.raw = True
    sampler = ActiveSampler(np.arange(12), world=1, rank=0, seed=0)
    loader = make_loader(augmented, 4, 1, torch.device("cpu"), sampler)
    first = [batch[2] for batch in loader]
    workers = loader._iterator._workers
    sampler.set_epoch(1)
    second = [batch[2] for batch in loader]
    assert loader._iterator._workers is workers  # the same worker processes serve the next epoch
    assert first[0].dtype == torch.int64 and sorted(torch.cat(second).tolist()) == list(range(12))
    batch = next(iter(loader))[0]
    assert batch.dtype == torch.uint8 and batch.shape == (4, 3, 8, 8)  # uint8 travels


@pytest.mark.parametrize("bad", [{"reprob": 1.5}, {"repeated_aug": 0}])
def test_recipe_values_are_checked(bad):
    from trilevel.train_torch import TrainConfig

    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(out="x", **bad).resolved(full_recipe=True)
