"""Recipes: the CLI defaults learn, presets per model, explicit settings win, short runs are warned."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from trilevel import runlog
from trilevel.cli import main
from trilevel.recipes import DEIT, DEMO, RunLengths, recipe_for, schedule_warnings
from trilevel.train_torch import TrainConfig


def test_cli_defaults_learn_digits(tmp_path, capsys):
    """`trilevel train --out X` with nothing else but a shorter run: the demo recipe learns."""
    out = tmp_path / "run"
    assert main(["train", "--epochs", "4", "--no-progress", "--out", str(out)]) == 0
    records = runlog.read_metrics(out)
    assert len(records) == 4
    assert records[-1]["test_top1"] > 0.5  # chance 0.1; measured 0.70 (seed 0, 4 epochs)
    config = runlog.load_checkpoint(out / runlog.CHECKPOINT_FILE)["config"]
    assert (config["batch_size"], config["lr"], config["mixup"]) == (32, 2e-3, 0.0)
    assert "warning" not in capsys.readouterr().err  # the defaults fit their own schedules


def test_presets_per_model_and_explicit_settings_win():
    demo = TrainConfig(out="x").resolved(full_recipe=True)
    assert (demo.epochs, demo.batch_size, demo.lr) == (16, 32, 2e-3)
    assert (demo.drop_path, demo.augment, demo.mixup) == (0.0, False, 0.0)
    assert (demo.example_window, demo.example_variance) == ("round", "mean")
    deit = TrainConfig(out="x", model="deit_small", data="imagefolder:/d").resolved(world=8, full_recipe=True)
    assert (deit.epochs, deit.batch_size, deit.weight_decay) == (300, 128, 0.05)
    assert deit.lr == pytest.approx(5e-4 * 128 * 8 / 512)  # DeiT's linear scaling by the global batch
    assert (deit.warmup_epochs, deit.keep_warmup_epochs, deit.keep_decay_epochs, deit.example_period) == (
        5, 10, 100, 30
    )
    regularizers = (deit.drop_path, deit.label_smoothing, deit.reprob, deit.mixup, deit.cutmix)
    assert regularizers == (0.1, 0.1, 0.25, 0.8, 1.0)
    assert (deit.augment, deit.auto_augment, deit.repeated_aug, deit.ema_decay) == (
        True, "rand-m9-mstd0.5-inc1", 3, 0.99996
    )
    mine = TrainConfig(
        out="x", model="deit_small", data="imagefolder:/d", epochs=30, lr=1e-3, mixup=0.0, augment=False,
        auto_augment="none", ema_decay=0.0, example_window="run",
    ).resolved(full_recipe=True)
    assert (mine.epochs, mine.lr, mine.mixup, mine.cutmix, mine.augment, mine.auto_augment) == (
        30, 1e-3, 0.0, 1.0, False, None
    )
    assert (mine.example_period, mine.ema_decay, mine.example_window) == (3, 0.0, "run")
    # In-memory tensors are not augmented by default; the accelerator trainer gets the recipe without
    # the regularizers its kernels lack.
    assert not TrainConfig(out="x", model="deit_tiny", data="synthetic").resolved(full_recipe=True).augment
    accel = TrainConfig(out="x", model="deit_tiny", data="imagefolder:/d").resolved(256)
    assert (accel.mixup, accel.drop_path, accel.augment, accel.ema_decay) == (0.0, 0.0, False, 0.0)
    assert accel.lr == 2.5e-4
    assert recipe_for("demo") is DEMO and recipe_for("deit_base") is DEIT
    with pytest.raises(ValueError, match="batch_size must be even"):
        TrainConfig(out="x", data="cifar10:/d", model="deit_tiny", batch_size=7).resolved(full_recipe=True)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(out="x", ema_decay=1.0).resolved(full_recipe=True)


def _lengths(**overrides) -> RunLengths:
    base = {
        "epochs": 16, "iters_per_epoch": 45, "warmup_epochs": 16 / 60, "keep_targets": (0.7, 0.5),
        "keep_warmup_epochs": 16 / 30, "keep_decay_epochs": 16 / 3, "example_rounds": 3,
        "example_period": 2, "example_window": "round", "ema_decay": 0.0,
    }
    return RunLengths(**{**base, **overrides})


def test_schedule_warnings_say_what_to_change():
    assert schedule_warnings(_lengths()) == []
    # The run: 3 epochs, r_e 0.8 with n 0.05 wants 5 rounds, one per epoch.
    notes = schedule_warnings(
        _lengths(epochs=3, keep_warmup_epochs=0.1, keep_decay_epochs=1, example_rounds=5, example_period=1)
    )
    assert any(n.endswith("only 3 of the example filter's 5 remove-and-restore rounds fit in 3 epochs (one "
                          "every 1): raise --epochs to >= 5") for n in notes)
    assert any("one presentation" in n and "--example-period" in n for n in notes)
    notes = schedule_warnings(_lengths(epochs=12, example_rounds=5, example_period=4))
    assert notes == ["only 3 of the example filter's 5 remove-and-restore rounds fit in 12 epochs (one every "
                     "4): raise --epochs to >= 20 or lower --example-period to 2"]
    notes = schedule_warnings(_lengths(keep_decay_epochs=0.2, iters_per_epoch=10))
    assert len(notes) == 1 and "only 2 steps" in notes[0] and "--keep-decay-epochs to >= 2" in notes[0]
    notes = schedule_warnings(_lengths(keep_warmup_epochs=10, keep_decay_epochs=100))
    assert len(notes) == 1 and "after 110 epochs" in notes[0]
    notes = schedule_warnings(_lengths(ema_decay=0.99996))
    assert len(notes) == 1 and "--ema-decay" in notes[0] and "720" in notes[0]
    notes = schedule_warnings(_lengths(warmup_epochs=20))
    assert len(notes) == 1 and "--warmup-epochs" in notes[0]
    assert schedule_warnings(_lengths(keep_targets=(1.0, 1.0), keep_decay_epochs=0.01)) == []


def _write_cifar(folder, per_batch=24):
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in ("data_batch_1", "test_batch"):
        labels = rng.integers(0, 10, size=per_batch)
        data = (rng.integers(0, 60, size=(per_batch, 3072)) + 19 * labels[:, None]).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels.tolist()}, f)
    return folder


def test_deit_recipe_parts_run_through_the_trainer_and_resume(tmp_path, capsys):
    """DeiT's augmentation (RandAugment included), random erasing, mixup/cutmix and EMA on CIFAR-format
    data, at 8 px so the demo model runs them in seconds; the EMA is checkpointed and resumes exactly."""
    data = _write_cifar(tmp_path / "cifar")
    args = ["train", "--data", f"cifar10:{data}", "--img-size", "8", "--epochs", "2", "--batch-size", "8",
            "--augment", "--auto-augment", "rand-m9-mstd0.5-inc1", "--reprob", "0.25", "--mixup", "0.8",
            "--cutmix", "1.0", "--ema-decay", "0.9", "--label-smoothing", "0.1", "--drop-path", "0.1",
            "--num-workers", "0", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--stop-after", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--resume"]) == 0
    full, split = runlog.read_metrics(tmp_path / "full"), runlog.read_metrics(tmp_path / "split")
    assert [r["images"] for r in full] == [24, 24]  # mixup drops incomplete batches: 3 of 8
    assert all(0.0 <= r["test_top1_ema"] <= 1.0 for r in full)
    strip = [{k: v for k, v in r.items() if "wall_s" not in k} for r in full]
    assert strip == [{k: v for k, v in r.items() if "wall_s" not in k} for r in split]
    state = runlog.load_checkpoint(tmp_path / "full" / runlog.CHECKPOINT_FILE)
    assert set(state["ema"]) == set(state["model"])
    assert state["config"]["auto_augment"] == "rand-m9-mstd0.5-inc1"
    err = capsys.readouterr().err
    assert "EMA (decay 0.9) averages over ~10 steps but the run has 6" in err
