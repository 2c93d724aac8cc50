"""The engine's command set: the single source of truth for encodings, register map and configuration.

One command-driven engine (docs/engine.md) executes every training kernel: a fetch unit reads 512-bit
commands from DDR and dispatches them to three modules joined by dependency-token queues (as in TVM's
VTA): LOAD (DMA DDR -> on-chip), COMPUTE (GEMM array, softmax, vector/SFU, top-k) and STORE (DMA
on-chip -> DDR). The host lowers each kernel call into a program of these commands
(`trilevel.accel.lower`); the HLS C++ engine (C-sim and Vitis) and the SystemVerilog engine decode the
same words. Everything a decoder needs is generated from the tables below: `c_header_text()` (HLS),
`sv_header_text()` (RTL) and `markdown_tables()` (docs/engine.md); tests check the three agree.

Command = 16 little-endian 32-bit words. Word 0 holds the opcode, the dependency flags and the
per-command flags; the other words hold the fields of `FIELDS` (each opcode documents which it reads,
docs/engine.md; unused fields must be 0). On-chip addresses and strides count elements of the
addressed memory (SPM: int16, ACC: 48-bit accumulators held as int64, IDX: uint16); DDR addresses
and strides count bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from enum import IntEnum

import numpy as np

WORDS = 16  # 32-bit words per command
COMMAND_BYTES = 4 * WORDS
ISA_VERSION = 2  # 2: TOPK compares int32-saturated scores


class Op(IntEnum):
    """Opcodes (word 0 bits 3:0). The module that executes each is MODULE_OF[op]."""

    FINISH = 0  # end of program: drain, raise done (and the interrupt)
    LOAD = 1  # DMA DDR -> SPM / ACC / IDX, 2-D, optional row gather, or zero fill
    STORE = 2  # DMA SPM / ACC / IDX / STAT -> DDR, 2-D, optional row scatter
    GEMM = 3  # systolic array: C = A B^T (+ bias + residual), requantize epilogue or ACC accumulate
    SOFTMAX = 4  # softmax units: rows forward (optionally masked, + ACC head-sum) or backward (SR)
    VEC = 5  # vector/SFU unit: LayerNorm fwd/bwd, GELU fwd/bwd, column sums/dots, connection masks
    TOPK = 6  # top-k unit: the k best of each row of ACC scores -> ascending indices in IDX


class Module(IntEnum):
    LOAD = 0
    COMPUTE = 1
    STORE = 2


MODULE_OF: dict[Op, Module] = {
    Op.FINISH: Module.COMPUTE,
    Op.LOAD: Module.LOAD,
    Op.STORE: Module.STORE,
    Op.GEMM: Module.COMPUTE,
    Op.SOFTMAX: Module.COMPUTE,
    Op.VEC: Module.COMPUTE,
    Op.TOPK: Module.COMPUTE,
}


class Mem(IntEnum):
    """On-chip memories (the `sub` field of LOAD/STORE)."""

    SPM = 0  # int16 scratchpad (activations, weights, probabilities, masks)
    ACC = 1  # 48-bit accumulators (weight/bias gradients, head-sum attention, LN row statistics)
    IDX = 2  # uint16 index lists (gather/scatter rows, connection lists, top-k results)
    STAT = 3  # statistic registers (STORE only): max |accumulator| per slot, in output units


# DDR bytes per element of each memory.
DDR_ELEM_BYTES: dict[Mem, int] = {Mem.SPM: 2, Mem.ACC: 8, Mem.IDX: 2, Mem.STAT: 8}


class Vec(IntEnum):
    """Vector/SFU sub-operations (the `sub` field of VEC)."""

    LN_FWD = 0  # LayerNorm forward rows -> Y, XHAT and the row statistics (rsqrt | k << 32) in ACC
    LN_BWD = 1  # LayerNorm backward rows (3 SR points: hash32(seed, 0..2)) + optional residual
    GELU_FWD = 2  # y = RNE(x * PHI_LUT[cell(x)])
    GELU_BWD = 3  # dx = SR(dy * DGELU_LUT[cell(x)])
    COLSUM = 4  # ACC[f + j] += sum_i A(i, j)            (bias / beta gradients)
    COLDOT = 5  # ACC[f + j] += sum_i A(i, j) * B(i, j)  (gamma gradient)
    MASK = 6  # SPM 0/1 connection mask rows from IDX connection lists


class SoftmaxSub(IntEnum):
    FWD = 0
    BWD = 1


# ---------------------------------------------------------------------------------------------- word 0
# name -> (lsb, width). Flags a command does not use must be 0.
CONTROL: dict[str, tuple[int, int]] = {
    "op": (0, 4),
    "pop_prev": (4, 1),  # wait for a token from the previous module (LOAD <- COMPUTE <- STORE order)
    "pop_next": (5, 1),  # wait for a token from the next module
    "push_prev": (6, 1),  # send a token to the previous module (a buffer it may overwrite is free)
    "push_next": (7, 1),  # send a token to the next module (data it waits for is ready)
    "sub": (8, 4),  # Mem (LOAD/STORE), SoftmaxSub (SOFTMAX), Vec (VEC)
    "sr": (12, 1),  # rounding: 0 = RNE, 1 = SR (stochastic, hash32 source)
    "acc": (13, 1),  # GEMM: accumulate into ACC instead of requantizing; SOFTMAX fwd: add P into ACC
    "ta": (14, 1),  # GEMM: A is read transposed;  LOAD/STORE: gather/scatter rows by IDX
    "tb": (15, 1),  # GEMM: B is read transposed;  LOAD: zero fill (no DDR read)
    "bias": (16, 1),  # GEMM: add the row vector D (aligned by shift2); VEC LN_BWD: add residual D
    "res": (17, 1),  # GEMM: add the matrix E aligned by shift3 (residual)
    "mask": (18, 1),  # GEMM: statistic only over E != 0;  SOFTMAX fwd: entries with E == 0 are excluded
    "stat": (19, 1),  # update statistic slot(s) starting at `slot`
    "slot": (20, 6),  # statistic slot (LN_BWD uses slot, slot + 1, slot + 2)
}
CONTROL_USED_BITS = 26  # bits 31:26 of word 0 are reserved and must be 0

# ------------------------------------------------------------------------------------ words 1 .. 15
# name -> (word, lsb, width, signed)
FIELDS: dict[str, tuple[int, int, int, bool]] = {
    "m": (1, 0, 16, False),  # rows of the output / rows moved
    "n": (1, 16, 16, False),  # columns of the output / elements per row moved
    "k": (2, 0, 16, False),  # reduction length (GEMM), kept count (TOPK), list length (VEC MASK)
    "shift": (2, 16, 8, True),  # requantize shift of the main output (acc frac - out frac)
    "shift2": (2, 24, 8, True),  # secondary shift (bias alignment, LN beta alignment, LN_BWD t shift)
    "seed": (3, 0, 32, False),  # SR seed (LN_BWD: its layer seed; points use hash32(seed, i))
    "index_base": (4, 0, 32, False),  # SR index of element (0, 0)  /  LOAD/STORE: DDR byte address
    "index_stride": (5, 0, 32, False),  # SR index step per row     /  LOAD/STORE: DDR row stride (bytes)
    "a_addr": (6, 0, 24, False),  # operand A (LOAD/STORE: the on-chip side)
    "a_stride": (7, 0, 16, False),
    "b_stride": (7, 16, 16, False),
    "b_addr": (8, 0, 24, False),  # operand B (LOAD/STORE with ta: the IDX list of row indices)
    "c_addr": (9, 0, 24, False),  # output C
    "c_stride": (10, 0, 16, False),
    "d_stride": (10, 16, 16, False),
    "d_addr": (11, 0, 24, False),  # operand D (bias vector, residual of LN_BWD, ACC head-sum of SOFTMAX)
    "e_addr": (12, 0, 24, False),  # operand E (residual / mask matrix, XHAT of LayerNorm)
    "e_stride": (13, 0, 16, False),
    "shift3": (13, 16, 8, True),  # residual alignment (GEMM), LN_BWD dx shift before the row's k
    "shift4": (13, 24, 8, True),  # LN_BWD residual alignment before the row's k; LN_FWD frac_x
    "f_addr": (14, 0, 24, False),  # ACC operand (COLSUM/COLDOT target, LayerNorm row statistics)
    "imm": (15, 0, 32, True),  # GEMM: score multiplier; GELU: frac of x; TOPK/MASK: leading dense count
}

# ------------------------------------------------------------------------------------ status, errors
class Err(IntEnum):
    """ERROR register codes. The first error stops the engine (status error + done + interrupt);
    ERR_PC holds the index of the command that raised it."""

    NONE = 0
    BAD_OPCODE = 1
    RESERVED_BITS = 2
    BAD_DIMS = 3
    SPM_RANGE = 4
    DDR_RANGE = 5
    ACC_RANGE = 6
    BAD_SHIFT = 7
    DEP_UNDERFLOW = 8


ERR_CAUSE: dict[Err, str] = {
    Err.NONE: "no error",
    Err.BAD_OPCODE: "opcode outside Op",
    Err.RESERVED_BITS: "word 0 bits 31:26 set, a sub-operation outside its enum, or exclusive flags together",
    Err.BAD_DIMS: "m, n or k is 0 or above a unit's static maximum",
    Err.SPM_RANGE: "an on-chip access (SPM, ACC, IDX, STAT) outside its memory, or an index list entry >= n",
    Err.DDR_RANGE: "a DMA address outside the DDR window, or an AXI error response",
    Err.ACC_RANGE: "an accumulator left the signed 48-bit range",
    Err.BAD_SHIFT: ("shift out of range: requantize -16..62, align (bias, residual, beta) -47..62, "
                    "softmax frac 0..15"),
    Err.DEP_UNDERFLOW: "a dependency pop that no remaining command can satisfy (would deadlock)",
}


# AXI-Lite register map: name -> (byte offset, meaning). It is exactly the map Vitis HLS generates for the
# HLS engine's top function (bitstreams/hls_interface.py derives it from hls/engine and a test compares),
#   uint32_t trilevel_engine(ap_uint<128>* gmem, uint32_t cmd_addr, uint32_t cmd_count, uint32_t* err_pc,
#                            uint64_t counters[N_COUNTERS])   (ap_ctrl_hs, s_axilite bundle "control")
# and the RTL engine implements the same map, so one driver runs either IP.
REGISTERS: dict[str, tuple[int, str]] = {
    "CTRL": (0x00, "bit 0 ap_start, bit 1 ap_done (clear on read), bit 2 ap_idle, bit 3 ap_ready"),
    "GIE": (0x04, "bit 0 global interrupt enable"),
    "IER": (0x08, "bit 0 interrupt on ap_done"),
    "ISR": (0x0C, "bit 0 ap_done interrupt pending (write 1 to toggle = clear)"),
    "ERROR": (0x10, "ap_return: Err code of the last run (0 = ok)"),
    "DDR_BASE_LO": (0x18, "m_axi offset of gmem: every DDR address in a command is relative to it"),
    "DDR_BASE_HI": (0x1C, "upper 32 bits of DDR_BASE"),
    "CMD_ADDR": (0x24, "byte offset of the program from DDR_BASE (64-byte aligned)"),
    "CMD_COUNT": (0x2C, "number of commands in the program"),
    "ERR_PC": (0x34, "index of the command that raised ERROR"),
    "ERR_PC_CTRL": (0x38, "bit 0 ERR_PC valid"),
    "COUNTERS": (0x80, "N_COUNTERS uint64 counters in COUNTERS order, low word first (cleared by ap_start)"),
}
COUNTERS: tuple[str, ...] = ("CYCLES", "LOAD_BUSY", "GEMM_BUSY", "SOFTMAX_BUSY", "VEC_BUSY", "TOPK_BUSY",
                             "STORE_BUSY", "DMA_STALL", "DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")
COUNTER_MEANING: dict[str, str] = {
    "CYCLES": "cycles from ap_start to ap_done",
    "LOAD_BUSY": "cycles the LOAD module moved data",
    "GEMM_BUSY": "cycles the GEMM array was fed (one vector pair per cycle)",
    "SOFTMAX_BUSY": "cycles the softmax units were busy",
    "VEC_BUSY": "cycles the vector/SFU unit was busy",
    "TOPK_BUSY": "cycles the top-k unit was busy",
    "STORE_BUSY": "cycles the STORE module moved data",
    "DMA_STALL": "cycles COMPUTE waited on a LOAD token (DMA-bound time)",
    "DDR_RD_BYTES": "bytes read from DDR (commands included)",
    "DDR_WR_BYTES": "bytes written to DDR",
    "MACS": "useful multiply-accumulates of the GEMM array",
    "RETIRED": "commands retired",
}
N_COUNTERS = len(COUNTERS)
REGISTER_SPAN = 0x100
CTRL_START, CTRL_DONE, CTRL_IDLE, CTRL_READY = 1, 2, 4, 8
# The HLS top function and the register each of its arguments becomes (checked by
# tests/test_bitstream_consistency.py with the Vitis layout rule of bitstreams/hls_interface.py).
HLS_TOP = "trilevel_engine"
HLS_ARGS: dict[str, str] = {"ap_return": "ERROR", "gmem": "DDR_BASE_LO", "cmd_addr": "CMD_ADDR",
                            "cmd_count": "CMD_COUNT", "err_pc": "ERR_PC", "counters": "COUNTERS"}


# Block-design identity (bitstreams/zcu102_bd.tcl): the engine IP, RTL-packaged or from Vitis HLS (same ports
# and register map), one instance whose AXI-Lite window the driver finds in the overlay by this name.
IP_VENDOR, IP_LIBRARY, IP_VERSION = "trilevel.org", "trilevel", "1.0"
IP_NAMES: dict[str, str] = {"rtl": "trilevel_engine_rtl", "hls": "trilevel_engine"}
INSTANCE = "trilevel_engine_0"
CTRL_BASE = 0xA000_0000
CTRL_RANGE = 0x10000


# ----------------------------------------------------------------------------------- configuration
@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Static sizes of one engine build (template/generics: the HLS `TL_*` macros, the RTL parameters)."""

    name: str
    array_rows: int  # GEMM array: PE rows (outputs i per tile) ...
    array_cols: int  # ... and PE columns (outputs j per tile); one DSP48E2 per PE
    spm_elems: int  # int16 scratchpad
    acc_elems: int  # 48-bit accumulators
    idx_elems: int  # uint16 index memory
    stat_slots: int
    vec_lanes: int  # vector/SFU elements per cycle
    softmax_units: int  # softmax rows in flight
    max_row: int  # longest softmax / top-k / MASK row (tokens)
    max_dim: int  # longest LayerNorm row (the embedding dimension)
    axi_bytes: int  # AXI4 data width in bytes (HP port)
    clock_mhz: float
    queue_depth: int  # command queue depth per module, and dependency-token queue depth
    epilogue_lanes: int  # GEMM requantizing epilogue lanes: a row drains in array_cols / this cycles (RTL)
    # rows of one SPM region per lane bank (RTL engine_mem): a power of two >= 2048; a region is the BRAMs of
    # one bank and row range (2048: one RAMB36 as 2K x 18; 4096: two as 4K x 9), serving 2 accesses a cycle
    spm_region_rows: int = 2048

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "name" and not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"EngineConfig.{f.name} must be positive, got {v!r}")
        if self.spm_elems >= 1 << 24 or self.acc_elems >= 1 << 24 or self.idx_elems >= 1 << 24:
            raise ValueError("on-chip memories are addressed with 24 bits")
        if self.stat_slots > 64:
            raise ValueError("at most 64 statistic slots (6-bit slot field)")
        if self.spm_region_rows < 2048 or self.spm_region_rows & (self.spm_region_rows - 1):
            raise ValueError("EngineConfig.spm_region_rows must be a power of two >= 2048")
        halves = self.array_cols // self.epilogue_lanes
        if self.array_cols % self.epilogue_lanes or halves & (halves - 1):
            raise ValueError("EngineConfig.epilogue_lanes must divide array_cols by a power of two")


# The ZCU102 build (docs/engine.md resource budget) and the small build CI simulates in RTL.
PRODUCTION = EngineConfig("zcu102", array_rows=32, array_cols=32, spm_elems=786_432, acc_elems=65_536,
                          idx_elems=16_384, stat_slots=64, vec_lanes=16, softmax_units=4, max_row=256,
                          max_dim=1024, axi_bytes=16, clock_mhz=150.0, queue_depth=64, epilogue_lanes=16,
                          spm_region_rows=4096)
CI_SMALL = EngineConfig("ci", array_rows=4, array_cols=4, spm_elems=65_536, acc_elems=16_384,
                        idx_elems=4_096, stat_slots=64, vec_lanes=4, softmax_units=1, max_row=256,
                        max_dim=256, axi_bytes=16, clock_mhz=150.0, queue_depth=16, epilogue_lanes=2)
# The default of the RTL simulation backend (`trilevel train --backend rtlsim`): CI_SMALL with an 8 x 8
# array, 8 vector lanes and a whole-row epilogue. The demo's training is GEMM-bound on 4 x 4; the 8 x 8 build
# simulates a training step in ~2.4x less CPU time (2.9x fewer cycles, each ~1.2x dearer; docs/rtl.md
# "The harness").
CI_RTLSIM = EngineConfig("ci8", array_rows=8, array_cols=8, spm_elems=65_536, acc_elems=16_384,
                         idx_elems=4_096, stat_slots=64, vec_lanes=8, softmax_units=1, max_row=256,
                         max_dim=256, axi_bytes=16, clock_mhz=150.0, queue_depth=16, epilogue_lanes=8)
CONFIGS: dict[str, EngineConfig] = {c.name: c for c in (PRODUCTION, CI_SMALL, CI_RTLSIM)}


# --------------------------------------------------------------------------------------- encoding
class EncodeError(ValueError):
    """A command field is unknown or out of range."""


def _check(name: str, value: int, width: int, signed: bool) -> int:
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise EncodeError(f"field {name}={value!r} outside [{lo}, {hi}]")
    return int(value) & ((1 << width) - 1)


def encode(op: Op, **fields: int) -> np.ndarray:
    """One command as 16 uint32 words. Keyword names are CONTROL flags and FIELDS; absent ones are 0."""
    words = [0] * WORDS
    words[0] = int(Op(op))
    for name, value in fields.items():
        if name in CONTROL and name != "op":
            lsb, width = CONTROL[name]
            words[0] |= _check(name, value, width, False) << lsb
        elif name in FIELDS:
            word, lsb, width, signed = FIELDS[name]
            words[word] |= _check(name, value, width, signed) << lsb
        else:
            raise EncodeError(f"unknown command field {name!r}")
    return np.array(words, dtype=np.uint32)


def _signed(v: int, width: int) -> int:
    return v - (1 << width) if v >> (width - 1) else v


def decode(words: Iterable[int]) -> dict[str, int]:
    """Fields of one command (all of them, including zeros); raises EncodeError on a bad word count."""
    w = [int(x) & 0xFFFFFFFF for x in words]
    if len(w) != WORDS:
        raise EncodeError(f"a command has {WORDS} words, got {len(w)}")
    out = {name: (w[0] >> lsb) & ((1 << width) - 1) for name, (lsb, width) in CONTROL.items()}
    out["reserved"] = w[0] >> CONTROL_USED_BITS
    for name, (word, lsb, width, signed) in FIELDS.items():
        v = (w[word] >> lsb) & ((1 << width) - 1)
        out[name] = _signed(v, width) if signed else v
    return out


def program_words(commands: Iterable[np.ndarray]) -> np.ndarray:
    """Concatenate commands into the uint32 array the engine fetches (16 words per command)."""
    cmds = [np.asarray(c, dtype=np.uint32) for c in commands]
    return np.concatenate(cmds) if cmds else np.zeros(0, dtype=np.uint32)


# ---------------------------------------------------------------------------------- disassembler
# Fields worth printing per opcode (zeros elsewhere are implied).
_SHOWN: dict[Op, tuple[str, ...]] = {
    Op.FINISH: (),
    Op.LOAD: ("m", "n", "index_base", "index_stride", "a_addr", "a_stride", "b_addr"),
    Op.STORE: ("m", "n", "index_base", "index_stride", "a_addr", "a_stride", "b_addr"),
    Op.GEMM: ("m", "n", "k", "a_addr", "a_stride", "b_addr", "b_stride", "c_addr", "c_stride", "d_addr",
              "e_addr", "e_stride", "f_addr", "shift", "shift2", "shift3", "imm", "seed", "index_base",
              "index_stride"),
    Op.SOFTMAX: ("m", "n", "a_addr", "a_stride", "b_addr", "b_stride", "c_addr", "c_stride", "d_addr",
                 "d_stride", "e_addr", "e_stride", "shift", "seed", "index_base", "index_stride"),
    Op.VEC: ("m", "n", "k", "a_addr", "a_stride", "b_addr", "b_stride", "c_addr", "c_stride", "d_addr",
             "d_stride", "e_addr", "e_stride", "f_addr", "shift", "shift2", "shift3", "shift4", "imm", "seed",
             "index_base", "index_stride"),
    Op.TOPK: ("m", "n", "k", "a_addr", "a_stride", "c_addr", "c_stride", "imm"),
}
_RENAMED = {"index_base": "ddr", "index_stride": "ddr_stride"}
_FLAGS = ("sr", "acc", "ta", "tb", "bias", "res", "mask")
_DEPS = (("pop_prev", "<p"), ("pop_next", "<n"), ("push_prev", ">p"), ("push_next", ">n"))


def disassemble_one(words: Iterable[int]) -> str:
    """One command as readable text, e.g. `GEMM m=17 n=64 k=64 a=0 ... +bias sr slot3 [<p >n]`."""
    f = decode(words)
    try:
        op = Op(f["op"])
    except ValueError:
        return f"??? opcode {f['op']}"
    name = op.name
    if op in (Op.LOAD, Op.STORE):
        name += "." + (Mem(f["sub"]).name if f["sub"] in iter(Mem) else f"mem{f['sub']}")
    elif op == Op.VEC:
        name += "." + (Vec(f["sub"]).name if f["sub"] in iter(Vec) else f"sub{f['sub']}")
    elif op == Op.SOFTMAX:
        name += "." + (SoftmaxSub(f["sub"]).name if f["sub"] in iter(SoftmaxSub) else f"sub{f['sub']}")
    dma = op in (Op.LOAD, Op.STORE)
    parts = [name]
    for key in _SHOWN[op]:
        if f[key] or key in ("m", "n"):
            label = _RENAMED[key] if dma and key in _RENAMED else key
            value = f[key]
            parts.append(f"{label}={value:#x}" if label == "ddr" else f"{label}={value}")
    flags = [fl for fl in _FLAGS if f[fl]]
    if dma:
        flags = [{"ta": "gather" if op == Op.LOAD else "scatter", "tb": "zero"}.get(fl, fl) for fl in flags]
    parts += ["+" + fl for fl in flags]
    if f["stat"]:
        parts.append(f"stat{f['slot']}")
    deps = [sym for key, sym in _DEPS if f[key]]
    if deps:
        parts.append("[" + " ".join(deps) + "]")
    if f["reserved"]:
        parts.append(f"!reserved={f['reserved']:#x}")
    return " ".join(parts)


def disassemble(program: np.ndarray) -> list[str]:
    """A program (uint32 words) as one line per command, numbered."""
    words = np.asarray(program, dtype=np.uint32).reshape(-1, WORDS)
    return [f"{i:5d}  {disassemble_one(w)}" for i, w in enumerate(words)]


# ------------------------------------------------------------------------------------- generators
def _c_name(name: str) -> str:
    return name.upper()


def c_header_text(config: EngineConfig = PRODUCTION) -> str:
    """hls/engine/tl_isa.h: opcodes, flags, field positions, errors, registers and the build sizes."""
    lines = ["// Generated by trilevel.accel.isa (python -m trilevel.accel.isa --header c); do not edit.",
             "#ifndef TL_ISA_H", "#define TL_ISA_H", "",
             f"#define TL_ISA_VERSION {ISA_VERSION}", f"#define TL_CMD_WORDS {WORDS}", ""]
    lines += [f"#define TL_OP_{op.name} {int(op)}" for op in Op] + [""]
    lines += [f"#define TL_MEM_{m.name} {int(m)}" for m in Mem] + [""]
    lines += [f"#define TL_VEC_{v.name} {int(v)}" for v in Vec] + [""]
    lines += [f"#define TL_SOFTMAX_{s.name} {int(s)}" for s in SoftmaxSub] + [""]
    for name, (lsb, width) in CONTROL.items():
        lines.append(f"#define TL_C_{_c_name(name)}_LSB {lsb}")
        lines.append(f"#define TL_C_{_c_name(name)}_W {width}")
    lines += [f"#define TL_C_USED_BITS {CONTROL_USED_BITS}", ""]
    for name, (word, lsb, width, signed) in FIELDS.items():
        n = _c_name(name)
        lines += [f"#define TL_F_{n}_WORD {word}", f"#define TL_F_{n}_LSB {lsb}",
                  f"#define TL_F_{n}_W {width}", f"#define TL_F_{n}_SIGNED {int(signed)}"]
    lines.append("")
    lines += [f"#define TL_ERR_{e.name} {int(e)}" for e in Err] + [""]
    lines += [f"#define TL_REG_{name} 0x{off:02X}" for name, (off, _) in REGISTERS.items()] + [""]
    lines += [f"#define TL_N_COUNTERS {N_COUNTERS}"]
    lines += [f"#define TL_CNT_{name} {i}" for i, name in enumerate(COUNTERS)] + [""]
    sizes = {"ARRAY_ROWS": config.array_rows, "ARRAY_COLS": config.array_cols, "SPM_ELEMS": config.spm_elems,
             "ACC_ELEMS": config.acc_elems, "IDX_ELEMS": config.idx_elems, "STAT_SLOTS": config.stat_slots,
             "VEC_LANES": config.vec_lanes, "SOFTMAX_UNITS": config.softmax_units, "MAX_ROW": config.max_row,
             "EPILOGUE_LANES": config.epilogue_lanes,
             "MAX_DIM": config.max_dim,
             "AXI_BYTES": config.axi_bytes, "QUEUE_DEPTH": config.queue_depth}
    lines += [f"#ifndef TL_{k}\n#define TL_{k} {v}\n#endif" for k, v in sizes.items()]
    lines += ["", "#endif", ""]
    return "\n".join(lines)


def sv_header_text(config: EngineConfig = CI_SMALL) -> str:
    """hls/rtl/engine/tl_isa.svh: the same constants as SystemVerilog localparams (for a module body)."""
    lines = ["// Generated by trilevel.accel.isa (python -m trilevel.accel.isa --header sv); do not edit.",
             "// Include inside a module body: localparams only.",
             f"localparam int TL_ISA_VERSION = {ISA_VERSION};", f"localparam int TL_CMD_WORDS = {WORDS};"]
    lines += [f"localparam logic [3:0] TL_OP_{op.name} = 4'd{int(op)};" for op in Op]
    lines += [f"localparam logic [3:0] TL_MEM_{m.name} = 4'd{int(m)};" for m in Mem]
    lines += [f"localparam logic [3:0] TL_VEC_{v.name} = 4'd{int(v)};" for v in Vec]
    lines += [f"localparam logic [3:0] TL_SOFTMAX_{s.name} = 4'd{int(s)};" for s in SoftmaxSub]
    for name, (lsb, width) in CONTROL.items():
        lines.append(f"localparam int TL_C_{_c_name(name)}_LSB = {lsb};")
        lines.append(f"localparam int TL_C_{_c_name(name)}_W = {width};")
    lines.append(f"localparam int TL_C_USED_BITS = {CONTROL_USED_BITS};")
    for name, (word, lsb, width, signed) in FIELDS.items():
        n = _c_name(name)
        lines.append(f"localparam int TL_F_{n}_LSB = {32 * word + lsb};  // word {word} bit {lsb}")
        lines.append(f"localparam int TL_F_{n}_W = {width};  // {'signed' if signed else 'unsigned'}")
    lines += [f"localparam logic [7:0] TL_ERR_{e.name} = 8'd{int(e)};" for e in Err]
    lines += [f"localparam logic [7:0] TL_REG_{name} = 8'h{off:02X};" for name, (off, _) in REGISTERS.items()]
    lines.append(f"localparam int TL_N_COUNTERS = {N_COUNTERS};")
    lines += [f"localparam int TL_CNT_{name} = {i};" for i, name in enumerate(COUNTERS)]
    lines.append("")
    return "\n".join(lines)


def markdown_tables() -> str:
    """The encoding and the register map as Markdown (docs/engine.md embeds this text)."""
    rows = ["| word 0 bits | field | meaning |", "|---|---|---|"]
    notes = {"op": "opcode (Op)", "pop_prev": "dependency: wait for a token from the previous module",
             "pop_next": "dependency: wait for a token from the next module",
             "push_prev": "dependency: signal the previous module",
             "push_next": "dependency: signal the next module",
             "sub": "memory (LOAD/STORE), sub-operation (SOFTMAX, VEC)",
             "sr": "stochastic rounding (else RNE)",
             "acc": "accumulate into ACC", "ta": "A transposed / DMA gather-scatter",
             "tb": "B transposed / LOAD zero fill", "bias": "add bias row (GEMM) / residual (LN_BWD)",
             "res": "add residual matrix E", "mask": "mask E (GEMM statistic, SOFTMAX fwd)",
             "stat": "update statistic slot", "slot": "statistic slot"}
    for name, (lsb, width) in CONTROL.items():
        bits = f"{lsb}" if width == 1 else f"{lsb + width - 1}:{lsb}"
        rows.append(f"| {bits} | `{name}` | {notes[name]} |")
    rows.append(f"| 31:{CONTROL_USED_BITS} | reserved | must be 0 (else error RESERVED_BITS) |")
    rows += ["", "| field | word | bits | signed |", "|---|---|---|---|"]
    for name, (word, lsb, width, signed) in FIELDS.items():
        rows.append(f"| `{name}` | {word} | {lsb + width - 1}:{lsb} | {'yes' if signed else 'no'} |")
    rows += ["", "| register | offset | meaning |", "|---|---|---|"]
    for name, (off, meaning) in REGISTERS.items():
        rows.append(f"| `{name}` | 0x{off:02X} | {meaning} |")
    rows += ["", "| counter | index | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | {i} | {COUNTER_MEANING[name]} |" for i, name in enumerate(COUNTERS)]
    rows += ["", "| error | code | cause |", "|---|---|---|"]
    for e in Err:
        rows.append(f"| `{e.name}` | {int(e)} | {ERR_CAUSE[e]} |")
    return "\n".join(rows) + "\n"


def describe_config(config: EngineConfig) -> Mapping[str, object]:
    return dataclasses.asdict(config)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m trilevel.accel.isa", description="print a generated header")
    ap.add_argument("--header", choices=("c", "sv", "md"), required=True)
    ap.add_argument("--config", choices=sorted(CONFIGS), default=None)
    args = ap.parse_args(argv)
    if args.header == "c":
        text = c_header_text(CONFIGS[args.config or PRODUCTION.name])
    elif args.header == "sv":
        text = sv_header_text(CONFIGS[args.config or CI_SMALL.name])
    else:
        text = markdown_tables()
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
