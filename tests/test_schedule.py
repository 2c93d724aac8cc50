"""Keep-ratio and learning-rate schedules: endpoints, shape, monotonicity, bad arguments."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from trilevel.schedule import KeepRatioSchedule, cosine_lr


def test_keep_ratio_endpoints_and_warmup() -> None:
    schedule = KeepRatioSchedule(0.7, warmup_iters=10, decay_iters=100)
    assert all(schedule(i) == 1.0 for i in range(11))  # warm-up, and the decay's first point
    assert schedule(110) == 0.7 and schedule(5000) == 0.7
    assert schedule(60) == pytest.approx(0.85)  # cosine midpoint
    assert schedule(35) == pytest.approx(0.7 + 0.3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert 0.7 < schedule(109) < 0.7 + 1e-3


def test_keep_ratio_is_monotone_and_bounded() -> None:
    schedule = KeepRatioSchedule(0.4, warmup_iters=3, decay_iters=37)
    values = [schedule(i) for i in range(60)]
    assert all(b <= a for a, b in pairwise(values))
    assert all(0.4 <= v <= 1.0 for v in values)
    assert len(set(values[3:41])) == 38  # strictly decreasing across the decay


def test_keep_ratio_degenerate_and_epoch_forms() -> None:
    assert KeepRatioSchedule(0.5)(0) == 0.5  # no warm-up, no decay: the target at once
    assert KeepRatioSchedule(0.5, warmup_iters=4)(3) == 1.0
    assert KeepRatioSchedule(0.5, warmup_iters=4)(4) == 0.5
    assert KeepRatioSchedule(1.0, 2, 8)(5) == 1.0
    assert KeepRatioSchedule.from_epochs(0.7, 10, 100, 50) == KeepRatioSchedule(0.7, 500, 5000)


@pytest.mark.parametrize("args", [(0.0, 1, 1), (1.2, 1, 1), (0.7, -1, 1), (0.7, 1, -2)])
def test_keep_ratio_rejects_bad_arguments(args: tuple) -> None:
    with pytest.raises(ValueError):
        KeepRatioSchedule(*args)


def test_keep_ratio_rejects_negative_iteration() -> None:
    with pytest.raises(ValueError, match="iteration"):
        KeepRatioSchedule(0.7, 1, 1)(-1)


def test_cosine_lr() -> None:
    lrs = [cosine_lr(i, 1e-3, total_iters=100, warmup_iters=10, min_lr=1e-5) for i in range(120)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warm-up
    assert all(b > a for a, b in pairwise(lrs[:10]))
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert all(b <= a for a, b in pairwise(lrs[10:]))
    assert lrs[100] == pytest.approx(1e-5) and lrs[119] == pytest.approx(1e-5)
    assert cosine_lr(0, 0.1, total_iters=10) == pytest.approx(0.1)


def test_cosine_lr_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        cosine_lr(0, 1e-3, total_iters=0)
    with pytest.raises(ValueError):
        cosine_lr(0, 1e-3, total_iters=10, warmup_iters=11)
    with pytest.raises(ValueError):
        cosine_lr(0, 1e-3, total_iters=10, min_lr=1e-2)
    with pytest.raises(ValueError):
        cosine_lr(-1, 1e-3, total_iters=10)
