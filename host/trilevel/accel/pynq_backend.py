"""The `pynq` backend: the HLS kernel IPs of the ZCU102 overlay, driven through the PYNQ framework.

    from trilevel.accel import get_backend
    acc = get_backend("pynq", bitfile="build/bitstream/trilevel.bit")   # on the board (PYNQ 3.x / 4.x)

Each kernel IP gets an `HlsKernel` driver (a `pynq.DefaultIP` bound to the IP's VLNV). A call
copies the operands into `pynq.allocate` buffers (physically contiguous DDR) and flushes them
(`sync_to_device`), writes the buffers' physical addresses and the scalars into the IP's AXI-Lite
registers, sets ap_start, polls ap_done (bounded by a timeout that names the kernel and decodes its
status registers), invalidates the outputs (`sync_from_device`) and reads them back. Results equal
the `reference` backend bit for bit (the IPs are the same C++ as the `csim` backend).

Everything the drivers assume about the hardware is data in this module and is checked against the
sources by tests/test_bitstream_consistency.py:
* `KERNELS[k].registers`: the AXI-Lite register map of HLS top function k, derived from its C
  signature and INTERFACE pragmas by the rule in bitstreams/hls_interface.py (Vitis HLS 2023.x);
* `KERNELS[k].base_address`, `VLNV`: the address map and IP identity of bitstreams/zcu102_bd.tcl.
On the board each driver also checks its map against the register offsets pynq reads from the .hwh.

Kernels without a fabric IP run on the ARM cores through `trilevel.intref`: the final LayerNorm
(`layernorm_fwd/bwd`, once per image, < 0.1% of the MACs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trilevel.accel.interface import Accelerator, BackendError

# The kernels' operand layouts and checks, shared with the csim backend: both hand the same C++
# kernels identical bytes.
from trilevel.accel.kernel_args import (
    ATTN_PARAMS,
    MLP_PARAMS,
    adamw_scalars,
    attn_fwd_outputs,
    attn_fwd_saved,
    attn_param_shapes,
    check_heads,
    check_optimizer_args,
    conn_lists,
    mlp_fwd_outputs,
    mlp_fwd_saved,
    mlp_param_shapes,
    named_stats,
    saved_attn_layout,
    saved_ln_inputs,
    scal_array,
    sgdm_scalars,
    topk_args,
)
from trilevel.intref import blocks, layers
from trilevel.intref.fixed import QTensor

try:  # pynq is installed with the project; on the board it drives the hardware.
    from pynq import DefaultIP
except ImportError as err:  # pragma: no cover - exercised only without pynq
    raise BackendError(
        f"pynq backend: the pynq package is not importable ({err}); pip install pynq==4.0.0"
    ) from None

# ---------------------------------------------------------------------------------------- hardware data

# IP identity of the HLS exports (hls/tcl/common.tcl: export_design -vendor -library -version).
IP_VENDOR, IP_LIBRARY, IP_VERSION = "trilevel.org", "trilevel", "1.0"
# AXI-Lite windows of bitstreams/zcu102_bd.tcl: kernel i at CTRL_BASE + i * CTRL_STRIDE.
CTRL_BASE, CTRL_STRIDE, CTRL_RANGE = 0xA000_0000, 0x1_0000, 0x1_0000

# Vitis HLS ap_ctrl_hs block (identical in every kernel).
AP_CTRL, GIE, IER, ISR = 0x00, 0x04, 0x08, 0x0C
AP_START, AP_DONE, AP_IDLE, AP_READY = 0x1, 0x2, 0x4, 0x8
_CTRL_BITS = {AP_START: "start", AP_DONE: "done", AP_IDLE: "idle", AP_READY: "ready", 0x80: "auto_restart"}

# Kernel status (ap_return) codes, hls/include/trilevel_kernels.h.
TL_OK, TL_BAD_DIMS, TL_ACC_RANGE = 0, 1, 2


@dataclass(frozen=True)
class Reg:
    """One item of a kernel's AXI-Lite map."""

    name: str  # the C argument (or "ap_return")
    offset: int  # byte offset in the kernel's AXI-Lite window
    bits: int  # data bits: 64 for a DDR address, the element width for an array
    signed: bool
    # "return" (ap_return, read only) | "scalar" | "output" (scalar written by the kernel, read only)
    # | "pointer" (m_axi DDR address) | "array" (a memory inside the AXI-Lite window)
    kind: str
    count: int = 1  # elements of an array
    is_float: bool = False  # IEEE float data (written as its bit pattern)

    def as_tuple(self) -> tuple:
        return (self.name, self.offset, self.bits, self.signed, self.kind, self.count, self.is_float)


@dataclass(frozen=True)
class KernelSpec:
    name: str  # HLS top function
    index: int  # position in the block design (address window, interrupt bit)
    registers: tuple[Reg, ...]

    @property
    def vlnv(self) -> str:
        return f"{IP_VENDOR}:{IP_LIBRARY}:{self.name}:{IP_VERSION}"

    @property
    def instance(self) -> str:
        return f"{self.name}_0"

    @property
    def base_address(self) -> int:
        return CTRL_BASE + self.index * CTRL_STRIDE

    def reg(self, name: str) -> Reg:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"{self.name} has no register {name!r}")


def _regs(*items: tuple) -> tuple[Reg, ...]:
    return tuple(Reg(*item) for item in items)


_P, _S, _O, _A, _R = "pointer", "scalar", "output", "array", "return"

# Block-design order (bitstreams/zcu102_bd.tcl, variable kernels).
KERNEL_ORDER = (
    "linear_fwd",
    "linear_bwd",
    "attn_fwd",
    "attn_bwd",
    "mlp_fwd",
    "mlp_bwd",
    "topk_prune",
    "optimizer_step",
)

# Register maps (bitstreams/hls_interface.py prints them from hls/src; the consistency test compares).
_REGISTERS: dict[str, tuple[Reg, ...]] = {
    "linear_fwd": _regs(
        ("ap_return", 0x10, 32, True, _R),
        ("x", 0x18, 64, False, _P),
        ("w", 0x24, 64, False, _P),
        ("bias", 0x30, 64, False, _P),
        ("residual", 0x3C, 64, False, _P),
        ("y", 0x48, 64, False, _P),
        ("stats", 0x54, 64, False, _P),
        ("batch", 0x60, 16, False, _S),
        ("tokens", 0x68, 16, False, _S),
        ("din", 0x70, 16, False, _S),
        ("dout", 0x78, 16, False, _S),
        ("frac_x", 0x80, 8, True, _S),
        ("frac_w", 0x88, 8, True, _S),
        ("frac_b", 0x90, 8, True, _S),
        ("frac_res", 0x98, 8, True, _S),
        ("frac_y", 0xA0, 8, True, _S),
        ("has_bias", 0xA8, 1, False, _S),
        ("has_residual", 0xB0, 1, False, _S),
    ),
    "linear_bwd": _regs(
        ("ap_return", 0x10, 32, True, _R),
        ("dy", 0x18, 64, False, _P),
        ("x", 0x24, 64, False, _P),
        ("w", 0x30, 64, False, _P),
        ("dx", 0x3C, 64, False, _P),
        ("grad_w", 0x48, 64, False, _P),
        ("grad_b", 0x54, 64, False, _P),
        ("stats", 0x60, 64, False, _P),
        ("batch", 0x6C, 16, False, _S),
        ("tokens", 0x74, 16, False, _S),
        ("din", 0x7C, 16, False, _S),
        ("dout", 0x84, 16, False, _S),
        ("frac_dy", 0x8C, 8, True, _S),
        ("frac_w", 0x94, 8, True, _S),
        ("frac_dx", 0x9C, 8, True, _S),
        ("seed", 0xA4, 32, False, _S),
        ("has_bias", 0xAC, 1, False, _S),
        ("need_dx", 0xB4, 1, False, _S),
    ),
    "attn_fwd": _regs(
        ("ap_return", 0x10, 32, True, _R),
        ("x", 0x18, 64, False, _P),
        ("ln_w", 0x24, 64, False, _P),
        ("ln_b", 0x30, 64, False, _P),
        ("qkv_w", 0x3C, 64, False, _P),
        ("qkv_b", 0x48, 64, False, _P),
        ("proj_w", 0x54, 64, False, _P),
        ("proj_b", 0x60, 64, False, _P),
        ("conn", 0x6C, 64, False, _P),
        ("out", 0x78, 64, False, _P),
        ("z", 0x84, 64, False, _P),
        ("xhat", 0x90, 64, False, _P),
        ("rsqrt", 0x9C, 64, False, _P),
        ("kk", 0xA8, 64, False, _P),
        ("qkv", 0xB4, 64, False, _P),
        ("ctx", 0xC0, 64, False, _P),
        ("probs", 0xCC, 64, False, _P),
        ("attn_sum", 0xD8, 64, False, _P),
        ("batch", 0xE4, 16, False, _S),
        ("tokens", 0xEC, 16, False, _S),
        ("dim", 0xF4, 16, False, _S),
        ("heads", 0xFC, 16, False, _S),
        ("keep", 0x104, 16, False, _S),
        ("dense_rows", 0x10C, 16, False, _S),
        ("has_conn", 0x114, 1, False, _S),
        ("frac_x", 0x11C, 8, True, _S),
        ("stats", 0x140, 64, True, _A, 5),
        ("pfrac", 0x180, 8, True, _A, 6),
        ("fracs", 0x188, 8, True, _A, 5),
    ),
    "attn_bwd": _regs(
        ("ap_return", 0x10, 32, True, _R),
        ("dout", 0x18, 64, False, _P),
        ("z", 0x24, 64, False, _P),
        ("xhat", 0x30, 64, False, _P),
        ("rsqrt", 0x3C, 64, False, _P),
        ("kk", 0x48, 64, False, _P),
        ("qkv", 0x54, 64, False, _P),
        ("ctx", 0x60, 64, False, _P),
        ("probs", 0x6C, 64, False, _P),
        ("conn", 0x78, 64, False, _P),
        ("ln_w", 0x84, 64, False, _P),
        ("qkv_w", 0x90, 64, False, _P),
        ("proj_w", 0x9C, 64, False, _P),
        ("g_ln_w", 0xA8, 64, False, _P),
        ("g_ln_b", 0xB4, 64, False, _P),
        ("g_qkv_w", 0xC0, 64, False, _P),
        ("g_qkv_b", 0xCC, 64, False, _P),
        ("g_proj_w", 0xD8, 64, False, _P),
        ("g_proj_b", 0xE4, 64, False, _P),
        ("dctx", 0xF0, 64, False, _P),
        ("dqkv", 0xFC, 64, False, _P),
        ("dz", 0x108, 64, False, _P),
        ("dx", 0x114, 64, False, _P),
        ("batch", 0x120, 16, False, _S),
        ("tokens", 0x128, 16, False, _S),
        ("dim", 0x130, 16, False, _S),
        ("heads", 0x138, 16, False, _S),
        ("keep", 0x140, 16, False, _S),
        ("dense_rows", 0x148, 16, False, _S),
        ("has_conn", 0x150, 1, False, _S),
        ("frac_dout", 0x158, 8, True, _S),
        ("frac_x", 0x160, 8, True, _S),
        ("frac_qkv", 0x168, 8, True, _S),
        ("seed", 0x170, 32, False, _S),
        ("stats", 0x180, 64, True, _A, 8),
        ("pfrac", 0x1C0, 8, True, _A, 6),
        ("fracs", 0x1C8, 8, True, _A, 8),
    ),
    "mlp_fwd": _regs(
        ("ap_return", 0x10, 32, True, _R),
        ("x", 0x18, 64, False, _P),
        ("ln_w", 0x24, 64, False, _P),
        ("ln_b", 0x30, 64, False, _P),
        ("fc1_w", 0x3C, 64, False, _P),
        ("fc1_b", 0x48, 64, False, _P),
        ("fc2_w", 0x54, 64, False, _P),
        ("fc2_b", 0x60, 64, False, _P),
        ("out", 0x6C, 64, False, _P),
        ("z", 0x78, 64, False, _P),
        ("xhat", 0x84, 64, False, _P),
        ("rsqrt", 0x90, 64, False, _P),
        ("kk", 0x9C, 64, False, _P),
        ("h", 0xA8, 64, False, _P),
        ("a", 0xB4, 64, False, _P),
        ("batch", 0xC0, 16, False, _S),
        ("tokens", 0xC8, 16, False, _S),
        ("dim", 0xD0, 16, False, _S),
        ("hidden", 0xD8, 16, False, _S),
        ("frac_x", 0xE0, 8, True, _S),
        ("stats", 0x100, 64, True, _A, 4),
        ("pfrac", 0x120, 8, True, _A, 6),
        ("fracs", 0x128, 8, True, _A, 4),
    ),
    "mlp_bwd": _regs(
        ("ap_return", 0x10, 32, True, _R),
        ("dout", 0x18, 64, False, _P),
        ("z", 0x24, 64, False, _P),
        ("xhat", 0x30, 64, False, _P),
        ("rsqrt", 0x3C, 64, False, _P),
        ("kk", 0x48, 64, False, _P),
        ("h", 0x54, 64, False, _P),
        ("a", 0x60, 64, False, _P),
        ("ln_w", 0x6C, 64, False, _P),
        ("fc1_w", 0x78, 64, False, _P),
        ("fc2_w", 0x84, 64, False, _P),
        ("g_ln_w", 0x90, 64, False, _P),
        ("g_ln_b", 0x9C, 64, False, _P),
        ("g_fc1_w", 0xA8, 64, False, _P),
        ("g_fc1_b", 0xB4, 64, False, _P),
        ("g_fc2_w", 0xC0, 64, False, _P),
        ("g_fc2_b", 0xCC, 64, False, _P),
        ("da", 0xD8, 64, False, _P),
        ("dh", 0xE4, 64, False, _P),
        ("dz", 0xF0, 64, False, _P),
        ("dx", 0xFC, 64, False, _P),
        ("batch", 0x108, 16, False, _S),
        ("tokens", 0x110, 16, False, _S),
        ("dim", 0x118, 16, False, _S),
        ("hidden", 0x120, 16, False, _S),
        ("frac_dout", 0x128, 8, True, _S),
        ("frac_x", 0x130, 8, True, _S),
        ("frac_h", 0x138, 8, True, _S),
        ("seed", 0x140, 32, False, _S),
        ("stats", 0x180, 64, True, _A, 6),
        ("pfrac", 0x1C0, 8, True, _A, 6),
        ("fracs", 0x1C8, 8, True, _A, 6),
    ),
    "topk_prune": _regs(
        ("ap_return", 0x10, 32, True, _R),
        ("scores", 0x18, 64, False, _P),
        ("out", 0x24, 64, False, _P),
        ("batch", 0x30, 16, False, _S),
        ("n", 0x38, 16, False, _S),
        ("k", 0x40, 16, False, _S),
        ("connections", 0x48, 1, False, _S),
        ("has_cls", 0x50, 1, False, _S),
    ),
    "optimizer_step": _regs(
        ("ap_return", 0x10, 32, True, _R),
        ("master", 0x18, 64, False, _P),
        ("m", 0x24, 64, False, _P),
        ("v", 0x30, 64, False, _P),
        ("grad_acc", 0x3C, 64, False, _P),
        ("w", 0x48, 64, False, _P),
        ("frac_out", 0x54, 8, True, _O),
        ("n", 0x5C, 32, True, _S),
        ("grad_frac", 0x64, 8, True, _S),
        ("batch", 0x6C, 16, False, _S),
        ("mode", 0x74, 1, False, _S),
        ("first", 0x7C, 1, False, _S),
        ("scal", 0xA0, 32, True, _A, 8, True),
    ),
}

KERNELS: dict[str, KernelSpec] = {
    name: KernelSpec(name, KERNEL_ORDER.index(name), regs) for name, regs in _REGISTERS.items()
}
_BY_VLNV = {spec.vlnv: spec for spec in KERNELS.values()}

# ------------------------------------------------------------------------------------------------ errors


class PynqBackendError(BackendError):
    """The overlay or a kernel IP misbehaves; the message names the kernel."""


class MissingIPError(PynqBackendError):
    """The loaded overlay lacks a kernel IP the backend needs."""


class KernelTimeoutError(PynqBackendError):
    """A kernel did not raise ap_done in time."""


def decode_ctrl(value: int) -> str:
    """'0x4 (idle)' style rendering of the ap_ctrl register."""
    names = [name for bit, name in _CTRL_BITS.items() if value & bit]
    return f"{value:#x} ({', '.join(names) or 'busy'})"


# ----------------------------------------------------------------------------------------------- driver


def _as_words(reg: Reg, value: Any) -> list[int]:
    """The 32-bit words to write for `value` (an int, a buffer with a device address, or an array)."""
    if reg.kind == "pointer":
        address = int(getattr(value, "device_address", value) or 0)
        return [address & 0xFFFF_FFFF, address >> 32]
    if reg.is_float:
        values = np.asarray(value, dtype=np.float32).reshape(-1)
        if len(values) != reg.count:
            raise ValueError(f"{reg.name}: expected {reg.count} values, got {len(values)}")
        return [int(w) for w in values.view(np.uint32)]
    values = [int(v) for v in np.asarray(value).reshape(-1)] if reg.kind == "array" else [int(value)]
    if reg.kind == "array" and len(values) != reg.count:
        raise ValueError(f"{reg.name}: expected {reg.count} values, got {len(values)}")
    lo, hi = (-(1 << (reg.bits - 1)), (1 << (reg.bits - 1)) - 1) if reg.signed else (0, (1 << reg.bits) - 1)
    for v in values:
        if not lo <= v <= hi:
            raise ValueError(
                f"{reg.name}={v} does not fit the {reg.bits}-bit {'' if reg.signed else 'un'}signed register"
            )
    mask = (1 << reg.bits) - 1
    if reg.bits > 32:
        return [w for v in values for w in ((v & mask) & 0xFFFF_FFFF, (v & mask) >> 32)]
    width = 8 if reg.bits <= 8 else 16 if reg.bits <= 16 else 32
    per_word = 32 // width
    words = [0] * -(-len(values) // per_word)
    for i, v in enumerate(values):
        words[i // per_word] |= (v & mask) << (width * (i % per_word))
    return words


def _from_words(reg: Reg, words: list[int]) -> np.ndarray:
    """Decode an array (or a return value) read back as 32-bit words; sign-extends signed items."""
    if reg.is_float:
        return np.array(words[: reg.count], dtype=np.uint32).view(np.float32)
    if reg.bits > 32:
        raw = [words[2 * i] | (words[2 * i + 1] << 32) for i in range(reg.count)]
    else:
        width = 8 if reg.bits <= 8 else 16 if reg.bits <= 16 else 32
        per_word = 32 // width
        raw = [
            (words[i // per_word] >> (width * (i % per_word))) & ((1 << reg.bits) - 1)
            for i in range(reg.count)
        ]
    if reg.signed:
        raw = [v - (1 << reg.bits) if v >> (reg.bits - 1) & 1 else v for v in raw]
    return np.array(raw, dtype=np.int64)


class HlsKernel(DefaultIP):
    """Driver of one trilevel HLS kernel IP: program the registers, start, wait for ap_done."""

    bindto = [spec.vlnv for spec in KERNELS.values()]

    def __init__(self, description: dict[str, Any]) -> None:
        super().__init__(description)
        vlnv = description.get("type", "")
        if vlnv not in _BY_VLNV:
            raise PynqBackendError(f"no trilevel kernel has VLNV {vlnv!r}")
        self.spec = _BY_VLNV[vlnv]
        self.name = self.spec.name
        self._check_hwh_registers(description.get("registers") or {})

    def _check_hwh_registers(self, hwh: Mapping[str, Mapping[str, Any]]) -> None:
        """Compare the driver's register offsets with the ones pynq parsed from the .hwh.

        Vitis HLS names a 64-bit register's words `<arg>_1`, `<arg>_2` in the .hwh and may rename an
        argument that clashes with an RTL keyword (`in` -> `in_r`); registers found under none of these
        names are not compared, an offset that differs is an error.
        """
        problems = []
        for reg in self.spec.registers:
            entry = next((hwh[n] for n in (reg.name, f"{reg.name}_1", f"{reg.name}_r") if n in hwh), None)
            if entry is None or reg.kind == "array":
                continue
            found = int(entry.get("address_offset", -1))
            if found != reg.offset:
                problems.append(f"{reg.name} at {found:#x}, driver expects {reg.offset:#x}")
        if problems:
            raise PynqBackendError(
                f"{self.name}: the bitstream's register map differs from the driver ({'; '.join(problems)}); "
                "rebuild the bitstream from this checkout (make hls bitstream)"
            )

    def status(self) -> str:
        """The ap_ctrl block, decoded (reading clears a pending ap_done)."""
        ctrl, gie, ier, isr = (self.read(off) for off in (AP_CTRL, GIE, IER, ISR))
        return f"ctrl={decode_ctrl(ctrl)} gie={gie:#x} ier={ier:#x} isr={isr:#x}"

    def program(self, args: Mapping[str, Any]) -> None:
        """Write every argument register; `args` must name each scalar, pointer and input array."""
        expected = {r.name for r in self.spec.registers if r.kind not in ("return", "output")}
        unknown, missing = set(args) - expected, expected - set(args)
        if unknown or missing:
            raise ValueError(f"{self.name}: unknown arguments {sorted(unknown)}, missing {sorted(missing)}")
        for reg in self.spec.registers:
            if reg.kind in ("return", "output") or args[reg.name] is None and reg.kind == "array":
                continue  # read-only items; None marks an output array
            try:
                words = _as_words(reg, args[reg.name])
            except ValueError as e:
                raise ValueError(f"{self.name}: {e}") from None
            for i, word in enumerate(words):
                self.write(reg.offset + 4 * i, word)

    def read_array(self, name: str) -> np.ndarray:
        """Read an AXI-Lite array, output scalar or ap_return (as a 1-element array)."""
        reg = self.spec.reg(name)
        if reg.bits > 32:
            n_words = 2 * reg.count
        else:
            per_word = 1 if reg.is_float else 32 // (8 if reg.bits <= 8 else 16 if reg.bits <= 16 else 32)
            n_words = -(-reg.count // per_word)
        return _from_words(reg, [self.read(reg.offset + 4 * i) for i in range(n_words)])

    def start(self) -> None:
        ctrl = self.read(AP_CTRL)
        if not ctrl & AP_IDLE:
            raise PynqBackendError(
                f"{self.name}: not idle before start ({self.status()}); reload the overlay"
            )
        self.write(AP_CTRL, AP_START)

    def wait(self, timeout_s: float) -> None:
        """Poll ap_done; on timeout raise KernelTimeoutError with the decoded status registers."""
        deadline = time.monotonic() + timeout_s
        while True:
            ctrl = self.read(AP_CTRL)
            if ctrl & AP_DONE:
                return
            if time.monotonic() > deadline:
                gie, ier, isr = (self.read(off) for off in (GIE, IER, ISR))
                raise KernelTimeoutError(
                    f"kernel {self.name} ({self.spec.instance} at {self.spec.base_address:#x}) did not "
                    f"finish within {timeout_s:g} s: ctrl={decode_ctrl(ctrl)} "
                    f"gie={gie:#x} ier={ier:#x} isr={isr:#x}"
                )
            time.sleep(0 if timeout_s < 1e-3 else 20e-6)

    def run(self, args: Mapping[str, Any], timeout_s: float) -> int:
        """program + start + wait; returns the kernel's status (ap_return)."""
        self.program(args)
        self.start()
        self.wait(timeout_s)
        return int(self.read_array("ap_return")[0])


# ------------------------------------------------------------------------------------------------ backend

# The block kernels' parameter pointers, in MLP_PARAMS / ATTN_PARAMS order ("g_" + name: gradients).
_PARAM_ARGS = {
    "mlp": ("ln_w", "ln_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b"),
    "attn": ("ln_w", "ln_b", "qkv_w", "qkv_b", "proj_w", "proj_b"),
}
DEFAULT_BITFILE = Path(__file__).resolve().parents[3] / "build" / "bitstream" / "trilevel.bit"


def bind_kernels(
    ip_dict: Mapping[str, Mapping[str, Any]], device: Any = None, names: tuple[str, ...] | None = None
) -> dict[str, HlsKernel]:
    """HlsKernel drivers for `names` (default: every kernel with a register map) from an overlay's ip_dict.

    Each IP is found by VLNV; a missing one, or one at another address than bitstreams/zcu102_bd.tcl
    assigns, raises an error naming it.
    """
    drivers = {}
    for name in names or tuple(KERNELS):
        spec = KERNELS[name]
        found = [(key, d) for key, d in ip_dict.items() if d.get("type") == spec.vlnv]
        if not found:
            have = ", ".join(sorted(f"{k} ({d.get('type')})" for k, d in ip_dict.items())) or "none"
            raise MissingIPError(
                f"the overlay has no IP {spec.instance} ({spec.vlnv}) for kernel {name}; "
                f"IPs present: {have}. Load the trilevel bitstream (make bitstream) built from this checkout"
            )
        key, description = found[0]
        if int(description.get("phys_addr", -1)) != spec.base_address:
            raise PynqBackendError(
                f"{key}: AXI-Lite window at {int(description.get('phys_addr', -1)):#x}, the driver expects "
                f"{spec.base_address:#x} (bitstreams/zcu102_bd.tcl); rebuild the bitstream"
            )
        description = dict(description)
        if device is not None:
            description["device"] = device
        drivers[name] = HlsKernel(description)
    return drivers


class PynqBackend(Accelerator):
    """The Accelerator interface on the ZCU102 fabric (one HLS IP per kernel family)."""

    name = "pynq"

    def __init__(
        self,
        bitfile: str | Path | None = None,
        overlay: Any = None,
        device: Any = None,
        kernels: Mapping[str, HlsKernel] | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Bind to `kernels` (drivers), else an `overlay` (e.g. `pynq.Overlay(path, download=False)` after
        `make flash`), else load `bitfile` (default: $TRILEVEL_BITFILE, else build/bitstream/trilevel.bit)."""
        import pynq

        self.timeout_s = timeout_s
        if kernels is None:
            if overlay is None:
                path = Path(bitfile or os.environ.get("TRILEVEL_BITFILE") or DEFAULT_BITFILE)
                if not path.is_file():
                    raise PynqBackendError(
                        f"pynq backend: bitstream {path} not found (make bitstream, copy it here)"
                    )
                try:
                    overlay = pynq.Overlay(str(path), device=device)
                except RuntimeError as e:
                    raise PynqBackendError(f"pynq backend: cannot load {path}: {e}") from None
            device = device if device is not None else getattr(overlay, "device", None)
            kernels = bind_kernels(overlay.ip_dict, device)
        self.kernels = dict(kernels)
        self.device = device
        self._pool: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------------------------- call machinery
    def _kernel(self, name: str) -> HlsKernel:
        if name not in self.kernels:
            raise MissingIPError(
                f"pynq backend: no driver bound for kernel {name} (is its IP in the overlay?)"
            )
        return self.kernels[name]

    def _buffer(self, kernel: str, arg: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        """A pynq buffer for (kernel, argument), reused while the shape and dtype stay the same."""
        import pynq

        key = (kernel, arg)
        buf = self._pool.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            if buf is not None:
                buf.freebuffer()
            buf = pynq.allocate(shape=tuple(shape), dtype=dtype, target=self.device)
            self._pool[key] = buf
        return buf

    def _call(
        self,
        kernel: str,
        scalars: Mapping[str, Any],
        inputs: Mapping[str, np.ndarray | None],
        outputs: Mapping[str, tuple[tuple[int, ...], Any] | None],
        inouts: Mapping[str, np.ndarray | None] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `kernel`: inputs are copied in and flushed; outputs (shape, dtype) come back as new
        arrays; inouts (gradient accumulators) are flushed, updated by the kernel and copied back in
        place. None stands for an absent optional operand (address 0, the kernel's flag is 0)."""
        driver = self._kernel(kernel)
        args: dict[str, Any] = dict(scalars)
        bufs: dict[str, Any] = {}
        for arg, array in {**inputs, **(inouts or {})}.items():
            if array is None:
                args[arg] = 0
                continue
            buf = bufs[arg] = self._buffer(kernel, arg, array.shape, array.dtype)
            buf[...] = array
            buf.sync_to_device()
            args[arg] = buf
        for arg, spec in outputs.items():
            if spec is None:
                args[arg] = 0
                continue
            buf = bufs[arg] = self._buffer(kernel, arg, *spec)
            args[arg] = buf
        status = driver.run(args, self.timeout_s)
        if status == TL_ACC_RANGE:
            raise OverflowError(f"{kernel}: accumulator exceeds 48 bits; lower the gradient fracs")
        if status != TL_OK:
            why = (
                "dimensions exceed the kernel's static maxima"
                if status == TL_BAD_DIMS
                else f"status {status}"
            )
            raise PynqBackendError(f"{kernel}: {why}")
        results = {}
        for arg in outputs:
            if outputs[arg] is not None:
                bufs[arg].sync_from_device()
                results[arg] = np.array(bufs[arg])
        for arg, array in (inouts or {}).items():
            if array is not None:
                bufs[arg].sync_from_device()
                array[...] = bufs[arg]
        return results

    # ------------------------------------------------------------------------------------- linear
    def linear_fwd(self, x, params, fracs, residual=None):  # noqa: D102 - see Accelerator
        self._kernel("linear_fwd")
        f = layers.need_fracs(fracs, layers.LINEAR_FWD_FRACS, "linear_fwd")
        w, bias = params["weight"], params.get("bias")
        dout, din = w.data.shape
        _check_x(x, din, "linear_fwd")
        nb, nt = x.data.shape[:2]
        if residual is not None and residual.data.shape != (nb, nt, dout):
            raise ValueError(f"linear_fwd: residual {residual.data.shape} != output {(nb, nt, dout)}")
        out = self._call(
            "linear_fwd",
            dict(
                batch=nb,
                tokens=nt,
                din=din,
                dout=dout,
                frac_x=x.frac,
                frac_w=w.frac,
                frac_b=bias.frac if bias is not None else 0,
                frac_res=residual.frac if residual is not None else 0,
                frac_y=f["y"],
                has_bias=int(bias is not None),
                has_residual=int(residual is not None),
            ),
            {"x": x.data, "w": w.data, "bias": _data(bias), "residual": _data(residual)},
            {"y": ((nb, nt, dout), np.int16), "stats": ((1,), np.int64)},
        )
        return QTensor(out["y"], f["y"]), {"y": int(out["stats"][0])}, {"x": x}

    def linear_bwd(self, dy, saved, params, grads, fracs, seed, need_dx=True):  # noqa: D102
        self._kernel("linear_bwd")
        x: QTensor = saved["x"]
        w = params["weight"]
        dout, din = w.data.shape
        _check_x(dy, dout, "linear_bwd")
        _check_x(x, din, "linear_bwd")
        nb, nt = x.data.shape[:2]
        has_bias = params.get("bias") is not None
        frac_dx = layers.need_fracs(fracs, layers.LINEAR_BWD_FRACS, "linear_bwd")["dx"] if need_dx else 0
        out = self._call(
            "linear_bwd",
            dict(
                batch=nb,
                tokens=nt,
                din=din,
                dout=dout,
                frac_dy=dy.frac,
                frac_w=w.frac,
                frac_dx=frac_dx,
                seed=int(seed) & 0xFFFF_FFFF,
                has_bias=int(has_bias),
                need_dx=int(need_dx),
            ),
            {"dy": dy.data, "x": x.data, "w": w.data},
            {"dx": ((nb, nt, din), np.int16) if need_dx else None, "stats": ((1,), np.int64)},
            {
                "grad_w": _acc(grads, "weight", (dout, din)),
                "grad_b": _acc(grads, "bias", (dout,)) if has_bias else None,
            },
        )
        grad_fracs = {"weight": dy.frac + x.frac, **({"bias": dy.frac} if has_bias else {})}
        if not need_dx:
            return None, {}, grad_fracs
        return QTensor(out["dx"], frac_dx), {"dx": int(out["stats"][0])}, grad_fracs

    # ---------------------------------------------------------------------- LayerNorm (ARM cores)
    def layernorm_fwd(self, x, params, fracs):  # noqa: D102
        return layers.layernorm_fwd(x, params, fracs)

    def layernorm_bwd(self, dy, saved, params, grads, fracs, seed, residual=None):  # noqa: D102
        return layers.layernorm_bwd(dy, saved, params, grads, fracs, seed, residual)

    # ---------------------------------------------------------------------------------- block kernels
    def _block(
        self,
        kernel: str,
        frac_names: tuple[str, ...],
        f: Mapping[str, int],
        ps: list[QTensor],
        scalars: Mapping[str, Any],
        inputs: Mapping[str, np.ndarray | None],
        outputs: Mapping[str, tuple[tuple[int, ...], Any]],
        grads: list[np.ndarray] | None = None,
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Run block kernel `kernel` ("mlp_fwd", "attn_bwd", ...) with the parameter pointers added to
        `inputs` (forward all six, backward the three weights), `ps`' fracs and the stage fracs `f` to
        `scalars`; `grads` (backward, `*_PARAMS` order) are updated in place. Returns (outputs, stats)."""
        driver = self._kernel(kernel)
        names = _PARAM_ARGS[kernel.split("_")[0]]
        if grads is None:
            inputs = {**inputs, **{n: p.data for n, p in zip(names, ps, strict=True)}}
            inouts = None
        else:
            inputs = {**inputs, **{names[i]: ps[i].data for i in (0, 2, 4)}}
            inouts = {f"g_{n}": g for n, g in zip(names, grads, strict=True)}
        fracs = {"pfrac": [p.frac for p in ps], "fracs": [f[n] for n in frac_names], "stats": None}
        out = self._call(kernel, {**scalars, **fracs}, inputs, outputs, inouts)
        return out, named_stats(frac_names, driver.read_array("stats"))

    # ------------------------------------------------------------------------------------- MLP block
    def mlp_block_fwd(self, x, params, fracs):  # noqa: D102
        self._kernel("mlp_fwd")  # a missing IP is the first error
        f = layers.need_fracs(fracs, blocks.MLP_FWD_FRACS, "mlp_block_fwd")
        hidden, dim = params["mlp.fc1.weight"].data.shape
        _check_x(x, dim, "mlp_block_fwd")
        nb, nt = x.data.shape[:2]
        out, stats = self._block(
            "mlp_fwd",
            blocks.MLP_FWD_FRACS,
            f,
            [params[name] for name in MLP_PARAMS],
            dict(batch=nb, tokens=nt, dim=dim, hidden=hidden, frac_x=x.frac),
            {"x": x.data},
            mlp_fwd_outputs(nb, nt, dim, hidden),
        )
        return QTensor(out["out"], f["out"]), stats, mlp_fwd_saved(out, x.frac, f)

    def mlp_block_bwd(self, dout, saved, params, grads, fracs, seed):  # noqa: D102
        self._kernel("mlp_bwd")  # a missing IP is the first error
        f = layers.need_fracs(fracs, blocks.MLP_BWD_FRACS, "mlp_block_bwd")
        hidden, dim = params["mlp.fc1.weight"].data.shape
        _check_x(dout, dim, "mlp_block_bwd")
        nb, nt = dout.data.shape[:2]
        shapes = mlp_param_shapes(dim, hidden)
        ln, z, h, a = saved["ln"], saved["z"], saved["h"], saved["a"]
        out, stats = self._block(
            "mlp_bwd",
            blocks.MLP_BWD_FRACS,
            f,
            [params[name] for name in MLP_PARAMS],
            dict(
                batch=nb,
                tokens=nt,
                dim=dim,
                hidden=hidden,
                frac_dout=dout.frac,
                frac_x=ln["frac_x"],
                frac_h=h.frac,
                seed=int(seed) & 0xFFFF_FFFF,
            ),
            {"dout": dout.data, "z": z.data, **saved_ln_inputs(ln, nb, nt), "h": h.data, "a": a.data},
            {
                "da": ((nb, nt, hidden), np.int16),
                "dh": ((nb, nt, hidden), np.int16),
                "dz": ((nb, nt, dim), np.int16),
                "dx": ((nb, nt, dim), np.int16),
            },
            [_acc(grads, name, shape) for name, shape in zip(MLP_PARAMS, shapes, strict=True)],
        )
        return QTensor(out["dx"], f["dx"]), stats, blocks.mlp_grad_fracs(dim, f, dout.frac, a.frac, z.frac)

    # ----------------------------------------------------------------------------- attention block
    def attn_block_fwd(self, x, params, fracs, num_heads, conn=None, dense_rows=1):  # noqa: D102
        self._kernel("attn_fwd")  # a missing IP is the first error
        f = layers.need_fracs(fracs, blocks.ATTN_FWD_FRACS, "attn_block_fwd")
        if not blocks.SCORE_FRAC_RANGE[0] <= f["s"] <= blocks.SCORE_FRAC_RANGE[1]:
            raise ValueError(f"attn_block_fwd: score frac must be in {blocks.SCORE_FRAC_RANGE}, got {f['s']}")
        dim = params["attn.proj.weight"].data.shape[0]
        _check_x(x, dim, "attn_block_fwd")
        nb, nt = x.data.shape[:2]
        check_heads(dim, num_heads)
        cd, keep = conn_lists(conn, nb, nt, dense_rows)
        out, stats = self._block(
            "attn_fwd",
            blocks.ATTN_FWD_FRACS,
            f,
            [params[name] for name in ATTN_PARAMS],
            dict(**_attn_dims(nb, nt, dim, num_heads, cd, keep, dense_rows), frac_x=x.frac),
            {"x": x.data, "conn": cd},
            attn_fwd_outputs(nb, nt, dim, num_heads),
        )
        saved = attn_fwd_saved(out, x.frac, f, num_heads, conn, cd, dense_rows)
        return QTensor(out["out"], f["out"]), stats, saved

    def attn_block_bwd(self, dout, saved, params, grads, fracs, seed):  # noqa: D102
        self._kernel("attn_bwd")  # a missing IP is the first error
        f = layers.need_fracs(fracs, blocks.ATTN_BWD_FRACS, "attn_block_bwd")
        num_heads = int(saved["num_heads"])
        dim = params["attn.proj.weight"].data.shape[0]
        _check_x(dout, dim, "attn_block_bwd")
        nb, nt = dout.data.shape[:2]
        shapes = attn_param_shapes(dim)
        cd, keep, dense_rows, probs = saved_attn_layout(saved, nb, nt)
        ln, qkv, ctx, z = saved["ln"], saved["qkv"], saved["ctx"], saved["z"]
        out, stats = self._block(
            "attn_bwd",
            blocks.ATTN_BWD_FRACS,
            f,
            [params[name] for name in ATTN_PARAMS],
            dict(
                **_attn_dims(nb, nt, dim, num_heads, cd, keep, dense_rows),
                frac_dout=dout.frac,
                frac_x=ln["frac_x"],
                frac_qkv=qkv.frac,
                seed=int(seed) & 0xFFFF_FFFF,
            ),
            {
                "dout": dout.data,
                "z": z.data,
                **saved_ln_inputs(ln, nb, nt),
                "qkv": qkv.data,
                "ctx": ctx.data,
                "probs": probs,
                "conn": cd,
            },
            {
                "dctx": ((nb, nt, dim), np.int16),
                "dqkv": ((nb, nt, 3 * dim), np.int16),
                "dz": ((nb, nt, dim), np.int16),
                "dx": ((nb, nt, dim), np.int16),
            },
            [_acc(grads, name, shape) for name, shape in zip(ATTN_PARAMS, shapes, strict=True)],
        )
        grad_fracs = blocks.attn_grad_fracs(dim, f, dout.frac, ctx.frac, z.frac)
        return QTensor(out["dx"], f["dx"]), stats, grad_fracs

    # ------------------------------------------------------------------------ TA-selector (top-k)
    def _topk(self, scores: np.ndarray, k: int, connections: bool, has_cls: bool) -> np.ndarray:
        self._kernel("topk_prune")
        s, shape = topk_args(scores, k, connections, has_cls)
        out = self._call(
            "topk_prune",
            dict(batch=len(s), n=s.shape[1], k=int(k), connections=int(connections), has_cls=int(has_cls)),
            {"scores": s},
            {"out": (shape, np.int32)},
        )
        return out["out"].astype(np.int64)

    def topk_tokens(self, cls_scores, k):  # noqa: D102
        return self._topk(cls_scores, k, False, False)

    def topk_connections(self, scores, k, has_cls=True):  # noqa: D102
        return self._topk(scores, k, True, has_cls)

    # ----------------------------------------------------------------------------------- optimizer
    def _optimizer(
        self,
        kernel: str,
        master: np.ndarray,
        m: np.ndarray,
        v: np.ndarray | None,
        grad_acc: np.ndarray,
        grad_frac: int,
        batch: int,
        mode: int,
        scalars: list[float],
        first: bool,
    ) -> QTensor:
        driver = self._kernel("optimizer_step")
        # The buffers are copies: master/m/v need not be contiguous.
        check_optimizer_args(kernel, master, m, v, grad_acc, batch, contiguous=False)
        out = self._call(
            "optimizer_step",
            dict(
                n=grad_acc.size,
                grad_frac=int(grad_frac),
                batch=int(batch),
                mode=mode,
                first=int(first),
                scal=scal_array(scalars),
            ),
            {"grad_acc": grad_acc},
            {"w": (grad_acc.shape, np.int16)},
            {"master": master, "m": m, "v": v},
        )
        return QTensor(out["w"], int(driver.read_array("frac_out")[0]))

    def adamw_step(self, master, m, v, grad_acc, grad_frac, batch, s):  # noqa: D102
        scal = adamw_scalars(s)
        return self._optimizer("adamw_step", master, m, v, grad_acc, grad_frac, batch, 0, scal, False)

    def sgdm_step(self, master, buf, grad_acc, grad_frac, batch, s, first=False):  # noqa: D102
        scal = sgdm_scalars(s)
        return self._optimizer("sgdm_step", master, buf, None, grad_acc, grad_frac, batch, 1, scal, first)


def _attn_dims(
    nb: int, nt: int, dim: int, num_heads: int, conn: np.ndarray | None, keep: int, dense_rows: int
) -> dict[str, int]:
    """The attention kernels' shape scalars."""
    return dict(
        batch=nb,
        tokens=nt,
        dim=dim,
        heads=num_heads,
        keep=keep,
        dense_rows=dense_rows,
        has_conn=int(conn is not None),
    )


def _data(t: QTensor | None) -> np.ndarray | None:
    return None if t is None else np.ascontiguousarray(t.data, dtype=np.int16)


def _check_x(x: QTensor, dim: int, kernel: str) -> None:
    if not isinstance(x, QTensor) or x.data.ndim != 3 or x.data.shape[-1] != dim:
        raise ValueError(f"{kernel}: expected a QTensor [B, T, {dim}], got {getattr(x, 'data', x)!r:.60}")


def _acc(grads: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    acc = grads[name]
    if not isinstance(acc, np.ndarray) or acc.dtype != np.int64 or acc.shape != shape:
        raise ValueError(f"grads[{name!r}]: need int64 {shape}, got {getattr(acc, 'dtype', type(acc))}")
    if not acc.flags.writeable:
        raise ValueError(f"grads[{name!r}]: must be writeable (updated in place)")
    return acc
