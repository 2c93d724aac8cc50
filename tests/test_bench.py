"""`trilevel bench --quick` on demo writes bench.json; sections are pluggable by name."""

from __future__ import annotations

import json

import pytest
import torch

from trilevel.bench import BenchOptions, Section, run_bench
from trilevel.cli import main


def test_bench_quick_demo_writes_json(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        args = [
            "--quick",
            "--models",
            "demo",
            "--threads",
            "1",
            "--sections",
            "trilevel.bench:torch_training",
        ]
        assert main(["bench", "--out", str(tmp_path), *args]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["quick"] is True and result["threads"] == 1
    (section,) = result["sections"]
    assert section["name"] == "torch_training" and section["error"] is None
    rows = {row["mode"]: row for row in section["rows"]}
    assert set(rows) == {"dense", "trilevel", "trilevel_gather"}
    assert rows["trilevel"]["attn_impl"] == "mask" and rows["trilevel_gather"]["attn_impl"] == "gather"
    dense, tri = rows["dense"], rows["trilevel"]
    assert dense["images_per_s"] > 0 and tri["images_per_s"] > 0
    assert tri["speedup_per_image"] == pytest.approx(tri["images_per_s"] / dense["images_per_s"])
    assert tri["epoch_speedup"] == pytest.approx(tri["speedup_per_image"] / 0.7)
    # Algorithmic MACs do not depend on the implementation; executed ones do (mask computes dense scores).
    gmac = {mode: row["train_gmac_per_image"] for mode, row in rows.items()}
    executed = {mode: row["executed_gmac_per_image"] for mode, row in rows.items()}
    assert gmac["trilevel"] == gmac["trilevel_gather"] == executed["trilevel_gather"] < gmac["dense"]
    assert executed["trilevel_gather"] < executed["trilevel"] < executed["dense"] == gmac["dense"]
    assert "images_per_s" in capsys.readouterr().out  # the printed table


def _extra_section(options: BenchOptions) -> Section:
    return Section(name="extra", title="an added section", columns=["x"], rows=[{"x": 1.5}])


def test_sections_are_pluggable_and_failures_are_recorded(tmp_path):
    result = run_bench(
        BenchOptions(out=tmp_path), sections=[f"{__name__}:_extra_section", "trilevel.bench:no_such_section"]
    )
    extra, broken = result["sections"]
    assert extra["rows"] == [{"x": 1.5}] and extra["error"] is None
    assert "AttributeError" in broken["error"]
    assert json.loads((tmp_path / "bench.json").read_text())["sections"][0]["name"] == "extra"


def test_input_pipeline_section_times_jpeg_loading(tmp_path, monkeypatch):
    from trilevel import bench

    monkeypatch.setattr(bench, "PIPELINE_IMAGES", (40, 40))
    monkeypatch.setattr(bench, "PIPELINE_IMAGE_SIZE", (96, 64))
    monkeypatch.setattr(bench, "PIPELINE_BATCH", 8)
    result = run_bench(BenchOptions(out=tmp_path, quick=True), sections=["trilevel.bench:input_pipeline"])
    (section,) = result["sections"]
    assert section["error"] is None
    rows = section["rows"]
    assert {row["transform"] for row in rows} == {"train", "eval"} and {0} <= {row["workers"] for row in rows}
    # 40 JPEGs in batches of 8: the first batch (worker start-up) is not timed.
    assert all(row["images"] == 32 and row["images_per_s"] > 0 for row in rows)
    assert len(list((tmp_path / "jpeg_folder" / "train").rglob("*.jpg"))) == 40
