"""DDR reads of the lowered DeiT-T backward blocks at one image (the production configuration): each buffer is
read at most as often as the lowering needs. The weight-gradient accumulators, weights and saved activations
once; what one stage hands the next stays on chip where it fits (mlp_bwd: dH and dOut; attn_bwd: dctx and
dQKV), so those scratch buffers are neither stored nor loaded. Left: attn_bwd's second read of dOut (the
LayerNorm's residual gradient, after the attention core)."""

from __future__ import annotations

import pytest

from trilevel import config as model_configs
from trilevel.accel import isa, lower
from trilevel.accel.isa import Mem, Op

SHAPES = [(197, None), (139, 43), (98, 31), (69, 22)]  # DeiT-T at every Tri-Level/0.7 stage
# buffers a call may read more than once (times its size), and scratch buffers it may read at all
ALLOWED = {"mlp_bwd": {}, "attn_bwd": {"dout": 2}}


def ddr_traffic(prog: lower.Program) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes LOADed from / STOREd to each DDR buffer of `prog` (zero fills read nothing)."""
    bufs = sorted(prog.buffers.values(), key=lambda b: b.offset)
    rd = dict.fromkeys(prog.buffers, 0)
    wr = dict.fromkeys(prog.buffers, 0)
    for w in prog.words.reshape(-1, isa.WORDS):
        f = isa.decode(w)
        op = Op(f["op"])
        if op not in (Op.LOAD, Op.STORE) or (op == Op.LOAD and f["tb"]):
            continue
        name = next(b.name for b in bufs if b.offset <= f["index_base"] < b.offset + b.nbytes)
        (rd if op == Op.LOAD else wr)[name] += f["m"] * f["n"] * isa.DDR_ELEM_BYTES[Mem(f["sub"])]
    return rd, wr


def assert_reads_within(prog: lower.Program, rd: dict[str, int], allowed: dict[str, int], what: str) -> None:
    """Each buffer read at most `allowed` times its size (inputs once, other buffers not at all, unless
    listed), and the whole call at most the sum of those bounds and the command words."""
    times = {n: allowed.get(n, 1 if b.role in ("in", "inout") else 0) for n, b in prog.buffers.items()}
    over = {n: (rd[n], times[n] * b.nbytes) for n, b in prog.buffers.items() if rd[n] > times[n] * b.nbytes}
    assert not over, f"{what}: DDR reads over the bound (read, bound): {over}"
    bound = sum(times[n] * b.nbytes for n, b in prog.buffers.items())
    summary = prog.summary()
    assert summary["ddr_read_bytes"] <= bound + isa.COMMAND_BYTES * summary["commands"]


@pytest.mark.parametrize(("tokens", "keys"), SHAPES)
@pytest.mark.parametrize("kernel", ["mlp_bwd", "attn_bwd"])
def test_backward_blocks_read_each_buffer_once(kernel: str, tokens: int, keys: int | None) -> None:
    prog = lower.representative(kernel, model_configs.CONFIGS["deit_tiny"], tokens, keys, 1, isa.PRODUCTION)
    rd, wr = ddr_traffic(prog)
    assert_reads_within(prog, rd, ALLOWED[kernel], f"{kernel} T={tokens}")
    kept = {"mlp_bwd": ("dh",), "attn_bwd": ("dctx", "dqkv")}[kernel]
    assert all(rd[n] == 0 and wr[n] == 0 for n in kept), f"{kernel}: {kept} went through DDR"


# DeiT-T at 8 images x 197 tokens (the micro-batch): dY and X of a linear stage no longer fit half the
# scratchpad together, so the weight gradient keeps one resident and streams the other once
# (lower._weight_grad_streamed) instead of re-reading both per ACC block. What stays read twice: dOut (also
# the LayerNorm's residual gradient) and the stage outputs too large to keep (mlp_bwd dH, attn_bwd dQKV:
# stored, then read by the dX pass and the weight gradient).
ALLOWED_B8 = {"mlp_bwd": {"dout": 2, "dh": 2}, "attn_bwd": {"dout": 2, "dctx": 1, "dqkv": 2}}


@pytest.mark.parametrize("kernel", ["mlp_bwd", "attn_bwd"])
def test_backward_blocks_at_8_images_read_operands_once(kernel: str) -> None:
    prog = lower.representative(kernel, model_configs.CONFIGS["deit_tiny"], 197, None, 8, isa.PRODUCTION)
    rd, _ = ddr_traffic(prog)
    assert_reads_within(prog, rd, ALLOWED_B8[kernel], f"{kernel} 8 x 197")
