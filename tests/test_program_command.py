"""`trilevel program`: the disassembled engine program of a kernel call and its summary."""

from __future__ import annotations

import json

import pytest

from trilevel.accel import isa, lower
from trilevel.cli import main
from trilevel.commands.program import KERNELS as CLI_KERNELS
from trilevel.config import get_config


def test_attn_fwd_program_at_a_pruned_deit_tiny_stage(capsys) -> None:
    argv = ["program", "--model", "deit_tiny", "--kernel", "attn_fwd", "--tokens", "139", "--keys", "43"]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0
    assert "VEC.MASK" in out and "SOFTMAX.FWD" in out and "+mask" in out and "FINISH" in out
    assert "attn_fwd: deit_tiny, 139 tokens, 43 keys per query" in out
    for label in ("commands", "DDR", "MACs", "cycles"):
        assert f"  {label}" in out


def test_summary_counts_the_block_macs() -> None:
    cfg = get_config("deit_tiny")
    t, d, h = 69, cfg.embed_dim, cfg.num_heads
    program = lower.representative("attn_fwd", cfg, t, None, 1, isa.PRODUCTION)
    summary = program.summary()
    # qkv + per head (scores + context, dense over the kept tokens) + proj; one MAC per relay GEMM.
    expected = t * d * 3 * d + h * 2 * t * t * (d // h) + t * d * d
    assert summary["macs"] == expected + summary["relays"]


def test_cli_offers_every_representative_kernel() -> None:
    assert CLI_KERNELS == lower.REPRESENTATIVE_KERNELS


def test_json_and_bad_input(capsys) -> None:
    assert main(["program", "--model", "demo", "--kernel", "mlp_bwd", "--config", "ci", "--json",
                 "--engine", "fsim"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counters"]["MACS"] == report["macs"] and report["counted_by"].startswith("fsim")
    assert main(["program", "--kernel", "attn_fwd", "--keys", "1"]) == 2
    assert "--keys 1" in capsys.readouterr().err
    assert main(["program", "--kernel", "mlp_fwd", "--keys", "10"]) == 2
    assert main(["program", "--kernel", "attn_fwd", "--tokens", "300"]) == 2  # rows beyond max_row
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "max_row" in err[-1]


KERNELS = ["linear_fwd", "linear_bwd", "layernorm_fwd", "layernorm_bwd", "topk_tokens", "topk_connections",
           "attn_bwd"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_disassembles(kernel: str, capsys) -> None:
    assert main(["program", "--model", "demo", "--kernel", kernel, "--limit", "3", "--engine", "fsim"]) == 0
    assert f"{kernel}: demo" in capsys.readouterr().out
