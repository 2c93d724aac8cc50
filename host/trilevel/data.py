"""Training data: every dataset yields ``(image, label, example_index)`` so the example filter can track
each example across epochs.

Sources (``load_dataset(spec, ...)``):

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 1 channel), a fixed seeded
  stratified split into 1437 train / 360 test images. Needs no download.
* ``synthetic``: class-dependent smooth patterns plus noise, any image size; learnable, for smoke
  tests and benchmarks.
* ``cifar10:PATH`` (or a folder holding ``data_batch_*`` and ``test_batch``): CIFAR-10 python pickles.
* ``imagefolder:PATH`` (or a folder with ``train/`` and ``val/``): ImageNet-style class subfolders of
  images, decoded with Pillow; evaluation resizes (bicubic, shorter side img_size / 0.875) and
  center-crops (timm's eval transform).

Augmentation (``augment=AugmentSpec(...)``, CIFAR-10 and image folders) is timm's training transform
(``timm.data.create_transform``: RandomResizedCrop with bicubic interpolation, horizontal flip,
RandAugment); random erasing, mixup and cutmix act on whole batches on the training device
(``trilevel.pipeline``).

Datasets normalize on the CPU by default (``dataset.raw = False``: float32, normalized, at ``img_size``).
With ``dataset.raw = True`` they return the stored pixels (uint8 for CIFAR-10 and image folders) and
``dataset.normalization`` finishes the job on the device, so batches travel as uint8.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentSpec:
    """timm's training transform (DeiT recipe): RandomResizedCrop(scale) with ``interpolation``,
    horizontal flip, and ``auto_augment`` (a timm policy such as ``rand-m9-mstd0.5-inc1``; None: none)."""

    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    interpolation: str = "bicubic"
    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5

    def transform(self, img_size: int, mean: tuple[float, ...]) -> Callable[[Any], torch.Tensor]:
        """PIL image -> uint8 tensor C x img_size x img_size (normalization happens later)."""
        from timm.data import create_transform  # imported lazily: timm costs ~1 s

        _posterize_zero_bits_as_pillow_12()
        try:
            return create_transform(
                img_size,
                is_training=True,
                scale=self.scale,
                hflip=self.hflip,
                auto_augment=self.auto_augment,
                interpolation=self.interpolation,
                mean=mean,
                use_prefetcher=True,  # no ToTensor/Normalize/RandomErasing: uint8 out, the rest on device
            )
        except (AssertionError, KeyError, ValueError) as err:  # timm asserts on unknown policies
            raise ValueError(
                f"auto_augment {self.auto_augment!r} is not a timm policy (e.g. rand-m9-mstd0.5-inc1, "
                f"augmix-m5, v0, none): {err}"
            ) from None


def _posterize_to_black(img: Any, bits_to_keep: int, **kwargs: Any) -> Any:
    """timm's posterize op, except that 0 bits give a black image (what Pillow < 13 returned)."""
    if bits_to_keep <= 0:
        from PIL import Image

        return Image.new(img.mode, img.size)
    from timm.data import auto_augment

    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def _posterize_zero_bits_as_pillow_12() -> None:
    """RandAugment's PosterizeIncreasing keeps 4 - 4 * m / 10 bits: 0 at magnitude 10, which DeiT's
    rand-m9-mstd0.5 reaches (about 2% of its draws). Pillow 13 (our pin) raises on 0 bits where the
    Pillow that DeiT used returned a black image; route timm's posterize ops through the latter."""
    from timm.data import auto_augment

    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize_to_black


@dataclass(frozen=True)
class Normalization:
    """Stored pixels -> model input: ``(x / scale - mean) / std`` per channel, then a bilinear
    (antialiased) resize to ``img_size`` if the stored images have another size. Works on one image
    [C, H, W] or a batch [B, C, H, W], on any device."""

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.scale != 1.0:
            x = x / self.scale
        x = (x - _channel_values(self.mean, x.device)) / _channel_values(self.std, x.device)
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            batch = x if x.ndim == 4 else x[None]
            batch = F.interpolate(batch, size=(self.img_size,) * 2, mode="bilinear", antialias=True)
            x = batch if x.ndim == 4 else batch[0]
        return x


@functools.lru_cache(maxsize=64)
def _channel_values(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """Per-channel constants as a [C, 1, 1] float32 tensor, made once per device (no copy per batch)."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


def _to_pil(image: torch.Tensor) -> Any:
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


class TensorImageDataset(Dataset):
    """Images held in memory (uint8 or float, N x C x H x W) plus labels.

    ``mean``/``std`` are per channel in [0, 1] units (uint8 images are divided by 255 first). Items are
    normalized float images at ``img_size`` unless ``raw`` is set (see the module docstring).
    ``augment`` (uint8 images only) applies timm's training transform per item.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: AugmentSpec | None = None,
        img_size: int | None = None,
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"want images N x C x H x W and N labels, got {tuple(images.shape)}, {len(labels)}"
            )
        if augment is not None and images.dtype != torch.uint8:
            raise ValueError("augmentation needs uint8 images (CIFAR-10, image folders)")
        self.images, self.labels = images, labels.long()
        self.num_classes = num_classes
        self.in_chans = images.shape[1]
        self.native_size = images.shape[-1]
        self.img_size = img_size or self.native_size
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        self.normalization = Normalization(scale, tuple(mean), tuple(std), self.img_size)
        self.augment = augment
        self._transform = augment.transform(self.img_size, tuple(mean)) if augment is not None else None
        self.raw = False

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.images[index]
        if self._transform is not None:
            image = self._transform(_to_pil(image))
        if not self.raw:
            image = self.normalization(image)
        return image, int(self.labels[index]), index


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` files, decoded lazily with Pillow; classes sorted by folder name."""

    def __init__(
        self, root: Path, img_size: int, classes: list[str] | None = None, augment: AugmentSpec | None = None
    ) -> None:
        try:
            from PIL import Image  # noqa: F401  (checked here for a clear error)
        except ImportError:
            raise RuntimeError("image folders need Pillow: pip install pillow") from None
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        self.classes = classes or sorted(p.name for p in root.iterdir() if p.is_dir())
        if not self.classes:
            raise ValueError(f"image folder {root} has no class subfolders")
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            folder = root / name
            if folder.is_dir():
                files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
                self.samples += [(p, label) for p in files]
        if not self.samples:
            raise ValueError(f"image folder {root} has no images ({', '.join(IMAGE_SUFFIXES)})")
        self.num_classes, self.in_chans, self.img_size = len(self.classes), 3, img_size
        self.augment = augment
        self.normalization = Normalization(255.0, IMAGENET_MEAN, IMAGENET_STD, img_size)
        self._transform = (
            _eval_transform(img_size) if augment is None else augment.transform(img_size, IMAGENET_MEAN)
        )
        self.raw = False

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            image = self._transform(img.convert("RGB"))
        if not self.raw:
            image = self.normalization(image)
        return image, label, index


def _eval_transform(img_size: int) -> Callable[[Any], torch.Tensor]:
    """timm's evaluation transform (DeiT): bicubic resize of the shorter side to img_size / 0.875, center
    crop; uint8 out."""
    from timm.data import create_transform

    return create_transform(img_size, is_training=False, interpolation="bicubic", crop_pct=0.875,
                            use_prefetcher=True)


def load_digits_split(seed: int = 0, test_size: int = 360) -> tuple[TensorImageDataset, TensorImageDataset]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # pixel values 0..16
    labels = torch.tensor(digits.target)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_size, stratify=digits.target, random_state=seed
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    mean, std = float(images[train_idx].mean()), float(images[train_idx].std())
    return (
        TensorImageDataset(images[train_idx], labels[train_idx], 10, (mean,), (std,)),
        TensorImageDataset(images[test_idx], labels[test_idx], 10, (mean,), (std,)),
    )


def make_synthetic(
    num_classes: int = 10,
    img_size: int = 8,
    in_chans: int = 1,
    num_train: int = 1000,
    num_test: int = 200,
    noise: float = 0.5,
    seed: int = 0,
) -> tuple[TensorImageDataset, TensorImageDataset]:
    """Each class is a fixed random smooth template (low-frequency noise, upsampled); an image is its
    class template plus white noise of standard deviation ``noise``."""
    gen = torch.Generator().manual_seed(seed)
    coarse = max(2, img_size // 4)
    templates = torch.randn(num_classes, in_chans, coarse, coarse, generator=gen)
    templates = F.interpolate(templates, size=(img_size, img_size), mode="bilinear", align_corners=False)
    templates = templates / templates.flatten(1).std(dim=1).view(-1, 1, 1, 1)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=gen)]
        images = templates[labels] + noise * torch.randn(n, in_chans, img_size, img_size, generator=gen)
        return images, labels

    zero, one = (0.0,) * in_chans, (1.0,) * in_chans
    train, test = split(num_train), split(num_test)
    return (
        TensorImageDataset(*train, num_classes, zero, one),
        TensorImageDataset(*test, num_classes, zero, one),
    )


def _unpickle_cifar(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: {e}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"{path} is not a CIFAR-10 python batch: data shape {data.shape}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


def load_cifar10(
    root: Path, img_size: int | None = None, augment: AugmentSpec | None = None
) -> tuple[TensorImageDataset, TensorImageDataset]:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder {root} does not exist")
    train_files = sorted(root.glob("data_batch_*"))
    if not train_files or not (root / "test_batch").is_file():
        raise FileNotFoundError(f"{root} lacks the CIFAR-10 python batches data_batch_* and test_batch")
    parts = [_unpickle_cifar(p) for p in train_files]
    train_x, train_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    test_x, test_y = _unpickle_cifar(root / "test_batch")
    return (
        TensorImageDataset(train_x, train_y, 10, CIFAR_MEAN, CIFAR_STD, augment, img_size),
        TensorImageDataset(test_x, test_y, 10, CIFAR_MEAN, CIFAR_STD, None, img_size),
    )


def load_image_folder(
    root: Path, img_size: int, augment: AugmentSpec | None = None
) -> tuple[Dataset, Dataset]:
    """``root/train/<class>/...`` and ``root/val/<class>/...`` (or ``root/test/``)."""
    root = Path(root)
    train_dir = root / "train"
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise FileNotFoundError(f"image folder {root} needs train/ and val/ (or test/) subfolders of classes")
    train = ImageFolderDataset(train_dir, img_size, augment=augment)
    return train, ImageFolderDataset(test_dir, img_size, classes=train.classes)


def load_dataset(
    spec: str,
    img_size: int | None = None,
    in_chans: int = 3,
    num_classes: int = 10,
    seed: int = 0,
    augment: AugmentSpec | bool | None = None,
) -> tuple[Dataset, Dataset]:
    """``spec``: ``digits``, ``synthetic``, ``cifar10:PATH``, ``imagefolder:PATH`` or a folder path
    (CIFAR-10 batches or train/val class folders, detected). ``img_size`` resizes (folders need it);
    ``in_chans``/``num_classes`` shape the synthetic data. ``augment`` (True: ``AugmentSpec()``) applies
    to the training split of CIFAR-10 and image folders. Items are (image, label, example_index)."""
    if augment is True:
        augment = AugmentSpec()
    augment = augment or None
    kind, _, path = spec.partition(":")
    if augment is not None and (spec in ("digits", "synthetic")):
        raise ValueError(f"augmentation applies to CIFAR-10 and image folders, not {spec}")
    if spec == "digits":
        if img_size not in (None, 8):
            raise ValueError(f"digits images are 8x8; got img_size {img_size}")
        return load_digits_split(seed)
    if spec == "synthetic":
        return make_synthetic(num_classes, img_size or 8, in_chans, seed=seed)
    if kind == "cifar10" and path:
        return load_cifar10(Path(path), img_size, augment)
    if kind == "imagefolder" and path:
        return load_image_folder(Path(path), img_size or 224, augment)
    folder = Path(spec)
    if not folder.exists():
        raise FileNotFoundError(
            f"unknown dataset {spec!r}: use digits, synthetic, cifar10:PATH, imagefolder:PATH "
            "or an existing folder"
        )
    if any(folder.glob("data_batch_*")):
        return load_cifar10(folder, img_size, augment)
    return load_image_folder(folder, img_size or 224, augment)
