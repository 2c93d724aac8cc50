"""SPM region placement of the attention and MLP forward blocks (lower._place_apart): with enough regions the
distinct buffers one COMPUTE command reads and writes (GEMM A / B / C / D / E, softmax and VEC operands) lie
in different SPM regions (a region of the RTL engine serves two accesses per cycle; more cost conflict
cycles, docs/engine.md "Ports and regions"). The fused attention forward is checked over all its
commands, the backward over its attention core (the dP GEMM to the last head's dV GEMM) where it fits."""

from __future__ import annotations

import dataclasses

import pytest

from trilevel import config as model_configs
from trilevel.accel import isa, lower
from trilevel.accel.isa import Op

SHAPES = [(197, None), (139, 43), (98, 31), (69, 22)]  # DeiT-T at every Tri-Level/0.7 stage


def _regions(span: tuple[int, int, int], region: int) -> set[int]:
    return set(range(span[1] // region, (span[2] - 1) // region + 1))


def shared_regions(kernel: str, tokens: int, keys: int | None, config: isa.EngineConfig) -> list[tuple]:
    """(command, opcode, span, span, regions) for each pair of non-overlapping SPM operands of one command
    of the attention section of `kernel`'s program that share a region."""
    prog = lower.representative(kernel, model_configs.CONFIGS["deit_tiny"], tokens, keys, 1, config)
    region = lower.spm_region(config)
    cmds = [isa.decode(w) for w in prog.words.reshape(-1, isa.WORDS)]
    soft = [i for i, f in enumerate(cmds) if Op(f["op"]) == Op.SOFTMAX]
    assert soft or kernel == "mlp_fwd", "no softmax: the attention was not lowered as expected"
    # the fused forwards: every command; the backward: the core (dP GEMM .. the last head's dV GEMM)
    lo, hi = (soft[0] - 1, soft[-1] + 8) if kernel == "attn_bwd" else (0, len(cmds))
    out = []
    for i in range(lo, hi):
        f = cmds[i]
        op = Op(f["op"])
        if op not in (Op.GEMM, Op.SOFTMAX, Op.VEC) or i in prog.relay_commands:
            continue
        reads, writes = lower.accesses(op, f)
        spans = sorted({s for s in reads + writes if s[0] == 0})  # SPM operands
        for a, x in enumerate(spans):
            for y in spans[a + 1:]:
                if x[1] < y[2] and y[1] < x[2]:
                    continue  # parts of one buffer (S = QK^T reads Q and K from qkv)
                if _regions(x, region) & _regions(y, region):
                    out.append((i, op.name, x, y, _regions(x, region) & _regions(y, region)))
    return out


# The backward core takes exactly the scratchpad it needs (at the top): at 139 and 197 tokens that leaves
# too little room for every buffer apart (placed as far as they fit, else packed); so does the layered MLP
# forward at 197 tokens. The property is checked with 12 regions of 2048 rows: PRODUCTION's 6 regions of
# 4096 rows (fewer LUTs, docs/rtl.md) cannot keep every pair apart, and a region serves two accesses per
# cycle anyway; its conflict cycles are measured on the RTL (docs/engine-rtl-cycles.json).
CASES = ([("attn_fwd", t, k) for t, k in SHAPES] + [("attn_bwd", t, k) for t, k in SHAPES if t < 139]
         + [("mlp_fwd", t, k) for t, k in SHAPES if t < 197])
TWELVE_REGIONS = dataclasses.replace(isa.PRODUCTION, name="zcu102-2048-row-regions", spm_region_rows=2048)


@pytest.mark.parametrize(("kernel", "tokens", "keys"), CASES)
def test_operands_in_distinct_regions(kernel: str, tokens: int, keys: int | None) -> None:
    bad = shared_regions(kernel, tokens, keys, TWELVE_REGIONS)
    assert not bad, f"{len(bad)} operand pairs share an SPM region, first: {bad[:3]}"


def test_place_apart_keeps_phase_mates_apart_and_falls_back() -> None:
    region = 100
    spm = lower.Arena(600, "test")
    sizes = {"a": 150, "b": 80, "c": 40, "d": 20}
    at = lower._place_apart(spm, sizes, [("a", "b"), ("b", "c"), ("a", "c", "d")], region)
    assert at == {"a": 0, "b": 200, "c": 300, "d": 280}  # d next to b: no phase mate of d
    assert spm.top == 340
    top = lower._place_apart(lower.Arena(400, "test", 200), {"a": 150, "b": 80}, [("a", "b")], region,
                             top_down=True)
    assert top == {"a": 450, "b": 320}  # from the top down, each at a region's end where it fits
    assert lower._place_apart(lower.Arena(200, "test"), {"a": 150, "b": 80}, [("a", "b")], region) is None


def test_place_apart_two_per_region_and_strict() -> None:
    """per_region=2: up to two phase mates share a region (a region serves two accesses per cycle); strict:
    None unless every buffer is placed so, where the non-strict placement packs the rest."""
    sizes = {"w": 90, "x0": 10, "y0": 50, "x1": 10, "y1": 50}
    at = lower._place_apart(lower.Arena(300, "test"), sizes, [list(sizes)], 100, per_region=2, strict=True)
    assert at == {"w": 0, "x0": 90, "y0": 100, "x1": 150, "y1": 200}
    assert lower._place_apart(lower.Arena(220, "test"), sizes, [list(sizes)], 100, per_region=2,
                              strict=True) is None  # y1 would be the third buffer in region 1
    packed = lower._place_apart(lower.Arena(220, "test"), sizes, [list(sizes)], 100, per_region=2)
    assert packed is not None and packed["y1"] == 160
    one = lower._place_apart(lower.Arena(300, "test"), sizes, [list(sizes)], 100, strict=True)
    assert one is None  # five mates cannot have a region each among three


@pytest.mark.parametrize("kernel", ["mlp_bwd"])
def test_fused_layernorm_backward_operands_two_per_region(kernel: str) -> None:
    """The fused LayerNorm backward of the 8-image (8 x 197 tokens) MLP backward at PRODUCTION's 6 regions:
    each LN_BWD reads dX, gamma, xhat and the residual every cycle and writes its output, so at most two of
    those five operands may share an SPM region (they were four in one region: 5.9 % conflict cycles
    measured on the RTL), and no COLDOT / COLSUM of the same tiles reads two operands in one region."""
    prog = lower.representative(kernel, model_configs.CONFIGS["deit_tiny"], 197, None, 8, isa.PRODUCTION)
    region = lower.spm_region(isa.PRODUCTION)
    lnb = 0
    for w in prog.words.reshape(-1, isa.WORDS):
        f = isa.decode(w)
        if Op(f["op"]) != Op.VEC or f["sub"] not in (isa.Vec.LN_BWD, isa.Vec.COLDOT):
            continue
        lnb += f["sub"] == isa.Vec.LN_BWD
        reads, writes = lower.accesses(Op.VEC, f)
        spans = [s for s in reads + writes if s[0] == 0]
        count: dict[int, int] = {}
        for s in spans:
            for r in _regions(s, region):
                count[r] = count.get(r, 0) + 1
        assert max(count.values()) <= (2 if f["sub"] == isa.Vec.LN_BWD else 1), (f, spans)
    assert lnb >= 2, "the LayerNorm backward was not fused into the fc1 backward"


def test_place_ports_counts_ports_and_spills() -> None:
    """_place_ports: a region holds buffers whose ports (the union over them, per phase) number at most two;
    a buffer that fits no region so goes to the top of `spill`; _port_cost counts the ports beyond two."""
    sizes = {"w": 150, "d": 20, "x": 20, "r": 20, "o": 20}
    phases = [{"w": "B", "d": "C", "x": "L", "r": "L", "o": "S"}, {"d": "A", "x": "EL", "r": "DL", "o": "CS"}]
    spm = lower.Arena(300, "test")
    at, excess = lower._place_ports(spm, sizes, phases, 100, spill=(300, 400))
    assert excess == 0 and lower._port_cost(at, sizes, phases, 100) == 0
    assert at["r"] == 380 or at["x"] == 380 or at["o"] == 380  # one of them spilled, from the top
    # region 1: B C L, then A E D L; region 2 (r straddles into it): D L C S
    assert lower._port_cost({"w": 0, "d": 150, "x": 170, "r": 190, "o": 210}, sizes, phases, 100) == 5
    assert lower._place_ports(lower.Arena(100, "test"), sizes, phases, 100) is None  # w + rest: no room
