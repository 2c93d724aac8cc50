"""Resource estimates of the RTL units: Yosys `synth_xilinx -family xcup` (UltraScale+, the ZCU102's
xczu9eg) per unit, printed as a table of LUT / FF / DSP48E2 / RAMB and written to build/synth/report.json.

    python hls/rtl/synth_report.py                       # every unit at its report parameters
    python hls/rtl/synth_report.py --units mac_pe        # a subset
    python hls/rtl/synth_report.py --param mac_array.ROWS=8 --param mac_array.COLS=8

Yosys is an estimate, not Vivado: it does not pack accumulators into the DSP48E2's own adder and maps
small memories to LUT RAM where Vivado might choose otherwise. The counts are comparable across units.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RTL_DIR = Path(__file__).resolve().parent
REPO = RTL_DIR.parent.parent
DEFAULT_OUT = REPO / "build" / "synth" / "report.json"


@dataclass(frozen=True)
class UnitSpec:
    top: str
    modules: tuple[str, ...]
    params: dict[str, object] = field(default_factory=dict)
    luts: bool = False      # needs the $readmemh tables of trilevel.intref.luts


UNITS: dict[str, UnitSpec] = {
    "trilevel_requant": UnitSpec("trilevel_requant", ("trilevel_requant",), {"ACC_W": 48}),
    "mac_pe": UnitSpec("mac_pe", ("mac_pe",)),
    "topk_unit": UnitSpec("topk_unit", ("topk_unit",), {"NMAX": 256, "SCORE_W": 32}),
    "softmax_unit": UnitSpec("softmax_unit", ("softmax_unit", "trilevel_requant"), {"NMAX": 256}, luts=True),
    "mac_array": UnitSpec("mac_array", ("mac_array", "mac_pe", "trilevel_requant"), {"ROWS": 8, "COLS": 8}),
}

# Cell name patterns -> report columns (UltraScale+ primitives as Yosys maps them).
CATEGORIES: dict[str, str] = {
    "LUT": r"^LUT[1-6]$",
    "LUTRAM": r"^(RAM\d+[MSX]\d*|RAM\d+X\d+[SD]|RAM\d+[SD]\d*)",
    "SRL": r"^SRL",
    "FF": r"^FD[CPRS]E$",
    "CARRY": r"^CARRY",
    "DSP48E2": r"^DSP48E2$",
    "RAMB36": r"^RAMB36",
    "RAMB18": r"^RAMB18",
}
COLUMNS = ("LUT", "LUTRAM", "SRL", "FF", "CARRY", "DSP48E2", "RAMB36", "RAMB18")


def categorize(cells: dict[str, int]) -> dict[str, int]:
    out = dict.fromkeys(COLUMNS, 0)
    other = 0
    for cell, count in cells.items():
        for column, pattern in CATEGORIES.items():
            if re.match(pattern, cell):
                out[column] += count
                break
        else:
            other += count
    out["other"] = other
    return out


def synth_unit(name: str, spec: UnitSpec, work: Path, yosys: str = "yosys") -> dict[str, object]:
    """Run Yosys on one unit; returns {"params", "cells", "resources", "seconds"}."""
    work.mkdir(parents=True, exist_ok=True)
    params = dict(spec.params)
    if spec.luts:
        # The units' default $readmemh names (exp2_lut.memh, ...) resolve in Yosys' working directory.
        from trilevel.intref.luts import write_memh

        write_memh(work)
    files = " ".join(str(RTL_DIR / f"{m}.sv") for m in spec.modules)
    chparams = " ".join(f"-set {k} {v}" for k, v in params.items())
    stat_path = work / f"{name}.stat.json"
    script = (f"read_verilog -sv {files}; "
              + (f"chparam {chparams} {spec.top}; " if chparams else "")
              + f"synth_xilinx -family xcup -noiopad -top {spec.top}; "
              + f"tee -q -o {stat_path} stat -json")
    start = time.monotonic()
    proc = subprocess.run([yosys, "-q", "-p", script], cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed on {name}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    cells = json.loads(stat_path.read_text())["design"]["num_cells_by_type"]
    return {"top": spec.top, "params": {k: str(v) for k, v in params.items()}, "cells": cells,
            "resources": categorize(cells), "seconds": round(time.monotonic() - start, 1)}


def format_table(report: dict[str, dict[str, object]]) -> str:
    header = f"{'unit':<18}{'params':<22}" + "".join(f"{c:>9}" for c in COLUMNS)
    lines = [header, "-" * len(header)]
    for name, r in report.items():
        shown = ",".join(f"{k}={v}" for k, v in r["params"].items() if not k.endswith("_FILE"))
        res = r["resources"]
        lines.append(f"{name:<18}{shown:<22}" + "".join(f"{res[c]:>9}" for c in COLUMNS))
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        m = re.fullmatch(r"(\w+)\.(\w+)=(.+)", item)
        if not m or m.group(1) not in UNITS:
            raise SystemExit(f"--param {item!r}: expected UNIT.NAME=VALUE with UNIT in {', '.join(UNITS)}")
        out.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", nargs="+", choices=list(UNITS), default=list(UNITS))
    parser.add_argument("--param", action="append", default=[], metavar="UNIT.NAME=VALUE")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    yosys = shutil.which("yosys")
    if yosys is None:
        print("synth-report: yosys not found on PATH (apt-get install yosys)", file=sys.stderr)
        return 1
    overrides = parse_overrides(args.param)
    report = {}
    for name in args.units:
        spec = UNITS[name]
        spec = UnitSpec(spec.top, spec.modules, {**spec.params, **overrides.get(name, {})}, spec.luts)
        report[name] = synth_unit(name, spec, args.out.parent / "work", yosys)
        print(f"  {name}: {report[name]['seconds']} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"tool": "yosys synth_xilinx -family xcup", "units": report}, indent=1))
    print(format_table(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
