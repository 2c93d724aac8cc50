"""`trilevel program`: the engine command program of one kernel call, disassembled, with a summary."""

from __future__ import annotations

import argparse
import json

from trilevel import userinput as ui
from trilevel.config import CONFIGS

KERNELS = (  # trilevel.accel.lower.REPRESENTATIVE_KERNELS (kept here: the CLI imports lazily)
    "attn_fwd",
    "attn_bwd",
    "mlp_fwd",
    "mlp_bwd",
    "linear_fwd",
    "linear_bwd",
    "layernorm_fwd",
    "layernorm_bwd",
    "topk_tokens",
    "topk_connections",
)


def _run(args: argparse.Namespace) -> int:
    from trilevel.accel import isa, lower
    from trilevel.accel.engine import CSimError, measure_program

    cfg = CONFIGS[args.model]
    tokens = cfg.num_tokens if args.tokens is None else args.tokens
    if tokens < 2:
        raise ui.UserError(f"--tokens {tokens}: need [CLS] and at least one patch token")
    if args.keys is not None and not 2 <= args.keys <= tokens:
        raise ui.UserError(
            f"--keys {args.keys}: connections per query must be in 2..{tokens} ([CLS] included)"
        )
    if args.keys is not None and args.kernel not in (
        "attn_fwd",
        "attn_bwd",
        "topk_tokens",
        "topk_connections",
    ):
        raise ui.UserError(f"--keys applies to the attention and top-k kernels, not {args.kernel}")
    engine_config = isa.CONFIGS[args.config]
    try:
        program = lower.representative(
            args.kernel, cfg, tokens, args.keys, args.batch, engine_config, args.linear
        )
    except lower.LoweringError as err:
        raise ui.UserError(f"{args.kernel} at {tokens} tokens on the {args.config} engine: {err}") from None
    summary = program.summary()
    try:
        source, counters = measure_program(program, args.engine)
    except CSimError as err:
        raise ui.UserError(str(err)) from None
    summary["counters"] = counters
    summary["counted_by"] = source
    cycles = counters["CYCLES"]
    summary["modelled_ms"] = cycles / (engine_config.clock_mhz * 1e3)
    if args.json:
        print(
            json.dumps(
                {
                    "kernel": args.kernel,
                    "model": args.model,
                    "tokens": tokens,
                    "keys": args.keys,
                    "batch": args.batch,
                    "config": args.config,
                    **summary,
                },
                indent=2,
            )
        )
        return 0
    lines = isa.disassemble(program.bind(0))
    shown = lines if args.limit is None else lines[: args.limit]
    print("\n".join(shown))
    if len(shown) < len(lines):
        print(f"  ... {len(lines) - len(shown)} more commands (--limit)")
    keys = "dense" if args.keys is None else f"{args.keys} keys per query"
    print(
        f"\n{args.kernel}: {args.model}, {tokens} tokens, {keys}, batch {args.batch}, "
        f"{args.config} engine ({engine_config.array_rows}x{engine_config.array_cols} array, "
        f"{engine_config.clock_mhz:g} MHz)"
    )
    per_op = ", ".join(f"{name} {count}" for name, count in sorted(summary["per_op"].items()))
    print(f"  commands   {summary['commands']}: {per_op} ({summary['relays']} relay GEMMs)")
    print(
        f"  DDR        read {summary['ddr_read_bytes']:,} B (commands included), "
        f"written {summary['ddr_write_bytes']:,} B, buffers {summary['ddr_footprint_bytes']:,} B"
    )
    print(f"  MACs       {summary['macs']:,}")
    busy = ", ".join(f"{name.lower()} {counters[name]:,}" for name in isa.COUNTERS[1:8])
    print(f"  cycles     {cycles:,} = {summary['modelled_ms']:.3f} ms ({source}); busy: {busy}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "program",
        help="disassemble the engine program of one kernel call, with commands, DDR bytes, MACs, cycles",
        description="Lowers one kernel call (trilevel.accel.lower) for the given shapes and prints its "
        "engine commands (trilevel.accel.isa.disassemble) and a summary: commands per unit, DDR bytes, "
        "MACs and the modelled cycles of one run (on the C-sim engine when `make csim` built it, else "
        "the functional simulator's estimate). Fracs are representative; they change only shift fields.",
    )
    p.add_argument("--model", choices=sorted(CONFIGS), default="deit_tiny")
    p.add_argument("--kernel", choices=KERNELS, default="attn_fwd")
    p.add_argument("--tokens", type=ui.POSITIVE_INT, default=None, help="tokens incl. [CLS] (default: all)")
    p.add_argument(
        "--keys",
        type=ui.POSITIVE_INT,
        default=None,
        help="connections per query incl. [CLS] (attention: connection lists; default dense)",
    )
    p.add_argument("--batch", type=ui.POSITIVE_INT, default=1, help="images per call")
    p.add_argument(
        "--linear",
        choices=("patch_embed", "head"),
        default="patch_embed",
        help="which trainer linear for linear_fwd/linear_bwd",
    )
    p.add_argument(
        "--config",
        choices=sorted(["zcu102", "ci"]),
        default="zcu102",
        help="engine build: zcu102 (production) or ci (the small RTL configuration)",
    )
    p.add_argument(
        "--engine",
        choices=("auto", "csim", "fsim"),
        default="auto",
        help="where to count cycles (auto: the C-sim engine when built for this config)",
    )
    p.add_argument("--limit", type=ui.NON_NEGATIVE_INT, default=None, help="print at most N commands")
    p.add_argument("--json", action="store_true", help="print only the summary, as JSON")
    p.set_defaults(func=_run)
