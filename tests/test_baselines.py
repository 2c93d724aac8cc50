"""Each baseline against its defining rule, computed here by brute force from the published definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trilevel.baselines import example_policies, selection_policies  # noqa: F401  (registers them)
from trilevel.baselines.dynamicvit import DynamicViT, DynamicViTMethod
from trilevel.baselines.methods import make_method, parse_method
from trilevel.baselines.svite import S2ViTEMethod, SViTEMethod, TokenSelectorViT, erk_counts
from trilevel.config import get_config, keep_count
from trilevel.example_filter import ExampleFilter
from trilevel.macs import MacCounter, count_model_macs
from trilevel.model import build_model, token_plan


def _demo(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("demo", **kwargs).eval()


def _images(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _block_inputs(model: torch.nn.Module, block: int) -> list[torch.Tensor]:
    """Record what block `block`'s norm1 outputs (the attention's input) during the next forward."""
    seen: list[torch.Tensor] = []
    model.blocks[block].norm1.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    return seen


# --- token level: EViT ------------------------------------------------------------------------------


def test_evit_fused_token_is_attention_weighted_sum_of_dropped_tokens() -> None:
    model = _demo(token_policy="evit")
    cfg = model.cfg
    x = torch.randn(2, cfg.num_tokens, cfg.embed_dim)
    attn = torch.rand(2, cfg.num_tokens, cfg.num_tokens).softmax(dim=-1)
    ids = torch.arange(cfg.num_patches).expand(2, -1)
    out, conn, patch_ids = model._ta_select(x, attn, 0.5, 1.0, ids)
    k = keep_count(0.5, cfg.num_patches)
    assert out.shape == (2, 1 + k + 1, cfg.embed_dim) and conn is None
    for b in range(2):
        cls_row = attn[b, 0, 1:]
        kept = sorted(torch.argsort(cls_row, descending=True, stable=True)[:k].tolist())
        dropped = [j for j in range(cfg.num_patches) if j not in kept]
        fused = sum(cls_row[j] * x[b, 1 + j] for j in dropped)
        torch.testing.assert_close(out[b, -1], fused)
        torch.testing.assert_close(out[b, 1 : 1 + k], x[b, 1 + torch.tensor(kept)])
        assert patch_ids[b].tolist() == kept + [-1]


def test_evit_model_token_counts_match_plan_and_macs() -> None:
    model = _demo(token_policy="evit")
    _, info = model(_images(), keep_token=0.7, return_info=True)
    tokens, _ = token_plan(model.cfg, 0.7, 1.0, merged_tokens=1)
    assert info.tokens_per_block == tokens
    assert tokens[-1] == 1 + keep_count(0.7, keep_count(0.7, keep_count(0.7, 16) + 1) + 1) + 1
    counter = MacCounter(model.cfg, "gather", merged_tokens=1)
    assert counter.count(0.7, 1.0) == count_model_macs(model, 0.7, 1.0)
    with pytest.raises(ValueError, match="merges tokens"):
        model(_images(), keep_token=0.7, keep_attn=0.5)
    # Nothing dropped, nothing fused: identical to the paper's selector.
    torch.testing.assert_close(model(_images()), _demo()(_images()))


# --- attention level: magnitude, 2-D Longformer ----------------------------------------------------


def test_magnitude_policy_keeps_top_k_of_abs_qk_before_softmax() -> None:
    model = _demo(attn_policy="magnitude")
    block = model.cfg.prune_blocks[0]
    seen = _block_inputs(model, block)
    _, info = model(_images(), keep_token=1.0, keep_attn=0.5, return_info=True)
    attn = model.blocks[block].attn
    q, k, _ = attn.qkv(seen[0]).reshape(3, model.cfg.num_tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    magnitude = (q @ k.transpose(-2, -1) * attn.scale).abs().mean(dim=1)[:, 1:, 1:]  # patch x patch
    n, k_attn = model.cfg.num_patches, keep_count(0.5, model.cfg.num_patches)
    chosen = info.connections[0]
    assert chosen.shape == (3, n, 1 + k_attn) and bool((chosen[..., 0] == 0).all())  # [CLS] key first
    probs_rank_differs = False
    for b in range(3):
        for row in range(n):
            order = sorted(range(n), key=lambda j: (-float(magnitude[b, row, j].detach()), j))[:k_attn]
            assert (chosen[b, row, 1:] - 1).tolist() == sorted(order)
    # The paper's rule on the same model ranks by probabilities and picks differently somewhere.
    _, paper = _demo()(_images(), keep_token=1.0, keep_attn=0.5, return_info=True)
    probs_rank_differs = not torch.equal(paper.connections[0], chosen)
    assert probs_rank_differs


def test_longformer2d_keeps_nearest_patches_on_the_grid() -> None:
    model = _demo(attn_policy="longformer2d")
    _, info = model(_images(), keep_token=0.7, keep_attn=0.4, return_info=True)
    grid = model.cfg.img_size // model.cfg.patch_size
    for kept, conn in zip(info.kept_patches, info.connections, strict=True):
        batch, k = kept.shape
        k_attn = keep_count(0.4, k)
        for b in range(batch):
            pos = kept[b].tolist()
            for i, p in enumerate(pos):
                distance = []
                for j, other in enumerate(pos):
                    dr, dc = abs(p // grid - other // grid), abs(p % grid - other % grid)
                    distance.append((max(dr, dc), dr * dr + dc * dc, j))
                expected = sorted(j for *_, j in sorted(distance)[:k_attn])
                assert (conn[b, i, 1:] - 1).tolist() == expected
                assert i in expected  # the window contains the query itself
    # Without positions it needs the whole grid, and the 1-D window differs from the 2-D one.
    full = torch.rand(1, 16, 16)
    rows = selection_policies.Longformer2DAttentionPolicy().select(full, 5)
    assert rows[0, 5].tolist() == [1, 4, 5, 6, 9]  # (1,1): itself and its 4 edge neighbours
    with pytest.raises(ValueError, match="positions"):
        selection_policies.Longformer2DAttentionPolicy().select(torch.rand(1, 15, 15), 3)


# --- example level: Active Bias, two-phase forgetting ---------------------------------------------


def test_active_bias_probabilities_follow_the_formula() -> None:
    rng = np.random.default_rng(0)
    n = 40
    f = ExampleFilter(n, keep_ratio=0.5, period_epochs=2, remove_frac=0.05, policy="active_bias")
    history: dict[int, list[float]] = {i: [] for i in range(n)}
    for _ in range(6):
        idx = rng.choice(n, size=25, replace=False)
        prob = rng.random(25)
        f.update(idx, prob > 0.5, np.zeros(25), true_prob=prob)
        for i, p in zip(idx, prob, strict=True):
            history[int(i)].append(float(p))
    eps = f.policy.eps

    def std_hat(h: list[float]) -> float:  # Chang et al. 2017: sqrt(var + var^2 / (|H| - 1))
        var = float(np.var(h))
        return math.sqrt(var + var**2 / (len(h) - 1))

    known = {i: std_hat(h) for i, h in history.items() if len(h) >= 2}
    fallback = max(known.values())  # fewer than two presentations: explored first
    weights = np.array([known.get(i, fallback) + eps for i in range(n)])
    np.testing.assert_allclose(f.policy.sampling_probabilities(), weights / weights.sum(), rtol=1e-12)
    assert len(known) < n  # the fallback was exercised

    # Burn-in keeps the initial subset; then every epoch draws num_active examples with those weights.
    before = f.active_indices()
    assert not f.end_epoch(0) and np.array_equal(f.active_indices(), before)
    assert f.end_epoch(1) and f.active.sum() == f.num_active
    state = f.state_dict()
    g = ExampleFilter(n, keep_ratio=0.5, period_epochs=2, remove_frac=0.05, policy="active_bias")
    g.load_state_dict(state)
    np.testing.assert_array_equal(g.policy.sampling_probabilities(), f.policy.sampling_probabilities())
    with pytest.raises(ValueError, match="true-class probabilities"):
        f.update([0], [True], [0.0])


def test_active_bias_samples_high_variance_examples_more_often() -> None:
    n = 20
    f = ExampleFilter(n, keep_ratio=0.25, period_epochs=1, remove_frac=0.05, policy="active_bias")
    steady, jumpy = np.arange(10), np.arange(10, 20)
    for step in range(4):
        f.update(steady, np.ones(10, bool), np.zeros(10), true_prob=np.full(10, 0.9))
        f.update(jumpy, np.ones(10, bool), np.zeros(10), true_prob=np.full(10, 0.1 + 0.8 * (step % 2)))
    counts = np.zeros(n)
    for epoch in range(200):
        f.end_epoch(epoch)
        counts += f.active
    assert counts[jumpy].sum() > 3 * counts[steady].sum()


def test_two_phase_removes_nothing_in_phase_one_then_the_least_forgotten_once() -> None:
    n, period = 50, 3
    f = ExampleFilter(n, keep_ratio=0.8, period_epochs=period, remove_frac=0.05, policy="two_phase")
    forgettable = np.arange(0, n, 2)  # correct, then wrong, then correct: one forgetting event
    for epoch in range(period):
        assert f.active.all()  # phase 1 trains on everything
        ok = np.ones(n, dtype=bool)
        if epoch == 1:
            ok[forgettable] = False
        f.update(np.arange(n), ok, np.zeros(n))
        changed = f.end_epoch(epoch)
        assert changed == (epoch == period - 1)
    assert f.active.sum() == f.num_active == 40
    removed = np.flatnonzero(~f.active)
    assert len(removed) == 10 and not np.isin(removed, forgettable).any()  # unforgettable ones leave
    for epoch in range(period, 3 * period):
        f.update(np.arange(n), np.zeros(n, bool), np.zeros(n))
        assert not f.end_epoch(epoch) and np.array_equal(np.flatnonzero(~f.active), removed)


# --- S²ViTE: fixed parameter budget through prune-and-grow ------------------------------------------


def _train_steps(method, model: torch.nn.Module, steps: int, keep_token: float = 1.0) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    method.attach(model, optimizer, total_iters=steps)
    method.initial_masks = {n: m.clone() for n, m in method.masks.items()}
    method.budgets = []
    torch.manual_seed(0)
    for it in range(steps):
        model.train()
        loss = model(_images(8), keep_token=keep_token).logsumexp(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        method.before_step(model, it)
        optimizer.step()
        method.after_step(model, it)
        method.budgets.append({n: int(m.sum()) for n, m in method.masks.items()})


def test_erk_counts_hit_the_budget_exactly() -> None:
    shapes = {"a": (192, 64), "b": (64, 64), "c": (128, 64), "d": (64, 128), "e": (3, 5)}
    for density in (0.05, 0.3, 0.5, 0.9):
        counts = erk_counts(shapes, density)
        assert sum(counts.values()) == round(density * sum(o * i for o, i in shapes.values()))
        assert all(0 <= counts[n] <= o * i for n, (o, i) in shapes.items())
    assert erk_counts(shapes, 0.5)["e"] == 15  # the small layer saturates and is dense (ERK)


def test_svite_keeps_its_parameter_budget_exactly_through_prune_and_grow() -> None:
    method = SViTEMethod(density=0.3, update_every=1, prune_rate=0.5, stop_fraction=1.0)
    model = method.build_model("demo")
    _train_steps(method, model, 6, keep_token=0.5)
    total = sum(m.weight.numel() for m in method.layers.values())
    initial = {n: int(m.sum()) for n, m in method.initial_masks.items()}
    assert sum(initial.values()) == round(0.3 * total)
    assert all(step == initial for step in method.budgets)  # every layer, every step
    for name, layer in method.layers.items():
        assert not bool(((layer.weight != 0) & ~method.masks[name]).any())  # pruned weights are zero
    assert method.updates == 5 and method.metrics()["svite_sparsity"] == pytest.approx(0.7, abs=1e-4)
    assert any(not torch.equal(method.initial_masks[n], method.masks[n]) for n in method.masks)  # it moved


def test_s2vite_keeps_its_head_budget_per_block() -> None:
    method = S2ViTEMethod(density=0.5, update_every=1, prune_rate=0.6, stop_fraction=1.0)
    model = method.build_model("demo")
    _train_steps(method, model, 5)
    assert all(set(step.values()) == {2} for step in method.budgets)  # 2 of 4 heads in every block
    assert any(not torch.equal(method.initial_masks[n], method.masks[n]) for n in method.masks)
    dim = model.cfg.head_dim
    for name, heads in method.masks.items():
        qkv = method.layers[name].weight.view(3, 4, dim, -1)
        bias = method.layers[name].bias.view(3, 4, dim)
        for h in range(4):
            live = bool(heads[h])
            assert bool((qkv[:, h] != 0).any()) == live and bool((bias[:, h] != 0).any()) == live


def test_svite_token_selector_keeps_k_tokens_and_learns() -> None:
    model = TokenSelectorViT(get_config("demo"))
    model.train()
    _, info = model(_images(), keep_token=0.5, return_info=True)
    assert info.tokens_per_block == [1 + 8] * model.cfg.depth
    logits = model(_images(), keep_token=0.5)
    logits.sum().backward()
    assert model.token_scorer.weight.grad is not None and bool(model.token_scorer.weight.grad.abs().sum() > 0)
    model.eval()
    _, info = model(_images(), keep_token=0.5, return_info=True)
    scores = model.token_scorer(model.patch_embed(_images()) + model.pos_embed[:, 1:]).squeeze(-1)
    for b in range(3):
        top = sorted(torch.argsort(scores[b], descending=True, stable=True)[:8].tolist())
        assert info.kept_patches[0][b].tolist() == top


# --- DynamicViT ------------------------------------------------------------------------------------


def test_dynamicvit_training_masks_keys_and_pays_a_keep_ratio_loss() -> None:
    torch.manual_seed(0)
    model = DynamicViT(get_config("demo"))
    model.train()
    model(_images(4), keep_token=0.5)
    decisions = model.last_decisions
    assert len(decisions) == 3 and all(d.shape == (4, 16) for d in decisions)
    for earlier, later in zip(decisions, decisions[1:], strict=False):
        assert bool((later <= earlier).all())  # a dropped token stays dropped
    expected = torch.stack([((d.mean(dim=1) - 0.5 ** (s + 1)) ** 2) for s, d in enumerate(decisions)]).mean()
    torch.testing.assert_close(model.keep_ratio_loss(), expected)
    method = DynamicViTMethod(ratio_weight=2.0)
    torch.testing.assert_close(method.extra_loss(model), 2.0 * expected)
    # Eval really drops: keep_count of the current tokens at each stage.
    model.eval()
    _, info = model(_images(4), keep_token=0.5, return_info=True)
    assert [p.shape[1] for p in info.kept_patches] == [8, 4, 2]


def test_dynamicvit_dropped_tokens_are_invisible_as_keys() -> None:
    from trilevel.baselines.forward import attention_with_keep

    torch.manual_seed(0)
    attn = build_model("demo").blocks[0].attn
    x = torch.randn(2, 17, 64)
    keep = torch.ones(2, 17)
    keep[:, 5] = 0
    _, probs = attention_with_keep(attn, x, keep)
    assert float(probs[:, [i for i in range(17) if i != 5], 5].max()) < 1e-5
    assert float(probs[:, 5, 5].min()) > 1e-3  # it still attends to itself


# --- trainer modes: parsing -------------------------------------------------------------------------


def test_method_specs() -> None:
    assert parse_method("s2vite:density=0.25,update_every=10") == (
        "s2vite",
        {"density": 0.25, "update_every": 10},
    )
    assert isinstance(make_method("svite:density=0.4"), SViTEMethod)
    for bad in ("nope", "svite:density", "svite:colour=red", "svite:density=2"):
        with pytest.raises(ValueError):
            make_method(bad)
    for method in (DynamicViTMethod(), SViTEMethod()):  # they choose tokens themselves
        with pytest.raises(ValueError, match="chooses tokens itself; drop token_policy"):
            method.build_model("demo", token_policy="evit")
    model = DynamicViTMethod().build_model("demo", num_classes=3, drop_path=0.1, attn_impl="gather")
    assert model.cfg.num_classes == 3 and model.attn_impl == "gather"
