"""Layer-wise fixed-point trainer: Tri-Level E-ViT training through an accelerator backend.

`trilevel train --backend reference|csim|pynq` lands here. The host (this module; the ARM cores on a
ZCU102) owns the data, the example filter, the keep-ratio and lr schedules, the softmax cross-entropy
and the frac bookkeeping; every layer runs as a kernel of the backend (`trilevel.accel.Accelerator`):

    patch embedding (linear) -> [CLS] + position embedding (host, integer add)
    -> per block: attention kernel -> TA-selector (top-k kernels, host gather) -> MLP kernel
    -> final LayerNorm ([CLS] row) -> head (linear) -> loss (host, float)
    -> backward block by block, weight gradients accumulated in int64 over the micro-batches
    -> optimizer kernel (AdamW on fp32 master weights) -> new int16 weights

Fracs: every requantization point of every call site has a frac, fixed over an optimizer step (so
gradient accumulators of different micro-batches add exactly); after the step the host re-picks each
from the step's largest pre-saturation max-abs (`choose_frac_int`, one bit of headroom). A short
calibration (a few forward/backward passes of the first micro-batch, no update) sets the first fracs.

The recipe, data order, schedules, example filter and initial weights are those of
`trilevel.train_torch` with the same seed, so fixed-point and float runs are comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from trilevel import runlog
from trilevel.accel.interface import Accelerator, BackendError, get_backend
from trilevel.config import ViTConfig, get_config, keep_count
from trilevel.data import load_dataset
from trilevel.example_filter import ExampleFilter
from trilevel.imagecheck import check_images
from trilevel.intref.fixed import FRAC_MAX, QTensor, choose_frac_int, hash32, quantize
from trilevel.intref.fracs import clamp_frac
from trilevel.intref.optim import AdamWScalars, SgdmScalars
from trilevel.train_torch import TrainConfig, cosine_lr, format_record
from trilevel.userinput import UserError, bars_disabled

_RESUME_FIELDS = (
    "model", "data", "epochs", "batch_size", "micro_batch", "keep_example", "keep_token", "keep_attn", "lr",
    "min_lr", "warmup_epochs", "weight_decay", "keep_warmup_epochs", "keep_decay_epochs", "example_period",
    "example_remove_frac", "example_policy", "img_size", "seed", "backend", "optimizer", "max_examples",
)
_CHECKPOINT_KEYS = ("config", "net", "example_filter", "epoch", "iteration", "totals", "rng")
CALIBRATION_PASSES = 6
# Fracs before calibration: activations ~N(0, 1) fit 12 bits of fraction, gradients are small.
DEFAULT_FWD_FRAC, DEFAULT_BWD_FRAC = 10, 20


@dataclass
class AccelTrainConfig(TrainConfig):
    """TrainConfig (same recipe and defaults) plus the accelerator's settings."""

    backend: str = "reference"
    attn_impl: str = "gather"  # the kernels compute only the kept connections
    micro_batch: int | None = None  # images per kernel call; default: the whole batch
    optimizer: str = "adamw"  # adamw | sgdm
    momentum: float = 0.9  # sgdm only
    csim_lib: str | None = None  # csim backend: library path (default build/csim/libtrilevel_csim.so)
    project_latency: bool = True  # add the projected ZCU102 time of each epoch to its metrics
    max_examples: int | None = None  # only the first N examples of each split (smoke runs, CI)


# ------------------------------------------------------------------------------------------- fracs
class FracBook:
    """The fracs of every call site's requantization points, and the step's largest observed stats."""

    def __init__(self) -> None:
        self.fracs: dict[str, dict[str, int]] = {}
        self.peaks: dict[str, dict[str, int]] = {}

    def get(self, site: str, keys: tuple[str, ...], default: int) -> dict[str, int]:
        entry = self.fracs.setdefault(site, {})
        for key in keys:
            entry.setdefault(key, clamp_frac(key, default))
        return entry

    def observe(self, site: str, stats: dict[str, int]) -> None:
        fr, peak = self.fracs.get(site, {}), self.peaks.setdefault(site, {})
        for key, value in stats.items():
            if key in fr:
                peak[key] = max(peak.get(key, 0), int(value))

    def update(self, calibrating: bool = False) -> int:
        """Re-pick every observed frac from its peak; returns how many changed. A zero peak (all values
        under one LSB) keeps its frac, or, while calibrating, gains 8 bits to find the values."""
        changed = 0
        for site, peak in self.peaks.items():
            fr = self.fracs[site]
            for key, value in peak.items():
                if value == 0:
                    new = min(fr[key] + 8, FRAC_MAX) if calibrating else fr[key]
                else:
                    new = clamp_frac(key, choose_frac_int(value, fr[key]))
                changed += new != fr[key]
                fr[key] = new
        self.peaks = {}
        return changed

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {site: dict(fr) for site, fr in self.fracs.items()}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        self.fracs = {site: {k: int(v) for k, v in fr.items()} for site, fr in state.items()}
        self.peaks = {}


def _float_stat(x: np.ndarray, frac: int) -> int:
    """max|x| in units of 2**-frac (floor), the stat of a host-quantized tensor."""
    return int(math.floor(float(np.max(np.abs(x))) * 2.0**frac)) if x.size else 0


def _seed(*parts: int) -> int:
    """A uint32 SR seed from integers (run seed, iteration, call site, micro-batch), by chained hash32."""
    s = 0x5EED
    for p in parts:
        s = int(hash32(s, np.array(p & 0xFFFFFFFF, dtype=np.int64)))
    return s


# ------------------------------------------------------------------------------------------ weights
def _no_decay(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) <= 1 or name in ("pos_embed", "cls_token")


class Weights:
    """fp32 master weights, optimizer moments, int16 working copies and int64 gradient accumulators,
    keyed by the golden model's state_dict names (the patch-embedding conv weight stored as [D, C*p*p])."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        self.master = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
        self.exp_avg = {k: np.zeros_like(v) for k, v in self.master.items()}
        self.exp_avg_sq = {k: np.zeros_like(v) for k, v in self.master.items()}
        self.q = {k: QTensor.from_float(v) for k, v in self.master.items()}
        self.grads = {k: np.zeros(v.shape, np.int64) for k, v in self.master.items()}
        self.grad_fracs: dict[str, int] = {}
        self.step = 0

    @classmethod
    def from_model(cls, model: torch.nn.Module) -> Weights:
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        w = state["patch_embed.proj.weight"]
        state["patch_embed.proj.weight"] = w.reshape(w.shape[0], -1)
        return cls(state)

    def group(self, prefix: str) -> dict[str, QTensor]:
        """int16 parameters of one layer, names relative to `prefix` (e.g. "blocks.3.attn.")."""
        return {k[len(prefix):]: v for k, v in self.q.items() if k.startswith(prefix)}

    def grad_group(self, prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix):]: v for k, v in self.grads.items() if k.startswith(prefix)}

    def note_grad_fracs(self, prefix: str, fracs: dict[str, int]) -> None:
        for k, f in fracs.items():
            name = prefix + k
            old = self.grad_fracs.setdefault(name, int(f))
            if old != f:
                raise RuntimeError(f"gradient frac of {name} changed within a step ({old} -> {f})")

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g[...] = 0
        self.grad_fracs = {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "master": self.master, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
            "q": {k: v.data for k, v in self.q.items()}, "q_frac": {k: v.frac for k, v in self.q.items()},
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def arr(t: Any, dtype: type) -> np.ndarray:
            return np.ascontiguousarray(np.asarray(t), dtype=dtype)

        self.master = {k: arr(v, np.float32) for k, v in state["master"].items()}
        self.exp_avg = {k: arr(v, np.float32) for k, v in state["exp_avg"].items()}
        self.exp_avg_sq = {k: arr(v, np.float32) for k, v in state["exp_avg_sq"].items()}
        self.q = {k: QTensor(arr(v, np.int16), int(state["q_frac"][k])) for k, v in state["q"].items()}
        self.step = int(state["step"])
        self.zero_grad()

    def torch_state_dict(self, cfg: ViTConfig) -> dict[str, torch.Tensor]:
        """Master weights as a golden-model state_dict (conv layout restored)."""
        out = {k: torch.from_numpy(v.copy()) for k, v in self.master.items()}
        p = cfg.patch_size
        conv_shape = (cfg.embed_dim, cfg.in_chans, p, p)
        out["patch_embed.proj.weight"] = out["patch_embed.proj.weight"].reshape(conv_shape)
        return out


# ------------------------------------------------------------------------------------------ network
@dataclass
class StepResult:
    loss_sum: float  # summed cross-entropy over the batch
    correct: np.ndarray  # [B] bool
    cls_attn_var: np.ndarray  # [B] float64, for the example filter's tie-break


@dataclass
class _Tape:
    """What one micro-batch's forward leaves for its backward."""

    patch: dict
    blocks: list[tuple[dict, tuple[np.ndarray, int] | None, dict]]  # attn saved, (positions, T), mlp saved
    norm: dict
    head: dict
    last_tokens: int


def patchify(images: np.ndarray, patch: int) -> np.ndarray:
    """[B, C, H, W] -> [B, N, C*p*p]: patches row-major, each flattened as the conv weight [D, C, p, p]."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch).transpose(0, 2, 4, 1, 3, 5)
    return np.ascontiguousarray(x.reshape(b, (h // patch) * (w // patch), c * patch * patch))


class LayerwiseViT:
    """The golden model's network, executed kernel by kernel on an accelerator backend."""

    def __init__(self, cfg: ViTConfig, backend: Accelerator, weights: Weights) -> None:
        if not cfg.cls_token:
            raise ValueError("the layer-wise trainer needs a [CLS] token model")
        self.cfg, self.be, self.w = cfg, backend, weights
        self.book = FracBook()
        self.calibrated = False

    # ---- frac helpers
    def _fr(self, site: str, keys: tuple[str, ...], backward: bool = False) -> dict[str, int]:
        return self.book.get(site, keys, DEFAULT_BWD_FRAC if backward else DEFAULT_FWD_FRAC)

    def _quantize(self, site: str, key: str, x: np.ndarray, observe: bool, backward: bool = False) -> QTensor:
        f = self._fr(site, (key,), backward)[key]
        if observe:
            self.book.observe(site, {key: _float_stat(x, f)})
        return QTensor(quantize(x, f), f)

    # ---- forward
    def forward(self, images: np.ndarray, keep_token: float, keep_attn: float, observe: bool
                ) -> tuple[np.ndarray, _Tape, np.ndarray]:
        """Logits [B, classes] (float), the tape for backward and the [CLS] attention variance [B]."""
        cfg, be, w = self.cfg, self.be, self.w
        xq = self._quantize("input", "x", patchify(images, cfg.patch_size), observe)
        emb, st, patch_saved = be.linear_fwd(xq, w.group("patch_embed.proj."),
                                             self._fr("patch_embed", be.LINEAR_FWD_FRACS))
        self._observe("patch_embed", st, observe)
        batch = emb.data.shape[0]
        cls = np.broadcast_to(w.q["cls_token"].to_float(np.float64), (batch, 1, cfg.embed_dim))
        tokens = np.concatenate([cls, emb.to_float(np.float64)], axis=1)
        tokens += w.q["pos_embed"].to_float(np.float64)
        x = self._quantize("embed", "x", tokens, observe)  # exact sum, one RNE rounding (host)
        conn: np.ndarray | None = None
        blocks = []
        attn_sum = None
        for i in range(cfg.depth):
            params = w.group(f"blocks.{i}.")
            x, st, attn_saved = be.attn_block_fwd(x, params, self._fr(f"blocks.{i}.attn", be.ATTN_FWD_FRACS),
                                                  cfg.num_heads, conn, 1)
            self._observe(f"blocks.{i}.attn", st, observe)
            attn_sum = attn_saved["attn_sum"]
            select = None
            if i in cfg.prune_blocks:
                length = x.data.shape[1]
                k = keep_count(keep_token, length - 1)
                idx = be.topk_tokens(attn_sum[:, 0, 1:], k)  # [B, k] ascending patch positions
                positions = np.concatenate([np.zeros((batch, 1), np.int64), idx + 1], axis=1)
                x = QTensor(np.take_along_axis(x.data, positions[..., None], axis=1), x.frac)
                select = (positions, length)
                k_attn = keep_count(keep_attn, k)
                if k_attn < k:
                    kept = np.take_along_axis(attn_sum, positions[:, :, None], axis=1)
                    kept = np.take_along_axis(kept, positions[:, None, :], axis=2)  # [B, 1+k, 1+k]
                    conn = be.topk_connections(kept, k_attn)
                else:
                    conn = None
            x, st, mlp_saved = be.mlp_block_fwd(x, params, self._fr(f"blocks.{i}.mlp", be.MLP_FWD_FRACS))
            self._observe(f"blocks.{i}.mlp", st, observe)
            blocks.append((attn_saved, select, mlp_saved))
        # [CLS] attention variance of the last block (head-mean, patches only), for the example filter.
        cls_row = attn_sum[:, 0, 1:].astype(np.float64) / (cfg.num_heads * 2.0**15)
        cls_attn_var = cls_row.var(axis=-1)
        cls_x = QTensor(np.ascontiguousarray(x.data[:, :1]), x.frac)
        h, st, norm_saved = be.layernorm_fwd(cls_x, w.group("norm."),
                                             self._fr("norm", be.LAYERNORM_FWD_FRACS))
        self._observe("norm", st, observe)
        logits, st, head_saved = be.linear_fwd(h, w.group("head."), self._fr("head", be.LINEAR_FWD_FRACS))
        self._observe("head", st, observe)
        tape = _Tape(patch_saved, blocks, norm_saved, head_saved, x.data.shape[1])
        return logits.to_float(np.float64)[:, 0], tape, cls_attn_var

    def _observe(self, site: str, stats: dict[str, int], observe: bool) -> None:
        if observe:
            self.book.observe(site, stats)

    # ---- backward
    def backward(self, tape: _Tape, dlogits: np.ndarray, seed: int) -> None:
        """Backward of one micro-batch; ADDS every weight gradient to the int64 accumulators."""
        cfg, be, w = self.cfg, self.be, self.w
        site_seed = iter(range(1 << 20))

        def call_seed() -> int:
            return _seed(seed, next(site_seed))

        def bwd(site: str, keys: tuple[str, ...]) -> dict[str, int]:
            return self._fr(site, keys, backward=True)

        def grads(prefix: str, fracs: dict[str, int]) -> None:
            w.note_grad_fracs(prefix, fracs)

        dy = self._quantize("loss", "dy", dlogits[:, None, :], True, backward=True)
        dh, st, g = be.linear_bwd(dy, tape.head, w.group("head."), w.grad_group("head."),
                                  bwd("head.bwd", be.LINEAR_BWD_FRACS), call_seed())
        self.book.observe("head.bwd", st)
        grads("head.", g)
        dcls, st, g = be.layernorm_bwd(dh, tape.norm, w.group("norm."), w.grad_group("norm."),
                                       bwd("norm.bwd", be.LAYERNORM_BWD_FRACS), call_seed())
        self.book.observe("norm.bwd", st)
        grads("norm.", g)
        batch = dlogits.shape[0]
        data = np.zeros((batch, tape.last_tokens, cfg.embed_dim), np.int16)
        data[:, :1] = dcls.data
        dx = QTensor(data, dcls.frac)
        for i in reversed(range(cfg.depth)):
            attn_saved, select, mlp_saved = tape.blocks[i]
            prefix = f"blocks.{i}."
            dx, st, g = be.mlp_block_bwd(dx, mlp_saved, w.group(prefix), w.grad_group(prefix),
                                         bwd(f"blocks.{i}.mlp.bwd", be.MLP_BWD_FRACS), call_seed())
            self.book.observe(f"blocks.{i}.mlp.bwd", st)
            grads(prefix, g)
            if select is not None:  # scatter the kept tokens' gradients back; pruned tokens get 0
                positions, length = select
                full = np.zeros((batch, length, cfg.embed_dim), np.int16)
                np.put_along_axis(full, positions[..., None], dx.data, axis=1)
                dx = QTensor(full, dx.frac)
            dx, st, g = be.attn_block_bwd(dx, attn_saved, w.group(prefix), w.grad_group(prefix),
                                          bwd(f"blocks.{i}.attn.bwd", be.ATTN_BWD_FRACS), call_seed())
            self.book.observe(f"blocks.{i}.attn.bwd", st)
            grads(prefix, g)
        # [CLS] and position embedding (host): their gradients are sums of dx over the batch.
        dx64 = dx.data.astype(np.int64)
        w.grads["pos_embed"] += dx64.sum(axis=0, keepdims=True)
        w.grads["cls_token"] += dx64[:, :1].sum(axis=0, keepdims=True)
        grads("", {"pos_embed": dx.frac, "cls_token": dx.frac})
        d_emb = QTensor(np.ascontiguousarray(dx.data[:, 1:]), dx.frac)
        _, _, g = be.linear_bwd(d_emb, tape.patch, w.group("patch_embed.proj."),
                                w.grad_group("patch_embed.proj."),
                                bwd("patch_embed.bwd", be.LINEAR_BWD_FRACS), call_seed(), need_dx=False)
        grads("patch_embed.proj.", g)

    # ---- steps
    def _loss(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Summed softmax cross-entropy, per-example correctness, dLoss/dlogits per example (p - onehot)."""
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        rows = np.arange(len(labels))
        grad = np.exp(logp)
        grad[rows, labels] -= 1.0
        return float(-logp[rows, labels].sum()), logits.argmax(axis=1) == labels, grad

    def _micro(self, images: np.ndarray, labels: np.ndarray, keep_token: float, keep_attn: float,
               micro: int, seed: int) -> StepResult:
        loss, correct, var = 0.0, [], []
        for j, start in enumerate(range(0, len(labels), micro)):
            x, y = images[start:start + micro], labels[start:start + micro]
            logits, tape, v = self.forward(x, keep_token, keep_attn, observe=True)
            l_sum, ok, dlogits = self._loss(logits, y)
            self.backward(tape, dlogits, _seed(seed, j))
            loss += l_sum
            correct.append(ok)
            var.append(v)
        return StepResult(loss, np.concatenate(correct), np.concatenate(var))

    def calibrate(self, images: np.ndarray, labels: np.ndarray, keep_token: float, keep_attn: float,
                  seed: int) -> None:
        """Pick the first fracs: forward/backward passes of one micro-batch until no frac moves."""
        for p in range(CALIBRATION_PASSES):
            self.w.zero_grad()
            self._micro(images, labels, keep_token, keep_attn, len(labels), _seed(seed, 0xCA11, p))
            if self.book.update(calibrating=True) == 0:
                break
        self.w.zero_grad()
        self.calibrated = True

    def train_step(self, images: np.ndarray, labels: np.ndarray, keep_token: float, keep_attn: float,
                   run: AccelTrainConfig, lr: float, seed: int) -> StepResult:
        """One optimizer step over a batch, in micro-batches; fracs are re-picked afterwards."""
        self.w.zero_grad()
        result = self._micro(images, labels, keep_token, keep_attn, run.micro_batch, seed)
        self._optimize(len(labels), run, lr)
        self.book.update()
        return result

    def _optimize(self, batch: int, run: AccelTrainConfig, lr: float) -> None:
        """The optimizer kernel on every parameter (no weight decay on biases, norms, embeddings)."""
        w = self.w
        w.step += 1
        missing = sorted(set(w.master) - set(w.grad_fracs))
        if missing:
            raise RuntimeError(f"no gradient reached {missing}")
        for name, master in w.master.items():
            wd = 0.0 if _no_decay(name, master.shape) else run.weight_decay
            acc, frac = w.grads[name], w.grad_fracs[name]
            if run.optimizer == "adamw":
                scalars = AdamWScalars.at(w.step, lr, weight_decay=wd)
                w.q[name] = self.be.adamw_step(master, w.exp_avg[name], w.exp_avg_sq[name], acc, frac, batch,
                                               scalars)
            else:
                scalars = SgdmScalars.at(lr, run.momentum, wd)
                w.q[name] = self.be.sgdm_step(master, w.exp_avg[name], acc, frac, batch, scalars,
                                              first=w.step == 1)

    def evaluate(self, dataset: Any, keep_token: float, keep_attn: float, batch_size: int) -> float:
        """Top-1 accuracy (fraction) of the fixed-point forward at the given ratios."""
        correct = total = 0
        for x, y, _ in _batches(DataLoader(dataset, batch_size=batch_size)):
            logits, _, _ = self.forward(x, keep_token, keep_attn, observe=False)
            correct += int((logits.argmax(axis=1) == y).sum())
            total += len(y)
        return correct / max(total, 1)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.w.state_dict(), "fracs": self.book.state_dict(),
                "calibrated": self.calibrated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w.load_state_dict(state["weights"])
        self.book.load_state_dict(state["fracs"])
        self.calibrated = bool(state["calibrated"])


# ------------------------------------------------------------------------------------------ driver
def _resolve(config: AccelTrainConfig) -> AccelTrainConfig:
    cfg = config.resolved(config.batch_size)
    micro = cfg.batch_size if cfg.micro_batch is None else cfg.micro_batch
    if micro < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro}")
    if cfg.optimizer not in ("adamw", "sgdm"):
        raise ValueError(f"optimizer must be adamw or sgdm, got {cfg.optimizer!r}")
    if cfg.label_smoothing or cfg.drop_path or cfg.augment or cfg.attn_impl != "gather":
        raise ValueError("the layer-wise trainer supports neither label smoothing, drop path, augmentation "
                         "nor --attn-impl mask (the accelerator computes only the kept connections)")
    return dataclasses.replace(cfg, micro_batch=micro)


def _first(dataset: Any, n: int) -> Subset:
    """The first `n` items of `dataset` (their example indices stay 0..n-1), with its shape attributes."""
    sub = Subset(dataset, range(min(n, len(dataset))))
    for name in ("num_classes", "in_chans", "img_size"):
        setattr(sub, name, getattr(dataset, name))
    return sub


def _batches(loader: DataLoader) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    for images, labels, indices in loader:
        yield images.numpy().astype(np.float32), labels.numpy(), indices.numpy()


def train(config: AccelTrainConfig, backend: Accelerator | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          datasets: tuple[Dataset, Dataset] | None = None) -> list[dict[str, Any]]:
    """Train with the layer-wise fixed-point trainer; returns every epoch's metrics record (including
    epochs restored by `resume`). `on_epoch` sees each new record as it lands (default: print it);
    `datasets` = (train, test) replaces loading `config.data` (items: image, label, example index).

    Every input is validated (config, backend, data, images, checkpoint) before the run folder is
    created and locked (`runlog.RunLock`); Ctrl-C raises `trilevel.userinput.Interrupted`."""
    try:
        with contextlib.ExitStack() as run_scope:
            return _train(config, backend, on_epoch, datasets, run_scope)
    except KeyboardInterrupt:
        raise runlog.interrupted(config.out, config.epochs) from None


def _resume_state(run: AccelTrainConfig, ckpt_path: Path) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: start from scratch), refused if its settings differ."""
    if not (run.resume and ckpt_path.exists()):
        return None
    state = runlog.load_checkpoint(ckpt_path, required=_CHECKPOINT_KEYS)
    runlog.check_resume_config({k: getattr(run, k) for k in _RESUME_FIELDS}, state["config"])
    return state


def _train(config: AccelTrainConfig, backend: Accelerator | None,
           on_epoch: Callable[[dict[str, Any]], None] | None, datasets: tuple[Dataset, Dataset] | None,
           run_scope: contextlib.ExitStack) -> list[dict[str, Any]]:
    from trilevel.macs import MacCounter
    from trilevel.model import build_model
    from trilevel.schedule import KeepRatioSchedule

    run = _resolve(config)
    out = Path(run.out)
    ckpt_path = out / runlog.CHECKPOINT_FILE
    runlog.refuse_overwrite(out, run.resume)
    state, state_stamp = _resume_state(run, ckpt_path), runlog.file_stamp(ckpt_path)
    if backend is None:
        opts = {"lib": run.csim_lib} if run.backend == "csim" and run.csim_lib else {}
        try:
            backend = get_backend(run.backend, **opts)
        except (BackendError, ImportError, OSError) as err:  # OSError: a library that does not load
            raise UserError(f"--backend {run.backend}: {err}") from None

    # Same order of seeding, data loading and model construction as trilevel.train_torch: same init.
    torch.manual_seed(run.seed)
    np.random.seed(run.seed)
    base_cfg = get_config(run.model)
    if datasets is None:
        datasets = load_dataset(run.data, img_size=run.img_size, in_chans=base_cfg.in_chans,
                                num_classes=base_cfg.num_classes, seed=run.seed)
    train_set, test_set = datasets
    check_images(datasets, run.bad_images, run.progress)
    if run.max_examples is not None:
        train_set, test_set = _first(train_set, run.max_examples), _first(test_set, run.max_examples)
    golden = build_model(run.model, num_classes=train_set.num_classes, in_chans=train_set.in_chans,
                         img_size=train_set.img_size)
    cfg = golden.cfg
    net = LayerwiseViT(cfg, backend, Weights.from_model(golden))
    example_filter = ExampleFilter(len(train_set), run.keep_example, run.example_period,
                                   run.example_remove_frac, run.seed, policy=run.example_policy)
    iters_per_epoch = math.ceil(example_filter.num_active / run.batch_size)
    total_iters = run.epochs * iters_per_epoch
    lr_at = cosine_lr(run.lr, run.min_lr, round(run.warmup_epochs * iters_per_epoch), total_iters)
    keep_warmup = round(run.keep_warmup_epochs * iters_per_epoch)
    keep_decay = round(run.keep_decay_epochs * iters_per_epoch)
    token_at = KeepRatioSchedule(run.keep_token, keep_warmup, keep_decay)
    attn_at = KeepRatioSchedule(run.keep_attn, keep_warmup, keep_decay)
    counter = MacCounter(cfg)
    latency = _LatencyProjector(cfg, run.micro_batch, run.batch_size) if run.project_latency else None

    # Every input is valid: create and lock the run folder (one writer), then look again under the lock.
    out.mkdir(parents=True, exist_ok=True)
    run_scope.enter_context(runlog.RunLock(out))
    runlog.refuse_overwrite(out, run.resume)
    if runlog.file_stamp(ckpt_path) != state_stamp:  # a writer finished an epoch before we locked
        state = _resume_state(run, ckpt_path)

    start_epoch, iteration = 0, 0
    totals: dict[str, Any] = {"cumulative_wall_s": 0.0, "cumulative_images": 0, "cumulative_train_macs": 0,
                              "cumulative_zcu102_s": 0.0}
    records: list[dict[str, Any]] = []
    config_record = {k: getattr(run, k) for k in _RESUME_FIELDS}
    if state is not None:
        net.load_state_dict(state["net"])
        example_filter.load_state_dict(state["example_filter"])
        start_epoch, iteration, totals = state["epoch"], state["iteration"], dict(state["totals"])
        runlog.restore_rng_state(state["rng"])
        records = runlog.truncate_metrics(out, start_epoch)
    if start_epoch == 0:
        print(f"train {cfg.name} on {run.data} with the {backend.name} backend: {len(train_set)} train / "
              f"{len(test_set)} test, {example_filter.num_active} active, {iters_per_epoch} it/epoch, batch "
              f"{run.batch_size} (micro-batch {run.micro_batch}), lr {run.lr:.3g}", file=sys.stderr)

    end_epoch = run.epochs if run.stop_after is None else min(run.epochs, start_epoch + run.stop_after)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        active = example_filter.active_indices()
        sampler = DistributedSampler(Subset(train_set, active.tolist()), num_replicas=1, rank=0, shuffle=True,
                                     seed=run.seed)
        sampler.set_epoch(epoch)
        loader = DataLoader(sampler.dataset, batch_size=run.batch_size, sampler=sampler)
        loss_sum, correct, images, train_macs, zcu102_s = 0.0, 0, 0, 0, 0.0
        seen_idx, seen_ok, seen_var = [], [], []
        bar = tqdm(_batches(loader), total=len(loader), leave=False, disable=bars_disabled(run.progress),
                   desc=f"epoch {epoch + 1}/{run.epochs} [{backend.name}]", file=sys.stderr)
        lr = lr_at(iteration)
        keep_token, keep_attn = token_at(iteration), attn_at(iteration)
        for x, y, idx in bar:
            lr = lr_at(iteration)
            keep_token, keep_attn = token_at(iteration), attn_at(iteration)
            if not net.calibrated:
                net.calibrate(x[: run.micro_batch], y[: run.micro_batch], keep_token, keep_attn, run.seed)
            result = net.train_step(x, y, keep_token, keep_attn, run, lr, _seed(run.seed, iteration))
            iteration += 1
            loss_sum += result.loss_sum
            correct += int(result.correct.sum())
            images += len(y)
            train_macs += len(y) * counter.count(keep_token, keep_attn, train=True)
            if latency is not None:
                zcu102_s += len(y) * latency.train_s_per_image(keep_token, keep_attn)
            if example_filter.enabled:
                seen_idx.append(idx)
                seen_ok.append(result.correct)
                seen_var.append(result.cls_attn_var)
            bar.set_postfix(loss=f"{result.loss_sum / len(y):.3f}", R_T=f"{keep_token:.2f}",
                            R_A=f"{keep_attn:.2f}")
        bar.close()
        if example_filter.enabled and seen_idx:
            example_filter.update(np.concatenate(seen_idx), np.concatenate(seen_ok), np.concatenate(seen_var))
        filter_round = example_filter.end_epoch(epoch)
        test_top1 = net.evaluate(test_set, keep_token, keep_attn, max(run.micro_batch, 64))
        wall = time.perf_counter() - t0
        totals["cumulative_wall_s"] += wall
        totals["cumulative_images"] += images
        totals["cumulative_train_macs"] += train_macs
        totals["cumulative_zcu102_s"] += zcu102_s
        record: dict[str, Any] = {
            "epoch": epoch + 1, "wall_s": round(wall, 4), "images": images, "active_examples": len(active),
            "keep_example": run.keep_example, "keep_token": keep_token, "keep_attn": keep_attn, "lr": lr,
            "train_loss": loss_sum / max(images, 1), "train_top1": correct / max(images, 1),
            "test_top1": test_top1, "macs_per_image": counter.count(keep_token, keep_attn),
            "train_macs": train_macs, "cumulative_wall_s": round(totals["cumulative_wall_s"], 4),
            "cumulative_images": totals["cumulative_images"],
            "cumulative_train_macs": totals["cumulative_train_macs"], "filter_round": filter_round,
            "backend": backend.name,
        }
        if latency is not None:
            record["zcu102_train_s"] = zcu102_s
            record["cumulative_zcu102_s"] = totals["cumulative_zcu102_s"]
        records.append(record)
        runlog.commit_epoch(out, {
            "config": config_record, "model_config": dataclasses.asdict(cfg), "net": net.state_dict(),
            "example_filter": example_filter.state_dict(), "epoch": epoch + 1, "iteration": iteration,
            "totals": totals, "rng": runlog.capture_rng_state(),
        }, record)
        if on_epoch is not None:
            on_epoch(record)
        else:
            print(format_record(record), file=sys.stderr)
    return records


class _LatencyProjector:
    """Projected ZCU102 training seconds per image at given ratios (trilevel.latency), cached per plan."""

    def __init__(self, cfg: ViTConfig, micro_batch: int, batch_size: int) -> None:
        self.cfg, self.micro_batch, self.batch_size = cfg, micro_batch, batch_size
        self._cache: dict[tuple, float] = {}

    def train_s_per_image(self, keep_token: float, keep_attn: float) -> float:
        from trilevel.latency import block_shapes, project

        key = tuple((s.tokens_attn, s.keys_per_query) for s in block_shapes(self.cfg, keep_token, keep_attn))
        if key not in self._cache:
            micro = math.gcd(self.micro_batch, self.batch_size)
            p = project(self.cfg, keep_token, keep_attn, micro_batch=micro, batch_size=self.batch_size)
            self._cache[key] = p.train_ms_per_image / 1e3
        return self._cache[key]


_ARG_FIELDS = {f.name for f in dataclasses.fields(AccelTrainConfig)}


def run(args: argparse.Namespace) -> int:
    """Entry point of `trilevel train --backend reference|csim|pynq` (errors: trilevel.commands.train)."""
    train(AccelTrainConfig(**{k: v for k, v in vars(args).items() if k in _ARG_FIELDS}))
    return 0
