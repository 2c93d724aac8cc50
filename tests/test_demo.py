"""`trilevel demo` end to end (one epoch): three runs, metrics, summary JSON with its checks, the plot."""

from __future__ import annotations

import json

from trilevel import runlog
from trilevel.accel.engine import build_csim
from trilevel.cli import main


def test_demo_one_epoch_writes_everything(tmp_path, capsys) -> None:
    build_csim()  # a no-op when `make csim` already built it
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--epochs", "1", "--no-progress"])
    assert code in (0, 1)  # 1: one epoch cannot pass the accuracy checks, which is reported, not an error
    printed = capsys.readouterr().out
    for name in ("tri_level", "dense", "float_tri_level"):
        records = runlog.read_metrics(out / name)
        assert len(records) == 1 and set(runlog.METRIC_KEYS) <= set(records[0]), name
        assert f"{name:16s} epoch  1" in printed
    summary = json.loads((out / "summary.json").read_text())
    runs = summary["runs"]
    assert runs["tri_level"]["backend"] == "csim" and runs["float_tri_level"]["backend"] == "torch"
    # Tri-Level trains on fewer examples and tokens than dense; the projection says so too.
    assert runs["tri_level"]["images"] < runs["dense"]["images"]
    assert 0.0 < runs["tri_level"]["macs_saved"] < 1.0 and runs["dense"]["macs_saved"] == 0.0
    assert 0 < runs["tri_level"]["projected_zcu102_s"] < runs["dense"]["projected_zcu102_s"]
    assert set(summary["checks"]) == {"tri_level_reaches_90%", "tri_level_at_most_2_points_below_float"}
    assert code == (0 if all(summary["checks"].values()) else 1)
    assert (out / "accuracy_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A folder holding anything but demo outputs is refused instead of being overwritten.
    (out / "dense" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(out), "--epochs", "1", "--no-progress"]) == 2
    assert "notes.txt" in capsys.readouterr().err
