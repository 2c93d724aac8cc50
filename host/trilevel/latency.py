"""ZCU102 latency projection for Tri-Level E-ViT inference and on-device training.

A cycle model of the layer-wise accelerator (docs/latency.md): every kernel call (patch embedding,
attention block, MLP block, TA-selector, head, optimizer) costs

    cycles = max(compute_cycles, ddr_bytes / bytes_per_cycle) + launch_cycles

i.e. DDR transfers are double-buffered against compute inside a call, calls run back to back and a
call's fixed cost (AXI-lite programming, ap_start/ap_done, pipeline fill) is not hidden. Compute
inside a call is serial over its units (they share the MAC array): GEMMs on a `pe_rows x pe_cols`
systolic MAC array (one DSP48E2 16x16 MAC per PE per cycle), softmax rows on `softmax_units` softmax
units, top-k frames on `topk_units` top-k units, element-wise work (LayerNorm, GELU, residual adds,
optimizer) on `vector_lanes` lanes. The GEMM, softmax and top-k cycle counts are the closed-form
formulas of the RTL units in `trilevel.rtl_cycles`, validated against Verilator in `sim/`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from trilevel import rtl_cycles
from trilevel.config import ViTConfig, get_config, keep_count

IMAGENET_TRAIN_IMAGES = 1_281_167

# Paper Table 2 (ZCU102, 150 MHz, batch 1): (training hours per epoch, inference ms per image).
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "deit_tiny": {"dense": (13.79, 10.91), "0.9": (11.49, 9.68), "0.8": (9.61, 8.50), "0.7": (8.91, 7.36)},
    "deit_small": {
        "dense": (32.44, 25.68),
        "0.9": (27.28, 22.92),
        "0.8": (22.55, 20.25),
        "0.7": (21.15, 17.61),
    },
}


@dataclass(frozen=True)
class Platform:
    """The accelerator's resources on the ZCU102 (xczu9eg: 2520 DSP48E2, ~4 MB BRAM, PS DDR4)."""

    clock_mhz: float = 150.0
    pe_rows: int = 32  # systolic MAC array: 32 x 32 = 1024 DSP48E2 ...
    pe_cols: int = 32  # ... the rest of the 2520 go to softmax/LayerNorm/GELU/optimizer datapaths
    softmax_units: int = 8  # LUT-based (EXP2/RECIP tables), no DSPs beyond the requantize multiplier
    topk_units: int = 4
    vector_lanes: int = 32  # element-wise ops per cycle (LayerNorm, GELU, residual, optimizer)
    ddr_gbps: float = 12.0  # effective PL <-> PS-DDR4 bandwidth (19.2 GB/s peak, shared with the ARM cores)
    launch_cycles: int = 1500  # per kernel call: register writes, ap_start/ap_done polling, pipeline fill

    def __post_init__(self) -> None:
        for name in (
            "clock_mhz",
            "pe_rows",
            "pe_cols",
            "softmax_units",
            "topk_units",
            "vector_lanes",
            "ddr_gbps",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.launch_cycles < 0:
            raise ValueError(f"launch_cycles must be >= 0, got {self.launch_cycles}")

    @property
    def bytes_per_cycle(self) -> float:
        return self.ddr_gbps * 1e9 / (self.clock_mhz * 1e6)


@dataclass
class KernelCall:
    """One accelerator kernel invocation with its compute split by unit and its DDR traffic."""

    name: str
    phase: str  # "forward" | "backward" | "optimizer"
    unit_cycles: dict[str, int] = field(default_factory=dict)  # "gemm" | "softmax" | "topk" | "vector"
    ddr_bytes: float = 0.0
    macs: int = 0

    def add(self, unit: str, cycles: int) -> None:
        self.unit_cycles[unit] = self.unit_cycles.get(unit, 0) + int(cycles)

    @property
    def compute_cycles(self) -> int:
        return sum(self.unit_cycles.values())

    def cycles(self, platform: Platform) -> float:
        return max(self.compute_cycles, self.ddr_bytes / platform.bytes_per_cycle) + platform.launch_cycles

    def summary(self, platform: Platform) -> dict:
        return {
            "name": self.name,
            "phase": self.phase,
            "unit_cycles": dict(self.unit_cycles),
            "ddr_bytes": round(self.ddr_bytes),
            "cycles": round(self.cycles(platform)),
            "macs": self.macs,
        }


@dataclass(frozen=True)
class BlockShape:
    """Token and key counts seen by one transformer block (counts include [CLS])."""

    tokens_attn: int  # tokens entering the attention
    keys_per_query: int  # keys per patch query (all tokens when dense); the [CLS] query is always dense
    tokens_mlp: int  # tokens entering the MLP (fewer than tokens_attn at a TA-selector)
    prune_to: int | None  # patch tokens kept by this block's TA-selector (None: no selector)
    conn_keep: int | None  # patch keys kept per patch query by this block's TA-selector


def block_shapes(cfg: ViTConfig, keep_token: float, keep_attn: float) -> list[BlockShape]:
    """Per-block token/key counts with TA-selectors at cfg.prune_blocks (docs/numerics.md §1.4).

    A selector keeps keep_count(R_T, N) patch tokens (+ [CLS]) for its own MLP and all later blocks,
    and for each kept patch query keep_count(R_A, K) patch keys plus the [CLS] key for later blocks.
    """
    sparse = keep_token < 1.0 or keep_attn < 1.0
    tokens, keys = cfg.num_tokens, cfg.num_tokens
    shapes = []
    for b in range(cfg.depth):
        tokens_attn, keys_attn = tokens, keys
        prune_to = conn_keep = None
        if sparse and b in cfg.prune_blocks:
            patches = tokens - int(cfg.cls_token)
            prune_to = keep_count(keep_token, patches)
            conn_keep = keep_count(keep_attn, prune_to)
            tokens = prune_to + int(cfg.cls_token)
            keys = conn_keep + int(cfg.cls_token)
        shapes.append(BlockShape(tokens_attn, keys_attn, tokens, prune_to, conn_keep))
    return shapes


class _Builder:
    """Accumulates unit cycles for GEMMs and element-wise work inside one kernel call."""

    def __init__(self, platform: Platform, call: KernelCall):
        self.p, self.call = platform, call

    def gemm(self, m: int, n: int, k: int, times: int = 1) -> None:
        """Y[m, n] = X[m, k] . W[n, k]^T on the MAC array, `times` independent instances."""
        self.call.add("gemm", times * rtl_cycles.gemm_cycles(m, n, k, self.p.pe_rows, self.p.pe_cols))
        self.call.macs += times * m * n * k

    def vector(self, elements: int, passes: int = 1) -> None:
        self.call.add("vector", passes * math.ceil(elements / self.p.vector_lanes))

    def softmax_rows(self, row_lengths: list[tuple[int, int]], backward: bool = False) -> None:
        """row_lengths: (count, n) groups of rows; each group is dealt evenly to the softmax units, whose
        rows stream back to back (rtl_cycles.softmax_stream_cycles)."""
        for count, n in row_lengths:
            per_unit = math.ceil(count / self.p.softmax_units)
            self.call.add("softmax", rtl_cycles.softmax_stream_cycles(per_unit, n, backward))

    def topk(self, frames: int, n: int, k: int) -> None:
        """`frames` top-k frames of n scores, dealt to the top-k units, back to back on each unit."""
        per_unit = math.ceil(frames / self.p.topk_units)
        self.call.add("topk", rtl_cycles.topk_stream_cycles(per_unit, n, k))


def _attn_rows(shape: BlockShape, cls: bool) -> list[tuple[int, int]]:
    """(row count, row length) of one head's score matrix: [CLS] row dense, patch rows over their keys."""
    t, c = shape.tokens_attn, shape.keys_per_query
    return [(1, t), (t - 1, c)] if cls else [(t, c)]


def kernel_calls(
    cfg: ViTConfig,
    keep_token: float,
    keep_attn: float,
    platform: Platform,
    training: bool,
    micro_batch: int = 1,
) -> list[KernelCall]:
    """The kernel calls of one micro-batch (forward, and backward when training), per image.

    Compute scales with the micro-batch; weights and gradient accumulators are transferred once per
    call, so their DDR bytes are divided by `micro_batch` to give per-image figures. Compute cycles
    are per image (the MAC array processes the micro-batch's images one after the other).
    """
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    act, wbytes, gbytes = 2, 2, 8  # int16 activations and weights, int64 gradient accumulators (RMW)
    d, h, dh, hid = cfg.embed_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_hidden
    patch_in = cfg.patch_size**2 * cfg.in_chans
    n_patch = cfg.num_patches
    cls = cfg.cls_token
    shapes = block_shapes(cfg, keep_token, keep_attn)
    calls: list[KernelCall] = []

    def new(name: str, phase: str) -> tuple[KernelCall, _Builder]:
        call = KernelCall(name, phase)
        calls.append(call)
        return call, _Builder(platform, call)

    def weights(n_params: int) -> float:
        return n_params * wbytes / micro_batch

    def grads(n_params: int) -> float:
        return n_params * gbytes * 2 / micro_batch

    attn_params = 3 * d * d + 3 * d + d * d + d + 2 * d
    mlp_params = hid * d + hid + d * hid + d + 2 * d
    embed_params = d * patch_in + d + (cls + n_patch) * d
    head_params = cfg.num_classes * d + cfg.num_classes + 2 * d

    # ---- forward ----
    call, bld = new("patch_embed", "forward")
    bld.gemm(n_patch, d, patch_in)
    bld.vector(cfg.num_tokens * d)  # + position embedding
    call.ddr_bytes = n_patch * patch_in * act + weights(embed_params) + cfg.num_tokens * d * act
    for b, s in enumerate(shapes):
        t, tm = s.tokens_attn, s.tokens_mlp
        qk_macs_rows = _attn_rows(s, cls)
        call, bld = new(f"block{b}.attn", "forward")
        bld.vector(t * d, passes=2)  # LayerNorm: statistics, normalize
        bld.gemm(t, 3 * d, d)
        for count, n in qk_macs_rows:  # scores and context over the selected keys, per head
            bld.gemm(count, n, dh, times=h)
            bld.gemm(count, dh, n, times=h)
        bld.softmax_rows([(h * count, n) for count, n in qk_macs_rows])
        bld.gemm(t, d, d)
        bld.vector(t * d)  # residual
        call.ddr_bytes = t * d * act * 2 + weights(attn_params)
        if training:  # saved for backward: LN1 out, Q, K, V, probabilities, context
            call.ddr_bytes += (t * d * 5 + h * sum(cnt * n for cnt, n in qk_macs_rows)) * act
        if s.prune_to is not None:
            call, bld = new(f"block{b}.ta_selector", "forward")
            n_pat = t - int(cls)
            if cls:
                bld.topk(1, n_pat, s.prune_to)
            else:
                bld.vector(t * t)  # column sums of the head-sum attention matrix
                bld.topk(1, n_pat, s.prune_to)
            bld.topk(s.prune_to, s.prune_to, s.conn_keep)
            bld.vector(tm * d)  # gather the kept tokens
            call.ddr_bytes = (n_pat + s.prune_to**2 + tm * d * 2) * act + s.prune_to * s.conn_keep * act
        call, bld = new(f"block{b}.mlp", "forward")
        bld.vector(tm * d, passes=2)
        bld.gemm(tm, hid, d)
        bld.vector(tm * hid)  # GELU
        bld.gemm(tm, d, hid)
        bld.vector(tm * d)
        call.ddr_bytes = tm * d * act * 2 + weights(mlp_params)
        if training:  # LN2 out, fc1 out
            call.ddr_bytes += (tm * d + tm * hid) * act
    call, bld = new("head", "forward")
    bld.vector(d, passes=2)
    bld.gemm(1, cfg.num_classes, d)
    call.ddr_bytes = d * act + weights(head_params) + cfg.num_classes * act
    if not training:
        return calls

    # ---- backward (reverse order); dX = dY.W and dW += dY^T.X per GEMM ----
    call, bld = new("head.bwd", "backward")
    bld.gemm(1, d, cfg.num_classes)
    bld.gemm(cfg.num_classes, d, 1)
    bld.vector(d, passes=3)
    call.ddr_bytes = (cfg.num_classes + 2 * d) * act + weights(head_params) + grads(head_params)
    for b in reversed(range(cfg.depth)):
        s = shapes[b]
        t, tm = s.tokens_attn, s.tokens_mlp
        rows = _attn_rows(s, cls)
        call, bld = new(f"block{b}.mlp.bwd", "backward")
        bld.gemm(tm, hid, d)  # d(fc1 out) via fc2
        bld.gemm(d, hid, tm)  # dW fc2
        bld.vector(tm * hid)  # GELU'
        bld.gemm(tm, d, hid)  # dX via fc1
        bld.gemm(hid, d, tm)  # dW fc1
        bld.vector(tm * d, passes=4)  # LayerNorm backward, residual
        call.ddr_bytes = (tm * d * 3 + tm * hid) * act + weights(mlp_params) + grads(mlp_params)
        if s.prune_to is not None:
            call, bld = new(f"block{b}.scatter.bwd", "backward")
            bld.vector(t * d)  # scatter the kept tokens' gradients back (pruned tokens get 0)
            call.ddr_bytes = (tm + t) * d * act
        call, bld = new(f"block{b}.attn.bwd", "backward")
        bld.gemm(t, d, d)  # d(context) via proj
        bld.gemm(d, d, t)  # dW proj
        for count, n in rows:
            bld.gemm(count, n, dh, times=h)  # dP = dO . V^T
            bld.gemm(count, dh, n, times=h)  # dV = P^T . dO
            bld.gemm(count, dh, n, times=h)  # dQ = dS . K
            bld.gemm(count, dh, n, times=h)  # dK = dS^T . Q
        bld.softmax_rows([(h * count, n) for count, n in rows], backward=True)
        bld.gemm(t, d, 3 * d)  # dX via QKV
        bld.gemm(3 * d, d, t)  # dW QKV
        bld.vector(t * d, passes=4)
        saved = t * d * 5 + h * sum(cnt * n for cnt, n in rows)
        call.ddr_bytes = (t * d * 2 + saved) * act + weights(attn_params) + grads(attn_params)
    call, bld = new("patch_embed.bwd", "backward")
    bld.gemm(d, patch_in, n_patch)  # dW only: the image needs no gradient
    bld.vector(cfg.num_tokens * d)
    call.ddr_bytes = (cfg.num_tokens * d + n_patch * patch_in) * act + grads(embed_params)
    return calls


def parameter_count(cfg: ViTConfig) -> int:
    d, hid = cfg.embed_dim, cfg.mlp_hidden
    block = 4 * d * d + 4 * d + 2 * d * hid + hid + d + 4 * d
    embed = d * cfg.patch_size**2 * cfg.in_chans + d + cfg.num_tokens * d
    return embed + cfg.depth * block + cfg.num_classes * d + cfg.num_classes + 2 * d


def optimizer_call(cfg: ViTConfig, platform: Platform) -> KernelCall:
    """One AdamW step over all parameters: fp32 master + two moments read/written, int64 gradient
    accumulator read and cleared, int16 weight written (42 bytes per parameter)."""
    n = parameter_count(cfg)
    call = KernelCall("optimizer", "optimizer")
    _Builder(platform, call).vector(n, passes=1)
    call.ddr_bytes = n * (3 * 4 * 2 + 8 * 2 + 2)
    return call


@dataclass
class Projection:
    model: str
    keep_token: float
    keep_attn: float
    keep_example: float
    platform: Platform
    micro_batch: int
    batch_size: int
    dataset_size: int
    tokens_per_block: list[int]
    keys_per_query: list[int]
    forward_macs: int
    inference_ms: float
    train_ms_per_image: float
    epoch_images: int
    epoch_hours: float
    bound: dict[str, float]  # share of training cycles that are compute- vs DDR-bound
    per_unit_cycles: dict[str, int]  # training, per image, summed over calls
    per_call: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["paper_table2"] = paper_row(self.model, self.keep_token, self.keep_attn, self.keep_example)
        return out


def paper_row(model: str, keep_token: float, keep_attn: float, keep_example: float) -> dict | None:
    """The paper's Table 2 row for this model at Tri-Level/R (R_T = R_e = R) or dense, if it has one."""
    rows = PAPER_TABLE2.get(model)
    if rows is None:
        return None
    if keep_token == keep_attn == keep_example == 1.0:
        key = "dense"
    elif keep_token == keep_example and f"{keep_token:.1f}" in rows and abs(keep_token * 10 % 1) < 1e-9:
        key = f"{keep_token:.1f}"
    else:
        return None
    hours, ms = rows[key]
    row = "Dense" if key == "dense" else f"Tri-Level/{key}"
    return {"row": row, "epoch_hours": hours, "inference_ms": ms}


def _ms(cycles: float, platform: Platform) -> float:
    return cycles / (platform.clock_mhz * 1e3)


def project(
    model: str | ViTConfig,
    keep_token: float = 1.0,
    keep_attn: float = 1.0,
    keep_example: float = 1.0,
    platform: Platform | None = None,
    dataset_size: int = IMAGENET_TRAIN_IMAGES,
    micro_batch: int = 1,
    batch_size: int = 64,
) -> Projection:
    """Project inference and training latency of `model` on the ZCU102 at the given keep ratios.

    Inference: batch 1 forward. Training: forward + backward per image in micro-batches of
    `micro_batch` images, one optimizer step per `batch_size` images. Epoch: round(R_e * |D|)
    active examples (the example level's subset size is constant, docs/algorithm.md).
    """
    cfg = get_config(model) if isinstance(model, str) else model
    platform = platform or Platform()
    for name, r in (("keep_token", keep_token), ("keep_attn", keep_attn), ("keep_example", keep_example)):
        if not 0.0 < r <= 1.0:
            raise ValueError(f"{name} must be in (0, 1], got {r}")
    if dataset_size < 1 or batch_size < 1 or micro_batch < 1:
        raise ValueError("dataset_size, batch_size and micro_batch must be >= 1")
    if batch_size % micro_batch:
        raise ValueError(f"batch_size {batch_size} must be a multiple of micro_batch {micro_batch}")

    infer = kernel_calls(cfg, keep_token, keep_attn, platform, training=False)
    train = kernel_calls(cfg, keep_token, keep_attn, platform, training=True, micro_batch=micro_batch)
    opt = optimizer_call(cfg, platform)
    # Launch overhead is per call, i.e. per micro-batch: amortize it over the micro-batch's images.
    launch_share = platform.launch_cycles * (1 - 1 / micro_batch)
    train_cycles = sum(c.cycles(platform) - launch_share for c in train) + opt.cycles(platform) / batch_size
    compute_bound = sum(
        c.compute_cycles for c in train if c.compute_cycles * platform.bytes_per_cycle >= c.ddr_bytes
    )
    all_compute = sum(c.compute_cycles for c in train) or 1
    per_unit: dict[str, int] = {}
    for c in train:
        for unit, cyc in c.unit_cycles.items():
            per_unit[unit] = per_unit.get(unit, 0) + cyc
    shapes = block_shapes(cfg, keep_token, keep_attn)
    epoch_images = max(1, round(keep_example * dataset_size))  # as trilevel.example_filter
    train_ms = _ms(train_cycles, platform)
    return Projection(
        model=cfg.name,
        keep_token=keep_token,
        keep_attn=keep_attn,
        keep_example=keep_example,
        platform=platform,
        micro_batch=micro_batch,
        batch_size=batch_size,
        dataset_size=dataset_size,
        tokens_per_block=[s.tokens_attn for s in shapes],
        keys_per_query=[s.keys_per_query for s in shapes],
        forward_macs=sum(c.macs for c in infer),
        inference_ms=_ms(sum(c.cycles(platform) for c in infer), platform),
        train_ms_per_image=train_ms,
        epoch_images=epoch_images,
        epoch_hours=train_ms * epoch_images / 3.6e6,
        bound={"compute_bound_share": compute_bound / all_compute},
        per_unit_cycles=per_unit,
        per_call=[c.summary(platform) for c in [*train, opt]],
    )


def format_projection(p: Projection) -> str:
    """Human-readable summary, side by side with the paper's Table 2 where it has the row."""
    pf = p.platform
    lines = [
        f"{p.model}  R_T={p.keep_token} R_A={p.keep_attn} R_e={p.keep_example}  @ {pf.clock_mhz:g} MHz",
        f"  platform: {pf.pe_rows}x{pf.pe_cols} MAC array ({pf.pe_rows * pf.pe_cols} DSP48E2), "
        f"{pf.softmax_units} softmax + {pf.topk_units} top-k units, {pf.vector_lanes} vector lanes, "
        f"DDR {pf.ddr_gbps:g} GB/s, {pf.launch_cycles} cycles per kernel call",
        f"  tokens per block: {p.tokens_per_block}",
        f"  keys per query:   {p.keys_per_query}",
        f"  forward MACs/image: {p.forward_macs / 1e9:.3f} G",
        f"  inference latency (batch 1):     {p.inference_ms:8.2f} ms/image",
        f"  training latency (micro-batch {p.micro_batch}, step every {p.batch_size}): "
        f"{p.train_ms_per_image:8.2f} ms/image",
        f"  epoch ({p.epoch_images} of {p.dataset_size} images): {p.epoch_hours:8.2f} h",
        f"  compute-bound share of training cycles: {100 * p.bound['compute_bound_share']:.0f}%",
        "  training compute per image: "
        + ", ".join(f"{unit} {_ms(cycles, pf):.2f} ms" for unit, cycles in sorted(p.per_unit_cycles.items())),
    ]
    row = paper_row(p.model, p.keep_token, p.keep_attn, p.keep_example)
    if row:
        lines.append(
            f"  paper Table 2 ({row['row']}): inference {row['inference_ms']:.2f} ms, "
            f"epoch {row['epoch_hours']:.2f} h"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------ engine-program pricing
def engine_calls(
    cfg: ViTConfig, keep_token: float, keep_attn: float, training: bool
) -> list[tuple[str, str, int, int | None, str]]:
    """The kernel calls of one image through the layer-wise trainer, as (name, kernel, tokens, keys,
    linear) for `trilevel.accel.lower.representative` (tokens incl. [CLS]; keys per query incl. [CLS],
    None: dense)."""
    calls: list[tuple[str, str, int, int | None, str]] = [
        ("patch_embed", "linear_fwd", cfg.num_patches, None, "patch_embed")
    ]
    shapes = block_shapes(cfg, keep_token, keep_attn)
    for b, s in enumerate(shapes):
        keys = s.keys_per_query if s.keys_per_query < s.tokens_attn else None
        calls.append((f"block{b}.attn", "attn_fwd", s.tokens_attn, keys, ""))
        if s.prune_to is not None and s.conn_keep is not None:
            calls.append((f"block{b}.topk_tokens", "topk_tokens", s.tokens_attn, s.prune_to + 1, ""))
            if s.conn_keep < s.prune_to:
                calls.append(
                    (f"block{b}.topk_connections", "topk_connections", s.prune_to + 1, s.conn_keep + 1, "")
                )
        calls.append((f"block{b}.mlp", "mlp_fwd", s.tokens_mlp, None, ""))
    calls += [("norm", "layernorm_fwd", 1, None, ""), ("head", "linear_fwd", 1, None, "head")]
    if training:
        calls += [("head.bwd", "linear_bwd", 1, None, "head"), ("norm.bwd", "layernorm_bwd", 1, None, "")]
        for b in reversed(range(cfg.depth)):
            s = shapes[b]
            keys = s.keys_per_query if s.keys_per_query < s.tokens_attn else None
            calls += [
                (f"block{b}.mlp.bwd", "mlp_bwd", s.tokens_mlp, None, ""),
                (f"block{b}.attn.bwd", "attn_bwd", s.tokens_attn, keys, ""),
            ]
        calls.append(("patch_embed.bwd", "linear_bwd", cfg.num_patches, None, "patch_embed"))
    return calls


def engine_projection(
    model: str | ViTConfig,
    keep_token: float = 1.0,
    keep_attn: float = 1.0,
    micro_batch: int = 1,
    engine: str = "auto",
    config_name: str = "zcu102",
) -> dict:
    """Milliseconds per image priced by the engine itself: every kernel call of the layer-wise trainer
    lowered for these shapes (trilevel.accel.lower) and run once on the C-sim engine (its modelled CYCLES
    counter) or the functional simulator (its estimate), at the configuration's clock. A projection, not a
    measurement; the optimizer (ARM cores) and host work between calls are not included."""
    from trilevel.accel import isa, lower
    from trilevel.accel.engine import measure_program

    cfg = get_config(model) if isinstance(model, str) else model
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    config = isa.CONFIGS[config_name]
    per_call, source = [], ""
    for name, kernel, tokens, keys, linear in engine_calls(cfg, keep_token, keep_attn, training=True):
        program = lower.representative(
            kernel, cfg, tokens, keys, micro_batch, config, linear or "patch_embed"
        )
        source, counters = measure_program(program, engine)
        per_call.append(
            {
                "name": name,
                "kernel": kernel,
                "tokens": tokens,
                "keys": keys,
                "cycles": counters["CYCLES"],
                "macs": counters["MACS"] - program.relays,
                "ddr_bytes": counters["DDR_RD_BYTES"] + counters["DDR_WR_BYTES"],
            }
        )
    ms = 1e3 / (config.clock_mhz * 1e6) / micro_batch
    forward = sum(c["cycles"] for c in per_call if not c["name"].endswith(".bwd"))
    total = sum(c["cycles"] for c in per_call)
    return {
        "model": cfg.name,
        "keep_token": keep_token,
        "keep_attn": keep_attn,
        "micro_batch": micro_batch,
        "config": config.name,
        "clock_mhz": config.clock_mhz,
        "counted_by": source,
        "inference_ms": forward * ms,
        "training_ms_per_image": total * ms,
        "macs_per_image": sum(c["macs"] for c in per_call) // micro_batch,
        "per_call": per_call,
    }


def format_engine_projection(p: dict) -> str:
    return (
        f"{p['model']} R_T={p['keep_token']} R_A={p['keep_attn']}, engine programs on the {p['config']} "
        f"build at {p['clock_mhz']:g} MHz, micro-batch {p['micro_batch']} ({p['counted_by']}; projection):\n"
        f"  inference {p['inference_ms']:.2f} ms/image, training fwd+bwd {p['training_ms_per_image']:.2f} "
        f"ms/image (optimizer on the ARM cores not included), {p['macs_per_image'] / 1e6:.0f} MMAC/image"
    )
