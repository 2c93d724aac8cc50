"""Counted MACs (FlopCounterMode): the CLI's JSON, cross-checked against closed-form ViT MAC counts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from trilevel.cli import main
from trilevel.config import get_config
from trilevel.macs import MacCounter, RunPlan, count_model_macs, run_macs


def closed_form_macs(cfg, tokens, keys, masked: bool = False) -> int:
    """Independent formula: linear layers per token, attention per kept (query, key) pair. The [CLS]
    query row attends to every token; patch rows to `keys` keys (all of them with a masked softmax).
    A TA-selector sits between a block's attention and its MLP, so that MLP sees the kept tokens."""
    d, hidden = cfg.embed_dim, cfg.mlp_hidden
    total = cfg.num_patches * cfg.in_chans * cfg.patch_size**2 * d + d * cfg.num_classes
    for i, (n, k) in enumerate(zip(tokens, keys, strict=True)):
        pairs = n * n if masked else n + (n - 1) * k
        mlp_tokens = tokens[i + 1] if i in cfg.prune_blocks else n
        total += n * 4 * d * d + 2 * d * pairs + mlp_tokens * 2 * d * hidden
    return total


def test_macs_cli_json_deit_tiny(capsys):
    assert main(["macs", "--model", "deit_tiny", "--keep-token", "0.7", "--keep-attn", "0.3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cfg = get_config("deit_tiny")
    dense, sparse = report["dense_forward_macs"], report["sparse_forward_macs"]
    # DeiT-T: 1.25 GMAC (fvcore 1.258, DeiT paper "1.3 GFLOPs").
    assert dense == pytest.approx(1.254e9, rel=0.02)
    assert dense == closed_form_macs(cfg, [197] * 12, [197] * 12)
    assert report["tokens_per_block"] == [197] * 4 + [139] * 3 + [98] * 3 + [69] * 2
    assert sparse == closed_form_macs(cfg, report["tokens_per_block"], report["keys_per_query"])
    assert report["mask_forward_macs"] == closed_form_macs(
        cfg, report["tokens_per_block"], report["keys_per_query"], masked=True
    )
    assert sparse < report["mask_forward_macs"] < dense
    assert 2.9 < report["dense_train_macs"] / dense < 3.05
    assert report["sparse_train_macs"] < report["dense_train_macs"]


def test_macs_cli_text_says_what_gather_and_mask_do(capsys):
    assert main(["macs", "--model", "demo", "--keep-token", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "really skips" in out and "--attn-impl mask" in out


def test_whole_run_counts_example_level_and_schedule():
    counter = MacCounter("demo")
    dense, sparse = counter.count(train=True), counter.count(0.7, 0.5, train=True)
    only_examples = run_macs(counter, RunPlan(num_examples=1000, epochs=3, batch_size=100, keep_example=0.7))
    assert only_examples["dense_train_macs"] == 3 * 1000 * dense
    assert only_examples["trilevel_train_macs"] == 3 * 700 * dense
    # One epoch of keep-ratio warm-up (dense), no decay, then two epochs at the targets.
    plan = RunPlan(1000, 3, 100, 0.7, 0.7, 0.5, keep_warmup_epochs=1, keep_decay_epochs=0)
    tri = run_macs(counter, plan)
    assert tri["trilevel_train_macs"] == 700 * (dense + 2 * sparse)
    assert tri["saving"] > only_examples["saving"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="must be >= 1"):
        run_macs(counter, RunPlan(num_examples=0, epochs=1, batch_size=1))


@pytest.mark.parametrize("attn_impl", ["gather", "mask"])
@pytest.mark.parametrize(
    "cfg",
    [
        get_config("demo"),
        # No [CLS] token (column-sum scores, no dense row) and a TA-selector in the last block.
        dataclasses.replace(get_config("demo"), cls_token=False, prune_blocks=(1, 3, 5)),
    ],
    ids=["demo", "no_cls_last_block_prunes"],
)
def test_counted_parts_add_up_to_whole_model_counts(cfg, attn_impl):
    counter = MacCounter(cfg, attn_impl)
    for keep_token, keep_attn in [(1.0, 1.0), (0.7, 0.3), (0.5, 1.0), (0.3, 0.6)]:
        for train in (False, True):
            whole = count_model_macs(counter.model, keep_token, keep_attn, train)
            assert counter.count(keep_token, keep_attn, train) == whole, (keep_token, keep_attn, train)
