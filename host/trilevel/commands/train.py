"""`trilevel train`: Tri-Level E-ViT training on the PyTorch golden model or an accelerator backend."""

from __future__ import annotations

import argparse

from trilevel import userinput as ui
from trilevel.baselines import METHODS  # importing it registers the baselines' policies too
from trilevel.config import MODEL_NAMES, TIMM_CONFIGS
from trilevel.example_filter import EXAMPLE_POLICIES
from trilevel.selectors import ATTENTION_POLICIES, TOKEN_POLICIES

BACKENDS = ("torch", "reference", "csim", "rtlsim", "pynq")
# Options only the torch trainer implements (flag: namespace name); None/False when not given.
TORCH_RECIPE_OPTIONS = {
    "--augment": "augment",
    "--auto-augment": "auto_augment",
    "--reprob": "reprob",
    "--mixup": "mixup",
    "--cutmix": "cutmix",
    "--repeated-aug": "repeated_aug",
    "--ema-decay": "ema_decay",
    "--example-window": "example_window",
    "--example-variance": "example_variance",
    "--init": "init",
    "--compile": "compile",
    "--debug-checks": "debug_checks",
    "--method": "method",
}
# What the trainers raise for a config or data set they refuse (their own validation), as opposed to bugs.
TRAINER_INPUT_ERRORS = (ValueError, FileNotFoundError, FileExistsError)

# Options of trilevel.accel.trainer.AccelTrainConfig; left out of the namespace unless given.
ACCEL_OPTIONS: dict[str, dict] = {
    "--micro-batch": {"type": ui.POSITIVE_INT, "help": "images per kernel call (default: the whole batch)"},
    "--optimizer": {"choices": ("adamw", "sgdm"), "help": "default adamw"},
    "--momentum": {"type": ui.FRACTION, "help": "sgdm momentum (default 0.9)"},
    "--csim-lib": {
        "type": ui.shared_library,
        "help": "C-sim shared library (default build/csim/libtrilevel_csim.so)",
    },
    "--max-examples": {
        "type": ui.POSITIVE_INT,
        "help": "use only the first N examples of the training and of the test split (smoke runs)",
    },
    "--no-project-latency": {
        "dest": "project_latency",
        "action": "store_false",
        "help": "do not add the projected ZCU102 time to the metrics",
    },
}


def _run(args: argparse.Namespace) -> int:
    given = sorted(
        flag for flag, kw in ACCEL_OPTIONS.items() if kw.get("dest", flag[2:].replace("-", "_")) in args
    )
    chosen = {"--token-policy": args.token_policy, "--attn-policy": args.attn_policy}
    chosen.update({flag: getattr(args, dest) for flag, dest in TORCH_RECIPE_OPTIONS.items()})
    policies = [flag for flag, value in chosen.items() if value not in (None, False)]
    if args.backend != "torch" and args.model in TIMM_CONFIGS:
        raise ui.UserError(
            f"--model {args.model}: the accelerator backends run the plain ViT only; use --backend torch"
        )
    if args.backend != "torch" and policies:
        raise ui.UserError(f"{', '.join(policies)}: for --backend torch only")
    if args.backend == "torch" and given:
        raise ui.UserError(f"{', '.join(given)}: for the accelerator backends only")
    if args.token_policy and TOKEN_POLICIES[args.token_policy].merged_tokens and args.keep_attn < 1:
        raise ui.UserError(f"--token-policy {args.token_policy} merges tokens: it needs --keep-attn 1")
    try:
        if args.backend != "torch":
            from trilevel.accel.trainer import run  # written for the accelerator backends

            if args.attn_impl is None:  # the accelerator computes only the kept connections
                args.attn_impl = "gather"
            return int(run(args) or 0)
        from trilevel.train_torch import TORCH_ATTN_IMPL, TrainConfig, train

        if args.attn_impl is None:
            args.attn_impl = TORCH_ATTN_IMPL
        fields = set(TrainConfig.__dataclass_fields__)
        train(TrainConfig(**{key: value for key, value in vars(args).items() if key in fields}))
    except TRAINER_INPUT_ERRORS as err:
        raise ui.UserError(str(err)) from None
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a Tri-Level E-ViT (torch golden model or accelerator backend)",
        description="Train with example-, token- and attention-level sparsity. Writes DIR/metrics.jsonl "
        "(one JSON line per epoch) and DIR/checkpoint.pt (atomic, every epoch). Multi-GPU: "
        "torchrun --nproc_per_node=G -m trilevel.cli train ... (--batch-size is per GPU).",
    )
    p.add_argument("--backend", choices=BACKENDS, default="torch")
    p.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default="demo",
        help="golden ViTs (demo, deit_*, *_gap) or timm's Swin/PiT with the token level patched in "
        "(swin_tiny, pit_ti, pit_s; swin_demo, pit_demo for digits; torch backend; docs/baselines.md)",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="digits | synthetic | cifar10:PATH | imagefolder:PATH | a folder (detected)",
    )
    p.add_argument(
        "--epochs", type=ui.POSITIVE_INT, default=None, help="default: the recipe's (demo 16, DeiT 300)"
    )
    p.add_argument(
        "--batch-size", type=ui.POSITIVE_INT, default=None, help="per process; default: the recipe's (32/128)"
    )
    p.add_argument(
        "--keep-example", type=ui.KEEP_RATIO, default=1.0, help="r_e (1 disables the example level)"
    )
    p.add_argument("--keep-token", type=ui.KEEP_RATIO, default=1.0, help="target R_T")
    p.add_argument("--keep-attn", type=ui.KEEP_RATIO, default=1.0, help="target R_A")
    p.add_argument(
        "--lr",
        type=ui.POSITIVE,
        default=None,
        help="default: the recipe's, scaled by the global batch (demo 2e-3 per 32, DeiT 5e-4 per 512)",
    )
    p.add_argument("--min-lr", type=ui.NON_NEGATIVE, default=None, help="cosine floor, default lr / 50")
    p.add_argument(
        "--warmup-epochs", type=ui.NON_NEGATIVE, default=None, help="lr warm-up, default epochs / 60"
    )
    p.add_argument("--weight-decay", type=ui.NON_NEGATIVE, default=None, help="default 0.05")
    p.add_argument(
        "--keep-warmup-epochs", type=ui.NON_NEGATIVE, default=None, help="R_T/R_A stay 1; default epochs / 30"
    )
    p.add_argument(
        "--keep-decay-epochs",
        type=ui.NON_NEGATIVE,
        default=None,
        help="cosine decay to the targets; default epochs / 3",
    )
    p.add_argument(
        "--example-period",
        type=ui.POSITIVE_INT,
        default=None,
        help="remove-and-restore every P epochs; default epochs / 10 (paper 30 of 300)",
    )
    p.add_argument("--example-remove-frac", type=ui.FRACTION, default=0.05, help="n, fraction of the dataset")
    p.add_argument(
        "--example-policy",
        choices=sorted(EXAMPLE_POLICIES),
        default=None,
        help="which active examples a round removes (baselines; default forgetting, the paper's; "
        "all backends)",
    )
    p.add_argument(
        "--attn-impl",
        choices=("gather", "mask"),
        default=None,
        help="mask (default with --backend torch, fastest): dense masked attention, fused SDPA where "
        "no attention map is needed; gather: computes only the kept connections (MAC-faithful, as "
        "the accelerator). Same results; metrics report the gather MACs and the executed ones. "
        "Accelerator backends: gather only",
    )
    p.add_argument(
        "--token-policy",
        choices=sorted(TOKEN_POLICIES),
        default=None,
        help="TA-selector token rule (baselines; default cls_attention, the paper's)",
    )
    p.add_argument(
        "--attn-policy",
        choices=sorted(ATTENTION_POLICIES),
        default=None,
        help="TA-selector connection rule (baselines; default topk, the paper's)",
    )
    p.add_argument(
        "--method",
        default=None,
        metavar="NAME[:KEY=VALUE,...]",
        help=f"baseline trainer mode: {', '.join(sorted(METHODS))} (docs/baselines.md), e.g. "
        "s2vite:density=0.5",
    )
    p.add_argument(
        "--example-window",
        choices=("round", "run"),
        default=None,
        help="forgetting statistics per remove-and-restore round (default, the official code) or over "
        "the whole run",
    )
    p.add_argument(
        "--example-variance",
        choices=("mean", "last"),
        default=None,
        help="rank ties by the mean [CLS]-attention variance over the window (default, the official "
        "code) or the last presentation's",
    )
    recipe = p.add_argument_group(
        "recipe (default: the model's, trilevel.recipes: demo for the demo model, DeiT's for deit_*)"
    )
    recipe.add_argument("--drop-path", type=ui.FRACTION, default=None, help="stochastic depth (DeiT 0.1)")
    recipe.add_argument("--label-smoothing", type=ui.FRACTION, default=None, help="DeiT 0.1")
    p.add_argument(
        "--img-size",
        type=ui.POSITIVE_INT,
        default=None,
        help="resize data and size the model (default native)",
    )
    recipe.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="timm training transform: RandomResizedCrop (bicubic), flip, --auto-augment "
        "(CIFAR-10 / image folders; DeiT recipe: on)",
    )
    recipe.add_argument(
        "--auto-augment", default=None, help="timm policy (DeiT: rand-m9-mstd0.5-inc1); none: off"
    )
    recipe.add_argument("--reprob", type=ui.float_in(0, 1), default=None, help="random erasing (DeiT 0.25)")
    recipe.add_argument("--mixup", type=ui.NON_NEGATIVE, default=None, help="mixup alpha (DeiT 0.8; 0: off)")
    recipe.add_argument(
        "--cutmix", type=ui.NON_NEGATIVE, default=None, help="cutmix alpha (DeiT 1.0; 0: off)"
    )
    recipe.add_argument(
        "--repeated-aug",
        type=ui.POSITIVE_INT,
        default=None,
        help="presentations of each image per epoch under DDP (DeiT 3; 1: off)",
    )
    recipe.add_argument(
        "--ema-decay", type=ui.FRACTION, default=None, help="model EMA (DeiT 0.99996; 0: off)"
    )
    p.add_argument(
        "--init",
        type=ui.existing_file,
        default=None,
        help="start from a timm/DeiT checkpoint file (weights only; the TA-selectors act on top)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the blocks' attention and MLP (measured: docs/training.md)",
    )
    p.add_argument(
        "--debug-checks",
        action="store_true",
        help="check the selectors' indices on the host (a GPU sync per forward; default: device asserts)",
    )
    p.add_argument("--device", type=ui.device, default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=ui.SEED, default=0)
    p.add_argument(
        "--out", type=ui.output_dir, required=True, help="run folder (metrics.jsonl, checkpoint.pt, run.lock)"
    )
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument(
        "--stop-after", type=ui.POSITIVE_INT, default=None, help="leave after N epochs of this invocation"
    )
    p.add_argument(
        "--num-workers",
        type=ui.NON_NEGATIVE_INT,
        default=None,
        help="loader processes; default: the available cores per process for decoded or augmented "
        "images, 0 (the main process) for in-memory tensors",
    )
    p.add_argument(
        "--bad-images",
        choices=("error", "skip"),
        default="error",
        help="image folders are scanned before training: stop at undecodable files (error, default) "
        "or leave them out and report how many (skip)",
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bars (epoch lines stay)"
    )
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")
    accel = p.add_argument_group("accelerator backends (reference | csim | pynq) only")
    for flag, kwargs in ACCEL_OPTIONS.items():
        accel.add_argument(flag, default=argparse.SUPPRESS, **kwargs)
    p.set_defaults(func=_run)
