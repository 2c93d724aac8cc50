"""Datasets: digits split, synthetic learnability, CIFAR-10 pickles, image folders, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from trilevel.data import AugmentSpec, load_dataset


def test_digits_split_is_stratified_normalized_and_indexed():
    train, test = load_dataset("digits", seed=0)
    assert (len(train), len(test)) == (1437, 360)
    image, label, index = train[5]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert isinstance(label, int) and index == 5
    all_train = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(float(all_train.mean())) < 1e-3 and abs(float(all_train.std()) - 1.0) < 1e-2
    counts = np.bincount([test[i][1] for i in range(len(test))], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 360 stratified over ~180 per class
    again, _ = load_dataset("digits", seed=0)
    assert torch.equal(again[17][0], train[17][0])
    other, _ = load_dataset("digits", seed=1)
    assert not torch.equal(other.labels, train.labels)


def test_synthetic_is_learnable_by_class_means():
    train, test = load_dataset("synthetic", img_size=16, in_chans=3, num_classes=5, seed=3)
    assert train[0][0].shape == (3, 16, 16)
    x = torch.stack([train[i][0] for i in range(len(train))]).flatten(1)
    y = torch.tensor([train[i][1] for i in range(len(train))])
    means = torch.stack([x[y == c].mean(0) for c in range(5)])
    xt = torch.stack([test[i][0] for i in range(len(test))]).flatten(1)
    yt = torch.tensor([test[i][1] for i in range(len(test))])
    accuracy = float((torch.cdist(xt, means).argmin(1) == yt).float().mean())
    assert accuracy > 0.9


def _write_cifar(folder, n_batches=2, per_batch=20, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for name in [f"data_batch_{i + 1}" for i in range(n_batches)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    return folder


def test_cifar10_batches_load_with_resize_and_detection(tmp_path):
    root = _write_cifar(tmp_path / "cifar")
    train, test = load_dataset(f"cifar10:{root}")
    assert (len(train), len(test)) == (40, 20)
    image, label, index = train[25]
    assert image.shape == (3, 32, 32) and 0 <= label < 10 and index == 25
    with open(root / "data_batch_2", "rb") as f:
        raw = pickle.load(f)
    pixel = raw[b"data"][5].reshape(3, 32, 32)[1, 2, 3] / 255.0  # train item 25 = batch 2 item 5
    assert abs(float(image[1, 2, 3]) - (pixel - 0.4822) / 0.2435) < 1e-5
    assert raw[b"labels"][5] == label
    resized, _ = load_dataset(str(root), img_size=16, augment=True)  # detected from the folder
    assert resized[0][0].shape == (3, 16, 16)


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="data_batch"):
        load_dataset(f"cifar10:{tmp_path / 'empty'}")
    bad = _write_cifar(tmp_path / "bad")
    (bad / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        load_dataset(f"cifar10:{bad}")


def test_image_folder_resizes_center_crops_and_labels_by_folder(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for label, name in enumerate(("cat", "dog")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                color = (200, 10 + 100 * label, 30 * i)
                Image.new("RGB", (40 + 10 * i, 30), color).save(folder / f"{i}.png")
    train, test = load_dataset(f"imagefolder:{tmp_path}", img_size=16)
    assert (len(train), len(test)) == (4, 4)
    assert train.classes == ["cat", "dog"]
    image, label, index = train[3]
    assert image.shape == (3, 16, 16) and label == 1 and index == 3
    # A uniform image stays uniform: channel 1 holds (110/255 - mean) / std everywhere.
    assert torch.allclose(image[1], torch.full((16, 16), (110 / 255 - 0.456) / 0.224), atol=1e-2)
    (tmp_path / "only").mkdir()
    with pytest.raises(FileNotFoundError, match="train/ and val/"):
        load_dataset(f"imagefolder:{tmp_path / 'only'}")


def test_unknown_spec_and_bad_digits_size():
    with pytest.raises(FileNotFoundError, match="unknown dataset"):
        load_dataset("imagenet-that-is-not-here")
    with pytest.raises(ValueError, match="8x8"):
        load_dataset("digits", img_size=32)


def test_augmentation_is_timms_train_transform_and_raw_items_normalize_alike(tmp_path):
    root = _write_cifar(tmp_path / "cifar")
    train, test = load_dataset(f"cifar10:{root}", img_size=24, augment=AugmentSpec())
    steps = repr(train._transform)
    for step in ("RandomResizedCropAndInterpolation", "bicubic", "RandomHorizontalFlip", "RandAugment"):
        assert step in steps, steps
    assert "Normalize" not in steps and "RandomErasing" not in steps  # both happen on the device
    train.raw = True
    torch.manual_seed(0)
    crops = [train[0][0] for _ in range(6)]
    assert all(c.dtype == torch.uint8 and c.shape == (3, 24, 24) for c in crops)
    assert any(not torch.equal(crops[0], c) for c in crops[1:])  # random crops differ
    # Raw items (uint8, native 32 px) normalized and resized as a batch equal the per-item CPU path.
    test.raw = True
    raw = torch.stack([test[i][0] for i in range(4)])
    assert raw.dtype == torch.uint8 and raw.shape == (4, 3, 32, 32)
    test.raw = False
    cpu = torch.stack([test[i][0] for i in range(4)])
    assert cpu.shape == (4, 3, 24, 24)
    assert torch.allclose(test.normalization(raw), cpu, atol=1e-5)
    with pytest.raises(ValueError, match="augmentation applies"):
        load_dataset("digits", augment=True)


def test_randaugment_posterize_to_zero_bits_gives_a_black_image_instead_of_an_error():
    from PIL import Image
    from timm.data.auto_augment import AugmentOp

    AugmentSpec().transform(16, (0.5, 0.5, 0.5))  # routes timm's posterize ops (Pillow 13 refuses 0 bits)
    image = Image.new("RGB", (16, 16), (200, 120, 40))
    strongest = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)  # keeps 4 - 4 = 0 bits
    assert np.asarray(strongest(image)).max() == 0
    mild = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5)  # keeps 2 bits
    assert np.asarray(mild(image))[0, 0].tolist() == [192, 64, 0]


def test_unknown_auto_augment_policy_is_a_clear_error(tmp_path):
    root = _write_cifar(tmp_path / "cifar")
    with pytest.raises(ValueError, match="'rand-zz9' is not a timm policy"):
        load_dataset(f"cifar10:{root}", augment=AugmentSpec(auto_augment="rand-zz9"))
