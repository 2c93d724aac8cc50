"""`trilevel compare` in its short form on digits: the table, the plot, resumption, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from trilevel.baselines.compare import PRESETS, method_config, parse_methods
from trilevel.cli import main

SHORT = ["--data", "digits", "--batch-size", "256", "--no-progress", "--keep-warmup-epochs", "0"]


def test_compare_writes_table_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *SHORT, "--epochs", "1", "--methods", "tri_level,s2vite", "--out", str(out)]) == 0
    report = json.loads((out / "compare.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["dense", "tri_level", "s2vite"]  # dense first, always
    assert rows["dense"]["macs_saving"] == 0.0 and rows["dense"]["time_reduction"] == 0.0
    for name, row in rows.items():
        metrics = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
        assert row["top1"] == metrics[-1]["test_top1"] and row["keep_ratio"] == PRESETS[name].keep
        dense_macs = rows["dense"]["train_macs"]
        assert row["macs_saving"] == pytest.approx(1 - metrics[-1]["cumulative_train_macs"] / dense_macs)
    assert rows["tri_level"]["macs_saving"] > 0.2 and rows["s2vite"]["macs_saving"] > 0
    assert rows["s2vite"]["svite_sparsity"] == pytest.approx(0.5)
    table = (out / "compare.md").read_text()
    assert table.startswith("| method | level | keep ratio | training time reduced (wall / CPU) |")
    assert (out / "accuracy_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["machine"]["cores"] >= 1 and "\nMachine: " in table
    assert all(row["train_cpu_s"] > 0 for row in rows.values())
    # A second run finds everything finished and trains nothing.
    capsys.readouterr()
    assert main(["compare", *SHORT, "--epochs", "1", "--methods", "s2vite", "--out", str(out)]) == 0
    assert "running" not in capsys.readouterr().err


def test_compare_resumes_an_interrupted_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trilevel.train_torch import TrainConfig, train

    out = tmp_path / "cmp"
    base = TrainConfig(out=out, data="digits", epochs=2, batch_size=256, keep_warmup_epochs=0, progress=False)
    train(dataclasses.replace(method_config(base, "magnitude", out), stop_after=1))  # "interrupted"
    capsys.readouterr()
    assert main(["compare", *SHORT, "--epochs", "2", "--methods", "magnitude", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"resumed {out / 'magnitude'} after epoch 1" in err
    epochs = [
        json.loads(line)["epoch"] for line in (out / "magnitude" / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]


def test_compare_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in (
        (["--methods", "dense,nonsense"], "unknown method(s) nonsense"),
        (["--epochs", "0"], "--epochs"),
        (["--data", "nonsense", "--methods", "evit"], "unknown dataset 'nonsense'"),
    ):
        code = main(["compare", *SHORT, *args, "--out", str(tmp_path / "x")])
        assert code == 2
        err = capsys.readouterr().err.strip()
        errors = [line for line in err.splitlines() if "error" in line]
        assert message in err.splitlines()[-1] and "Traceback" not in err and len(errors) == 1
    assert not (tmp_path / "x").exists()
    assert parse_methods("evit,dense,evit") == ["dense", "evit"]
    # trilevel train: a merging token policy with connection pruning is refused before anything runs.
    code = main(["train", "--token-policy", "evit", "--keep-attn", "0.5", "--out", str(tmp_path / "y")])
    assert code == 2 and "needs --keep-attn 1" in capsys.readouterr().err and not (tmp_path / "y").exists()


def _short(out: Path, **overrides):
    from trilevel.train_torch import TrainConfig

    return TrainConfig(
        out=out, data="digits", epochs=2, batch_size=512, keep_warmup_epochs=0, progress=False, **overrides
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "s2vite:density=0.5,update_every=3", "keep_token": 0.7},
        {"keep_example": 0.8, "example_policy": "active_bias", "example_period": 1},
    ],
    ids=["s2vite", "active_bias"],
)
def test_baseline_runs_resume_exactly(tmp_path: Path, overrides: dict) -> None:
    """A trainer mode's and an example policy's own state (masks, probability histories) is in the
    checkpoint: an interrupted run resumes to the uninterrupted one's numbers."""
    from trilevel.train_torch import train

    straight = train(_short(tmp_path / "a", **overrides))
    train(_short(tmp_path / "b", stop_after=1, **overrides))
    resumed = train(_short(tmp_path / "b", resume=True, **overrides))
    keys = ("train_loss", "test_top1", "cumulative_train_macs", "active_examples")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in straight]
    extra = [k for k in straight[-1] if k.startswith("svite")]
    assert [straight[-1][k] for k in extra] == [resumed[-1][k] for k in extra]


def test_mean_pooled_model_trains_with_all_three_levels(tmp_path: Path) -> None:
    from trilevel import runlog
    from trilevel.train_torch import train

    records = train(_short(tmp_path, model="demo_gap", keep_example=0.8, keep_token=0.7, keep_attn=0.5))
    assert records[-1]["active_examples"] == round(0.8 * 1437)
    state = runlog.load_checkpoint(tmp_path / runlog.CHECKPOINT_FILE)
    assert "cls_token" not in state["model"] and state["model_config"]["cls_token"] is False
    from trilevel.config import get_config
    from trilevel.macs import MacCounter

    first = records[0]
    counted = MacCounter(get_config("demo_gap")).count(first["keep_token"], first["keep_attn"])
    assert first["macs_per_image"] == counted < MacCounter(get_config("demo_gap")).count()
