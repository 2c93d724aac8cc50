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
import dataclasses
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
    engine: bool = False    # the engine: hls/rtl/engine/*.sv (+ `modules` from hls/rtl), its include dir


ENGINE_DIR = RTL_DIR / "engine"
# The engine's logic at the production array size (32 x 32, 32 SPM lanes, 64-deep queues) with small
# memories: on-chip memories are counted by `memory_model` (BRAM), not synthesized from flops here.
ENGINE_LOGIC_PARAMS = {"ROWS": 32, "COLS": 32, "SPM_LANES": 32, "QUEUE_DEPTH": 64, "MAX_ROW": 256,
                       "MAX_DIM": 1024, "VEC_LANES": 16,
                       "SPM_ELEMS": 1024, "ACC_ELEMS": 256, "IDX_ELEMS": 256}


UNITS: dict[str, UnitSpec] = {
    "trilevel_requant": UnitSpec("trilevel_requant", ("trilevel_requant",), {"ACC_W": 48}),
    "mac_pe": UnitSpec("mac_pe", ("mac_pe",)),
    "topk_unit": UnitSpec("topk_unit", ("topk_unit",), {"NMAX": 256, "SCORE_W": 32}),
    "softmax_unit": UnitSpec("softmax_unit", ("softmax_unit", "trilevel_requant"), {"NMAX": 256}, luts=True),
    "mac_array": UnitSpec("mac_array", ("mac_array", "mac_pe", "trilevel_requant"), {"ROWS": 8, "COLS": 8}),
    "engine": UnitSpec("engine_top", ("mac_pe", "trilevel_requant", "topk_unit"), ENGINE_LOGIC_PARAMS,
                       engine=True),
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
    paths = [RTL_DIR / f"{m}.sv" for m in spec.modules]
    if spec.engine:
        paths = sorted(ENGINE_DIR.glob("*.sv")) + paths
    files = " ".join(str(p) for p in paths)
    chparams = " ".join(f"-set {k} {v}" for k, v in params.items())
    stat_path = work / f"{name}.stat.json"
    include = f"-I{ENGINE_DIR} " if spec.engine else ""
    script = (f"read_verilog -sv {include}{files}; "
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


def memory_model(config) -> dict[str, object]:
    """RAMB36 for the engine's memories at `config` (an isa.EngineConfig), as the RTL declares them.

    A RAMB36 holds 1K x 36 / 2K x 18 bits with one write and one read port in simple dual-port mode.
    Each memory is LANES banks; every read port beyond one needs its own copy of the banks (the RTL's
    engine_mem has NR read ports: SPM 5, ACC 3, IDX 3). This is a model from the declared sizes, not
    a synthesis result (Yosys would turn these multi-ported memories into flops)."""
    lanes = max(8, config.array_rows, config.array_cols)
    lanes = 1 << (lanes - 1).bit_length()
    acc_lanes = max(2, config.array_cols)

    def ramb36(elems: int, width: int, banks: int) -> int:
        depth = -(-elems // banks)
        per_bank = -(-depth // 2048) if width <= 18 else -(-depth // 1024) * -(-width // 36)
        return banks * per_bank

    mems = {"SPM": (config.spm_elems, 16, lanes, 5), "ACC": (config.acc_elems, 48, acc_lanes, 3),
            "IDX": (config.idx_elems, 16, 8, 3)}
    out = {}
    for name, (elems, width, banks, ports) in mems.items():
        one = ramb36(elems, width, banks)
        out[name] = {"elements": elems, "width": width, "banks": banks, "read_ports": ports,
                     "ramb36_one_copy": one, "ramb36_as_built": one * ports}
    out["total_one_copy"] = sum(v["ramb36_one_copy"] for v in out.values() if isinstance(v, dict))
    out["total_as_built"] = sum(v["ramb36_as_built"] for v in out.values() if isinstance(v, dict))
    return out


def engine_resources(report: dict[str, object]) -> dict[str, object]:
    """docs/engine-resources.json: Yosys counts of the engine's logic at the production array size plus
    the modelled BRAM of its memories at the production sizes (trilevel.accel.isa.PRODUCTION)."""
    from trilevel.accel import isa

    res = report["resources"]
    mem = memory_model(isa.PRODUCTION)
    return {
        "lut": res["LUT"] + res["LUTRAM"] + res["SRL"],
        "ff": res["FF"],
        "dsp": res["DSP48E2"],
        "bram36": mem["total_as_built"],
        "bram36_source": "model (hls/rtl/synth_report.py memory_model): the memories as the RTL declares "
                         "them (5 SPM, 3 ACC, 3 IDX read ports = copies); total_one_copy: one copy each",
        "memories": mem,
        "logic_source": "yosys synth_xilinx -family xcup of engine_top with small memories (params)",
        "params": report["params"],
        "config": dataclasses.asdict(isa.PRODUCTION),
        "yosys_resources": res,
        "device_budget": {"dsp": 2520, "bram36": 912, "lut": 274080},
    }


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
    parser.add_argument("--engine-json", type=Path, default=REPO / "docs" / "engine-resources.json",
                        help="where the engine's resource summary goes (when `engine` is synthesized)")
    args = parser.parse_args(argv)
    yosys = shutil.which("yosys")
    if yosys is None:
        print("synth-report: yosys not found on PATH (apt-get install yosys)", file=sys.stderr)
        return 1
    overrides = parse_overrides(args.param)
    report = {}
    for name in args.units:
        spec = UNITS[name]
        spec = dataclasses.replace(spec, params={**spec.params, **overrides.get(name, {})})
        report[name] = synth_unit(name, spec, args.out.parent / "work", yosys)
        print(f"  {name}: {report[name]['seconds']} s", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"tool": "yosys synth_xilinx -family xcup", "units": report}, indent=1))
    print(format_table(report))
    print(f"wrote {args.out}")
    if "engine" in report:
        summary = engine_resources(report["engine"])
        args.engine_json.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"engine: {summary['lut']} LUT, {summary['ff']} FF, {summary['dsp']} DSP48E2, "
              f"{summary['bram36']} RAMB36 (model; one copy: {summary['memories']['total_one_copy']}) "
              f"-> {args.engine_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
