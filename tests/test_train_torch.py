"""PyTorch trainer: the demo learns digits with all three levels on, exact resume, metrics schema."""

from __future__ import annotations

import json

import pytest
import torch

from trilevel import runlog
from trilevel.cli import main
from trilevel.selectors import LongformerWindowAttentionPolicy, StaticTokenPolicy
from trilevel.train_torch import TrainConfig, train


def test_demo_learns_digits_with_tri_level_sparsity(tmp_path):
    records = train(
        TrainConfig(
            out=tmp_path,
            epochs=7,
            batch_size=32,
            lr=2e-3,
            warmup_epochs=1,
            keep_example=0.9,
            keep_token=0.7,
            keep_attn=0.5,
            keep_warmup_epochs=1,
            keep_decay_epochs=1.5,
            example_period=2,
            progress=False,
        )
    )
    assert len(records) == 7
    assert records[-1]["test_top1"] > 0.6  # chance 0.1; measured 0.70-0.77 over seeds 0-3, ~25 s on one core
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 1.0
    # Ratios follow the schedule: dense through warm-up, at the targets after the decay.
    assert (records[0]["keep_token"], records[0]["keep_attn"]) == (1.0, 1.0)
    assert records[-1]["keep_token"] == pytest.approx(0.7) and records[-1]["keep_attn"] == pytest.approx(0.5)
    assert records[-1]["macs_per_image"] < records[0]["macs_per_image"]
    # Example level: a constant active subset of round(0.9 * 1437) and m/n + 1 = 3 rounds (epochs 2, 4, 6).
    assert {r["active_examples"] for r in records} == {1293}
    assert [r["epoch"] for r in records if r["filter_round"]] == [2, 4, 6]
    assert all(r["images"] == 1293 for r in records)
    # metrics.jsonl holds the same records with the full schema; cumulative fields add up.
    lines = [json.loads(line) for line in (tmp_path / runlog.METRICS_FILE).read_text().splitlines()]
    assert lines == records
    assert all(set(runlog.METRIC_KEYS) <= set(r) for r in lines)
    assert lines[-1]["cumulative_images"] == sum(r["images"] for r in lines)
    assert lines[-1]["cumulative_train_macs"] == sum(r["train_macs"] for r in lines)
    assert lines[-1]["cumulative_wall_s"] == pytest.approx(sum(r["wall_s"] for r in lines), abs=1e-3)
    assert lines[-1]["train_macs"] == pytest.approx(1293 * 3 * lines[-1]["macs_per_image"], rel=0.05)
    # The Python API defaults to the faster masked path, which executes the dense scores of the kept
    # tokens: executed MACs equal the algorithmic ones while attention is dense, exceed them once pruned.
    assert all(r["attn_impl"] == "mask" for r in lines)
    assert lines[0]["macs_executed_per_image"] == lines[0]["macs_per_image"]
    assert lines[-1]["macs_executed_per_image"] > lines[-1]["macs_per_image"]


def _strip_times(records):
    return [{k: v for k, v in r.items() if "wall_s" not in k} for r in records]


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    args = [
        "train",
        "--model",
        "demo",
        "--data",
        "digits",
        "--epochs",
        "3",
        "--batch-size",
        "96",
        "--lr",
        "2e-3",
        "--keep-example",
        "0.9",
        "--keep-token",
        "0.7",
        "--keep-attn",
        "0.5",
        "--keep-warmup-epochs",
        "0.5",
        "--keep-decay-epochs",
        "1.5",
        "--example-period",
        "1",
        "--seed",
        "3",
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    assert main([*args, "--out", str(tmp_path / "split"), "--stop-after", "1"]) == 0
    first = runlog.read_metrics(tmp_path / "split")
    assert [r["epoch"] for r in first] == [1]
    # Refuses to overwrite a run, and to resume it with other settings.
    assert main([*args, "--out", str(tmp_path / "split")]) == 2
    assert main([*args, "--out", str(tmp_path / "split"), "--resume", "--keep-token", "0.8"]) == 2
    assert main([*args, "--out", str(tmp_path / "split"), "--resume"]) == 0

    full, split = runlog.read_metrics(tmp_path / "full"), runlog.read_metrics(tmp_path / "split")
    assert _strip_times(split) == _strip_times(full)
    assert sum(r["filter_round"] for r in full) == 3
    # The CLI defaults to the faster mask path: it executes dense attention scores over the kept tokens,
    # so once R_A < 1 it runs more MACs than the algorithmic (gather) count the metrics lead with.
    assert all(r["attn_impl"] == "mask" for r in full)
    assert full[-1]["macs_executed_per_image"] > full[-1]["macs_per_image"]
    assert full[-1]["train_macs_executed"] > full[-1]["train_macs"]
    a = runlog.load_checkpoint(tmp_path / "full" / runlog.CHECKPOINT_FILE)
    b = runlog.load_checkpoint(tmp_path / "split" / runlog.CHECKPOINT_FILE)
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (3, 3 * 14)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert torch.equal(a["example_filter"]["active"], b["example_filter"]["active"])
    assert torch.equal(a["example_filter"]["forgetting"], b["example_filter"]["forgetting"])


def test_resume_drops_metrics_written_after_the_last_checkpoint(tmp_path):
    config = TrainConfig(
        out=tmp_path, data="synthetic", epochs=2, batch_size=100, progress=False, stop_after=1
    )
    train(config)
    stale = dict(runlog.read_metrics(tmp_path)[0], epoch=2)
    runlog.append_metrics(tmp_path, stale)  # as if the run died between metrics and checkpoint
    config.stop_after, config.resume = None, True
    records = train(config)
    assert [r["epoch"] for r in runlog.read_metrics(tmp_path)] == [1, 2]
    assert records[-1]["epoch"] == 2


def test_config_validation_and_metrics_schema_errors(tmp_path):
    with pytest.raises(ValueError, match="keep_token"):
        train(TrainConfig(out=tmp_path / "a", keep_token=0.0, progress=False))
    with pytest.raises(ValueError, match="attn_impl"):
        train(TrainConfig(out=tmp_path / "b", attn_impl="dense", progress=False))
    with pytest.raises(ValueError, match="lacks"):
        runlog.append_metrics(tmp_path, {"epoch": 1})


def test_selection_policies_reach_the_model(tmp_path, monkeypatch):
    calls = {"token": 0, "attn": 0}
    token_select, attn_select = StaticTokenPolicy.select, LongformerWindowAttentionPolicy.select

    def counting_token_select(self, scores, k):
        calls["token"] += 1
        return token_select(self, scores, k)

    def counting_attn_select(self, attn, k):
        calls["attn"] += 1
        return attn_select(self, attn, k)

    monkeypatch.setattr(StaticTokenPolicy, "select", counting_token_select)
    monkeypatch.setattr(LongformerWindowAttentionPolicy, "select", counting_attn_select)
    args = ["train", "--data", "synthetic", "--epochs", "1", "--batch-size", "250", "--keep-token", "0.5",
            "--keep-attn", "0.5", "--keep-warmup-epochs", "0", "--keep-decay-epochs", "0", "--no-progress"]
    policies = ["--token-policy", "static", "--attn-policy", "longformer"]
    assert main([*args, *policies, "--out", str(tmp_path / "run")]) == 0
    # 4 training steps + 1 evaluation batch, through the demo's 3 TA-selectors each.
    assert calls == {"token": 15, "attn": 15}
    config = runlog.load_checkpoint(tmp_path / "run" / runlog.CHECKPOINT_FILE)["config"]
    assert (config["token_policy"], config["attn_policy"]) == ("static", "longformer")
    # Accelerator backends have their own fixed selection; a policy flag there is an error.
    assert main([*args, *policies, "--backend", "reference", "--out", str(tmp_path / "acc")]) == 2
    with pytest.raises(ValueError, match="unknown token policy"):
        train(TrainConfig(out=tmp_path / "bad", token_policy="nope", progress=False))


def test_example_policy_reaches_both_trainers_and_old_checkpoints_resume(tmp_path, monkeypatch):
    args = ["train", "--data", "synthetic", "--epochs", "2", "--batch-size", "250", "--keep-example", "0.8",
            "--example-period", "1", "--example-remove-frac", "0.1", "--no-progress"]
    rand = [*args, "--example-policy", "random", "--out", str(tmp_path / "rand")]
    assert main([*rand, "--stop-after", "1"]) == 0
    state = runlog.load_checkpoint(tmp_path / "rand" / runlog.CHECKPOINT_FILE)
    assert state["config"]["example_policy"] == state["example_filter"]["policy"] == "random"
    assert main([*args, "--example-policy", "forgetting", "--out", str(tmp_path / "rand"), "--resume"]) == 2
    assert main([*rand, "--resume"]) == 0
    assert [r["filter_round"] for r in runlog.read_metrics(tmp_path / "rand")] == [True, True]

    # A checkpoint written before example policies existed resumes with the default (the paper's rule).
    old = tmp_path / "old"
    assert main([*args, "--out", str(old), "--stop-after", "1"]) == 0
    state = runlog.load_checkpoint(old / runlog.CHECKPOINT_FILE)
    assert state["example_filter"]["policy"] == "forgetting"
    del state["config"]["example_policy"], state["example_filter"]["policy"]
    runlog.atomic_save(state, old / runlog.CHECKPOINT_FILE)
    assert main([*args, "--out", str(old), "--resume"]) == 0
    assert len(runlog.read_metrics(old)) == 2

    # The accelerator trainer runs the example level on the host too: the flag reaches its filter.
    from trilevel.accel import trainer as accel_trainer
    from trilevel.data import make_synthetic

    seen = {}
    monkeypatch.setattr(accel_trainer, "train", lambda config: seen.update(policy=config.example_policy))
    assert main([*rand[:-1], str(tmp_path / "acc"), "--backend", "reference"]) == 0
    assert seen == {"policy": "random"}
    monkeypatch.undo()
    config = accel_trainer.AccelTrainConfig(
        out=str(tmp_path / "acc"), epochs=1, batch_size=16, keep_example=0.75, example_period=1,
        example_remove_frac=0.25, example_policy="random", progress=False, project_latency=False,
    )
    accel_trainer.train(config, datasets=make_synthetic(num_train=16, num_test=8))
    state = runlog.load_checkpoint(tmp_path / "acc" / runlog.CHECKPOINT_FILE)
    assert state["config"]["example_policy"] == state["example_filter"]["policy"] == "random"
