"""Run bookkeeping shared by every trainer backend (torch, reference, csim, pynq): the per-epoch metrics
schema and its JSON-lines log, atomic checkpoints, RNG capture/restore for exact resumption, the run
folder's lock (one writer per folder) and the Ctrl-C report.

Checkpoints hold only tensors and plain Python values, so ``torch.load(weights_only=True)`` reads them:
numpy arrays are stored as tensors and converted back by the consumers (``np.asarray``).

An epoch ends with `commit_epoch`: checkpoint, then its metrics line, with Ctrl-C held back until both
are written, so after an interruption the last metrics line is the checkpoint's epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from trilevel.fileio import atomic_write
from trilevel.userinput import Interrupted, UserError, unreadable

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
LOCK_FILE = "run.lock"


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


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A checkpoint (``weights_only``); UserError naming `path` if it is missing, unreadable (corrupt,
    truncated, empty, not a torch file) or lacks one of the `required` entries."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file (zip, pickle, EOF, ...)
        raise UserError(unreadable(path, err)) from None
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"{path}: not a checkpoint of this trainer (it lacks {', '.join(missing)})")
    return state


def refuse_overwrite(out_dir: str | Path, resume: bool) -> None:
    """FileExistsError if `out_dir` already holds a run and this is not a resume."""
    out = Path(out_dir)
    if not resume and ((out / CHECKPOINT_FILE).exists() or (out / METRICS_FILE).exists()):
        raise FileExistsError(
            f"{out} already holds a run; pass --resume to continue it or pick another --out"
        )


def check_resume_config(now: dict[str, Any], then: dict[str, Any]) -> None:
    """ValueError naming the settings that differ between a resuming run and its checkpoint."""
    differ = {key: (value, then.get(key)) for key, value in now.items() if then.get(key) != value}
    if differ:
        raise ValueError(f"--resume with settings that differ from the checkpoint (now, then): {differ}")


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file, None if absent: tells whether a checkpoint changed since it was read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def commit_epoch(out_dir: str | Path, checkpoint: dict[str, Any], record: dict[str, Any]) -> None:
    """Save the epoch's checkpoint, then append its metrics line, with Ctrl-C deferred until both are
    on disk (from the main thread; elsewhere signals cannot be deferred and are not delivered anyway)."""
    with _sigint_deferred():
        atomic_save(checkpoint, Path(out_dir) / CHECKPOINT_FILE)
        append_metrics(out_dir, record)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def interrupted(out_dir: str | Path, epochs: int | None) -> Interrupted:
    """The `Interrupted` report of a run in `out_dir`: its checkpoint and the epoch it holds (the last
    metrics line, which `commit_epoch` writes together with it), or no checkpoint at all. `epochs`: the
    run's length if known (None: the recipe's, resolved inside the trainer)."""
    out = Path(out_dir)
    records = read_metrics(out) if (out / CHECKPOINT_FILE).is_file() else []
    if not records:
        return Interrupted(None)
    return Interrupted(out / CHECKPOINT_FILE, int(records[-1]["epoch"]), epochs or 0)


class RunLock:
    """One writer per run folder: ``DIR/run.lock`` holds the writer's pid and host, and an exclusive
    `flock` on it while the run lives. A second writer is refused (UserError naming the pid); a lock
    file whose writer is gone (killed, crashed: the kernel dropped its flock) is stale and taken over.

        with RunLock(out):
            ...  # write checkpoints and metrics
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self._fd: int | None = None
        self.stale_owner: str | None = None  # what a stale lock file said, when one was taken over

    def __enter__(self) -> RunLock:
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise UserError(
                    f"{self.path.parent} is in use by another run (pid {owner}, lock file {self.path}); "
                    "wait for it to finish or pick another --out"
                ) from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # the previous writer removed it while we opened it
                same_file = False
            if not same_file:
                os.close(fd)
                continue
            self.stale_owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            self._fd = fd
        if self.stale_owner:
            print(f"note: took over the stale lock {self.path} (pid {self.stale_owner} is gone)",
                  file=sys.stderr)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding the flock (see __enter__)
            os.close(self._fd)
            self._fd = None


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
