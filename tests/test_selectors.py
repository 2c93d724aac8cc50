"""Selection policies against brute-force references of the contract's top-k rule (numerics.md 1.4)."""

from __future__ import annotations

import pytest
import torch

from trilevel.selectors import (
    ATTENTION_POLICIES,
    TOKEN_POLICIES,
    AttentionPolicy,
    ClsAttentionTokenPolicy,
    LongformerWindowAttentionPolicy,
    RandomAttentionPolicy,
    RandomTokenPolicy,
    StaticTokenPolicy,
    TokenPolicy,
    TopKAttentionPolicy,
    make_attention_policy,
    make_token_policy,
    register_token_policy,
    token_scores,
    topk_indices,
)


def brute_force_topk(scores: list, k: int) -> list[int]:
    """Literal 1.4: i is selected iff fewer than k elements beat it; output ascending."""
    n = len(scores)

    def beats(j: int, i: int) -> bool:
        return scores[j] > scores[i] or (scores[j] == scores[i] and j < i)

    return [i for i in range(n) if sum(beats(j, i) for j in range(n)) < k]


def brute_force_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    rows = scores.reshape(-1, scores.shape[-1]).tolist()
    return torch.tensor([brute_force_topk(row, k) for row in rows]).reshape(*scores.shape[:-1], k)


def random_cases(tied: bool):
    gen = torch.Generator().manual_seed(7 if tied else 3)
    for n in (1, 2, 5, 16, 33):
        for k in sorted({1, (n + 1) // 2, n}):
            if tied:  # a handful of distinct values: most comparisons are ties
                scores = torch.randint(0, 3, (4, n), generator=gen).float()
            else:
                scores = torch.rand(4, n, generator=gen)
            yield scores, k


@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied"])
def test_topk_matches_brute_force(tied: bool) -> None:
    for scores, k in random_cases(tied):
        assert torch.equal(topk_indices(scores, k), brute_force_rows(scores, k)), (scores, k)


def test_topk_integer_scores_and_all_equal() -> None:
    scores = torch.tensor([[5, 9, 5, 9, 1, 5]])
    assert topk_indices(scores, 3).tolist() == [[0, 1, 3]]
    assert topk_indices(torch.zeros(2, 6), 2).tolist() == [[0, 1], [0, 1]]
    # -0.0 and 0.0 compare equal: the lower index wins.
    assert topk_indices(torch.tensor([0.0, -0.0, 0.0]), 1).tolist() == [0]
    assert topk_indices(torch.tensor([-0.0, 0.0, 0.0]), 2).tolist() == [0, 1]


def test_topk_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be"):
        topk_indices(torch.rand(2, 4), 0)
    with pytest.raises(ValueError, match="k must be"):
        topk_indices(torch.rand(2, 4), 5)
    with pytest.raises(ValueError, match="NaN"):
        topk_indices(torch.tensor([0.1, float("nan")]), 1)


def test_cls_attention_token_policy() -> None:
    gen = torch.Generator().manual_seed(0)
    attn = torch.rand(3, 9, 9, generator=gen).softmax(-1)
    policy = ClsAttentionTokenPolicy()
    scores = policy.scores(attn, has_cls=True)
    assert torch.equal(scores, attn[:, 0, 1:])
    assert torch.equal(policy.select(scores, 4), brute_force_rows(attn[:, 0, 1:], 4))
    column_sums = policy.scores(attn, has_cls=False)
    assert torch.allclose(column_sums, sum(attn[:, i, :] for i in range(9)))  # attention each key receives
    with pytest.raises(ValueError, match="B, L, L"):
        token_scores(torch.rand(2, 3, 4), True)


@pytest.mark.parametrize("tied", [False, True], ids=["random", "tied"])
def test_topk_attention_policy_matches_brute_force(tied: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    shape = (2, 7, 7)
    attn = torch.randint(0, 2, shape, generator=gen).float() if tied else torch.rand(shape, generator=gen)
    for k in (1, 3, 7):
        assert torch.equal(TopKAttentionPolicy().select(attn, k), brute_force_rows(attn, k))


def test_longformer_window() -> None:
    attn = torch.rand(2, 6, 6)
    keys = LongformerWindowAttentionPolicy().select(attn, 3)
    assert keys.shape == (2, 6, 3)
    for i in range(6):  # the 3 nearest positions, left neighbour first on equal distance
        expected = brute_force_topk([-abs(i - j) for j in range(6)], 3)
        assert keys[0, i].tolist() == expected == keys[1, i].tolist()
    assert keys[0, 0].tolist() == [0, 1, 2] and keys[0, 3].tolist() == [2, 3, 4]
    with pytest.raises(ValueError, match="square"):
        LongformerWindowAttentionPolicy().select(torch.rand(1, 3, 4), 2)


def assert_valid_selection(idx: torch.Tensor, shape: tuple[int, ...], bound: int) -> None:
    assert idx.shape == shape and idx.dtype == torch.long
    assert int(idx.min()) >= 0 and int(idx.max()) < bound
    assert bool((idx[..., 1:] > idx[..., :-1]).all())


def test_random_policies_are_valid_and_seeded() -> None:
    scores = torch.rand(5, 20)
    a = RandomTokenPolicy(seed=4).select(scores, 8)
    assert_valid_selection(a, (5, 8), 20)
    assert torch.equal(a, RandomTokenPolicy(seed=4).select(scores, 8))
    assert not all(torch.equal(a[0], row) for row in a[1:])  # drawn per example
    keys = RandomAttentionPolicy(seed=1).select(torch.rand(3, 10, 10), 4)
    assert_valid_selection(keys, (3, 10, 4), 10)


def test_static_policy_ignores_data() -> None:
    policy = StaticTokenPolicy(seed=2)
    a = policy.select(torch.rand(3, 12), 5)
    b = policy.select(torch.rand(3, 12), 5)
    assert_valid_selection(a, (3, 5), 12)
    assert torch.equal(a, b) and bool((a == a[0]).all())


def test_registry() -> None:
    assert {"cls_attention", "random", "static"} <= set(TOKEN_POLICIES)
    assert {"topk", "longformer", "random"} <= set(ATTENTION_POLICIES)
    assert isinstance(make_token_policy(), ClsAttentionTokenPolicy)
    assert isinstance(make_attention_policy(), TopKAttentionPolicy)
    assert isinstance(make_token_policy("random", seed=1), RandomTokenPolicy)
    assert isinstance(make_attention_policy("longformer"), LongformerWindowAttentionPolicy)
    built = TopKAttentionPolicy()
    assert make_attention_policy(built) is built
    with pytest.raises(ValueError, match="unknown token policy"):
        make_token_policy("nope")
    with pytest.raises(TypeError):
        make_token_policy(built)  # an attention policy where a token policy belongs
    with pytest.raises(ValueError, match="already registered"):
        register_token_policy("random")(RandomTokenPolicy)


def test_policy_base_classes_are_abstract() -> None:
    with pytest.raises(TypeError):
        TokenPolicy()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        AttentionPolicy()  # type: ignore[abstract]
