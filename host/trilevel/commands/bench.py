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


ENGINE_SECTION = "trilevel.accel.rtlsim_bench:bench_section"


def _bind_engine(args: argparse.Namespace) -> tuple[object, dict | None]:
    """The engine `--backend` names, bound before anything is written (bad input: UserError)."""
    if args.backend is None:
        for flag, value in (("--engine-config", args.engine_config), ("--rows", args.rows),
                            ("--bitfile", args.bitfile)):
            if value is not None:
                raise ui.UserError(f"{flag}: for --backend rtlsim|pynq only")
        return None, None
    if args.backend == "pynq" and args.engine_config is not None:
        raise ui.UserError("--engine-config: for --backend rtlsim only (the bitstream's manifest.json names "
                           "the board's engine build)")
    if args.backend == "rtlsim" and args.bitfile is not None:
        raise ui.UserError("--bitfile: for --backend pynq only")
    from trilevel.accel import BackendError, isa, rtlsim, rtlsim_bench

    config = isa.CONFIGS[args.engine_config] if args.engine_config else None
    try:
        return rtlsim_bench.bind(args.backend, config, args.bitfile)
    except (BackendError, ImportError, OSError, rtlsim.RtlSimError) as err:
        raise ui.UserError(f"--backend {args.backend}: {err}") from None


def _run(args: argparse.Namespace) -> int:
    from trilevel.bench import BenchOptions, run_bench

    _check_sections(args.sections or [])
    engine, where = _bind_engine(args)
    sections = args.sections or ([ENGINE_SECTION] if engine is not None else None)

    options = BenchOptions(
        out=Path(args.out),
        quick=args.quick,
        models=tuple(args.models),
        device=args.device,
        threads=args.threads,
        engine=engine,
        engine_where=where,
        engine_rows=args.rows,
    )
    result = run_bench(options, sections)
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
    engine = p.add_argument_group(
        "engine counters (trilevel.accel.rtlsim_bench): per-kernel cycles, MACs, utilization and DDR bytes "
        "read from the engine's hardware counters, each result checked against the reference backend; "
        "writes DIR/engine-counters.json and .md"
    )
    engine.add_argument(
        "--backend",
        choices=("rtlsim", "pynq"),
        default=None,
        help="measure on the RTL engine in Verilator (rtlsim) or the engine IP on the ZCU102 (pynq); "
        "runs only this section unless --sections is given",
    )
    engine.add_argument(
        "--engine-config",
        choices=("ci", "zcu102"),
        default=None,
        help="rtlsim build (default ci, 4x4 array; zcu102 = the 32x32 production engine, a 10-30 min "
        "Verilator build)",
    )
    engine.add_argument(
        "--rows",
        choices=("small", "deit", "all"),
        default=None,
        help="kernel rows: small (demo-size, one per kernel kind), deit (DeiT-T shapes), all (every pruned "
        "stage); default small on the ci build, deit on zcu102 (plus the DeiT-T block rows)",
    )
    engine.add_argument(
        "--bitfile",
        type=ui.existing_file,
        default=None,
        help="pynq: the bitstream (default $TRILEVEL_BITFILE or build/bitstream/trilevel.bit; its "
        "manifest.json labels the rows)",
    )
    p.set_defaults(func=_run)
