"""Pluggable selection policies for the TA-selector: which tokens survive, which attention connections stay.

The model asks a `TokenPolicy` for the kept patch tokens and an `AttentionPolicy` for each kept patch
query's kept patch keys. The paper's rules are the defaults (`ClsAttentionTokenPolicy`,
`TopKAttentionPolicy`); baselines register under a name and plug in without touching the model:

    @register_token_policy("my_rule")
    class MyRule(TokenPolicy):
        def select(self, scores, k): ...

    model = VisionTransformer(cfg, token_policy=make_token_policy("my_rule"))

Every policy returns indices in ascending order (docs/numerics.md section 1.4), so gathers keep the
tokens' original order; the model checks this.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import Tensor


def topk_indices(scores: Tensor, k: int) -> Tensor:
    """The contract's top-k (numerics.md 1.4) along the last dim: the k winners in ascending index order.

    Element i beats j iff s[i] > s[j], or s[i] == s[j] and i < j. A stable descending sort realizes
    exactly that order (torch.topk does not specify its tie order).
    """
    n = scores.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    if torch.compiler.is_exporting():
        # Lowered to ONNX TopK, whose spec also breaks ties by the lower index (stable sort has no
        # ONNX lowering); the data-dependent NaN check cannot be traced.
        return torch.topk(scores, k, dim=-1).indices.sort(dim=-1).values
    if scores.is_floating_point():
        has_nan = torch.isnan(scores).any()
        if scores.device.type != "cpu":  # a device-side assert: no host sync per selection
            torch._assert_async(~has_nan, "scores contain NaN")
        elif bool(has_nan):
            raise ValueError("scores contain NaN")
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    return order.sort(dim=-1).values


def token_scores(attn: Tensor, has_cls: bool) -> Tensor:
    """Paper's token importance from the head-mean attention map `attn` [B, L, L] -> [B, N] patch scores.

    With [CLS]: its attention row without the [CLS] entry. Without: column sums (attention received).
    """
    if attn.ndim != 3 or attn.shape[1] != attn.shape[2]:
        raise ValueError(f"attention map must be [B, L, L], got {tuple(attn.shape)}")
    return attn[:, 0, 1:] if has_cls else attn.sum(dim=1)


class TokenPolicy(ABC):
    """Chooses the patch tokens a TA-selector keeps."""

    name: ClassVar[str] = ""
    # Tokens `merge` appends after the kept patches whenever it drops some (MAC counting, token plans).
    merged_tokens: ClassVar[int] = 0

    def scores(self, attn: Tensor, has_cls: bool) -> Tensor:
        """Per-patch scores [B, N] from the head-mean attention map [B, L, L] (patch order)."""
        return token_scores(attn, has_cls)

    @abstractmethod
    def select(self, scores: Tensor, k: int) -> Tensor:
        """Return [B, k] patch indices (0-based among the N patches), ascending per row."""

    def merge(self, patches: Tensor, scores: Tensor, kept: Tensor) -> Tensor | None:
        """Tokens to append after the kept ones, [B, merged_tokens, D], built (with gradient) from all
        `patches` [B, N, D], their `scores` [B, N] and the `kept` indices [B, k]; called only when
        some patches are dropped. None (the default): a select-only policy."""
        return None


class AttentionPolicy(ABC):
    """Chooses, for each kept patch query, the patch keys it keeps attending to."""

    name: ClassVar[str] = ""
    # Which [B, M, K] map `select` ranks: "probs", the head-mean attention probabilities, or
    # "logit_magnitude", the head-mean |q.k| / sqrt(d_h) before the softmax.
    score_map: ClassVar[str] = "probs"

    @abstractmethod
    def select(self, attn: Tensor, k: int) -> Tensor:
        """`attn` [B, M, K]: head-mean attention of M patch queries over K patch keys, both in kept-set
        order. Return [B, M, k] key indices (0..K-1), ascending per row."""

    def select_at(self, attn: Tensor, k: int, positions: Tensor, grid: int) -> Tensor:
        """What the model calls: `select` plus where the kept tokens sit, `positions` [B, K] row-major
        indices into the `grid` x `grid` patch grid (-1 for merged tokens). Geometric rules override it."""
        return self.select(attn, k)


TOKEN_POLICIES: dict[str, type[TokenPolicy]] = {}
ATTENTION_POLICIES: dict[str, type[AttentionPolicy]] = {}

P = TypeVar("P")


def _registrar(registry: dict[str, type], name: str) -> Callable[[type[P]], type[P]]:
    def register(cls: type[P]) -> type[P]:
        if name in registry:
            raise ValueError(f"policy name {name!r} is already registered to {registry[name].__name__}")
        cls.name = name  # type: ignore[attr-defined]
        registry[name] = cls
        return cls

    return register


def register_token_policy(name: str) -> Callable[[type[P]], type[P]]:
    """Class decorator: make a TokenPolicy subclass constructible by `make_token_policy(name)`."""
    return _registrar(TOKEN_POLICIES, name)


def register_attention_policy(name: str) -> Callable[[type[P]], type[P]]:
    """Class decorator: make an AttentionPolicy subclass constructible by `make_attention_policy(name)`."""
    return _registrar(ATTENTION_POLICIES, name)


def _make(registry: dict[str, type], kind: str, spec, default: str, **kwargs):
    if spec is None:
        spec = default
    if not isinstance(spec, str):
        if kwargs:
            raise ValueError(f"keyword arguments given with an already built {kind} policy")
        return spec
    try:
        cls = registry[spec]
    except KeyError:
        raise ValueError(f"unknown {kind} policy {spec!r}; choose from {', '.join(registry)}") from None
    return cls(**kwargs)


def make_token_policy(spec: str | TokenPolicy | None = None, **kwargs) -> TokenPolicy:
    """A token policy by registered name (kwargs go to its constructor); None gives the paper's rule."""
    policy = _make(TOKEN_POLICIES, "token", spec, "cls_attention", **kwargs)
    if not isinstance(policy, TokenPolicy):
        raise TypeError(f"expected a TokenPolicy, got {type(policy).__name__}")
    return policy


def make_attention_policy(spec: str | AttentionPolicy | None = None, **kwargs) -> AttentionPolicy:
    """An attention policy by registered name (kwargs go to its constructor); None gives the paper's rule."""
    policy = _make(ATTENTION_POLICIES, "attention", spec, "topk", **kwargs)
    if not isinstance(policy, AttentionPolicy):
        raise TypeError(f"expected an AttentionPolicy, got {type(policy).__name__}")
    return policy


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Uniform [0, 1) noise drawn on the CPU (reproducible across devices for a seeded generator)."""
    return torch.rand(shape, generator=generator).to(device)


def _generator(seed: int | None) -> torch.Generator | None:
    return None if seed is None else torch.Generator().manual_seed(seed)


# --- token policies ---------------------------------------------------------------------------------


@register_token_policy("cls_attention")
class ClsAttentionTokenPolicy(TokenPolicy):
    """The paper's rule: the k patches the [CLS] token attends to most (column sums without [CLS])."""

    def select(self, scores: Tensor, k: int) -> Tensor:
        return topk_indices(scores, k)


@register_token_policy("random")
class RandomTokenPolicy(TokenPolicy):
    """Baseline: k patches uniformly at random, drawn afresh per example and call."""

    def __init__(self, seed: int | None = None) -> None:
        self.generator = _generator(seed)

    def select(self, scores: Tensor, k: int) -> Tensor:
        return topk_indices(_uniform(tuple(scores.shape), self.generator, scores.device), k)


@register_token_policy("static")
class StaticTokenPolicy(TokenPolicy):
    """Baseline (Table 3 "Static"): one fixed, data-independent subset per token count, the same for
    every example and iteration (a seeded random priority over the N positions)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def select(self, scores: Tensor, k: int) -> Tensor:
        batch, n = scores.shape
        priority = _uniform((n,), _generator(self.seed * 100003 + n), scores.device)
        return topk_indices(priority, k).expand(batch, k)


# --- attention policies -----------------------------------------------------------------------------


@register_attention_policy("topk")
class TopKAttentionPolicy(AttentionPolicy):
    """The paper's rule: each query keeps the k keys with the largest head-mean attention."""

    def select(self, attn: Tensor, k: int) -> Tensor:
        return topk_indices(attn, k)


@register_attention_policy("longformer")
class LongformerWindowAttentionPolicy(AttentionPolicy):
    """Baseline (Longformer-style sliding window): query i keeps the k keys nearest to it in the kept
    sequence, |i - j| smallest, the left neighbour first on equal distance. Data-independent."""

    def select(self, attn: Tensor, k: int) -> Tensor:
        batch, m, n = attn.shape
        if m != n:
            raise ValueError(f"a sliding window needs a square query x key map, got {m} x {n}")
        pos = torch.arange(n, device=attn.device)
        closeness = -(pos[:, None] - pos[None, :]).abs()
        return topk_indices(closeness, k).expand(batch, m, k)


@register_attention_policy("random")
class RandomAttentionPolicy(AttentionPolicy):
    """Baseline: each query keeps k keys uniformly at random."""

    def __init__(self, seed: int | None = None) -> None:
        self.generator = _generator(seed)

    def select(self, attn: Tensor, k: int) -> Tensor:
        return topk_indices(_uniform(tuple(attn.shape), self.generator, attn.device), k)
