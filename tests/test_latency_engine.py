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


def test_latency_from_the_block_cycles_measured_on_rtl(capsys) -> None:
    """`--engine rtl` prints the projection of the committed RTL measurement table, and refuses shapes the
    table does not hold."""
    import json

    from trilevel.accel.rtlsim_bench import DEFAULT_TABLE, projection
    from trilevel.cli import main

    table = json.loads(DEFAULT_TABLE.read_text())["tables"][0]
    want = projection(table["block_rows"], table["clock_mhz"])
    assert main(["latency", "--engine", "rtl", "--keep-example", "1"]) == 0
    out = capsys.readouterr().out
    assert "measured" in out and table["date"] in out
    for name in [n for n in want if n != "note"]:  # dense, trilevel_0.7, and dense at the micro-batch rows
        assert f"{want[name]['ms_per_image']:.1f} ms/image, {want[name]['h_per_epoch']:.2f} h/epoch" in out
    assert main(["latency", "--engine", "rtl", "--keep-token", "0.5"]) == 2
    assert "make bench-rtl" in capsys.readouterr().err
