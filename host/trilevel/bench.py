"""Benchmarks, as a list of sections: each section is a function ``(BenchOptions) -> Section`` named by
``"module:function"`` in ``SECTIONS``; ``trilevel bench`` runs them in order, prints one table per
section and writes everything to ``DIR/bench.json``. To add a section (e.g. C-sim MMAC/s per kernel),
write the function in your module and append its name to ``SECTIONS``.

The built-in sections measure PyTorch training throughput (forward + backward + AdamW step) dense vs
Tri-Level side by side in one process, alternating the two in rounds so machine noise hits both, and
the input pipeline's images/s from a generated ImageNet-style JPEG folder with 0 and N workers.
"""

from __future__ import annotations

import importlib
import json
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trilevel.config import get_config
from trilevel.macs import MacCounter
from trilevel.model import build_model
from trilevel.train_torch import TORCH_ATTN_IMPL

SECTIONS: list[str] = [
    "trilevel.bench:torch_training",
    "trilevel.bench:input_pipeline",
    "trilevel.accel.bench_engine:bench_section",
]
BENCH_FILE = "bench.json"
# Tri-Level ratios at their targets (past the keep-ratio warm-up): r_e, R_T, R_A.
TRILEVEL_RATIOS = (0.7, 0.7, 0.3)


@dataclass
class BenchOptions:
    out: Path
    quick: bool = False
    models: tuple[str, ...] = ("demo", "deit_tiny")
    device: str = "auto"
    threads: int | None = None
    # the engine-counters section (trilevel.accel.rtlsim_bench): the EngineBackend bound by
    # `trilevel bench --backend rtlsim|pynq`, its label (where the rows were measured) and its row set
    engine: Any = None
    engine_where: dict[str, Any] | None = None
    engine_rows: str | None = None


@dataclass
class Section:
    name: str
    title: str
    columns: list[str]  # row keys shown in the printed table, in order
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch_and_steps(model: str, device: torch.device, quick: bool) -> tuple[int, int, int]:
    """(batch, timed steps per round, rounds): small on CPU so the bench finishes in minutes."""
    small = get_config(model).num_tokens <= 65
    if device.type == "cuda":
        return (512 if small else 128), (10 if quick else 30), 3
    if small:
        return 64, (5 if quick else 20), (2 if quick else 3)
    return (4 if quick else 8), (1 if quick else 2), (2 if quick else 3)


class _StepRunner:
    """One model + AdamW on a fixed random batch; ``step`` = forward + backward + update."""

    def __init__(self, name: str, attn_impl: str, batch: int, device: torch.device) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = build_model(name, attn_impl=attn_impl).to(device)
        cfg = self.model.cfg
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05)
        self.images = torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, device=device)
        self.labels = torch.randint(0, cfg.num_classes, (batch,), device=device)
        self.device = device

    def step(self, keep_token: float, keep_attn: float) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(self.images, keep_token=keep_token, keep_attn=keep_attn)
        loss = F.cross_entropy(logits.float(), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def timed_step(self, keep_token: float, keep_attn: float) -> float:
        _sync(self.device)
        t0 = time.perf_counter()
        self.step(keep_token, keep_attn)
        _sync(self.device)
        return time.perf_counter() - t0


def torch_training(options: BenchOptions) -> Section:
    """Training images/s, dense vs Tri-Level at target ratios, for every model in ``options.models``."""
    device = _device(options.device)
    r_e, r_t, r_a = TRILEVEL_RATIOS
    section = Section(
        name="torch_training",
        title=f"PyTorch training throughput on {device} (forward + backward + AdamW)",
        columns=[
            "model",
            "mode",
            "attn_impl",
            "batch",
            "images_per_s",
            "train_gmac_per_image",
            "executed_gmac_per_image",
            "speedup_per_image",
            "epoch_speedup",
        ],
        notes=[
            f"Tri-Level: r_e={r_e}, R_T={r_t}, R_A={r_a} (targets, past warm-up). dense and trilevel run "
            f"attn_impl={TORCH_ATTN_IMPL!r} (the trainer's default): attention computed densely and masked, "
            "fused SDPA where no attention map is needed; trilevel_gather computes only the kept "
            "connections (the accelerator's MAC-faithful path).",
            "train_gmac_per_image: algorithmic (gather) forward + backward MACs; executed_gmac_per_image: "
            "what the row's attention implementation computes.",
            "speedup_per_image = Tri-Level images/s over dense images/s (token + attention levels); "
            "epoch_speedup also counts the example level: dense epoch time / (r_e x Tri-Level epoch time).",
            "bf16 autocast on CUDA; float32 on CPU. Median step time over alternating rounds.",
        ],
    )
    # mode -> (r_e, R_T, R_A, attn_impl); "trilevel_gather" is the MAC-faithful path the accelerator mirrors.
    modes = {
        "dense": (1.0, 1.0, 1.0, TORCH_ATTN_IMPL),
        "trilevel": (r_e, r_t, r_a, TORCH_ATTN_IMPL),
        "trilevel_gather": (r_e, r_t, r_a, "gather"),
    }
    for name in options.models:
        batch, steps, rounds = _batch_and_steps(name, device, options.quick)
        torch.manual_seed(0)
        runners = {impl: _StepRunner(name, impl, batch, device) for impl in ("gather", "mask")}
        times: dict[str, list[float]] = {mode: [] for mode in modes}
        for _, keep_token, keep_attn, impl in modes.values():  # warm-up (allocator, kernels)
            runners[impl].step(keep_token, keep_attn)
        for _ in range(rounds):
            for mode, (_, keep_token, keep_attn, impl) in modes.items():
                times[mode] += [runners[impl].timed_step(keep_token, keep_attn) for _ in range(steps)]
        counter = {impl: MacCounter(runners[impl].model.cfg, impl) for impl in runners}  # gather: algorithmic
        rate = {mode: batch / statistics.median(t) for mode, t in times.items()}
        for mode, (keep_example, keep_token, keep_attn, impl) in modes.items():
            section.rows.append(
                {
                    "model": name,
                    "mode": mode,
                    "attn_impl": impl,
                    "keep_example": keep_example,
                    "keep_token": keep_token,
                    "keep_attn": keep_attn,
                    "batch": batch,
                    "steps": len(times[mode]),
                    "images_per_s": rate[mode],
                    "train_gmac_per_image": counter["gather"].count(keep_token, keep_attn, train=True) / 1e9,
                    "executed_gmac_per_image": counter[impl].count(keep_token, keep_attn, train=True) / 1e9,
                    "speedup_per_image": rate[mode] / rate["dense"],
                    "epoch_speedup": rate[mode] / (keep_example * rate["dense"]),
                }
            )
    return section


# The generated ImageNet-style folder: JPEG count (quick / full), classes and image size (w, h).
PIPELINE_IMAGES, PIPELINE_CLASSES, PIPELINE_IMAGE_SIZE = (480, 3000), 10, (320, 256)
PIPELINE_BATCH = 64


def _jpeg_folder(root: Path, count: int) -> Path:
    """``root/train/<class>/<i>.jpg`` (and a one-image ``val/``): smooth random colour fields with
    noise, which compress like photographs rather than like noise. Reused when already complete."""
    from PIL import Image

    stamp = root / f"complete_{count}"
    if stamp.exists():
        return root
    rng = np.random.default_rng(0)
    width, height = PIPELINE_IMAGE_SIZE
    for i in range(count):
        folder = root / "train" / f"class_{i % PIPELINE_CLASSES:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, size=(height // 32, width // 32, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
        noisy = np.clip(field.astype(np.int16) + rng.integers(-12, 13, size=field.shape), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    (root / "val" / "class_00").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(root / "val" / "class_00" / "0.jpg")
    stamp.touch()
    return root


def input_pipeline(options: BenchOptions) -> Section:
    """Images/s the torch trainer's loader delivers from JPEG files (decode + DeiT train transform or
    eval transform, uint8 batches), with 0 workers and with one per available core."""
    from trilevel.data import AugmentSpec, load_dataset
    from trilevel.pipeline import ActiveSampler, available_cores, make_loader

    count = PIPELINE_IMAGES[0] if options.quick else PIPELINE_IMAGES[1]
    root = _jpeg_folder(Path(options.out) / "jpeg_folder", count)
    cores, batch = available_cores(), PIPELINE_BATCH
    section = Section(
        name="input_pipeline",
        title=f"Input pipeline: {count} generated {PIPELINE_IMAGE_SIZE[0]}x{PIPELINE_IMAGE_SIZE[1]} JPEGs "
        f"-> 224 px uint8 batches of {batch} ({cores} cores available)",
        columns=["transform", "workers", "images", "images_per_s", "seconds"],
        notes=[
            "train: decode + RandomResizedCrop (bicubic) + flip + RandAugment rand-m9-mstd0.5-inc1 "
            "(timm.data.create_transform, the DeiT recipe); eval: decode + bicubic resize + center crop. "
            "Normalization, random erasing and mixup run later on the training device and are not timed.",
            "Timed from the first batch on (worker start-up excluded), persistent workers, one pass.",
        ],
    )
    train_spec = AugmentSpec()
    for transform, augment in (("train", train_spec), ("eval", None)):
        dataset, _ = load_dataset(f"imagefolder:{root}", img_size=224, augment=augment)
        dataset.raw = True
        for workers in sorted({0, cores}):
            sampler = ActiveSampler(np.arange(len(dataset)), world=1, rank=0, seed=0)
            loader = make_loader(dataset, batch, workers, torch.device("cpu"), sampler)
            batches = iter(loader)
            first = next(batches)
            t0 = time.perf_counter()
            images = sum(len(images) for images, _, _ in batches)
            seconds = time.perf_counter() - t0
            assert first[0].dtype == torch.uint8
            section.rows.append(
                {
                    "transform": transform,
                    "workers": workers,
                    "images": images,
                    "images_per_s": images / seconds,
                    "seconds": seconds,
                }
            )
            del batches, loader  # ends the persistent workers
    return section


def _resolve_section(spec: str) -> Callable[[BenchOptions], Section]:
    module, _, function = spec.partition(":")
    if not function:
        raise ValueError(f"bench section {spec!r} must be 'module:function'")
    return getattr(importlib.import_module(module), function)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_section(section: Section) -> str:
    lines = [f"== {section.title}"]
    if section.error:
        return "\n".join([*lines, f"  FAILED: {section.error}"])
    table = [section.columns] + [[_cell(row.get(col, "")) for col in section.columns] for row in section.rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(section.columns))]
    for i, row in enumerate(table):
        lines.append("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines += [f"  {note}" for note in section.notes]
    return "\n".join(lines)


def run_bench(options: BenchOptions, sections: list[str] | None = None) -> dict[str, Any]:
    """Run the sections, write ``options.out/bench.json`` and return its content. A failing section is
    recorded with its error (the others still run)."""
    if options.threads:
        torch.set_num_threads(options.threads)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "quick": options.quick,
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "sections": [],
    }
    for spec in sections or SECTIONS:
        t0 = time.perf_counter()
        try:
            section = _resolve_section(spec)(options)
        except Exception as err:  # noqa: BLE001 - a failing section must not hide the others
            traceback.print_exc(file=sys.stderr)
            section = Section(name=spec, title=spec, columns=[], error=f"{type(err).__name__}: {err}")
        record = asdict(section)
        record["wall_s"] = round(time.perf_counter() - t0, 2)
        result["sections"].append(record)
        print(format_section(section), flush=True)
    with open(out / BENCH_FILE, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result
