"""`trilevel bench`: dense vs Tri-Level training throughput (and other registered sections)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trilevel import userinput as ui
from trilevel.config import CONFIGS


def _check_sections(names: list[str]) -> None:
    """Each --sections name must be an importable ``module:function`` (before anything is written)."""
    import importlib

    for name in names:
        module, _, function = name.partition(":")
        try:
            found = callable(getattr(importlib.import_module(module), function, None)) if function else False
        except (ImportError, ValueError):  # ValueError: an empty module name
            found = False
        if not found:
            raise ui.UserError(f"--sections {name}: no such bench section (give module:function)")


def _run(args: argparse.Namespace) -> int:
    from trilevel.bench import BenchOptions, run_bench

    _check_sections(args.sections or [])

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
    p.add_argument("--out", type=ui.output_dir, required=True, help="output folder")
    p.add_argument("--quick", action="store_true", help="fewer, smaller steps (smoke test)")
    p.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=["demo", "deit_tiny"])
    p.add_argument("--sections", nargs="+", default=None, help="module:function names (default: all)")
    p.add_argument("--device", type=ui.device, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=ui.POSITIVE_INT, default=None, help="torch CPU threads")
    p.set_defaults(func=_run)
