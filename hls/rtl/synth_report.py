"""Resource estimates of the RTL units: Yosys `synth_xilinx -family xcup` (UltraScale+, the ZCU102's
xczu9eg) per unit, printed as a table of LUT / FF / DSP48E2 / RAMB and written to build/synth/report.json.

    python hls/rtl/synth_report.py                       # every unit at its report parameters
    python hls/rtl/synth_report.py --units mac_pe        # a subset
    python hls/rtl/synth_report.py --param mac_array.ROWS=8 --param mac_array.COLS=8
    python hls/rtl/synth_report.py --units engine         # the engine at isa.PRODUCTION, per module
    python hls/rtl/synth_report.py --units engine --engine-parts gemm vec   # some parts (cached)

The engine (`--units engine`) is synthesized per module at the production parameters (flat synthesis
of engine_top at 32 x 32 does not finish): each module once with its submodules as blackboxes, the
totals summed over the instance tree, written to docs/engine-resources.json (see engine_resources).
engine_mem is synthesized with its engine_bram regions as blackboxes plus one engine_bram per width;
engine_mem / gemm / softmax / vec are read with -mem2reg and checked for the blackbox instances their
RTL declares (Part.mem2reg, Part.expect); `--rev REV` synthesizes a git revision's hls/rtl.

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
UNITS: dict[str, UnitSpec] = {
    "trilevel_requant": UnitSpec("trilevel_requant", ("trilevel_requant", "trilevel_requant_decode"),
                                 {"ACC_W": 48}),
    "mac_pe": UnitSpec("mac_pe", ("mac_pe",)),
    "topk_unit": UnitSpec("topk_unit", ("topk_unit",), {"NMAX": 256, "SCORE_W": 32}),
    "softmax_unit": UnitSpec("softmax_unit", ("softmax_unit", "trilevel_requant", "trilevel_requant_decode"),
                                 {"NMAX": 256}, luts=True),
    "mac_array": UnitSpec("mac_array", ("mac_array", "mac_pe", "trilevel_requant", "trilevel_requant_decode"),
                              {"ROWS": 8, "COLS": 8}),
    # the whole engine at isa.PRODUCTION, synthesized per module (engine_parts), not as one unit
    "engine": UnitSpec("engine_top", (), engine=True),
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
# The LUTRAM column counts LUT sites (a RAM64M8 is 8 LUTs of a SLICEM, as Vivado's "LUT as Memory" counts it)
LUTRAM_SITES: dict[str, int] = {"RAM64M8": 8, "RAM32M16": 8, "RAM64M": 4, "RAM32M": 4, "RAM512X1S": 8,
                                "RAM256X1D": 8, "RAM256X1S": 4, "RAM128X1D": 4, "RAM128X1S": 2,
                                "RAM64X1D": 2, "RAM32X1D": 2, "RAM64X1S": 1, "RAM32X1S": 1}


def categorize(cells: dict[str, int]) -> dict[str, int]:
    out = dict.fromkeys(COLUMNS, 0)
    other = 0
    for cell, count in cells.items():
        for column, pattern in CATEGORIES.items():
            if re.match(pattern, cell):
                if column == "LUTRAM" and cell not in LUTRAM_SITES:
                    raise ValueError(f"LUT RAM primitive {cell}: its LUT sites are not in LUTRAM_SITES")
                out[column] += count * LUTRAM_SITES.get(cell, 1)
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
    script = (f"read_verilog -sv {DEFINES} {include}{files}; "
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
    """RAMB36 of the engine's memories at `config` (an isa.EngineConfig), as the RTL declares them.

    engine_mem keeps ONE copy of each memory: LANES lane banks, each split by row into regions of
    2048 rows (elements <= 18 bit: one RAMB36 as 2K x 18; the SPM's regions are config.spm_region_rows,
    4096 in PRODUCTION: two RAMB36 as 4K x 9) or 1024 rows (48-bit ACC elements: a RAMB36 is 1K x 36
    in true dual-port mode, so two per region); every (bank, region) is one engine_bram, a true
    dual-port RAM (2 accesses per cycle; conflicts cost extra cycles, no copies). This is a count from
    the declared sizes; the Yosys runs of the engine's memories
    (`engine_resources`, parts mem_*) map the same engine_bram instances and are the measurement."""
    lanes = max(8, config.array_rows, config.array_cols)
    lanes = 1 << (lanes - 1).bit_length()
    acc_lanes = max(2, config.array_cols)

    def layout(elems: int, width: int, banks: int, read_ports: int, write_ports: int,
               max_rows: int = 2048) -> dict[str, int]:
        rows = elems // banks
        region_rows = min(rows, max_rows if width <= 18 else 1024)
        regions = -(-rows // region_rows)
        per_ram = -(-width // 36) if width > 18 else max(1, region_rows // 2048)
        return {"elements": elems, "width": width, "banks": banks, "regions": regions,
                "region_elements": region_rows * banks, "brams": banks * regions,
                "read_ports": read_ports, "write_ports": write_ports, "ports_per_bram": 2,
                "copies": 1, "ramb36": banks * regions * per_ram}

    out: dict[str, object] = {
        "SPM": layout(config.spm_elems, 16, lanes, 5, 2, config.spm_region_rows),
        "ACC": layout(config.acc_elems, 48, acc_lanes, 3, 2),
        "IDX": layout(config.idx_elems, 16, 8, 4, 2),
    }
    out["total"] = sum(v["ramb36"] for v in out.values() if isinstance(v, dict))
    return out


# ------------------------------------------------------------------ the engine, per module
# Flat synthesis of engine_top at 32 x 32 does not finish on a 2-core machine (> 45 min), so the engine
# is synthesized per module at the production parameters: each module once, with the modules it
# instantiates as blackboxes (read_verilog -lib), and the totals are each part's own cells plus its
# blackbox instances (counted in the part's own Yosys netlist) times their parts' totals.
@dataclass(frozen=True)
class Part:
    top: str
    files: tuple[str, ...]                      # synthesized (relative to hls/rtl)
    params: dict[str, object]
    lib: tuple[str, ...] = ()                   # blackboxes (relative to hls/rtl)
    children: dict[str, tuple[str, ...]] = field(default_factory=dict)   # blackbox module -> part(s)
    # modules defined in `files` that are blackboxed too (cut out of a copy of the file, read -lib)
    boxes: tuple[str, ...] = ()
    # files read with `read_verilog -mem2reg`: every unpacked array becomes wires / registers. Needed
    # where a submodule's output drives an element of an array that is read with a variable index
    # (engine_mem's RAM outputs dout[b][g], engine_gemm's PE results res_a[row_sel][j]): Yosys 0.23
    # otherwise turns the array into a $mem without write ports, the instances' outputs end up
    # unconnected and opt_clean deletes the instances (their RAMs / DSPs silently vanish).
    mem2reg: tuple[str, ...] = ()
    # blackbox instances the RTL declares (module -> count): a netlist with fewer is refused (above)
    expect: dict[str, int] = field(default_factory=dict)
    opts: str = ""                               # extra synth_xilinx options (documented ones only)
    # skip synth_xilinx's `share` pass (merges resources of mutually exclusive operations: skipping it
    # can only keep more cells, an upper bound) where it ran for many minutes on the per-lane datapaths
    noshare: bool = False


def engine_parts(config) -> dict[str, Part]:
    """The engine's modules at `config` (isa.PRODUCTION for the report), as engine_top instantiates them."""
    lanes = max(8, config.array_rows, config.array_cols)
    lanes = 1 << (lanes - 1).bit_length()
    al = max(2, config.array_cols)
    sizes = {"SPM_ELEMS": config.spm_elems, "ACC_ELEMS": config.acc_elems, "IDX_ELEMS": config.idx_elems}
    e = "engine/"
    fifo = e + "engine_fifo.sv"
    # the requantizer lanes (EXT_DECODE) and each lane group's shared shift / mode decode
    rq = {"trilevel_requant": ("requant",), "trilevel_requant_decode": ("requant_decode",)}
    rq_files = ("trilevel_requant.sv", "trilevel_requant_decode.sv")
    axi = {"AW": 40, "DW": 128, "MAX_BURST": 16, "OUTSTANDING": 16}
    top_params = {"ROWS": config.array_rows, "COLS": config.array_cols, "EPI_LANES": config.epilogue_lanes,
                  **sizes, "SPM_REGION_ROWS": config.spm_region_rows,
                  "STAT_SLOTS": config.stat_slots, "QUEUE_DEPTH": config.queue_depth,
                  "MAX_ROW": config.max_row, "MAX_DIM": config.max_dim, "VEC_LANES": config.vec_lanes,
                  "SPM_LANES": lanes}
    mem = e + "engine_mem.sv"

    def mem_box(width: int, lanes: int, elems: int, bram: str, region_rows: int = 2048) -> dict[str, object]:
        rows = elems // lanes
        regions = -(-rows // min(rows, region_rows if width <= 18 else 1024))
        return {"boxes": ("engine_bram",), "mem2reg": (mem,), "opts": WIDE,
                "children": {"engine_bram": (bram,)}, "expect": {"engine_bram": lanes * regions}}

    # engine_lutram: the LUT RAM banks of gemm's chunk buffers and softmax's / vec's row buffers, blackboxes
    # there (their files are read -mem2reg, which would turn the RAM into registers); one part per parameter
    # set, synthesized on its own, counted once per instance
    lut = e + "engine_lutram.sv"
    d_sm, d_vec = config.max_row // config.vec_lanes, config.max_dim // config.vec_lanes
    lutram_sets = {
        "gemm": [(16, 2 * lanes, 1)] * (2 * lanes),                                  # A and B banks
        "softmax": [(33, d_sm, 1)] * config.vec_lanes + [(17, d_sm, 1)] * config.vec_lanes,   # {v,b,s}, e
        "vec": [(16, d_vec, 2)] * config.vec_lanes + [(16, d_vec, 1)] * config.vec_lanes,      # xbuf, hbuf
        "top": [(64, config.stat_slots, 5)],                                          # STAT slots
    }

    def lutram_name(w: int, n: int, nrd: int) -> str:
        return f"lutram{w}x{n}" + (f"r{nrd}" if nrd > 1 else "")

    def lutram_children(unit: str) -> tuple[str, ...]:
        names = tuple(lutram_name(*p) for p in lutram_sets[unit])
        return names[:1] if len(set(names)) == 1 else names      # one target x count, or one per instance

    lutrams = {lutram_name(*p): Part("engine_lutram", (lut,), {"W": p[0], "N": p[1], "NRD": p[2]})
               for sets in lutram_sets.values() for p in sets}

    blackboxed = ("engine_axil", "engine_axi_rd", "engine_axi_wr", "engine_load", "engine_store",
                  "engine_compute", "engine_gemm", "engine_topk", "engine_softmax", "engine_vec",
                  "engine_mem")
    return {
        "mac_pe": Part("mac_pe", ("mac_pe.sv",), {"ACC_W": 48}),
        "requant": Part("trilevel_requant", ("trilevel_requant.sv",), {"ACC_W": 64, "EXT_DECODE": 1}),
        "requant_decode": Part("trilevel_requant_decode", ("trilevel_requant_decode.sv",), {"SR": 1}),
        "topk_unit": Part("topk_unit", ("topk_unit.sv",), {"NMAX": config.max_row, "SCORE_W": 32}),
        "gemm": Part("engine_gemm", (e + "engine_gemm.sv", fifo),
                     {"R": config.array_rows, "C": config.array_cols, "L": lanes, "AL": al,
                      "EPI_LANES": config.epilogue_lanes, "SPM_ELEMS": config.spm_elems,
                      "ACC_ELEMS": config.acc_elems, "STAT_SLOTS": config.stat_slots},
                     ("mac_pe.sv", *rq_files, lut),
                     {"mac_pe": ("mac_pe",), **rq, "engine_lutram": lutram_children("gemm")},
                     mem2reg=(e + "engine_gemm.sv",), opts=WIDE, noshare=True,
                     expect={"mac_pe": config.array_rows * config.array_cols,
                             "trilevel_requant": config.epilogue_lanes, "trilevel_requant_decode": 1,
                             "engine_lutram": len(lutram_sets["gemm"])}),
        "softmax": Part("engine_softmax", (e + "engine_softmax.sv",),
                        {"L": lanes, "AL": al, "SPM_ELEMS": config.spm_elems, "ACC_ELEMS": config.acc_elems,
                         "STAT_SLOTS": config.stat_slots, "MAX_ROW": config.max_row, "V": config.vec_lanes},
                        (*rq_files, lut), {**rq, "engine_lutram": lutram_children("softmax")},
                        mem2reg=(e + "engine_softmax.sv",), opts=WIDE, noshare=True,
                        expect={"trilevel_requant": config.vec_lanes, "trilevel_requant_decode": 1,
                                "engine_lutram": len(lutram_sets["softmax"])}),
        "vec": Part("engine_vec", (e + "engine_vec.sv",),
                    {"L": lanes, "AL": al, **sizes, "STAT_SLOTS": config.stat_slots,
                     "MAX_ROW": config.max_row,
                     "MAX_DIM": config.max_dim, "V": config.vec_lanes},
                    (*rq_files, lut),
                    {**rq, "engine_lutram": lutram_children("vec")},   # requantizers A and C per lane
                    mem2reg=(e + "engine_vec.sv",), opts=WIDE, noshare=True,
                    expect={"trilevel_requant": 2 * config.vec_lanes, "trilevel_requant_decode": 2,
                            "engine_lutram": len(lutram_sets["vec"])}),
        "topk": Part("engine_topk", (e + "engine_topk.sv", fifo),
                     {"AL": al, "ACC_ELEMS": config.acc_elems, "IDX_ELEMS": config.idx_elems,
                      "MAX_ROW": config.max_row},
                     ("topk_unit.sv",), {"topk_unit": ("topk_unit",)}),
        "load": Part("engine_load", (e + "engine_load.sv", fifo), {"AW": 40, **sizes}),
        "store": Part("engine_store", (e + "engine_store.sv", fifo),
                      {"AW": 40, **sizes, "STAT_SLOTS": config.stat_slots}),
        "compute": Part("engine_compute", (e + "engine_compute.sv",), {"UNITS": 0x78}),
        "axil": Part("engine_axil", (e + "engine_axil.sv",), {"AW": 8}),
        "axi_rd": Part("engine_axi_rd", (e + "engine_axi_rd.sv", fifo), axi),
        "axi_wr": Part("engine_axi_wr", (e + "engine_axi_wr.sv", fifo), axi),
        # engine_mem: the crossbar / conflict logic synthesized with its engine_bram regions as
        # blackboxes; one engine_bram per element width synthesized on its own (Yosys maps it to
        # RAMB36 / RAMB18) and counted once per instance. Ports and narrow-port lanes as engine_top's.
        "mem_spm": Part("engine_mem", (mem,),
                        {"EW": 16, "LANES": lanes, "DEPTH": config.spm_elems, "NR": 5, "NW": 2, "AW": 24,
                         "REGION_ROWS": config.spm_region_rows, "RD_LANES": 8, "WR_LANES": 8},
                        **mem_box(16, lanes, config.spm_elems, "bram_spm", config.spm_region_rows)),
        "mem_acc": Part("engine_mem", (mem,),
                        {"EW": 48, "LANES": al, "DEPTH": config.acc_elems, "NR": 3, "NW": 2, "AW": 24,
                         "RD_LANES": 0x01_00_02, "WR_LANES": 0x00_02},
                        **mem_box(48, al, config.acc_elems, "bram48")),
        "mem_idx": Part("engine_mem", (mem,),
                        {"EW": 16, "LANES": 8, "DEPTH": config.idx_elems, "NR": 4, "NW": 2, "AW": 24,
                         "RD_LANES": 0x01_00_01_01, "WR_LANES": 0x01_00},
                        **mem_box(16, 8, config.idx_elems, "bram16")),
        "bram_spm": Part("engine_bram", (mem,), {"W": 16, "N": config.spm_region_rows}),   # an SPM region
        "bram16": Part("engine_bram", (mem,), {"W": 16, "N": 2048}),      # an IDX region
        "bram48": Part("engine_bram", (mem,), {"W": 48, "N": 1024}),      # a region of 48-bit elements
        **lutrams,
        "top": Part("engine_top", (e + "engine_top.sv", fifo), top_params,
                    tuple(e + f"{m}.sv" for m in blackboxed)
                    + ("mac_pe.sv", *rq_files, "topk_unit.sv", lut),
                    {"engine_lutram": lutram_children("top"), "engine_axil": ("axil",),
                     "engine_axi_rd": ("axi_rd",), "engine_axi_wr": ("axi_wr",), "engine_load": ("load",),
                     "engine_store": ("store",), "engine_compute": ("compute",),
                     "engine_gemm": ("gemm",), "engine_topk": ("topk",), "engine_softmax": ("softmax",),
                     "engine_vec": ("vec",), "engine_mem": ("mem_spm", "mem_acc", "mem_idx")}),
    }


def _part_key(part: Part, yosys: str, src: Path = RTL_DIR) -> str:
    import hashlib

    h = hashlib.sha256()
    h.update(repr((part.top, part.params, part.files, part.lib, SYNTH_FLAGS, DEFINES)
                  + ((part.boxes, part.mem2reg, part.opts) if part.boxes or part.mem2reg or part.opts else ())
                  + (("noshare",) if part.noshare else ())).encode())
    headers = tuple(f"engine/{p.name}" for p in sorted((src / "engine").glob("*.svh")))   # their includes
    for rel in part.files + part.lib + headers:
        path = src / rel
        if path.exists():
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


SYNTH_FLAGS = "synth_xilinx -family xcup -noiopad -noclkbuf"
# mac_pe's multiply-add as an instantiated DSP48E2 (multiplier and post-adder, as Vivado infers it): Yosys
# 0.23 packs no DSP48E2 post-adder, and its fabric adder was 48 of the PE's 51 LUT (hls/rtl/mac_pe.sv)
DEFINES = "-DTL_DSP48E2"
# The parts with wide variable part-selects and rotate networks (engine_mem's window crossbars, the
# per-lane buffers of gemm / softmax / vec): synth_xilinx's documented -widemux maps variable shifts and
# wide muxes to LUT + MUXF7/F8 trees; the default maps each to a generic barrel shifter first, whose
# full-width intermediate stages ran engine_mem (ACC) past 10 GB in the fine techmap.
WIDE = "-widemux 5"


def split_modules(text: str, names: tuple[str, ...]) -> tuple[str, str]:
    """(text without the modules `names`, their definitions) of one Verilog source."""
    boxed = []
    for n in names:
        m = re.search(rf"^module\s+{n}\b.*?^endmodule\b", text, re.S | re.M)
        if m:
            boxed.append(m.group(0) + "\n")
            text = text[:m.start()] + text[m.end():]
    return text, "".join(boxed)


def synth_script(part: Part) -> str:
    """synth_xilinx of `part`. With WIDE the same passes, but map_cells' techmap (with the
    -D MIN_MUX_INPUTS that synth_xilinx -widemux gives it) runs on ten slices of the cells (by the last
    character of their names) and then on the rest: techmap derives one template per parameter /
    constant-input pattern of the $__XILINX_SHIFTX cells and keeps them all until the end of its run,
    which alone took engine_mem (ACC) past 10 GB; the slices release them in between."""
    flags = f"{SYNTH_FLAGS}{' ' + part.opts if part.opts else ''}"
    if WIDE not in part.opts and not part.noshare:
        return f"{flags} -top {part.top}; "
    if part.noshare:        # synth_xilinx's coarse step without `share` (resource sharing only merges)
        head = (f"{flags} -top {part.top} -run begin:coarse; "
                "techmap -map +/cmp2lut.v -map +/cmp2lcu.v -D LUT_WIDTH=6; alumacc; opt; memory -nomap; "
                f"opt_clean; {flags} -run map_memory:map_cells; ")
    else:
        head = f"{flags} -top {part.top} -run begin:map_cells; "
    if WIDE not in part.opts:
        return head + f"{flags} -run map_cells:; "
    tm = f"techmap -map +/techmap.v -map +/xilinx/cells_map.v -D MIN_MUX_INPUTS={WIDE.split()[-1]}"
    slices = "".join(f"{tm} c:*{d}; " for d in "0123456789")
    return f"{head}{slices}{tm}; clean; {flags} -run map_ffs:; "


def snapshot(rev: str, dest: Path) -> Path:
    """hls/rtl of git revision `rev` extracted under `dest`; returns its hls/rtl (the `src` of synth_part)."""
    sha = subprocess.run(["git", "rev-parse", "--short=12", rev], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    root = dest / f"src-{sha}"
    if not (root / "hls" / "rtl").exists():
        root.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "hls/rtl"], cwd=REPO, capture_output=True,
                                 check=True)
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root / "hls" / "rtl"


def synth_part(name: str, part: Part, work: Path, yosys: str = "yosys", timeout: float | None = None,
               cached_only: str | None = None, src: Path = RTL_DIR) -> dict:
    """Yosys on one engine part (cached by the hash of its sources and parameters under `work`):
    {"part", "top", "params", "cells", "resources", "blackboxes", "seconds"} or {"error": why}."""
    work.mkdir(parents=True, exist_ok=True)
    key = _part_key(part, yosys, src)
    cached = work / f"{name}-{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    if cached_only is not None:                  # assemble from finished parts only
        return {"part": name, "error": cached_only}
    stat_path = work / f"{name}-{key}.stat.json"
    inc = f"-I{src / 'engine'}"
    reads = []
    lib_paths = [str(src / f) for f in part.lib]
    for f in part.files:
        path = src / f
        if part.boxes:                           # cut the boxed modules out into a -lib file
            rest, boxed = split_modules(path.read_text(), part.boxes)
            if boxed:
                path = work / f"{name}-{key}.{Path(f).name}"
                path.write_text(rest)
                lib_file = work / f"{name}-{key}.boxes.sv"
                lib_file.write_text(boxed)
                lib_paths.append(str(lib_file))
        reads.append(f"read_verilog -sv {DEFINES} {'-mem2reg ' if f in part.mem2reg else ''}{inc} {path}; ")
    lib = " ".join(lib_paths)
    chparams = " ".join(f"-set {k} {v}" for k, v in part.params.items())
    script = ("".join(reads)
              + (f"read_verilog -sv -lib {inc} {lib}; " if lib else "")
              + f"chparam {chparams} {part.top}; "
              + synth_script(part) + f"tee -q -o {stat_path} stat -json")
    start = time.monotonic()
    try:
        proc = subprocess.run([yosys, "-q", "-t", "-l", str(work / f"{name}-{key}.log"), "-p", script],
                              cwd=work, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"part": name, "error": f"yosys did not finish within {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"part": name, "error": f"yosys failed: {(proc.stdout + proc.stderr)[-1500:]}"}
    out = part_result(name, part, stat_path.read_text(), round(time.monotonic() - start, 1))
    if "error" not in out:
        cached.write_text(json.dumps(out, indent=1))
    return out


def part_result(name: str, part: Part, stat_text: str, seconds: float) -> dict:
    """A part's result from its Yosys `stat -json` output: own cells and blackbox instances, or
    {"error"} when the netlist keeps other blackbox counts than the RTL declares (part.expect)."""
    # (-t stamps every log line, the tee'd JSON included)
    stat = re.sub(r"^\[[0-9.]+\] ?", "", stat_text, flags=re.M)
    cells = json.loads(stat)["design"]["num_cells_by_type"]
    boxes: dict[str, int] = {}
    own: dict[str, int] = {}
    for cell, count in cells.items():
        module = blackbox_module(cell)
        if module in part.children:
            boxes[module] = boxes.get(module, 0) + count
        else:
            own[cell] = count
    if part.expect and boxes != part.expect:
        return {"part": name, "error": f"Yosys kept blackbox instances {boxes}, the RTL has {part.expect}"}
    return {"part": name, "top": part.top, "params": {k: str(v) for k, v in part.params.items()},
            "cells": own, "resources": categorize(own), "blackboxes": boxes, "seconds": seconds}


def blackbox_module(cell: str) -> str:
    """The module of a netlist cell type: a blackbox instance with parameters is `$paramod\\MOD\\P=V..`
    or `$paramod$HASH\\MOD` in Yosys' stat, one without `MOD`."""
    names = cell.split("\\")
    return names[1] if cell.startswith("$paramod") and len(names) > 1 else names[-1]


def engine_totals(results: dict[str, dict], parts: dict[str, Part]) -> dict[str, object]:
    """Sum each part's own resources plus its blackbox instances' totals, from the top down.
    Returns {"resources": ..., "instances": {part: count}} or {"missing": [parts without a result]}."""
    missing = sorted(n for n, r in results.items() if "error" in r)
    missing += sorted(n for n in parts if n not in results)
    instances: dict[str, int] = {}

    def walk(name: str, mult: int) -> None:
        def sub(module: str, count: int) -> None:
            # one target: all `count` instances are that part; several: one part per instance
            targets = parts[name].children[module]
            if len(targets) == 1:
                walk(targets[0], mult * count)
            else:
                if count != len(targets):
                    raise RuntimeError(f"{name}: {count} instances of {module}, expected {len(targets)}")
                for t in targets:
                    walk(t, mult)

        if name not in results or "error" in results[name]:
            # its own cells stay uncounted; the submodules the RTL declares in it (`expect`) are counted
            # (finished_parts_sum then is the finished parts' share of the engine, a lower bound)
            for module, count in parts[name].expect.items() if name in parts else ():
                sub(module, count)
            return
        instances[name] = instances.get(name, 0) + mult
        for module, count in results[name]["blackboxes"].items():
            sub(module, count)

    walk("top", 1)
    total = dict.fromkeys(COLUMNS, 0)
    for name, mult in instances.items():
        for c in COLUMNS:
            total[c] += mult * results[name]["resources"][c]
    if missing:     # a lower bound only: the missing parts and everything below them are not in it
        return {"resources": None, "missing": missing, "finished_parts_sum": total, "instances": instances}
    return {"resources": total, "instances": instances}


def engine_resources(results: dict[str, dict], parts: dict[str, Part]) -> dict[str, object]:
    """docs/engine-resources.json: the engine at the production configuration (isa.PRODUCTION), per-module
    Yosys (method in "method") with the RAMB36 count of its memories, against the ZU9EG."""
    from trilevel.accel import isa

    tot = engine_totals(results, parts)
    res = tot["resources"]
    mem = memory_model(isa.PRODUCTION)
    budget = {"dsp": 2520, "bram36": 912, "lut": 274080, "ff": 548160}
    out: dict[str, object] = {
        "lut": None if res is None else res["LUT"] + res["LUTRAM"] + res["SRL"],
        "ff": None if res is None else res["FF"],
        "dsp": None if res is None else res["DSP48E2"],
        "bram36": None if res is None else res["RAMB36"] + -(-res["RAMB18"] // 2),
        "config": dataclasses.asdict(isa.PRODUCTION),
        "method": ("per-module Yosys 0.23 `" + SYNTH_FLAGS + "` at the production parameters: each "
                   "engine module synthesized once with the modules it instantiates as blackboxes "
                   "(read_verilog -lib), totals = own cells + blackbox instances (counted in each "
                   "netlist) x their totals. Memories: engine_mem at the full SPM/ACC/IDX sizes with "
                   "its engine_bram regions as blackboxes, plus one engine_bram per element width "
                   "(16 bit x the SPM's region rows, 16 bit x 2048, 48 bit x 1024) synthesized on its own "
                   "(Yosys maps it to "
                   "RAMB36/RAMB18) x its instances. engine_mem and engine_gemm are read with "
                   "read_verilog -mem2reg (without it Yosys 0.23 turns their arrays of submodule "
                   "outputs, read with a variable index, into write-less $mem and deletes the RAM / "
                   "PE instances). Sources read with " + DEFINES + ": mac_pe's multiply-add is an "
                   "instantiated DSP48E2 (multiplier and post-adder, as Vivado infers it; Yosys 0.23 packs "
                   "no DSP48E2 post-adder). bram36 = RAMB36 + RAMB18 / 2 (rounded up). Yosys is an "
                   "estimate, not Vivado: the other accumulators and the partial-product sums of wide "
                   "multiplies stay in fabric adders."),
        "yosys_resources": res,
        "instances": tot.get("instances"),
        "missing_parts": tot.get("missing", []),
        # with missing parts: the sum over the finished parts reachable from engine_top (a lower bound;
        # the missing parts and their submodules are not in it)
        "finished_parts_sum": tot.get("finished_parts_sum"),
        "parts": {n: ({"error": r["error"]} if "error" in r else
                      {"top": r["top"], "params": r["params"], "resources": r["resources"],
                       "blackboxes": r["blackboxes"], "seconds": r["seconds"]})
                  for n, r in results.items()},
        "memories": mem,
        "memory_model_ramb36": mem["total"],
        # RAMB36 (RAMB18 / 2) that Yosys mapped for each engine_mem instance (one each in engine_top):
        # its engine_bram instances x the RAMs of one engine_bram of its width, when both finished
        "memory_ramb36_yosys": {n: _mem_ramb36(results, parts, n) for n in ("mem_spm", "mem_acc", "mem_idx")},
        # the same from the engine_bram instances the RTL declares (lanes x regions, the `expect` of each
        # engine_mem part) x the RAMs Yosys maps one engine_bram of its shape to (needs only the bram_* parts)
        "memory_ramb36_declared_x_yosys_bram": _mem_ramb36_declared(results, parts),
        "device_budget": budget,
    }
    if res is not None:
        out["fits"] = {k: out[k] <= budget[k] for k in ("lut", "ff", "dsp", "bram36")}
    else:
        p = tot["finished_parts_sum"]
        low = {"lut": p["LUT"] + p["LUTRAM"] + p["SRL"], "ff": p["FF"], "dsp": p["DSP48E2"],
               "bram36": p["RAMB36"] + -(-p["RAMB18"] // 2)}
        out["lower_bounds"] = low
        out["exceeds_budget"] = [k for k in budget if low[k] > budget[k]]
        over = "; ".join(f"{k} >= {low[k]:,} > {budget[k]:,}" for k in out["exceeds_budget"])
        out["status"] = (f"incomplete: no Yosys result for {', '.join(tot['missing'])} "
                         "(see parts.<name>.error); lut/ff/dsp/bram36 stay null. lower_bounds = the "
                         "finished parts x their instances (submodules of missing parts by their declared "
                         "counts, the missing parts' own logic not counted)"
                         + (f"; already over the ZU9EG: {over}" if over else ""))
    return out


def _mem_ramb36(results: dict[str, dict], parts: dict[str, Part], name: str) -> float | None:
    r = results.get(name, {"error": 1})
    if "error" in r:
        return None
    ram18 = 2 * r["resources"]["RAMB36"] + r["resources"]["RAMB18"]
    for module, count in r["blackboxes"].items():
        for child in parts[name].children[module]:
            c = results.get(child, {"error": 1})
            if "error" in c:
                return None
            ram18 += count * (2 * c["resources"]["RAMB36"] + c["resources"]["RAMB18"])
    return ram18 / 2


def _mem_ramb36_declared(results: dict[str, dict], parts: dict[str, Part]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in ("mem_spm", "mem_acc", "mem_idx"):
        (count,) = parts[name].expect.values()
        (child,) = parts[name].children["engine_bram"]
        c = results.get(child, {"error": 1})
        r = None if "error" in c else c["resources"]
        out[name] = None if r is None else count * (2 * r["RAMB36"] + r["RAMB18"]) / 2
    vals = list(out.values())
    out["total"] = None if None in vals else sum(vals)
    return out


def format_engine_table(summary: dict[str, object]) -> str:
    """Markdown table of docs/engine-resources.json: each part x its instances, the total, the ZU9EG."""
    inst = summary.get("instances") or {}
    lines = ["| module (parameters as in isa.PRODUCTION) | instances | LUT | FF | DSP48E2 | RAMB36 |",
             "|---|---|---|---|---|---|"]
    for name, part in summary["parts"].items():
        if "error" in part:
            lines.append(f"| {name} | | null ({part['error'].split(':')[0][:60]}) | | | |")
            continue
        r = part["resources"]
        n = inst.get(name)             # None: the tree is incomplete, one instance shown
        k = 1 if n is None else n
        lut = r["LUT"] + r["LUTRAM"] + r["SRL"]
        ram = k * r["RAMB36"] + -(-k * r["RAMB18"] // 2)
        lines.append(f"| {part['top']} ({name}) | {'?' if n is None else n} | {k * lut:,} | {k * r['FF']:,} "
                     f"| {k * r['DSP48E2']:,} | {ram:,} |")
    b = summary["device_budget"]

    def cell(key: str) -> str:
        v = summary[key]
        return "null" if v is None else f"**{v:,}** ({100 * v / b[key]:.0f} %)"

    part_sum = summary.get("finished_parts_sum")
    if summary["lut"] is None and part_sum:
        lines.append(f"| lower bound: finished parts x instances (missing parts' own logic not in it) | | "
                     f"{part_sum['LUT'] + part_sum['LUTRAM'] + part_sum['SRL']:,} | {part_sum['FF']:,} | "
                     f"{part_sum['DSP48E2']:,} | {part_sum['RAMB36'] + -(-part_sum['RAMB18'] // 2):,} |")
    lines.append(f"| **engine total** | | {cell('lut')} | {cell('ff')} | {cell('dsp')} | {cell('bram36')} |")
    lines.append(f"| ZU9EG | | {b['lut']:,} | {b['ff']:,} | {b['dsp']:,} | {b['bram36']:,} |")
    return "\n".join(lines)


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
    parser.add_argument("--engine-parts", nargs="+", metavar="PART",
                        help="synthesize only these engine parts (cached under build/synth/engine/ for a "
                             "later full `--units engine` run, which reuses them)")
    parser.add_argument("--cached-only", metavar="REASON",
                        help="build docs/engine-resources.json from the engine parts already synthesized; "
                             "the others stay null with REASON")
    parser.add_argument("--reason", action="append", default=[], metavar="PART=TEXT",
                        help="with --cached-only: why PART has no result (overrides REASON)")
    parser.add_argument("--rev", metavar="REV",
                        help="synthesize the engine from hls/rtl of git revision REV (e.g. HEAD), not the "
                             "working tree (a consistent snapshot while the RTL is being edited)")
    parser.add_argument("--part-timeout", type=float, default=None, metavar="S",
                        help="give up on an engine part after S seconds (its figures stay null)")
    args = parser.parse_args(argv)
    yosys = shutil.which("yosys")
    if yosys is None:
        print("synth-report: yosys not found on PATH (apt-get install yosys)", file=sys.stderr)
        return 1
    overrides = parse_overrides(args.param)
    report = {}
    for name in args.units:
        if name == "engine":
            continue
        spec = UNITS[name]
        spec = dataclasses.replace(spec, params={**spec.params, **overrides.get(name, {})})
        report[name] = synth_unit(name, spec, args.out.parent / "work", yosys)
        print(f"  {name}: {report[name]['seconds']} s", file=sys.stderr)
    if report:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"tool": "yosys synth_xilinx -family xcup", "units": report},
                                       indent=1))
        print(format_table(report))
        print(f"wrote {args.out}")
    if "engine" in args.units:
        from trilevel.accel import isa

        parts = engine_parts(isa.PRODUCTION)
        names = args.engine_parts or list(parts)
        src = snapshot(args.rev, args.out.parent) if args.rev else RTL_DIR
        results = {}
        for name in names:
            reasons = dict(item.split("=", 1) for item in args.reason)
            results[name] = synth_part(name, parts[name], args.out.parent / "engine", yosys,
                                       args.part_timeout,
                                       reasons.get(name, args.cached_only) if args.cached_only else None,
                                       src)
            r = results[name]
            print(f"  engine part {name}: " + (r["error"] if "error" in r else f"{r['seconds']} s"),
                  file=sys.stderr)
        if args.engine_parts:            # a subset: cached for a later full run, no summary
            return 0
        summary = engine_resources(results, parts)
        summary["sources"] = (f"hls/rtl at git {src.parent.parent.name.removeprefix('src-')}" if args.rev
                              else "hls/rtl working tree")
        args.engine_json.write_text(json.dumps(summary, indent=1) + "\n")
        print(f"engine (production, per-module Yosys): {summary['lut']} LUT, {summary['ff']} FF, "
              f"{summary['dsp']} DSP48E2, {summary['bram36']} RAMB36 (memory model "
              f"{summary['memory_model_ramb36']}) -> {args.engine_json}")
        print(format_engine_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
