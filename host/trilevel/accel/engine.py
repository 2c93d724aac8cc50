"""The engine driver and the `EngineBackend`: every kernel as a lowered program run on the one engine.

One code path for every device, written against the PYNQ API (as on the board):

    driver = EngineDriver(mmio, allocate, config)     # pynq.MMIO of the engine IP, pynq.allocate
    out = driver.run(program, {"x": ..., "weight": ...}, seed)

A run places the program's buffers and commands in one `pynq.allocate` DDR buffer (reused while it is
large enough), writes the inputs and the commands (with the call's SR seeds), flushes
(`sync_to_device`), programs DDR_BASE (the buffer's physical address: command addresses are offsets
from it), CMD_ADDR and CMD_COUNT, sets CTRL.ap_start, polls CTRL.ap_done (bounded by a timeout),
checks ERROR (raising `EngineError` with the failing command disassembled), invalidates
(`sync_from_device`) and reads the outputs, the STAT slots (STORE STAT into the "stats" buffer) and
the counters (cycles, DDR bytes, MACs, retired commands).

Devices: on the ZCU102, the overlay's engine IP (`EngineBackend.on_board`); off the board,
`SimulatedZynq`, a `pynq.Device` whose MMIO registers and non-coherent DDR are backed by an engine
model: the HLS C++ engine's C-sim library (`csim`, `make csim`) or the functional simulator (`fsim`).
Both run through the same pynq MMIO / allocate / PynqBuffer machinery as the board.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from trilevel.accel import isa, lower
from trilevel.accel.fsim import FunctionalEngine, RunResult
from trilevel.accel.interface import Accelerator, BackendError
from trilevel.accel.isa import Err
from trilevel.intref import blocks, layers, optim
from trilevel.intref.fixed import QTensor

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CSIM_LIB = ROOT / "build" / "csim" / "libtrilevel_csim.so"
DEFAULT_BITFILE = ROOT / "build" / "bitstream" / "trilevel.bit"
# The engine IP's AXI-Lite window in the block design (bitstreams/zcu102_bd.tcl) and its identities
# (the HLS IP or the RTL IP, same ports and register map): one source, trilevel.accel.isa.
ENGINE_BASE = isa.CTRL_BASE
ENGINE_VLNVS = tuple(
    f"{isa.IP_VENDOR}:{isa.IP_LIBRARY}:{name}:{isa.IP_VERSION}" for name in isa.IP_NAMES.values()
)
REG = {name: off for name, (off, _) in isa.REGISTERS.items()}


class EngineError(BackendError):
    """The engine stopped with an error: the code, the failing command and its disassembly."""

    def __init__(self, kernel: str, code: int, pc: int, command: str, detail: str = "") -> None:
        name = Err(code).name if code in iter(Err) else f"code {code}"
        cause = isa.ERR_CAUSE.get(Err(code), "") if code in iter(Err) else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"engine error {name} in {kernel} at command {pc}: {command} -- {cause}{extra}")
        self.kernel, self.code, self.pc = kernel, code, pc


class EngineOverflowError(EngineError, OverflowError):
    """ACC_RANGE: an accumulator left 48 bits (the reference raises OverflowError there too)."""


class EngineTimeoutError(BackendError):
    """STATUS.done did not rise in time."""


class Mmio(Protocol):
    def read(self, offset: int = 0, length: int = 4) -> int: ...

    def write(self, offset: int, value: int) -> None: ...


@dataclass
class RunOutput:
    outputs: dict[str, np.ndarray]  # by buffer name, shaped (rows, cols)
    stats: dict[str, int]
    counters: dict[str, int]
    retired: int


class EngineDriver:
    """Runs lowered programs on one engine through its AXI-Lite registers and one DDR buffer."""

    def __init__(
        self, mmio: Mmio, allocate: Callable[[int], Any], config: isa.EngineConfig, timeout_s: float = 60.0
    ) -> None:
        self.mmio, self.allocate, self.config, self.timeout_s = mmio, allocate, config, timeout_s
        self._ddr: Any = None
        self.last_counters: dict[str, int] = {}

    def _buffer(self, nbytes: int) -> Any:
        if self._ddr is None or self._ddr.nbytes < nbytes:
            if self._ddr is not None and hasattr(self._ddr, "freebuffer"):
                self._ddr.freebuffer()
            self._ddr = self.allocate(max(nbytes, 1 << 16))
        return self._ddr

    def run(self, program: lower.Program, inputs: Mapping[str, np.ndarray], seed: int = 0) -> RunOutput:
        ddr = self._buffer(program.ddr_bytes)
        host = np.asarray(ddr).view(np.uint8)
        base = int(ddr.device_address)
        if program.ddr_bytes > ddr.nbytes:
            raise BackendError(
                f"{program.kernel}: {program.ddr_bytes} DDR bytes > the {ddr.nbytes}-byte buffer"
            )
        for name, buf in program.buffers.items():
            if buf.role in ("in", "inout"):
                if name not in inputs:
                    raise ValueError(f"{program.kernel}: no input for buffer {name!r}")
                data = np.ascontiguousarray(np.asarray(inputs[name]).astype(buf.dtype, copy=False))
                if data.size != buf.rows * buf.cols:
                    raise ValueError(
                        f"{program.kernel}: input {name!r} has {data.size} elements, "
                        f"the program expects {buf.rows}x{buf.cols}"
                    )
                host[buf.offset : buf.offset + buf.nbytes] = data.reshape(-1).view(np.uint8)
                ddr[buf.offset : buf.offset + buf.nbytes].sync_to_device()  # flush only what was written
        words = program.bind(seed)
        start = program.program_offset
        host[start : start + words.nbytes] = words.view(np.uint8)
        ddr[start : start + words.nbytes].sync_to_device()
        self.mmio.write(REG["DDR_BASE_LO"], base & 0xFFFF_FFFF)
        self.mmio.write(REG["DDR_BASE_HI"], base >> 32)
        self.mmio.write(REG["CMD_ADDR"], start)
        self.mmio.write(REG["CMD_COUNT"], program.count)
        self.mmio.write(REG["CTRL"], isa.CTRL_START)
        deadline = time.monotonic() + self.timeout_s
        while True:
            ctrl = self.mmio.read(REG["CTRL"])  # ap_done clears on read
            if ctrl & isa.CTRL_DONE:
                break
            if time.monotonic() > deadline:
                raise EngineTimeoutError(
                    f"engine: {program.kernel} not done after {self.timeout_s} s "
                    f"(CTRL {ctrl:#x}, {self.counters()['RETIRED']} commands retired)"
                )
            time.sleep(0.0005)
        self.last_counters = self.counters()
        code = self.mmio.read(REG["ERROR"])
        if code != Err.NONE:
            pc = self.mmio.read(REG["ERR_PC"]) if self.mmio.read(REG["ERR_PC_CTRL"]) & 1 else 0
            words_pc = (
                words.reshape(-1, isa.WORDS)[pc] if pc < program.count else np.zeros(isa.WORDS, np.uint32)
            )
            cls = EngineOverflowError if code == Err.ACC_RANGE else EngineError
            raise cls(program.kernel, code, pc, isa.disassemble_one(words_pc))
        outputs = {}
        for name, buf in program.buffers.items():
            if buf.role in ("out", "inout"):
                ddr[buf.offset : buf.offset + buf.nbytes].sync_from_device()  # invalidate only the outputs
                raw = host[buf.offset : buf.offset + buf.nbytes].copy()
                outputs[name] = raw.view(buf.dtype).reshape(buf.rows, buf.cols)
        stats_row = outputs.pop("stats")[0]
        stats = {key: int(stats_row[i]) for i, key in enumerate(program.stat_keys)}
        return RunOutput(outputs, stats, self.last_counters, self.last_counters["RETIRED"])

    def counters(self) -> dict[str, int]:
        base = REG["COUNTERS"]
        return {
            name: self.mmio.read(base + 8 * i) | self.mmio.read(base + 8 * i + 4) << 32
            for i, name in enumerate(isa.COUNTERS)
        }


# --------------------------------------------------------------------------------------- engine models
class EngineModel(Protocol):
    config: isa.EngineConfig

    def run(self, ddr: np.ndarray, cmd_addr: int, cmd_count: int) -> RunResult: ...


class CSimError(BackendError):
    """The C-sim engine library is missing or lacks the engine entry points."""


class CSimEngine:
    """The HLS C++ engine compiled for C simulation (build/csim/libtrilevel_csim.so, `make csim`)."""

    CONFIG_FIELDS = (
        "array_rows",
        "array_cols",
        "spm_elems",
        "acc_elems",
        "idx_elems",
        "stat_slots",
        "vec_lanes",
        "softmax_units",
        "max_row",
        "axi_bytes",
        "queue_depth",
        "isa_version",
        "max_dim",
    )

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else DEFAULT_CSIM_LIB
        if not self.path.is_file():
            raise CSimError(f"C-sim engine library {self.path} not found (run `make csim`)")
        try:
            lib = ctypes.CDLL(str(self.path))
        except OSError as err:
            raise CSimError(f"C-sim engine library {self.path} cannot be loaded: {err}") from None
        if not hasattr(lib, "tl_engine_run"):
            raise CSimError(f"{self.path} does not export tl_engine_run (rebuild with `make csim`)")
        lib.tl_engine_config.argtypes = [ctypes.POINTER(ctypes.c_uint32), ctypes.c_int]
        lib.tl_engine_config.restype = ctypes.c_int
        u32p, u64p = ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint64)
        lib.tl_engine_run.argtypes = [
            ctypes.c_void_p,
            ctypes.c_uint64,
            ctypes.c_uint64,
            ctypes.c_uint32,
            u32p,
            u32p,
            u32p,
            u64p,
        ]
        lib.tl_engine_run.restype = ctypes.c_uint32
        if hasattr(lib, "tl_engine_set_queue_depth"):
            lib.tl_engine_set_queue_depth.argtypes = [ctypes.c_char_p, ctypes.c_int]
            lib.tl_engine_set_queue_depth.restype = ctypes.c_int
        self.lib = lib
        values = (ctypes.c_uint32 * len(self.CONFIG_FIELDS))()
        written = lib.tl_engine_config(values, len(self.CONFIG_FIELDS))
        if written != len(self.CONFIG_FIELDS):
            raise CSimError(f"{self.path} reports {written} build sizes, the host needs "
                            f"{len(self.CONFIG_FIELDS)} (rebuild with `make csim`)")
        got = dict(zip(self.CONFIG_FIELDS, (int(v) for v in values), strict=True))
        if got.pop("isa_version") != isa.ISA_VERSION:
            raise CSimError(f"{self.path}: ISA version {values[11]}, host has {isa.ISA_VERSION}")
        match = [c for c in isa.CONFIGS.values() if all(getattr(c, k) == v for k, v in got.items())]
        clock = isa.PRODUCTION.clock_mhz
        # (the library does not report an epilogue width; the C-sim's cycle model drains whole rows)
        self.config = match[0] if match else isa.EngineConfig(
            "csim", clock_mhz=clock, epilogue_lanes=got["array_cols"], **got
        )

    def set_queue_depth(self, name: str, depth: int) -> int:
        return int(self.lib.tl_engine_set_queue_depth(name.encode(), depth))

    def run(self, ddr: np.ndarray, cmd_addr: int, cmd_count: int) -> RunResult:
        error, err_pc, retired = ctypes.c_uint32(), ctypes.c_uint32(), ctypes.c_uint32()
        counters = (ctypes.c_uint64 * len(isa.COUNTERS))()
        status = self.lib.tl_engine_run(
            ddr.ctypes.data,
            ddr.nbytes,
            cmd_addr,
            cmd_count,
            ctypes.byref(error),
            ctypes.byref(err_pc),
            ctypes.byref(retired),
            counters,
        )
        code = Err(error.value) if error.value in iter(Err) else Err.BAD_OPCODE
        return RunResult(
            int(status),
            code,
            int(err_pc.value),
            int(retired.value),
            dict(zip(isa.COUNTERS, (int(c) for c in counters), strict=True)),
        )


def build_csim() -> Path:
    """`make csim`'s step: hls/build_csim.py (a no-op when nothing changed); returns the library path."""
    cmd = [sys.executable, str(ROOT / "hls" / "build_csim.py")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CSimError((result.stderr or result.stdout).strip() or f"{' '.join(cmd)} failed")
    return DEFAULT_CSIM_LIB


def csim_engine_available(path: str | os.PathLike | None = None) -> bool:
    try:
        CSimEngine(path)
    except (CSimError, OSError):
        return False
    return True


# ------------------------------------------------------------------------------- simulated board device
def _simulated_device_class() -> type:
    from pynq.buffer import PynqBuffer
    from pynq.pl_server.device import Device

    class _Memory:
        def __init__(self, device: Any) -> None:
            self.device = device

        def allocate(self, shape: Any, dtype: Any, **kwargs: Any) -> PynqBuffer:
            dev = self.device
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            address = dev.reserve(nbytes)
            return PynqBuffer(shape, dtype, device=dev, device_address=address, bo=address, coherent=False)

    class SimulatedZynq(Device):
        """A ZCU102 as pynq sees it, with an engine model behind the engine IP's registers.

        DDR is not coherent (like the board's non-coherent HP port): the engine sees a buffer's contents
        only after `sync_to_device`, the host sees the engine's writes only after `sync_from_device`.
        Device addresses are byte offsets into the simulated DDR, so they are the engine's DDR addresses.
        """

        _probe_priority_ = 978
        enabled = False  # set by tests that want pynq's device discovery to find one

        @classmethod
        def _probe_(cls) -> list[Any]:
            """pynq's discovery: one simulated board (C-sim engine when built, else fsim) if enabled."""
            if not cls.enabled:
                return []
            return [cls(CSimEngine() if csim_engine_available() else FunctionalEngine())]

        def __init__(self, engine: EngineModel, tag: str = "simulated-zcu102") -> None:
            super().__init__(tag)
            self.capabilities = {"REGISTER_RW": True, "MEMORY_MAPPED": False}
            self.default_memory = _Memory(self)
            self.engine = engine
            self.ddr = np.zeros(1 << 20, dtype=np.uint8)
            self.top = 0x1000  # address 0 stays unused: a zero address is a driver bug
            self.regs: dict[int, int] = {}
            self.allocations: dict[int, int] = {}  # buffer address -> end
            self.runs = 0
            self._reset()

        def _reset(self) -> None:
            self.regs = {REG["CTRL"]: isa.CTRL_IDLE}

        def reserve(self, nbytes: int) -> int:
            address = self.top
            self.top += -(-max(nbytes, 1) // 4096) * 4096
            self.allocations[address] = self.top
            if self.top > self.ddr.size:
                grown = np.zeros(max(self.top, 2 * self.ddr.size), dtype=np.uint8)
                grown[: self.ddr.size] = self.ddr
                self.ddr = grown
            return address

        # pynq Device hooks
        def flush(self, bo: int, offset: int, ptr: int, size: int) -> None:
            self.ddr[bo + offset : bo + offset + size] = np.frombuffer(ctypes.string_at(ptr, size), np.uint8)

        def invalidate(self, bo: int, offset: int, ptr: int, size: int) -> None:
            ctypes.memmove(ptr, self.ddr[bo + offset : bo + offset + size].ctypes.data, size)

        def read_registers(self, address: int, length: int) -> bytes:
            offset = address - ENGINE_BASE
            value = self.regs.get(offset, 0)
            if offset == REG["CTRL"]:
                self.regs[offset] = value & ~isa.CTRL_DONE  # ap_done is clear-on-read
            return int(value).to_bytes(4, "little")[:length]

        def write_registers(self, address: int, data: bytes) -> None:
            offset, value = address - ENGINE_BASE, int.from_bytes(data, "little")
            if offset == REG["CTRL"]:
                if value & isa.CTRL_START:
                    self._start()
            elif offset == REG["ISR"]:
                self.regs[offset] = self.regs.get(offset, 0) ^ (value & 1)
            else:
                self.regs[offset] = value

        def _start(self) -> None:
            base = self.regs.get(REG["DDR_BASE_LO"], 0) | self.regs.get(REG["DDR_BASE_HI"], 0) << 32
            # The engine sees DDR from DDR_BASE to the end of the buffer holding it (a DMA beyond: DDR_RANGE).
            end = next((e for a, e in self.allocations.items() if a <= base < e), self.ddr.size)
            result = self.engine.run(
                self.ddr[base:end], self.regs.get(REG["CMD_ADDR"], 0), self.regs.get(REG["CMD_COUNT"], 0)
            )
            self.runs += 1
            self.regs[REG["CTRL"]] = result.status | isa.CTRL_READY
            self.regs[REG["ERROR"]] = int(result.error)
            self.regs[REG["ERR_PC"]] = result.err_pc
            self.regs[REG["ERR_PC_CTRL"]] = int(result.error != Err.NONE)
            for i, name in enumerate(isa.COUNTERS):
                self.regs[REG["COUNTERS"] + 8 * i] = result.counters[name] & 0xFFFF_FFFF
                self.regs[REG["COUNTERS"] + 8 * i + 4] = result.counters[name] >> 32
            if self.regs.get(REG["GIE"], 0) & 1 and self.regs.get(REG["IER"], 0) & 1:
                self.regs[REG["ISR"]] = 1

    return SimulatedZynq


_SIM_CLASS: type | None = None


def simulated_zynq(engine: EngineModel) -> Any:
    """A `pynq.Device` whose engine IP is `engine` (FunctionalEngine or CSimEngine)."""
    global _SIM_CLASS
    if _SIM_CLASS is None:
        _SIM_CLASS = _simulated_device_class()
    return _SIM_CLASS(engine)


def board_config(manifest: Path) -> isa.EngineConfig:
    """The engine build a bitstream was made with: its manifest's "engine_config", else isa.PRODUCTION."""
    import json

    try:
        name = json.loads(manifest.read_text()).get("engine_config", isa.PRODUCTION.name)
    except (OSError, ValueError):
        return isa.PRODUCTION
    if name not in isa.CONFIGS:
        raise BackendError(f"{manifest}: engine_config {name!r} is none of {', '.join(isa.CONFIGS)}")
    return isa.CONFIGS[name]


def pynq_driver(
    device: Any, config: isa.EngineConfig, base: int = ENGINE_BASE, timeout_s: float = 60.0
) -> EngineDriver:
    """The driver over pynq's MMIO and allocate for `device` (the board's or a simulated one)."""
    import pynq

    mmio = pynq.MMIO(base, isa.REGISTER_SPAN, device=device)
    return EngineDriver(
        mmio, lambda nbytes: pynq.allocate((nbytes,), np.uint8, target=device), config, timeout_s
    )


def measure_program(program: lower.Program, engine: str = "auto") -> tuple[str, dict[str, int]]:
    """Run `program` once on zero inputs (its counters do not depend on the data) on the C-sim engine
    ("csim"; "auto": when built for the program's configuration) or the functional simulator ("fsim").
    Returns (what counted, the counters)."""
    model: EngineModel | None = None
    if engine in ("auto", "csim"):
        try:
            model = CSimEngine()
            if model.config != program.config:
                if engine == "csim":
                    raise CSimError(
                        f"the C-sim engine is the {model.config.name} build, the program "
                        f"targets {program.config.name}"
                    )
                model = None
        except CSimError:
            if engine == "csim":
                raise
            model = None
    label = "C-sim engine (modelled cycles)"
    if model is None:
        model, label = FunctionalEngine(program.config), "fsim (cycle estimate)"
    driver = pynq_driver(simulated_zynq(model), program.config)
    inputs = {
        name: np.zeros(buf.rows * buf.cols, buf.dtype)
        for name, buf in program.buffers.items()
        if buf.role in ("in", "inout")
    }
    return label, driver.run(program, inputs).counters


# ------------------------------------------------------------------------------------------ backend
def _params_fracs(params: Mapping[str, QTensor], names: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    return tuple((n, int(params[n].frac)) for n in names)


def _check_x(x: QTensor, dim: int, kernel: str) -> tuple[int, int]:
    if not isinstance(x, QTensor):
        raise TypeError(f"{kernel}: expected a QTensor, got {type(x).__name__}")
    if x.data.ndim != 3 or x.data.shape[-1] != dim:
        raise ValueError(f"{kernel}: expected [B, T, {dim}], got {x.data.shape}")
    return x.data.shape[0], x.data.shape[1]


def _grad(grads: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    acc = grads[name]
    if acc.dtype != np.int64 or acc.shape != shape:
        raise ValueError(f"grads[{name!r}]: need int64 {shape}, got {acc.dtype} {acc.shape}")
    return acc


def _fresh(*accumulators: np.ndarray) -> bool:
    """Whether the gradient accumulators are all zero (a step's first micro-batch): the backward program
    then starts them at zero on chip instead of reading them from DDR (lower.*_bwd `fresh`)."""
    return not any(acc.any() for acc in accumulators)


def _row_stats(saved_ln: Mapping[str, Any]) -> np.ndarray:
    rs = np.asarray(saved_ln["rsqrt"]).astype(np.int64).reshape(-1)
    k = np.asarray(saved_ln["k"]).astype(np.int64).reshape(-1)
    return rs | (k << 32)


def _ln_saved(out: Mapping[str, np.ndarray], shape: tuple[int, int, int], frac_x: int) -> dict[str, Any]:
    rows = out["row_stats"].reshape(shape[0], shape[1], 1)
    return {"xhat": out["xhat"].reshape(shape), "rsqrt": rows & 0xFFFFFFFF, "k": rows >> 32, "frac_x": frac_x}


ATTN_PARAMS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
)
MLP_PARAMS = (
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)


class EngineBackend(Accelerator):
    """Every kernel lowered (trilevel.accel.lower) and run on the engine through `EngineDriver`; the
    optimizer runs on the host CPU (the ARM cores on the board) with trilevel.intref.optim."""

    def __init__(self, driver: EngineDriver, name: str) -> None:
        self.driver = driver
        self.config = driver.config
        self.name = name  # type: ignore[misc]
        self.counters: dict[str, dict[str, int]] = {}  # per kernel: counters summed over runs
        self.runs: dict[str, int] = {}
        self.last_program: dict[str, lower.Program] = {}  # per kernel, the program of its last run
        self.device: Any = None  # the simulated pynq.Device, for the simulated backends

    # ---- construction
    @classmethod
    def simulated(cls, engine: EngineModel, name: str) -> EngineBackend:
        device = simulated_zynq(engine)
        backend = cls(pynq_driver(device, engine.config), name)
        backend.device = device
        return backend

    @classmethod
    def csim(cls, lib: str | os.PathLike | None = None) -> EngineBackend:
        return cls.simulated(CSimEngine(lib), "csim")

    @classmethod
    def fsim(cls, config: isa.EngineConfig = isa.PRODUCTION) -> EngineBackend:
        return cls.simulated(FunctionalEngine(config), "fsim")

    @classmethod
    def on_board(
        cls,
        bitfile: str | os.PathLike | None = None,
        overlay: Any = None,
        config: isa.EngineConfig | None = None,
        timeout_s: float = 10.0,
    ) -> EngineBackend:
        """The ZCU102: load `bitfile` (default $TRILEVEL_BITFILE or build/bitstream/trilevel.bit) unless an
        `overlay` is given, find the engine IP (instance isa.INSTANCE, or any IP with the HLS or RTL
        engine's VLNV) and drive it. The engine build (isa.CONFIGS) is `config`, else the manifest.json
        next to the bitfile says it (its "engine_config"), else isa.PRODUCTION."""
        import pynq

        path = Path(bitfile or os.environ.get("TRILEVEL_BITFILE") or DEFAULT_BITFILE)
        if overlay is None:
            if not path.is_file():
                raise BackendError(f"pynq backend: bitstream {path} not found (make bitstream, copy it here)")
            try:
                overlay = pynq.Overlay(str(path))
            except RuntimeError as err:
                raise BackendError(f"pynq backend: cannot load {path}: {err}") from None
        ips = overlay.ip_dict
        found = ips.get(isa.INSTANCE) or next(
            (ip for ip in ips.values() if ip.get("type") in ENGINE_VLNVS), None
        )
        if found is None:
            raise BackendError(
                f"pynq backend: the overlay has no engine IP ({isa.INSTANCE}, {' or '.join(ENGINE_VLNVS)})"
            )
        config = config or board_config(path.parent / "manifest.json")
        device = getattr(overlay, "device", None)
        driver = pynq_driver(device, config, int(found["phys_addr"]), timeout_s)
        return cls(driver, "pynq")

    # ---- plumbing
    def _run(self, program: lower.Program, inputs: Mapping[str, np.ndarray], seed: int = 0) -> RunOutput:
        out = self.driver.run(program, inputs, seed)
        total = self.counters.setdefault(program.kernel, dict.fromkeys(isa.COUNTERS, 0))
        for key, value in out.counters.items():
            total[key] += value
        self.runs[program.kernel] = self.runs.get(program.kernel, 0) + 1
        self.last_program[program.kernel] = program
        return out

    # ---- linear
    def linear_fwd(self, x, params, fracs, residual=None):
        f = layers.need_fracs(fracs, layers.LINEAR_FWD_FRACS, "linear_fwd")
        w, bias = params["weight"], params.get("bias")
        batch, tokens = _check_x(x, w.data.shape[1], "linear_fwd")
        dout, din = w.data.shape
        if residual is not None and residual.data.shape != (batch, tokens, dout):
            raise ValueError(f"linear_fwd: residual {residual.data.shape} != output {(batch, tokens, dout)}")
        prog = lower.linear_fwd(
            self.config,
            batch * tokens,
            din,
            dout,
            x.frac,
            w.frac,
            bias.frac if bias is not None else None,
            residual.frac if residual is not None else None,
            f["y"],
        )
        inputs = {"x": x.data, "weight": w.data}
        if bias is not None:
            inputs["bias"] = bias.data
        if residual is not None:
            inputs["residual"] = residual.data
        out = self._run(prog, inputs)
        y = QTensor(out.outputs["y"].reshape(batch, tokens, dout), f["y"])
        return y, out.stats, {"x": x}

    def linear_bwd(self, dy, saved, params, grads, fracs, seed, need_dx=True):
        x: QTensor = saved["x"]
        w = params["weight"]
        dout, din = w.data.shape
        batch, tokens = _check_x(dy, dout, "linear_bwd")
        has_bias = "bias" in params and params["bias"] is not None
        f = layers.need_fracs(fracs, layers.LINEAR_BWD_FRACS, "linear_bwd") if need_dx else {"dx": 0}
        gw = _grad(grads, "weight", (dout, din))
        inputs = {"dy": dy.data, "x": x.data, "weight": w.data, "grad_weight": gw}
        if has_bias:
            inputs["grad_bias"] = _grad(grads, "bias", (dout,))
        prog = lower.linear_bwd(
            self.config, batch * tokens, din, dout, has_bias, need_dx, dy.frac, w.frac, f["dx"],
            _fresh(*(inputs[k] for k in ("grad_weight", "grad_bias") if k in inputs)),
        )
        out = self._run(prog, inputs, seed)
        gw[...] = out.outputs["grad_weight"]
        grad_fracs = {"weight": dy.frac + x.frac}
        if has_bias:
            grads["bias"][...] = out.outputs["grad_bias"].reshape(dout)
            grad_fracs["bias"] = dy.frac
        if not need_dx:
            return None, {}, grad_fracs
        return QTensor(out.outputs["dx"].reshape(batch, tokens, din), f["dx"]), out.stats, grad_fracs

    # ---- LayerNorm
    def layernorm_fwd(self, x, params, fracs):
        f = layers.need_fracs(fracs, layers.LAYERNORM_FWD_FRACS, "layernorm_fwd")
        g, be = params["weight"], params["bias"]
        dim = g.data.shape[0]
        batch, tokens = _check_x(x, dim, "layernorm_fwd")
        prog = lower.layernorm_fwd(self.config, batch * tokens, dim, x.frac, g.frac, be.frac, f["y"])
        out = self._run(prog, {"x": x.data, "weight": g.data, "bias": be.data})
        y = QTensor(out.outputs["y"].reshape(batch, tokens, dim), f["y"])
        return y, out.stats, _ln_saved(out.outputs, (batch, tokens, dim), x.frac)

    def layernorm_bwd(self, dy, saved, params, grads, fracs, seed, residual=None):
        f = layers.need_fracs(fracs, layers.LAYERNORM_BWD_FRACS, "layernorm_bwd")
        g = params["weight"]
        dim = g.data.shape[0]
        batch, tokens = _check_x(dy, dim, "layernorm_bwd")
        if residual is not None and residual.data.shape != dy.data.shape:
            raise ValueError(f"layernorm_bwd: residual {residual.data.shape} != {dy.data.shape}")
        gg, gb = _grad(grads, "weight", (dim,)), _grad(grads, "bias", (dim,))
        prog = lower.layernorm_bwd(
            self.config,
            batch * tokens,
            dim,
            dy.frac,
            g.frac,
            int(saved["frac_x"]),
            residual.frac if residual is not None else None,
            lower.fracs_key(f, layers.LAYERNORM_BWD_FRACS),
            _fresh(gg, gb),
        )
        inputs = {
            "dy": dy.data,
            "xhat": saved["xhat"],
            "row_stats": _row_stats(saved),
            "weight": g.data,
            "grad_weight": gg,
            "grad_bias": gb,
        }
        if residual is not None:
            inputs["residual"] = residual.data
        out = self._run(prog, inputs, seed)
        gg[...] = out.outputs["grad_weight"].reshape(dim)
        gb[...] = out.outputs["grad_bias"].reshape(dim)
        dx = QTensor(out.outputs["dx"].reshape(batch, tokens, dim), f["dx"])
        return dx, out.stats, {"weight": dy.frac + layers.ln_xhat_frac(dim), "bias": dy.frac}

    # ---- attention block
    def attn_block_fwd(self, x, params, fracs, num_heads, conn=None, dense_rows=1):
        f = layers.need_fracs(fracs, blocks.ATTN_FWD_FRACS, "attn_block_fwd")
        lo, hi = blocks.SCORE_FRAC_RANGE
        if not lo <= f["s"] <= hi:
            raise ValueError(f"attn_block_fwd: score frac must be in {blocks.SCORE_FRAC_RANGE}, got {f['s']}")
        dim = params["norm1.weight"].data.shape[0]
        batch, length = _check_x(x, dim, "attn_block_fwd")
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        lists = 0
        if conn is not None:
            blocks.connection_mask(conn, batch, length, dense_rows)  # validates shape and range
            lists = int(np.asarray(conn).shape[-1])
        shape = lower.AttnShape(batch, length, dim, num_heads, dense_rows, lists)
        prog = lower.attn_block_fwd(
            self.config,
            shape,
            x.frac,
            _params_fracs(params, ATTN_PARAMS),
            lower.fracs_key(f, blocks.ATTN_FWD_FRACS),
        )
        inputs = {"x": x.data, **{n: params[n].data for n in ATTN_PARAMS}}
        if conn is not None:
            inputs["conn"] = np.asarray(conn)
        run = self._run(prog, inputs)
        o = run.outputs
        tri = (batch, length, dim)
        saved = {
            "ln": _ln_saved(o, tri, x.frac),
            "z": QTensor(o["z"].reshape(tri), f["ln"]),
            "qkv": QTensor(o["qkv"].reshape(batch, length, 3 * dim), f["qkv"]),
            "probs": o["probs"].reshape(batch, num_heads, length, length),
            "ctx": QTensor(o["ctx"].reshape(tri), f["ctx"]),
            "num_heads": num_heads,
            "attn_sum": o["attn_sum"].reshape(batch, length, length),
            "conn": conn,
            "dense_rows": dense_rows,
        }
        return QTensor(o["out"].reshape(tri), f["out"]), run.stats, saved

    def attn_block_bwd(self, dout, saved, params, grads, fracs, seed):
        f = layers.need_fracs(fracs, blocks.ATTN_BWD_FRACS, "attn_block_bwd")
        num_heads = int(saved["num_heads"])
        dim = params["norm1.weight"].data.shape[0]
        batch, length = _check_x(dout, dim, "attn_block_bwd")
        conn = saved.get("conn")
        dense = int(saved.get("dense_rows", 1))
        lists = int(np.asarray(conn).shape[-1]) if conn is not None else 0
        shape = lower.AttnShape(batch, length, dim, num_heads, dense, lists)
        z, qkv, ctx = saved["z"], saved["qkv"], saved["ctx"]
        saved_fracs = (int(saved["ln"]["frac_x"]), z.frac, qkv.frac, ctx.frac)
        shapes = lower._attn_param_shapes(dim)
        g = {n: _grad(grads, n, (shapes[n][1],) if shapes[n][0] == 1 else shapes[n]) for n in ATTN_PARAMS}
        prog = lower.attn_block_bwd(
            self.config,
            shape,
            dout.frac,
            saved_fracs,
            _params_fracs(params, ATTN_PARAMS),
            lower.fracs_key(f, blocks.ATTN_BWD_FRACS),
            _fresh(*g.values()),
        )
        inputs = {
            "dout": dout.data,
            **{n: params[n].data for n in ATTN_PARAMS},
            **{"grad." + n: g[n] for n in ATTN_PARAMS},
            "z": z.data,
            "xhat": saved["ln"]["xhat"],
            "row_stats": _row_stats(saved["ln"]),
            "qkv": qkv.data,
            "probs": saved["probs"],
            "ctx": ctx.data,
        }
        if conn is not None:
            inputs["conn"] = np.asarray(conn)
        out = self._run(prog, inputs, seed)
        for n in ATTN_PARAMS:
            g[n][...] = out.outputs["grad." + n].reshape(g[n].shape)
        dx = QTensor(out.outputs["dx"].reshape(batch, length, dim), f["dx"])
        return dx, out.stats, blocks.attn_grad_fracs(dim, f, dout.frac, ctx.frac, z.frac)

    # ---- MLP block
    def mlp_block_fwd(self, x, params, fracs):
        f = layers.need_fracs(fracs, blocks.MLP_FWD_FRACS, "mlp_block_fwd")
        dim = params["norm2.weight"].data.shape[0]
        hidden = params["mlp.fc1.weight"].data.shape[0]
        batch, tokens = _check_x(x, dim, "mlp_block_fwd")
        prog = lower.mlp_block_fwd(
            self.config,
            batch * tokens,
            dim,
            hidden,
            x.frac,
            _params_fracs(params, MLP_PARAMS),
            lower.fracs_key(f, blocks.MLP_FWD_FRACS),
        )
        out = self._run(prog, {"x": x.data, **{n: params[n].data for n in MLP_PARAMS}})
        o = out.outputs
        tri, hid = (batch, tokens, dim), (batch, tokens, hidden)
        h = QTensor(o["h"].reshape(hid), f["h"])
        saved = {
            "ln": _ln_saved(o, tri, x.frac),
            "z": QTensor(o["z"].reshape(tri), f["ln"]),
            "h": h,
            "a": QTensor(o["a"].reshape(hid), f["a"]),
            "gelu": {"x": h},
        }
        return QTensor(o["out"].reshape(tri), f["out"]), out.stats, saved

    def mlp_block_bwd(self, dout, saved, params, grads, fracs, seed):
        f = layers.need_fracs(fracs, blocks.MLP_BWD_FRACS, "mlp_block_bwd")
        dim = params["norm2.weight"].data.shape[0]
        hidden = params["mlp.fc1.weight"].data.shape[0]
        batch, tokens = _check_x(dout, dim, "mlp_block_bwd")
        z, h, a = saved["z"], saved["h"], saved["a"]
        saved_fracs = (int(saved["ln"]["frac_x"]), z.frac, h.frac, a.frac)
        shapes = lower._mlp_param_shapes(dim, hidden)
        g = {n: _grad(grads, n, (shapes[n][1],) if shapes[n][0] == 1 else shapes[n]) for n in MLP_PARAMS}
        prog = lower.mlp_block_bwd(
            self.config,
            batch * tokens,
            dim,
            hidden,
            dout.frac,
            saved_fracs,
            _params_fracs(params, MLP_PARAMS),
            lower.fracs_key(f, blocks.MLP_BWD_FRACS),
            _fresh(*g.values()),
        )
        inputs = {
            "dout": dout.data,
            **{n: params[n].data for n in MLP_PARAMS},
            **{"grad." + n: g[n] for n in MLP_PARAMS},
            "z": z.data,
            "xhat": saved["ln"]["xhat"],
            "row_stats": _row_stats(saved["ln"]),
            "h": h.data,
            "a": a.data,
        }
        out = self._run(prog, inputs, seed)
        for n in MLP_PARAMS:
            g[n][...] = out.outputs["grad." + n].reshape(g[n].shape)
        dx = QTensor(out.outputs["dx"].reshape(batch, tokens, dim), f["dx"])
        return dx, out.stats, blocks.mlp_grad_fracs(dim, f, dout.frac, a.frac, z.frac)

    # ---- TA-selector
    @staticmethod
    def _scores(scores: np.ndarray, ndim: int, what: str) -> np.ndarray:
        s = np.asarray(scores)
        if s.ndim != ndim:
            raise ValueError(f"{what}: expected {ndim} dimensions, got {s.shape}")
        if s.dtype.kind not in "iu":
            raise TypeError(f"{what}: the top-k unit takes integer scores, got {s.dtype}")
        return s.astype(np.int64)

    def topk_tokens(self, cls_scores, k):
        s = self._scores(cls_scores, 2, "topk_tokens")
        batch, n = s.shape
        if not 1 <= k <= n:
            raise ValueError(f"topk_select: k must be in [1, {n}], got {k}")
        out = self._run(lower.topk(self.config, batch, 1, n, 0, k, 0), {"scores": s})
        return out.outputs["selected"].astype(np.int64).reshape(batch, k)

    def topk_connections(self, scores, k, has_cls=True):
        s = self._scores(scores, 3, "topk_connections")
        batch, length, _ = s.shape
        if s.shape[1] != s.shape[2]:
            raise ValueError(f"attn_sum must be [B, T, T], got {s.shape}")
        r = int(has_cls)
        if not 1 <= k <= length - r:
            raise ValueError(f"topk_select: k must be in [1, {length - r}], got {k}")
        out = self._run(lower.topk(self.config, batch, length, length, r, k, r), {"scores": s})
        return out.outputs["selected"].astype(np.int64).reshape(batch, length - r, k + r)

    # ---- optimizer (host CPU: the ARM cores on the board, docs/engine.md)
    def adamw_step(self, master, m, v, grad_acc, grad_frac, batch, s):
        return optim.adamw_step(master, m, v, grad_acc, grad_frac, batch, s)

    def sgdm_step(self, master, buf, grad_acc, grad_frac, batch, s, first=False):
        return optim.sgdm_step(master, buf, grad_acc, grad_frac, batch, s, first)
