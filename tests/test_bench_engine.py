"""`trilevel bench`'s C-sim engine section: every lowered kernel timed on the C-sim engine, with the engine's
own counters (useful MACs, modelled cycles, GEMM utilization)."""

from __future__ import annotations

import pytest

from trilevel.accel import bench_engine
from trilevel.accel.engine import csim_engine_available
from trilevel.bench import SECTIONS, BenchOptions


@pytest.mark.skipif(not csim_engine_available(), reason="no C-sim engine library (make csim)")
def test_engine_section_reports_every_kernel(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bench_engine, "_best_seconds", lambda fn, min_seconds: (fn(), 0.01)[1])
    assert "trilevel.accel.bench_engine:bench_section" in SECTIONS
    section = bench_engine.bench_section(BenchOptions(out=tmp_path, quick=True))
    rows = {row["kernel"]: row for row in section.rows}
    assert set(rows) >= {"linear_fwd", "linear_bwd", "mlp_fwd", "mlp_bwd", "attn_fwd dense", "attn_bwd dense",
                         "attn_fwd R_A=0.3", "attn_bwd R_A=0.3", "topk_connections"}
    t, d, h = 69, 192, 768
    assert rows["linear_fwd"]["MMAC"] == round(t * d * h / 1e6, 2)  # relays excluded: useful MACs only
    assert rows["mlp_bwd"]["MMAC"] == round(4 * t * d * h / 1e6, 2)
    for row in section.rows:
        assert row["cycles"] > 0 and 0 <= row["GEMM util"] <= 1
        assert (row["MMAC/s"] > 0) == (row["MMAC"] > 0)

