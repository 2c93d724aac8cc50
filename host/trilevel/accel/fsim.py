"""Functional simulator of the engine's command set: the command-level golden model (as VTA's fsim).

`FunctionalEngine(config).run(ddr, cmd_addr, cmd_count)` executes a program held in a DDR image
(a writable uint8 buffer: bytearray, numpy array, a pynq buffer) exactly as docs/engine.md defines
each command, built from the `trilevel.intref` primitives (round_shift, softmax_fwd, softmax_bwd_acc,
topk_select, the LayerNorm and GELU LUT math). It returns the CTRL bits, ERROR, ERR_PC and the
counters (RETIRED included). The HLS C++ engine and the RTL engine are tested against it command by
command; the host lowering (`trilevel.accel.lower`) is developed and tested against it.

Execution model (docs/engine.md, "Modules, queues and dependency tokens"): commands go, in program
order, to the queue of their module (LOAD, COMPUTE, STORE). At every step the simulator executes the
earliest (in program order) queue head whose token pops are available and whose token pushes have
room in their depth-Q queues; with dependency-consistent programs that is program order. When no head
can run while commands remain, the run stops with DEP_UNDERFLOW at the earliest blocked head. The
run ends at FINISH (once LOAD and STORE have retired everything before it) or after CMD_COUNT commands.

Errors stop the run at the failing command (ERR_PC); each command is checked in the order BAD_OPCODE,
RESERVED_BITS, BAD_DIMS, BAD_SHIFT, SPM_RANGE, DDR_RANGE, then ACC_RANGE while it executes (see
`check order` in docs/engine.md). Memory written by the failing command is unspecified.

Counters: DDR bytes (64 per retired command + LOAD/STORE payloads; zero fill reads nothing) and MACs
(GEMM m*n*k) are exact. Cycle counters come from the simple per-command model in `command_cycles`
with module timelines joined by the dependency tokens: an estimate of the schedule, not the C-sim's
or the RTL's cycle-accurate counts.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable

import numpy as np

from trilevel.accel import isa
from trilevel.accel.isa import Err, Mem, Module, Op, SoftmaxSub, Vec
from trilevel.intref.fixed import (
    max_abs_out,
    round_shift,
    saturate16,
    softmax_bwd_acc,
    softmax_fwd,
    topk_select,
)
from trilevel.intref.layers import (
    align,
    gelu_index,
    ln_eps_term,
    ln_xhat_frac,
    rsqrt_lookup,
    subseed,
)
from trilevel.intref.luts import DGELU_LUT, PHI_LUT, RSQRT_FRAC

ACC_LIMIT = 1 << 47  # signed 48-bit accumulators: |value| < 2**47
STAT_MAX = (1 << 63) - 1
SHIFT_RANGE = (-16, 62)  # requantizer: right shifts up to 62, left shifts up to 16
ALIGN_RANGE = (-47, 62)  # operand alignment (bias, residual, beta): int16 << 47 still fits the 64-bit sum
SOFTMAX_FRAC_RANGE = (0, 15)
DONE = isa.CTRL_DONE | isa.CTRL_IDLE  # CTRL after a run (ERROR tells success from failure)
# Dependency-token queues: (module that pushes, direction flag) -> queue name.
QUEUES = ("l2c", "c2l", "c2s", "s2c")
_POP_QUEUE = {
    (Module.COMPUTE, "pop_prev"): "l2c",
    (Module.COMPUTE, "pop_next"): "s2c",
    (Module.LOAD, "pop_next"): "c2l",
    (Module.STORE, "pop_prev"): "c2s",
}
_PUSH_QUEUE = {
    (Module.LOAD, "push_next"): "l2c",
    (Module.COMPUTE, "push_prev"): "c2l",
    (Module.COMPUTE, "push_next"): "c2s",
    (Module.STORE, "push_prev"): "s2c",
}
_MEM_DTYPE = {
    Mem.SPM: np.dtype("<i2"),
    Mem.ACC: np.dtype("<i8"),
    Mem.IDX: np.dtype("<u2"),
    Mem.STAT: np.dtype("<i8"),
}
_BUSY_COUNTER = {
    Op.LOAD: "LOAD_BUSY",
    Op.STORE: "STORE_BUSY",
    Op.GEMM: "GEMM_BUSY",
    Op.SOFTMAX: "SOFTMAX_BUSY",
    Op.VEC: "VEC_BUSY",
    Op.TOPK: "TOPK_BUSY",
}


class EngineFault(Exception):
    """A command failed: the engine stops with this ERROR code."""

    def __init__(self, code: Err, detail: str) -> None:
        super().__init__(f"{code.name}: {detail}")
        self.code = code
        self.detail = detail


@dataclasses.dataclass
class RunResult:
    status: int  # CTRL bits after the run: ap_done | ap_idle
    error: Err
    err_pc: int
    retired: int
    counters: dict[str, int]  # isa.COUNTERS
    detail: str = ""  # what failed, for messages (not a register)

    @property
    def ok(self) -> bool:
        return self.error == Err.NONE


def _fault(cond: bool, code: Err, detail: str) -> None:
    if cond:
        raise EngineFault(code, detail)


def command_cycles(op: Op, f: dict[str, int], config: isa.EngineConfig) -> int:
    """The simple cycle estimate of one command (fsim's model; docs/engine.md has the engines' formulas)."""
    m, n, k = f["m"], f["n"], f["k"]
    if op in (Op.LOAD, Op.STORE):
        size = isa.DDR_ELEM_BYTES[Mem(f["sub"])]
        return m * (-(-n * size // config.axi_bytes) + 2)
    if op == Op.GEMM:  # a requantizing tile drains in array_rows * array_cols / epilogue_lanes cycles
        drain = config.array_rows * (1 if f["acc"] else config.array_cols // config.epilogue_lanes)
        return -(-m // config.array_rows) * -(-n // config.array_cols) * max(k + 2, drain) + drain
    if op == Op.SOFTMAX:
        passes = 3 if f["sub"] == SoftmaxSub.FWD else 2
        return -(-m // config.softmax_units) * (passes * n + 8)
    if op == Op.VEC:
        passes = {Vec.LN_FWD: 3, Vec.LN_BWD: 4}.get(Vec(f["sub"]), 1)
        return passes * m * -(-n // config.vec_lanes) + 4
    if op == Op.TOPK:
        return m * (n + k + 4)
    return 1


class FunctionalEngine:
    """The engine's on-chip state and a program interpreter. Memories persist between runs (as on
    the hardware); STAT slots and counters are cleared at every start."""

    def __init__(
        self, config: isa.EngineConfig = isa.PRODUCTION, priority: tuple[Module, ...] | None = None
    ) -> None:
        """`priority`: instead of the earliest ready command, run the ready head of the first module in this
        order (e.g. LOAD first: the DMA runs as far ahead as its tokens allow). Results of a program with
        sufficient dependency tokens do not depend on it; tests use it to find missing tokens."""
        self.config = config
        self.priority = priority
        self.spm = np.zeros(config.spm_elems, dtype=np.int16)
        self.acc = np.zeros(config.acc_elems, dtype=np.int64)
        self.idx = np.zeros(config.idx_elems, dtype=np.uint16)
        self.stat = np.zeros(config.stat_slots, dtype=np.int64)
        self._ddr = np.zeros(0, dtype=np.uint8)
        self._exec: dict[Op, Callable[[dict[str, int]], None]] = {
            Op.LOAD: self._load,
            Op.STORE: self._store,
            Op.GEMM: self._gemm,
            Op.SOFTMAX: self._softmax,
            Op.VEC: self._vec,
            Op.TOPK: self._topk,
            Op.FINISH: lambda f: None,
        }

    # ------------------------------------------------------------------------------------------ run
    def run(self, ddr: bytearray | np.ndarray | memoryview, cmd_addr: int, cmd_count: int) -> RunResult:
        """Execute `cmd_count` commands fetched from byte offset `cmd_addr` of `ddr` (modified in place)."""
        self._ddr = (ddr if isinstance(ddr, np.ndarray) else np.frombuffer(ddr, dtype=np.uint8)).view(
            np.uint8
        )
        self._ddr = self._ddr.reshape(-1)
        self.stat[:] = 0
        counters = dict.fromkeys(isa.COUNTERS, 0)
        if cmd_addr % isa.COMMAND_BYTES or cmd_addr + cmd_count * isa.COMMAND_BYTES > self._ddr.size:
            return RunResult(
                DONE, Err.DDR_RANGE, 0, 0, counters, "program outside the DDR window or not 64-byte aligned"
            )
        words = self._ddr[cmd_addr : cmd_addr + cmd_count * isa.COMMAND_BYTES].copy().view("<u4")
        words = words.reshape(cmd_count, isa.WORDS)
        queues: dict[Module, deque[int]] = {mod: deque() for mod in Module}
        decoded: list[dict[str, int]] = []
        for pc in range(cmd_count):
            f = isa.decode(words[pc])
            decoded.append(f)
            queues[
                isa.MODULE_OF.get(Op(f["op"]), Module.COMPUTE) if f["op"] in iter(Op) else Module.COMPUTE
            ].append(pc)
            if f["op"] == Op.FINISH:
                break
        tokens: dict[str, deque[int]] = {q: deque() for q in QUEUES}  # push times (cycles)
        clock = dict.fromkeys(Module, 0)
        retired = 0
        while any(queues.values()):
            ready = [
                (queues[mod][0], mod)
                for mod in Module
                if queues[mod] and self._ready(decoded[queues[mod][0]], mod, tokens, queues)
            ]
            if not ready:
                pc = min(q[0] for q in queues.values() if q)
                return self._stop(
                    Err.DEP_UNDERFLOW,
                    pc,
                    retired,
                    counters,
                    clock,
                    "no queue head can take its dependency tokens (the program would deadlock)",
                )
            order = self.priority
            pc, mod = min(ready) if order is None else min(ready, key=lambda head: order.index(head[1]))
            f = decoded[pc]
            queues[mod].popleft()
            try:
                self._check_control(f, mod)
                op = Op(f["op"])
                self._exec[op](f)
            except EngineFault as fault:
                return self._stop(fault.code, pc, retired, counters, clock, fault.detail)
            start = clock[mod]
            for flag in ("pop_prev", "pop_next"):
                if f[flag]:
                    pushed = tokens[_POP_QUEUE[(mod, flag)]].popleft()
                    if mod == Module.COMPUTE and flag == "pop_prev" and pushed > start:
                        counters["DMA_STALL"] += pushed - start
                    start = max(start, pushed)
            cost = command_cycles(op, f, self.config)
            clock[mod] = start + cost
            for flag in ("push_prev", "push_next"):
                if f[flag]:
                    tokens[_PUSH_QUEUE[(mod, flag)]].append(clock[mod])
            if op in _BUSY_COUNTER:
                counters[_BUSY_COUNTER[op]] += cost
            self._count(op, f, counters)
            retired += 1
        counters["CYCLES"] = max(clock.values())
        counters["DDR_RD_BYTES"] += isa.COMMAND_BYTES * retired
        counters["RETIRED"] = retired
        return RunResult(DONE, Err.NONE, 0, retired, counters)

    def _stop(
        self,
        code: Err,
        pc: int,
        retired: int,
        counters: dict[str, int],
        clock: dict[Module, int],
        detail: str,
    ) -> RunResult:
        counters["CYCLES"] = max(clock.values())
        counters["DDR_RD_BYTES"] += isa.COMMAND_BYTES * retired
        counters["RETIRED"] = retired
        return RunResult(DONE, code, pc, retired, counters, detail)

    def _ready(
        self, f: dict[str, int], mod: Module, tokens: dict[str, deque[int]], queues: dict[Module, deque[int]]
    ) -> bool:
        if f["op"] == Op.FINISH:  # waits until LOAD and STORE retired everything before it
            return not queues[Module.LOAD] and not queues[Module.STORE]
        for flag in ("pop_prev", "pop_next"):
            q = _POP_QUEUE.get((mod, flag))
            if f[flag] and q is not None and not tokens[q]:
                return False
        for flag in ("push_prev", "push_next"):
            q = _PUSH_QUEUE.get((mod, flag))
            if f[flag] and q is not None and len(tokens[q]) >= self.config.queue_depth:
                return False
        return True

    def _count(self, op: Op, f: dict[str, int], counters: dict[str, int]) -> None:
        if op == Op.LOAD and not f["tb"]:
            counters["DDR_RD_BYTES"] += f["m"] * f["n"] * isa.DDR_ELEM_BYTES[Mem(f["sub"])]
        elif op == Op.STORE:
            counters["DDR_WR_BYTES"] += f["m"] * f["n"] * isa.DDR_ELEM_BYTES[Mem(f["sub"])]
        elif op == Op.GEMM:
            counters["MACS"] += f["m"] * f["n"] * f["k"]

    # --------------------------------------------------------------------------------------- checks
    def _check_control(self, f: dict[str, int], mod: Module) -> None:
        _fault(f["op"] not in iter(Op), Err.BAD_OPCODE, f"opcode {f['op']}")
        op = Op(f["op"])
        _fault(f["reserved"] != 0, Err.RESERVED_BITS, "word 0 bits 31:26 set")
        subs: dict[Op, tuple[int, ...]] = {
            Op.LOAD: (Mem.SPM, Mem.ACC, Mem.IDX),
            Op.STORE: tuple(Mem),
            Op.SOFTMAX: tuple(SoftmaxSub),
            Op.VEC: tuple(Vec),
        }
        _fault(f["sub"] not in subs.get(op, (0,)), Err.RESERVED_BITS, f"sub {f['sub']} invalid for {op.name}")
        deps = [flag for flag in ("pop_prev", "pop_next", "push_prev", "push_next") if f[flag]]
        if op == Op.FINISH:
            _fault(bool(deps), Err.RESERVED_BITS, "FINISH takes no dependency flags")
        for flag in deps:
            table = _POP_QUEUE if flag.startswith("pop") else _PUSH_QUEUE
            _fault((mod, flag) not in table, Err.RESERVED_BITS, f"{op.name} has no {flag} neighbour")
        _fault(
            op == Op.GEMM and bool(f["res"] and f["mask"]), Err.RESERVED_BITS, "GEMM res and mask together"
        )

    @staticmethod
    def _dims(*values: int) -> None:
        _fault(any(v <= 0 for v in values), Err.BAD_DIMS, f"dimensions {values} must be >= 1")

    def _max_row(self, n: int, what: str) -> None:
        _fault(n > self.config.max_row, Err.BAD_DIMS, f"{what} row of {n} > max_row {self.config.max_row}")

    def _max_dim(self, n: int) -> None:
        _fault(n > self.config.max_dim, Err.BAD_DIMS, f"LayerNorm row of {n} > max_dim {self.config.max_dim}")

    @staticmethod
    def _shift(value: int, what: str, lo_hi: tuple[int, int] = SHIFT_RANGE) -> None:
        _fault(not lo_hi[0] <= value <= lo_hi[1], Err.BAD_SHIFT, f"{what} {value} outside {lo_hi}")

    def _stat_slots(self, f: dict[str, int], count: int = 1) -> None:
        if f["stat"]:
            _fault(
                f["slot"] + count > self.config.stat_slots,
                Err.SPM_RANGE,
                f"statistic slot {f['slot']}+{count} beyond {self.config.stat_slots}",
            )

    @staticmethod
    def _index(
        mem: np.ndarray, name: str, addr: int, rows: int, cols: int, row_stride: int, col_stride: int = 1
    ) -> np.ndarray:
        """Element indices of a (rows x cols) operand, checked against the memory's size."""
        last = addr + (rows - 1) * row_stride + (cols - 1) * col_stride
        _fault(last >= mem.size, Err.SPM_RANGE, f"{name} access up to {last} beyond {mem.size} elements")
        return (
            addr
            + np.arange(rows, dtype=np.int64)[:, None] * row_stride
            + np.arange(cols, dtype=np.int64)[None, :] * col_stride
        )

    def _operand(
        self,
        mem: np.ndarray,
        name: str,
        addr: int,
        rows: int,
        cols: int,
        row_stride: int,
        col_stride: int = 1,
    ) -> np.ndarray:
        return mem[self._index(mem, name, addr, rows, cols, row_stride, col_stride)]

    def _update_stat(self, f: dict[str, int], value: int, offset: int = 0) -> None:
        if f["stat"]:
            slot = f["slot"] + offset
            self.stat[slot] = max(int(self.stat[slot]), min(int(value), STAT_MAX))

    @staticmethod
    def _acc_check(values: np.ndarray, what: str) -> None:
        _fault(
            bool(values.size) and int(np.max(np.abs(values))) >= ACC_LIMIT,
            Err.ACC_RANGE,
            f"{what} left the signed 48-bit range",
        )

    def _sr_index(self, f: dict[str, int], m: int, n: int) -> np.ndarray:
        return (
            f["index_base"]
            + np.arange(m, dtype=np.int64)[:, None] * f["index_stride"]
            + np.arange(n, dtype=np.int64)[None, :]
        )

    def _round(
        self, v: np.ndarray, shift: int | np.ndarray, f: dict[str, int], sr: bool, seed: int | None = None
    ) -> np.ndarray:
        if sr:
            seed = f["seed"] if seed is None else seed
            return round_shift(v, shift, "sr", seed, self._sr_index(f, *v.shape))
        return round_shift(v, shift, "rne")

    # ------------------------------------------------------------------------------------------ DMA
    def _dma_rows(self, f: dict[str, int], mem: Mem) -> tuple[np.ndarray, int]:
        """Byte address of each DDR row and the row length in bytes (range-checked)."""
        m, n = f["m"], f["n"]
        size = isa.DDR_ELEM_BYTES[mem]
        if f["ta"]:
            rows = self._operand(self.idx, "IDX", f["b_addr"], 1, m, 0)[0].astype(np.int64)
        else:
            rows = np.arange(m, dtype=np.int64)
        starts = f["index_base"] + rows * f["index_stride"]
        row_bytes = n * size
        _fault(bool((starts % size).any()), Err.DDR_RANGE, f"a DDR row address is not {size}-byte aligned")
        end = int(starts.max()) + row_bytes
        _fault(
            end > self._ddr.size,
            Err.DDR_RANGE,
            f"DDR bytes up to {end:#x} beyond the {self._ddr.size:#x} window",
        )
        return starts, row_bytes

    def _ddr_gather(self, starts: np.ndarray, row_bytes: int) -> np.ndarray:
        offsets = starts[:, None] + np.arange(row_bytes, dtype=np.int64)[None, :]
        return self._ddr[offsets]

    def _memory(self, mem: Mem) -> np.ndarray:
        return {Mem.SPM: self.spm, Mem.ACC: self.acc, Mem.IDX: self.idx, Mem.STAT: self.stat}[mem]

    def _load(self, f: dict[str, int]) -> None:
        mem = Mem(f["sub"])
        self._dims(f["m"], f["n"])
        target = self._memory(mem)
        where = self._index(target, mem.name, f["a_addr"], f["m"], f["n"], f["a_stride"])
        if f["tb"]:
            target[where] = 0
            return
        starts, row_bytes = self._dma_rows(f, mem)
        values = self._ddr_gather(starts, row_bytes).copy().view(_MEM_DTYPE[mem]).reshape(f["m"], f["n"])
        if mem == Mem.ACC:
            self._acc_check(values, "an ACC value loaded from DDR")
        target[where] = values

    def _store(self, f: dict[str, int]) -> None:
        mem = Mem(f["sub"])
        self._dims(f["m"], f["n"])
        values = self._operand(self._memory(mem), mem.name, f["a_addr"], f["m"], f["n"], f["a_stride"])
        starts, row_bytes = self._dma_rows(f, mem)
        data = np.ascontiguousarray(values.astype(_MEM_DTYPE[mem])).view(np.uint8).reshape(f["m"], row_bytes)
        offsets = starts[:, None] + np.arange(row_bytes, dtype=np.int64)[None, :]
        self._ddr[offsets] = data

    # ----------------------------------------------------------------------------------------- GEMM
    def _gemm(self, f: dict[str, int]) -> None:
        m, n, k = f["m"], f["n"], f["k"]
        self._dims(m, n, k)
        if not f["acc"]:
            self._shift(f["shift"], "shift")
            if f["bias"]:
                self._shift(f["shift2"], "bias alignment shift2", ALIGN_RANGE)
            if f["res"]:
                self._shift(f["shift3"], "residual alignment shift3", ALIGN_RANGE)
        self._stat_slots(f)
        if f["ta"]:
            a = self._operand(self.spm, "SPM A", f["a_addr"], m, k, 1, f["a_stride"])
        else:
            a = self._operand(self.spm, "SPM A", f["a_addr"], m, k, f["a_stride"])
        if f["tb"]:
            b = self._operand(self.spm, "SPM B", f["b_addr"], n, k, 1, f["b_stride"])
        else:
            b = self._operand(self.spm, "SPM B", f["b_addr"], n, k, f["b_stride"])
        # |products| <= 2**30 and k < 2**16: every partial sum is an integer below 2**53 (exact in float64).
        dot = (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.int64)
        if f["acc"]:
            where = self._index(self.acc, "ACC", f["f_addr"], m, n, f["c_stride"])
            total = self.acc[where] + dot
            self._acc_check(total, "GEMM accumulation")
            self.acc[where] = total
            return
        where_c = self._index(self.spm, "SPM C", f["c_addr"], m, n, f["c_stride"])
        e = None
        if f["res"] or f["mask"]:
            e = self._operand(self.spm, "SPM E", f["e_addr"], m, n, f["e_stride"]).astype(np.int64)
        bias = self._operand(self.spm, "SPM D", f["d_addr"], 1, n, 0) if f["bias"] else None
        _fault(
            bool(dot.size) and int(np.max(np.abs(dot))) * abs(f["imm"]) >= 1 << 62,
            Err.ACC_RANGE,
            "GEMM epilogue product beyond 62 bits",
        )
        v = dot * f["imm"]
        if bias is not None:
            v = v + align(bias.astype(np.int64), f["shift2"], 0)
        if e is not None and f["res"]:
            v = v + align(e, f["shift3"], 0)
        self.spm[where_c] = saturate16(self._round(v, f["shift"], f, bool(f["sr"])))
        if f["stat"]:
            kept = v if not f["mask"] else np.where(e != 0, v, 0)
            self._update_stat(f, max_abs_out(kept, f["shift"]))

    # -------------------------------------------------------------------------------------- SOFTMAX
    def _softmax(self, f: dict[str, int]) -> None:
        m, n = f["m"], f["n"]
        self._dims(m, n)
        self._max_row(n, "softmax")
        if f["sub"] == SoftmaxSub.FWD:
            self._shift(f["shift"], "score frac", SOFTMAX_FRAC_RANGE)
            s = self._operand(self.spm, "SPM A", f["a_addr"], m, n, f["a_stride"])
            where_c = self._index(self.spm, "SPM C", f["c_addr"], m, n, f["c_stride"])
            valid = None
            if f["mask"]:
                valid = self._operand(self.spm, "SPM E", f["e_addr"], m, n, f["e_stride"]) != 0
            where_d = self._index(self.acc, "ACC D", f["d_addr"], m, n, f["d_stride"]) if f["acc"] else None
            p = softmax_fwd(s, f["shift"], valid)
            if where_d is not None:
                total = self.acc[where_d] + p.astype(np.int64)
                self._acc_check(total, "softmax head-sum")
                self.acc[where_d] = total
            self.spm[where_c] = p
            return
        self._shift(f["shift"], "shift")
        self._stat_slots(f)
        p = self._operand(self.spm, "SPM A", f["a_addr"], m, n, f["a_stride"])
        dp = self._operand(self.spm, "SPM B", f["b_addr"], m, n, f["b_stride"])
        where_c = self._index(self.spm, "SPM C", f["c_addr"], m, n, f["c_stride"])
        acc = softmax_bwd_acc(p, dp)
        self.spm[where_c] = saturate16(self._round(acc, f["shift"], f, True))
        self._update_stat(f, max_abs_out(acc, f["shift"]))

    # ------------------------------------------------------------------------------------------ VEC
    def _vec(self, f: dict[str, int]) -> None:
        m, n = f["m"], f["n"]
        self._dims(m, n)
        sub = Vec(f["sub"])
        if sub == Vec.LN_FWD:
            self._ln_fwd(f)
        elif sub == Vec.LN_BWD:
            self._ln_bwd(f)
        elif sub in (Vec.GELU_FWD, Vec.GELU_BWD):
            self._shift(f["shift"], "shift")
            self._stat_slots(f)
            a = self._operand(self.spm, "SPM A", f["a_addr"], m, n, f["a_stride"]).astype(np.int64)
            where_c = self._index(self.spm, "SPM C", f["c_addr"], m, n, f["c_stride"])
            if sub == Vec.GELU_FWD:
                acc = a * PHI_LUT[gelu_index(a, f["imm"])]
            else:
                x = self._operand(self.spm, "SPM B", f["b_addr"], m, n, f["b_stride"])
                acc = a * DGELU_LUT[gelu_index(x, f["imm"])]
            self.spm[where_c] = saturate16(self._round(acc, f["shift"], f, sub == Vec.GELU_BWD))
            self._update_stat(f, max_abs_out(acc, f["shift"]))
        elif sub in (Vec.COLSUM, Vec.COLDOT):
            a = self._operand(self.spm, "SPM A", f["a_addr"], m, n, f["a_stride"]).astype(np.int64)
            if sub == Vec.COLDOT:
                a = a * self._operand(self.spm, "SPM B", f["b_addr"], m, n, f["b_stride"])
            where = self._index(self.acc, "ACC F", f["f_addr"], 1, n, 0)[0]
            total = self.acc[where] + a.sum(axis=0)
            self._acc_check(total, "column sum")
            self.acc[where] = total
        else:
            self._mask(f)

    def _mask(self, f: dict[str, int]) -> None:
        m, n, k, dense = f["m"], f["n"], f["k"], f["imm"]
        _fault(
            dense < 0 or (m > dense and not 1 <= k <= n),
            Err.BAD_DIMS,
            f"MASK: k={k} must be in 1..n={n} and imm={dense} >= 0",
        )
        self._max_row(n, "MASK")
        where_c = self._index(self.spm, "SPM C", f["c_addr"], m, n, f["c_stride"])
        out = np.zeros((m, n), dtype=np.int16)
        out[: min(dense, m)] = 1
        if m > dense:
            lists = self._operand(self.idx, "IDX B", f["b_addr"], m - dense, k, f["b_stride"])
            lists = lists.astype(np.int64)
            _fault(int(lists.max()) >= n, Err.SPM_RANGE, f"connection list entry {int(lists.max())} >= n={n}")
            out[np.arange(dense, m)[:, None], lists] = 1
        self.spm[where_c] = out

    def _ln_fwd(self, f: dict[str, int]) -> None:
        m, n = f["m"], f["n"]
        self._max_dim(n)
        for name in ("shift", "shift4"):
            self._shift(f[name], name)
        self._shift(f["shift2"], "beta alignment shift2", ALIGN_RANGE)
        self._stat_slots(f)
        x = self._operand(self.spm, "SPM A", f["a_addr"], m, n, f["a_stride"]).astype(np.int64)
        gamma = self._operand(self.spm, "SPM B", f["b_addr"], 1, n, 0).astype(np.int64)
        beta = self._operand(self.spm, "SPM D", f["d_addr"], 1, n, 0)
        where_c = self._index(self.spm, "SPM C", f["c_addr"], m, n, f["c_stride"])
        where_e = self._index(self.spm, "SPM E", f["e_addr"], m, n, f["e_stride"])
        where_f = self._index(self.acc, "ACC F", f["f_addr"], 1, m, 0)[0]
        s1 = x.sum(axis=-1, keepdims=True)
        s2 = (x * x).sum(axis=-1, keepdims=True)
        rs, k = rsqrt_lookup(n * s2 - s1 * s1 + ln_eps_term(n, f["shift4"]))
        fh = ln_xhat_frac(n)
        xhat = saturate16(round_shift((n * x - s1) * rs, RSQRT_FRAC + k - fh, "rne"))
        acc = xhat.astype(np.int64) * gamma + align(beta.astype(np.int64), f["shift2"], 0)
        self.spm[where_e] = xhat
        self.spm[where_c] = saturate16(round_shift(acc, f["shift"], "rne"))
        self.acc[where_f] = rs[:, 0].astype(np.int64) | (k[:, 0].astype(np.int64) << 32)
        self._update_stat(f, max_abs_out(acc, f["shift"]))

    def _ln_bwd(self, f: dict[str, int]) -> None:
        m, n = f["m"], f["n"]
        self._max_dim(n)
        for name in ("shift", "shift2", "shift3"):
            self._shift(f[name], name)
        if f["bias"]:
            self._shift(f["shift4"], "residual alignment shift4", ALIGN_RANGE)
        self._stat_slots(f, 3)
        dy = self._operand(self.spm, "SPM A", f["a_addr"], m, n, f["a_stride"]).astype(np.int64)
        gamma = self._operand(self.spm, "SPM B", f["b_addr"], 1, n, 0).astype(np.int64)
        xhat = self._operand(self.spm, "SPM E", f["e_addr"], m, n, f["e_stride"]).astype(np.int64)
        rows = self.acc[self._index(self.acc, "ACC F", f["f_addr"], 1, m, 0)[0]]
        res = self._operand(self.spm, "SPM D", f["d_addr"], m, n, f["d_stride"]) if f["bias"] else None
        where_c = self._index(self.spm, "SPM C", f["c_addr"], m, n, f["c_stride"])
        rs = (rows & 0xFFFFFFFF)[:, None]
        k = (rows >> 32)[:, None]
        fh = ln_xhat_frac(n)
        g_acc = dy * gamma
        g = saturate16(self._round(g_acc, f["shift"], f, True, subseed(f["seed"], 0))).astype(np.int64)
        a_sum = g.sum(axis=-1, keepdims=True)
        b_sum = round_shift((g * xhat).sum(axis=-1, keepdims=True), fh, "rne")
        t = ((n * g - a_sum) << fh) - xhat * b_sum
        t_hat = saturate16(self._round(t, f["shift2"], f, True, subseed(f["seed"], 1))).astype(np.int64)
        dx_shift = f["shift3"] + k  # per row, checked as each row runs
        _fault(bool(((dx_shift < SHIFT_RANGE[0]) | (dx_shift > SHIFT_RANGE[1])).any()), Err.BAD_SHIFT,
               f"LN_BWD shift3 + k outside {SHIFT_RANGE}")
        acc = t_hat * rs
        if res is not None:
            _fault(bool(((f["shift4"] - k < ALIGN_RANGE[0]) | (f["shift4"] - k > ALIGN_RANGE[1])).any()),
                   Err.BAD_SHIFT, f"LN_BWD shift4 - k outside {ALIGN_RANGE}")
            acc = acc + align(res.astype(np.int64), f["shift4"] - k, 0)
        self.spm[where_c] = saturate16(self._round(acc, dx_shift, f, True, subseed(f["seed"], 2)))
        self._update_stat(f, max_abs_out(g_acc, f["shift"]), 0)
        self._update_stat(f, max_abs_out(t, f["shift2"]), 1)
        self._update_stat(f, max_abs_out(acc, np.broadcast_to(dx_shift, acc.shape)), 2)

    # ----------------------------------------------------------------------------------------- TOPK
    def _topk(self, f: dict[str, int]) -> None:
        m, n, k, lead = f["m"], f["n"], f["k"], f["imm"]
        self._dims(m, n, k)
        _fault(k > n or lead < 0, Err.BAD_DIMS, f"TOPK k={k} > n={n} or imm={lead} < 0")
        self._max_row(n, "top-k")
        scores = self._operand(self.acc, "ACC A", f["a_addr"], m, n, f["a_stride"])
        where_c = self._index(self.idx, "IDX C", f["c_addr"], m, lead + k, f["c_stride"])
        winners = topk_select(np.clip(scores, -(1 << 31), (1 << 31) - 1), k) + lead  # int32 scores
        lead_cols = np.broadcast_to(np.arange(lead, dtype=np.int64), (m, lead))
        self.idx[where_c] = np.concatenate([lead_cols, winners], axis=1).astype(np.uint16)
