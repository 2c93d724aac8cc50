"""Build the C-simulation library: build/csim/libtrilevel_csim.so (`make csim`).

Compiles the engine (hls/engine/*.cpp: the modules, the sequencer and the C API tl_engine_config /
tl_engine_run / tl_engine_set_queue_depth, docs/hls.md) with g++ -O3 -fPIC -shared -ffp-contract=off
against the Xilinx ap_types shipped in the hls4ml wheel (found with importlib, never copied), the LUT
header generated from trilevel.intref.luts and the command-set header tl_isa.h generated from
trilevel.accel.isa (--config picks the engine build: zcu102 or ci).
The build is skipped when sources, flags and compiler are unchanged.

    python hls/build_csim.py                      # fast C-sim (SIMD GEMM, row copies), the default
    python hls/build_csim.py --flavor ap --out build/csim/libtrilevel_engine_ap.so   # the synthesized loops
    python hls/build_csim.py --config ci          # the CI engine sizes (isa.CI_SMALL)
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "hls" / "engine"
BUILD = ROOT / "build" / "csim"
DEFAULT_LIB = BUILD / "libtrilevel_csim.so"
CXXFLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=off", "-std=c++14", "-w")


class BuildError(RuntimeError):
    pass


def ap_types_dir() -> Path:
    """The ap_types headers inside the installed hls4ml wheel (pip install --no-deps hls4ml)."""
    spec = importlib.util.find_spec("hls4ml")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("hls4ml is not installed (pip install --no-deps hls4ml==1.3.0): it ships ap_types")
    path = Path(next(iter(spec.submodule_search_locations))) / "templates" / "vivado" / "ap_types"
    if not (path / "ap_int.h").is_file():
        raise BuildError(f"ap_types not found under {path}")
    return path


def write_luts(include_dir: Path) -> Path:
    """Generate trilevel_luts.h from trilevel.intref.luts (rewritten only when its text changes)."""
    if importlib.util.find_spec("trilevel") is None:  # run with a Python that lacks the editable install
        sys.path.insert(0, str(ROOT / "host"))
    from trilevel.intref import luts

    path = include_dir / "trilevel_luts.h"
    text = luts.c_header_text()
    if not path.is_file() or path.read_text() != text:
        include_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def write_isa(include_dir: Path, config: str = "zcu102") -> Path:
    """Generate tl_isa.h from trilevel.accel.isa for the named EngineConfig (rewritten only on change)."""
    if importlib.util.find_spec("trilevel") is None:
        sys.path.insert(0, str(ROOT / "host"))
    from trilevel.accel import isa

    if config not in isa.CONFIGS:
        raise BuildError(f"unknown engine config {config!r} (one of {sorted(isa.CONFIGS)})")
    path = include_dir / "tl_isa.h"
    text = isa.c_header_text(isa.CONFIGS[config])
    if not path.is_file() or path.read_text() != text:
        include_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def engine_sources() -> list[Path]:
    return sorted(ENGINE.glob("*.cpp"))


def build(out: Path = DEFAULT_LIB, flavor: str = "fast", force: bool = False, config: str = "zcu102") -> Path:
    """Compile the library; returns its path. Raises BuildError with one clear line on failure."""
    if flavor not in ("fast", "ap"):
        raise BuildError(f"flavor must be 'fast' or 'ap', got {flavor!r}")
    cxx = shutil.which("g++")
    if cxx is None:
        raise BuildError("g++ not found on PATH (apt-get install g++)")
    out = Path(out).resolve()
    gen_include = out.parent / "include"
    luts_header = write_luts(gen_include)
    isa_header = write_isa(gen_include, config)
    files = engine_sources()
    defines = ["-DTRILEVEL_FAST_CSIM"] if flavor == "fast" else []
    includes = [f"-I{ENGINE}", f"-I{gen_include}", f"-I{ap_types_dir()}"]
    flags = [cxx, *CXXFLAGS, *defines, *includes]
    digest = hashlib.sha256(" ".join([*flags, *map(str, files), str(out)]).encode())
    digest.update(subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.encode())
    for path in [*files, *sorted(ENGINE.glob("*.h")), luts_header, isa_header]:
        digest.update(path.name.encode() + path.read_bytes())
    stamp = out.with_name(out.name + ".stamp")
    if not force and out.is_file() and stamp.is_file() and stamp.read_text() == digest.hexdigest():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_name(out.name + ".log")
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # a concurrent build never loads a half-written file
    cmd = [*flags, *map(str, files), "-o", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    log.write_text(" ".join(cmd) + "\n" + result.stdout + result.stderr)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        errors = [ln for ln in result.stderr.splitlines() if "error" in ln]
        first = errors[0].strip() if errors else f"exit code {result.returncode}"
        raise BuildError(f"g++ failed ({first}); full log: {log}")
    os.replace(tmp, out)
    stamp.write_text(digest.hexdigest())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_LIB, help="library path (default %(default)s)")
    parser.add_argument(
        "--flavor",
        choices=("fast", "ap"),
        default="fast",
        help="fast: SIMD GEMM and row copies (-DTRILEVEL_FAST_CSIM); ap: the synthesized loops, ap_int types",
    )
    parser.add_argument("--config", default="zcu102", help="engine build (isa.CONFIGS): zcu102 or ci")
    parser.add_argument("--force", action="store_true", help="rebuild even if nothing changed")
    args = parser.parse_args(argv)
    try:
        lib = build(args.out, args.flavor, args.force, args.config)
    except BuildError as err:
        print(f"build_csim: {err}", file=sys.stderr)
        return 1
    print(f"build_csim: {lib.relative_to(ROOT) if lib.is_relative_to(ROOT) else lib}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
