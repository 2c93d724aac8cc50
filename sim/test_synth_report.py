"""hls/rtl/synth_report.py on the smallest unit (one PE): Yosys maps its multiply to one DSP48E2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "hls" / "rtl" / "synth_report.py"


def test_synth_report_on_mac_pe(tmp_path: Path) -> None:
    assert shutil.which("yosys"), "yosys is required: scripts/install-system-tools.sh installs it"
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--units", "mac_pe", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())["units"]["mac_pe"]
    res = report["resources"]
    assert res["DSP48E2"] == 1, res                      # the 16x16 multiply
    assert res["FF"] >= 2 * 48 + 2 * 16 + 3, res          # acc + res + both operand registers + flags
    assert res["RAMB36"] == res["RAMB18"] == 0, res
    assert "mac_pe" in proc.stdout and "DSP48E2" in proc.stdout


def test_synth_report_rejects_bad_param() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--units", "mac_pe", "--param", "nounit.X=1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "UNIT.NAME=VALUE" in proc.stderr
