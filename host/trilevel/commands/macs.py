"""`trilevel macs`: counted dense vs sparse MACs per image and for a whole training run."""

from __future__ import annotations

import argparse
import json
import sys

from trilevel.config import CONFIGS


def _run(args: argparse.Namespace) -> int:
    import torch

    from trilevel.macs import IMAGENET_TRAIN_IMAGES, RunPlan, format_report, macs_report

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    try:
        run = None
        if args.epochs is not None or args.keep_example is not None:
            run = RunPlan(
                num_examples=args.num_examples or IMAGENET_TRAIN_IMAGES,
                epochs=args.epochs or 300,
                batch_size=args.batch_size,
                keep_example=1.0 if args.keep_example is None else args.keep_example,
                keep_token=args.keep_token,
                keep_attn=args.keep_attn,
                keep_warmup_epochs=args.keep_warmup_epochs,
                keep_decay_epochs=args.keep_decay_epochs,
            )
        report = macs_report(args.model, args.keep_token, args.keep_attn, run)
    except ValueError as err:
        print(f"trilevel macs: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "macs",
        help="counted MACs: dense vs Tri-Level, per image and per training run",
        description="MACs counted with torch.utils.flop_counter.FlopCounterMode (FLOPs / 2) on the golden "
        "model. The sparse figures are algorithmic: the gather implementation (and the accelerator) really "
        "skips pruned tokens and connections; --attn-impl mask (dense masked softmax, the torch trainer's "
        "faster default) does not, and its executed count is reported alongside. With --epochs or "
        "--keep-example, also the whole run's training MACs including the example level and the "
        "keep-ratio schedules (paper defaults: 300 epochs of ImageNet-1K, batch 512).",
    )
    p.add_argument("--model", choices=sorted(CONFIGS), default="deit_tiny")
    p.add_argument("--keep-token", type=float, default=0.7, help="R_T")
    p.add_argument("--keep-attn", type=float, default=1.0, help="R_A")
    p.add_argument("--keep-example", type=float, default=None, help="r_e (enables the whole-run count)")
    p.add_argument(
        "--epochs", type=int, default=None, help="whole-run epochs (default 300 with --keep-example)"
    )
    p.add_argument("--num-examples", type=int, default=None, help="training set size (default ImageNet-1K)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--keep-warmup-epochs", type=float, default=None, help="default epochs / 30")
    p.add_argument("--keep-decay-epochs", type=float, default=None, help="default epochs / 3")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run)
