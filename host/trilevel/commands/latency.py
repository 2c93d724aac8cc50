"""`trilevel latency`: projected ZCU102 inference/training latency from the accelerator cycle model."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from trilevel import userinput as ui
from trilevel.config import CONFIGS

# Platform fields settable from the command line; defaults live in trilevel.latency.Platform.
PLATFORM_OPTIONS: dict[str, tuple[Callable[[str], float], str]] = {
    "pe_rows": (ui.POSITIVE_INT, "MAC array rows (DSP48E2 = rows x cols)"),
    "pe_cols": (ui.POSITIVE_INT, "MAC array columns"),
    "softmax_units": (ui.POSITIVE_INT, "parallel softmax units"),
    "topk_units": (ui.POSITIVE_INT, "parallel top-k units"),
    "vector_lanes": (ui.POSITIVE_INT, "element-wise lanes"),
    "ddr_gbps": (ui.POSITIVE, "effective PL<->DDR bandwidth in GB/s"),
    "launch_cycles": (ui.NON_NEGATIVE_INT, "fixed cycles per kernel call (0: none)"),
}


def _run(args: argparse.Namespace) -> int:
    try:
        return _project(args)
    except ValueError as err:
        raise ui.UserError(str(err)) from None


def _engine(args: argparse.Namespace) -> int:
    from trilevel.accel.engine import CSimError
    from trilevel.latency import engine_projection, format_engine_projection

    try:
        dense = engine_projection(args.model, micro_batch=args.micro_batch, engine=args.engine)
        sparse = engine_projection(args.model, args.keep_token, args.keep_attn, args.micro_batch, args.engine)
    except CSimError as err:
        raise ui.UserError(str(err)) from None
    if args.json:
        out = {"dense": dense, "sparse": sparse}
        if not args.per_call:
            for proj in out.values():
                proj.pop("per_call")
        print(json.dumps(out, indent=2))
        return 0
    print(format_engine_projection(dense))
    print(format_engine_projection(sparse))
    print(f"speed-up vs dense: inference {dense['inference_ms'] / sparse['inference_ms']:.2f}x, "
          f"training {dense['training_ms_per_image'] / sparse['training_ms_per_image']:.2f}x")
    return 0


def _measured_on_rtl(args: argparse.Namespace) -> int:
    """The committed table of block cycles measured on the RTL engine (make bench-rtl), projected to an
    epoch: only the shapes it holds (DeiT-T dense and R_T 0.7 / R_A 0.3, batch 1)."""
    from trilevel.accel.rtlsim_bench import DEFAULT_TABLE, STAGES, projection
    from trilevel.latency import IMAGENET_TRAIN_IMAGES

    if (args.model, args.keep_token, args.keep_attn, args.micro_batch) != ("deit_tiny", 0.7, 0.3, 1):
        raise ui.UserError("--engine rtl: the measured table holds deit_tiny dense and --keep-token 0.7 "
                           "--keep-attn 0.3 at micro-batch 1 only (regenerate it for others: make bench-rtl)")
    try:
        table = json.loads(DEFAULT_TABLE.read_text())["tables"][0]
        proj = projection(table["block_rows"], table["clock_mhz"], args.dataset_size or IMAGENET_TRAIN_IMAGES)
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise ui.UserError(f"--engine rtl: cannot read {DEFAULT_TABLE} ({err}); run make bench-rtl") from None
    cfg = table["config"]
    stages = ", ".join(f"{blocks} blocks at {tokens} tokens" for tokens, _, blocks in STAGES)
    array = f"{cfg['array_rows']}x{cfg['array_cols']} array"
    print(f"deit_tiny training on the RTL engine: block cycles measured {table['date']} in Verilator "
          f"({array}, {table['clock_mhz']:g} MHz, one 128-bit HP port); "
          f"per-epoch figures are projections from them ({proj['note']})")
    for name, label, examples in (("dense", "dense", 1.0),
                                  ("trilevel_0.7", f"Tri-Level ({stages})", args.keep_example)):
        p = proj[name]
        print(f"  {label}: {p['ms_per_image']:.1f} ms/image, {p['h_per_epoch'] * examples:.2f} h/epoch"
              + (f" (r_e {examples:g} of the images)" if examples != 1.0 else ""))
    for name, p in proj.items():
        if name.startswith("dense_micro_batch_"):
            images = name.rsplit("_", 1)[1]
            print(f"  dense, {images} images per kernel call: {p['ms_per_image']:.1f} ms/image, "
                  f"{p['h_per_epoch']:.2f} h/epoch")
    return 0


def _project(args: argparse.Namespace) -> int:
    from trilevel.latency import IMAGENET_TRAIN_IMAGES, Platform, format_projection, project

    if args.engine == "rtl":
        given = [f"--{n.replace('_', '-')}" for n in PLATFORM_OPTIONS if getattr(args, n) is not None]
        if given or args.clock_mhz != 150.0 or args.json or args.per_call:
            what = ", ".join(given) or "--clock-mhz/--json/--per-call"
            raise ui.UserError(f"{what}: not with --engine rtl")
        return _measured_on_rtl(args)
    if args.engine != "model":
        given = [f"--{n.replace('_', '-')}" for n in PLATFORM_OPTIONS if getattr(args, n) is not None]
        if given or args.clock_mhz != 150.0 or args.dataset_size is not None:
            what = ", ".join(given) or "--clock-mhz/--dataset-size"
            raise ui.UserError(f"{what}: for the analytical model only (--engine prices engine programs)")
        return _engine(args)

    overrides = {name: getattr(args, name) for name in PLATFORM_OPTIONS if getattr(args, name) is not None}
    platform = Platform(clock_mhz=args.clock_mhz, **overrides)
    dataset_size = IMAGENET_TRAIN_IMAGES if args.dataset_size is None else args.dataset_size
    dense = project(args.model, platform=platform, micro_batch=args.micro_batch, batch_size=args.batch_size,
                    dataset_size=dataset_size)
    sparse = project(args.model, args.keep_token, args.keep_attn, args.keep_example, platform=platform,
                     micro_batch=args.micro_batch, batch_size=args.batch_size, dataset_size=dataset_size)
    if args.json:
        out = {"dense": dense.to_dict(), "sparse": sparse.to_dict()}
        if not args.per_call:
            for proj in out.values():
                proj.pop("per_call")
        print(json.dumps(out, indent=2))
        return 0
    print(format_projection(dense))
    print()
    print(format_projection(sparse))
    print(f"\nspeed-up vs dense: inference {dense.inference_ms / sparse.inference_ms:.2f}x, "
          f"training epoch {dense.epoch_hours / sparse.epoch_hours:.2f}x")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("latency", help="project ZCU102 inference/training latency (cycle model)",
                              description=__doc__)
    p.add_argument("--model", choices=sorted(CONFIGS), default="deit_tiny")
    p.add_argument("--keep-token", type=ui.KEEP_RATIO, default=0.7)
    p.add_argument("--keep-attn", type=ui.KEEP_RATIO, default=0.3)
    p.add_argument("--keep-example", type=ui.KEEP_RATIO, default=0.7)
    p.add_argument("--clock-mhz", type=ui.POSITIVE, default=150.0)
    p.add_argument("--dataset-size", type=ui.POSITIVE_INT, default=None,
                   help="images per full epoch (default ImageNet-1K)")
    for name, (kind, text) in PLATFORM_OPTIONS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"{text} (default: trilevel.latency.Platform)")
    p.add_argument("--micro-batch", type=ui.POSITIVE_INT, default=1,
                   help="images per kernel call in training")
    p.add_argument("--batch-size", type=ui.POSITIVE_INT, default=64, help="images per optimizer step")
    p.add_argument("--engine", choices=("model", "csim", "fsim", "auto", "rtl"), default="model",
                   help="model: the analytical cycle model (default); csim / fsim / auto: price the lowered "
                   "engine programs with the C-sim's modelled cycle counters (fsim: its estimate); rtl: the "
                   "block cycles measured on the RTL engine (docs/engine-rtl-cycles.json, make bench-rtl)")
    p.add_argument("--json", action="store_true", help="print JSON (dense and sparse projections)")
    p.add_argument("--per-call", action="store_true", help="include every kernel call in the JSON")
    p.set_defaults(func=_run)
