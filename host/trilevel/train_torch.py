"""Tri-Level E-ViT training with the PyTorch golden model (CPU, one GPU, or many GPUs via torchrun).

Recipe: whatever the config leaves out comes from the model's recipe (``trilevel.recipes``: the demo
recipe, or DeiT's through timm: AdamW, lr 5e-4 at batch 512 scaled linearly, cosine schedule with linear
warm-up, augmentation, mixup/cutmix, EMA, ...); keep ratios R_T and R_A are 1.0 during their warm-up,
then decay per iteration (cosine) to the target; the example filter keeps round(r_e * |D|) examples and
runs remove-and-restore rounds. Input pipeline: ``trilevel.pipeline`` (persistent loaders, uint8
batches finished on the device).

Exact resumption: the lr and keep-ratio schedules are pure functions of the iteration counter, the data
order is a function of (seed, epoch), and the checkpoint restores model, optimizer, EMA, example filter
and every RNG, so ``--resume`` after an interruption reproduces the uninterrupted run (same device and
threads; with loader workers, random augmentations differ: workers' RNG states are not checkpointed).

Data parallel: launch with ``torchrun --nproc_per_node=G -m trilevel.cli train ...``; ``batch_size`` is
per process, the linear lr scaling uses the global batch; every rank all-gathers the example filter's
statistics so all ranks hold the same active subset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from trilevel import runlog, schedule
from trilevel.baselines import make_method  # also registers the baseline policies
from trilevel.config import TIMM_CONFIGS, model_config
from trilevel.data import AugmentSpec, load_dataset
from trilevel.example_filter import EXAMPLE_VARIANCES, EXAMPLE_WINDOWS, ExampleFilter
from trilevel.imagecheck import check_images
from trilevel.macs import mac_counters
from trilevel.model import ATTN_IMPLS
from trilevel.pipeline import ActiveSampler, DeviceBatch, default_workers, make_loader
from trilevel.pretrained import load_init
from trilevel.recipes import (
    KEEP_DECAY_FRACTION,
    KEEP_WARMUP_FRACTION,
    LR_WARMUP_FRACTION,
    RECIPE_OFF,
    RunLengths,
    default_example_period,
    recipe_for,
    schedule_warnings,
)
from trilevel.userinput import bars_disabled

TORCH_ATTN_IMPL = "mask"  # the faster attention implementation (measured: docs/benchmarks.md)

# Fields that must match between a checkpoint and the run resuming it (they shape the trajectory).
_RESUME_FIELDS = (
    "model",
    "data",
    "epochs",
    "batch_size",
    "keep_example",
    "keep_token",
    "keep_attn",
    "lr",
    "min_lr",
    "warmup_epochs",
    "weight_decay",
    "keep_warmup_epochs",
    "keep_decay_epochs",
    "example_period",
    "example_remove_frac",
    "example_policy",
    "attn_impl",
    "token_policy",
    "attn_policy",
    "drop_path",
    "img_size",
    "augment",
    "seed",
    "label_smoothing",
    "auto_augment",
    "reprob",
    "mixup",
    "cutmix",
    "repeated_aug",
    "ema_decay",
    "example_window",
    "example_variance",
    "init",
    "method",
)
# What checkpoints written before these settings existed trained with (they resume with these values).
_LEGACY_CONFIG: dict[str, Any] = {
    "auto_augment": None,
    "reprob": 0.0,
    "mixup": 0.0,
    "cutmix": 0.0,
    "repeated_aug": 1,
    "ema_decay": 0.0,
    "example_window": "run",
    "example_variance": "last",
    "init": None,
    "method": None,
}


@dataclass
class TrainConfig:
    out: str | Path
    model: str = "demo"
    data: str = "digits"
    # None, here and below: the model's recipe (trilevel.recipes: demo for "demo", DeiT's otherwise).
    epochs: int | None = None
    batch_size: int | None = None  # per process
    keep_example: float = 1.0  # r_e
    keep_token: float = 1.0  # R_T target
    keep_attn: float = 1.0  # R_A target
    lr: float | None = None  # recipe base lr x global batch / its reference batch (DeiT: 5e-4 per 512)
    min_lr: float | None = None  # cosine floor; default lr / 50 (DeiT: 1e-5 at 5e-4)
    warmup_epochs: float | None = None  # lr warm-up; default epochs / 60 (DeiT: 5 of 300)
    weight_decay: float | None = None
    keep_warmup_epochs: float | None = None  # default epochs / 30 (paper: 10 of 300)
    keep_decay_epochs: float | None = None  # default epochs / 3 (paper: 100 of 300)
    example_period: int | None = None  # P; default max(1, round(epochs / 10)) (paper: 30 of 300)
    example_remove_frac: float = 0.05  # n
    example_policy: str | None = None  # registered ExamplePolicy name (example_filter); None: "forgetting"
    # Forgetting statistics per remove-and-restore round ("round", official; None: that) or whole "run";
    # the [CLS]-attention variance a round ranks by: "mean" over the window (official; None) or "last".
    example_window: str | None = None
    example_variance: str | None = None
    # "mask": faster on CPU and GPU (docs/benchmarks.md); "gather": MAC-faithful, the accelerator's
    # path. Same results up to float rounding.
    attn_impl: str = TORCH_ATTN_IMPL
    token_policy: str | None = None  # a registered TokenPolicy name (trilevel.selectors); None: the paper's
    attn_policy: str | None = None  # a registered AttentionPolicy name; None: the paper's top-k
    method: str | None = None  # a baseline trainer mode, "name[:key=value,...]" (trilevel.baselines)
    drop_path: float | None = None
    label_smoothing: float | None = None
    img_size: int | None = None  # resize the data (and size the model) to this; default: native
    augment: bool | None = None  # timm training transform (CIFAR-10, image folders); recipe: DeiT's on
    auto_augment: str | None = None  # timm policy, e.g. "rand-m9-mstd0.5-inc1"; "none": off
    reprob: float | None = None  # random erasing probability
    mixup: float | None = None  # mixup alpha (0: off)
    cutmix: float | None = None  # cutmix alpha (0: off)
    repeated_aug: int | None = None  # repeated augmentation under DDP: presentations per image (1: off)
    ema_decay: float | None = None  # model EMA decay (0: off); adds test_top1_ema to the metrics
    init: str | None = None  # timm/DeiT checkpoint file to start from (trilevel.pretrained)
    compile: bool = False  # torch.compile the blocks' attention and MLP
    debug_checks: bool = False  # check the selectors' indices with host syncs (else device-side asserts)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    resume: bool = False
    stop_after: int | None = None  # leave after this many epochs of this invocation (time-sliced jobs)
    num_workers: int | None = None  # None: cores per process for decoded/augmented data, else 0
    progress: bool = True  # progress bars (on a terminal); the per-epoch lines print either way
    bad_images: str = "error"  # image folders: stop at an undecodable file (error) or leave it out (skip)
    amp: bool = True  # bf16 autocast on CUDA

    def resolved(
        self, global_batch: int | None = None, *, world: int = 1, full_recipe: bool = False
    ) -> TrainConfig:
        """A copy with every defaulted field filled in from the model's recipe (`trilevel.recipes`) and
        the schedule rules. ``global_batch`` (default: batch_size x world) scales the lr. Without
        ``full_recipe`` (the accelerator trainer) augmentation and regularization default to off."""
        recipe = recipe_for(self.model)
        epochs = recipe.epochs if self.epochs is None else self.epochs
        batch = recipe.batch_size if self.batch_size is None else self.batch_size
        if epochs < 1 or batch < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        for name in ("keep_example", "keep_token", "keep_attn"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        global_batch = batch * world if global_batch is None else global_batch
        lr = recipe.lr(global_batch) if self.lr is None else self.lr
        source = recipe if full_recipe else dataclasses.replace(recipe, **RECIPE_OFF)

        def pick(name: str) -> Any:
            value = getattr(self, name)
            return getattr(source, name) if value is None else value

        augment = self.augment
        if augment is None:
            augment = source.augment and _augmentable(self.data)
        auto_augment = pick("auto_augment")
        run = dataclasses.replace(
            self,
            epochs=epochs,
            batch_size=batch,
            lr=lr,
            min_lr=lr / 50 if self.min_lr is None else self.min_lr,
            warmup_epochs=epochs * LR_WARMUP_FRACTION if self.warmup_epochs is None else self.warmup_epochs,
            weight_decay=pick("weight_decay"),
            keep_warmup_epochs=epochs * KEEP_WARMUP_FRACTION
            if self.keep_warmup_epochs is None
            else self.keep_warmup_epochs,
            keep_decay_epochs=epochs * KEEP_DECAY_FRACTION
            if self.keep_decay_epochs is None
            else self.keep_decay_epochs,
            example_period=default_example_period(epochs)
            if self.example_period is None
            else self.example_period,
            drop_path=pick("drop_path"),
            label_smoothing=pick("label_smoothing"),
            augment=augment,
            auto_augment=None if auto_augment in (None, "none") else auto_augment,
            reprob=pick("reprob"),
            mixup=pick("mixup"),
            cutmix=pick("cutmix"),
            repeated_aug=pick("repeated_aug"),
            ema_decay=pick("ema_decay"),
            init=None if self.init is None else str(self.init),  # checkpoints hold plain types only
            example_window=self.example_window or EXAMPLE_WINDOWS[0],
            example_variance=self.example_variance or EXAMPLE_VARIANCES[0],
        )
        run._validate_recipe()
        return run

    def _validate_recipe(self) -> None:
        checks = {
            "drop_path": 0.0 <= self.drop_path < 1.0,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
            "reprob": 0.0 <= self.reprob <= 1.0,
            "mixup": self.mixup >= 0.0,
            "cutmix": self.cutmix >= 0.0,
            "repeated_aug": self.repeated_aug >= 1,
            "ema_decay": 0.0 <= self.ema_decay < 1.0,
            "example_window": self.example_window in EXAMPLE_WINDOWS,
            "example_variance": self.example_variance in EXAMPLE_VARIANCES,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid settings: {', '.join(bad)}")
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise ValueError(f"mixup/cutmix mix a batch with its mirror: batch_size must be even, got "
                             f"{self.batch_size} (or pass --mixup 0 --cutmix 0)")


def _augmentable(spec: str) -> bool:
    """Whether a data spec names uint8 images (CIFAR-10, image folders) that timm can augment."""
    return spec not in ("digits", "synthetic")


def cosine_lr(base: float, floor: float, warmup_iters: int, total_iters: int) -> Callable[[int], float]:
    """The run's lr as a function of the iteration: ``trilevel.schedule.cosine_lr`` (linear warm-up,
    cosine to ``floor`` at ``total_iters``) with the run's constants bound."""
    return functools.partial(
        schedule.cosine_lr,
        base_lr=base,
        total_iters=total_iters,
        warmup_iters=min(warmup_iters, total_iters),
        min_lr=floor,
    )


class _Dist:
    """torchrun environment (or a single process)."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError("--device cuda requested but CUDA is not available")
            if device == "cuda":
                device = f"cuda:{local_rank}" if self.world > 1 else "cuda"
            torch.cuda.set_device(torch.device(device))
        self.device = torch.device(device)
        self.owns_group = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.owns_group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float] | list[int]) -> list[Any]:
        """Sum over ranks; integers stay exact (int64)."""
        exact = all(isinstance(v, int) for v in values)
        t = torch.tensor(values, dtype=torch.int64 if exact else torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(t)
        return t.tolist()

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate equal-length tensors of every rank (the sampler pads ranks to equal length)."""
        if self.world == 1:
            return t
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases, norms, position embedding and [CLS] token (DeiT practice), nor on
    what a timm model names in no_weight_decay() (Swin: its relative position bias tables)."""
    names = {"pos_embed", "cls_token", *getattr(model, "no_weight_decay", set)()}
    keywords = tuple(getattr(model, "no_weight_decay_keywords", set)())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            exempt = p.ndim <= 1 or name in names or any(word in name for word in keywords)
            (no_decay if exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _data_img_size(spec: str, model: str, img_size: int | None) -> int | None:
    """The image size the data is loaded at: native for digits/CIFAR, the model's for the rest."""
    if img_size is not None or spec == "digits" or spec.startswith("cifar10:"):
        return img_size
    if Path(spec).is_dir() and any(Path(spec).glob("data_batch_*")):
        return img_size
    return model_config(model).img_size


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    prepare: DeviceBatch,
    keep_token: float,
    keep_attn: float,
    env: _Dist,
    amp: bool,
) -> float:
    """Top-1 accuracy (fraction) at the given ratios; each rank's loader holds a disjoint shard."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=env.device)
    total = 0
    for images, labels, _ in loader:
        images, _, labels = prepare(images, labels, train=False)
        with _autocast(env.device, amp):
            logits = model(images, keep_token=keep_token, keep_attn=keep_attn)
        correct += (logits.argmax(-1) == labels).sum()
        total += len(labels)
    correct_all, total_all = env.sum([int(correct), total])
    return correct_all / max(total_all, 1)


def _run_lengths(run: TrainConfig, iters_per_epoch: int, example_filter: ExampleFilter) -> RunLengths:
    return RunLengths(
        epochs=run.epochs,
        iters_per_epoch=iters_per_epoch,
        warmup_epochs=run.warmup_epochs,
        keep_targets=(run.keep_token, run.keep_attn),
        keep_warmup_epochs=run.keep_warmup_epochs,
        keep_decay_epochs=run.keep_decay_epochs,
        example_rounds=example_filter.max_rounds,
        example_period=run.example_period,
        example_window=run.example_window,
        ema_decay=run.ema_decay,
    )


def _autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()


def _config_record(config: TrainConfig) -> dict[str, Any]:
    return {key: getattr(config, key) for key in _RESUME_FIELDS}


_CHECKPOINT_KEYS = ("config", "model", "optimizer", "example_filter", "epoch", "iteration", "totals", "rng")


def train(config: TrainConfig) -> list[dict[str, Any]]:
    """Train and return every epoch's metrics record (including epochs restored by ``resume``).

    Every input is validated (config, data, images, checkpoint) before the run folder is created and
    locked (`runlog.RunLock`); Ctrl-C raises `trilevel.userinput.Interrupted` naming the last checkpoint.
    """
    env = _Dist(config.device)
    try:
        with contextlib.ExitStack() as run_scope:
            return _train(config, env, run_scope)
    except KeyboardInterrupt:
        raise runlog.interrupted(config.out, config.epochs) from None
    finally:
        env.close()


def _resume_state(config: TrainConfig, ckpt_path: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: start from scratch), refused if its settings differ."""
    if not (config.resume and ckpt_path.exists()):
        return None
    state = runlog.load_checkpoint(ckpt_path, required=_CHECKPOINT_KEYS)
    runlog.check_resume_config(_config_record(config), {**_LEGACY_CONFIG, **state["config"]})
    return state


def _train(config: TrainConfig, env: _Dist, run_scope: contextlib.ExitStack) -> list[dict[str, Any]]:
    cfg_run = config.resolved(world=env.world, full_recipe=True)
    out = Path(cfg_run.out)
    ckpt_path = out / runlog.CHECKPOINT_FILE
    runlog.refuse_overwrite(out, cfg_run.resume)
    state, state_stamp = _resume_state(cfg_run, ckpt_path), runlog.file_stamp(ckpt_path)

    torch.manual_seed(cfg_run.seed)
    np.random.seed(cfg_run.seed)  # timm's Mixup draws from numpy
    random.seed(cfg_run.seed)  # timm's transforms and RandomErasing draw from Python's random
    data_img = _data_img_size(cfg_run.data, cfg_run.model, cfg_run.img_size)
    if cfg_run.model in TIMM_CONFIGS:
        from trilevel.baselines.timm_models import check_timm_run

        check_timm_run(cfg_run.model, dataclasses.asdict(cfg_run))
    base_cfg = model_config(cfg_run.model)
    train_set, test_set = load_dataset(
        cfg_run.data,
        img_size=data_img,
        in_chans=base_cfg.in_chans,
        num_classes=base_cfg.num_classes,
        seed=cfg_run.seed,
        augment=AugmentSpec(auto_augment=cfg_run.auto_augment) if cfg_run.augment else None,
    )
    check_images((train_set, test_set), cfg_run.bad_images, cfg_run.progress and env.main)
    method = make_method(cfg_run.method)
    model = method.build_model(
        cfg_run.model,
        num_classes=train_set.num_classes,
        in_chans=train_set.in_chans,
        img_size=train_set.img_size,
        attn_impl=cfg_run.attn_impl,
        token_policy=cfg_run.token_policy,
        attn_policy=cfg_run.attn_policy,
        drop_path=cfg_run.drop_path,
    )
    model.debug_checks = cfg_run.debug_checks
    if cfg_run.init and state is None:
        for note in load_init(model, cfg_run.init):
            if env.main:
                print(f"--init: {note}", file=sys.stderr)
    model.to(env.device)
    ema = None
    if cfg_run.ema_decay > 0:
        from timm.utils import ModelEmaV3  # imported lazily: timm costs ~1 s

        ema = ModelEmaV3(model, decay=cfg_run.ema_decay)
    if cfg_run.compile:  # in place, so parameter names (checkpoints) stay those of the plain model
        for block in model.blocks:
            block.attn.compile(dynamic=True)
            block.mlp.compile(dynamic=True)
    net: nn.Module = model
    if env.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device] if env.device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(_param_groups(model, cfg_run.weight_decay), lr=cfg_run.lr)
    example_filter = ExampleFilter(
        len(train_set),
        cfg_run.keep_example,
        cfg_run.example_period,
        cfg_run.example_remove_frac,
        cfg_run.seed,
        policy=cfg_run.example_policy,
        window=cfg_run.example_window,
        variance=cfg_run.example_variance,
    )
    # Loaders live for the whole run; the sampler follows the filter's active subset.
    for dataset in (train_set, test_set):
        dataset.raw = True  # stored pixels (uint8 where possible) travel; DeviceBatch normalizes
    sampler = ActiveSampler(
        np.arange(example_filter.num_active),  # sizes the loader; each epoch sets the active subset
        env.world,
        env.rank,
        cfg_run.seed,
        repeats=cfg_run.repeated_aug if env.world > 1 else 1,  # DeiT repeats under DDP only
    )
    mixing = cfg_run.mixup > 0 or cfg_run.cutmix > 0
    train_workers = default_workers(train_set) if cfg_run.num_workers is None else cfg_run.num_workers
    test_workers = default_workers(test_set) if cfg_run.num_workers is None else cfg_run.num_workers
    train_loader = make_loader(train_set, cfg_run.batch_size, train_workers, env.device, sampler, mixing)
    test_shard = Subset(test_set, range(env.rank, len(test_set), env.world))
    test_loader = make_loader(test_shard, 2 * cfg_run.batch_size, test_workers, env.device)
    prepare = DeviceBatch(
        train_set.normalization,
        env.device,
        train_set.num_classes,
        reprob=cfg_run.reprob,
        mixup=cfg_run.mixup,
        cutmix=cfg_run.cutmix,
        label_smoothing=cfg_run.label_smoothing,
    )
    test_prepare = DeviceBatch(test_set.normalization, env.device, test_set.num_classes)
    iters_per_epoch = len(train_loader)
    if iters_per_epoch < 1:
        raise ValueError(
            f"batch_size {cfg_run.batch_size} exceeds the {len(sampler)} images per epoch and process "
            "(mixup drops incomplete batches): lower --batch-size"
        )
    total_iters = cfg_run.epochs * iters_per_epoch
    lr_at = cosine_lr(cfg_run.lr, cfg_run.min_lr, round(cfg_run.warmup_epochs * iters_per_epoch), total_iters)
    keep_warmup = round(cfg_run.keep_warmup_epochs * iters_per_epoch)
    keep_decay = round(cfg_run.keep_decay_epochs * iters_per_epoch)
    token_at = schedule.KeepRatioSchedule(cfg_run.keep_token, keep_warmup, keep_decay)
    attn_at = schedule.KeepRatioSchedule(cfg_run.keep_attn, keep_warmup, keep_decay)
    # Algorithmic MACs (gather: the work Tri-Level needs) and those of the implementation that runs.
    counter, executed = mac_counters(model, cfg_run.attn_impl)
    method.attach(model, optimizer, total_iters)

    # Every input is valid: create and lock the run folder (one writer), then look again under the lock.
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        run_scope.enter_context(runlog.RunLock(out))
        runlog.refuse_overwrite(out, cfg_run.resume)
        if runlog.file_stamp(ckpt_path) != state_stamp:  # a writer finished an epoch before we locked
            state = _resume_state(cfg_run, ckpt_path)
    env.barrier()

    start_epoch, iteration = 0, 0
    totals = {"cumulative_wall_s": 0.0, "cumulative_images": 0, "cumulative_train_macs": 0}
    records: list[dict[str, Any]] = []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        example_filter.load_state_dict(state["example_filter"])
        method.load_state_dict(state.get("method", {}))
        start_epoch, iteration, totals = state["epoch"], state["iteration"], dict(state["totals"])
        runlog.restore_rng_state(state["rng"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        if env.main:
            records = runlog.truncate_metrics(out, start_epoch)
        if env.main:
            print(f"resumed {out} after epoch {start_epoch} (iteration {iteration})", file=sys.stderr)
    elif cfg_run.resume and env.main:
        print(f"no checkpoint in {out}; starting from scratch", file=sys.stderr)
    if env.main and start_epoch == 0:
        print(
            f"train {model.cfg.name} on {cfg_run.data}: {len(train_set)} train / {len(test_set)} test, "
            f"{example_filter.num_active} active, {iters_per_epoch} it/epoch, global batch "
            f"{cfg_run.batch_size * env.world}, lr {cfg_run.lr:.3g}, device {env.device}, world {env.world}, "
            f"recipe {recipe_for(cfg_run.model).name}, {train_workers} workers",
            file=sys.stderr,
        )
    if env.main:
        for note in schedule_warnings(_run_lengths(cfg_run, iters_per_epoch, example_filter)):
            print(f"trilevel train: warning: {note}", file=sys.stderr)

    end_epoch = (
        cfg_run.epochs
        if cfg_run.stop_after is None
        else min(cfg_run.epochs, start_epoch + cfg_run.stop_after)
    )
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        active = example_filter.active_indices()
        sampler.set_active(active)
        sampler.set_epoch(epoch)
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
        correct_sum = torch.zeros((), dtype=torch.int64, device=env.device)
        images_local, macs_local, executed_local = 0, 0, 0
        seen_idx, seen_ok, seen_var, seen_prob = [], [], [], []
        bar = tqdm(
            train_loader,
            desc=f"epoch {epoch + 1}/{cfg_run.epochs}",
            leave=False,
            disable=bars_disabled(cfg_run.progress) or not env.main,
            file=sys.stderr,
        )
        for images, labels, indices in bar:
            images, targets, labels = prepare(images, labels, train=True)
            lr = lr_at(iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            keep_token, keep_attn = token_at(iteration), attn_at(iteration)
            with _autocast(env.device, cfg_run.amp):
                output = net(
                    images, keep_token=keep_token, keep_attn=keep_attn, return_info=example_filter.enabled
                )
                logits, info = output if example_filter.enabled else (output, None)
                if prepare.soft_targets:  # mixup/cutmix targets, label smoothing included
                    loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
                else:
                    loss = F.cross_entropy(logits.float(), targets, label_smoothing=cfg_run.label_smoothing)
                extra_loss = method.extra_loss(model)
                if extra_loss is not None:
                    loss = loss + extra_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.before_step(model, iteration)
            optimizer.step()
            method.after_step(model, iteration)
            iteration += 1
            if ema is not None:
                ema.update(model, step=iteration)
            with torch.no_grad():
                # Under mixup/cutmix "correct" compares with the image's own label, as the official code.
                ok = logits.argmax(-1) == labels
                loss_sum += loss.detach().double() * len(labels)
                correct_sum += ok.sum()
                if example_filter.enabled:
                    seen_idx.append(indices.to(env.device))
                    seen_ok.append(ok)
                    seen_var.append(info.cls_attn_var.float())
                    seen_prob.append(logits.float().softmax(dim=-1).gather(1, labels[:, None])[:, 0])
            images_local += len(labels)
            macs_local += len(labels) * method.count_macs(counter, keep_token, keep_attn, True)
            executed_local += len(labels) * method.count_macs(executed, keep_token, keep_attn, True)
            if not bar.disable and iteration % 10 == 0:  # .item() synchronizes the GPU: not every step
                bar.set_postfix(loss=f"{loss.item():.3f}", R_T=f"{keep_token:.2f}", R_A=f"{keep_attn:.2f}")
        bar.close()

        (loss_total,) = env.sum([float(loss_sum)])
        correct_total, images, train_macs, train_macs_executed = env.sum(
            [int(correct_sum), images_local, macs_local, executed_local]
        )
        if example_filter.enabled and seen_idx:
            example_filter.update(
                env.gather_cat(torch.cat(seen_idx)).cpu().numpy(),
                env.gather_cat(torch.cat(seen_ok)).cpu().numpy(),
                env.gather_cat(torch.cat(seen_var)).cpu().numpy(),
                true_prob=env.gather_cat(torch.cat(seen_prob)).cpu().numpy(),
            )
        filter_round = example_filter.end_epoch(epoch)
        test_top1 = evaluate(model, test_loader, test_prepare, keep_token, keep_attn, env, cfg_run.amp)
        test_top1_ema = (
            None
            if ema is None
            else evaluate(ema.module, test_loader, test_prepare, keep_token, keep_attn, env, cfg_run.amp)
        )
        wall = time.perf_counter() - t0
        totals["cumulative_wall_s"] += wall
        totals["cumulative_images"] += int(images)
        totals["cumulative_train_macs"] += int(train_macs)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "wall_s": round(wall, 4),
            "images": int(images),
            "active_examples": len(active),
            "keep_example": cfg_run.keep_example,
            "keep_token": keep_token,
            "keep_attn": keep_attn,
            "lr": lr,
            "train_loss": loss_total / max(images, 1),
            "train_top1": correct_total / max(images, 1),
            "test_top1": test_top1,
            "macs_per_image": method.count_macs(counter, keep_token, keep_attn, False),
            "train_macs": int(train_macs),
            # Added fields (older metrics.jsonl files lack them): what the attention path executed.
            "attn_impl": cfg_run.attn_impl,
            "macs_executed_per_image": method.count_macs(executed, keep_token, keep_attn, False),
            "train_macs_executed": int(train_macs_executed),
            "cumulative_wall_s": round(totals["cumulative_wall_s"], 4),
            "cumulative_images": totals["cumulative_images"],
            "cumulative_train_macs": totals["cumulative_train_macs"],
            "filter_round": filter_round,
        }
        if test_top1_ema is not None:
            record["test_top1_ema"] = test_top1_ema
        record.update(method.metrics())
        records.append(record)
        if env.main:
            runlog.commit_epoch(
                out,
                {
                    "config": _config_record(cfg_run),
                    "model_config": dataclasses.asdict(model.cfg),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "example_filter": example_filter.state_dict(),
                    "method": method.state_dict(),
                    "epoch": epoch + 1,
                    "iteration": iteration,
                    "totals": totals,
                    "rng": runlog.capture_rng_state(),
                    **({} if ema is None else {"ema": ema.module.state_dict()}),
                },
                record,
            )
            print(format_record(record), file=sys.stderr)
        env.barrier()
    return records


def format_record(r: dict[str, Any]) -> str:
    return (
        f"epoch {r['epoch']:3d}  {r['wall_s']:7.2f}s  {r['images']:7d} img ({r['active_examples']} active)  "
        f"R_T {r['keep_token']:.3f} R_A {r['keep_attn']:.3f}  loss {r['train_loss']:.4f}  "
        f"train {r['train_top1']:.2%}  test {r['test_top1']:.2%}  "
        f"fwd {r['macs_per_image'] / 1e6:.2f} MMAC/img"
        + (
            f" ({r['macs_executed_per_image'] / 1e6:.2f} executed, {r['attn_impl']})"
            if r.get("macs_executed_per_image", r["macs_per_image"]) != r["macs_per_image"]
            else ""
        )
        + ("  [remove-and-restore]" if r["filter_round"] else "")
    )
