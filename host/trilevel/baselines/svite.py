"""SViTE / S²ViTE (Chen et al. 2021, "Chasing Sparsity in Vision Transformers"): sparse training under a
fixed parameter budget, and its learnable token selector.

* ``svite`` (unstructured): the Linear weights of every block (qkv, proj, fc1, fc2) hold exactly
  ``round(density * numel)`` nonzeros per layer, spread over the layers by the Erdos-Renyi rule
  (density proportional to (fan_in + fan_out) / (fan_in * fan_out), as SViTE's ERK init), at random
  positions. Every ``update_every`` iterations (until ``stop_fraction`` of training) each layer drops its
  ``rate * nonzeros`` active weights of smallest magnitude and grows as many of the weights inactive
  before the update, those with the largest gradient magnitude, initialized to 0; ``rate`` decays from
  ``prune_rate`` by a cosine.
* ``s2vite`` (structured): the unit is an attention head (its q, k, v rows of qkv; its proj columns then
  see a zero input): every block keeps ``round(density * heads)`` heads; prune by the heads' weight L1
  norm (qkv rows and proj columns), grow by their gradient L1 norm. MLPs stay dense.

The budget is kept exactly: a layer's count of active units never changes. Masked weights are zero
after every optimizer step and their gradients and AdamW moments are zeroed. With ``--keep-token < 1``
the learnable token selector (SViTE+) scores the embedded patches with a linear layer and keeps the
top ``keep_count(R_T, N)`` before the first block: training draws them by Gumbel top-k with
straight-through gradients (the kept tokens are scaled by the straight-through mask, 1 in value),
inference takes the top scores. The TA-selectors are not used.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from trilevel.baselines import forward
from trilevel.baselines.methods import TrainingMethod, linear_weights, own_selector_config, register_method
from trilevel.config import ViTConfig, keep_count
from trilevel.macs import MacCounter, count_model_macs
from trilevel.model import ForwardInfo, VisionTransformer
from trilevel.selectors import topk_indices


class TokenSelectorViT(VisionTransformer):
    """The golden model with SViTE's learnable token selector in front of the blocks."""

    def __init__(self, cfg: ViTConfig, **kwargs: Any) -> None:
        super().__init__(cfg, **kwargs)
        self.token_scorer = nn.Linear(cfg.embed_dim, 1)
        self.tau = 1.0

    def select_tokens(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Keep [CLS] and k patches of x [B, L, D]; returns (tokens, kept patch indices ascending)."""
        r = int(self.cfg.cls_token)
        patches = x[:, r:]
        logits = self.token_scorer(patches).squeeze(-1).float()
        if self.training:
            gumbel = -torch.empty_like(logits).exponential_().log()
            soft = ((logits + gumbel) / self.tau).softmax(dim=-1)
            idx = topk_indices(soft.detach(), k)
            hard = torch.zeros_like(soft).scatter_(1, idx, 1.0)
            patches = patches * (hard - soft.detach() + soft)[..., None].to(patches.dtype)
        else:
            idx = topk_indices(logits.detach(), k)
        kept = patches.gather(1, idx[..., None].expand(-1, -1, x.shape[2]))
        return torch.cat([x[:, :r], kept], dim=1), idx

    def forward(
        self, x: Tensor, keep_token: float = 1.0, keep_attn: float = 1.0, return_info: bool = False
    ) -> Tensor | tuple[Tensor, ForwardInfo]:
        cfg = self.cfg
        x = forward.embed(self, x)
        n = cfg.num_patches
        k = keep_count(keep_token, n)
        patch_ids = torch.arange(n, device=x.device).expand(x.shape[0], -1)
        if k < n:
            x, patch_ids = self.select_tokens(x, k)
        cls_attn_var = None
        last = cfg.depth - 1
        for i, block in enumerate(self.blocks):
            need_map = return_info and i == last
            h, attn_map = block.attn(block.norm1(x), None, int(cfg.cls_token), self.attn_impl, need_map)
            x = x + block.drop_path(h)
            if need_map:
                cls_attn_var = forward.attention_variance(attn_map, cfg.cls_token)
            x = x + block.drop_path(block.mlp(block.norm2(x)))
        logits = forward.classify(self, x)
        if not return_info:
            return logits
        length = x.shape[1]
        return logits, ForwardInfo(
            cls_attn_var, [length] * cfg.depth, [length] * cfg.depth, [patch_ids], [None]
        )


def erk_counts(shapes: dict[str, tuple[int, int]], density: float) -> dict[str, int]:
    """Nonzeros per [out, in] layer: Erdos-Renyi densities eps * (in + out) / (in * out), eps chosen so
    the total is exactly round(density * total) (layers that would exceed 1 are dense; integer counts
    by largest remainder)."""
    total = sum(o * i for o, i in shapes.values())
    budget = round(density * total)
    dense: set[str] = set()
    while True:
        free = {n: s for n, s in shapes.items() if n not in dense}
        left = budget - sum(o * i for n, (o, i) in shapes.items() if n in dense)
        raw = {n: (o + i) / (o * i) for n, (o, i) in free.items()}
        eps = left / sum(raw[n] * o * i for n, (o, i) in free.items())
        over = {n for n in free if eps * raw[n] > 1.0}
        if not over:
            break
        dense |= over
    exact = {n: eps * raw[n] * shapes[n][0] * shapes[n][1] for n in free}
    counts = {n: shapes[n][0] * shapes[n][1] for n in dense} | {n: math.floor(v) for n, v in exact.items()}
    for n in sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)[: budget - sum(counts.values())]:
        counts[n] += 1
    return counts


class _SparseMethod(TrainingMethod):
    """Shared machinery: masks over units of each layer, prune-and-grow, masking around the step."""

    structured = False

    def __init__(
        self,
        density: float = 0.5,
        update_every: int = 100,
        prune_rate: float = 0.5,
        stop_fraction: float = 0.8,
        seed: int = 0,
    ) -> None:
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        if update_every < 1 or not 0.0 <= prune_rate < 1.0 or not 0.0 <= stop_fraction <= 1.0:
            raise ValueError("need update_every >= 1, 0 <= prune_rate < 1, 0 <= stop_fraction <= 1")
        self.density, self.update_every, self.prune_rate = density, update_every, prune_rate
        self.stop_fraction, self.seed = stop_fraction, seed
        self.masks: dict[str, Tensor] = {}  # layer name -> bool mask over its units
        self.layers: dict[str, nn.Linear] = {}
        self.optimizer: torch.optim.Optimizer | None = None
        self.total_iters = 1
        self.updates = 0
        self.swapped_last = 0
        self._macs_cache: dict[tuple[int, bool], int] = {}

    # --- units: unstructured = every weight; structured = heads ------------------------------------
    def _unit_scores(self, name: str, values: dict[str, Tensor]) -> Tensor:
        """Per-unit magnitude of a [out, in] tensor per layer (weights or gradients)."""
        return values[name].abs()

    def _expand(self, name: str) -> dict[str, Tensor]:
        """Parameter name -> float mask of that parameter's shape, from the unit masks."""
        return {f"{name}.weight": self.masks[name].float()}

    def build_model(self, name: str, **kwargs: Any) -> VisionTransformer:
        cfg, model_args = own_selector_config(self.name, name, kwargs)
        return TokenSelectorViT(cfg, **model_args)

    def _initial_masks(self, model: VisionTransformer) -> dict[str, Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        shapes = {n: tuple(m.weight.shape) for n, m in self.layers.items()}
        counts = erk_counts(shapes, self.density)
        masks = {}
        for name, (rows, cols) in shapes.items():
            order = torch.randperm(rows * cols, generator=generator)[: counts[name]]
            masks[name] = (
                torch.zeros(rows * cols, dtype=torch.bool).index_fill_(0, order, True).view(rows, cols)
            )
        return masks

    def attach(self, model: VisionTransformer, optimizer: torch.optim.Optimizer, total_iters: int) -> None:
        self.layers = linear_weights(model)
        self.optimizer, self.total_iters = optimizer, max(1, total_iters)
        device = next(model.parameters()).device
        self.masks = {n: m.to(device) for n, m in self._initial_masks(model).items()}
        self._apply(model, weights=True)

    def active_units(self) -> int:
        return sum(int(m.sum()) for m in self.masks.values())

    def _params(self) -> dict[str, nn.Parameter]:
        params = {}
        for name, layer in self.layers.items():
            params[f"{name}.weight"] = layer.weight
            params[f"{name}.bias"] = layer.bias
        return params

    @torch.no_grad()
    def _apply(self, model: VisionTransformer, weights: bool = False, grads: bool = False) -> None:
        params = self._params()
        for name in self.masks:
            for pname, mask in self._expand(name).items():
                p = params[pname]
                if weights:
                    p.mul_(mask)
                if grads and p.grad is not None:
                    p.grad.mul_(mask)

    def rate_at(self, iteration: int) -> float:
        """Fraction of each layer's active units swapped at an update (cosine decay to 0)."""
        return self.prune_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, iteration / self.total_iters)))

    @torch.no_grad()
    def prune_and_grow(self, model: VisionTransformer, iteration: int) -> int:
        """One update from the current weights and gradients; returns the number of units swapped."""
        weights = {n: self._unit_weight(n) for n in self.masks}
        grads = {n: self._unit_grad(n) for n in self.masks}
        rate = self.rate_at(iteration)
        swapped = 0
        for name, mask in self.masks.items():
            active = int(mask.sum())
            count = min(math.floor(rate * active), mask.numel() - active)
            if count <= 0:
                continue
            flat = mask.view(-1)
            candidates = ~flat  # growth picks among units inactive before this update
            magnitude = self._unit_scores(name, weights).reshape(-1).float()
            prune = topk_indices(torch.where(flat, -magnitude, float("-inf")), count)
            growth = self._unit_scores(name, grads).reshape(-1).float()
            grow = topk_indices(torch.where(candidates, growth, float("-inf")), count)
            flat[prune] = False
            flat[grow] = True
            swapped += count
        self._reset_moments()
        self._apply(model, weights=True)
        self.updates += 1
        return swapped

    def _unit_weight(self, name: str) -> Tensor:
        return self.layers[name].weight

    def _unit_grad(self, name: str) -> Tensor:
        grad = self.layers[name].weight.grad
        return torch.zeros_like(self.layers[name].weight) if grad is None else grad

    def _reset_moments(self) -> None:
        """Zero the AdamW moments of masked entries (a grown weight starts with a clean history)."""
        if self.optimizer is None:
            return
        params = self._params()
        for name in self.masks:
            for pname, mask in self._expand(name).items():
                state = self.optimizer.state.get(params[pname], {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key].mul_(mask)

    def before_step(self, model: VisionTransformer, iteration: int) -> None:
        due = iteration > 0 and iteration % self.update_every == 0
        if due and iteration < self.stop_fraction * self.total_iters:
            self.swapped_last = self.prune_and_grow(model, iteration)
        self._apply(model, grads=True)

    def after_step(self, model: VisionTransformer, iteration: int) -> None:
        self._apply(model, weights=True)

    def layer_density(self) -> dict[str, float]:
        return {n: float(m.float().mean()) for n, m in self.masks.items()}

    def metrics(self) -> dict[str, Any]:
        total = sum(m.numel() for m in self.masks.values())
        return {
            "svite_structure": "head" if self.structured else "unstructured",
            "svite_active_units": self.active_units(),
            "svite_total_units": total,
            "svite_sparsity": 1.0 - self.active_units() / max(total, 1),
            "svite_updates": self.updates,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {n: m.cpu() for n, m in self.masks.items()}, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(iter(self.layers.values())).weight.device
        self.masks = {n: m.to(device=device, dtype=torch.bool) for n, m in state["masks"].items()}
        self.updates = int(state["updates"])

    def count_macs(self, counter: MacCounter, keep_token: float, keep_attn: float, train: bool) -> int:
        """Dense MACs at the selector's token count, minus the masked weights' (and heads') products."""
        cfg = counter.cfg
        tokens = keep_count(keep_token, cfg.num_patches) + int(cfg.cls_token)
        key = (tokens, train)
        if key not in self._macs_cache:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = TokenSelectorViT(cfg).eval()
            self._macs_cache[key] = count_model_macs(model, keep_token, 1.0, train=train)
        return self._macs_cache[key] - (3 if train else 1) * self.saved_forward_macs(tokens)

    def saved_forward_macs(self, tokens: int) -> int:
        zeros = sum(int((self._expand(n)[f"{n}.weight"] == 0).sum()) for n in self.masks)
        return zeros * tokens


@register_method("svite")
class SViTEMethod(_SparseMethod):
    """Unstructured sparse prune-and-grow (SViTE)."""


@register_method("s2vite")
class S2ViTEMethod(_SparseMethod):
    """Head-structured sparse prune-and-grow (S²ViTE): the unit is one attention head per block."""

    structured = True

    def _initial_masks(self, model: VisionTransformer) -> dict[str, Tensor]:
        self.heads = model.cfg.num_heads
        self.head_dim = model.cfg.head_dim
        self.layers = {n: m for n, m in self.layers.items() if n.endswith("attn.qkv")}
        keep = min(self.heads, max(1, round(self.density * self.heads)))
        generator = torch.Generator().manual_seed(self.seed)
        masks = {}
        for name in self.layers:
            chosen = torch.randperm(self.heads, generator=generator)[:keep]
            masks[name] = torch.zeros(self.heads, dtype=torch.bool).index_fill_(0, chosen, True)
        return masks

    def _proj(self, name: str) -> nn.Linear:
        return self.proj_layers[name]

    def attach(self, model: VisionTransformer, optimizer: torch.optim.Optimizer, total_iters: int) -> None:
        modules = dict(model.named_modules())
        self.proj_layers = {
            f"{n[: -len('qkv')]}qkv": modules[f"{n[: -len('qkv')]}proj"]
            for n in linear_weights(model)
            if n.endswith("attn.qkv")
        }
        super().attach(model, optimizer, total_iters)

    def _expand(self, name: str) -> dict[str, Tensor]:
        """A head's q, k, v rows of qkv (weights and bias). Its proj columns stay: they multiply the
        head's zero output, and leaving them unmasked lets a pruned head's v rows receive gradient."""
        heads = self.masks[name].float()
        per_row = heads.repeat_interleave(self.head_dim).repeat(3)  # qkv rows: q heads, k heads, v heads
        return {
            f"{name}.weight": per_row[:, None].expand_as(self.layers[name].weight),
            f"{name}.bias": per_row,
        }

    def _head_l1(self, qkv: Tensor, proj: Tensor) -> Tensor:
        rows = qkv.abs().sum(dim=1).view(3, self.heads, self.head_dim).sum(dim=(0, 2))
        return rows + proj.abs().sum(dim=0).view(self.heads, self.head_dim).sum(dim=1)

    def _unit_weight(self, name: str) -> Tensor:
        return self._head_l1(self.layers[name].weight, self._proj(name).weight)

    def _unit_grad(self, name: str) -> Tensor:
        qkv, proj = self.layers[name].weight, self._proj(name).weight
        zero = torch.zeros_like
        return self._head_l1(
            zero(qkv) if qkv.grad is None else qkv.grad, zero(proj) if proj.grad is None else proj.grad
        )

    def saved_forward_macs(self, tokens: int) -> int:
        pruned = sum(int((~m).sum()) for m in self.masks.values())
        dim = self.head_dim
        # Per pruned head: its qkv rows (3 d) and proj columns (d) times D inputs/outputs, and QK^T, PV.
        embed = next(iter(self.layers.values())).weight.shape[1]
        return pruned * (4 * dim * embed * tokens + 2 * tokens * tokens * dim)
