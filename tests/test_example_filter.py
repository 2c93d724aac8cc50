"""Example-level remove-and-restore filter: subset size, pool, forgetting events, rounds, state, policies."""

from __future__ import annotations

import numpy as np
import pytest

from trilevel.example_filter import (
    EXAMPLE_POLICIES,
    CandidateStats,
    ExampleFilter,
    ExamplePolicy,
    make_example_policy,
    register_example_policy,
)


def _present_all(f: ExampleFilter, rng: np.random.Generator) -> None:
    idx = f.active_indices()
    f.update(idx, rng.random(idx.size) < 0.6, rng.random(idx.size))


def test_initial_subset_is_random_and_sized_by_round():
    f = ExampleFilter(1000, keep_ratio=0.8, period_epochs=1, remove_frac=0.05, seed=1)
    g = ExampleFilter(1000, keep_ratio=0.8, period_epochs=1, remove_frac=0.05, seed=2)
    assert f.active_indices().size == 800
    assert not np.array_equal(f.active_indices(), g.active_indices())
    assert ExampleFilter(1437, keep_ratio=0.9).active_indices().size == round(0.9 * 1437)


def test_forgetting_events_follow_the_definition():
    f = ExampleFilter(3, keep_ratio=1.0)
    # example 0: correct, wrong, correct, wrong -> 2 events; 1: wrong, correct, correct, wrong -> 1;
    # 2: never correct -> 0 events but never learned.
    seq = [[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]]
    for step in seq:
        f.update([0, 1, 2], np.array(step, dtype=bool), [0.0, 0.0, 0.0])
    assert f.forgetting.tolist() == [2, 1, 0]
    assert f.ever_correct.tolist() == [True, True, False]
    # Never learned ranks as most forgotten, i.e. most informative (last).
    assert f.informativeness_order(np.arange(3)).tolist() == [1, 0, 2]


def test_update_is_per_presentation_and_ignores_repeats_in_one_call():
    f = ExampleFilter(4, keep_ratio=1.0)
    f.update([2, 3], [True, True], [0.1, 0.2])
    # example 2 appears twice (sampler padding): only the first occurrence counts.
    f.update([2, 2, 3], [False, True, True], [0.5, 0.9, 0.2])
    assert f.forgetting.tolist() == [0, 0, 1, 0]
    assert f.cls_attn_var[2] == 0.5
    # Unseen examples are untouched.
    assert f.last_correct[:2].tolist() == [-1, -1]
    with pytest.raises(ValueError, match="indices must be"):
        f.update([4], [True], [0.0])
    with pytest.raises(ValueError, match="differ in length"):
        f.update([0, 1], [True], [0.0])


def test_ties_broken_by_cls_variance_then_index():
    f = ExampleFilter(5, keep_ratio=1.0)
    f.update(np.arange(5), np.ones(5, bool), [0.3, 0.1, 0.3, 0.2, 0.1])
    assert f.informativeness_order(np.arange(5)).tolist() == [1, 4, 3, 0, 2]


def test_remove_restore_keeps_size_and_restores_only_from_removed_pool():
    n = 200
    whole_run_last = {"window": "run", "variance": "last"}  # the ranking below uses these statistics
    f = ExampleFilter(n, keep_ratio=0.8, period_epochs=2, remove_frac=0.05, seed=3, **whole_run_last)
    rng = np.random.default_rng(0)
    for epoch in range(40):
        before = f.active.copy()
        _present_all(f, rng)
        # The least informative active examples, computed independently of end_epoch.
        act = np.flatnonzero(before)

        def rank(i: int) -> tuple:
            return (not f.ever_correct[i], f.forgetting[i], f.cls_attn_var[i], i)

        expect_removed = sorted(act.tolist(), key=rank)[:10]
        changed = f.end_epoch(epoch)
        assert f.active.sum() == 160
        if changed:
            removed = np.flatnonzero(before & ~f.active)
            restored = np.flatnonzero(~before & f.active)
            assert removed.tolist() == sorted(expect_removed)
            assert restored.size == 10
            assert not before[restored].any()  # from the pool removed before this round
        else:
            assert np.array_equal(before, f.active)
    # m/n + 1 = 0.2/0.05 + 1 = 5 rounds, at the end of epochs 2, 4, ..., 10.
    assert f.rounds_done == 5


@pytest.mark.parametrize(
    ("keep", "frac", "rounds"), [(0.9, 0.05, 3), (0.8, 0.05, 5), (0.7, 0.1, 4), (1.0, 0.05, 0)]
)
def test_round_count(keep, frac, rounds):
    f = ExampleFilter(1000, keep_ratio=keep, period_epochs=1, remove_frac=frac, seed=0)
    assert f.max_rounds == rounds
    rng = np.random.default_rng(1)
    changes = 0
    for epoch in range(12):
        _present_all(f, rng)
        changes += f.end_epoch(epoch)
    assert changes == rounds == f.rounds_done


def test_disabled_filter_keeps_everything():
    f = ExampleFilter(50, keep_ratio=1.0, period_epochs=1)
    assert not f.enabled
    assert f.active_indices().tolist() == list(range(50))
    assert not f.end_epoch(0)


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(5)
    a = ExampleFilter(300, keep_ratio=0.9, period_epochs=1, remove_frac=0.05, seed=7)
    for epoch in range(1):
        _present_all(a, rng)
        a.end_epoch(epoch)
    b = ExampleFilter(300, keep_ratio=0.9, period_epochs=1, remove_frac=0.05, seed=99)
    b.load_state_dict(a.state_dict())
    for epoch in range(1, 4):
        idx = a.active_indices()
        correct, var = rng.random(idx.size) < 0.5, rng.random(idx.size)
        for f in (a, b):
            f.update(idx, correct, var)
            f.end_epoch(epoch)
        assert np.array_equal(a.active, b.active)
    assert np.array_equal(a.forgetting, b.forgetting) and a.rounds_done == b.rounds_done == 3
    with pytest.raises(ValueError, match="keep_ratio"):
        ExampleFilter(300, keep_ratio=0.8, period_epochs=1, remove_frac=0.05).load_state_dict(a.state_dict())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="n <= 1 - r_e"):
        ExampleFilter(100, keep_ratio=0.95, remove_frac=0.1)
    with pytest.raises(ValueError, match="keep_ratio"):
        ExampleFilter(100, keep_ratio=0.0)
    with pytest.raises(ValueError, match="period_epochs"):
        ExampleFilter(100, keep_ratio=0.9, period_epochs=0)


# ---------------------------------------------------------------------------------------- policies


def _paper_rule_run(n: int, keep: float, frac: float, period: int, seed: int, epochs: int,
                    stats_seed: int, window: str = "round", variance: str = "mean") -> list[np.ndarray]:
    """The active subset after every epoch, by the paper's rule written out independently of the filter
    (same generator calls: the initial subset, then one restore draw per round). window "round": the
    statistics start afresh after every round (the official main-cls.py); variance "mean": ties rank
    by the mean variance over the window (official), "last": by the latest presentation's."""
    rng, stats = np.random.default_rng(seed), np.random.default_rng(stats_seed)
    num_active, remove = max(1, round(keep * n)), round(frac * n)
    rounds = int(np.ceil((1 - keep) / frac - 1e-6)) + 1
    active = np.zeros(n, bool)
    active[rng.choice(n, size=num_active, replace=False)] = True
    last = np.full(n, -1)
    ever, forgetting, var = np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n)
    var_sum, count = np.zeros(n), np.zeros(n)
    history, done = [], 0
    for epoch in range(epochs):
        idx = np.flatnonzero(active)
        ok, v = stats.random(idx.size) < 0.6, stats.random(idx.size)
        forgetting[idx] += (last[idx] == 1) & ~ok
        last[idx], var[idx] = ok, v
        var_sum[idx] += v
        count[idx] += 1
        ever[idx] |= ok
        if done < rounds and (epoch + 1) % period == 0:
            pool = np.flatnonzero(~active)
            rank_var = var if variance == "last" else var_sum / np.maximum(count, 1)
            ranked = sorted(idx.tolist(), key=lambda i: (not ever[i], forgetting[i], rank_var[i], i))
            restored = rng.choice(pool, size=remove, replace=False)
            active[ranked[:remove]] = False
            active[restored] = True
            done += 1
            if window == "round":
                last[:], ever[:], forgetting[:], var[:], var_sum[:], count[:] = -1, False, 0, 0.0, 0.0, 0
        history.append(active.copy())
    return history


@pytest.mark.parametrize(
    ("policy", "window", "variance"),
    [(None, None, None), ("forgetting", "round", "mean"), (None, "run", "last"), (None, "round", "last")],
)
def test_default_policy_reproduces_the_paper_rule_exactly(policy, window, variance):
    modes = {k: v for k, v in (("window", window), ("variance", variance)) if v is not None}
    expect = _paper_rule_run(400, 0.8, 0.05, 3, seed=11, epochs=20, stats_seed=4, **modes)
    f = ExampleFilter(400, keep_ratio=0.8, period_epochs=3, remove_frac=0.05, seed=11, policy=policy, **modes)
    assert f.policy_name == "forgetting"
    stats = np.random.default_rng(4)
    for epoch, want in enumerate(expect):
        _present_all(f, stats)
        f.end_epoch(epoch)
        assert np.array_equal(f.active, want), epoch
    assert f.rounds_done == 5


def _run_rounds(f: ExampleFilter, epochs: int, stats_seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(removed, restored) of every round, checking the subset size and the pool on the way."""
    stats, rounds = np.random.default_rng(stats_seed), []
    for epoch in range(epochs):
        before = f.active.copy()
        _present_all(f, stats)
        if f.end_epoch(epoch):
            removed, restored = np.flatnonzero(before & ~f.active), np.flatnonzero(~before & f.active)
            assert removed.size == restored.size == f.remove_count
            assert not before[restored].any()  # restored only from the pool removed before this round
            rounds.append((removed, restored))
        else:
            assert np.array_equal(before, f.active)
        assert f.active.sum() == f.num_active
    return rounds


def test_random_policy_keeps_the_invariants_and_ignores_the_statistics():
    kwargs = dict(keep_ratio=0.8, period_epochs=1, remove_frac=0.05, seed=5)
    rand = ExampleFilter(600, policy="random", **kwargs)
    paper = ExampleFilter(600, **kwargs)
    assert np.array_equal(rand.active, paper.active)  # same initial subset for the same seed
    rand_rounds, paper_rounds = _run_rounds(rand, 8), _run_rounds(paper, 8)
    assert len(rand_rounds) == len(paper_rounds) == rand.rounds_done == rand.max_rounds == 5
    assert not np.array_equal(rand_rounds[0][0], paper_rounds[0][0])
    # The paper's rule removes the examples with the fewest forgetting events; random does not care.
    assert any(rand.forgetting[removed].max() > 0 for removed, _ in rand_rounds)
    # Reproducible: a second filter with the same seed and statistics makes the same choices.
    again = _run_rounds(ExampleFilter(600, policy="random", **kwargs), 8)
    as_lists = [[(out.tolist(), back.tolist()) for out, back in r] for r in (again, rand_rounds)]
    assert as_lists[0] == as_lists[1]


@pytest.fixture
def most_forgotten_first():
    @register_example_policy("test_most_forgotten_first")
    class MostForgottenFirst(ExamplePolicy):
        def removal_order(self, stats: CandidateStats, rng: np.random.Generator) -> np.ndarray:
            return stats.indices[np.lexsort((stats.indices, -stats.forgetting))]

    yield MostForgottenFirst
    del EXAMPLE_POLICIES["test_most_forgotten_first"]


def test_custom_policy_plugs_in_by_name_and_instance(most_forgotten_first):
    for policy in ("test_most_forgotten_first", most_forgotten_first()):
        f = ExampleFilter(10, keep_ratio=0.8, period_epochs=1, remove_frac=0.2, seed=0, policy=policy)
        assert f.policy_name == "test_most_forgotten_first"
        active = f.active_indices()
        # active[i] is learned and forgotten i + 1 times; the two most forgotten go.
        for first in range(len(active)):
            rest = active[first:]
            f.update(rest, np.ones(rest.size, bool), np.zeros(rest.size))
            f.update(rest, np.zeros(rest.size, bool), np.zeros(rest.size))
        assert f.forgetting[active].tolist() == list(range(1, len(active) + 1))
        assert f.end_epoch(0)
        assert np.flatnonzero(~f.active & np.isin(np.arange(10), active)).tolist() == sorted(active[-2:])
    with pytest.raises(ValueError, match="already registered"):
        register_example_policy("test_most_forgotten_first")(most_forgotten_first)


def test_policy_errors_are_clear():
    with pytest.raises(ValueError, match=r"unknown example policy 'nope'; choose from .*forgetting.*random"):
        ExampleFilter(100, keep_ratio=0.9, policy="nope")
    with pytest.raises(TypeError, match="ExamplePolicy"):
        make_example_policy(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keyword arguments"):
        make_example_policy(make_example_policy("random"), seed=1)

    class DropsCandidates(ExamplePolicy):
        def removal_order(self, stats: CandidateStats, rng: np.random.Generator) -> np.ndarray:
            return stats.indices[:1]

    f = ExampleFilter(100, keep_ratio=0.9, period_epochs=1, policy=DropsCandidates())
    with pytest.raises(ValueError, match="'DropsCandidates' must return a reordering"):
        f.end_epoch(0)


def test_state_round_trips_with_the_policy_name():
    kwargs = dict(keep_ratio=0.9, period_epochs=1, remove_frac=0.05)
    a = ExampleFilter(300, seed=7, policy="random", **kwargs)
    _run_rounds(a, 1)
    state = a.state_dict()
    assert state["policy"] == "random"
    b = ExampleFilter(300, seed=99, policy="random", **kwargs)
    b.load_state_dict(state)
    assert [r[0].tolist() for r in _run_rounds(a, 3, 1)] == [r[0].tolist() for r in _run_rounds(b, 3, 1)]
    assert np.array_equal(a.active, b.active)
    with pytest.raises(ValueError, match="policy='random'"):
        ExampleFilter(300, **kwargs).load_state_dict(state)
    # Checkpoints from before policies existed hold no name: they were made by the paper's rule.
    old = ExampleFilter(300, seed=7, **kwargs).state_dict()
    del old["policy"]
    ExampleFilter(300, **kwargs).load_state_dict(old)
    with pytest.raises(ValueError, match="policy='forgetting'"):
        ExampleFilter(300, policy="random", **kwargs).load_state_dict(old)


def test_window_and_variance_modes_each_change_the_removals():
    finals = [
        _paper_rule_run(400, 0.8, 0.05, 3, seed=11, epochs=20, stats_seed=4, window=w, variance=v)[-1]
        for w, v in (("round", "mean"), ("run", "mean"), ("round", "last"), ("run", "last"))
    ]
    for i in range(len(finals)):
        for j in range(i):
            assert not np.array_equal(finals[i], finals[j]), (i, j)


def test_round_window_starts_the_statistics_afresh_and_mean_variance_ranks():
    f = ExampleFilter(40, keep_ratio=0.5, period_epochs=2, remove_frac=0.1, seed=0)
    g = ExampleFilter(40, keep_ratio=0.5, period_epochs=2, remove_frac=0.1, seed=0, window="run")
    for flt in (f, g):
        idx = flt.active_indices()
        for ok in (True, False):
            flt.update(idx, np.full(idx.size, ok), np.full(idx.size, 0.5))
        assert flt.forgetting[idx].tolist() == [1] * idx.size
        assert flt.end_epoch(1)
    assert not f.forgetting.any() and not f.presentations.any() and not f.ever_correct.any()
    assert g.forgetting.sum() == 20 and g.presentations.sum() == 40
    # Mean over the window vs the last presentation: example 0 had 0.9 then 0.1 (mean 0.5), example 1
    # 0.3 twice; "mean" removes 1 first (0.3 < 0.5), "last" removes 0 first (0.1 < 0.3).
    orders = {}
    for variance in ("mean", "last"):
        h = ExampleFilter(2, keep_ratio=1.0, variance=variance)
        h.update([0, 1], [True, True], [0.9, 0.3])
        h.update([0, 1], [True, True], [0.1, 0.3])
        orders[variance] = h.removal_order(np.arange(2)).tolist()
    assert orders == {"mean": [1, 0], "last": [0, 1]}


def test_older_states_resume_only_with_the_whole_run_window():
    legacy = {"keep_ratio": 0.8, "period_epochs": 1, "remove_frac": 0.1, "seed": 2, "window": "run",
              "variance": "last"}
    f = ExampleFilter(50, **legacy)
    _present_all(f, np.random.default_rng(1))
    old = f.state_dict()
    for key in ("window", "variance", "cls_attn_var_sum", "presentations"):
        del old[key]
    same = ExampleFilter(50, **legacy)
    same.load_state_dict(old)
    assert np.array_equal(same.forgetting, f.forgetting)
    with pytest.raises(ValueError, match="window='run'"):
        ExampleFilter(50, keep_ratio=0.8, period_epochs=1, remove_frac=0.1, seed=2).load_state_dict(old)
    with pytest.raises(ValueError, match="window must be one of"):
        ExampleFilter(50, window="epoch")
