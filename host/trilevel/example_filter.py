"""Example-level sparsity: the online remove-and-restore example filter of Tri-Level E-ViT.

Pure numpy (no torch) so the same code runs in the PyTorch trainer and on the board's ARM host.

Semantics (docs: paper section "Sparsity in Training Examples"):

* Start from a random subset of ``round(r_e * |D|)`` examples; the others form the removed pool.
* Every presentation of an example reports whether it was classified correctly and the variance of
  its [CLS] attention map. A *forgetting event* is "correct at its previous presentation, wrong now".
  Examples never classified correctly rank as the most forgotten (Toneva et al. 2018).
* Every ``P`` epochs, remove the first ``round(n * |D|)`` active examples in the order of the filter's
  ``ExamplePolicy`` and restore as many, chosen at random, from the pool removed *before* this round.
  The paper's policy (``forgetting``, the default) removes the least informative examples first:
  fewest forgetting events; ties: lower [CLS]-attention variance first, then lower index. The active
  subset size never changes. After ``ceil(m / n) + 1`` rounds (m = 1 - r_e: 10%/5% -> 3 rounds,
  20%/5% -> 5) the subset stays fixed.
* Statistics window (``window``): ``"round"`` (default, the official code) counts forgetting events,
  "never learned" and the variance over the presentations since the last round and starts afresh
  after each round; ``"run"`` counts over the whole run (which ranks examples restored late as less
  forgotten, simply because they had fewer presentations).
* Variance (``variance``): ``"mean"`` (default, the official ``main-cls.py``) ranks by the mean
  [CLS]-attention variance over the window's presentations; ``"last"`` by the latest presentation's.

Removal orders are pluggable like the token/attention rules of ``trilevel.selectors``:

    @register_example_policy("my_rule")
    class MyRule(ExamplePolicy):
        def removal_order(self, stats, rng): ...

    ExampleFilter(n, keep_ratio=0.9, policy="my_rule")

All random choices use the filter's own seeded ``numpy.random.Generator``; in data-parallel training
every rank feeds ``update`` the same all-gathered arrays, so every rank holds identical state.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

_NEVER_SEEN = -1
EXAMPLE_WINDOWS = ("round", "run")
EXAMPLE_VARIANCES = ("mean", "last")


@dataclass(frozen=True)
class CandidateStats:
    """The filter's statistics of the removal candidates; every array is aligned with ``indices``."""

    indices: np.ndarray  # example indices (the active subset, ascending)
    forgetting: np.ndarray  # forgetting events so far (int64)
    never_learned: np.ndarray  # never classified correctly (bool)
    cls_attn_var: np.ndarray  # [CLS]-attention variance, window mean or last presentation (float64)


class ExamplePolicy(ABC):
    """Chooses which active examples a remove-and-restore round removes.

    Baselines with another schedule (a two-phase filter, per-epoch weighted sampling) also override
    the optional hooks ``initialize``, ``end_epoch``, ``observe`` and the policy's own state.
    """

    name: ClassVar[str] = ""

    @abstractmethod
    def removal_order(self, stats: CandidateStats, rng: np.random.Generator) -> np.ndarray:
        """Return ``stats.indices`` reordered, first removed first. Random choices must use ``rng``
        (the filter's generator, checkpointed with it) so that runs and resumes are reproducible."""

    def initialize(self, example_filter: ExampleFilter) -> None:
        """Called once the filter has drawn its initial subset (it may change ``example_filter.active``)."""
        return None  # default: keep the random initial subset

    def end_epoch(self, example_filter: ExampleFilter, epoch: int) -> bool | None:
        """Replace the filter's remove-and-restore round after epoch ``epoch`` (0-based): return whether
        the active subset changed, or None (the default) for the round of the paper's schedule."""
        return None

    def observe(self, indices: np.ndarray, correct: np.ndarray, true_prob: np.ndarray | None) -> None:
        """One presentation of each of ``indices`` (unique), with the predicted probability of the true
        class when the trainer reports it."""
        return None  # default: the filter's own statistics suffice

    def state_dict(self) -> dict[str, Any]:
        """The policy's own statistics, saved in the filter's checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``."""
        return None  # default: no state of its own


EXAMPLE_POLICIES: dict[str, type[ExamplePolicy]] = {}
DEFAULT_EXAMPLE_POLICY = "forgetting"

E = TypeVar("E", bound=type[ExamplePolicy])


def register_example_policy(name: str) -> Callable[[E], E]:
    """Class decorator: make an ExamplePolicy subclass constructible by ``make_example_policy(name)``."""

    def register(cls: E) -> E:
        if name in EXAMPLE_POLICIES:
            raise ValueError(
                f"example policy name {name!r} is already registered to {EXAMPLE_POLICIES[name].__name__}"
            )
        cls.name = name
        EXAMPLE_POLICIES[name] = cls
        return cls

    return register


def make_example_policy(spec: str | ExamplePolicy | None = None, **kwargs: Any) -> ExamplePolicy:
    """An example policy by registered name (kwargs go to its constructor), an already built one, or
    None for the paper's rule."""
    if spec is None:
        spec = DEFAULT_EXAMPLE_POLICY
    if isinstance(spec, str):
        try:
            cls = EXAMPLE_POLICIES[spec]
        except KeyError:
            raise ValueError(
                f"unknown example policy {spec!r}; choose from {', '.join(EXAMPLE_POLICIES)}"
            ) from None
        return cls(**kwargs)
    if kwargs:
        raise ValueError("keyword arguments given with an already built example policy")
    if not isinstance(spec, ExamplePolicy):
        raise TypeError(f"expected an ExamplePolicy or a registered name, got {type(spec).__name__}")
    return spec


@register_example_policy("forgetting")
class ForgettingExamplePolicy(ExamplePolicy):
    """The paper's rule: least informative first (fewest forgetting events, never-learned examples
    ranking as the most forgotten; ties: lower [CLS]-attention variance, then lower index)."""

    def removal_order(self, stats: CandidateStats, rng: np.random.Generator) -> np.ndarray:
        # np.lexsort sorts by the last key first.
        order = np.lexsort((stats.indices, stats.cls_attn_var, stats.forgetting, stats.never_learned))
        return stats.indices[order]


@register_example_policy("random")
class RandomExamplePolicy(ExamplePolicy):
    """Table-3 baseline: remove uniformly at random among the active examples."""

    def removal_order(self, stats: CandidateStats, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(stats.indices)


class ExampleFilter:
    def __init__(
        self,
        num_examples: int,
        keep_ratio: float = 1.0,
        period_epochs: int = 30,
        remove_frac: float = 0.05,
        seed: int = 0,
        policy: str | ExamplePolicy | None = None,
        window: str = "round",
        variance: str = "mean",
    ) -> None:
        if window not in EXAMPLE_WINDOWS or variance not in EXAMPLE_VARIANCES:
            raise ValueError(
                f"window must be one of {EXAMPLE_WINDOWS} and variance one of {EXAMPLE_VARIANCES}, "
                f"got {window!r}, {variance!r}"
            )
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        if not 0.0 < keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio (r_e) must be in (0, 1], got {keep_ratio}")
        if period_epochs < 1:
            raise ValueError(f"period_epochs must be >= 1, got {period_epochs}")
        if not 0.0 <= remove_frac < 1.0:
            raise ValueError(f"remove_frac (n) must be in [0, 1), got {remove_frac}")
        self.num_examples = num_examples
        self.keep_ratio = keep_ratio
        self.period_epochs = period_epochs
        self.remove_frac = remove_frac
        self.window, self.variance = window, variance
        self.policy = make_example_policy(policy)
        self.num_active = max(1, round(keep_ratio * num_examples))
        self.remove_count = round(remove_frac * num_examples)
        pool_size = num_examples - self.num_active
        if 0 < pool_size < self.remove_count:
            raise ValueError(
                f"remove_frac {remove_frac} removes {self.remove_count} examples per round but only "
                f"{pool_size} are outside the active subset (keep_ratio {keep_ratio}); need n <= 1 - r_e"
            )
        self.enabled = pool_size > 0 and self.remove_count > 0
        # m/n + 1 rounds; the 1e-6 guards float noise such as 0.1 / 0.05 = 1.9999999999999998.
        self.max_rounds = math.ceil((1.0 - keep_ratio) / remove_frac - 1e-6) + 1 if self.enabled else 0

        self._rng = np.random.default_rng(seed)
        self.active = np.zeros(num_examples, dtype=bool)
        self.active[self._rng.choice(num_examples, size=self.num_active, replace=False)] = True
        self._reset_statistics()
        self.rounds_done = 0
        self.policy.initialize(self)

    # ------------------------------------------------------------------ statistics
    def _reset_statistics(self) -> None:
        n = self.num_examples
        self.last_correct = np.full(n, _NEVER_SEEN, dtype=np.int8)
        self.ever_correct = np.zeros(n, dtype=bool)
        self.forgetting = np.zeros(n, dtype=np.int64)
        self.cls_attn_var = np.zeros(n, dtype=np.float64)  # at the last presentation
        self.cls_attn_var_sum = np.zeros(n, dtype=np.float64)
        self.presentations = np.zeros(n, dtype=np.int64)

    def update(self, indices: Any, correct: Any, cls_attn_var: Any, true_prob: Any = None) -> None:
        """Record one presentation of each example in ``indices``.

        ``correct`` (bool), ``cls_attn_var`` (float) and the optional ``true_prob`` (predicted probability
        of the true class, for policies that use it) are aligned with ``indices``. If an index occurs
        more than once (e.g. the padding of a distributed sampler), only its first occurrence counts.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        ok = np.asarray(correct, dtype=bool).reshape(-1)
        var = np.asarray(cls_attn_var, dtype=np.float64).reshape(-1)
        if not idx.size == ok.size == var.size:
            raise ValueError(
                f"indices, correct, cls_attn_var differ in length: {idx.size}, {ok.size}, {var.size}"
            )
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.num_examples:
            raise ValueError(
                f"example indices must be in [0, {self.num_examples}), got {idx.min()}..{idx.max()}"
            )
        idx, first = np.unique(idx, return_index=True)
        ok, var = ok[first], var[first]
        prob = None if true_prob is None else np.asarray(true_prob, dtype=np.float64).reshape(-1)[first]
        self.policy.observe(idx, ok, prob)
        self.forgetting[idx] += (self.last_correct[idx] == 1) & ~ok
        self.last_correct[idx] = ok
        self.ever_correct[idx] |= ok
        self.cls_attn_var[idx] = var
        self.cls_attn_var_sum[idx] += var
        self.presentations[idx] += 1

    def ranking_variance(self, indices: np.ndarray) -> np.ndarray:
        """The [CLS]-attention variance rounds rank by: the window mean or the last presentation's
        (0 for examples not presented in the window)."""
        if self.variance == "last":
            return self.cls_attn_var[indices]
        count = self.presentations[indices]
        return np.divide(self.cls_attn_var_sum[indices], count, out=np.zeros(len(indices)), where=count > 0)

    @property
    def rng(self) -> np.random.Generator:
        """The filter's seeded generator (checkpointed): policies draw every random choice from it."""
        return self._rng

    @property
    def policy_name(self) -> str:
        """The policy's registered name (its class name if it was never registered)."""
        return self.policy.name or type(self.policy).__name__

    def removal_order(self, candidates: np.ndarray) -> np.ndarray:
        """``candidates`` (indices) in the policy's removal order, first removed first."""
        candidates = np.asarray(candidates, dtype=np.int64).reshape(-1)
        stats = CandidateStats(
            indices=candidates,
            forgetting=self.forgetting[candidates],
            never_learned=~self.ever_correct[candidates],
            cls_attn_var=self.ranking_variance(candidates),
        )
        order = np.asarray(self.policy.removal_order(stats, self._rng), dtype=np.int64)
        if order.shape != candidates.shape or not np.array_equal(np.sort(order), np.sort(candidates)):
            raise ValueError(f"policy {self.policy_name!r} must return a reordering of the candidates")
        return order

    def informativeness_order(self, candidates: np.ndarray) -> np.ndarray:
        """Alias of ``removal_order``; with the default policy, least to most informative."""
        return self.removal_order(candidates)

    # ------------------------------------------------------------------ remove and restore
    def end_epoch(self, epoch: int) -> bool:
        """Call after epoch ``epoch`` (0-based) finished; runs a remove-and-restore round after every
        ``period_epochs`` epochs while rounds are left. Returns whether the active subset changed."""
        if not self.enabled:
            return False
        custom = self.policy.end_epoch(self, epoch)
        if custom is not None:
            return custom
        if self.rounds_done >= self.max_rounds or (epoch + 1) % self.period_epochs:
            return False
        pool = np.flatnonzero(~self.active)  # removed before this round
        removed = self.removal_order(np.flatnonzero(self.active))[: self.remove_count]
        restored = self._rng.choice(pool, size=self.remove_count, replace=False)
        self.active[removed] = False
        self.active[restored] = True
        self.rounds_done += 1
        if self.window == "round":
            self._reset_statistics()
        return True

    def active_indices(self) -> np.ndarray:
        """Indices of the active training subset, ascending."""
        return np.flatnonzero(self.active)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "num_examples": self.num_examples,
            "keep_ratio": self.keep_ratio,
            "period_epochs": self.period_epochs,
            "remove_frac": self.remove_frac,
            "policy": self.policy_name,
            "window": self.window,
            "variance": self.variance,
            "active": self.active.copy(),
            "last_correct": self.last_correct.copy(),
            "ever_correct": self.ever_correct.copy(),
            "forgetting": self.forgetting.copy(),
            "cls_attn_var": self.cls_attn_var.copy(),
            "cls_attn_var_sum": self.cls_attn_var_sum.copy(),
            "presentations": self.presentations.copy(),
            "rounds_done": self.rounds_done,
            "rng": self._rng.bit_generator.state,
            "policy_state": self.policy.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``; arrays may come back as numpy arrays, torch tensors or lists."""
        for key in ("num_examples", "keep_ratio", "period_epochs", "remove_frac"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"example filter state has {key}={state[key]!r}, this filter {getattr(self, key)!r}"
                )
        policy = state.get("policy", DEFAULT_EXAMPLE_POLICY)  # older checkpoints: the paper's rule
        if policy != self.policy_name:
            raise ValueError(f"example filter state has policy={policy!r}, this filter {self.policy_name!r}")
        # Older checkpoints counted over the whole run and ranked by the last presentation's variance.
        then = (state.get("window", "run"), state.get("variance", "last"))
        if then != (self.window, self.variance):
            raise ValueError(
                f"example filter state has window={then[0]!r}, variance={then[1]!r}; this filter "
                f"{self.window!r}, {self.variance!r} (--example-window/--example-variance)"
            )
        arrays = {
            "active": bool,
            "last_correct": np.int8,
            "ever_correct": bool,
            "forgetting": np.int64,
            "cls_attn_var": np.float64,
            "cls_attn_var_sum": np.float64,
            "presentations": np.int64,
        }
        for key, dtype in arrays.items():
            if key not in state and key in ("cls_attn_var_sum", "presentations"):
                continue  # older checkpoints: no window sums (they rank by the last variance)
            value = np.array(state[key], dtype=dtype)
            if value.shape != (self.num_examples,):
                raise ValueError(
                    f"example filter state {key} has shape {value.shape}, want ({self.num_examples},)"
                )
            setattr(self, key, value)
        self.rounds_done = int(state["rounds_done"])
        self._rng.bit_generator.state = state["rng"]
        self.policy.load_state_dict(state.get("policy_state", {}))
