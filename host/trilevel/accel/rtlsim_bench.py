"""Per-kernel cycles measured on the RTL engine (Verilator) through the board driver, read from the
engine's hardware counters: the rtlsim section of the benchmarks.

    python -m trilevel.accel.rtlsim_bench --out docs/engine-rtl-cycles.json   # production + CI tables
    python -m trilevel.accel.rtlsim_bench --config ci --rows small            # a quick run, printed

Every row runs the lowered program (trilevel.accel.lower) of one kernel call on the RTL through
`rtlsim.rtlsim_backend` (EngineDriver over the pynq device backed by the harness), checks the result
bit for bit against the reference backend, and reports the counters: total cycles, cycles the array
was fed (GEMM_BUSY), MACs, array utilization MACS / (rows * cols * CYCLES), the DMA-stall share
(DMA_STALL / CYCLES: COMPUTE waiting for a LOAD token), DDR bytes (engine counters: command bytes +
payloads) and the AXI bus bytes of the harness. With the production configuration it also runs the
DeiT-T attention and MLP blocks forward and backward at every stage shape (measure_blocks: RTL vs fsim)
and projects training time per image and per epoch from those cycles (projection).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trilevel.accel import isa, rtlsim
from trilevel.intref.fixed import QTensor

DEIT_T = {"dim": 192, "hidden": 768, "heads": 3}
TOKENS = (197, 139, 98, 69)      # dense and the three pruned stages at R_T = 0.7


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
    bus_rd_bytes: int
    bus_wr_bytes: int
    exact: bool
    wall_s: float


def _linear_case(rng: np.random.Generator, t: int, din: int, dout: int) -> tuple[Callable, Callable, str]:
    x = QTensor(rng.integers(-3000, 3000, (1, t, din), dtype=np.int16), 12)
    w = QTensor(rng.integers(-3000, 3000, (dout, din), dtype=np.int16), 14)
    b = QTensor(rng.integers(-3000, 3000, (dout,), dtype=np.int16), 13)

    def call(be: Any) -> Any:
        y, stats, _ = be.linear_fwd(x, {"weight": w, "bias": b}, {"y": 10})
        return y.data, stats

    return call, "linear_fwd", f"{t}x{din}->{dout}"


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
    """(kind, args) of the measured kernels. `small`: one row per kernel kind (quick)."""
    d, h = DEIT_T["dim"], DEIT_T["hidden"]
    out: list[tuple] = []
    tokens = (197, 69) if rows == "deit" else (17,) if rows == "small" else TOKENS
    for t in tokens:
        dims = ((d, 3 * d), (d, d), (d, h), (h, d)) if rows != "small" else ((64, 192),)
        for din, dout in dims:
            out.append(("linear", t, din, dout))
    if rows == "small":
        out += [("topk", "tokens", 17, 12), ("topk", "connections", 13, 6)]
    else:
        out += [("topk", "tokens", 197, 138), ("topk", "connections", 139, 43),
                ("topk", "connections", 69, 22)]
    return out


def measure(config: isa.EngineConfig, rows: str = "deit", ddr: rtlsim.DdrModel | None = None,
            lib: Path | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    from trilevel.accel.engine import EngineBackend, pynq_driver
    from trilevel.accel.reference_backend import ReferenceBackend

    ddr = ddr or rtlsim.DdrModel()
    harness = rtlsim.Harness(config, ddr, lib=lib)
    device = rtlsim.rtlsim_zynq(harness)
    backend = EngineBackend(pynq_driver(device, config, rtlsim.ENGINE_BASE, 24 * 3600.0), "rtlsim")
    reference = ReferenceBackend()
    rng = np.random.default_rng(2026)
    pes = config.array_rows * config.array_cols
    out_rows = []
    for case in cases(rows):
        make = _linear_case if case[0] == "linear" else _topk_case
        call, kernel, shape = make(rng, *case[1:])
        backend.counters.clear()
        s0 = harness.stats()
        t0 = time.time()
        got = call(backend)
        wall = time.time() - t0
        s1 = harness.stats()
        want = call(reference)
        exact = _equal(got, want)
        c = {key: sum(k[key] for k in backend.counters.values()) for key in isa.COUNTERS}
        row = Row(kernel, shape, c["CYCLES"], c["GEMM_BUSY"], c["MACS"],
                  round(c["MACS"] / (pes * c["CYCLES"]), 4),
                  round(c["DMA_STALL"] / c["CYCLES"], 4), c["DDR_RD_BYTES"], c["DDR_WR_BYTES"],
                  s1["rd_bytes"] - s0["rd_bytes"], s1["wr_bytes"] - s0["wr_bytes"], exact, round(wall, 2))
        out_rows.append(dataclasses.asdict(row))
        if log:
            log(f"{kernel:18s} {shape:16s} cycles {row.cycles:8d}  util {row.utilization:.3f}  "
                f"dma-stall {row.dma_stall_share:.3f}  exact {exact}  ({wall:.1f} s)")
    return {
        "measured_on": "RTL engine (hls/rtl/engine) in Verilator through the board driver; hardware counters",
        "date": _dt.date.today().isoformat(),
        "config": dataclasses.asdict(config),
        "ddr_model": dataclasses.asdict(ddr),
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
        table = measure(config, rows, log=lambda s: print(s, flush=True))
        if config is isa.PRODUCTION:
            table["block_rows"] = measure_blocks(config, log=lambda s: print(s, flush=True))
            table["projection"] = projection(table["block_rows"], config.clock_mhz)
            print(json.dumps(table["projection"], indent=1), flush=True)
        tables.append(table)
    if args.out:
        args.out.write_text(json.dumps({"tables": tables}, indent=1) + "\n")
    bad = [r for t in tables for r in t["rows"] + t.get("block_rows", []) if not r["exact"]]
    if bad:
        print(f"{len(bad)} rows differ from the reference", file=sys.stderr)
        return 1
    return 0



# ----------------------------------------------------------------------------------- DeiT-T blocks
STAGES = ((197, None, 4), (139, 43, 3), (98, 31, 3), (69, 22, 2))   # tokens, keys, blocks (Tri-Level/0.7)
EXACT_COUNTERS = ("DDR_RD_BYTES", "DDR_WR_BYTES", "MACS", "RETIRED")


def _random_inputs(rng: np.random.Generator, program: Any, tokens: int, keys: int | None,
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
                   stages: tuple = STAGES, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """attn/mlp fwd + bwd of one DeiT-T block (batch 1) at every stage's shape, on the RTL and on fsim:
    outputs, statistics and the exact counters must agree; the rows carry the RTL's counters."""
    from trilevel import config as model_configs
    from trilevel.accel import lower
    from trilevel.accel.engine import EngineBackend, pynq_driver

    vit = model_configs.CONFIGS["deit_tiny"]
    ddr = ddr or rtlsim.DdrModel()
    rtl = pynq_driver(rtlsim.rtlsim_zynq(rtlsim.Harness(config, ddr, lib=lib)), config, rtlsim.ENGINE_BASE,
                      24 * 3600.0)
    ref = EngineBackend.fsim(config).driver
    rng = np.random.default_rng(197)
    pes = config.array_rows * config.array_cols
    rows = []
    for tokens, keys, _ in stages:
        for fwd, bwd in (("attn_fwd", "attn_bwd"), ("mlp_fwd", "mlp_bwd")):
            given: dict[str, np.ndarray] = {}
            for kernel in (fwd, bwd):
                prog = lower.representative(kernel, vit, tokens, keys, 1, config)
                inputs = _random_inputs(rng, prog, tokens, keys, given)
                want = ref.run(prog, inputs, seed=7)
                t0 = time.time()
                got = rtl.run(prog, inputs, seed=7)
                wall = time.time() - t0
                exact = (got.stats == want.stats and all(np.array_equal(got.outputs[k], want.outputs[k])
                                                         for k in want.outputs)
                         and all(got.counters[k] == want.counters[k] for k in EXACT_COUNTERS))
                c = got.counters
                shape = f"T={tokens} keys={keys or 'dense'}"
                row = Row(kernel, shape, c["CYCLES"], c["GEMM_BUSY"], c["MACS"],
                          round(c["MACS"] / (pes * c["CYCLES"]), 4), round(c["DMA_STALL"] / c["CYCLES"], 4),
                          c["DDR_RD_BYTES"], c["DDR_WR_BYTES"], 0, 0, exact, round(wall, 2))
                d = dataclasses.asdict(row)
                units = ("LOAD_BUSY", "STORE_BUSY", "SOFTMAX_BUSY", "VEC_BUSY", "TOPK_BUSY")
                d.update(tokens=tokens, keys=keys, busy={k: c[k] for k in units})
                rows.append(d)
                if log:
                    log(f"{kernel:10s} {row.shape:18s} cycles {row.cycles:9d}  util {row.utilization:.3f}  "
                        f"dma-stall {row.dma_stall_share:.3f}  exact {exact}  ({wall:.1f} s)")
                given = {**want.outputs, **{k: v for k, v in inputs.items() if k == "conn"}}
    return rows


def projection(block_rows: list[dict[str, Any]], clock_mhz: float, images: int = 1_281_167) -> dict[str, Any]:
    """Training time per image and per ImageNet-1K epoch from the measured block cycles (batch 1, the 12
    blocks only; patch embedding, head, top-k and the optimizer are left out): dense = 12 blocks at 197
    tokens; Tri-Level/0.7 = the stages of STAGES. A projection from measured kernels, not a measurement."""
    cyc = {(r["kernel"], r["tokens"]): r["cycles"] for r in block_rows}

    def per_block(tokens: int) -> int:
        return sum(cyc[(k, tokens)] for k in ("attn_fwd", "attn_bwd", "mlp_fwd", "mlp_bwd"))

    dense = 12 * per_block(197)
    tri = sum(blocks * per_block(tokens) for tokens, _, blocks in STAGES)
    out = {}
    for name, cycles in (("dense", dense), ("trilevel_0.7", tri)):
        ms = cycles / (clock_mhz * 1e3)
        out[name] = {"cycles_per_image": cycles, "ms_per_image": round(ms, 3),
                     "h_per_epoch": round(ms * images / 3.6e6, 2)}
    out["note"] = ("12 transformer blocks fwd+bwd at batch 1 from the measured cycles; excludes patch "
                   "embedding, head, top-k, final LayerNorm and the optimizer; paper Table 2: 13.79 h dense, "
                   "8.91 h Tri-Level")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
