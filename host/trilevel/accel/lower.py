"""Host lowering: every kernel of the layer-wise trainer as a command program for the engine.

A kernel call becomes one `Program`: the commands (docs/engine.md) and the DDR layout they address
(input, output and state buffers). DDR addresses in commands are byte offsets from the engine's
DDR_BASE register, where the driver puts the program's buffers, so programs need no relocation.
Programs are pure functions of the shapes, the fracs and the engine configuration and are cached
(`functools.lru_cache`); a program for new fracs at known shapes replays the cached one, rewriting only
the frac-dependent fields (`FRAC_FIELDS`). At run time `Program.bind(seed)` writes the call's
stochastic-rounding seeds, derived from the kernel seed by trilevel.intref's subseed rules, into the
commands that round stochastically.

Kernels are lowered stage by stage through DDR (LayerNorm -> linear -> per-image attention -> linear
...), each stage tiled to the configuration's scratchpad and accumulator sizes, consecutive stages in
alternate scratchpad halves. `Builder` derives the dependency tokens from what each command reads and
writes (on-chip intervals and DDR byte ranges): a command waits exactly for the earlier commands of
other modules it conflicts with (RAW, WAR, WAW), through the token queues between neighbouring modules,
and through a one-element GEMM relay in COMPUTE when a STORE must precede a LOAD. With two alternating
tile buffers, LOAD fills one while COMPUTE works on the other (double buffering) and STORE drains
results behind them.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np

from trilevel.accel import isa
from trilevel.accel.isa import Mem, Module, Op, SoftmaxSub, Vec
from trilevel.config import ViTConfig
from trilevel.intref import blocks, layers
from trilevel.intref.fixed import PROB_FRAC
from trilevel.intref.layers import ln_xhat_frac, subseed
from trilevel.intref.luts import GELU_LUT_FRAC, RSQRT_FRAC


class LoweringError(ValueError):
    """A kernel call cannot be lowered for this engine configuration (shape or range too large)."""


# ------------------------------------------------------------------------------------------ DDR layout
@dataclasses.dataclass(frozen=True)
class Buffer:
    """A 2-D DDR tensor of the program: `rows` x `cols` elements of `dtype`, row-major at `offset`."""

    name: str
    offset: int  # bytes from the program's base
    rows: int
    cols: int
    dtype: str  # numpy dtype string: "<i2", "<i8", "<u2"
    role: str  # "in" (host writes), "out" (host reads), "inout", "scratch"
    zero_start: bool = False  # an "out" accumulator the call starts at zero: its LOADs are zero fills

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def nbytes(self) -> int:
        return self.rows * self.cols * self.itemsize

    def address(self, row: int, col: int) -> int:
        return self.offset + (row * self.cols + col) * self.itemsize

    @property
    def row_bytes(self) -> int:
        return self.cols * self.itemsize


_MEM_OF_DTYPE = {"<i2": Mem.SPM, "<i8": Mem.ACC, "<u2": Mem.IDX}
# Address spaces of the dependency analysis.
_SPACE = {Mem.SPM: 0, Mem.ACC: 1, Mem.IDX: 2, Mem.STAT: 3}
_DDR = 4
_ANY_DDR = (_DDR, 0, 1 << 40)
Span = tuple[int, int, int]  # (space, first, end) half-open


def _span(space: int, addr: int, rows: int, cols: int, row_stride: int, col_stride: int = 1) -> Span:
    return (space, addr, addr + (rows - 1) * row_stride + (cols - 1) * col_stride + 1)


def accesses(op: Op, f: dict[str, int]) -> tuple[list[Span], list[Span]]:
    """The on-chip and DDR ranges a command reads and writes (bounding intervals), per docs/engine.md."""
    spm, acc, idx, stat = (_SPACE[m] for m in (Mem.SPM, Mem.ACC, Mem.IDX, Mem.STAT))
    m, n, k = f["m"], f["n"], f["k"]
    reads: list[Span] = []
    writes: list[Span] = []
    if op in (Op.LOAD, Op.STORE):
        mem = Mem(f["sub"])
        onchip = _span(_SPACE[mem], f["a_addr"], m, n, f["a_stride"])
        size = isa.DDR_ELEM_BYTES[mem]
        ddr = (
            _ANY_DDR
            if f["ta"]
            else (_DDR, f["index_base"], f["index_base"] + (m - 1) * f["index_stride"] + n * size)
        )
        if f["ta"]:
            reads.append(_span(idx, f["b_addr"], 1, m, 0))
        if op == Op.LOAD:
            writes.append(onchip)
            if not f["tb"]:
                reads.append(ddr)
        else:
            reads.append(onchip)
            writes.append(ddr)
        return reads, writes
    if f["stat"]:
        count = 3 if op == Op.VEC and f["sub"] == Vec.LN_BWD else 1
        reads.append((stat, f["slot"], f["slot"] + count))
        writes.append((stat, f["slot"], f["slot"] + count))
    if op == Op.GEMM:
        reads.append(
            _span(spm, f["a_addr"], k, m, f["a_stride"])
            if f["ta"]
            else _span(spm, f["a_addr"], m, k, f["a_stride"])
        )
        reads.append(
            _span(spm, f["b_addr"], k, n, f["b_stride"])
            if f["tb"]
            else _span(spm, f["b_addr"], n, k, f["b_stride"])
        )
        if f["acc"]:
            out = _span(acc, f["f_addr"], m, n, f["c_stride"])
            reads.append(out)
            writes.append(out)
            return reads, writes
        writes.append(_span(spm, f["c_addr"], m, n, f["c_stride"]))
        if f["bias"]:
            reads.append(_span(spm, f["d_addr"], 1, n, 0))
        if f["res"] or f["mask"]:
            reads.append(_span(spm, f["e_addr"], m, n, f["e_stride"]))
    elif op == Op.SOFTMAX:
        reads.append(_span(spm, f["a_addr"], m, n, f["a_stride"]))
        writes.append(_span(spm, f["c_addr"], m, n, f["c_stride"]))
        if f["sub"] == SoftmaxSub.BWD:
            reads.append(_span(spm, f["b_addr"], m, n, f["b_stride"]))
        else:
            if f["mask"]:
                reads.append(_span(spm, f["e_addr"], m, n, f["e_stride"]))
            if f["acc"]:
                reads.append(_span(acc, f["d_addr"], m, n, f["d_stride"]))
                writes.append(_span(acc, f["d_addr"], m, n, f["d_stride"]))
    elif op == Op.VEC:
        sub = Vec(f["sub"])
        if sub == Vec.MASK:
            if m > f["imm"]:
                reads.append(_span(idx, f["b_addr"], m - f["imm"], k, f["b_stride"]))
            writes.append(_span(spm, f["c_addr"], m, n, f["c_stride"]))
            return reads, writes
        reads.append(_span(spm, f["a_addr"], m, n, f["a_stride"]))
        if sub == Vec.LN_FWD:
            reads += [_span(spm, f["b_addr"], 1, n, 0), _span(spm, f["d_addr"], 1, n, 0)]
            writes += [
                _span(spm, f["c_addr"], m, n, f["c_stride"]),
                _span(spm, f["e_addr"], m, n, f["e_stride"]),
                _span(acc, f["f_addr"], 1, m, 0),
            ]
        elif sub == Vec.LN_BWD:
            reads += [
                _span(spm, f["b_addr"], 1, n, 0),
                _span(spm, f["e_addr"], m, n, f["e_stride"]),
                _span(acc, f["f_addr"], 1, m, 0),
            ]
            if f["bias"]:
                reads.append(_span(spm, f["d_addr"], m, n, f["d_stride"]))
            writes.append(_span(spm, f["c_addr"], m, n, f["c_stride"]))
        elif sub in (Vec.GELU_FWD, Vec.GELU_BWD):
            if sub == Vec.GELU_BWD:
                reads.append(_span(spm, f["b_addr"], m, n, f["b_stride"]))
            writes.append(_span(spm, f["c_addr"], m, n, f["c_stride"]))
        else:  # COLSUM, COLDOT
            if sub == Vec.COLDOT:
                reads.append(_span(spm, f["b_addr"], m, n, f["b_stride"]))
            reads.append(_span(acc, f["f_addr"], 1, n, 0))
            writes.append(_span(acc, f["f_addr"], 1, n, 0))
    elif op == Op.TOPK:
        reads.append(_span(acc, f["a_addr"], m, n, f["a_stride"]))
        writes.append(_span(idx, f["c_addr"], m, f["imm"] + k, f["c_stride"]))
    return reads, writes


def _overlap(a: Sequence[Span], b: Sequence[Span]) -> bool:
    return any(x[0] == y[0] and x[1] < y[2] and y[1] < x[2] for x in a for y in b)


# Token flags: (from module, to module) -> (push flag on the producer, pop flag on the consumer).
_LINK = {
    (Module.LOAD, Module.COMPUTE): ("push_next", "pop_prev"),
    (Module.COMPUTE, Module.LOAD): ("push_prev", "pop_next"),
    (Module.COMPUTE, Module.STORE): ("push_next", "pop_prev"),
    (Module.STORE, Module.COMPUTE): ("push_prev", "pop_next"),
}


@dataclasses.dataclass
class _Command:
    op: Op
    fields: dict[str, int]
    reads: list[Span]
    writes: list[Span]
    module: Module
    knows: dict[Module, int]  # highest index per module known complete before this command starts
    seed_path: tuple[int, ...] | None = None
    relay: bool = False


class Builder:
    """Appends commands, derives their dependency tokens and lays out the program's DDR buffers."""

    def __init__(self, config: isa.EngineConfig, kernel: str, template: Program | None = None) -> None:
        """With `template` (the same kernel lowered at the same shapes with other fracs) the builder
        replays it: every command keeps its fields and tokens and only the frac-dependent fields
        (FRAC_FIELDS) are rewritten, which is much faster than deriving the program again."""
        self.config = config
        self.kernel = kernel
        self.template = template
        self._replay_words = template.words.reshape(-1, isa.WORDS).tolist() if template is not None else None
        self._replay_pos = 0
        self.commands: list[_Command] = []
        self.buffers: dict[str, Buffer] = {}
        self.ddr_top = 0
        self._known = {x: dict.fromkeys(Module, -1) for x in Module}
        self._last = dict.fromkeys(Module, -1)
        self._pending: dict[Module, set[str]] = {x: set() for x in Module}
        self.scratch = config.spm_elems - 2  # two SPM words for relay GEMMs
        self.spm_half = 1  # the half of the scratchpad the last stage used (see _spm)
        self.acc_top = config.acc_elems  # below the last stage's small ACC regions (see stage_linear_bwd)
        # Whole DDR buffers a stage left in the scratchpad for the next stage (name -> SPM address, rows of
        # `cols` elements), in `onchip_spm` (see stage_linear_bwd's GeluEpilogue.keep)
        self.onchip: dict[str, int] = {}
        self.onchip_spm: Arena | None = None
        self.relays = 0

    # ---- DDR
    def buffer(
        self, name: str, rows: int, cols: int, dtype: str, role: str, zero_start: bool = False
    ) -> Buffer:
        if name in self.buffers:
            raise ValueError(f"buffer {name!r} allocated twice")
        buf = Buffer(name, self.ddr_top, rows, cols, dtype, role, zero_start)
        self.buffers[name] = buf
        self.ddr_top += -(-max(buf.nbytes, 1) // 64) * 64
        if self.ddr_top >= 1 << 31:
            raise LoweringError(f"{self.kernel}: {self.ddr_top} DDR bytes exceed the 32-bit DMA addresses")
        return buf

    def gradient(self, name: str, rows: int, cols: int, fresh: bool) -> Buffer:
        """An int64 gradient accumulator the call adds to ("inout"), or with `fresh` one it starts at zero
        on chip (a step's first micro-batch): "out", its LOADs are zero fills and read no DDR."""
        return self.buffer(name, rows, cols, "<i8", "out" if fresh else "inout", zero_start=fresh)

    # ---- commands
    def add(self, op: Op, seed_path: tuple[int, ...] | None = None, **fields: int) -> int:
        if self._replay_words is not None:
            return self._replay(op, fields)
        f = isa.decode(isa.encode(op, **fields))
        reads, writes = accesses(op, f)
        module = isa.MODULE_OF[op]
        # The other side of LOAD <-> STORE first: its relay through COMPUTE also orders COMPUTE.
        for other in sorted(Module, key=lambda mod: (mod == Module.COMPUTE, mod)):
            if other == module:
                continue
            producer = self._latest_conflict(other, module, reads, writes)
            if producer >= 0:
                self._order(other, module, producer)
        for flag in self._pending[module]:
            f[flag] = 1
        self._pending[module] = set()
        cmd = _Command(op, f, reads, writes, module, dict(self._known[module]), seed_path)
        self.commands.append(cmd)
        self._last[module] = len(self.commands) - 1
        return len(self.commands) - 1

    def _latest_conflict(self, other: Module, module: Module, reads: list[Span], writes: list[Span]) -> int:
        for i in range(self._last[other], self._known[module][other], -1):
            c = self.commands[i]
            if c.module == other and (
                _overlap(c.writes, reads) or _overlap(c.writes, writes) or _overlap(c.reads, writes)
            ):
                return i
        return -1

    def _sync(self, producer_module: Module, consumer: Module, producer: int | None = None) -> None:
        """Command `producer` (default: the last) of `producer_module` pushes a token that the next `consumer`
        command pops. Pushing from the latest conflicting command rather than the last one keeps token order:
        every later command of that module with a push on this queue was matched by a pop the consumer has
        already taken, so none lies after `producer` (the conflict search starts after the last match)."""
        source = self._last[producer_module] if producer is None else producer
        push, pop = _LINK[(producer_module, consumer)]
        self.commands[source].fields[push] = 1
        self._pending[consumer].add(pop)
        known = self._known[consumer]
        known[producer_module] = max(known[producer_module], source)
        for mod, idx in self.commands[source].knows.items():
            known[mod] = max(known[mod], idx)

    def _order(self, producer_module: Module, consumer: Module, producer: int) -> None:
        if (producer_module, consumer) in _LINK:
            self._sync(producer_module, consumer, producer)
            return
        # LOAD <-> STORE: through COMPUTE, reusing its last command when that already waited for producer.
        last_compute = self._last[Module.COMPUTE]
        if last_compute < 0 or self.commands[last_compute].knows[producer_module] < producer:
            self._sync(producer_module, Module.COMPUTE, producer)
            flags = {flag: 1 for flag in self._pending[Module.COMPUTE]}
            self._pending[Module.COMPUTE] = set()
            f = isa.decode(
                isa.encode(
                    Op.GEMM,
                    m=1,
                    n=1,
                    k=1,
                    a_addr=self.scratch,
                    b_addr=self.scratch,
                    c_addr=self.scratch + 1,
                    imm=1,
                    **flags,
                )
            )
            spm = _SPACE[Mem.SPM]
            self.commands.append(
                _Command(
                    Op.GEMM,
                    f,
                    [(spm, self.scratch, self.scratch + 1)],
                    [(spm, self.scratch + 1, self.scratch + 2)],
                    Module.COMPUTE,
                    dict(self._known[Module.COMPUTE]),
                    relay=True,
                )
            )
            self._last[Module.COMPUTE] = len(self.commands) - 1
            self.relays += 1
        self._sync(Module.COMPUTE, consumer)

    def relay_stores(self, mem: Mem, addr: int, size: int) -> None:
        """Order the next LOAD after the latest STORE that read on-chip [addr, addr + size) of `mem` (a
        relay through COMPUTE, now): a stage that loads nothing early (its dY on chip) would otherwise get
        that relay only at its first LOAD there (its weight gradient's ACC blocks), behind all of its own
        COMPUTE work."""
        if self._replay_words is not None:
            return
        span = [(_SPACE[mem], addr, addr + size)]
        producer = self._latest_conflict(Module.STORE, Module.LOAD, [], span)
        if producer >= 0:
            self._order(Module.STORE, Module.LOAD, producer)

    def dma(
        self,
        op: Op,
        mem: Mem,
        onchip: int,
        onchip_stride: int,
        buf: Buffer,
        row: int,
        col: int,
        rows: int,
        cols: int,
        zero: bool = False,
    ) -> int:
        """LOAD or STORE of the (rows x cols) block of `buf` at (row, col) from/to on-chip `onchip`; a LOAD
        of a `zero_start` buffer is a zero fill."""
        zero = zero or (op == Op.LOAD and buf.zero_start)
        if self._replay_words is not None:  # the template checked and encoded it
            return self._replay(op, {})
        if _MEM_OF_DTYPE.get(buf.dtype) != mem and not (mem == Mem.STAT and buf.dtype == "<i8"):
            raise ValueError(f"{buf.name}: {buf.dtype} does not match {mem.name}")
        if row + rows > buf.rows or col + cols > buf.cols:
            raise ValueError(f"{buf.name}: block ({row}+{rows}, {col}+{cols}) outside {buf.rows}x{buf.cols}")
        ddr = {} if zero else {"index_base": buf.address(row, col), "index_stride": buf.row_bytes}
        return self.add(
            op, sub=mem, m=rows, n=cols, a_addr=onchip, a_stride=onchip_stride, tb=int(zero), **ddr
        )

    def load(
        self, mem: Mem, onchip: int, onchip_stride: int, buf: Buffer, row: int, col: int, rows: int, cols: int
    ) -> int:
        return self.dma(Op.LOAD, mem, onchip, onchip_stride, buf, row, col, rows, cols)

    def store(
        self, mem: Mem, onchip: int, onchip_stride: int, buf: Buffer, row: int, col: int, rows: int, cols: int
    ) -> int:
        return self.dma(Op.STORE, mem, onchip, onchip_stride, buf, row, col, rows, cols)

    def zero_acc(self, addr: int, rows: int, cols: int) -> int:
        return self.add(Op.LOAD, sub=Mem.ACC, m=rows, n=cols, a_addr=addr, a_stride=cols, tb=1)

    def _replay(self, op: Op, fields: dict[str, int]) -> int:
        assert self.template is not None and self._replay_words is not None
        relays = self.template.relay_commands
        while self._replay_pos in relays:
            self._replay_pos += 1
        i = self._replay_pos
        self._replay_pos += 1
        words = self._replay_words
        if i >= len(words) or words[i][0] & 0xF != op:
            raise RuntimeError(f"{self.kernel}: replay diverged from its template at command {i}")
        row = words[i]
        for name in _FRAC_SET.intersection(fields):
            word, lsb, mask, lo, hi = _FRAC_PATCH[name]
            value = int(fields[name])
            if not lo <= value <= hi:
                raise isa.EncodeError(f"field {name}={value} outside [{lo}, {hi}]")
            row[word] = (row[word] & ~mask & 0xFFFFFFFF) | ((value << lsb) & mask)
        return i

    def finish(self, stat_keys: Sequence[str]) -> Program:
        """STORE STAT of every statistic slot, FINISH, and the program."""
        stats = self.buffer("stats", 1, max(1, len(stat_keys)), "<i8", "out")
        if stat_keys:
            self.dma(Op.STORE, Mem.STAT, 0, 0, stats, 0, 0, 1, len(stat_keys))
        self.add(Op.FINISH)
        if self.template is not None and self._replay_words is not None:
            if self._replay_pos != len(self._replay_words):
                raise RuntimeError(
                    f"{self.kernel}: replay ended at {self._replay_pos} of {len(self._replay_words)}"
                )
            return dataclasses.replace(
                self.template, words=np.array(self._replay_words, np.uint32).reshape(-1)
            )
        prog = self.buffer("program", len(self.commands), isa.WORDS, "<u4", "program")
        words = np.stack(
            [
                isa.encode(c.op, **{k: v for k, v in c.fields.items() if k not in ("op", "reserved")})
                for c in self.commands
            ]
        )
        seeds = tuple((i, c.seed_path) for i, c in enumerate(self.commands) if c.seed_path is not None)
        relays = frozenset(i for i, c in enumerate(self.commands) if c.relay)
        return Program(
            self.kernel,
            self.config,
            words.reshape(-1),
            dict(self.buffers),
            self.ddr_top,
            tuple(stat_keys),
            seeds,
            prog.offset,
            self.relays,
            relays,
        )


@dataclasses.dataclass(eq=False)
class Program:
    """A lowered kernel call: commands (seeds 0) and the DDR buffers they address (offsets from DDR_BASE)."""

    kernel: str
    config: isa.EngineConfig
    words: np.ndarray  # uint32 template
    buffers: dict[str, Buffer]
    ddr_bytes: int
    stat_keys: tuple[str, ...]
    seed_sites: tuple[tuple[int, tuple[int, ...]], ...]  # (command, subseed path from the kernel seed)
    program_offset: int
    relays: int
    relay_commands: frozenset[int] = frozenset()  # the relay GEMMs' indices

    @property
    def count(self) -> int:
        return self.words.size // isa.WORDS

    def bind(self, seed: int = 0) -> np.ndarray:
        """The command words with the SR seeds of kernel seed `seed`."""
        words = self.words.reshape(-1, isa.WORDS).copy()
        for path, commands in self._seed_groups.items():
            words[commands, isa.FIELDS["seed"][0]] = derive_seed(seed, path)
        return words.reshape(-1)

    @functools.cached_property
    def _seed_groups(self) -> dict[tuple[int, ...], np.ndarray]:
        groups: dict[tuple[int, ...], list[int]] = {}
        for cmd, path in self.seed_sites:
            groups.setdefault(path, []).append(cmd)
        return {path: np.array(cmds, dtype=np.int64) for path, cmds in groups.items()}

    def summary(self) -> dict[str, object]:
        """Commands per unit, DDR payload bytes and MACs (the static counts of the program)."""
        per_op: dict[str, int] = {}
        rd = wr = macs = 0
        for w in self.words.reshape(-1, isa.WORDS):
            f = isa.decode(w)
            op = Op(f["op"])
            name = (
                op.name
                if op not in (Op.VEC, Op.SOFTMAX)
                else f"{op.name}.{(Vec if op == Op.VEC else SoftmaxSub)(f['sub']).name}"
            )
            per_op[name] = per_op.get(name, 0) + 1
            if op == Op.LOAD and not f["tb"]:
                rd += f["m"] * f["n"] * isa.DDR_ELEM_BYTES[Mem(f["sub"])]
            elif op == Op.STORE:
                wr += f["m"] * f["n"] * isa.DDR_ELEM_BYTES[Mem(f["sub"])]
            elif op == Op.GEMM:
                macs += f["m"] * f["n"] * f["k"]
        return {
            "commands": self.count,
            "per_op": per_op,
            "relays": self.relays,
            "ddr_read_bytes": rd + isa.COMMAND_BYTES * self.count,
            "ddr_write_bytes": wr,
            "macs": macs,
            "ddr_footprint_bytes": self.ddr_bytes,
        }


def derive_seed(seed: int, path: tuple[int, ...]) -> int:
    for point in path:
        seed = subseed(seed, point)
    return seed


# ------------------------------------------------------------------------------------ scratchpad plan
class Arena:
    """Bump allocation of one on-chip memory region [base, base + size) for one stage."""

    def __init__(self, size: int, what: str, base: int = 0) -> None:
        self.size, self.top, self.what, self.base = size, 0, what, base

    def take(self, count: int) -> int:
        if self.top + count > self.size:
            raise LoweringError(f"{self.what}: needs {self.top + count} elements, the engine has {self.size}")
        addr = self.base + self.top
        self.top += count
        return addr

    @property
    def free(self) -> int:
        return self.size - self.top


# Row tiles per stage to aim for, so that LOAD, COMPUTE and STORE overlap over alternating buffers (one
# tile leaves nothing to overlap), but no smaller than PIPELINE_MIN_ROWS rows (fill and drain per GEMM).
PIPELINE_TILES, PIPELINE_MIN_ROWS = 4, 32


def spm_region(config: isa.EngineConfig) -> int:
    """Elements per SPM region of the RTL engine's banked memory (hls/rtl/engine/engine_mem.sv): SPM lanes
    (the next power of two >= max(8, R, C)) x config.spm_region_rows rows; a region serves two accesses per
    cycle, more stall the engine. Buffers that are used at the same time go in different regions where they
    fit."""
    lanes = max(8, config.array_rows, config.array_cols)
    return (1 << (lanes - 1).bit_length()) * config.spm_region_rows


def acc_region(config: isa.EngineConfig) -> int:
    """Elements per ACC region of the RTL engine (engine_mem.sv): ACC lanes (max(2, C)) x 1024 rows."""
    return max(2, config.array_cols) * 1024


def _place(spm: Arena, sizes: Sequence[int], rest: int, region: int) -> list[int]:
    """Addresses for buffers of `sizes` taken from `spm`, each starting at a region boundary when all of
    them and `rest` more elements still fit that way, else packed."""
    top, aligned = spm.base + spm.top, []
    for size in sizes:
        top = -(-top // region) * region
        aligned.append(top)
        top += size
    if top + rest <= spm.base + spm.size:
        spm.top = top - spm.base
        return aligned
    return [spm.take(size) for size in sizes]


def _regions_of(addr: int, size: int, region: int) -> range:
    """The SPM regions that `size` elements at `addr` touch (an empty buffer: its region)."""
    return range(addr // region, (addr + max(size, 1) - 1) // region + 1)


def _starts(lo: int, hi: int, region: int, placed: dict[str, int], sizes: dict[str, int]) -> list[int]:
    """Candidate addresses in [lo, hi): lo, the end of each placed buffer and each region boundary."""
    ends = (a + sizes[n] for n, a in placed.items())
    return sorted({lo, *ends, *range(-(-lo // region) * region, hi, region)})


def _place_apart(
    spm: Arena, sizes: dict[str, int], phases: Sequence[Sequence[str]], region: int, top_down: bool = False,
    per_region: int = 1, strict: bool = False
) -> dict[str, int] | None:
    """Addresses for the named buffers of `sizes` (taken from `spm` in that order) such that buffers used
    in the same phase (a group of `phases`: the buffers the units touch at the same time) share no SPM
    region where that fits: each buffer at the lowest region boundary or end of a placed buffer that
    keeps it off the regions of its phase mates (else at the lowest free address). `per_region`: up to
    that many phase mates may share a region (a region serves two accesses per cycle). `strict`: None
    unless every buffer is placed apart. `top_down`: the same from the arena's top down (the rest of `spm`
    is then taken). None (taking nothing) when the buffers do not all fit that way."""
    if top_down:
        end = -(-(spm.base + spm.size) // region) * region  # mirror about a region boundary
        mirror = Arena(spm.size - spm.top, spm.what, end - spm.base - spm.size)
        flipped = _place_apart(mirror, sizes, phases, region, per_region=per_region, strict=strict)
        if flipped is None:
            return None
        spm.top = spm.size
        return {name: end - a - sizes[name] for name, a in flipped.items()}
    mates = {name: {m for ph in phases if name in ph for m in ph if m != name} for name in sizes}
    lo, hi = spm.base + spm.top, spm.base + spm.size
    placed: dict[str, int] = {}

    def free(addr: int, size: int) -> bool:
        return addr + size <= hi and all(addr + size <= a or a + sizes[n] <= addr for n, a in placed.items())

    for name, size in sizes.items():
        count = collections.Counter(r for m in mates[name] if m in placed
                                    for r in _regions_of(placed[m], sizes[m], region))
        taken = {r for r, c in count.items() if c >= per_region}
        fits = [a for a in _starts(lo, hi, region, placed, sizes) if free(a, size)]
        apart = [a for a in fits if not taken.intersection(_regions_of(a, size, region))]
        if not fits or (strict and not apart):
            return None
        placed[name] = (apart or fits)[0]
    spm.top = max((a + sizes[n] for n, a in placed.items()), default=lo) - spm.base
    return placed


def _port_cost(at: dict[str, int], sizes: dict[str, int], phases: Sequence[dict[str, str]], region: int,
               limit: int = 2) -> int:
    """Accesses beyond `limit` per SPM region and phase of the placement `at`: in each phase (a dict: buffer
    -> the memory ports that touch it then, one letter each: A, B, C, D, E for the compute ports, L for
    LOAD, S for STORE) a region is touched by the union of the ports of the buffers in it."""
    over = 0
    for phase in phases:
        ports: dict[int, set[str]] = collections.defaultdict(set)
        for name, use in phase.items():
            if name in at and use:
                for r in _regions_of(at[name], sizes[name], region):
                    ports[r].update(use)
        over += sum(max(0, len(p) - limit) for p in ports.values())
    return over


def _place_ports(
    spm: Arena, sizes: dict[str, int], phases: Sequence[dict[str, str]], region: int,
    spill: tuple[int, int] | None = None, limit: int = 2
) -> tuple[dict[str, int], int] | None:
    """Addresses for the buffers of `sizes` in `spm` such that in every phase (see _port_cost) each SPM
    region is touched by at most `limit` ports (a region serves two accesses per cycle): greedily, each
    buffer at the lowest region boundary or end of a placed buffer where that holds, else in `spill`
    ([lo, hi): memory outside `spm` that is free while this stage runs), from its top down, where it
    holds, else at the lowest free address of `spm`; in the order of `sizes` and in that order with each
    buffer moved first, keeping the placement with the fewest excess accesses (_port_cost), then the
    least spilled. Returns (addresses, excess accesses), setting spm.top; None (taking nothing) when the
    buffers do not fit."""
    lo, hi = spm.base + spm.top, spm.base + spm.size
    names = list(sizes)
    best: tuple[tuple[int, int], dict[str, int]] | None = None

    def free(placed: dict[str, int], addr: int, size: int, a_lo: int, a_hi: int) -> bool:
        return a_lo <= addr and addr + size <= a_hi and all(
            addr + size <= a or a + sizes[n] <= addr for n, a in placed.items())

    def fits_ports(placed: dict[str, int], name: str, addr: int) -> bool:
        for phase in phases:
            use = phase.get(name, "")
            for r in _regions_of(addr, sizes[name], region) if use else ():
                ports = set(use)
                for m, a in placed.items():
                    if phase.get(m) and r in _regions_of(a, sizes[m], region):
                        ports.update(phase[m])
                if len(ports) > limit:
                    return False
        return True

    for order in [names] + [[n] + [m for m in names if m != n] for n in names[1:]]:
        placed: dict[str, int] = {}
        spilled = 0
        for name in order:
            size = sizes[name]
            fits = [a for a in _starts(lo, hi, region, placed, sizes) if free(placed, a, size, lo, hi)]
            good = [a for a in fits if fits_ports(placed, name, a)]
            if not good and spill is not None:
                ends = sorted({spill[1], *(a for a in placed.values() if spill[0] <= a < spill[1]),
                               *range(-(-spill[0] // region) * region, spill[1], region)}, reverse=True)
                good = [e - size for e in ends
                        if free(placed, e - size, size, *spill) and fits_ports(placed, name, e - size)]
                spilled += size if good else 0
            if not good and not fits:
                break
            placed[name] = (good or fits)[0]
        else:
            key = (_port_cost(placed, sizes, phases, region, limit), spilled)
            if best is None or key < best[0]:
                best = (key, placed)
    if best is None:
        return None
    inside = [a + sizes[n] for n, a in best[1].items() if lo <= a < hi]
    spm.top = max(inside, default=lo) - spm.base
    return best[1], best[0][0]


def _rows_that_fit(free: int, per_row: int, total: int, what: str) -> int:
    pipelined = max(PIPELINE_MIN_ROWS, -(-total // PIPELINE_TILES))
    rows = min(total, free // max(per_row, 1), 0xFFFF, pipelined)
    if rows < 1:
        raise LoweringError(f"{what}: not even one row ({per_row} elements) fits the {free} free elements")
    return rows


def _tiles(total: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(step, total - s)) for s in range(0, total, step)]


def _spm(b: Builder, what: str, need: int | None = None, at_top: bool = False) -> Arena:
    """A stage's scratchpad: alternately the lower and the upper half, so that a stage's first loads (its
    weights) need not wait until the previous stage is done with its buffers (the dependency tokens then
    let them overlap); the whole scratchpad when the stage `need`s more than a half, or with `at_top`
    exactly `need` elements at its top, so that the next stage (in the lower half) can load below them."""
    half = b.scratch // 2
    if need is not None and need > half:
        if at_top and need <= b.scratch:
            b.spm_half = 1
            return Arena(need, f"{b.kernel} {what} (SPM, top)", b.scratch - need)
        return Arena(b.scratch, f"{b.kernel} {what} (SPM)")
    b.spm_half ^= 1
    return Arena(half, f"{b.kernel} {what} (SPM, half)", b.spm_half * half)


ALIGN = (-47, 62)  # operand alignment shifts (fsim.ALIGN_RANGE); requantizer shifts: [-16, 62]


def _check_shift(value: int, what: str, lo: int = -16, hi: int = 62) -> int:
    if not lo <= value <= hi:
        raise LoweringError(f"{what} shift {value} outside the requantizer's range [{lo}, {hi}]")
    return value


# ----------------------------------------------------------------------------------------- stages

def _linear_fwd_tile(
    b: Builder,
    x_addr: int,
    w_addr: int,
    bias_addr: int,
    y_addr: int,
    r_addr: int,
    g_addr: int,
    m0: int,
    mm: int,
    n0: int,
    nn: int,
    din: int,
    bias: Buffer | None,
    res: Buffer | None,
    y: Buffer,
    shift: int,
    shift2: int,
    shift3: int,
    slot: int,
    gelu: GeluEpilogue | None,
) -> None:
    """One output tile y[m0:m0+mm, n0:n0+nn] of stage_linear_fwd with x and W on chip: the residual tile's
    LOAD, the GEMM (+ bias, + residual), the STORE of y and, with `gelu`, VEC GELU_FWD and its STORE."""
    if res is not None:
        b.load(Mem.SPM, r_addr, nn, res, m0, n0, mm, nn)
    b.add(
        Op.GEMM,
        m=mm,
        n=nn,
        k=din,
        a_addr=x_addr,
        a_stride=din,
        b_addr=w_addr,
        b_stride=din,
        c_addr=y_addr,
        c_stride=nn,
        d_addr=bias_addr if bias is not None else 0,
        e_addr=r_addr if res is not None else 0,
        e_stride=nn if res is not None else 0,
        imm=1,
        shift=shift,
        shift2=shift2 if bias is not None else 0,
        shift3=shift3 if res is not None else 0,
        bias=int(bias is not None),
        res=int(res is not None),
        stat=1,
        slot=slot,
    )
    b.store(Mem.SPM, y_addr, nn, y, m0, n0, mm, nn)
    if gelu is not None:
        b.add(
            Op.VEC,
            sub=Vec.GELU_FWD,
            m=mm,
            n=nn,
            a_addr=y_addr,
            a_stride=nn,
            c_addr=g_addr,
            c_stride=nn,
            shift=gelu.shift,
            imm=gelu.frac_x,
            stat=1,
            slot=gelu.slot,
        )
        b.store(Mem.SPM, g_addr, nn, gelu.out, m0, n0, mm, nn)


# A linear whose x, weight and outputs all fit the scratchpad grows the computed rectangle of y: LOAD
# alternately extends the rows of x or the columns of W (n-tiles) that are on chip, in pieces of
# GROW_ROWS / GROW_COLS, and after each piece COMPUTE runs the one GEMM the new strip of y needs (new rows
# x all loaded columns, or all loaded rows x new columns) and STORE writes that strip. The array starts
# after the first two pieces instead of after all operands, and it runs while the rest streams in.
GROW_ROWS, GROW_COLS = 32, 32


def _linear_fwd_grown(
    b: Builder,
    spm: Arena,
    x: Buffer,
    w: Buffer,
    bias: Buffer | None,
    res: Buffer | None,
    y: Buffer,
    shift: int,
    shift2: int,
    shift3: int,
    slot: int,
    gelu: GeluEpilogue | None,
) -> bool:
    """stage_linear_fwd with every operand resident (see GROW_ROWS); False (emitting nothing) when they
    do not fit `spm`."""
    rows, din, dout = x.rows, x.cols, w.rows
    outs = 1 + (res is not None) + (gelu is not None)
    if rows > 0xFFFF or rows * din + dout * din + dout + outs * rows * dout > spm.free:
        return False
    # x (GEMM A, LOAD), W (GEMM B, LOAD) and y (GEMM C, STORE) each from a region boundary when they fit so
    # (at most two accesses per region and cycle): bias, residual and GELU output after them.
    x_addr, w_addr, y_addr = _place(
        spm,
        (rows * din, dout * din, rows * dout),
        dout + (outs - 1) * rows * dout,
        spm_region(b.config),
    )
    bias_addr = spm.take(dout)
    r_addr = spm.take(rows * dout) if res is not None else 0
    g_addr = spm.take(rows * dout) if gelu is not None else 0
    row_step = max(b.config.array_rows, GROW_ROWS // b.config.array_rows * b.config.array_rows)
    col_step = max(b.config.array_cols, GROW_COLS // b.config.array_cols * b.config.array_cols)
    if bias is not None:
        b.load(Mem.SPM, bias_addr, 0, bias, 0, 0, 1, dout)
    have_rows = have_cols = used = 0
    while have_rows < rows or have_cols < dout:
        # extend the side that is behind (relative to its pieces), so the rectangle grows evenly
        if have_cols >= dout or (have_rows < rows and have_rows // row_step <= have_cols // col_step):
            m0, mm, n0, nn = have_rows, min(row_step, rows - have_rows), 0, have_cols
            b.load(Mem.SPM, x_addr + m0 * din, din, x, m0, 0, mm, din)
            have_rows += mm
        else:
            m0, mm, n0, nn = 0, have_rows, have_cols, min(col_step, dout - have_cols)
            b.load(Mem.SPM, w_addr + n0 * din, din, w, n0, 0, nn, din)
            have_cols += nn
        if mm == 0 or nn == 0:
            continue
        at = used  # each strip of y contiguous (c_stride nn): the dependency spans stay disjoint
        used += mm * nn
        _linear_fwd_tile(b, x_addr + m0 * din, w_addr + n0 * din, bias_addr + n0, y_addr + at, r_addr + at,
                         g_addr + at, m0, mm, n0, nn, din,
                         bias, res, y, shift, shift2, shift3, slot, gelu)
    return True


# A linear with its activation resident streams the weight in n-tiles of STREAM_COLS output columns (a
# multiple of the array's columns) through two buffers: LOAD brings tile j + 1 while the array computes
# tile j and STORE writes tile j - 1's outputs (AXI reads and writes are separate channels). The first
# n-tile's GEMMs take x in chunks of FIRST_CHUNK_ROWS rows as they arrive, so the array starts after one
# chunk instead of after all of x; later n-tiles run as one GEMM over all rows (fewer fills and drains).
STREAM_COLS, FIRST_CHUNK_ROWS = 64, 64


def _linear_fwd_streamed(
    b: Builder,
    spm: Arena,
    x: Buffer,
    w: Buffer,
    bias: Buffer | None,
    res: Buffer | None,
    y: Buffer,
    shift: int,
    shift2: int,
    shift3: int,
    slot: int,
    gelu: GeluEpilogue | None,
) -> bool:
    """stage_linear_fwd with x resident and the weight streamed (see STREAM_COLS); False (emitting
    nothing) when x and two weight/output tiles do not fit `spm`."""
    rows, din, dout = x.rows, x.cols, w.rows
    cols, arr_rows = b.config.array_cols, b.config.array_rows
    nt = min(dout, max(cols, STREAM_COLS // cols * cols))
    outs = 1 + (res is not None) + (gelu is not None)
    if rows > 0xFFFF or rows * din + 2 * (nt * din + nt + outs * rows * nt) > spm.free:
        return False
    x_addr = spm.take(rows * din)
    bufs = [
        (
            spm.take(nt * din),
            spm.take(nt),
            spm.take(rows * nt),
            spm.take(rows * nt if res is not None else 0),
            spm.take(rows * nt if gelu is not None else 0),
        )
        for _ in range(2)
    ]
    chunk = max(arr_rows, FIRST_CHUNK_ROWS // arr_rows * arr_rows)
    for j, (n0, nn) in enumerate(_tiles(dout, nt)):
        w_addr, bias_addr, y_addr, r_addr, g_addr = bufs[j % 2]
        b.load(Mem.SPM, w_addr, din, w, n0, 0, nn, din)
        if bias is not None:
            b.load(Mem.SPM, bias_addr, 0, bias, 0, n0, 1, nn)
        for m0, mm in _tiles(rows, chunk) if j == 0 else [(0, rows)]:
            if j == 0:
                b.load(Mem.SPM, x_addr + m0 * din, din, x, m0, 0, mm, din)
            _linear_fwd_tile(b, x_addr + m0 * din, w_addr, bias_addr, y_addr + m0 * nn, r_addr + m0 * nn,
                             g_addr + m0 * nn, m0, mm, n0, nn, din,
                             bias, res, y, shift, shift2, shift3, slot, gelu)
    return True


def stage_linear_fwd(
    b: Builder,
    x: Buffer,
    w: Buffer,
    bias: Buffer | None,
    res: Buffer | None,
    y: Buffer,
    shift: int,
    shift2: int,
    shift3: int,
    slot: int,
    gelu: GeluEpilogue | None = None,
) -> None:
    """y = x W^T (+ bias aligned by shift2) (+ residual aligned by shift3), RNE by shift; stat slot. With
    `gelu`, each output tile also goes through VEC GELU_FWD into gelu.out while it is in the scratchpad.
    When x fits the scratchpad it stays resident and the weight streams through (_linear_fwd_streamed);
    otherwise the weight (or an n-tile of it) stays and x streams in row tiles."""
    rows, din, dout = x.rows, x.cols, w.rows
    region = spm_region(b.config)
    outs = 1 + (res is not None) + (gelu is not None)
    grown = sum(-(-n // region) * region for n in (rows * din, dout * din, rows * dout))
    grown += dout + (outs - 1) * rows * dout
    spm = _spm(b, "linear", grown if grown <= b.scratch else None)  # whole SPM for region-aligned operands
    for variant in (_linear_fwd_grown, _linear_fwd_streamed):
        if variant(b, spm, x, w, bias, res, y, shift, shift2, shift3, slot, gelu):
            return
    nt = dout if dout * (din + 1) <= spm.free // 2 else max(1, (spm.free // 2) // (din + 1))
    per_row = din + nt + (nt if res is not None else 0) + (nt if gelu is not None else 0)
    names = ["x", "y"] + ["r"] * (res is not None) + ["g"] * (gelu is not None)
    at, mt = _linear_fwd_tiles(b, spm, rows, din, nt, per_row, names)
    w_addr, b_addr = at["w"], at["bias"]
    bufs = [tuple(at.get(f"{n}{i}", 0) for n in ("x", "r", "y", "g")) for i in range(2)]
    step = 0
    for n0, nn in _tiles(dout, nt):
        b.load(Mem.SPM, w_addr, din, w, n0, 0, nn, din)
        if bias is not None:
            b.load(Mem.SPM, b_addr, 0, bias, 0, n0, 1, nn)
        for m0, mm in _tiles(rows, mt):
            x_addr, r_addr, y_addr, g_addr = bufs[step % 2]
            step += 1
            b.load(Mem.SPM, x_addr, din, x, m0, 0, mm, din)
            _linear_fwd_tile(b, x_addr, w_addr, b_addr, y_addr, r_addr, g_addr, m0, mm, n0, nn, din,
                             bias, res, y, shift, shift2, shift3, slot, gelu)


def _tiles_apart(b: Builder, arenas: Sequence[Arena], fixed: dict[str, int], per_row: dict[str, int],
                 phases: Sequence[Sequence[str]], most_rows: Callable[[Arena], int]
                 ) -> tuple[dict[str, int], int] | None:
    """Addresses of a double-buffered row-tiled stage: the `fixed` buffers and, for tile i = 0, 1, buffers
    f"{name}{i}" of per_row[name] elements a row. The largest row tile of whole array tiles (at most
    most_rows(arena)) whose buffers fit the first of `arenas` that can hold them with at most two buffers of
    each of `phases` (the buffers in use at once) per SPM region (a region serves two accesses per cycle);
    None when no tile does."""
    region, arr = spm_region(b.config), b.config.array_rows
    for arena in arenas:
        for tile in range(most_rows(arena) // arr * arr, 0, -arr):
            sizes = {**fixed, **{f"{n}{i}": tile * k for i in range(2) for n, k in per_row.items()}}
            at = _place_apart(arena, sizes, phases, region, per_region=2, strict=True)
            if at is not None:
                return at, tile
    return None


def _linear_fwd_tiles(b: Builder, spm: Arena, rows: int, din: int, nt: int, per_row: int,
                      names: Sequence[str]) -> tuple[dict[str, int], int]:
    """Addresses ("w", "bias", f"{name}{0/1}") and the row tile of the row-tiled linear forward. W, the
    bias, both x tiles and both output tiles are in use at once (GEMM A / B / D / C, LOAD, STORE): placed
    by _tiles_apart in `spm` or else the whole scratchpad; where that fails, the most rows that fit `spm`,
    packed."""
    fixed = {"w": nt * din, "bias": nt}
    widths = {n: din if n == "x" else nt for n in names}

    def most_rows(arena: Arena) -> int:
        return _rows_that_fit((arena.free - nt * (din + 1)) // 2, per_row, rows, "linear forward tile")

    arenas = (spm, Arena(b.scratch, spm.what)) if spm.size < b.scratch else (spm,)
    placed = _tiles_apart(b, arenas, fixed, widths, [[*fixed, *(f"{n}{i}" for i in range(2) for n in names)]],
                          most_rows)
    if placed is not None:
        return placed
    mt = most_rows(spm)
    at = _place_apart(spm, {**fixed, **{f"{n}{i}": mt * k for i in range(2) for n, k in widths.items()}}, (),
                      spm_region(b.config))
    if at is None:
        raise LoweringError(f"linear forward: {mt} rows do not fit the scratchpad")
    return at, mt


@dataclasses.dataclass(frozen=True)
class GeluEpilogue:
    """GELU on a linear's output tiles while they are on chip (forward: out = GELU(y); backward:
    out = dGELU(dx) with x = the saved GELU input tile, SR with seed_path and out's flat indices)."""

    out: Buffer
    shift: int
    frac_x: int
    slot: int
    x: Buffer | None = None  # backward: the GELU input
    seed_path: tuple[int, ...] | None = None
    # backward: out stays whole in the scratchpad (not stored) for the next stage_linear_bwd, whose dY it
    # is (Builder.onchip), as do this stage's dY (a later LnBwdEpilogue's residual) and the scratchpad
    # holding them; the caller checks that they and both stages' X fit half the scratchpad
    keep: bool = False


@dataclasses.dataclass(frozen=True)
class LnBwdEpilogue:
    """The LayerNorm backward on a linear's dX tiles while they are on chip (stage_ln_bwd's operands)."""

    gamma: Buffer
    xhat: Buffer
    row_stats: Buffer
    res: Buffer | None
    out: Buffer
    grad_g: Buffer
    grad_b: Buffer
    shifts: tuple[int, int, int, int]
    seed_path: tuple[int, ...]
    slot: int


def _ln_bwd_tile(
    b: Builder,
    ln: LnBwdEpilogue,
    m0: int,
    mm: int,
    dim: int,
    dy_addr: int,
    g_addr: int,
    h_addr: int,
    r_addr: int,
    o_addr: int,
    rs_acc: int,
    grads_acc: int,
    res_onchip: int | None = None,
) -> None:
    """LN_BWD of rows m0..m0+mm whose dY tile is at dy_addr, the gamma/beta gradients into ACC grads_acc;
    res_onchip: the SPM address of the whole residual (rows of dim) when it is on chip (not loaded)."""
    b.load(Mem.SPM, h_addr, dim, ln.xhat, m0, 0, mm, dim)
    b.load(Mem.ACC, rs_acc, 0, ln.row_stats, 0, m0, 1, mm)
    if res_onchip is not None:
        r_addr = res_onchip + m0 * dim
    elif ln.res is not None:
        b.load(Mem.SPM, r_addr, dim, ln.res, m0, 0, mm, dim)
    shift, shift2, shift3, shift4 = ln.shifts
    b.add(
        Op.VEC,
        seed_path=ln.seed_path,
        sub=Vec.LN_BWD,
        m=mm,
        n=dim,
        a_addr=dy_addr,
        a_stride=dim,
        b_addr=g_addr,
        e_addr=h_addr,
        e_stride=dim,
        f_addr=rs_acc,
        d_addr=r_addr if ln.res is not None else 0,
        d_stride=dim if ln.res is not None else 0,
        bias=int(ln.res is not None),
        c_addr=o_addr,
        c_stride=dim,
        shift=shift,
        shift2=shift2,
        shift3=shift3,
        shift4=shift4 if ln.res is not None else 0,
        sr=1,
        index_base=m0 * dim,
        index_stride=dim,
        stat=1,
        slot=ln.slot,
    )
    b.add(
        Op.VEC,
        sub=Vec.COLDOT,
        m=mm,
        n=dim,
        a_addr=dy_addr,
        a_stride=dim,
        b_addr=h_addr,
        b_stride=dim,
        f_addr=grads_acc,
    )
    b.add(Op.VEC, sub=Vec.COLSUM, m=mm, n=dim, a_addr=dy_addr, a_stride=dim, f_addr=grads_acc + dim)
    b.store(Mem.SPM, o_addr, dim, ln.out, m0, 0, mm, dim)


# ACC blocks of the weight gradient in flight at once: LOAD of block i + GRAD_BUFS waits for STORE of
# block i (the same ACC region), so with 3 or more the old-gradient loads, the accumulation and the
# write-backs overlap (4: 2% fewer modelled cycles than 3 on DeiT-T's MLP backward).
GRAD_BUFS = 4
# _weight_grad_streamed's ACC blocks in flight: fewer, wider blocks than GRAD_BUFS, as each block streams
# a column slice of dY or X in rows of its width (RTL, DeiT-T at 8 x 197 tokens: 3 slots 0.4-0.8% fewer
# cycles than 4, 1.5-2.3% fewer than 2)
STREAM_GRAD_BUFS = 3
STREAM_MIN_COLS = 64  # narrowest streamed slice (columns) worth its DDR rows; else the operands re-read
ACC_RESERVE = 16  # the top 1/16 of the ACC holds the stages' small regions (see stage_linear_bwd)


def _grad_block(dout: int, din: int, cap: int, arr_rows: int, arr_cols: int) -> tuple[int, int]:
    """(ot, dt): the weight-gradient block of at most `cap` elements: whole gradient rows when one fits (a
    block is then one contiguous DDR range, so the dependency analysis sees no false overlap between
    neighbouring blocks), else the largest block in whole array tiles."""
    if din <= cap:
        ot = min(dout, cap // din)
        return (ot // arr_rows * arr_rows if ot >= arr_rows else ot), din
    best = (0, 0, 0)
    for ot in sorted({*range(arr_rows, dout + 1, arr_rows), dout}):
        dt = min(din, cap // ot)
        if dt < din and dt >= arr_cols:
            dt = dt // arr_cols * arr_cols
        if dt >= 1:
            best = max(best, (ot * dt, dt, ot))
    if best[0] == 0:
        return 1, min(din, cap)
    return best[2], best[1]


def _grad_slots(b: Builder, acc_base: int, acc_free: int, bufs: int = GRAD_BUFS) -> tuple[int, list[int]]:
    """(cap, slots): `bufs` weight-gradient block slots of at most cap elements in the free ACC."""
    region = acc_region(b.config)
    if bufs % 2 == 0 and acc_base == 0 and acc_free > region and acc_free - region >= bufs // 2:
        cap = min(region, acc_free - region) // (bufs // 2)
        return cap, [(i % 2) * region + (i // 2) * cap for i in range(bufs)]
    cap = acc_free // bufs
    return cap, [acc_base + i * cap for i in range(bufs)]


def _grad_gemm(b: Builder, m: int, n: int, k: int, a: tuple[int, int], bb: tuple[int, int], acc: int) -> None:
    """ACC block [m, n] at `acc` += A^T B over k token rows: A = (SPM address, row stride) of dY's block
    columns, bb the same of X's (both token-major, hence ta = tb = 1)."""
    b.add(Op.GEMM, m=m, n=n, k=k, a_addr=a[0], a_stride=a[1], ta=1, b_addr=bb[0], b_stride=bb[1], tb=1,
          acc=1, f_addr=acc, c_stride=n)


def _grad_blocks(
    b: Builder,
    grad_w: Buffer,
    blocks: Sequence[tuple[int, int, int, int]],
    slots: Sequence[int],
    accumulate: Callable[[int, int, int, int, int], None],
) -> None:
    """Weight-gradient blocks (o0, oo, d0, dd) of grad_w rotating through the ACC `slots`: LOAD brings each
    block's old gradient len(slots) - 1 blocks ahead, accumulate(o0, oo, d0, dd, acc) emits its GEMMs, and
    STORE writes it back. Program order: the loads run that far ahead, so the relay that orders block i's
    load after the store of the block before it in that slot's region sits behind a GEMM done by then."""
    nbuf = len(slots)

    def load(i: int) -> None:
        o0, oo, d0, dd = blocks[i]
        b.load(Mem.ACC, slots[i % nbuf], dd, grad_w, o0, d0, oo, dd)

    for i in range(min(nbuf - 1, len(blocks))):
        load(i)
    for i, (o0, oo, d0, dd) in enumerate(blocks):
        accumulate(o0, oo, d0, dd, slots[i % nbuf])
        b.store(Mem.ACC, slots[i % nbuf], dd, grad_w, o0, d0, oo, dd)
        if i + nbuf - 1 < len(blocks):
            load(i + nbuf - 1)


def _stream_room(rows: int, other: int, config: isa.EngineConfig) -> int:
    """The least SPM that _weight_grad_streamed needs besides the resident operand (two token tiles of the
    streamed operand's narrowest column slice)."""
    return 2 * min(rows, PIPELINE_MIN_ROWS) * min(other, max(config.array_rows, config.array_cols))


def _weight_grad_streamed(
    b: Builder,
    dy: Buffer,
    x: Buffer,
    grad_w: Buffer,
    acc_base: int,
    acc_free: int,
    dy_res: int | None = None,
    spm: Arena | None = None,
) -> bool:
    """grad_w += dY^T X with one operand resident in the scratchpad and the other streamed, each read from
    DDR once: ACC blocks of all dY columns by a slice of X's (dY resident, at dy_res in `spm` when given; X's
    column slices streamed) or of all X columns by a slice of dY's (X resident; dY's slices streamed), each
    accumulated over token tiles of its slice, rotating through STREAM_GRAD_BUFS ACC slots (LOAD brings the
    next block's old gradient while the array accumulates one and STORE writes the previous back). For dY
    and X that do not both fit half the scratchpad; False (emitting nothing) when neither fits with room
    for two tiles of the other."""
    rows, dout, din = dy.rows, dy.cols, x.cols
    if rows > 0xFFFF:
        return False
    nbuf = STREAM_GRAD_BUFS
    cap, slots = _grad_slots(b, acc_base, acc_free, nbuf)
    free = spm.free if spm is not None else b.scratch // 2
    plan = None
    for keep_dy in [True] if dy_res is not None else [True, False]:
        res_cols, other = (dout, din) if keep_dy else (din, dout)
        unit = b.config.array_cols if keep_dy else b.config.array_rows
        room = free - (0 if dy_res is not None else rows * res_cols)
        step = min(other, cap // max(res_cols, 1), room // (2 * min(rows, PIPELINE_MIN_ROWS)))
        if step >= unit:
            step = step // unit * unit
        if step >= (1 if dy_res is not None else min(other, STREAM_MIN_COLS)):
            tt = min(rows, room // (2 * step), 0xFFFF, max(PIPELINE_MIN_ROWS, -(-rows // PIPELINE_TILES)))
            plan = (keep_dy, step, tt)
            break
    if plan is None:
        if dy_res is not None:
            raise LoweringError(f"{b.kernel}: weight gradient with dY resident does not fit")
        return False
    keep_dy, step, tt = plan
    spm = spm or _spm(b, "weight gradient")
    res, res_cols = (dy, dout) if keep_dy else (x, din)
    res_addr = dy_res if dy_res is not None else spm.take(rows * res_cols)
    if dy_res is None:
        b.load(Mem.SPM, res_addr, res_cols, res, 0, 0, rows, res_cols)
    if keep_dy:
        blocks = [(0, dout, d0, dd) for d0, dd in _tiles(din, step)]
    else:
        blocks = [(o0, oo, 0, din) for o0, oo in _tiles(dout, step)]
    bufs = [spm.take(tt * step) for _ in range(2)]
    tiles = 0

    def accumulate(o0: int, oo: int, d0: int, dd: int, acc: int) -> None:
        nonlocal tiles
        for t0, tn in _tiles(rows, tt):
            buf = bufs[tiles % 2]
            tiles += 1
            if keep_dy:
                b.load(Mem.SPM, buf, dd, x, t0, d0, tn, dd)
                _grad_gemm(b, oo, dd, tn, (res_addr + t0 * dout + o0, dout), (buf, dd), acc)
            else:
                b.load(Mem.SPM, buf, oo, dy, t0, o0, tn, oo)
                _grad_gemm(b, oo, dd, tn, (buf, oo), (res_addr + t0 * din + d0, din), acc)

    _grad_blocks(b, grad_w, blocks, slots, accumulate)
    return True


def _weight_grad_resident(
    b: Builder,
    dy: Buffer,
    x: Buffer,
    grad_w: Buffer,
    acc_base: int,
    acc_free: int,
    dy_res: int | None = None,
    spm: Arena | None = None,
) -> bool:
    """grad_w += dY^T X with dY and X resident in the scratchpad (each read from DDR once) and the gradient
    in ACC blocks rotating through GRAD_BUFS regions of the free ACC: LOAD brings the next blocks' old
    gradient while the array accumulates one and STORE writes the previous back. False (emitting
    nothing) when dY and X do not fit half the scratchpad."""
    rows, dout, din = dy.rows, dy.cols, x.cols
    need = rows * (din + (dout if dy_res is None else 0))
    spm = spm or _spm(b, "weight gradient", need, at_top=True)
    # The GRAD_BUFS block slots alternate between two ACC regions (acc_region) when the free ACC spans
    # them: the accumulating GEMM reads and writes its block's region while LOAD (the next block) and
    # STORE (the previous one) use the other, two accesses per region and cycle.
    cap, slots = _grad_slots(b, acc_base, acc_free)
    if need > spm.free or cap < 1:
        if dy_res is not None:
            raise LoweringError(f"{b.kernel}: weight gradient with dY resident does not fit")
        return False
    dy_addr = spm.take(rows * dout) if dy_res is None else dy_res
    x_addr = spm.take(rows * din)
    ot, dt = _grad_block(dout, din, cap, b.config.array_rows, b.config.array_cols)
    if dy_res is None:
        b.load(Mem.SPM, dy_addr, dout, dy, 0, 0, rows, dout)
    b.load(Mem.SPM, x_addr, din, x, 0, 0, rows, din)
    blocks = [(o0, oo, d0, dd) for o0, oo in _tiles(dout, ot) for d0, dd in _tiles(din, dt)]

    def accumulate(o0: int, oo: int, d0: int, dd: int, acc: int) -> None:
        _grad_gemm(b, oo, dd, rows, (dy_addr + o0, dout), (x_addr + d0, din), acc)

    _grad_blocks(b, grad_w, blocks, slots, accumulate)
    return True


# stage_linear_bwd's SPM buffers (two tiles per kind) and the phases in which units use them together: the
# dX GEMM (A dY, B W, C dX) while LOAD brings the next tiles and STORE writes the previous outputs; the
# epilogue (VEC GELU_BWD or LN_BWD) on one tile. See ATTN_FWD_PHASES.
LINEAR_BWD_PHASES = (
    ("w", "dy", "dx", "h", "g", "xh", "r", "o"),
    ("dx", "h", "g", "xh", "r", "o", "gamma"),
)


def _linear_bwd_ports(gelu: bool, ln: bool, dx_stored: bool) -> tuple[dict[str, str], ...]:
    """stage_linear_bwd's phases as the memory ports that touch each buffer kind (_port_cost): the dX
    GEMM (A dY, B W, C dX) while LOAD brings the next tiles (dY, GELU input, xhat, residual) and STORE
    writes the previous outputs; COLSUM of a dY tile; VEC GELU_BWD (A dX, B GELU input, C output); the
    fused LayerNorm backward, LN_BWD (A dX, B gamma, E xhat, D residual, C output; engine_top enables all
    four reads for every busy cycle) and COLDOT (A dX, B xhat)."""
    s = "S" if dx_stored else ""
    phases = [{"w": "B", "dy": "AL", "dx": "C" + s, "h": "L", "g": "S", "xh": "L", "r": "L", "o": "S"},
              {"dy": "AL", "dx": s, "h": "L", "g": "S", "xh": "L", "r": "L", "o": "S"}]
    if gelu:
        phases.append({"dx": "A", "h": "BL", "g": "CS", "dy": "L"})
    if ln:
        phases += [{"dx": "A", "gamma": "B", "xh": "EL", "r": "DL", "o": "CS", "dy": "L"},
                   {"dx": "A", "xh": "BL", "r": "L", "o": "S", "dy": "L"}]
    return tuple(phases)


def stage_linear_bwd(
    b: Builder,
    dy: Buffer,
    x: Buffer,
    w: Buffer,
    grad_w: Buffer,
    grad_b: Buffer | None,
    dx: Buffer | None,
    shift: int,
    seed_path: tuple[int, ...],
    slot: int,
    gelu: GeluEpilogue | None = None,
    ln: LnBwdEpilogue | None = None,
    dx_onchip: Callable[[], int | None] | None = None,
) -> bool:
    """dx = dY W (SR by shift, flat [rows, din] indices); grad_w += dY^T X; grad_b += column sums of dY.
    With `gelu`, each dx tile goes through VEC GELU_BWD (with the saved GELU input tile) into gelu.out
    while it is in the scratchpad, and dx itself need not be stored (dx None). With `ln`, when dx tiles
    are whole rows, each goes through the LayerNorm backward on chip (dx is then not stored); returns
    whether it did (else dx holds dX and the caller runs stage_ln_bwd). dx_onchip (no epilogue): called once
    this stage has its scratchpad, the SPM address where the whole dX (rows of din) is to stay for the next
    stage (Builder.onchip) instead of being stored, or None."""
    rows, dout, din = dy.rows, dy.cols, x.cols
    acc_free = b.config.acc_elems
    if grad_b is not None:
        acc_free -= dout
        if acc_free < 1:
            raise LoweringError(f"{b.kernel}: bias gradient of {dout} does not fit the ACC")
    make_dx = dx is not None or gelu is not None
    fused_ln = False
    dy_res: int | None = None  # SPM address of the resident dY
    wg_spm: Arena | None = None  # the weight gradient's scratchpad when dY is resident in it
    # What the previous stage left on chip (GeluEpilogue.keep): dY, and the LayerNorm's residual gradient
    onchip, onchip_spm = b.onchip, b.onchip_spm
    b.onchip, b.onchip_spm = {}, None
    dy_on = onchip.get(dy.name)
    res_on = onchip.get(ln.res.name) if ln is not None and ln.res is not None and ln.res.cols == din else None
    keep = gelu is not None and gelu.keep
    keep_addr = 0  # SPM address of the kept GELU output
    dx_on: int | None = None  # SPM address of the whole dX left on chip (dx_onchip)
    if dy_on is not None and not (make_dx or grad_b is not None):
        raise LoweringError(f"{b.kernel}: an on-chip dY needs the dX or bias-gradient pass")
    if make_dx or grad_b is not None:
        spm = _spm(b, "linear backward")
        jt = 0 if not make_dx else din if dout * din <= spm.free // 2 else max(1, (spm.free // 2) // dout)
        ln_rows = 3 * din if ln is not None else 0  # xhat, residual and output tiles
        fused_ln = (
            ln is not None
            and jt == din
            and din <= b.config.max_dim
            and dout * din + din + 2 * (dout + din + ln_rows) <= spm.free
            and acc_free > 2 * din + 2 * PIPELINE_MIN_ROWS
        )
        top0 = spm.top
        w_addr = spm.take(dout * jt)
        gamma_addr = spm.take(din) if fused_ln else 0
        gt = jt if gelu is not None else 0  # the GELU input and output tiles
        go = 0 if keep else gt
        lt = din if fused_ln else 0
        # dY resident in the weight gradient's scratchpad (the other half) when dY and X fit it: its row
        # tiles are loaded once, in the first pass, and serve the later column passes and the weight
        # gradient (in the other half, the next stage's first loads need not wait for that gradient).
        # A kept GELU output goes there too (whole, after dY); an on-chip dY is already there.
        per_row = jt + gt + go + 3 * lt
        resident = rows * (dout + din + (din if keep else 0))
        wg_acc = b.config.acc_elems - b.config.acc_elems // ACC_RESERVE  # the weight gradient's ACC at most
        if dy_on is not None:
            assert onchip_spm is not None
            on = [(dy_on, dy.rows * dy.cols), (onchip_spm.base, onchip_spm.size)]
            on += [(res_on, ln.res.rows * ln.res.cols)] if res_on is not None and ln and ln.res else []
            if any(a < spm.base + spm.size and spm.base < a + n for a, n in on):
                raise LoweringError(f"{b.kernel}: linear backward buffers over the on-chip dY")
            wg_spm, dy_res = onchip_spm, dy_on
            b.spm_half = int(wg_spm.base >= b.scratch // 2)
        elif resident <= b.scratch // 2 and rows <= 0xFFFF:
            wg_spm = _spm(b, "weight gradient", resident)
            dy_res = wg_spm.take(rows * dout)
            if keep:
                keep_addr = wg_spm.take(rows * din)
        elif keep:
            raise LoweringError(f"{b.kernel}: the kept GELU output does not fit the scratchpad")
        elif (
            rows * dout + _stream_room(rows, din, b.config) <= b.scratch // 2
            and rows <= 0xFFFF
            and min(din, _grad_slots(b, 0, min(acc_free, wg_acc), STREAM_GRAD_BUFS)[0] // dout)
            >= min(din, STREAM_MIN_COLS)
        ):
            # dY alone resident: loaded once, its X streamed by column slices (_weight_grad_streamed)
            wg_spm = _spm(b, "weight gradient", rows * dout)
            dy_res = wg_spm.take(rows * dout)
        if dx_onchip is not None and gelu is None and not fused_ln and dx is not None:
            dx_on = dx_onchip()
        mt = _rows_that_fit(
            spm.free // 2, per_row + (dout if dy_res is None else 0), rows, "linear backward tile"
        )
        ln_acc = dout if grad_b is not None else 0  # gamma and beta gradients, then 2 row-statistic tiles
        if fused_ln:
            mt = min(mt, (acc_free - 2 * din) // 2)
        if b.config.array_rows < mt < rows:
            # whole array row tiles: a tile of 49 rows takes two passes of the array as 64 rows do, and the
            # space saved lets the tiles' buffers go in regions of their own (LINEAR_BWD_PHASES)
            mt = mt // b.config.array_rows * b.config.array_rows
        if fused_ln:
            acc_free -= 2 * din + 2 * mt
        # The bias gradient and the fused LayerNorm's ACC regions sit in the top 1/ACC_RESERVE of the ACC,
        # each stage's below the previous stage's (wrapping around), the weight gradient's blocks below
        # that reserve: a stage's first ACC loads then do not wait for the previous stage's stores (a
        # wait on STORE would be relayed through COMPUTE behind all the previous stage's work).
        small, reserve = b.config.acc_elems - acc_free, b.config.acc_elems // ACC_RESERVE
        top = b.config.acc_elems
        if small <= reserve and b.acc_top - small >= b.config.acc_elems - reserve:
            top = b.acc_top
        bias_acc, ln_acc = top - small, ln_acc + top - small
        b.acc_top = top - small if small <= reserve else b.config.acc_elems
        # W, gamma and the two tiles of each kind (dY, dX, GELU input and output, xhat, residual, LN output)
        # in different SPM regions where they fit (LINEAR_BWD_PHASES), else packed
        kinds = ("dy", "dx", "h", "g", "xh", "r", "o")
        # dX on chip only where it stays clear of this stage's buffers (W, tiles; dY and X for the weight
        # gradient): else its tiles are stored as usual
        dx_cand, top1 = dx_on, spm.top
        for dx_on in [dx_cand, None] if dx_cand is not None else [None]:
            spm.top = top1
            xt = 0 if dx_on is not None else jt
            per_kind = (mt * dout if dy_res is None else 0, mt * xt, mt * gt, mt * go, *(mt * lt,) * 3)
            sizes = {"w": dout * jt, "gamma": din if fused_ln else 0}
            sizes.update((k, 2 * n) for k, n in zip(kinds, per_kind, strict=True))
            spm.top, top = top0, spm.top
            nonzero = {k: n for k, n in sizes.items() if n}
            region = spm_region(b.config)
            at = _place_apart(spm, nonzero, LINEAR_BWD_PHASES, region, per_region=2)
            # Where that leaves a region with more than two ports in some phase (counting the ports that
            # touch each buffer, _linear_bwd_ports: the fused LayerNorm backward reads four operands every
            # cycle, the tiles of a kind are read and loaded at once), placed by those ports instead when
            # that leaves none (_place_ports), a buffer that fits no region of this half apart going to
            # the top region of the other half (or of the weight gradient's, above its resident dY) when
            # no on-chip dY or dX is kept there: the next stage's buffers start at that half's bottom.
            # Measured on the RTL, DeiT-T at 8 x 197 tokens: mlp_bwd's fc1 backward with LN2 had its dX,
            # xhat, residual and output tiles in one region (LN_BWD: three reads a cycle), 5.9 % conflict
            # cycles; placed so, 0.4 % and 5.2 % fewer cycles.
            ports = _linear_bwd_ports(gelu is not None, fused_ln, dx is not None and not fused_ln)
            excess = _port_cost(at, nonzero, ports, region) if at is not None else 0
            if excess:
                spill: tuple[int, int] | None = None
                if dy_on is None and dx_cand is None:
                    half = b.scratch // 2
                    lo, hi = ((wg_spm.base + wg_spm.top, wg_spm.base + wg_spm.size) if wg_spm is not None
                              else (0, half) if spm.base >= half else (half, 2 * half))
                    spill = (max(lo, (hi - 1) // region * region), hi)  # the top region only
                placed_top, spm.top = spm.top, top0
                alt = _place_ports(spm, nonzero, ports, region, spill)
                if alt is not None and alt[1] == 0:
                    at = alt[0]
                else:
                    spm.top = placed_top
            if at is not None:
                w_addr, gamma_addr = at.get("w", 0), at.get("gamma", 0)
                bufs = [
                    tuple(at.get(k, 0) + i * n for k, n in zip(kinds, per_kind, strict=True))
                    + (ln_acc + 2 * din + i * mt,)
                    for i in range(2)
                ]
            else:
                spm.top = top
                bufs = [
                    (
                        spm.take(mt * dout if dy_res is None else 0),
                        spm.take(mt * xt),
                        spm.take(mt * gt),
                        spm.take(mt * go),
                        spm.take(mt * lt),
                        spm.take(mt * lt),
                        spm.take(mt * lt),
                        ln_acc + 2 * din + i * mt,
                    )
                    for i in range(2)
                ]
            if dx_on is None:
                break
            used = [(spm.base, spm.top)]
            used += [(wg_spm.base, wg_spm.top + rows * din)] if wg_spm is not None else [(0, b.scratch)]
            if not any(dx_on < a + n and a < dx_on + rows * din for a, n in used):
                break
        if grad_b is not None:
            b.load(Mem.ACC, bias_acc, 0, grad_b, 0, 0, 1, dout)
        if fused_ln:
            assert ln is not None
            b.load(Mem.SPM, gamma_addr, 0, ln.gamma, 0, 0, 1, din)
            b.load(Mem.ACC, ln_acc, 0, ln.grad_g, 0, 0, 1, din)
            b.load(Mem.ACC, ln_acc + din, 0, ln.grad_b, 0, 0, 1, din)
        step = 0
        for j_index, (j0, jj) in enumerate(_tiles(din, jt) if make_dx else [(0, 0)]):
            if make_dx:
                b.load(Mem.SPM, w_addr, jj, w, 0, j0, dout, jj)
            for m0, mm in _tiles(rows, mt):
                if dy_on is not None and step == 0:
                    # after W's load, before the first tile's (measured on fsim, DeiT-T: 2-4 % fewer cycles
                    # at 69 and 98 tokens than without, the same at 139 and 197; after the first tile: worse)
                    b.relay_stores(Mem.ACC, 0, b.config.acc_elems - b.config.acc_elems // ACC_RESERVE)
                dy_addr, dx_addr, h_addr, g_addr, xh_addr, r_addr, o_addr, rs_acc = bufs[step % 2]
                step += 1
                if dy_res is not None:
                    dy_addr = dy_res + m0 * dout
                if dy_on is None and (dy_res is None or j_index == 0):
                    b.load(Mem.SPM, dy_addr, dout, dy, m0, 0, mm, dout)
                if grad_b is not None and j_index == 0:
                    b.add(
                        Op.VEC, sub=Vec.COLSUM, m=mm, n=dout, a_addr=dy_addr, a_stride=dout, f_addr=bias_acc
                    )
                if dx_on is not None:
                    dx_addr = dx_on + m0 * din + j0
                if make_dx:
                    b.add(
                        Op.GEMM,
                        seed_path=seed_path,
                        m=mm,
                        n=jj,
                        k=dout,
                        a_addr=dy_addr,
                        a_stride=dout,
                        b_addr=w_addr,
                        b_stride=jj,
                        tb=1,
                        c_addr=dx_addr,
                        c_stride=din if dx_on is not None else jj,
                        imm=1,
                        shift=shift,
                        sr=1,
                        index_base=m0 * din + j0,
                        index_stride=din,
                        stat=1,
                        slot=slot,
                    )
                if dx is not None and not fused_ln and dx_on is None:
                    b.store(Mem.SPM, dx_addr, jj, dx, m0, j0, mm, jj)
                if fused_ln:
                    assert ln is not None
                    _ln_bwd_tile(
                        b,
                        ln,
                        m0,
                        mm,
                        din,
                        dx_addr,
                        gamma_addr,
                        xh_addr,
                        r_addr,
                        o_addr,
                        rs_acc,
                        ln_acc,
                        res_on,
                    )
                if gelu is not None and gelu.x is not None:
                    if keep:
                        g_addr, g_stride = keep_addr + m0 * din + j0, din
                    else:
                        g_stride = jj
                    b.load(Mem.SPM, h_addr, jj, gelu.x, m0, j0, mm, jj)
                    b.add(
                        Op.VEC,
                        seed_path=gelu.seed_path,
                        sub=Vec.GELU_BWD,
                        m=mm,
                        n=jj,
                        a_addr=dx_addr,
                        a_stride=jj,
                        b_addr=h_addr,
                        b_stride=jj,
                        c_addr=g_addr,
                        c_stride=g_stride,
                        shift=gelu.shift,
                        imm=gelu.frac_x,
                        sr=1,
                        index_base=m0 * din + j0,
                        index_stride=din,
                        stat=1,
                        slot=gelu.slot,
                    )
                    if not keep:
                        b.store(Mem.SPM, g_addr, jj, gelu.out, m0, j0, mm, jj)
    if grad_b is not None:
        b.store(Mem.ACC, bias_acc, 0, grad_b, 0, 0, 1, dout)
    if fused_ln:
        assert ln is not None
        b.store(Mem.ACC, ln_acc, 0, ln.grad_g, 0, 0, 1, din)
        b.store(Mem.ACC, ln_acc + din, 0, ln.grad_b, 0, 0, 1, din)
    # Weight gradient: ACC blocks of (ot x dt), accumulated over token tiles (A = dY^T: ta, B = X: tb).
    # One block as large as the ACC allows: fewer passes over dY and X (two half-size alternating blocks
    # overlap the block stores but re-read dY and X more: 16% more modelled cycles for DeiT-T's MLP).
    # Of the two block shapes (all output rows, or all input columns) take the one that reads dY and X
    # from DDR fewer times: dY once per column block, X once per row block.
    # The weight gradient's blocks from ACC 0, below this stage's small regions and a reserve at the top
    # for the next stage's (ACC_RESERVE of the ACC).
    acc_base, acc_free = 0, min(acc_free, b.config.acc_elems - b.config.acc_elems // ACC_RESERVE)
    if keep:
        assert gelu is not None and dy_res is not None
        b.onchip, b.onchip_spm = {dy.name: dy_res, gelu.out.name: keep_addr}, wg_spm
    if dx_on is not None:
        assert dx is not None
        b.onchip = {dx.name: dx_on}
    if dy_res is not None and wg_spm is not None and rows * din > wg_spm.free:
        _weight_grad_streamed(b, dy, x, grad_w, acc_base, acc_free, dy_res, wg_spm)
        return fused_ln
    if _weight_grad_resident(b, dy, x, grad_w, acc_base, acc_free, dy_res, wg_spm):
        return fused_ln
    if _weight_grad_streamed(b, dy, x, grad_w, acc_base, acc_free):
        return fused_ln
    shapes = []
    for ot in (min(dout, acc_free), max(1, min(dout, acc_free // min(din, acc_free)))):
        dt = max(1, min(din, acc_free // ot))
        shapes.append((-(-din // dt) * dout + -(-dout // ot) * din, ot, dt))
    _, ot, dt = min(shapes)
    spm = _spm(b, "weight gradient")
    tt = _rows_that_fit(spm.free // 2, ot + dt, rows, "weight-gradient token tile")
    bufs2 = [(spm.take(tt * ot), spm.take(tt * dt)) for _ in range(2)]
    step = 0
    for o0, oo in _tiles(dout, ot):
        for d0, dd in _tiles(din, dt):
            b.load(Mem.ACC, acc_base, dd, grad_w, o0, d0, oo, dd)
            for t0, tn in _tiles(rows, tt):
                dy_addr, x_addr = bufs2[step % 2]
                step += 1
                b.load(Mem.SPM, dy_addr, oo, dy, t0, o0, tn, oo)
                b.load(Mem.SPM, x_addr, dd, x, t0, d0, tn, dd)
                _grad_gemm(b, oo, dd, tn, (dy_addr, oo), (x_addr, dd), acc_base)
            b.store(Mem.ACC, acc_base, dd, grad_w, o0, d0, oo, dd)
    return fused_ln


def stage_ln_fwd(
    b: Builder,
    x: Buffer,
    gamma: Buffer,
    beta: Buffer,
    y: Buffer,
    xhat: Buffer,
    row_stats: Buffer,
    shift: int,
    shift2: int,
    frac_x: int,
    slot: int,
) -> None:
    rows, dim = x.rows, x.cols
    if dim > b.config.max_dim:
        raise LoweringError(f"LayerNorm over {dim} > max_dim {b.config.max_dim}")
    spm = _spm(b, "LayerNorm")
    g_addr, be_addr = spm.take(dim), spm.take(dim)
    mt = min(_rows_that_fit(spm.free // 2, 3 * dim, rows, "LayerNorm tile"), b.config.acc_elems // 2)
    bufs = [(spm.take(mt * dim), spm.take(mt * dim), spm.take(mt * dim), i * mt) for i in range(2)]
    b.load(Mem.SPM, g_addr, 0, gamma, 0, 0, 1, dim)
    b.load(Mem.SPM, be_addr, 0, beta, 0, 0, 1, dim)
    for step, (m0, mm) in enumerate(_tiles(rows, mt)):
        x_addr, y_addr, h_addr, r_addr = bufs[step % 2]
        b.load(Mem.SPM, x_addr, dim, x, m0, 0, mm, dim)
        b.add(
            Op.VEC,
            sub=Vec.LN_FWD,
            m=mm,
            n=dim,
            a_addr=x_addr,
            a_stride=dim,
            b_addr=g_addr,
            d_addr=be_addr,
            c_addr=y_addr,
            c_stride=dim,
            e_addr=h_addr,
            e_stride=dim,
            f_addr=r_addr,
            shift=shift,
            shift2=shift2,
            shift4=frac_x,
            stat=1,
            slot=slot,
        )
        b.store(Mem.SPM, y_addr, dim, y, m0, 0, mm, dim)
        b.store(Mem.SPM, h_addr, dim, xhat, m0, 0, mm, dim)
        b.store(Mem.ACC, r_addr, 0, row_stats, 0, m0, 1, mm)


def stage_ln_bwd(
    b: Builder,
    dy: Buffer,
    xhat: Buffer,
    row_stats: Buffer,
    gamma: Buffer,
    res: Buffer | None,
    dx: Buffer,
    grad_g: Buffer,
    grad_b: Buffer,
    shifts: tuple[int, int, int, int],
    seed_path: tuple[int, ...],
    slot: int,
) -> None:
    rows, dim = dy.rows, dy.cols
    if dim > b.config.max_dim:
        raise LoweringError(f"LayerNorm over {dim} > max_dim {b.config.max_dim}")
    spm = _spm(b, "LayerNorm backward")
    g_addr = spm.take(dim)
    per_row = dim * (4 if res is not None else 3)
    mt = min(
        _rows_that_fit(spm.free // 2, per_row, rows, "LayerNorm backward tile"),
        (b.config.acc_elems - 2 * dim) // 2,
    )
    if mt < 1:
        raise LoweringError(f"LayerNorm backward over {dim}: ACC too small")
    bufs = [
        (
            spm.take(mt * dim),
            spm.take(mt * dim),
            spm.take(mt * dim),
            spm.take(mt * dim) if res is not None else 0,
            2 * dim + i * mt,
        )
        for i in range(2)
    ]
    b.load(Mem.SPM, g_addr, 0, gamma, 0, 0, 1, dim)
    b.load(Mem.ACC, 0, 0, grad_g, 0, 0, 1, dim)
    b.load(Mem.ACC, dim, 0, grad_b, 0, 0, 1, dim)
    shift, shift2, shift3, shift4 = shifts
    for step, (m0, mm) in enumerate(_tiles(rows, mt)):
        dy_addr, h_addr, dx_addr, r_addr, rs_addr = bufs[step % 2]
        b.load(Mem.SPM, dy_addr, dim, dy, m0, 0, mm, dim)
        b.load(Mem.SPM, h_addr, dim, xhat, m0, 0, mm, dim)
        b.load(Mem.ACC, rs_addr, 0, row_stats, 0, m0, 1, mm)
        if res is not None:
            b.load(Mem.SPM, r_addr, dim, res, m0, 0, mm, dim)
        b.add(
            Op.VEC,
            seed_path=seed_path,
            sub=Vec.LN_BWD,
            m=mm,
            n=dim,
            a_addr=dy_addr,
            a_stride=dim,
            b_addr=g_addr,
            e_addr=h_addr,
            e_stride=dim,
            f_addr=rs_addr,
            d_addr=r_addr,
            d_stride=dim if res is not None else 0,
            bias=int(res is not None),
            c_addr=dx_addr,
            c_stride=dim,
            shift=shift,
            shift2=shift2,
            shift3=shift3,
            shift4=shift4 if res is not None else 0,
            sr=1,
            index_base=m0 * dim,
            index_stride=dim,
            stat=1,
            slot=slot,
        )
        b.add(
            Op.VEC,
            sub=Vec.COLDOT,
            m=mm,
            n=dim,
            a_addr=dy_addr,
            a_stride=dim,
            b_addr=h_addr,
            b_stride=dim,
            f_addr=0,
        )
        b.add(Op.VEC, sub=Vec.COLSUM, m=mm, n=dim, a_addr=dy_addr, a_stride=dim, f_addr=dim)
        b.store(Mem.SPM, dx_addr, dim, dx, m0, 0, mm, dim)
    b.store(Mem.ACC, 0, 0, grad_g, 0, 0, 1, dim)
    b.store(Mem.ACC, dim, 0, grad_b, 0, 0, 1, dim)


def _mask_rows(
    b: Builder, conn: Buffer, image: int, length: int, dense: int, lists: int, mask_addr: int
) -> None:
    """SPM mask [length, length] of image `image` from its connection lists, in IDX-sized row chunks."""
    chunk = max(1, min(length - dense, b.config.idx_elems // max(lists, 1)))
    first_rows = length - dense
    for r0, rr in _tiles(first_rows, chunk):
        b.load(Mem.IDX, 0, lists, conn, image * first_rows + r0, 0, rr, lists)
        lead = dense if r0 == 0 else 0
        row = 0 if r0 == 0 else dense + r0
        b.add(
            Op.VEC,
            sub=Vec.MASK,
            m=rr + lead,
            n=length,
            k=lists,
            b_addr=0,
            b_stride=lists,
            c_addr=mask_addr + row * length,
            c_stride=length,
            imm=lead,
        )


def _attn_heads_fwd(
    b: Builder,
    img: int,
    qkv_addr: int,
    ctx_addr: int,
    s_bufs: list[int],
    p_bufs: list[int],
    step: int,
    probs: Buffer,
    ctx: Buffer,
    attn_sum: Buffer,
    length: int,
    heads: int,
    dim: int,
    mask: dict[str, int],
    s_shift: int,
    ctx_shift: int,
    frac_s: int,
    slots: dict[str, int],
) -> int:
    """One image's attention from its qkv rows in SPM: per head the scores (masked statistic), the softmax
    (adding P into the ACC head-sum), P stored, the context into ctx_addr; then ctx and the head-sum stored.
    Returns the next tile-buffer step."""
    hd = dim // heads
    mult, _ = blocks.attn_scale(hd)
    b.zero_acc(0, length, length)
    for h in range(heads):
        s_addr, p_addr = s_bufs[step % 2], p_bufs[step % 2]
        step += 1
        b.add(
            Op.GEMM,
            m=length,
            n=length,
            k=hd,
            a_addr=qkv_addr + h * hd,
            a_stride=3 * dim,
            b_addr=qkv_addr + dim + h * hd,
            b_stride=3 * dim,
            c_addr=s_addr,
            c_stride=length,
            imm=mult,
            shift=s_shift,
            stat=1,
            slot=slots["s"],
            **mask,
        )
        b.add(
            Op.SOFTMAX,
            sub=SoftmaxSub.FWD,
            m=length,
            n=length,
            a_addr=s_addr,
            a_stride=length,
            c_addr=p_addr,
            c_stride=length,
            shift=frac_s,
            acc=1,
            d_addr=0,
            d_stride=length,
            **mask,
        )
        b.store(Mem.SPM, p_addr, length, probs, (img * heads + h) * length, 0, length, length)
        if h == heads - 1:  # the head-sum is complete: its (int64) store starts before the last context
            b.store(Mem.ACC, 0, length, attn_sum, img * length, 0, length, length)
        b.add(
            Op.GEMM,
            m=length,
            n=hd,
            k=length,
            a_addr=p_addr,
            a_stride=length,
            b_addr=qkv_addr + 2 * dim + h * hd,
            b_stride=3 * dim,
            tb=1,
            c_addr=ctx_addr + h * hd,
            c_stride=dim,
            imm=1,
            shift=ctx_shift,
            stat=1,
            slot=slots["ctx"],
        )
    b.store(Mem.SPM, ctx_addr, dim, ctx, img * length, 0, length, dim)
    return step


ATTN_QKV_PIECE = 64
# The fused attention forward's SPM buffers in placement order and the phases in which units use them
# together (LN1 while W_qkv streams in; the QKV GEMM while z and xhat go out; the heads (S = QK^T, softmax,
# PV) while qkv and P go out and W_proj comes in; the projection with the residual): buffers of one phase
# go in different SPM regions where they fit (_place_apart; a region serves two accesses per cycle).
ATTN_FWD_PHASES = (
    ("x", "z", "h", "wq", "g", "be"),
    ("z", "h", "wq", "qkv", "bq"),
    ("qkv", "s", "p", "ctx", "mask", "wp"),
    ("ctx", "wp", "o", "x", "p", "bp"),
)


def _attn_fwd_sizes(dim: int, length: int, masked: bool) -> dict[str, int]:
    """Elements of stage_attn_fwd_fused's SPM buffers, in placement order (s and p: two tiles each)."""
    tt, ld = length * length, length * dim
    sizes = {"qkv": 3 * ld, "s": 2 * tt, "p": 2 * tt, "wq": 3 * dim * dim, "ctx": ld, "z": ld, "h": ld}
    sizes.update({"mask": tt} if masked else {})
    sizes.update(wp=dim * dim, x=ld, o=ld, g=dim, be=dim, bq=3 * dim, bp=dim)
    return sizes


def stage_attn_fwd_fused(
    b: Builder,
    x: Buffer,
    params: dict[str, Buffer],
    conn: Buffer | None,
    saved: dict[str, Buffer],
    out: Buffer,
    s: AttnShape,
    f: dict[str, int],
    p: dict[str, int],
    frac_x: int,
    slots: dict[str, int],
) -> bool:
    """The whole attention block, image by image, on chip: LN1 -> QKV -> per-head attention -> projection
    with the residual, with both weight matrices resident; only the saved state and the output go to DDR.
    Returns False (emitting nothing) when it does not fit the scratchpad or the ACC."""
    dim, length = s.dim, s.length
    tt = length * length
    params_need = 4 * dim * dim + 3 * dim + 3 * dim
    need = params_need + 8 * length * dim + (tt if conn is not None else 0) + 4 * tt
    if (
        need > b.scratch
        or tt + length > b.config.acc_elems
        or length > b.config.max_row
        or dim > b.config.max_dim
    ):
        return False
    spm = Arena(b.scratch, f"{b.kernel} fused attention (SPM)")
    sizes = _attn_fwd_sizes(dim, length, conn is not None)
    at = _place_apart(spm, sizes, ATTN_FWD_PHASES, spm_region(b.config))
    if at is None:
        at = {name: spm.take(size) for name, size in sizes.items()}
    g_addr, be_addr, wq_addr, bq_addr, wp_addr, bp_addr = (at[n] for n in ("g", "be", "wq", "bq", "wp", "bp"))
    x_addr, z_addr, h_addr, qkv_addr, ctx_addr, o_addr = (at[n] for n in ("x", "z", "h", "qkv", "ctx", "o"))
    mask_addr = at.get("mask", 0)
    s_bufs = [at["s"], at["s"] + tt]
    p_bufs = [at["p"], at["p"] + tt]
    rows_acc = tt  # LN row statistics after the head-sum in the ACC
    ln_shift, ln_shift2 = _ln_fwd_shifts(dim, p["norm1.weight"], p["norm1.bias"], f["ln"])
    fq = f["ln"] + p["attn.qkv.weight"]
    q_shift, q_shift2 = (
        _check_shift(fq - f["qkv"], "qkv"),
        _check_shift(p["attn.qkv.bias"] - fq, "qkv bias", *ALIGN),
    )
    fo = f["ctx"] + p["attn.proj.weight"]
    o_shift = _check_shift(fo - f["out"], "proj")
    o_shift2 = _check_shift(p["attn.proj.bias"] - fo, "proj bias", *ALIGN)
    o_shift3 = _check_shift(frac_x - fo, "residual", *ALIGN)
    mult, extra = blocks.attn_scale(dim // s.heads)
    s_shift = _check_shift(2 * f["qkv"] + extra - f["s"], "score")
    ctx_shift = _check_shift(PROB_FRAC + f["qkv"] - f["ctx"], "context")
    mask = {"mask": 1, "e_addr": mask_addr, "e_stride": length} if conn is not None else {}
    b.load(Mem.SPM, g_addr, 0, params["norm1.weight"], 0, 0, 1, dim)
    b.load(Mem.SPM, be_addr, 0, params["norm1.bias"], 0, 0, 1, dim)
    step = 0
    # The first image's x comes before the weights (LN1 runs while they stream in) and its QKV GEMM runs in
    # pieces of ATTN_QKV_PIECE columns as the weight arrives; later images find the weights resident.
    piece = max(b.config.array_cols, ATTN_QKV_PIECE // b.config.array_cols * b.config.array_cols)
    for img in range(s.batch):
        row = img * length
        b.load(Mem.SPM, x_addr, dim, x, row, 0, length, dim)
        if img == 0:
            b.load(Mem.SPM, bq_addr, 0, params["attn.qkv.bias"], 0, 0, 1, 3 * dim)
            for n0, nn in _tiles(3 * dim, piece):
                b.load(Mem.SPM, wq_addr + n0 * dim, dim, params["attn.qkv.weight"], n0, 0, nn, dim)
        b.add(
            Op.VEC,
            sub=Vec.LN_FWD,
            m=length,
            n=dim,
            a_addr=x_addr,
            a_stride=dim,
            b_addr=g_addr,
            d_addr=be_addr,
            c_addr=z_addr,
            c_stride=dim,
            e_addr=h_addr,
            e_stride=dim,
            f_addr=rows_acc,
            shift=ln_shift,
            shift2=ln_shift2,
            shift4=frac_x,
            stat=1,
            slot=slots["ln"],
        )
        b.store(Mem.SPM, z_addr, dim, saved["z"], row, 0, length, dim)
        b.store(Mem.SPM, h_addr, dim, saved["xhat"], row, 0, length, dim)
        b.store(Mem.ACC, rows_acc, 0, saved["row_stats"], 0, row, 1, length)
        for n0, nn in _tiles(3 * dim, piece) if img == 0 else [(0, 3 * dim)]:
            b.add(
                Op.GEMM,
                m=length,
                n=nn,
                k=dim,
                a_addr=z_addr,
                a_stride=dim,
                b_addr=wq_addr + n0 * dim,
                b_stride=dim,
                c_addr=qkv_addr + n0,
                c_stride=3 * dim,
                d_addr=bq_addr + n0,
                bias=1,
                imm=1,
                shift=q_shift,
                shift2=q_shift2,
                stat=1,
                slot=slots["qkv"],
            )
        b.store(Mem.SPM, qkv_addr, 3 * dim, saved["qkv"], row, 0, length, 3 * dim)
        if conn is not None:
            _mask_rows(b, conn, img, length, s.dense, s.lists, mask_addr)
        step = _attn_heads_fwd(
            b,
            img,
            qkv_addr,
            ctx_addr,
            s_bufs,
            p_bufs,
            step,
            saved["probs"],
            saved["ctx"],
            saved["attn_sum"],
            length,
            s.heads,
            dim,
            mask,
            s_shift,
            ctx_shift,
            f["s"],
            slots,
        )
        if img == 0:  # behind the head-sum's zero fill, which the first softmax needs
            b.load(Mem.SPM, wp_addr, dim, params["attn.proj.weight"], 0, 0, dim, dim)
            b.load(Mem.SPM, bp_addr, 0, params["attn.proj.bias"], 0, 0, 1, dim)
        b.add(
            Op.GEMM,
            m=length,
            n=dim,
            k=dim,
            a_addr=ctx_addr,
            a_stride=dim,
            b_addr=wp_addr,
            b_stride=dim,
            c_addr=o_addr,
            c_stride=dim,
            d_addr=bp_addr,
            bias=1,
            e_addr=x_addr,
            e_stride=dim,
            res=1,
            imm=1,
            shift=o_shift,
            shift2=o_shift2,
            shift3=o_shift3,
            stat=1,
            slot=slots["out"],
        )
        b.store(Mem.SPM, o_addr, dim, out, row, 0, length, dim)
    return True


# The MLP forward with every row on chip runs layer by layer: LN2 over row halves, then fc1 in n-pieces of
# MLP_PIECE hidden units as the W1 pieces arrive (W1 streams in behind x while LN2 runs), GELU, then fc2 in
# n-pieces of MLP_PIECE output columns; the saved tensors go out while the array works.
MLP_PIECE = 64
# buffers used at the same time: LN2 (W1 streaming in), fc1 (W2 streaming in, z / xh going out), GELU, fc2
MLP_FWD_PHASES = (
    ("x", "g", "be", "z", "xh", "w1"),
    ("z", "w1", "b1", "h", "xh", "w2"),
    ("h", "a", "w2"),
    ("a", "w2", "b2", "x", "o"),
)


def _mlp_fwd_layered(
    b: Builder,
    x: Buffer,
    params: dict[str, Buffer],
    saved: dict[str, Buffer],
    out: Buffer,
    f: dict[str, int],
    p: dict[str, int],
    frac_x: int,
    slots: dict[str, int],
) -> bool:
    """stage_mlp_fwd_fused with all rows resident (see MLP_PIECE); False (emitting nothing) when they do
    not fit the scratchpad or the ACC."""
    rows, dim = x.rows, x.cols
    hidden = params["mlp.fc1.weight"].rows
    fixed = 2 * dim * hidden + hidden + 3 * dim
    if rows > 0xFFFF or rows > b.config.acc_elems or fixed + rows * (4 * dim + 2 * hidden) > b.scratch:
        return False
    spm = Arena(b.scratch, f"{b.kernel} fused MLP (SPM)")
    # the operands each layer's command reads and writes at once and the buffers DMA streams meanwhile
    # (MLP_FWD_PHASES) in different SPM regions (two accesses per region and cycle), placed in the order of
    # `apart`; where that does not fit, packed in the order of `packed`
    packed = {"g": dim, "be": dim, "b1": hidden, "b2": dim, "w2": dim * hidden,
              **{n: rows * dim for n in ("x", "z", "xh", "o")}, "w1": hidden * dim, "h": rows * hidden,
              "a": rows * hidden}
    apart = {n: packed[n] for n in ("w1", "w2", "h", "a", "x", "z", "xh", "o", "g", "be", "b1", "b2")}
    region = spm_region(b.config)
    at = _place_apart(spm, apart, MLP_FWD_PHASES, region) or _place_apart(spm, packed, (), region)
    if at is None:
        return False
    g_addr, be_addr, b1_addr, b2_addr = at["g"], at["be"], at["b1"], at["b2"]
    w1_addr, w2_addr, h_addr, a_addr = at["w1"], at["w2"], at["h"], at["a"]
    x_addr, z_addr, xh_addr, o_addr = at["x"], at["z"], at["xh"], at["o"]
    ln_shift, ln_shift2 = _ln_fwd_shifts(dim, p["norm2.weight"], p["norm2.bias"], f["ln"])
    f1 = f["ln"] + p["mlp.fc1.weight"]
    h_shift, h_shift2 = (
        _check_shift(f1 - f["h"], "fc1"),
        _check_shift(p["mlp.fc1.bias"] - f1, "fc1 bias", *ALIGN),
    )
    a_shift = _check_shift(f["h"] + GELU_LUT_FRAC - f["a"], "GELU")
    f2 = f["a"] + p["mlp.fc2.weight"]
    o_shift = _check_shift(f2 - f["out"], "fc2")
    o_shift2 = _check_shift(p["mlp.fc2.bias"] - f2, "fc2 bias", *ALIGN)
    o_shift3 = _check_shift(frac_x - f2, "residual", *ALIGN)
    arr_rows, arr_cols = b.config.array_rows, b.config.array_cols
    half = -(-((rows + 1) // 2) // arr_rows) * arr_rows  # LN2 over two row parts of whole array tiles
    row_parts = _tiles(rows, half)
    b.load(Mem.SPM, g_addr, 0, params["norm2.weight"], 0, 0, 1, dim)
    b.load(Mem.SPM, be_addr, 0, params["norm2.bias"], 0, 0, 1, dim)
    for m0, mm in row_parts:
        b.load(Mem.SPM, x_addr + m0 * dim, dim, x, m0, 0, mm, dim)
    b.load(Mem.SPM, b1_addr, 0, params["mlp.fc1.bias"], 0, 0, 1, hidden)
    piece = max(arr_cols, MLP_PIECE // arr_cols * arr_cols)
    for m0, mm in row_parts:
        b.add(
            Op.VEC,
            sub=Vec.LN_FWD,
            m=mm,
            n=dim,
            a_addr=x_addr + m0 * dim,
            a_stride=dim,
            b_addr=g_addr,
            d_addr=be_addr,
            c_addr=z_addr + m0 * dim,
            c_stride=dim,
            e_addr=xh_addr + m0 * dim,
            e_stride=dim,
            f_addr=m0,
            shift=ln_shift,
            shift2=ln_shift2,
            shift4=frac_x,
            stat=1,
            slot=slots["ln"],
        )
        b.store(Mem.SPM, z_addr + m0 * dim, dim, saved["z"], m0, 0, mm, dim)
        b.store(Mem.SPM, xh_addr + m0 * dim, dim, saved["xhat"], m0, 0, mm, dim)
    b.store(Mem.ACC, 0, 0, saved["row_stats"], 0, 0, 1, rows)
    for n0, nn in _tiles(hidden, piece):
        b.load(Mem.SPM, w1_addr + n0 * dim, dim, params["mlp.fc1.weight"], n0, 0, nn, dim)
        b.add(
            Op.GEMM,
            m=rows,
            n=nn,
            k=dim,
            a_addr=z_addr,
            a_stride=dim,
            b_addr=w1_addr + n0 * dim,
            b_stride=dim,
            c_addr=h_addr + n0,
            c_stride=hidden,
            d_addr=b1_addr + n0,
            bias=1,
            imm=1,
            shift=h_shift,
            shift2=h_shift2,
            stat=1,
            slot=slots["h"],
        )
    b.load(Mem.SPM, b2_addr, 0, params["mlp.fc2.bias"], 0, 0, 1, dim)
    for n0, nn in _tiles(dim, piece):
        b.load(Mem.SPM, w2_addr + n0 * hidden, hidden, params["mlp.fc2.weight"], n0, 0, nn, hidden)
    for m0, mm in row_parts:
        b.store(Mem.SPM, h_addr + m0 * hidden, hidden, saved["h"], m0, 0, mm, hidden)
        b.add(
            Op.VEC,
            sub=Vec.GELU_FWD,
            m=mm,
            n=hidden,
            a_addr=h_addr + m0 * hidden,
            a_stride=hidden,
            c_addr=a_addr + m0 * hidden,
            c_stride=hidden,
            shift=a_shift,
            imm=f["h"],
            stat=1,
            slot=slots["a"],
        )
        b.store(Mem.SPM, a_addr + m0 * hidden, hidden, saved["a"], m0, 0, mm, hidden)
    for n0, nn in _tiles(dim, piece):
        b.add(
            Op.GEMM,
            m=rows,
            n=nn,
            k=hidden,
            a_addr=a_addr,
            a_stride=hidden,
            b_addr=w2_addr + n0 * hidden,
            b_stride=hidden,
            c_addr=o_addr + n0 * rows,  # each piece contiguous: its STORE does not hold up the next GEMM
            c_stride=nn,
            d_addr=b2_addr + n0,
            bias=1,
            e_addr=x_addr + n0,
            e_stride=dim,
            res=1,
            imm=1,
            shift=o_shift,
            shift2=o_shift2,
            shift3=o_shift3,
            stat=1,
            slot=slots["out"],
        )
        b.store(Mem.SPM, o_addr + n0 * rows, nn, out, 0, n0, rows, nn)
    return True


# buffers of the row-tiled fused MLP forward in use at once (tile s computing, the other tile t loading x or
# storing): LN2 (STORE the last fc2 output), fc1 (STORE z / xhat), GELU (STORE h), fc2 (STORE a)
MLP_FWD_TILE_PHASES = tuple(
    phase
    for s, t in ((0, 1), (1, 0))
    for phase in (
        (f"x{s}", "g", "be", f"z{s}", f"xh{s}", f"x{t}", f"o{t}"),
        (f"z{s}", "w1", "b1", f"h{s}", f"xh{s}", f"x{t}"),
        (f"h{s}", f"a{s}", f"x{t}"),
        (f"a{s}", "w2", "b2", f"x{s}", f"o{s}", f"x{t}"),
    )
)


def stage_mlp_fwd_fused(
    b: Builder,
    x: Buffer,
    params: dict[str, Buffer],
    saved: dict[str, Buffer],
    out: Buffer,
    f: dict[str, int],
    p: dict[str, int],
    frac_x: int,
    slots: dict[str, int],
) -> bool:
    """The whole MLP block on chip, row tile by row tile (double-buffered): LN2 -> fc1 -> GELU -> fc2 with
    the residual, both weights resident; only the saved state and the output go to DDR. Returns False
    (emitting nothing) when the weights and two row tiles do not fit."""
    rows, dim = x.rows, x.cols
    hidden = params["mlp.fc1.weight"].rows
    fixed = 2 * dim * hidden + hidden + 3 * dim
    per_row = 4 * dim + 2 * hidden  # x, z, xhat, out; h, a
    if dim > b.config.max_dim or fixed + 2 * per_row > b.scratch:
        return False
    if _mlp_fwd_layered(b, x, params, saved, out, f, p, frac_x, slots):
        return True
    mt = min(rows, (b.scratch - fixed) // (2 * per_row), b.config.acc_elems // 2, 0xFFFF)
    spm = Arena(b.scratch, f"{b.kernel} fused MLP (SPM)")
    # x, z, xhat, out, h, a of each of the two row tiles (and their ACC row statistics at i * mt): row tiles
    # placed for the buffers in use at once (MLP_FWD_TILE_PHASES), else mt rows packed
    weights = {"g": dim, "be": dim, "w1": hidden * dim, "b1": hidden, "w2": dim * hidden, "b2": dim}
    widths = {"x": dim, "z": dim, "xh": dim, "o": dim, "h": hidden, "a": hidden}
    placed = _tiles_apart(b, (spm,), weights, widths, MLP_FWD_TILE_PHASES,
                          lambda arena: min(mt, (arena.free - fixed) // (2 * per_row)))
    if placed is None:
        packed = {**weights, **{f"{n}{i}": mt * k for i in range(2) for n, k in widths.items()}}
        placed = _place_apart(spm, packed, (), spm_region(b.config)), mt
    at, mt = placed
    g_addr, be_addr, w1_addr, b1_addr, w2_addr, b2_addr = (at[n] for n in weights)
    bufs = [tuple(at[f"{n}{i}"] for n in widths) + (i * mt,) for i in range(2)]
    ln_shift, ln_shift2 = _ln_fwd_shifts(dim, p["norm2.weight"], p["norm2.bias"], f["ln"])
    f1 = f["ln"] + p["mlp.fc1.weight"]
    h_shift, h_shift2 = (
        _check_shift(f1 - f["h"], "fc1"),
        _check_shift(p["mlp.fc1.bias"] - f1, "fc1 bias", *ALIGN),
    )
    a_shift = _check_shift(f["h"] + GELU_LUT_FRAC - f["a"], "GELU")
    f2 = f["a"] + p["mlp.fc2.weight"]
    o_shift = _check_shift(f2 - f["out"], "fc2")
    o_shift2 = _check_shift(p["mlp.fc2.bias"] - f2, "fc2 bias", *ALIGN)
    o_shift3 = _check_shift(frac_x - f2, "residual", *ALIGN)
    b.load(Mem.SPM, g_addr, 0, params["norm2.weight"], 0, 0, 1, dim)
    b.load(Mem.SPM, be_addr, 0, params["norm2.bias"], 0, 0, 1, dim)
    b.load(Mem.SPM, w1_addr, dim, params["mlp.fc1.weight"], 0, 0, hidden, dim)
    b.load(Mem.SPM, b1_addr, 0, params["mlp.fc1.bias"], 0, 0, 1, hidden)
    b.load(Mem.SPM, w2_addr, hidden, params["mlp.fc2.weight"], 0, 0, dim, hidden)
    b.load(Mem.SPM, b2_addr, 0, params["mlp.fc2.bias"], 0, 0, 1, dim)
    for step, (m0, mm) in enumerate(_tiles(rows, mt)):
        x_addr, z_addr, xh_addr, o_addr, h_addr, a_addr, r_acc = bufs[step % 2]
        b.load(Mem.SPM, x_addr, dim, x, m0, 0, mm, dim)
        b.add(
            Op.VEC,
            sub=Vec.LN_FWD,
            m=mm,
            n=dim,
            a_addr=x_addr,
            a_stride=dim,
            b_addr=g_addr,
            d_addr=be_addr,
            c_addr=z_addr,
            c_stride=dim,
            e_addr=xh_addr,
            e_stride=dim,
            f_addr=r_acc,
            shift=ln_shift,
            shift2=ln_shift2,
            shift4=frac_x,
            stat=1,
            slot=slots["ln"],
        )
        b.store(Mem.SPM, z_addr, dim, saved["z"], m0, 0, mm, dim)
        b.store(Mem.SPM, xh_addr, dim, saved["xhat"], m0, 0, mm, dim)
        b.store(Mem.ACC, r_acc, 0, saved["row_stats"], 0, m0, 1, mm)
        b.add(
            Op.GEMM,
            m=mm,
            n=hidden,
            k=dim,
            a_addr=z_addr,
            a_stride=dim,
            b_addr=w1_addr,
            b_stride=dim,
            c_addr=h_addr,
            c_stride=hidden,
            d_addr=b1_addr,
            bias=1,
            imm=1,
            shift=h_shift,
            shift2=h_shift2,
            stat=1,
            slot=slots["h"],
        )
        b.store(Mem.SPM, h_addr, hidden, saved["h"], m0, 0, mm, hidden)
        b.add(
            Op.VEC,
            sub=Vec.GELU_FWD,
            m=mm,
            n=hidden,
            a_addr=h_addr,
            a_stride=hidden,
            c_addr=a_addr,
            c_stride=hidden,
            shift=a_shift,
            imm=f["h"],
            stat=1,
            slot=slots["a"],
        )
        b.store(Mem.SPM, a_addr, hidden, saved["a"], m0, 0, mm, hidden)
        b.add(
            Op.GEMM,
            m=mm,
            n=dim,
            k=hidden,
            a_addr=a_addr,
            a_stride=hidden,
            b_addr=w2_addr,
            b_stride=hidden,
            c_addr=o_addr,
            c_stride=dim,
            d_addr=b2_addr,
            bias=1,
            e_addr=x_addr,
            e_stride=dim,
            res=1,
            imm=1,
            shift=o_shift,
            shift2=o_shift2,
            shift3=o_shift3,
            stat=1,
            slot=slots["out"],
        )
        b.store(Mem.SPM, o_addr, dim, out, m0, 0, mm, dim)
    return True


def stage_attn_core_fwd(
    b: Builder,
    qkv: Buffer,
    conn: Buffer | None,
    probs: Buffer,
    ctx: Buffer,
    attn_sum: Buffer,
    batch: int,
    length: int,
    heads: int,
    dense: int,
    lists: int,
    f: dict[str, int],
    frac_qkv: int,
    slots: dict[str, int],
) -> None:
    dim = qkv.cols // 3
    hd = dim // heads
    mult, extra = blocks.attn_scale(hd)
    if length > b.config.max_row:
        raise LoweringError(f"attention over {length} tokens > max_row {b.config.max_row}")
    tt = length * length
    spm = _spm(b, "attention", length * 4 * dim + (tt if conn is not None else 0) + 4 * tt, at_top=True)
    qkv_addr, ctx_addr = spm.take(length * 3 * dim), spm.take(length * dim)
    mask_addr = spm.take(tt) if conn is not None else 0
    s_bufs = [spm.take(tt) for _ in range(2)]
    p_bufs = [spm.take(tt) for _ in range(2)]
    if tt > b.config.acc_elems:
        raise LoweringError(f"head-sum attention {length}x{length} exceeds the ACC")
    s_shift = _check_shift(2 * frac_qkv + extra - f["s"], "score")
    ctx_shift = _check_shift(PROB_FRAC + frac_qkv - f["ctx"], "context")
    mask = {"mask": 1, "e_addr": mask_addr, "e_stride": length} if conn is not None else {}
    step = 0
    for img in range(batch):
        b.load(Mem.SPM, qkv_addr, 3 * dim, qkv, img * length, 0, length, 3 * dim)
        if conn is not None:
            _mask_rows(b, conn, img, length, dense, lists, mask_addr)
        step = _attn_heads_fwd(
            b,
            img,
            qkv_addr,
            ctx_addr,
            s_bufs,
            p_bufs,
            step,
            probs,
            ctx,
            attn_sum,
            length,
            heads,
            dim,
            mask,
            s_shift,
            ctx_shift,
            f["s"],
            slots,
        )


# The attention backward core's SPM buffers in placement order and the phases in which units use them
# together (dP = dctx V^T while P comes in and the previous head's dQ, dK, dV go out; the softmax backward;
# dQ and dK from dS; dV from P): see ATTN_FWD_PHASES.
ATTN_BWD_PHASES = (
    ("dctx", "qkv", "dp", "mask", "p", "dqkv"),
    ("p", "dp", "ds", "dqkv"),
    ("ds", "qkv", "dqkv", "p"),
    ("p", "dctx", "dqkv"),
)


def _attn_bwd_sizes(dim: int, length: int, masked: bool) -> dict[str, int]:
    """Elements of stage_attn_core_bwd's SPM buffers, in placement order (p, dp, ds: two tiles each)."""
    tt, ld = length * length, length * dim
    sizes = {"qkv": 3 * ld, "dqkv": 3 * ld, "p": 2 * tt, "dp": 2 * tt, "ds": 2 * tt, "dctx": ld}
    sizes.update({"mask": tt} if masked else {})
    return sizes


def _attn_bwd_place(b: Builder, dim: int, length: int, masked: bool) -> dict[str, int]:
    """stage_attn_core_bwd's SPM buffers (_attn_bwd_sizes), taking its scratchpad."""
    sizes = _attn_bwd_sizes(dim, length, masked)
    # By region from the top of its scratchpad down (measured on the RTL, DeiT-T: at 139 tokens 1.2 % fewer
    # cycles than from the bottom up, the same at 69, 98 and 197). A scratchpad larger than the core needs,
    # with every buffer from a region boundary, measured -1.2 % at 197 tokens and one image but +0.5 % at 8.
    spm = _spm(b, "attention backward", sum(sizes.values()), at_top=True)
    at = _place_apart(spm, sizes, ATTN_BWD_PHASES, spm_region(b.config), top_down=True)
    if at is None:
        at = {name: spm.take(size) for name, size in sizes.items()}
    return at


def stage_attn_core_bwd(
    b: Builder,
    qkv: Buffer,
    dctx: Buffer,
    probs: Buffer,
    conn: Buffer | None,
    dqkv: Buffer,
    batch: int,
    length: int,
    heads: int,
    dense: int,
    lists: int,
    f: dict[str, int],
    frac_qkv: int,
    frac_dctx: int,
    seed: tuple[int, ...],
    slots: dict[str, int],
    keep: bool = False,
    at: dict[str, int] | None = None,
) -> None:
    """keep: dQKV stays whole on chip (rows of 3 dim, not stored) for the next stage_linear_bwd, whose
    dY it is (Builder.onchip), with the rest of its scratchpad half above it, where that is possible
    (one image, dQKV within one half), else it is stored."""
    dim = qkv.cols // 3
    hd = dim // heads
    mult, extra = blocks.attn_scale(hd)
    if length > b.config.max_row:
        raise LoweringError(f"attention over {length} tokens > max_row {b.config.max_row}")
    tt = length * length
    at = at or _attn_bwd_place(b, dim, length, conn is not None)
    qkv_addr, dctx_addr, dqkv_addr = at["qkv"], at["dctx"], at["dqkv"]
    # dctx left on chip at its place by the previous stage (stage_linear_bwd's dx_onchip): not loaded
    dctx_on = batch == 1 and b.onchip.get(dctx.name) == dctx_addr
    b.onchip, b.onchip_spm = {}, None
    mask_addr = at.get("mask", 0)
    bufs = [(at["p"] + i * tt, at["dp"] + i * tt, at["ds"] + i * tt) for i in range(2)]  # P, dP, dS
    dp_shift = _check_shift(frac_dctx + frac_qkv - f["dp"], "dP")
    ds_shift = _check_shift(f["dp"] + 30 - f["ds"], "dS")
    qk_shift = _check_shift(f["ds"] + frac_qkv + extra - f["dqkv"], "dQ/dK")
    v_shift = _check_shift(PROB_FRAC + frac_dctx - f["dqkv"], "dV")
    mask = {"mask": 1, "e_addr": mask_addr, "e_stride": length} if conn is not None else {}
    row3 = 3 * dim
    step = 0
    # the rest of dQKV's scratchpad half above it (the next stage_linear_bwd's linear buffers take the other)
    half, top = b.scratch // 2, dqkv_addr + length * row3
    end = half if top <= half else 2 * half
    # (the next stage's _spm takes the half other than b.spm_half: dQKV must be in b.spm_half's)
    keep = keep and batch == 1 and dqkv_addr >= end - half and (end > half) == (b.spm_half == 1)
    if keep:
        b.onchip, b.onchip_spm = {dqkv.name: dqkv_addr}, Arena(end - top, f"{b.kernel} after dQKV (SPM)", top)
    for img in range(batch):
        b.load(Mem.SPM, qkv_addr, row3, qkv, img * length, 0, length, row3)
        if not dctx_on:
            b.load(Mem.SPM, dctx_addr, dim, dctx, img * length, 0, length, dim)
        if conn is not None:
            _mask_rows(b, conn, img, length, dense, lists, mask_addr)
        for h in range(heads):
            p_addr, dp_addr, ds_addr = bufs[step % 2]
            step += 1
            b.load(Mem.SPM, p_addr, length, probs, (img * heads + h) * length, 0, length, length)
            sq = {"sr": 1, "index_base": (img * heads + h) * tt, "index_stride": length}
            b.add(
                Op.GEMM,
                seed_path=seed + (1,),
                m=length,
                n=length,
                k=hd,
                a_addr=dctx_addr + h * hd,
                a_stride=dim,
                b_addr=qkv_addr + 2 * dim + h * hd,
                b_stride=row3,
                c_addr=dp_addr,
                c_stride=length,
                imm=1,
                shift=dp_shift,
                stat=1,
                slot=slots["dp"],
                **sq,
                **mask,
            )
            b.add(
                Op.SOFTMAX,
                seed_path=seed + (2,),
                sub=SoftmaxSub.BWD,
                m=length,
                n=length,
                a_addr=p_addr,
                a_stride=length,
                b_addr=dp_addr,
                b_stride=length,
                c_addr=ds_addr,
                c_stride=length,
                shift=ds_shift,
                stat=1,
                slot=slots["ds"],
                **sq,
            )
            base = img * length * row3 + h * hd
            # dQ_h, dK_h, dV_h each contiguous on chip (c_stride hd), stored per head: the stores overlap
            # the next head's work (strided blocks would look like overlapping ranges and serialize)
            common = {"sr": 1, "index_stride": row3, "stat": 1, "slot": slots["dqkv"], "c_stride": hd}
            blk = [dqkv_addr + (3 * h + part) * length * hd for part in range(3)]
            if keep:  # in place in the whole dQKV (nothing stored)
                common["c_stride"] = row3
                blk = [dqkv_addr + part * dim + h * hd for part in range(3)]
            # dQ = dS K * mult; dK = dS^T Q * mult; dV = P^T dctx_h
            b.add(
                Op.GEMM,
                seed_path=seed + (3,),
                m=length,
                n=hd,
                k=length,
                a_addr=ds_addr,
                a_stride=length,
                b_addr=qkv_addr + dim + h * hd,
                b_stride=row3,
                tb=1,
                c_addr=blk[0],
                imm=mult,
                shift=qk_shift,
                index_base=base,
                **common,
            )
            b.add(
                Op.GEMM,
                seed_path=seed + (3,),
                m=length,
                n=hd,
                k=length,
                a_addr=ds_addr,
                a_stride=length,
                ta=1,
                b_addr=qkv_addr + h * hd,
                b_stride=row3,
                tb=1,
                c_addr=blk[1],
                imm=mult,
                shift=qk_shift,
                index_base=base + dim,
                **common,
            )
            b.add(
                Op.GEMM,
                seed_path=seed + (3,),
                m=length,
                n=hd,
                k=length,
                a_addr=p_addr,
                a_stride=length,
                ta=1,
                b_addr=dctx_addr + h * hd,
                b_stride=dim,
                tb=1,
                c_addr=blk[2],
                imm=1,
                shift=v_shift,
                index_base=base + 2 * dim,
                **common,
            )
            for part in range(3 * (not keep)):
                b.store(Mem.SPM, blk[part], hd, dqkv, img * length, part * dim + h * hd, length, hd)


# ------------------------------------------------------------------------------------------ kernels
# Each lowering is a pure function of shapes, fracs and the configuration (cached). Buffer names are
# the contract with the backend (trilevel.accel.engine), which writes inputs and reads outputs by name.
_CACHE = 512
# Fields that depend on the fracs (everything else depends only on shapes and the configuration).
FRAC_FIELDS = ("shift", "shift2", "shift3", "shift4", "imm")
_FRAC_SET = frozenset(FRAC_FIELDS)
# name -> (word, lsb, mask, lo, hi) for patching a frac field in place.
_FRAC_PATCH = {
    name: (
        word,
        lsb,
        ((1 << width) - 1) << lsb,
        -(1 << (width - 1)) if signed else 0,
        (1 << (width - 1)) - 1 if signed else (1 << width) - 1,
    )
    for name, (word, lsb, width, signed) in ((n, isa.FIELDS[n]) for n in FRAC_FIELDS)
}
_TEMPLATES: dict[tuple, Program] = {}


def _builder(config: isa.EngineConfig, kernel: str, *shape: object) -> tuple[Builder, tuple]:
    """A builder that replays the program lowered before at these shapes, when there is one."""
    key = (kernel, config, *shape)
    return Builder(config, kernel, _TEMPLATES.get(key)), key


def _finish(b: Builder, key: tuple, stat_keys: Sequence[str]) -> Program:
    program = b.finish(stat_keys)
    if len(_TEMPLATES) >= _CACHE:
        _TEMPLATES.clear()
    _TEMPLATES.setdefault(key, program)
    return program


def _keys_slots(keys: Sequence[str]) -> dict[str, int]:
    return {k: i for i, k in enumerate(keys)}


@functools.lru_cache(maxsize=_CACHE)
def linear_fwd(
    config: isa.EngineConfig,
    rows: int,
    din: int,
    dout: int,
    frac_x: int,
    frac_w: int,
    frac_b: int | None,
    frac_res: int | None,
    frac_y: int,
) -> Program:
    b, key = _builder(config, "linear_fwd", rows, din, dout, frac_b is None, frac_res is None)
    x = b.buffer("x", rows, din, "<i2", "in")
    w = b.buffer("weight", dout, din, "<i2", "in")
    bias = b.buffer("bias", 1, dout, "<i2", "in") if frac_b is not None else None
    res = b.buffer("residual", rows, dout, "<i2", "in") if frac_res is not None else None
    y = b.buffer("y", rows, dout, "<i2", "out")
    fa = frac_x + frac_w
    stage_linear_fwd(
        b,
        x,
        w,
        bias,
        res,
        y,
        _check_shift(fa - frac_y, "output"),
        _check_shift(frac_b - fa, "bias", *ALIGN) if frac_b is not None else 0,
        _check_shift(frac_res - fa, "residual", *ALIGN) if frac_res is not None else 0,
        0,
    )
    return _finish(b, key, layers.LINEAR_FWD_FRACS)


@functools.lru_cache(maxsize=_CACHE)
def linear_bwd(
    config: isa.EngineConfig,
    rows: int,
    din: int,
    dout: int,
    has_bias: bool,
    need_dx: bool,
    frac_dy: int,
    frac_w: int,
    frac_dx: int,
    fresh: bool = False,
) -> Program:
    """fresh: the gradients start at zero in ACC (no DDR read) instead of adding to grad_weight/grad_bias."""
    b, key = _builder(config, "linear_bwd", rows, din, dout, has_bias, need_dx, fresh)
    dy = b.buffer("dy", rows, dout, "<i2", "in")
    x = b.buffer("x", rows, din, "<i2", "in")
    w = b.buffer("weight", dout, din, "<i2", "in")
    gw = b.gradient("grad_weight", dout, din, fresh)
    gb = b.gradient("grad_bias", 1, dout, fresh) if has_bias else None
    dx = b.buffer("dx", rows, din, "<i2", "out") if need_dx else None
    stage_linear_bwd(
        b, dy, x, w, gw, gb, dx, _check_shift(frac_dy + frac_w - frac_dx, "dx") if need_dx else 0, (0,), 0
    )
    return _finish(b, key, layers.LINEAR_BWD_FRACS if need_dx else ())


def _ln_fwd_shifts(dim: int, frac_g: int, frac_b: int, frac_y: int) -> tuple[int, int]:
    fa = ln_xhat_frac(dim) + frac_g
    return _check_shift(fa - frac_y, "LayerNorm output"), _check_shift(frac_b - fa, "LayerNorm beta", *ALIGN)


def _ln_bwd_shifts(
    dim: int, frac_dy: int, frac_g: int, frac_x: int, frac_res: int | None, f: dict[str, int]
) -> tuple[int, int, int, int]:
    fh = ln_xhat_frac(dim)
    shift4 = frac_res - f["t"] - RSQRT_FRAC + frac_x if frac_res is not None else 0
    return (
        _check_shift(frac_dy + frac_g - f["g"], "LayerNorm g"),
        _check_shift(f["g"] + fh - f["t"], "t"),
        _check_shift(f["t"] + RSQRT_FRAC - frac_x - f["dx"], "LayerNorm dx"),
        _check_shift(shift4, "LayerNorm residual", *ALIGN),
    )


@functools.lru_cache(maxsize=_CACHE)
def layernorm_fwd(
    config: isa.EngineConfig, rows: int, dim: int, frac_x: int, frac_g: int, frac_b: int, frac_y: int
) -> Program:
    b, key = _builder(config, "layernorm_fwd", rows, dim)
    x = b.buffer("x", rows, dim, "<i2", "in")
    g = b.buffer("weight", 1, dim, "<i2", "in")
    be = b.buffer("bias", 1, dim, "<i2", "in")
    y = b.buffer("y", rows, dim, "<i2", "out")
    xhat = b.buffer("xhat", rows, dim, "<i2", "out")
    rs = b.buffer("row_stats", 1, rows, "<i8", "out")
    shift, shift2 = _ln_fwd_shifts(dim, frac_g, frac_b, frac_y)
    stage_ln_fwd(b, x, g, be, y, xhat, rs, shift, shift2, frac_x, 0)
    return _finish(b, key, layers.LAYERNORM_FWD_FRACS)


@functools.lru_cache(maxsize=_CACHE)
def layernorm_bwd(
    config: isa.EngineConfig,
    rows: int,
    dim: int,
    frac_dy: int,
    frac_g: int,
    frac_x: int,
    frac_res: int | None,
    fracs: tuple[tuple[str, int], ...],
    fresh: bool = False,
) -> Program:
    """fresh: as linear_bwd."""
    f = dict(fracs)
    b, key = _builder(config, "layernorm_bwd", rows, dim, frac_res is None, fresh)
    dy = b.buffer("dy", rows, dim, "<i2", "in")
    xhat = b.buffer("xhat", rows, dim, "<i2", "in")
    rs = b.buffer("row_stats", 1, rows, "<i8", "in")
    g = b.buffer("weight", 1, dim, "<i2", "in")
    res = b.buffer("residual", rows, dim, "<i2", "in") if frac_res is not None else None
    dx = b.buffer("dx", rows, dim, "<i2", "out")
    gg = b.gradient("grad_weight", 1, dim, fresh)
    gb = b.gradient("grad_bias", 1, dim, fresh)
    stage_ln_bwd(
        b, dy, xhat, rs, g, res, dx, gg, gb, _ln_bwd_shifts(dim, frac_dy, frac_g, frac_x, frac_res, f), (), 0
    )
    return _finish(b, key, layers.LAYERNORM_BWD_FRACS)


@dataclasses.dataclass(frozen=True)
class AttnShape:
    batch: int
    length: int
    dim: int
    heads: int
    dense: int  # dense rows ([CLS]) before the connection-listed ones
    lists: int  # connections per listed row (0: dense attention)


@functools.lru_cache(maxsize=_CACHE)
def attn_block_fwd(
    config: isa.EngineConfig,
    s: AttnShape,
    frac_x: int,
    pf: tuple[tuple[str, int], ...],
    fracs: tuple[tuple[str, int], ...],
) -> Program:
    """pf: the parameter fracs (norm1.weight, ...); fracs: ATTN_FWD_FRACS."""
    f, p = dict(fracs), dict(pf)
    b, key = _builder(config, "attn_block_fwd", s)
    rows, dim = s.batch * s.length, s.dim
    slots = _keys_slots(blocks.ATTN_FWD_FRACS)
    x = b.buffer("x", rows, dim, "<i2", "in")
    params = {name: b.buffer(name, *shape, "<i2", "in") for name, shape in _attn_param_shapes(dim).items()}
    conn = b.buffer("conn", s.batch * (s.length - s.dense), s.lists, "<u2", "in") if s.lists else None
    z = b.buffer("z", rows, dim, "<i2", "out")
    xhat = b.buffer("xhat", rows, dim, "<i2", "out")
    rs = b.buffer("row_stats", 1, rows, "<i8", "out")
    qkv = b.buffer("qkv", rows, 3 * dim, "<i2", "out")
    probs = b.buffer("probs", s.batch * s.heads * s.length, s.length, "<i2", "out")
    ctx = b.buffer("ctx", rows, dim, "<i2", "out")
    attn_sum = b.buffer("attn_sum", rows, s.length, "<i8", "out")
    out = b.buffer("out", rows, dim, "<i2", "out")
    saved = {
        "z": z,
        "xhat": xhat,
        "row_stats": rs,
        "qkv": qkv,
        "probs": probs,
        "ctx": ctx,
        "attn_sum": attn_sum,
    }
    if stage_attn_fwd_fused(b, x, params, conn, saved, out, s, f, p, frac_x, slots):
        return _finish(b, key, blocks.ATTN_FWD_FRACS)
    shift, shift2 = _ln_fwd_shifts(dim, p["norm1.weight"], p["norm1.bias"], f["ln"])
    stage_ln_fwd(
        b, x, params["norm1.weight"], params["norm1.bias"], z, xhat, rs, shift, shift2, frac_x, slots["ln"]
    )
    fa = f["ln"] + p["attn.qkv.weight"]
    stage_linear_fwd(
        b,
        z,
        params["attn.qkv.weight"],
        params["attn.qkv.bias"],
        None,
        qkv,
        _check_shift(fa - f["qkv"], "qkv"),
        _check_shift(p["attn.qkv.bias"] - fa, "qkv bias", *ALIGN),
        0,
        slots["qkv"],
    )
    stage_attn_core_fwd(
        b, qkv, conn, probs, ctx, attn_sum, s.batch, s.length, s.heads, s.dense, s.lists, f, f["qkv"], slots
    )
    fa = f["ctx"] + p["attn.proj.weight"]
    stage_linear_fwd(
        b,
        ctx,
        params["attn.proj.weight"],
        params["attn.proj.bias"],
        x,
        out,
        _check_shift(fa - f["out"], "proj"),
        _check_shift(p["attn.proj.bias"] - fa, "proj bias", *ALIGN),
        _check_shift(frac_x - fa, "residual", *ALIGN),
        slots["out"],
    )
    return _finish(b, key, blocks.ATTN_FWD_FRACS)


def _attn_param_shapes(dim: int) -> dict[str, tuple[int, int]]:
    return {
        "norm1.weight": (1, dim),
        "norm1.bias": (1, dim),
        "attn.qkv.weight": (3 * dim, dim),
        "attn.qkv.bias": (1, 3 * dim),
        "attn.proj.weight": (dim, dim),
        "attn.proj.bias": (1, dim),
    }


def _mlp_param_shapes(dim: int, hidden: int) -> dict[str, tuple[int, int]]:
    return {
        "norm2.weight": (1, dim),
        "norm2.bias": (1, dim),
        "mlp.fc1.weight": (hidden, dim),
        "mlp.fc1.bias": (1, hidden),
        "mlp.fc2.weight": (dim, hidden),
        "mlp.fc2.bias": (1, dim),
    }


@functools.lru_cache(maxsize=_CACHE)
def attn_block_bwd(
    config: isa.EngineConfig,
    s: AttnShape,
    frac_dout: int,
    saved_fracs: tuple[int, int, int, int],
    pf: tuple[tuple[str, int], ...],
    fracs: tuple[tuple[str, int], ...],
    fresh: bool = False,
) -> Program:
    """saved_fracs: (frac_x of LN1, frac_z, frac_qkv, frac_ctx); pf: parameter fracs; fracs: ATTN_BWD_FRACS;
    fresh: the gradients start at zero on chip (a step's first micro-batch) instead of adding to grad.*"""
    f, p = dict(fracs), dict(pf)
    frac_x, _, frac_qkv, _ = saved_fracs
    b, key = _builder(config, "attn_block_bwd", s, fresh)
    rows, dim = s.batch * s.length, s.dim
    slots = _keys_slots(blocks.ATTN_BWD_FRACS)
    dout = b.buffer("dout", rows, dim, "<i2", "in")
    shapes = _attn_param_shapes(dim)
    params = {name: b.buffer(name, *shape, "<i2", "in") for name, shape in shapes.items()}
    grads = {name: b.gradient("grad." + name, *shape, fresh) for name, shape in shapes.items()}
    z = b.buffer("z", rows, dim, "<i2", "in")
    xhat = b.buffer("xhat", rows, dim, "<i2", "in")
    rs = b.buffer("row_stats", 1, rows, "<i8", "in")
    qkv = b.buffer("qkv", rows, 3 * dim, "<i2", "in")
    probs = b.buffer("probs", s.batch * s.heads * s.length, s.length, "<i2", "in")
    ctx = b.buffer("ctx", rows, dim, "<i2", "in")
    conn = b.buffer("conn", s.batch * (s.length - s.dense), s.lists, "<u2", "in") if s.lists else None
    dctx = b.buffer("dctx", rows, dim, "<i2", "scratch")
    dqkv = b.buffer("dqkv", rows, 3 * dim, "<i2", "scratch")
    dz = b.buffer("dz", rows, dim, "<i2", "scratch")
    dx = b.buffer("dx", rows, dim, "<i2", "out")
    # one image: the proj stage's dX GEMMs write dctx where the attention core wants it (placed once the proj
    # stage has its scratchpad), so dctx is neither stored nor loaded
    core_at: dict[str, int] = {}

    def dctx_at() -> int | None:
        if s.batch != 1:
            return None
        core_at.update(_attn_bwd_place(b, dim, s.length, conn is not None))
        return core_at["dctx"]

    stage_linear_bwd(
        b,
        dout,
        ctx,
        params["attn.proj.weight"],
        grads["attn.proj.weight"],
        grads["attn.proj.bias"],
        dctx,
        _check_shift(frac_dout + p["attn.proj.weight"] - f["dctx"], "dctx"),
        (0, 0),
        slots["dctx"],
        dx_onchip=dctx_at,
    )
    stage_attn_core_bwd(
        b,
        qkv,
        dctx,
        probs,
        conn,
        dqkv,
        s.batch,
        s.length,
        s.heads,
        s.dense,
        s.lists,
        f,
        frac_qkv,
        f["dctx"],
        (),
        slots,
        keep=True,
        at=core_at or None,
    )
    ln_f = {"g": f["ln_g"], "t": f["ln_t"], "dx": f["dx"]}
    ln = LnBwdEpilogue(
        params["norm1.weight"],
        xhat,
        rs,
        dout,
        dx,
        grads["norm1.weight"],
        grads["norm1.bias"],
        _ln_bwd_shifts(dim, f["dln"], p["norm1.weight"], frac_x, frac_dout, ln_f),
        (5,),
        slots["ln_g"],
    )
    fused = stage_linear_bwd(
        b,
        dqkv,
        z,
        params["attn.qkv.weight"],
        grads["attn.qkv.weight"],
        grads["attn.qkv.bias"],
        dz,
        _check_shift(f["dqkv"] + p["attn.qkv.weight"] - f["dln"], "dz"),
        (4, 0),
        slots["dln"],
        ln=ln,
    )
    if not fused:
        stage_ln_bwd(
            b, dz, xhat, rs, ln.gamma, dout, dx, ln.grad_g, ln.grad_b, ln.shifts, ln.seed_path, ln.slot
        )
    return _finish(b, key, blocks.ATTN_BWD_FRACS)


@functools.lru_cache(maxsize=_CACHE)
def mlp_block_fwd(
    config: isa.EngineConfig,
    rows: int,
    dim: int,
    hidden: int,
    frac_x: int,
    pf: tuple[tuple[str, int], ...],
    fracs: tuple[tuple[str, int], ...],
) -> Program:
    f, p = dict(fracs), dict(pf)
    b, key = _builder(config, "mlp_block_fwd", rows, dim, hidden)
    slots = _keys_slots(blocks.MLP_FWD_FRACS)
    x = b.buffer("x", rows, dim, "<i2", "in")
    params = {
        name: b.buffer(name, *shape, "<i2", "in") for name, shape in _mlp_param_shapes(dim, hidden).items()
    }
    z = b.buffer("z", rows, dim, "<i2", "out")
    xhat = b.buffer("xhat", rows, dim, "<i2", "out")
    rs = b.buffer("row_stats", 1, rows, "<i8", "out")
    h = b.buffer("h", rows, hidden, "<i2", "out")
    a = b.buffer("a", rows, hidden, "<i2", "out")
    out = b.buffer("out", rows, dim, "<i2", "out")
    saved = {"z": z, "xhat": xhat, "row_stats": rs, "h": h, "a": a}
    if stage_mlp_fwd_fused(b, x, params, saved, out, f, p, frac_x, slots):
        return _finish(b, key, blocks.MLP_FWD_FRACS)
    shift, shift2 = _ln_fwd_shifts(dim, p["norm2.weight"], p["norm2.bias"], f["ln"])
    stage_ln_fwd(
        b, x, params["norm2.weight"], params["norm2.bias"], z, xhat, rs, shift, shift2, frac_x, slots["ln"]
    )
    fa = f["ln"] + p["mlp.fc1.weight"]
    stage_linear_fwd(
        b,
        z,
        params["mlp.fc1.weight"],
        params["mlp.fc1.bias"],
        None,
        h,
        _check_shift(fa - f["h"], "fc1"),
        _check_shift(p["mlp.fc1.bias"] - fa, "fc1 bias", *ALIGN),
        0,
        slots["h"],
        GeluEpilogue(a, _check_shift(f["h"] + GELU_LUT_FRAC - f["a"], "GELU"), f["h"], slots["a"]),
    )
    fa = f["a"] + p["mlp.fc2.weight"]
    stage_linear_fwd(
        b,
        a,
        params["mlp.fc2.weight"],
        params["mlp.fc2.bias"],
        x,
        out,
        _check_shift(fa - f["out"], "fc2"),
        _check_shift(p["mlp.fc2.bias"] - fa, "fc2 bias", *ALIGN),
        _check_shift(frac_x - fa, "residual", *ALIGN),
        slots["out"],
    )
    return _finish(b, key, blocks.MLP_FWD_FRACS)


@functools.lru_cache(maxsize=_CACHE)
def mlp_block_bwd(
    config: isa.EngineConfig,
    rows: int,
    dim: int,
    hidden: int,
    frac_dout: int,
    saved_fracs: tuple[int, int, int, int],
    pf: tuple[tuple[str, int], ...],
    fracs: tuple[tuple[str, int], ...],
    fresh: bool = False,
) -> Program:
    """saved_fracs: (frac_x of LN2, frac_z, frac_h, frac_a); fresh: as attn_block_bwd."""
    f, p = dict(fracs), dict(pf)
    frac_x, _, frac_h, _ = saved_fracs
    b, key = _builder(config, "mlp_block_bwd", rows, dim, hidden, fresh)
    slots = _keys_slots(blocks.MLP_BWD_FRACS)
    shapes = _mlp_param_shapes(dim, hidden)
    dout = b.buffer("dout", rows, dim, "<i2", "in")
    params = {name: b.buffer(name, *shape, "<i2", "in") for name, shape in shapes.items()}
    grads = {name: b.gradient("grad." + name, *shape, fresh) for name, shape in shapes.items()}
    z = b.buffer("z", rows, dim, "<i2", "in")
    xhat = b.buffer("xhat", rows, dim, "<i2", "in")
    rs = b.buffer("row_stats", 1, rows, "<i8", "in")
    h = b.buffer("h", rows, hidden, "<i2", "in")
    a = b.buffer("a", rows, hidden, "<i2", "in")
    dh = b.buffer("dh", rows, hidden, "<i2", "scratch")
    dz = b.buffer("dz", rows, dim, "<i2", "scratch")
    dx = b.buffer("dx", rows, dim, "<i2", "out")
    # dH (fc2's dX through the GELU backward) stays in the scratchpad for fc1's backward (its dY), with dOut
    # (fc2's dY, the LayerNorm's residual gradient) when they and both X (a, z) fit half of it: dH is then
    # neither stored nor loaded and dOut loaded once (else both go through DDR)
    keep = rows * (2 * dim + 2 * hidden) <= b.scratch // 2 and rows <= 0xFFFF
    stage_linear_bwd(
        b,
        dout,
        a,
        params["mlp.fc2.weight"],
        grads["mlp.fc2.weight"],
        grads["mlp.fc2.bias"],
        None,
        _check_shift(frac_dout + p["mlp.fc2.weight"] - f["da"], "da"),
        (0, 0),
        slots["da"],
        GeluEpilogue(
            dh,
            _check_shift(f["da"] + GELU_LUT_FRAC - f["dh"], "dh"),
            frac_h,
            slots["dh"],
            h,
            (1, 0),
            keep,
        ),
    )
    ln_f = {"g": f["ln_g"], "t": f["ln_t"], "dx": f["dx"]}
    ln = LnBwdEpilogue(
        params["norm2.weight"],
        xhat,
        rs,
        dout,
        dx,
        grads["norm2.weight"],
        grads["norm2.bias"],
        _ln_bwd_shifts(dim, f["dln"], p["norm2.weight"], frac_x, frac_dout, ln_f),
        (3,),
        slots["ln_g"],
    )
    fused = stage_linear_bwd(
        b,
        dh,
        z,
        params["mlp.fc1.weight"],
        grads["mlp.fc1.weight"],
        grads["mlp.fc1.bias"],
        dz,
        _check_shift(f["dh"] + p["mlp.fc1.weight"] - f["dln"], "dz"),
        (2, 0),
        slots["dln"],
        ln=ln,
    )
    if not fused:
        stage_ln_bwd(
            b, dz, xhat, rs, ln.gamma, dout, dx, ln.grad_g, ln.grad_b, ln.shifts, ln.seed_path, ln.slot
        )
    return _finish(b, key, blocks.MLP_BWD_FRACS)


@functools.lru_cache(maxsize=_CACHE)
def topk(
    config: isa.EngineConfig, images: int, img_rows: int, img_cols: int, first: int, k: int, lead: int
) -> Program:
    """Scores: int64 [images * img_rows, img_cols]. For rows and columns `first`.. of each image: the k best
    columns (counted from `first`, ascending), each selected row prefixed by 0..lead-1 and shifted by lead."""
    rows, n = img_rows - first, img_cols - first
    if n > config.max_row:
        raise LoweringError(f"top-k over {n} > max_row {config.max_row}")
    if not 1 <= k <= n:
        raise LoweringError(f"top-k: k={k} must be in 1..{n}")
    if rows * n > config.acc_elems or rows * (lead + k) > config.idx_elems:
        raise LoweringError(f"top-k of {rows}x{n} does not fit the ACC/IDX memories")
    b = Builder(config, "topk")
    scores = b.buffer("scores", images * img_rows, img_cols, "<i8", "in")
    out = b.buffer("selected", images * rows, lead + k, "<u2", "out")
    per_chunk = max(
        1, min(config.acc_elems // (rows * n), config.idx_elems // (rows * (lead + k)), 0xFFFF // rows)
    )
    for i0, ii in _tiles(images, per_chunk):
        for i in range(ii):
            b.load(Mem.ACC, i * rows * n, n, scores, (i0 + i) * img_rows + first, first, rows, n)
        b.add(Op.TOPK, m=ii * rows, n=n, k=k, a_addr=0, a_stride=n, c_addr=0, c_stride=lead + k, imm=lead)
        b.store(Mem.IDX, 0, lead + k, out, i0 * rows, 0, ii * rows, lead + k)
    return b.finish(())


def fracs_key(fracs: dict[str, int], keys: Sequence[str]) -> tuple[tuple[str, int], ...]:
    return tuple((k, int(fracs[k])) for k in keys)


# ---------------------------------------------------------------------------- representative calls
REPRESENTATIVE_KERNELS = (
    "attn_fwd",
    "attn_bwd",
    "mlp_fwd",
    "mlp_bwd",
    "linear_fwd",
    "linear_bwd",
    "layernorm_fwd",
    "layernorm_bwd",
    "topk_tokens",
    "topk_connections",
)
# Representative fracs (they change only the shift fields of the commands, not the program's structure).
ATTN_FWD = {"ln": 12, "qkv": 11, "s": 9, "ctx": 12, "out": 11}
ATTN_BWD = {"dctx": 12, "dp": 12, "ds": 14, "dqkv": 12, "dln": 12, "ln_g": 12, "ln_t": 10, "dx": 12}
MLP_FWD = {"ln": 12, "h": 11, "a": 11, "out": 11}
MLP_BWD = {"da": 12, "dh": 12, "dln": 12, "ln_g": 12, "ln_t": 10, "dx": 12}
LN_BWD = {"g": 12, "t": 10, "dx": 13}
WEIGHT_FRAC, BIAS_FRAC, ACT_FRAC, GRAD_FRAC = 14, 13, 12, 13


def representative(
    kernel: str,
    cfg: ViTConfig,
    tokens: int,
    keys: int | None,
    batch: int,
    engine_config: isa.EngineConfig,
    linear: str = "patch_embed",
    fresh: bool = False,
) -> Program:
    """The program of one call of `kernel` (REPRESENTATIVE_KERNELS) at these shapes, with representative
    fracs (they change only shift fields): what `trilevel program` prints and `trilevel latency` prices.
    Attention: `tokens` incl. [CLS], `keys` connections per query incl. [CLS] (None: dense); linear:
    "patch_embed" (Din = C p^2, Dout = D) or "head" (Din = D, Dout = classes); rows = batch x tokens; fresh:
    backward kernels start their gradients at zero on chip (a step's first micro-batch) instead of adding."""
    dim, hidden, heads = cfg.embed_dim, cfg.mlp_hidden, cfg.num_heads
    rows = batch * tokens
    key = fracs_key
    attn_p = tuple(
        (n, WEIGHT_FRAC if n.endswith("weight") else BIAS_FRAC)
        for n in (
            "norm1.weight",
            "norm1.bias",
            "attn.qkv.weight",
            "attn.qkv.bias",
            "attn.proj.weight",
            "attn.proj.bias",
        )
    )
    mlp_p = tuple(
        (n, WEIGHT_FRAC if n.endswith("weight") else BIAS_FRAC)
        for n in (
            "norm2.weight",
            "norm2.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
        )
    )
    shape = AttnShape(batch, tokens, dim, heads, 1, keys or 0)
    din, dout = (cfg.in_chans * cfg.patch_size**2, dim) if linear == "patch_embed" else (dim, cfg.num_classes)
    builders: dict[str, Callable[[], Program]] = {
        "attn_fwd": lambda: attn_block_fwd(
            engine_config, shape, ACT_FRAC, attn_p, key(ATTN_FWD, blocks.ATTN_FWD_FRACS)
        ),
        "attn_bwd": lambda: attn_block_bwd(
            engine_config,
            shape,
            GRAD_FRAC,
            (ACT_FRAC, 12, 11, 12),
            attn_p,
            key(ATTN_BWD, blocks.ATTN_BWD_FRACS),
            fresh,
        ),
        "mlp_fwd": lambda: mlp_block_fwd(
            engine_config, rows, dim, hidden, ACT_FRAC, mlp_p, key(MLP_FWD, blocks.MLP_FWD_FRACS)
        ),
        "mlp_bwd": lambda: mlp_block_bwd(
            engine_config,
            rows,
            dim,
            hidden,
            GRAD_FRAC,
            (ACT_FRAC, 12, 11, 11),
            mlp_p,
            key(MLP_BWD, blocks.MLP_BWD_FRACS),
            fresh,
        ),
        "linear_fwd": lambda: linear_fwd(
            engine_config, rows, din, dout, ACT_FRAC, WEIGHT_FRAC, BIAS_FRAC, None, 11
        ),
        "linear_bwd": lambda: linear_bwd(
            engine_config, rows, din, dout, True, linear != "patch_embed", GRAD_FRAC, WEIGHT_FRAC, 12, fresh
        ),
        "layernorm_fwd": lambda: layernorm_fwd(
            engine_config, rows, dim, ACT_FRAC, WEIGHT_FRAC, BIAS_FRAC, 12
        ),
        "layernorm_bwd": lambda: layernorm_bwd(
            engine_config,
            rows,
            dim,
            GRAD_FRAC,
            WEIGHT_FRAC,
            ACT_FRAC,
            None,
            key(LN_BWD, layers.LAYERNORM_BWD_FRACS),
            fresh,
        ),
        "topk_tokens": lambda: topk(engine_config, batch, 1, tokens - 1, 0, keys or tokens - 1, 0),
        "topk_connections": lambda: topk(engine_config, batch, tokens, tokens, 1, (keys or tokens) - 1, 1),
    }
    return builders[kernel]()
