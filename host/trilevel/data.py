"""Training data: every dataset yields ``(image, label, example_index)`` so the example filter can track
each example across epochs.

Sources (``load_dataset(spec, ...)``):

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 1 channel), a fixed seeded
  stratified split into 1437 train / 360 test images. Needs no download.
* ``synthetic``: class-dependent smooth patterns plus noise, any image size; learnable, for smoke
  tests and benchmarks.
* ``cifar10:PATH`` (or a folder holding ``data_batch_*`` and ``test_batch``): CIFAR-10 python pickles.
* ``imagefolder:PATH`` (or a folder with ``train/`` and ``val/``): ImageNet-style class subfolders of
  images, decoded with Pillow, resized (shorter side img_size * 256/224) and center-cropped.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augment:
    """Light augmentation for training splits: random crop after zero padding, horizontal flip."""

    pad: int = 0
    hflip: bool = False

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.pad:
            _, h, w = image.shape
            padded = F.pad(image, (self.pad,) * 4)
            dy, dx = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
            image = padded[:, dy : dy + h, dx : dx + w]
        if self.hflip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image


class TensorImageDataset(Dataset):
    """Images held in memory (uint8 or float, N x C x H x W) plus labels; normalized per item.

    ``mean``/``std`` are per channel in the stored scale (uint8 images are first divided by 255).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: Augment | None = None,
        img_size: int | None = None,
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"want images N x C x H x W and N labels, got {tuple(images.shape)}, {len(labels)}"
            )
        self.images, self.labels = images, labels.long()
        self.num_classes = num_classes
        self.in_chans = images.shape[1]
        self.native_size = images.shape[-1]
        self.img_size = img_size or self.native_size
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.images[index]
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        image = (image - self._mean) / self._std
        if self.augment is not None:
            image = self.augment(image)
        if self.img_size != self.native_size:
            image = F.interpolate(image[None], size=(self.img_size,) * 2, mode="bilinear", antialias=True)[0]
        return image, int(self.labels[index]), index


class ImageFolderDataset(Dataset):
    """``root/<class>/<image>`` files, decoded lazily with Pillow; classes sorted by folder name."""

    def __init__(self, root: Path, img_size: int, classes: list[str] | None = None, augment: bool = False):
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
        self.augment = Augment(pad=img_size // 28, hflip=True) if augment else None
        self._mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            img = img.convert("RGB")
            short = round(self.img_size * 256 / 224)
            scale = short / min(img.size)
            img = img.resize(
                (max(short, round(img.width * scale)), max(short, round(img.height * scale))),
                Image.Resampling.BILINEAR,
            )
            left, top = (img.width - self.img_size) // 2, (img.height - self.img_size) // 2
            img = img.crop((left, top, left + self.img_size, top + self.img_size))
            array = np.asarray(img, dtype=np.uint8)
        image = torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0
        image = (image - self._mean) / self._std
        if self.augment is not None:
            image = self.augment(image)
        return image, label, index


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
    root: Path, img_size: int | None = None, augment: bool = False
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
    aug = Augment(pad=4, hflip=True) if augment else None
    return (
        TensorImageDataset(train_x, train_y, 10, CIFAR_MEAN, CIFAR_STD, aug, img_size),
        TensorImageDataset(test_x, test_y, 10, CIFAR_MEAN, CIFAR_STD, None, img_size),
    )


def load_image_folder(root: Path, img_size: int, augment: bool = False) -> tuple[Dataset, Dataset]:
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
    augment: bool = False,
) -> tuple[Dataset, Dataset]:
    """``spec``: ``digits``, ``synthetic``, ``cifar10:PATH``, ``imagefolder:PATH`` or a folder path
    (CIFAR-10 batches or train/val class folders, detected). ``img_size`` resizes (folders need it);
    ``in_chans``/``num_classes`` shape the synthetic data. Items are (image, label, example_index)."""
    kind, _, path = spec.partition(":")
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
