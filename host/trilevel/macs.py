"""MAC accounting by counting, not by formula: ``torch.utils.flop_counter.FlopCounterMode`` records every
matmul/conv the model really runs (MACs = FLOPs / 2), so the count reflects what each attention
implementation computes: ``attn_impl="gather"`` evaluates only the kept connections, ``"mask"`` computes
the dense scores and masks them (the official code's way, and the trainer's faster default), saving
nothing in attention.

Two figures therefore exist for a sparse run: the *algorithmic* MACs (gather: the work Tri-Level needs,
and what the accelerator executes), reported as ``macs_per_image``, and the *executed* MACs of the
implementation that ran (``macs_executed_per_image``; equal to the former for gather).

Element-wise work (softmax, LayerNorm, GELU) and the selectors' sorting are not MACs and not counted.
Training MACs are counted too (forward + backward of one image), so "training ~3x forward" is measured
(DeiT-T: 2.98x; the patch embedding needs no input gradient).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from tqdm import tqdm

from trilevel.config import TIMM_CONFIGS, TimmModelConfig, ViTConfig, get_config
from trilevel.model import build_model, token_plan
from trilevel.schedule import KeepRatioSchedule
from trilevel.userinput import bars_disabled

IMAGENET_TRAIN_IMAGES = 1_281_167


def _resolve(cfg: ViTConfig | str) -> ViTConfig:
    return get_config(cfg) if isinstance(cfg, str) else cfg


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *_, **__) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_shape, query_shape, key_shape, value_shape, *_, **__) -> int:
    # The four gradient products (dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q), twice the
    # forward's two; torch's formula for the GPU kernels adds the recomputed scores (a fifth).
    return 2 * sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode knows the GPU fused-attention kernels but not the CPU one that
# F.scaled_dot_product_attention dispatches to (attn_impl="mask"). Count it like the explicit softmax
# it replaces: a masked kernel computes every connection.
_EXTRA_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def _counted_macs(fn: Callable[[], torch.Tensor], train: bool) -> int:
    """MACs of the matmuls/convs ``fn`` runs (and, if ``train``, its backward), by FlopCounterMode."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    with torch.set_grad_enabled(train), counter:
        out = fn()
        if train:
            out.sum().backward()
    return counter.get_total_flops() // 2


def count_model_macs(model: torch.nn.Module, keep_token: float, keep_attn: float, train: bool = False) -> int:
    """Counted MACs of one whole forward (+ backward) pass of ``model`` on one random image."""
    cfg = model.cfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(1, cfg.in_chans, cfg.img_size, cfg.img_size)
        macs = _counted_macs(lambda: model(x, keep_token=keep_token, keep_attn=keep_attn), train)
    model.zero_grad(set_to_none=True)
    return macs


class MacCounter:
    """Counted MACs per image of one model config at any keep ratios.

    A ViT pass is the patch embedding, then per block an attention over ``n`` tokens with ``k`` keys
    per patch query and an MLP over the tokens the block's TA-selector kept, then the head. Each part
    is counted once per shape with FlopCounterMode on the model's own modules (the gather or mask
    attention, with input gradients when training, as inside the model) and cached; a sparsity plan
    (``trilevel.model.token_plan``) is the sum of its parts. That makes a whole training run's few
    hundred plans cheap to count; ``tests/test_macs.py`` checks the sum against whole-model counts.

    Counting runs a private CPU copy of the model inside ``torch.random.fork_rng``, so it never
    disturbs the caller's random streams (a resumed run stays identical to an uninterrupted one).
    """

    def __init__(self, cfg: ViTConfig | str, attn_impl: str = "gather", merged_tokens: int = 0) -> None:
        self.cfg = _resolve(cfg)
        self.attn_impl = attn_impl
        self.merged_tokens = merged_tokens  # the token policy's (EViT: 1), see token_plan
        self._parts: dict[tuple[Any, ...], int] = {}
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self._model = build_model(self.cfg, attn_impl=self.attn_impl).eval()
        return self._model

    def plan(self, keep_token: float, keep_attn: float) -> tuple[list[int], list[int]]:
        return token_plan(self.cfg, keep_token, keep_attn, self.merged_tokens)

    def count(self, keep_token: float = 1.0, keep_attn: float = 1.0, train: bool = False) -> int:
        """MACs for one image: forward only, or forward + backward (``train=True``)."""
        cfg = self.cfg
        tokens, keys = self.plan(keep_token, keep_attn)
        # Tokens leaving each block (its MLP runs on them): the next block's input, one block past the end.
        deeper = dataclasses.replace(cfg, depth=cfg.depth + 1)
        leaving = token_plan(deeper, keep_token, keep_attn, self.merged_tokens)[0][1:]
        total = self._part(("embed_head",), train)
        for n, k, m in zip(tokens, keys, leaving, strict=True):
            total += self._part(("attn", n, k), train) + self._part(("mlp", m), train)
        return total

    def _part(self, key: tuple[Any, ...], train: bool) -> int:
        if (key, train) not in self._parts:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self._parts[key, train] = _counted_macs(self._part_fn(key), train)
            self.model.zero_grad(set_to_none=True)
        return self._parts[key, train]

    def _part_fn(self, key: tuple[Any, ...]) -> Callable[[], torch.Tensor]:
        model, cfg = self.model, self.cfg
        dim, dense_rows = cfg.embed_dim, int(cfg.cls_token)
        if key[0] == "embed_head":
            image = torch.randn(1, cfg.in_chans, cfg.img_size, cfg.img_size)
            feature = torch.randn(1, dim, requires_grad=True)
            return lambda: model.patch_embed(image).sum() + model.head(feature).sum()
        if key[0] == "mlp":
            x = torch.randn(1, key[1], dim, requires_grad=True)
            return lambda: model.blocks[0].mlp(x)
        _, n, k = key
        x = torch.randn(1, n, dim, requires_grad=True)
        # Every sparse query row keeps k keys (the model's layout: [CLS] key first, then patch keys).
        conn = None if k == n else torch.arange(k).expand(1, n - dense_rows, k).contiguous()
        return lambda: model.blocks[0].attn(x, conn, dense_rows, self.attn_impl, False)[0]


class TimmMacCounter:
    """Counted MACs per image of a patched timm Swin/PiT (`trilevel.baselines.timm_models`) at any
    token keep ratio; the same ``count`` interface as `MacCounter`.

    These models prune with a keep mask, so what runs is the dense model (`count_dense`: the whole
    model counted by FlopCounterMode, at every ratio). The algorithmic count (`count`) skips the pruned
    tokens: FlopCounterMode counts the whole model and each stage's blocks (a stage's blocks share
    their shapes; the patch merging / pooling counted apart), split into the attention's batched
    matmuls and everything else (the linears); a block's linears scale with the kept share ``f`` of
    its tokens (`timm_token_plan`), its attention matmuls with ``f**2`` for PiT (kept queries x kept
    keys, exact) and with ``f`` for Swin (kept queries x at most their window: an upper bound). Patch
    embedding, merging, pooling, norms and head count in full. ``tests/test_timm_models.py`` checks
    a block's share against FlopCounterMode on that block alone.
    """

    def __init__(self, cfg: TimmModelConfig) -> None:
        self.cfg = cfg
        self._model: torch.nn.Module | None = None
        self._dense_tokens: list[int] = []
        self._parts: dict[bool, tuple[int, list[tuple[int, int]]]] = {}  # train: (fixed, per block)

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            from trilevel.baselines.timm_models import build_timm_model

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self._model = build_timm_model(self.cfg).eval()
                with torch.no_grad():
                    _, info = self._model(self._image(), return_info=True)
            self._dense_tokens = list(info.tokens_per_block)
        return self._model

    def _image(self) -> torch.Tensor:
        return torch.randn(1, self.cfg.in_chans, self.cfg.img_size, self.cfg.img_size)

    def plan(self, keep_token: float, keep_attn: float = 1.0) -> tuple[list[int], list[int]]:
        from trilevel.baselines.timm_models import timm_token_plan

        self.model  # noqa: B018  (counts the dense tokens per block)
        tokens = timm_token_plan(self._dense_tokens, self.cfg, keep_token)
        return tokens, tokens

    def count(self, keep_token: float = 1.0, keep_attn: float = 1.0, train: bool = False) -> int:
        """MACs for one image: forward only, or forward + backward (``train=True``)."""
        if keep_attn != 1.0:
            raise ValueError(f"{self.cfg.name}: attention-level pruning is not supported (keep_attn 1)")
        fixed, blocks = self._counted(train)
        tokens, _ = self.plan(keep_token)
        total = float(fixed)
        for (linear, attn), kept, dense in zip(blocks, tokens, self._dense_tokens, strict=True):
            share = kept / dense
            total += linear * share + attn * (share**2 if self.cfg.cls_token else share)
        return round(total)

    def count_dense(self, train: bool = False) -> int:
        """MACs the masked model executes for one image at any ratio: the dense model's."""
        fixed, blocks = self._counted(train)
        return fixed + sum(linear + attn for linear, attn in blocks)

    def _counted(self, train: bool) -> tuple[int, list[tuple[int, int]]]:
        if train not in self._parts:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                self._parts[train] = self._count_parts(train)
            self.model.zero_grad(set_to_none=True)
        return self._parts[train]

    def _count_parts(self, train: bool) -> tuple[int, list[tuple[int, int]]]:
        model, image = self.model, self._image()
        stages = list(model.layers if self.cfg.family == "swin" else model.transformers)
        inputs: list[Any] = []
        hooks = [s.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for s in stages]
        with torch.no_grad():
            model(image)
        for hook in hooks:
            hook.remove()
        total = sum(_op_macs(lambda: model(image), train).values())
        state = model._tl_state
        blocks: list[tuple[int, int]] = []
        for stage, x in zip(stages, inputs, strict=True):
            x = _requiring_grad(x)
            state.keep, state.keep_token = None, 1.0
            ops = _op_macs(lambda stage=stage, x=x: _summed(stage(x)), train)
            down = _downsample(stage, self.cfg.family, x)
            if down is not None:
                state.keep = None
                for op, macs in _op_macs(down, train).items():
                    ops[op] -= macs
            n = len(stage.blocks)
            attn = ops.pop("aten.bmm", 0)
            blocks += [(sum(ops.values()) // n, attn // n)] * n
        state.keep, state.tokens = None, []
        fixed = total - sum(linear + attn for linear, attn in blocks)
        return fixed, blocks


class _ExecutedTimmMacs:
    """`MacCounter`'s ``count`` interface for the MACs a patched timm model executes (dense)."""

    def __init__(self, counter: TimmMacCounter) -> None:
        self.counter = counter

    def count(self, keep_token: float = 1.0, keep_attn: float = 1.0, train: bool = False) -> int:
        return self.counter.count_dense(train)


def _downsample(stage: torch.nn.Module, family: str, x: Any) -> Callable[[], torch.Tensor] | None:
    """The stage's patch merging (Swin, on x) or pooling (PiT, on (grid, cls)) alone, if it has one."""
    if family == "swin":
        down = stage.downsample
        return None if isinstance(down, torch.nn.Identity) else lambda: _summed(down(x))
    return None if stage.pool is None else lambda: _summed(stage.pool(*x))


def _requiring_grad(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().requires_grad_()
    return type(x)(_requiring_grad(t) for t in x)


def _summed(out: Any) -> torch.Tensor:
    return out.sum() if isinstance(out, torch.Tensor) else sum(t.sum() for t in out)


def _op_macs(fn: Callable[[], torch.Tensor], train: bool) -> dict[str, int]:
    """MACs per aten op (name -> MACs) of ``fn`` (and, if ``train``, its backward), by FlopCounterMode.
    Grad mode stays on (FlopCounterMode's module tracker trips over PiT's [CLS] expanded under no_grad)."""
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    with counter:
        out = fn()
        if train:
            out.sum().backward()
    return {str(op): flops // 2 for op, flops in counter.get_flop_counts()["Global"].items()}


def mac_counters(model: torch.nn.Module, attn_impl: str) -> tuple[Any, Any]:
    """The trainer's (algorithmic, executed) MAC counters for ``model``: `MacCounter`s for the golden
    ViT (gather, and the attention implementation that runs), `TimmMacCounter`s for Swin/PiT."""
    if isinstance(model.cfg, TimmModelConfig):
        counter = TimmMacCounter(model.cfg)
        return counter, _ExecutedTimmMacs(counter)
    merged = model.token_policy.merged_tokens  # tokens a merging policy adds (EViT)
    counter = MacCounter(model.cfg, "gather", merged)
    return counter, counter if attn_impl == "gather" else MacCounter(model.cfg, attn_impl, merged)


@dataclass(frozen=True)
class RunPlan:
    """A training run for whole-run MAC accounting (epochs in the keep-ratio schedules' units)."""

    num_examples: int
    epochs: int
    batch_size: int
    keep_example: float = 1.0
    keep_token: float = 1.0
    keep_attn: float = 1.0
    keep_warmup_epochs: float | None = None  # default epochs / 30 (paper: 10 of 300)
    keep_decay_epochs: float | None = None  # default epochs / 3 (paper: 100 of 300)


def keep_schedule_iters(plan: RunPlan, iters_per_epoch: int) -> tuple[int, int]:
    """(warm-up, decay) iterations of the keep-ratio schedules."""
    warmup = plan.epochs / 30 if plan.keep_warmup_epochs is None else plan.keep_warmup_epochs
    decay = plan.epochs / 3 if plan.keep_decay_epochs is None else plan.keep_decay_epochs
    return round(warmup * iters_per_epoch), round(decay * iters_per_epoch)


def run_macs(counter: MacCounter, plan: RunPlan, progress: bool = True) -> dict[str, Any]:
    """Whole-run training MACs, dense vs Tri-Level, iteration by iteration: the example level shrinks
    every epoch to round(r_e * |D|) images; token and attention ratios follow their schedules."""
    if plan.epochs < 1 or plan.batch_size < 1 or plan.num_examples < 1:
        raise ValueError(f"epochs, batch_size and num_examples must be >= 1: {plan}")
    active = max(1, round(plan.keep_example * plan.num_examples))
    iters = math.ceil(active / plan.batch_size)
    last_batch = active - (iters - 1) * plan.batch_size
    warmup, decay = keep_schedule_iters(plan, iters)
    token_schedule = KeepRatioSchedule(plan.keep_token, warmup, decay)
    attn_schedule = KeepRatioSchedule(plan.keep_attn, warmup, decay)
    # Images trained under each distinct sparsity plan (the schedules change it only at a few hundred
    # iterations), then one counted forward + backward per plan.
    images_per_plan: dict[tuple[Any, ...], list[Any]] = {}
    for it in range(plan.epochs * iters):
        images = last_batch if it % iters == iters - 1 else plan.batch_size
        keep_token, keep_attn = token_schedule(it), attn_schedule(it)
        tokens, keys = counter.plan(keep_token, keep_attn)
        entry = images_per_plan.setdefault((tuple(tokens), tuple(keys)), [keep_token, keep_attn, 0])
        entry[2] += images
    entries = tqdm(
        images_per_plan.values(),
        desc="counting sparsity plans",
        leave=False,
        file=sys.stderr,
        disable=bars_disabled(progress) or len(images_per_plan) < 20,
    )
    sparse = sum(
        images * counter.count(keep_token, keep_attn, train=True) for keep_token, keep_attn, images in entries
    )
    dense = plan.epochs * plan.num_examples * counter.count(train=True)
    return {
        "num_examples": plan.num_examples,
        "active_examples": active,
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "keep_warmup_iters": warmup,
        "keep_decay_iters": decay,
        "dense_train_macs": dense,
        "trilevel_train_macs": sparse,
        "sparsity_plans": len(images_per_plan),
        "saving": 1.0 - sparse / dense,
    }


def macs_report(
    cfg: ViTConfig | str,
    keep_token: float,
    keep_attn: float,
    run: RunPlan | None = None,
) -> dict[str, Any]:
    """Dense vs sparse forward and training MACs per image (gather and mask), plus a whole run.
    Swin/PiT (a `TimmModelConfig` or its name): algorithmic vs executed (dense) MACs."""
    if isinstance(cfg, str) and cfg in TIMM_CONFIGS:
        cfg = TIMM_CONFIGS[cfg]
    if isinstance(cfg, TimmModelConfig):
        return _timm_macs_report(cfg, keep_token, keep_attn, run)
    cfg = _resolve(cfg)
    gather, mask = MacCounter(cfg, "gather"), MacCounter(cfg, "mask")
    tokens, keys = gather.plan(keep_token, keep_attn)
    report: dict[str, Any] = {
        "model": cfg.name,
        "img_size": cfg.img_size,
        "keep_token": keep_token,
        "keep_attn": keep_attn,
        "tokens_per_block": tokens,
        "keys_per_query": keys,
        "dense_forward_macs": gather.count(),
        "sparse_forward_macs": gather.count(keep_token, keep_attn),
        "mask_forward_macs": mask.count(keep_token, keep_attn),
        "mask_train_macs": mask.count(keep_token, keep_attn, train=True),
        "dense_train_macs": gather.count(train=True),
        "sparse_train_macs": gather.count(keep_token, keep_attn, train=True),
    }
    report["forward_saving"] = 1.0 - report["sparse_forward_macs"] / report["dense_forward_macs"]
    if run is not None:
        report["keep_example"] = run.keep_example
        report["run"] = run_macs(gather, run)
    return report


def _timm_macs_report(
    cfg: TimmModelConfig, keep_token: float, keep_attn: float, run: RunPlan | None
) -> dict[str, Any]:
    counter = TimmMacCounter(cfg)
    tokens, keys = counter.plan(keep_token, keep_attn)
    report: dict[str, Any] = {
        "model": cfg.name,
        "img_size": cfg.img_size,
        "keep_token": keep_token,
        "keep_attn": keep_attn,
        "keep_mask": True,  # pruning is a keep mask: "mask" figures are the dense MACs executed
        "tokens_per_block": tokens,
        "keys_per_query": keys,
        "dense_forward_macs": counter.count_dense(),
        "sparse_forward_macs": counter.count(keep_token, keep_attn),
        "mask_forward_macs": counter.count_dense(),
        "mask_train_macs": counter.count_dense(train=True),
        "dense_train_macs": counter.count_dense(train=True),
        "sparse_train_macs": counter.count(keep_token, keep_attn, train=True),
    }
    report["forward_saving"] = 1.0 - report["sparse_forward_macs"] / report["dense_forward_macs"]
    if run is not None:
        report["keep_example"] = run.keep_example
        report["run"] = run_macs(counter, run)  # type: ignore[arg-type]
    return report


def format_report(report: dict[str, Any]) -> str:
    g = 1e9
    lines = [
        f"model {report['model']} ({report['img_size']}px), MACs counted with FlopCounterMode (FLOPs / 2)",
        f"tokens per block {report['tokens_per_block']}, keys per patch query {report['keys_per_query']}",
        f"forward MACs/image  dense {report['dense_forward_macs'] / g:.4f} G, "
        f"R_T={report['keep_token']} R_A={report['keep_attn']}: {report['sparse_forward_macs'] / g:.4f} G "
        f"(-{report['forward_saving']:.1%})",
        f"  --attn-impl mask at the same ratios: {report['mask_forward_macs'] / g:.4f} G",
        f"training MACs/image (forward + backward)  dense {report['dense_train_macs'] / g:.4f} G, "
        f"sparse {report['sparse_train_macs'] / g:.4f} G (--attn-impl mask executes "
        f"{report['mask_train_macs'] / g:.4f} G)",
    ]
    if report.get("keep_mask"):  # Swin/PiT
        lines[1] = f"kept tokens per block (upper bound after merging/pooling) {report['tokens_per_block']}"
        lines[3] = f"  executed (keep mask, dense kernels): {report['mask_forward_macs'] / g:.4f} G"
        lines[4] = (
            f"training MACs/image (forward + backward)  dense {report['dense_train_macs'] / g:.4f} G, "
            f"sparse {report['sparse_train_macs'] / g:.4f} G"
        )
    if "run" in report:
        run = report["run"]
        lines.append(
            f"whole run: {run['epochs']} epochs x {run['num_examples']} examples, "
            f"r_e={report['keep_example']} "
            f"({run['active_examples']} active), batch {run['batch_size']}, keep-ratio warm-up "
            f"{run['keep_warmup_iters']} + decay {run['keep_decay_iters']} iterations"
        )
        lines.append(
            f"  training MACs dense {run['dense_train_macs'] / 1e15:.3f} P, Tri-Level "
            f"{run['trilevel_train_macs'] / 1e15:.3f} P (-{run['saving']:.1%})"
        )
    if report.get("keep_mask"):
        lines.append(
            "The sparse figures are algorithmic (pruned tokens skipped; docs/baselines.md): the patched timm "
            "model prunes with a keep mask and executes the dense MACs at every ratio."
        )
        return "\n".join(lines)
    lines.append(
        "The sparse figures are algorithmic: the gather implementation (and the accelerator) really skips "
        "the pruned tokens and connections. --attn-impl mask (the torch trainer's faster default) computes "
        "dense attention scores over the kept tokens and masks them, so it executes the mask MACs; "
        "training metrics report both (macs_per_image, macs_executed_per_image)."
    )
    return "\n".join(lines)
