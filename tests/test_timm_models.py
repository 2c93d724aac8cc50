"""Swin and PiT (timm, token level patched in) as `trilevel train --model` choices: training on digits
from the CLI, checkpoint and resume, the cumulative-attention statistic the example filter receives,
MAC counting, and one-line refusals of what they do not implement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from trilevel import cli
from trilevel.baselines.compare import PRESETS, parse_methods
from trilevel.baselines.timm_models import build_timm_model
from trilevel.config import get_timm_config
from trilevel.macs import TimmMacCounter

# One short epoch on digits: 1150 active examples (r_e 0.8) in 5 steps at R_T 0.7 from the start.
_TRAIN = ["train", "--data", "digits", "--batch-size", "256", "--lr", "2e-3", "--keep-token", "0.7",
          "--keep-example", "0.8", "--keep-warmup-epochs", "0", "--keep-decay-epochs", "0",
          "--no-progress"]  # fmt: skip
_ACTIVE = round(0.8 * 1437)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def swin_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("swin") / "run"
    # No filter round in the epoch (period 2), so the checkpoint keeps the epoch's statistics.
    argv = [*_TRAIN, "--model", "swin_demo", "--epochs", "1", "--example-period", "2", "--out", str(run)]
    assert cli.main(argv) == 0
    return run


def _macs(name: str) -> TimmMacCounter:
    return TimmMacCounter(get_timm_config(name))


def test_swin_trains_on_digits_and_its_checkpoint_holds_timms_weights(swin_run: Path) -> None:
    (record,) = _records(swin_run)
    counter = _macs("swin_demo")
    assert record["images"] == record["active_examples"] == _ACTIVE and record["keep_token"] == 0.7
    assert record["macs_per_image"] == counter.count(0.7) < record["macs_executed_per_image"]
    assert record["macs_executed_per_image"] == counter.count_dense()
    assert record["train_macs"] == _ACTIVE * counter.count(0.7, train=True)
    assert 0.0 <= record["test_top1"] <= 1.0 and not record["filter_round"]

    state = torch.load(swin_run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["model_config"]["name"] == "swin_demo"
    assert state["model_config"]["timm_name"] == "swin_tiny_patch4_window7_224"
    fresh = build_timm_model("swin_demo")
    fresh.load_state_dict(state["model"])  # strict: timm's parameter names, the run's shapes
    assert set(state["model"]) == set(fresh.state_dict())
    # The example filter received a cumulative-attention variance for every presented example.
    variances = torch.as_tensor(state["example_filter"]["cls_attn_var"])
    assert int((variances > 0).sum()) == _ACTIVE


def test_pit_trains_on_digits_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    argv = [*_TRAIN, "--model", "pit_demo", "--epochs", "2", "--out", str(run)]
    assert cli.main([*argv, "--stop-after", "1"]) == 0
    assert len(_records(run)) == 1
    assert cli.main([*argv, "--resume"]) == 0
    assert "resumed" in capsys.readouterr().err
    first, second = _records(run)
    assert second["epoch"] == 2 and second["cumulative_images"] == 2 * _ACTIVE
    assert first["macs_per_image"] == second["macs_per_image"] == _macs("pit_demo").count(0.7)
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["model_config"]["name"] == "pit_demo" and state["epoch"] == 2


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--model", "swin_demo", "--backend", "reference"], "--backend torch"),
        (["--model", "swin_demo", "--keep-attn", "0.5"], "--keep-attn"),
        (["--model", "pit_demo", "--token-policy", "evit"], "--token-policy"),
        (["--model", "pit_demo", "--method", "svite"], "--method"),
        (["--model", "pit_ti"], "16px patches"),  # PiT-Ti's patches do not fit 8x8 digits
    ],
)
def test_train_refuses_what_swin_and_pit_do_not_implement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], names: str
) -> None:
    out = tmp_path / "out"
    assert cli.main([*_TRAIN, "--epochs", "1", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and names in err[0]
    assert not out.exists()


def test_export_and_compare_refuse_swin_in_one_line(
    swin_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = tmp_path / "w.tlpack"
    ckpt = str(swin_run / "checkpoint.pt")
    assert cli.main(["export", "pack", "--checkpoint", ckpt, "--out", str(pack)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "timm Swin/PiT" in err[0] and not pack.exists()
    out = tmp_path / "cmp"
    assert cli.main(["compare", "--model", "swin_demo", "--methods", "tri_level", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tri_level" in err[0] and not out.exists()


def test_compare_offers_swin_and_pit_the_token_and_example_presets() -> None:
    methods = parse_methods(None, "pit_demo")
    assert methods[0] == "dense" and {"token_cls_attention", "example_forgetting"} <= set(methods)
    for name in parse_methods("all", "swin_demo"):
        overrides = PRESETS[name].overrides
        assert overrides.get("keep_attn", 1.0) == 1.0 and "method" not in overrides
        assert "token_policy" not in overrides and "attn_policy" not in overrides
    assert "tri_level" in parse_methods(None, "demo")


def test_swin_example_statistic_is_the_variance_of_the_cumulative_attention() -> None:
    """Brute force on the last block (its 2 x 2 map is one window): head-mean softmax(q k^T s + bias)
    column sums, population variance over the 4 tokens."""
    torch.manual_seed(0)
    model = build_timm_model("swin_demo").eval()
    last = model.layers[-1].blocks[-1]
    normed: list[torch.Tensor] = []
    last.norm1.register_forward_hook(lambda _m, _i, out: normed.append(out.detach()))
    _, info = model(torch.randn(3, 1, 8, 8), return_info=True)
    attn, x = last.attn, normed[0].flatten(1, 2)  # [B, 4, C]
    q, k, _ = attn.qkv(x).reshape(3, 4, 3, attn.num_heads, -1).unbind(2)
    scores = torch.einsum("bihd,bjhd->bhij", q * attn.scale, k) + attn._get_rel_pos_bias()
    received = scores.softmax(-1).mean(1).sum(1)  # [B, 4]
    torch.testing.assert_close(info.cls_attn_var, received.var(dim=1, correction=0))


def _flops(fn) -> dict[str, int]:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return {str(op): n // 2 for op, n in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("train", [False, True])
def test_swin_block_share_is_the_block_counted_alone(train: bool) -> None:
    counter = _macs("swin_demo")
    _, blocks = counter._counted(train)
    block = counter.model.layers[0].blocks[0]
    x = torch.randn(1, 4, 4, 32, requires_grad=True)
    counter.model._tl_state.keep = None
    ops = _flops(lambda: block(x).sum().backward() if train else block(x))
    assert blocks[0] == (sum(n for op, n in ops.items() if op != "aten.bmm"), ops["aten.bmm"])


def test_pit_unpruned_parts_are_embedding_pooling_and_head() -> None:
    counter = _macs("pit_demo")
    fixed, _ = counter._counted(False)
    model = counter.model
    grid, cls = torch.randn(1, 32, 7, 7), torch.randn(1, 1, 32)  # stage 1: 2 heads x 16, 7 x 7 grid
    ops = [
        _flops(lambda: model.patch_embed(torch.randn(1, 1, 8, 8))),
        _flops(lambda: model.transformers[1].pool(grid, cls)),
        _flops(lambda: model.head(torch.randn(1, 64))),
    ]
    assert fixed == sum(sum(part.values()) for part in ops)


@pytest.mark.parametrize("name", ["swin_demo", "pit_demo"])
def test_token_plan_bounds_the_kept_tokens_and_saves_macs(name: str) -> None:
    counter = _macs(name)
    plan, _ = counter.plan(0.5)
    torch.manual_seed(1)
    model = build_timm_model(name).eval()
    _, info = model(torch.randn(4, 1, 8, 8), keep_token=0.5, return_info=True)
    assert all(kept <= bound for kept, bound in zip(info.tokens_per_block, plan, strict=True))
    assert info.tokens_per_block[:2] == plan[:2]  # exact until the first merge after a selector
    assert counter.count(0.5) < counter.count(1.0) == counter.count_dense()
    assert counter.count(0.5, train=True) < counter.count_dense(train=True)


def test_macs_command_reports_algorithmic_and_executed_macs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["macs", "--model", "pit_demo", "--keep-token", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    counter = _macs("pit_demo")
    assert report["sparse_forward_macs"] == counter.count(0.5) < report["mask_forward_macs"]
    assert report["mask_forward_macs"] == report["dense_forward_macs"] == counter.count_dense()
    assert report["tokens_per_block"] == counter.plan(0.5)[0]
    assert cli.main(["macs", "--model", "pit_demo", "--keep-attn", "0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keep_attn" in err[0]
