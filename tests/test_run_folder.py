"""A run folder has one writer (runlog.RunLock), and Ctrl-C ends a run with one line naming the last
checkpoint and the command that resumes it, after which --resume continues exactly."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from trilevel import runlog, train_torch
from trilevel.accel import trainer
from trilevel.cli import main
from trilevel.data import TensorImageDataset, load_digits_split
from trilevel.userinput import Interrupted, UserError

TORCH_RUN = ["train", "--data", "synthetic", "--batch-size", "100", "--lr", "2e-3", "--keep-example", "0.5",
             "--keep-token", "0.7", "--keep-attn", "0.5", "--example-period", "1", "--seed", "3",
             "--no-progress"]


def _strip_times(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if "wall_s" not in k} for r in records]


def _wait_for(predicate, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_second_writer_is_refused_and_ctrl_c_names_the_checkpoint(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = [*TORCH_RUN, "--epochs", "300", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT at its default in the child: a shell without job control starts background jobs with SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler (the test would never see Ctrl-C)
    first = subprocess.Popen([sys.executable, "-m", "trilevel.cli", *argv], stderr=subprocess.PIPE, text=True,
                             env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _wait_for(lambda: len(runlog.read_metrics(out)) >= 1, "the first epoch")
        lock = (out / runlog.LOCK_FILE).read_text()
        assert lock.split()[0] == str(first.pid)
        for second in (argv, [*argv, "--resume"]):  # as a new run, and as a resume of the live one
            capsys.readouterr()
            assert main(second) == 2
            err = capsys.readouterr().err.splitlines()
            assert len(err) == 1, err
            want = "--resume" if second is argv else f"in use by another run (pid {first.pid}"
            assert want in err[0], err
        # Ctrl-C: exit 130, one line with the checkpoint and the command that resumes.
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and str(out / runlog.CHECKPOINT_FILE) in last, stderr
    done = len(runlog.read_metrics(out))
    assert f"(epoch {done} of 300)" in last
    resume = shlex.split(last.split("resume with: ", 1)[1])
    assert resume[0] == "trilevel" and resume[-1] == "--resume"
    assert not (out / runlog.LOCK_FILE).exists()  # released on the way out
    # The hint's command continues the run (one more epoch here), epochs in order, none lost or repeated.
    assert main([*resume[1:], "--stop-after", "1"]) == 0
    assert [r["epoch"] for r in runlog.read_metrics(out)] == list(range(1, done + 2))


def test_a_stale_lock_is_taken_over(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / runlog.LOCK_FILE).write_text("4194303 a-host-that-crashed\n")  # nobody holds its flock
    assert main([*TORCH_RUN, "--epochs", "1", "--out", str(out)]) == 0
    assert "stale lock" in capsys.readouterr().err
    assert not (out / runlog.LOCK_FILE).exists() and len(runlog.read_metrics(out)) == 1


def test_lock_refuses_a_second_holder_in_the_same_process(tmp_path) -> None:
    with runlog.RunLock(tmp_path):
        with pytest.raises(UserError, match=f"pid {os.getpid()}"), runlog.RunLock(tmp_path):
            pass
    with runlog.RunLock(tmp_path):  # released: free again
        pass


def _interrupt_on_call(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, call: int) -> None:
    """Make owner.name raise KeyboardInterrupt (as Ctrl-C would) on its `call`-th call."""
    original, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_an_interrupted_run_prints_the_resume_command_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    argv = [*TORCH_RUN, "--epochs", "2"]
    assert main([*argv, "--out", str(tmp_path / "full")]) == 0
    split = [*argv, "--out", str(tmp_path / "split")]
    with monkeypatch.context() as patch:
        _interrupt_on_call(patch, train_torch, "evaluate", call=2)  # Ctrl-C in epoch 2, after training
        capsys.readouterr()
        assert main(split) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    checkpoint = tmp_path / "split" / runlog.CHECKPOINT_FILE
    assert err[-1].startswith(f"trilevel train: interrupted; last checkpoint {checkpoint} (epoch 1 of 2)")
    assert err[-1].endswith("resume with: trilevel " + shlex.join([*split, "--resume"]))
    assert main([*split, "--resume"]) == 0
    full, resumed = (runlog.read_metrics(tmp_path / name) for name in ("full", "split"))
    assert _strip_times(resumed) == _strip_times(full)
    a, b = (runlog.load_checkpoint(tmp_path / name / runlog.CHECKPOINT_FILE) for name in ("full", "split"))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def _digits(n_train: int, n_test: int) -> tuple[TensorImageDataset, TensorImageDataset]:
    def head(ds: TensorImageDataset, n: int) -> TensorImageDataset:
        mean, std = tuple(ds._mean.flatten().tolist()), tuple(ds._std.flatten().tolist())
        return TensorImageDataset(ds.images[:n], ds.labels[:n], ds.num_classes, mean, std)

    train_set, test_set = load_digits_split(seed=0)
    return head(train_set, n_train), head(test_set, n_test)


def test_an_interrupted_layerwise_run_names_its_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    data = _digits(32, 8)

    def config(out: str, **more) -> trainer.AccelTrainConfig:
        return trainer.AccelTrainConfig(out=str(tmp_path / out), backend="reference", epochs=2, batch_size=16,
                                        micro_batch=8, lr=2e-3, keep_example=0.75, example_period=1,
                                        keep_token=0.5, progress=False, project_latency=False, **more)

    full = trainer.train(config("full"), datasets=data)
    with monkeypatch.context() as patch:
        _interrupt_on_call(patch, trainer.LayerwiseViT, "evaluate", call=2)
        with pytest.raises(Interrupted) as stop:
            trainer.train(config("split"), datasets=data)
    checkpoint = tmp_path / "split" / runlog.CHECKPOINT_FILE
    assert (stop.value.checkpoint, stop.value.epoch, stop.value.epochs) == (checkpoint, 1, 2)
    assert not (tmp_path / "split" / runlog.LOCK_FILE).exists()
    resumed = trainer.train(config("split", resume=True), datasets=data)
    assert _strip_times(resumed) == _strip_times(full)
    a, b = (runlog.load_checkpoint(tmp_path / name / runlog.CHECKPOINT_FILE) for name in ("full", "split"))
    for name, tensor in a["net"]["weights"]["master"].items():
        assert torch.equal(tensor, b["net"]["weights"]["master"][name]), name


def test_commit_epoch_holds_ctrl_c_until_checkpoint_and_metrics_are_written(tmp_path, monkeypatch) -> None:
    record = {key: 0 for key in runlog.METRIC_KEYS} | {"epoch": 1}
    real_save = runlog.atomic_save

    def save_then_ctrl_c(obj, path):
        real_save(obj, path)
        os.kill(os.getpid(), signal.SIGINT)  # lands between the checkpoint and the metrics line

    monkeypatch.setattr(runlog, "atomic_save", save_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        runlog.commit_epoch(tmp_path, {"epoch": 1}, record)
    assert (tmp_path / runlog.CHECKPOINT_FILE).exists() and len(runlog.read_metrics(tmp_path)) == 1
    report = runlog.interrupted(tmp_path, 5)
    assert (report.checkpoint, report.epoch, report.epochs) == (tmp_path / runlog.CHECKPOINT_FILE, 1, 5)
