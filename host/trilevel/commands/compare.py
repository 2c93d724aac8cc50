"""`trilevel compare`: the paper's comparison (Table 3) of Tri-Level against its baselines, runnable."""

from __future__ import annotations

import argparse

from trilevel import userinput as ui


def _run(args: argparse.Namespace) -> int:
    from trilevel.baselines.compare import parse_methods, run_comparison
    from trilevel.train_torch import TrainConfig

    try:
        methods = parse_methods(args.methods, args.model)
        base = TrainConfig(
            out=args.out,
            model=args.model,
            data=args.data,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            keep_warmup_epochs=args.keep_warmup_epochs,
            keep_decay_epochs=args.keep_decay_epochs,
            example_period=args.example_period,
            device=args.device,
            seed=args.seed,
            num_workers=args.num_workers,
            progress=args.progress,
        )
        base.resolved()  # refuse a bad recipe before anything runs
        run_comparison(base, methods, args.out, progress=True)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise ui.UserError(str(err)) from None
    print(f"wrote {args.out / 'compare.md'}, compare.json, accuracy_vs_time.png")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from trilevel.baselines.compare import DEFAULT_METHODS, PRESETS
    from trilevel.config import MODEL_NAMES

    p = subparsers.add_parser(
        "compare",
        help="train Tri-Level and the paper's baselines with one recipe; Table-3-like report",
        description="Train each method with the same recipe and seed into OUT/<method>/ (torch backend), "
        "then write OUT/compare.md and OUT/compare.json (method, keep ratio, training-time reduction and "
        "MACs saving relative to dense, top-1) and OUT/accuracy_vs_time.png. Finished methods are "
        "skipped and an interrupted one resumes, so rerunning the same command continues the comparison.",
    )
    p.add_argument("--data", default="digits", help="as trilevel train --data")
    p.add_argument(
        "--model", choices=MODEL_NAMES, default="demo", help="as trilevel train --model (Swin/PiT: token "
        "and example presets only)"
    )
    p.add_argument("--epochs", type=ui.POSITIVE_INT, default=None, help="default: the model's recipe")
    p.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated, or all (dense is always run): {', '.join(PRESETS)}; default "
        f"{','.join(DEFAULT_METHODS)} (for Swin/PiT those of them without the attention level)",
    )
    p.add_argument("--out", type=ui.output_dir, required=True, help="comparison folder")
    p.add_argument("--batch-size", type=ui.POSITIVE_INT, default=None, help="default: the recipe's")
    p.add_argument("--lr", type=ui.POSITIVE, default=None, help="default: the recipe's, scaled by batch")
    p.add_argument("--keep-warmup-epochs", type=ui.NON_NEGATIVE, default=None, help="default epochs / 30")
    p.add_argument("--keep-decay-epochs", type=ui.NON_NEGATIVE, default=None, help="default epochs / 3")
    p.add_argument("--example-period", type=ui.POSITIVE_INT, default=None, help="default epochs / 10")
    p.add_argument("--device", type=ui.device, default="auto")
    p.add_argument("--seed", type=ui.SEED, default=0)
    p.add_argument("--num-workers", type=ui.NON_NEGATIVE_INT, default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=_run)
