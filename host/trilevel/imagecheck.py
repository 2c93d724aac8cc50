"""Scan image-folder data sets before training: every file must decode, or the run stops before it
starts, naming the file (``--bad-images error``), or leaves such files out and says how many
(``--bad-images skip``). Data sets without image files (digits, synthetic, CIFAR-10) pass untouched.

A data set takes part when it has ``samples``: a list of ``(path, label)`` pairs (trilevel's
ImageFolderDataset, torchvision's ImageFolder). Files are decoded at reduced size where the format
allows it (JPEG draft mode), in threads, so a scan of ImageNet-1K takes minutes, not hours.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from trilevel.userinput import UserError, bars_disabled

BAD_IMAGE_POLICIES = ("error", "skip")


def decode_error(path: Path) -> str | None:
    """None if `path` decodes as an image, else why not (one line)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))  # JPEG: 1/8-scale decode
            img.load()
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
        text = (str(err).strip().splitlines() or [""])[0].replace(str(path), "").strip(" '")
        return text[:100] or type(err).__name__
    return None


def find_undecodable(
    paths: list[Path], progress: bool = True, desc: str = "scan images"
) -> list[tuple[Path, str]]:
    """(path, reason) of every file in `paths` that does not decode, in the order given."""
    from tqdm import tqdm

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        reasons = list(tqdm(pool.map(decode_error, paths, chunksize=64), total=len(paths), desc=desc,
                            leave=False, file=sys.stderr, disable=bars_disabled(progress)))
    return [(path, reason) for path, reason in zip(paths, reasons, strict=True) if reason is not None]


def check_images(datasets: Iterable[Any], policy: str = "error", progress: bool = True) -> int:
    """Scan every data set with ``samples``; returns how many files `policy` "skip" left out."""
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"bad-image policy must be one of {BAD_IMAGE_POLICIES}, got {policy!r}")
    skipped = 0
    for dataset in datasets:
        samples = getattr(dataset, "samples", None)
        if not samples:
            continue
        bad = find_undecodable([Path(path) for path, _ in samples], progress)
        if not bad:
            continue
        (first, reason), count = bad[0], len(bad)
        if policy == "error":
            more = f" (and {count - 1} more)" if count > 1 else ""
            raise UserError(f"{first}: not a decodable image ({reason}){more}; remove it or pass "
                            "--bad-images skip")
        bad_paths = {path for path, _ in bad}
        dataset.samples = [(path, label) for path, label in samples if Path(path) not in bad_paths]
        if not dataset.samples:
            raise UserError(f"{first}: no image of this data set decodes ({reason})")
        skipped += count
        print(f"note: left out {count} undecodable image(s), first {first} ({reason})", file=sys.stderr)
    return skipped
