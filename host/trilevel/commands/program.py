"""`trilevel program`: the engine command program of one kernel call, disassembled, with a summary."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import numpy as np

from trilevel import userinput as ui
from trilevel.config import CONFIGS, ViTConfig

KERNELS = (
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
# Representative fracs (they change only the shift fields of the commands, not the program's structure).
ATTN_FWD = {"ln": 12, "qkv": 11, "s": 9, "ctx": 12, "out": 11}
ATTN_BWD = {"dctx": 12, "dp": 12, "ds": 14, "dqkv": 12, "dln": 12, "ln_g": 12, "ln_t": 10, "dx": 12}
MLP_FWD = {"ln": 12, "h": 11, "a": 11, "out": 11}
MLP_BWD = {"da": 12, "dh": 12, "dln": 12, "ln_g": 12, "ln_t": 10, "dx": 12}
LN_BWD = {"g": 12, "t": 10, "dx": 13}
WEIGHT_FRAC, BIAS_FRAC, ACT_FRAC, GRAD_FRAC = 14, 13, 12, 13


def lower_kernel(
    kernel: str, cfg: ViTConfig, tokens: int, keys: int | None, batch: int, engine_config, linear: str
):
    """The lowered program of `kernel` for one call at these shapes (trilevel.accel.lower)."""
    from trilevel.accel import lower
    from trilevel.intref import blocks, layers

    dim, hidden, heads = cfg.embed_dim, cfg.mlp_hidden, cfg.num_heads
    rows = batch * tokens
    key = lower.fracs_key
    attn_p = tuple(
        (n, WEIGHT_FRAC if n.endswith("weight") else BIAS_FRAC)
        for n in (
            "norm1.weight",
            "norm1.bias",
            "attn.qkv.weight",
            "attn.qkv.bias",
            "attn.proj.weight",
            "attn.proj.bias",
        )
    )
    mlp_p = tuple(
        (n, WEIGHT_FRAC if n.endswith("weight") else BIAS_FRAC)
        for n in (
            "norm2.weight",
            "norm2.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
        )
    )
    shape = lower.AttnShape(batch, tokens, dim, heads, 1, keys or 0)
    din, dout = (cfg.in_chans * cfg.patch_size**2, dim) if linear == "patch_embed" else (dim, cfg.num_classes)
    builders: dict[str, Callable[[], lower.Program]] = {
        "attn_fwd": lambda: lower.attn_block_fwd(
            engine_config, shape, ACT_FRAC, attn_p, key(ATTN_FWD, blocks.ATTN_FWD_FRACS)
        ),
        "attn_bwd": lambda: lower.attn_block_bwd(
            engine_config,
            shape,
            GRAD_FRAC,
            (ACT_FRAC, 12, 11, 12),
            attn_p,
            key(ATTN_BWD, blocks.ATTN_BWD_FRACS),
        ),
        "mlp_fwd": lambda: lower.mlp_block_fwd(
            engine_config, rows, dim, hidden, ACT_FRAC, mlp_p, key(MLP_FWD, blocks.MLP_FWD_FRACS)
        ),
        "mlp_bwd": lambda: lower.mlp_block_bwd(
            engine_config,
            rows,
            dim,
            hidden,
            GRAD_FRAC,
            (ACT_FRAC, 12, 11, 11),
            mlp_p,
            key(MLP_BWD, blocks.MLP_BWD_FRACS),
        ),
        "linear_fwd": lambda: lower.linear_fwd(
            engine_config, rows, din, dout, ACT_FRAC, WEIGHT_FRAC, BIAS_FRAC, None, 11
        ),
        "linear_bwd": lambda: lower.linear_bwd(
            engine_config, rows, din, dout, True, linear != "patch_embed", GRAD_FRAC, WEIGHT_FRAC, 12
        ),
        "layernorm_fwd": lambda: lower.layernorm_fwd(
            engine_config, rows, dim, ACT_FRAC, WEIGHT_FRAC, BIAS_FRAC, 12
        ),
        "layernorm_bwd": lambda: lower.layernorm_bwd(
            engine_config,
            rows,
            dim,
            GRAD_FRAC,
            WEIGHT_FRAC,
            ACT_FRAC,
            None,
            key(LN_BWD, layers.LAYERNORM_BWD_FRACS),
        ),
        "topk_tokens": lambda: lower.topk(engine_config, batch, 1, tokens - 1, 0, keys or tokens - 1, 0),
        "topk_connections": lambda: lower.topk(
            engine_config, batch, tokens, tokens, 1, (keys or tokens) - 1, 1
        ),
    }
    return builders[kernel]()


def measure(program, engine_name: str) -> tuple[str, dict[str, int]]:
    """Run the program once on zero inputs (its counters do not depend on the data): C-sim or fsim."""
    from trilevel.accel.engine import CSimEngine, CSimError, pynq_driver, simulated_zynq
    from trilevel.accel.fsim import FunctionalEngine

    engine = None
    if engine_name in ("auto", "csim"):
        try:
            engine = CSimEngine()
            if engine.config != program.config:
                engine = None
        except CSimError:
            if engine_name == "csim":
                raise
    label = "C-sim engine (modelled cycles)"
    if engine is None:
        engine, label = FunctionalEngine(program.config), "fsim (cycle estimate)"
    driver = pynq_driver(simulated_zynq(engine), program.config)
    inputs = {
        name: np.zeros(buf.rows * buf.cols, buf.dtype)
        for name, buf in program.buffers.items()
        if buf.role in ("in", "inout")
    }
    return label, driver.run(program, inputs).counters


def _run(args: argparse.Namespace) -> int:
    from trilevel.accel import isa, lower
    from trilevel.accel.engine import CSimError

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
        program = lower_kernel(args.kernel, cfg, tokens, args.keys, args.batch, engine_config, args.linear)
    except lower.LoweringError as err:
        raise ui.UserError(f"{args.kernel} at {tokens} tokens on the {args.config} engine: {err}") from None
    summary = program.summary()
    try:
        source, counters = measure(program, args.engine)
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
