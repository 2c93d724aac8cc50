"""Example-level remove-and-restore filter: subset size, pool, forgetting events, rounds, state."""

from __future__ import annotations

import numpy as np
import pytest

from trilevel.example_filter import ExampleFilter


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
    f = ExampleFilter(n, keep_ratio=0.8, period_epochs=2, remove_frac=0.05, seed=3)
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
