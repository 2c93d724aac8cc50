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


def _module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("synth_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["synth_report"] = mod            # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_memory_model_counts_one_copy_of_regions() -> None:
    from trilevel.accel import isa

    mem = _module().memory_model(isa.PRODUCTION)
    spm, acc, idx = mem["SPM"], mem["ACC"], mem["IDX"]
    assert (spm["banks"], spm["regions"], spm["region_elements"], spm["ramb36"]) == (32, 12, 65536, 384)
    assert (acc["banks"], acc["regions"], acc["ramb36"]) == (32, 2, 128)      # 48 bit: 2 RAMB36 per region
    assert (idx["banks"], idx["regions"], idx["ramb36"]) == (8, 1, 8)
    assert all(m["copies"] == 1 and m["ports_per_bram"] == 2 for m in (spm, acc, idx))
    assert mem["total"] == 520 <= 912


def test_engine_totals_multiply_blackbox_instances() -> None:
    sr = _module()
    from trilevel.accel import isa

    parts = sr.engine_parts(isa.PRODUCTION)
    one = dict.fromkeys(sr.COLUMNS, 0)
    results = {n: {"resources": dict(one, LUT=1), "blackboxes": {}} for n in parts}
    results["top"]["blackboxes"] = {m: (3 if m == "engine_mem" else 1) for m in parts["top"].children}
    results["gemm"]["blackboxes"] = {"mac_pe": 1024, "trilevel_requant": 32}
    results["mac_pe"]["resources"] = dict(one, DSP48E2=1)
    tot = sr.engine_totals(results, parts)
    assert tot["instances"]["mac_pe"] == 1024 and tot["instances"]["mem_spm"] == 1
    assert tot["resources"]["DSP48E2"] == 1024
    results["vec"] = {"error": "timeout"}
    assert sr.engine_totals(results, parts)["resources"] is None


def test_engine_mem_regions_map_to_block_ram(tmp_path: Path) -> None:
    """engine_mem as the RTL declares it, small: 8 lanes x 2 regions of 2048 x 16 bit -> Yosys infers one
    true dual-port RAMB36 per (bank, region), the count memory_model uses (no copies, no flops)."""
    assert shutil.which("yosys"), "yosys is required: scripts/install-system-tools.sh installs it"
    sr = _module()
    part = sr.Part("engine_mem", ("engine/engine_mem.sv",),
                   {"EW": 16, "LANES": 8, "DEPTH": 32768, "NR": 3, "NW": 2, "AW": 24})
    r = sr.synth_part("mem_small", part, tmp_path, timeout=900)
    assert "error" not in r, r
    assert r["resources"]["RAMB36"] == 16 and r["resources"]["RAMB18"] == 0, r["resources"]
    assert r["resources"]["LUTRAM"] == 0, r["resources"]
