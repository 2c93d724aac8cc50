"""`trilevel latency`: projected ZCU102 inference/training latency from the accelerator cycle model."""

from __future__ import annotations

import argparse
import json
import sys

from trilevel.config import CONFIGS

# Platform fields settable from the command line; defaults live in trilevel.latency.Platform.
PLATFORM_OPTIONS: dict[str, tuple[type, str]] = {
    "pe_rows": (int, "MAC array rows (DSP48E2 = rows x cols)"),
    "pe_cols": (int, "MAC array columns"),
    "softmax_units": (int, "parallel softmax units"),
    "topk_units": (int, "parallel top-k units"),
    "vector_lanes": (int, "element-wise lanes"),
    "ddr_gbps": (float, "effective PL<->DDR bandwidth in GB/s"),
    "launch_cycles": (int, "fixed cycles per kernel call"),
}


def _run(args: argparse.Namespace) -> int:
    try:
        return _project(args)
    except ValueError as err:
        print(f"trilevel latency: error: {err}", file=sys.stderr)
        return 2


def _project(args: argparse.Namespace) -> int:
    from trilevel.latency import IMAGENET_TRAIN_IMAGES, Platform, format_projection, project

    overrides = {name: getattr(args, name) for name in PLATFORM_OPTIONS if getattr(args, name) is not None}
    platform = Platform(clock_mhz=args.clock_mhz, **overrides)
    dense = project(args.model, platform=platform, micro_batch=args.micro_batch, batch_size=args.batch_size,
                    dataset_size=args.dataset_size or IMAGENET_TRAIN_IMAGES)
    sparse = project(args.model, args.keep_token, args.keep_attn, args.keep_example, platform=platform,
                     micro_batch=args.micro_batch, batch_size=args.batch_size,
                     dataset_size=args.dataset_size or IMAGENET_TRAIN_IMAGES)
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
    p.add_argument("--keep-token", type=float, default=0.7)
    p.add_argument("--keep-attn", type=float, default=0.3)
    p.add_argument("--keep-example", type=float, default=0.7)
    p.add_argument("--clock-mhz", type=float, default=150.0)
    p.add_argument("--dataset-size", type=int, default=None, help="images per full epoch (ImageNet-1K)")
    for name, (kind, text) in PLATFORM_OPTIONS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                       help=f"{text} (default: trilevel.latency.Platform)")
    p.add_argument("--micro-batch", type=int, default=1, help="images per kernel call in training")
    p.add_argument("--batch-size", type=int, default=64, help="images per optimizer step")
    p.add_argument("--json", action="store_true", help="print JSON (dense and sparse projections)")
    p.add_argument("--per-call", action="store_true", help="include every kernel call in the JSON")
    p.set_defaults(func=_run)
