"""Example-level baselines of the paper's Table 3, as `ExamplePolicy`s of the example filter.

* ``active_bias`` (Chang et al. 2017, SGD-SPV): after a uniform burn-in, every epoch draws the active
  subset anew, without replacement, with probabilities proportional to the estimated standard deviation
  of each example's predicted true-class probability plus a smoothing constant.
* ``two_phase`` (Toneva et al. 2018): phase 1 trains on the whole training set and counts forgetting
  events; at its end the examples forgotten least are removed once, for good (phase 2).

Both keep the filter's subset size ``round(r_e |D|)`` in the epochs where they prune, so they compare
with the paper's filter at the same keep ratio. Exact rules: docs/baselines.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trilevel.example_filter import (
    CandidateStats,
    ExampleFilter,
    ExamplePolicy,
    register_example_policy,
)


def active_bias_std(count: np.ndarray, mean: np.ndarray, mean_sq: np.ndarray) -> np.ndarray:
    """Chang et al.'s estimate sqrt(var + var^2 / (|H| - 1)) of the prediction's standard deviation from
    a history of |H| = ``count`` probabilities with the given mean and mean square (var: population
    variance of the history). Needs count >= 2; other entries are NaN."""
    count = np.asarray(count, dtype=np.float64)
    var = np.maximum(np.asarray(mean_sq) - np.asarray(mean) ** 2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(var + var**2 / (count - 1))
    return np.where(count >= 2, std, np.nan)


@register_example_policy("active_bias")
class ActiveBiasExamplePolicy(ExamplePolicy):
    """Active Bias (SGD-SPV): P(i) proportional to std_hat_i + eps; see `sampling_probabilities`.

    ``burn_in_epochs`` (default: the filter's period P) keep the filter's uniform random initial subset.
    Examples with fewer than two recorded probabilities get the largest estimate of the others, so
    unseen examples are explored first (uniform while nobody has two)."""

    def __init__(self, eps: float = 0.05, burn_in_epochs: int | None = None) -> None:
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = eps
        self.burn_in_epochs = burn_in_epochs
        self.count = np.zeros(0, dtype=np.int64)
        self.prob_sum = np.zeros(0, dtype=np.float64)
        self.prob_sq_sum = np.zeros(0, dtype=np.float64)

    def initialize(self, example_filter: ExampleFilter) -> None:
        n = example_filter.num_examples
        self.count = np.zeros(n, dtype=np.int64)
        self.prob_sum = np.zeros(n, dtype=np.float64)
        self.prob_sq_sum = np.zeros(n, dtype=np.float64)

    def observe(self, indices: np.ndarray, correct: np.ndarray, true_prob: np.ndarray | None) -> None:
        if true_prob is None:
            raise ValueError("active_bias needs the true-class probabilities (torch backend)")
        self.count[indices] += 1
        self.prob_sum[indices] += true_prob
        self.prob_sq_sum[indices] += true_prob**2

    def sampling_probabilities(self) -> np.ndarray:
        """P(i) = (std_hat_i + eps) / sum_j (std_hat_j + eps) over the whole training set."""
        seen = self.count >= 2
        count = np.maximum(self.count, 1)
        std = active_bias_std(self.count, self.prob_sum / count, self.prob_sq_sum / count)
        std = np.where(seen, std, np.nanmax(std) if seen.any() else 0.0)
        weight = std + self.eps
        return weight / weight.sum()

    def end_epoch(self, example_filter: ExampleFilter, epoch: int) -> bool:
        burn_in = example_filter.period_epochs if self.burn_in_epochs is None else self.burn_in_epochs
        if epoch + 1 < burn_in:
            return False
        drawn = example_filter.rng.choice(
            example_filter.num_examples,
            size=example_filter.num_active,
            replace=False,
            p=self.sampling_probabilities(),
        )
        example_filter.active[:] = False
        example_filter.active[drawn] = True
        example_filter.rounds_done += 1
        return True

    def removal_order(self, stats: CandidateStats, rng: np.random.Generator) -> np.ndarray:
        """Lowest sampling probability first (used only if a caller asks for an order)."""
        probs = self.sampling_probabilities()[stats.indices]
        return stats.indices[np.lexsort((stats.indices, probs))]

    def state_dict(self) -> dict[str, Any]:
        return {
            "count": self.count.copy(),
            "prob_sum": self.prob_sum.copy(),
            "prob_sq_sum": self.prob_sq_sum.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = np.array(state["count"], dtype=np.int64)
        self.prob_sum = np.array(state["prob_sum"], dtype=np.float64)
        self.prob_sq_sum = np.array(state["prob_sq_sum"], dtype=np.float64)


@register_example_policy("two_phase")
class TwoPhaseForgettingExamplePolicy(ExamplePolicy):
    """Toneva et al.: every example is active for the first P epochs (phase 1, nothing removed); after
    epoch P the ``|D| - round(r_e |D|)`` examples with the fewest forgetting events (never-learned ones
    count as forgotten most; ties in random order) leave for good and nothing is restored."""

    def initialize(self, example_filter: ExampleFilter) -> None:
        example_filter.active[:] = True

    def removal_order(self, stats: CandidateStats, rng: np.random.Generator) -> np.ndarray:
        tie_break = rng.permutation(len(stats.indices))
        order = np.lexsort((tie_break, stats.forgetting, stats.never_learned))
        return stats.indices[order]

    def end_epoch(self, example_filter: ExampleFilter, epoch: int) -> bool:
        if example_filter.rounds_done or epoch + 1 < example_filter.period_epochs:
            return False
        surplus = example_filter.num_examples - example_filter.num_active
        removed = example_filter.removal_order(example_filter.active_indices())[:surplus]
        example_filter.active[removed] = False
        example_filter.rounds_done = 1
        return True
