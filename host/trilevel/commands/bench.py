"""`trilevel bench`: dense vs Tri-Level training throughput (and other registered sections)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trilevel.config import CONFIGS


def _run(args: argparse.Namespace) -> int:
    from trilevel.bench import BenchOptions, run_bench

    options = BenchOptions(
        out=Path(args.out),
        quick=args.quick,
        models=tuple(args.models),
        device=args.device,
        threads=args.threads,
    )
    result = run_bench(options, args.sections)
    print(f"wrote {Path(args.out) / 'bench.json'}")
    return 1 if any(section["error"] for section in result["sections"]) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from trilevel.bench import SECTIONS

    p = subparsers.add_parser(
        "bench",
        help="benchmark dense vs Tri-Level training; writes DIR/bench.json",
        description="Runs the benchmark sections (default: " + ", ".join(SECTIONS) + ") and writes "
        "DIR/bench.json plus a printed table per section. CPU runs use small batches and few steps.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help="fewer, smaller steps (smoke test)")
    p.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["demo", "deit_tiny"])
    p.add_argument("--sections", nargs="+", default=None, help="module:function names (default: all)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=_run)
