"""Golden vectors for the Vitis HLS csim_design testbench (hls/tb/tb_kernels.cpp), from the integer reference.

For each top function, runs one small random case through the C-sim library while recording the
extern "C" call (`trilevel.csim.CSim.record`), checks the C-sim result against `trilevel.intref` bit
for bit, and writes the call with its arguments before and after into `<out>/<top>/call.bin`. The
testbench replays the call on the kernel as Vitis compiles it and compares every buffer.

    python hls/gen_vectors.py --out build/hls/vectors [TOP ...]

call.bin (little-endian): b"TLV1", u32 len + function name, u32 argument count, then per argument a
u8 kind: 0 int32 (i32), 1 uint32 (u32), 2 int64 (i64), 3 array (u64 nbytes, bytes before, bytes
after), 4 NULL, 5 pointer table (u32 count, then count arguments of kind 3 or 4), 6 int by reference
(i32 before, i32 after).
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KIND = {"int": 0, "uint": 1, "long": 2, "array": 3, "null": 4, "table": 5, "intref": 6}


def encode_call(name: str, args: list[tuple[str, object, object]]) -> bytes:
    def array(before: np.ndarray | None, after: np.ndarray | None) -> bytes:
        if before is None:
            return bytes([KIND["null"]])
        raw_b, raw_a = np.ascontiguousarray(before).tobytes(), np.ascontiguousarray(after).tobytes()
        return bytes([KIND["array"]]) + struct.pack("<Q", len(raw_b)) + raw_b + raw_a

    out = [b"TLV1", struct.pack("<I", len(name)), name.encode(), struct.pack("<I", len(args))]
    for kind, before, after in args:
        if kind in ("int", "uint", "long"):
            fmt = {"int": "<i", "uint": "<I", "long": "<q"}[kind]
            out.append(bytes([KIND[kind]]) + struct.pack(fmt, before))
        elif kind in ("array", "null"):
            out.append(array(before, after))
        elif kind == "table":
            out.append(bytes([KIND["table"]]) + struct.pack("<I", len(before)))
            out.extend(array(b, a) for b, a in zip(before, after, strict=True))
        elif kind == "intref":
            out.append(bytes([KIND["intref"]]) + struct.pack("<ii", before, after))
        else:
            raise ValueError(f"unknown argument kind {kind!r}")
    return b"".join(out)


def same(got: object, want: object) -> bool:
    """Bit-exact equality of kernel results (QTensors, arrays, dicts, tuples, scalars)."""
    from trilevel.intref.fixed import QTensor

    if isinstance(want, QTensor):
        return isinstance(got, QTensor) and got.frac == want.frac and np.array_equal(got.data, want.data)
    if isinstance(want, np.ndarray):
        return np.array_equal(np.asarray(got), want)
    if isinstance(want, dict):
        return all(same(got[k], v) for k, v in want.items())
    if isinstance(want, (tuple, list)):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want, strict=True))
    return got == want


def cases(rng: np.random.Generator) -> dict[str, Callable[[object], object]]:
    """top -> f(impl) running one call of `impl` (trilevel.csim.CSim or a reference namespace)."""
    from trilevel.accel.kernel_args import ATTN_PARAMS, MLP_PARAMS, attn_param_shapes, mlp_param_shapes
    from trilevel.intref import blocks, layers, optim
    from trilevel.intref.fixed import QTensor

    def q(shape: tuple[int, ...], frac: int, amp: int = 3000) -> QTensor:
        return QTensor(rng.integers(-amp, amp + 1, shape).astype(np.int16), frac)

    dim, hidden, heads, tokens, batch = 64, 128, 4, 17, 2
    names = dict(
        zip(ATTN_PARAMS + MLP_PARAMS, attn_param_shapes(dim) + mlp_param_shapes(dim, hidden), strict=True)
    )
    params = {n: q(s, 14 if n.startswith("norm") else 16) for n, s in names.items()}
    x, dout = q((batch, tokens, dim), 10, 8000), q((batch, tokens, dim), 14)
    keys = np.sort(np.argsort(rng.random((batch, tokens - 1, tokens - 1)), axis=-1)[..., :6] + 1)
    conn = np.concatenate([np.zeros((batch, tokens - 1, 1), np.int64), keys], axis=-1)
    lin = {"weight": q((40, dim), 16), "bias": q((40,), 13)}
    residual, dy = q((batch, tokens, 40), 11), q((batch, tokens, 40), 14)
    ln = {"weight": params["norm1.weight"], "bias": params["norm1.bias"]}
    attn_f = {"ln": 12, "qkv": 11, "s": 8, "ctx": 11, "out": 10}
    attn_b = {"dctx": 14, "dp": 14, "ds": 14, "dqkv": 14, "dln": 14, "ln_g": 14, "ln_t": 12, "dx": 14}
    mlp_f = {"ln": 12, "h": 11, "a": 11, "out": 10}
    mlp_b = {"da": 14, "dh": 14, "dln": 14, "ln_g": 14, "ln_t": 12, "dx": 14}
    attn_sum = rng.integers(0, 4 * 32768, (batch, tokens, tokens))
    acc = rng.integers(-(2**36), 2**36, (40, dim))
    master = (rng.standard_normal((40, dim)) * 0.05).astype(np.float32)
    ref_saved = {
        "attn": blocks.attn_block_fwd(x, params, attn_f, heads, conn)[2],
        "mlp": blocks.mlp_block_fwd(x, params, mlp_f)[2],
        "ln": layers.layernorm_fwd(x, ln, {"y": 12})[2],
    }

    def grads(names_: list[str]) -> dict[str, np.ndarray]:
        return {
            n: np.zeros(params[n].data.shape if n in params else lin[n].data.shape, np.int64) for n in names_
        }

    def optimizer(impl: object) -> object:
        state = [master.copy(), np.zeros_like(master), np.zeros_like(master)]
        w = impl.adamw_step(*state, acc, 30, 4, optim.AdamWScalars.at(1, 5e-4))
        return w, state

    return {
        "linear_fwd": lambda m: m.linear_fwd(x, lin, {"y": 11}, residual),
        "linear_bwd": lambda m: (
            m.linear_bwd(dy, {"x": x}, lin, g := grads(["weight", "bias"]), {"dx": 12}, 5),
            g,
        ),
        "layernorm_fwd": lambda m: m.layernorm_fwd(x, ln, {"y": 12}),
        "layernorm_bwd": lambda m: (
            m.layernorm_bwd(
                dout,
                ref_saved["ln"],
                ln,
                g := {"weight": np.zeros(dim, np.int64), "bias": np.zeros(dim, np.int64)},
                {"g": 13, "t": 12, "dx": 13},
                6,
                x,
            ),
            g,
        ),
        "attn_fwd": lambda m: m.attn_block_fwd(x, params, attn_f, heads, conn)[:2],
        "attn_bwd": lambda m: (
            m.attn_block_bwd(dout, dict(ref_saved["attn"]), params, g := grads(list(names)[:6]), attn_b, 7),
            g,
        ),
        "mlp_fwd": lambda m: m.mlp_block_fwd(x, params, mlp_f)[:2],
        "mlp_bwd": lambda m: (
            m.mlp_block_bwd(dout, ref_saved["mlp"], params, g := grads(list(names)[6:]), mlp_b, 8),
            g,
        ),
        "topk_prune": lambda m: m.topk_connections(attn_sum, 5, True),
        "optimizer_step": optimizer,
    }


def reference() -> object:
    from types import SimpleNamespace

    from trilevel.intref import blocks, layers, optim, topk

    return SimpleNamespace(
        **{
            n: getattr(mod, n)
            for mod, ns in (
                (layers, ("linear_fwd", "linear_bwd", "layernorm_fwd", "layernorm_bwd")),
                (blocks, ("attn_block_fwd", "attn_block_bwd", "mlp_block_fwd", "mlp_block_bwd")),
                (topk, ("topk_connections",)),
                (optim, ("adamw_step",)),
            )
            for n in ns
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tops", nargs="*", help="top functions (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "hls" / "vectors")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from trilevel import csim

    lib = csim.CSim(csim.build())
    ref = reference()
    table = cases(np.random.default_rng(args.seed))
    for top in args.tops or list(table):
        if top not in table:
            print(f"gen_vectors: unknown top {top!r}; choose from {', '.join(table)}", file=sys.stderr)
            return 1
        with lib.record() as calls:
            got = table[top](lib)
        want = table[top](ref)
        if not same(got, want):
            print(f"gen_vectors: {top}: C-sim differs from trilevel.intref", file=sys.stderr)
            return 1
        kernel_calls = [c for c in calls if c[0] == f"tl_{top}"]
        if len(kernel_calls) != 1:
            print(
                f"gen_vectors: {top}: expected one tl_{top} call, recorded {[c[0] for c in calls]}",
                file=sys.stderr,
            )
            return 1
        path = args.out / top / "call.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_call(*kernel_calls[0]))
        print(f"gen_vectors: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
