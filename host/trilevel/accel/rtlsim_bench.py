"""Per-kernel cycles measured on the engine through the board driver, read from the engine's hardware
counters: the RTL engine in Verilator (rtlsim) or the engine IP on the ZCU102 (pynq), one code path.

    python -m trilevel.accel.rtlsim_bench --out docs/engine-rtl-cycles.json   # production + CI tables
    python -m trilevel.accel.rtlsim_bench --config ci --rows small            # a quick run, printed
    trilevel bench --backend rtlsim|pynq --out DIR                            # the bench section below

Every row runs the lowered program (trilevel.accel.lower) of one kernel call through an EngineBackend
(EngineDriver over a pynq Device: rtlsim's RtlSimZynq, or the board's), checks the result bit for bit
against the reference backend, and reports the counters: total cycles, cycles the array was fed
(GEMM_BUSY), MACs, array utilization MACS / (rows * cols * CYCLES), the DMA-stall share (DMA_STALL /
CYCLES: COMPUTE waiting for a LOAD token), DDR bytes (engine counters: command bytes + payloads) and,
on rtlsim, the AXI bus bytes of the harness. With the production configuration it also runs the
DeiT-T attention and MLP blocks forward and backward at every stage shape (measure_blocks: engine vs
fsim) and projects training time per image and per epoch from those cycles (projection).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trilevel.accel import isa, rtlsim
from trilevel.intref.fixed import QTensor

if TYPE_CHECKING:
    from trilevel.accel.engine import EngineBackend
    from trilevel.bench import BenchOptions, Section

DEIT_T = {"dim": 192, "hidden": 768, "heads": 3}
TOKENS = (197, 139, 98, 69)      # dense and the three pruned stages at R_T = 0.7
MICRO_BATCH = 8                  # images per kernel call of the micro-batch rows (rows = 8 x 197)


@dataclasses.dataclass
class Row:
    kernel: str
    shape: str
    cycles: int
    gemm_busy: int
    macs: int
    utilization: float
    dma_stall_share: float
    ddr_rd_bytes: int
    ddr_wr_bytes: int
    bus_rd_bytes: int | None     # the harness's AXI bookkeeping: rtlsim only
    bus_wr_bytes: int | None
    exact: bool
    wall_s: float


def _linear_case(rng: np.random.Generator, t: int, din: int, dout: int, batch: int = 1
                 ) -> tuple[Callable, Callable, str]:
    x = QTensor(rng.integers(-3000, 3000, (batch, t, din), dtype=np.int16), 12)
    w = QTensor(rng.integers(-3000, 3000, (dout, din), dtype=np.int16), 14)
    b = QTensor(rng.integers(-3000, 3000, (dout,), dtype=np.int16), 13)

    def call(be: Any) -> Any:
        y, stats, _ = be.linear_fwd(x, {"weight": w, "bias": b}, {"y": 10})
        return y.data, stats

    return call, "linear_fwd", f"{batch}x{t}x{din}->{dout}" if batch > 1 else f"{t}x{din}->{dout}"


def _topk_case(rng: np.random.Generator, kind: str, t: int, k: int) -> tuple[Callable, Callable, str]:
    if kind == "tokens":
        scores = rng.integers(0, 1 << 16, (1, t - 1)).astype(np.int64)

        def call(be: Any) -> Any:
            return be.topk_tokens(scores, k)

        return call, "topk_tokens", f"n={t - 1} k={k}"
    scores = rng.integers(0, 3 << 15, (1, t, t)).astype(np.int64)

    def call(be: Any) -> Any:
        return be.topk_connections(scores, k, True)

    return call, "topk_connections", f"T={t} k={k}"


def cases(rows: str) -> list[tuple]:
    """(kind, args) of the measured kernels. `small`: one row per kernel kind (quick). Besides the batch-1
    rows, QKV, fc1 and fc2 of MICRO_BATCH- and 2 x MICRO_BATCH-image calls (the trainer runs a
    micro-batch per kernel call)."""
    d, h = DEIT_T["dim"], DEIT_T["hidden"]
    out: list[tuple] = []
    tokens = (197, 69) if rows == "deit" else (17,) if rows == "small" else TOKENS
    for t in tokens:
        dims = ((d, 3 * d), (d, d), (d, h), (h, d)) if rows != "small" else ((64, 192),)
        for din, dout in dims:
            out.append(("linear", t, din, dout))
    if rows != "small":
        out += [("linear", 197, din, dout, batch) for batch in (MICRO_BATCH, 2 * MICRO_BATCH)
                for din, dout in ((d, 3 * d), (d, h), (h, d))]
    if rows == "small":
        out += [("topk", "tokens", 17, 12), ("topk", "connections", 13, 6)]
    else:
        out += [("topk", "tokens", 197, 138), ("topk", "connections", 139, 43),
                ("topk", "connections", 69, 22)]
    return out


def rtlsim_where(config: isa.EngineConfig, ddr: rtlsim.DdrModel) -> dict[str, Any]:
    """The label of rows measured on the Verilated RTL engine."""
    return {"measured_on": "RTL engine (hls/rtl/engine) in Verilator through the board driver; hardware "
                           f"counters; configuration {config.name} ({config.array_rows}x{config.array_cols} "
                           "array) with the harness's DDR model (ddr_model)",
            "where": f"rtlsim {config.name} {config.array_rows}x{config.array_cols}",
            "ddr_model": dataclasses.asdict(ddr)}


def board_where(bitfile: Path, config: isa.EngineConfig) -> dict[str, Any]:
    """The label of rows measured on the ZCU102: the bitstream and what its manifest.json records."""
    try:
        manifest = json.loads((bitfile.parent / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    bit_sha = manifest.get("artifacts", {}).get(bitfile.name, {}).get("sha256")
    keys = ("board", "part", "engine", "engine_config", "clock_mhz", "git_commit")
    return {"measured_on": f"engine IP on the board through the pynq driver; hardware counters; bitstream "
                           f"{bitfile} (sha256 {bit_sha or 'unknown: no manifest.json next to it'}), "
                           f"configuration {config.name}",
            "where": f"board {manifest.get('board', 'ZCU102')} {config.name} {config.array_rows}x"
                     f"{config.array_cols} bit {(bit_sha or '?')[:8]}",
            "bitstream": {"path": str(bitfile), "sha256": bit_sha, **{k: manifest.get(k) for k in keys}}}


def measure(config: isa.EngineConfig = isa.CI_SMALL, rows: str = "deit", ddr: rtlsim.DdrModel | None = None,
            lib: Path | None = None, log: Callable[[str], None] | None = None,
            backend: EngineBackend | None = None, where: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kernel rows of `rows` on `backend` (an EngineBackend over any pynq Device; default: rtlsim's
    RTL engine at `config` with `ddr`, harness library `lib`), labelled by `where` (default: rtlsim's
    label, or the backend's name)."""
    from trilevel.accel.reference_backend import ReferenceBackend

    if backend is None:
        ddr = ddr or rtlsim.DdrModel()
        backend = rtlsim.rtlsim_backend(config, ddr, 24 * 3600.0, profile_guided=False, lib=lib)
        where = where or rtlsim_where(config, ddr)
    config = backend.config
    harness = getattr(backend.device, "harness", None)      # rtlsim's: AXI bus bytes
    where = where or {"measured_on": f"engine backend {backend.name}; hardware counters",
                      "where": backend.name}
    reference = ReferenceBackend()
    rng = np.random.default_rng(2026)
    pes = config.array_rows * config.array_cols
    out_rows = []
    for case in cases(rows):
        make = _linear_case if case[0] == "linear" else _topk_case
        call, kernel, shape = make(rng, *case[1:])
        backend.counters.clear()
        s0 = harness.stats() if harness else None
        t0 = time.time()
        got = call(backend)
        wall = time.time() - t0
        s1 = harness.stats() if harness else None
        want = call(reference)
        exact = _equal(got, want)
        c = {key: sum(k[key] for k in backend.counters.values()) for key in isa.COUNTERS}
        bus = ((s1["rd_bytes"] - s0["rd_bytes"], s1["wr_bytes"] - s0["wr_bytes"]) if s0 and s1
               else (None, None))
        row = Row(kernel, shape, c["CYCLES"], c["GEMM_BUSY"], c["MACS"],
                  round(c["MACS"] / (pes * c["CYCLES"]), 4),
                  round(c["DMA_STALL"] / c["CYCLES"], 4), c["DDR_RD_BYTES"], c["DDR_WR_BYTES"],
                  *bus, exact, round(wall, 2))
        out_rows.append({**dataclasses.asdict(row), "where": where["where"]})
        if log:
            log(f"{kernel:18s} {shape:16s} cycles {row.cycles:8d}  util {row.utilization:.3f}  "
                f"dma-stall {row.dma_stall_share:.3f}  exact {exact}  ({wall:.1f} s)")
    return {
        **where,
        "date": _dt.date.today().isoformat(),
        "config": dataclasses.asdict(config),
        "clock_mhz": config.clock_mhz,
        "rows": out_rows,
    }


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, tuple):
        return all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a == b
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


DEFAULT_TABLE = Path(__file__).resolve().parents[3] / "docs" / "engine-rtl-cycles.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trilevel.accel.rtlsim_bench",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=sorted(isa.CONFIGS), default=None,
                    help="one configuration (default with --out: the production rows and the CI check rows)")
    ap.add_argument("--rows", choices=("small", "deit", "all"), default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.config:
        plan = [(isa.CONFIGS[args.config], args.rows or "deit")]
    else:
        plan = [(isa.PRODUCTION, args.rows or "deit"), (isa.CI_SMALL, "small")]
    tables = []
    for config, rows in plan:
        print(f"-- {config.name}: {config.array_rows}x{config.array_cols} array, rows {rows}", flush=True)
        ddr = rtlsim.DdrModel()
        backend = rtlsim.rtlsim_backend(config, ddr, 24 * 3600.0, profile_guided=False)
        table = measure_table(backend, rtlsim_where(config, ddr), rows, log=lambda s: print(s, flush=True))
        if "projection" in table:
            print(json.dumps(table["projection"], indent=1), flush=True)
        tables.append(table)
    if args.out:
        args.out.write_text(json.dumps({"tables": tables}, indent=1) + "\n")
    bad = [r for t in tables for r in t["rows"] + t.get("block_rows", []) if not r["exact"]]
    if bad:
        print(f"{len(bad)} rows differ from the reference", file=sys.stderr)
        return 1
    return 0



# ------------------------------------------------------------------------------ trilevel bench section
COLUMNS = ["kernel", "shape", "cycles", "gemm_busy", "macs", "utilization", "dma_stall_share",
           "ddr_rd_bytes", "ddr_wr_bytes", "exact", "wall_s", "where"]
TABLE_FILE = "engine-counters"     # DIR/engine-counters.json and .md


def default_rows(config: isa.EngineConfig) -> str:
    return "deit" if config == isa.PRODUCTION else "small"


def measure_table(backend: EngineBackend, where: dict[str, Any], rows: str | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The table of `python -m trilevel.accel.rtlsim_bench` for one backend: kernel rows, and with the
    production build (rows other than small) the DeiT-T block rows (batch 1 at every stage, and dense at
    MICRO_BATCH images per call) and their projection."""
    rows = rows or default_rows(backend.config)
    table = measure(rows=rows, log=log, backend=backend, where=where)
    if backend.config == isa.PRODUCTION and rows != "small":
        blocks = measure_blocks(backend.config, log=log, driver=backend.driver)
        blocks += measure_blocks(backend.config, stages=((197, None, 12),), log=log, driver=backend.driver,
                                 batch=MICRO_BATCH)
        table["block_rows"] = [{**r, "where": where["where"]} for r in blocks]
        table["projection"] = projection(table["block_rows"], backend.config.clock_mhz)
    return table


def markdown(table: dict[str, Any]) -> str:
    """The table for a person: where and when it was measured, then one line per row."""
    cfg = table["config"]
    lines = [f"# Engine hardware counters per kernel ({table['date']})", "",
             f"Measured on: {table['measured_on']}.", "",
             f"Configuration {cfg['name']}: {cfg['array_rows']}x{cfg['array_cols']} array, clock "
             f"{table['clock_mhz']} MHz (cycles are engine cycles; ms = cycles / clock). Utilization = "
             "MACs / (rows x cols x cycles); exact = the outputs equal the reference backend bit for bit.",
             ""]
    if "bitstream" in table:
        lines += [f"Bitstream: `{json.dumps(table['bitstream'], sort_keys=True)}`", ""]
    if "ddr_model" in table:
        lines += [f"DDR model: `{json.dumps(table['ddr_model'], sort_keys=True)}`", ""]
    for key in ("rows", "block_rows"):
        if not table.get(key):
            continue
        lines += ["| " + " | ".join(COLUMNS[:-1]) + " |", "|" + "---|" * (len(COLUMNS) - 1)]
        lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS[:-1]) + " |" for r in table[key]]
        lines.append("")
    if "projection" in table:
        lines += ["Projection (not a measurement): " + json.dumps(table["projection"]), ""]
    return "\n".join(lines)


def bench_section(options: BenchOptions) -> Section:
    """`trilevel bench` section: the kernel rows measured from the engine's counters on
    `options.engine` (bound by `trilevel bench --backend rtlsim|pynq`; default: rtlsim at CI_SMALL), the
    same table as `python -m trilevel.accel.rtlsim_bench`, also written to DIR/engine-counters.{json,md}."""
    from trilevel.bench import Section

    backend, where = options.engine, options.engine_where
    if backend is None:
        backend = rtlsim.rtlsim_backend(isa.CI_SMALL, profile_guided=False)
        where = rtlsim_where(isa.CI_SMALL, rtlsim.DdrModel())
    table = measure_table(backend, where or {}, options.engine_rows, log=lambda s: print(s, flush=True))
    out = Path(options.out)
    (out / f"{TABLE_FILE}.json").write_text(json.dumps(table, indent=1) + "\n")
    (out / f"{TABLE_FILE}.md").write_text(markdown(table))
    section = Section(name="engine_counters", title=f"Engine hardware counters per kernel, measured on "
                      f"{table['where']} ({table['clock_mhz']:g} MHz clock)",
                      columns=COLUMNS[:-1], rows=table["rows"] + table.get("block_rows", []))
    section.notes = [f"measured on: {table['measured_on']}"]
    section.notes += [f"{key}: {json.dumps(table[key], sort_keys=True)}" for key in ("ddr_model", "bitstream")
                      if key in table]
    if "projection" in table:
        section.notes.append(f"projection (not a measurement): {json.dumps(table['projection'])}")
    section.notes.append(f"written: {out / (TABLE_FILE + '.json')}, {out / (TABLE_FILE + '.md')}")
    bad = [r for r in section.rows if not r["exact"]]
    if bad:
        section.notes.append(f"{len(bad)} rows differ from the reference backend")
        section.error = f"{len(bad)} rows differ from the reference backend (table in {TABLE_FILE}.md)"
    return section


def bind(name: str, config: isa.EngineConfig | None = None, bitfile: Path | None = None
         ) -> tuple[EngineBackend, dict[str, Any]]:
    """The backend `trilevel bench --backend NAME` measures on, and its label. rtlsim: the Verilated RTL at
    `config` (default CI_SMALL); pynq: the engine IP of the bitstream, bound like `trilevel train
    --backend pynq` (trilevel.accel.get_backend). Raises BackendError, ImportError, OSError or
    rtlsim.RtlSimError when it cannot."""
    from trilevel.accel import get_backend
    from trilevel.accel.engine import DEFAULT_BITFILE

    if name == "rtlsim":
        config = config or isa.CI_SMALL
        rtlsim.build(config)
        ddr = rtlsim.DdrModel()
        return (get_backend("rtlsim", config=config, ddr=ddr, profile_guided=False),
                rtlsim_where(config, ddr))
    if name != "pynq":
        raise ValueError(f"no engine bench on backend {name!r}")
    path = Path(bitfile or os.environ.get("TRILEVEL_BITFILE") or DEFAULT_BITFILE)
    try:
        import pynq  # noqa: F401
    except ImportError:
        raise ImportError("the pynq package is missing (the board's PYNQ image provides it)") from None
    backend = get_backend("pynq", bitfile=path)
    return backend, board_where(path, backend.config)

# ----------------------------------------------------------------------------------- DeiT-T blocks
STAGES = ((197, None, 4), (139, 43, 3), (98, 31, 3), (69, 22, 2))   # tokens, keys, blocks (Tri-Level/0.7)
EXACT_COUNTERS = ("DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")


def random_inputs(rng: np.random.Generator, program: Any, tokens: int, keys: int | None,
                   given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, buf in program.buffers.items():
        if buf.role not in ("in", "inout"):
            continue
        if name in given:
            out[name] = given[name]
        elif name == "conn":
            rows = [np.concatenate([[0], np.sort(rng.choice(np.arange(1, tokens), keys - 1, replace=False))])
                    for _ in range(buf.rows)]
            out[name] = np.array(rows, dtype=np.uint16)
        elif np.dtype(buf.dtype) == np.int64:
            out[name] = np.zeros((buf.rows, buf.cols), dtype=np.int64)
        else:
            out[name] = rng.integers(-2000, 2000, (buf.rows, buf.cols)).astype(buf.dtype)
    return out


def measure_blocks(config: isa.EngineConfig, ddr: rtlsim.DdrModel | None = None, lib: Path | None = None,
                   stages: tuple = STAGES, log: Callable[[str], None] | None = None,
                   driver: Any = None, batch: int = 1) -> list[dict[str, Any]]:
    """attn/mlp fwd + bwd of one DeiT-T block (`batch` images per call) at every stage's shape, on the
    engine of `driver` (an EngineDriver; default: the RTL at `config` in Verilator) and on fsim: outputs,
    statistics and the exact counters must agree; the rows carry the measured engine's counters."""
    from trilevel import config as model_configs
    from trilevel.accel import lower
    from trilevel.accel.engine import EngineBackend

    vit = model_configs.CONFIGS["deit_tiny"]
    if driver is None:
        ddr = ddr or rtlsim.DdrModel()
        driver = rtlsim.rtlsim_backend(config, ddr, 24 * 3600.0, profile_guided=False, lib=lib).driver
    rtl = driver
    ref = EngineBackend.fsim(config).driver
    rng = np.random.default_rng(197)
    pes = config.array_rows * config.array_cols
    rows = []
    for tokens, keys, _ in stages:
        for fwd, bwd in (("attn_fwd", "attn_bwd"), ("mlp_fwd", "mlp_bwd")):
            given: dict[str, np.ndarray] = {}
            for kernel in (fwd, bwd):
                prog = lower.representative(kernel, vit, tokens, keys, batch, config)
                inputs = random_inputs(rng, prog, tokens, keys, given)
                want = ref.run(prog, inputs, seed=7)
                t0 = time.time()
                got = rtl.run(prog, inputs, seed=7)
                wall = time.time() - t0
                exact = (got.stats == want.stats and all(np.array_equal(got.outputs[k], want.outputs[k])
                                                         for k in want.outputs)
                         and all(got.counters[k] == want.counters[k] for k in EXACT_COUNTERS))
                c = got.counters
                shape = f"T={tokens} keys={keys or 'dense'}" + (f" batch={batch}" if batch > 1 else "")
                row = Row(kernel, shape, c["CYCLES"], c["GEMM_BUSY"], c["MACS"],
                          round(c["MACS"] / (pes * c["CYCLES"]), 4), round(c["DMA_STALL"] / c["CYCLES"], 4),
                          c["DDR_RD_BYTES"], c["DDR_WR_BYTES"], 0, 0, exact, round(wall, 2))
                d = dataclasses.asdict(row)
                units = ("LOAD_BUSY", "STORE_BUSY", "SOFTMAX_BUSY", "VEC_BUSY", "TOPK_BUSY")
                d.update(tokens=tokens, keys=keys, batch=batch, busy={k: c[k] for k in units})
                rows.append(d)
                if log:
                    log(f"{kernel:10s} {row.shape:18s} cycles {row.cycles:9d}  util {row.utilization:.3f}  "
                        f"dma-stall {row.dma_stall_share:.3f}  exact {exact}  ({wall:.1f} s)")
                given = {**want.outputs, **{k: v for k, v in inputs.items() if k == "conn"}}
    return rows


def projection(block_rows: list[dict[str, Any]], clock_mhz: float, images: int = 1_281_167) -> dict[str, Any]:
    """Training time per image and per ImageNet-1K epoch from the measured block cycles (the 12 blocks
    only; patch embedding, head, top-k and the optimizer are left out): dense = 12 blocks at 197 tokens;
    Tri-Level/0.7 = the stages of STAGES, at batch 1; with rows of MICRO_BATCH-image calls also dense at
    that micro-batch (cycles per image). A projection from measured kernels, not a measurement."""
    cyc = {(r["kernel"], r["tokens"], r.get("batch", 1)): r["cycles"] for r in block_rows}

    def per_block(tokens: int, batch: int = 1) -> int:
        return sum(cyc[(k, tokens, batch)] for k in ("attn_fwd", "attn_bwd", "mlp_fwd", "mlp_bwd")) // batch

    dense = 12 * per_block(197)
    tri = sum(blocks * per_block(tokens) for tokens, _, blocks in STAGES)
    runs = [("dense", dense), ("trilevel_0.7", tri)]
    if ("attn_fwd", 197, MICRO_BATCH) in cyc:
        runs.append((f"dense_micro_batch_{MICRO_BATCH}", 12 * per_block(197, MICRO_BATCH)))
    out = {}
    for name, cycles in runs:
        ms = cycles / (clock_mhz * 1e3)
        out[name] = {"cycles_per_image": cycles, "ms_per_image": round(ms, 3),
                     "h_per_epoch": round(ms * images / 3.6e6, 2)}
    out["note"] = ("12 transformer blocks fwd+bwd at batch 1 (dense_micro_batch_*: per image, in calls of "
                   "that many images) from the measured cycles; excludes patch "
                   "embedding, head, top-k, final LayerNorm and the optimizer; paper Table 2: 13.79 h dense, "
                   "8.91 h Tri-Level")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
