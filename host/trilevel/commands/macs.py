"""`trilevel macs`: counted dense vs sparse MACs per image and for a whole training run."""

from __future__ import annotations

import argparse
import json

from trilevel import userinput as ui
from trilevel.config import MODEL_NAMES

# Options of the whole-run count only (it runs with --epochs or --keep-example); default None.
RUN_OPTIONS = ("num_examples", "batch_size", "keep_warmup_epochs", "keep_decay_epochs")


def _run(args: argparse.Namespace) -> int:
    import torch

    from trilevel.macs import IMAGENET_TRAIN_IMAGES, RunPlan, format_report, macs_report

    whole_run = args.epochs is not None or args.keep_example is not None
    stray = [f"--{name.replace('_', '-')}" for name in RUN_OPTIONS if getattr(args, name) is not None]
    if stray and not whole_run:
        raise ui.UserError(f"{', '.join(stray)} set the whole-run count: give --epochs or --keep-example too")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    try:
        run = None
        if whole_run:
            run = RunPlan(
                num_examples=IMAGENET_TRAIN_IMAGES if args.num_examples is None else args.num_examples,
                epochs=300 if args.epochs is None else args.epochs,
                batch_size=512 if args.batch_size is None else args.batch_size,
                keep_example=1.0 if args.keep_example is None else args.keep_example,
                keep_token=args.keep_token,
                keep_attn=args.keep_attn,
                keep_warmup_epochs=args.keep_warmup_epochs,
                keep_decay_epochs=args.keep_decay_epochs,
            )
        report = macs_report(args.model, args.keep_token, args.keep_attn, run)
    except ValueError as err:
        raise ui.UserError(str(err)) from None
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
    p.add_argument(
        "--model", choices=MODEL_NAMES, default="deit_tiny", help="Swin/PiT: algorithmic vs executed MACs"
    )
    p.add_argument("--keep-token", type=ui.KEEP_RATIO, default=0.7, help="R_T")
    p.add_argument("--keep-attn", type=ui.KEEP_RATIO, default=1.0, help="R_A")
    p.add_argument(
        "--keep-example", type=ui.KEEP_RATIO, default=None, help="r_e (enables the whole-run count)"
    )
    p.add_argument(
        "--epochs",
        type=ui.POSITIVE_INT,
        default=None,
        help="whole-run epochs (default 300 with --keep-example)",
    )
    p.add_argument(
        "--num-examples", type=ui.POSITIVE_INT, default=None, help="training set size (default ImageNet-1K)"
    )
    p.add_argument("--batch-size", type=ui.POSITIVE_INT, default=None, help="whole run (default 512)")
    p.add_argument("--keep-warmup-epochs", type=ui.NON_NEGATIVE, default=None, help="default epochs / 30")
    p.add_argument("--keep-decay-epochs", type=ui.NON_NEGATIVE, default=None, help="default epochs / 3")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run)
