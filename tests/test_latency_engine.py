"""`trilevel latency --engine`: the ZCU102 projection priced by the engine's own lowered programs."""

from __future__ import annotations

import json

from trilevel.cli import main
from trilevel.config import get_config
from trilevel.latency import engine_calls


def test_engine_programs_price_training_and_pruning_saves_time(capsys) -> None:
    """Every kernel call of the layer-wise trainer lowered and run once (fsim); pruning lowers both."""
    assert main(["latency", "--model", "demo", "--engine", "fsim", "--json", "--micro-batch", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    dense, sparse = out["dense"], out["sparse"]
    assert dense["counted_by"].startswith("fsim") and dense["micro_batch"] == 2
    assert 0 < sparse["inference_ms"] < dense["inference_ms"] < dense["training_ms_per_image"]
    assert sparse["macs_per_image"] < dense["macs_per_image"]
    names = [c[0] for c in engine_calls(get_config("demo"), 0.7, 0.3, training=True)]
    assert "block1.topk_connections" in names and names[-1] == "patch_embed.bwd"
    assert main(["latency", "--model", "demo", "--engine", "fsim", "--pe-rows", "8"]) == 2
    assert "--pe-rows" in capsys.readouterr().err
