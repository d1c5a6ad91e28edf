"""Running reward / cost normalisation (`RunningMeanStd`, PPO's ``--normalize.*``), the λ update in units of σ_C
with J_c and d raw, and the warning when λ barely moves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from saferlhf.rl import STALL_STEPS, LagrangeMultiplier, RunningMeanStd


def test_running_stats_equal_numpy_over_the_concatenated_batches():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, generator=g) * s + m for n, s, m in [(7, 0.05, 0.3), (1, 0.05, 0.3), (16, 2.0, -1.0),
                                                                   (3, 0.5, 10.0)]]
    rms = RunningMeanStd()
    for k, b in enumerate(batches, 1):
        rms.update(b)
        seen = torch.cat(batches[:k]).double().numpy()
        assert rms.count == seen.size
        assert rms.mean == pytest.approx(float(np.mean(seen)), rel=1e-12, abs=1e-15)
        assert rms.std == pytest.approx(float(np.std(seen)), rel=1e-10)  # population std (ddof 0)


def test_standardize_and_scale():
    rms = RunningMeanStd()
    assert rms.std == 1.0  # nothing seen: identity scale
    x = torch.tensor([0.01, -0.03, 0.05, 0.01])
    rms.update(x)
    mu, sigma = float(np.mean(x.double().numpy())), float(np.std(x.double().numpy()))
    assert torch.allclose(rms.standardize(x), ((x.double() - mu) / sigma).float())
    assert torch.allclose(rms.scale(x), (x.double() / sigma).float())
    assert rms.scale(x).dtype == x.dtype
    assert torch.sign(rms.scale(x)).tolist() == torch.sign(x).tolist()  # scale only: zero stays zero
    one = RunningMeanStd()
    one.update(torch.tensor([3.0]))
    assert one.std == 1.0  # one score: no spread yet
    flat = RunningMeanStd(min_std=1e-3)
    flat.update(torch.full((4,), 2.0))
    assert flat.std == 1e-3  # floored


def test_state_dict_round_trip_continues_exactly():
    a, b = RunningMeanStd(), RunningMeanStd()
    a.update(torch.tensor([1.0, 2.0, 4.0]))
    b.load_state_dict(a.state_dict())
    for r in (a, b):
        r.update(torch.tensor([0.5, -3.0]))
    assert (a.count, a.mean, a.m2) == (b.count, b.mean, b.m2)


def test_normalisation_changes_the_advantage_scale_as_expected():
    """Costs ±0.05: scaling by σ_C multiplies the cost stream's end score, hence A^c at β = 0 and V = 0, by 1/σ_C;
    the reward is centred and scaled."""
    from saferlhf.recipes.ppo import NormalizeConfig, PPOConfig, compute_advantages, normalize_scores
    from saferlhf.rl import ALGORITHMS
    from saferlhf.rollout import Rollout

    B, N = 4, 3
    cost = torch.tensor([0.05, -0.05, 0.02, -0.04])
    reward = torch.tensor([1.0, 2.0, 3.0, 6.0])

    def rollout():
        zeros = torch.zeros(B, N)
        return Rollout(input_ids=torch.zeros(B, 2 + N, dtype=torch.long), attention_mask=torch.ones(B, 2 + N),
                       prompt_length=2, response_mask=torch.ones(B, N, dtype=torch.long), logprobs=zeros,
                       ref_logprobs=zeros, reward=reward.clone(), reward_values=zeros, cost=cost.clone(),
                       cost_values=zeros)

    cfg = PPOConfig(normalize=NormalizeConfig(reward=True, cost=True), gae_lambda=1.0)
    raw, norm = rollout(), rollout()
    compute_advantages(cfg, ALGORITHMS["ppo_lag"], raw, beta=0.0)
    normalizers = {"reward": RunningMeanStd(), "cost": RunningMeanStd()}
    metrics = normalize_scores(norm, normalizers)
    compute_advantages(cfg, ALGORITHMS["ppo_lag"], norm, beta=0.0)
    sigma_c = float(np.std(cost.double().numpy()))
    assert metrics["cost/running_std"] == pytest.approx(sigma_c)
    assert torch.allclose(norm.cost_advantages, raw.cost_advantages / sigma_c, rtol=1e-5)
    assert float(norm.cost_advantages.abs().max()) > 0.9  # O(1), not O(0.05)
    r = reward.double().numpy()
    assert torch.allclose(norm.reward_advantages[:, 0], torch.tensor((r - r.mean()) / r.std()).float(), rtol=1e-5)
    assert torch.equal(norm.reward, reward) and torch.equal(norm.cost, cost)  # the raw scores stay for metrics / J_c


def test_lambda_update_uses_the_violation_in_cost_stds_with_raw_j_c_and_d():
    lr, d, jc, sigma = 0.1, 0.0, 0.05, 0.05
    raw, scaled = LagrangeMultiplier(lr=lr, threshold=d), LagrangeMultiplier(lr=lr, threshold=d)
    for m in (raw, scaled):
        m.observe(torch.tensor([jc, jc]))
    raw.update()
    scaled.update(cost_scale=sigma)
    assert raw.log_lambda == pytest.approx(lr * 1.0 * (jc - d))          # 0.005: λ barely moves
    assert scaled.log_lambda == pytest.approx(lr * 1.0 * (jc - d) / sigma)  # 0.1: one cost std of violation
    m = scaled.metrics()  # J_c, d and the violation are reported in raw units
    assert (m["lagrange/episode_cost"], m["lagrange/threshold"], m["lagrange/violation"]) == pytest.approx((jc, d, jc))
    with pytest.raises(ValueError, match="cost_scale"):
        scaled.update(cost_scale=0.0)


def test_unit_scale_is_bit_identical_to_the_old_update():
    a, b = LagrangeMultiplier(), LagrangeMultiplier()
    for m in (a, b):
        m.observe(torch.tensor([0.3, -0.7, 0.123456789]))
    a.update()
    b.update(cost_scale=1.0)
    assert a.log_lambda == b.log_lambda


def test_stall_warning_fires_after_several_tiny_steps_and_resets():
    m = LagrangeMultiplier(lr=0.1, threshold=0.0)
    m.observe(torch.tensor([0.004]))  # lr·|J_c - d| = 4e-4 < 1e-3
    for _ in range(STALL_STEPS - 1):
        m.update()
        assert m.stall_warning() is None
    m.update()
    warning = m.stall_warning()
    assert warning and "λ barely moves" in warning and "normalize.cost" in warning and "= 0.0004 <" in warning
    restored = LagrangeMultiplier(lr=0.1)
    restored.load_state_dict(m.state_dict())
    assert restored.small_steps == STALL_STEPS
    m.observe(torch.ones(200))  # a real violation: the counter restarts
    m.update()
    assert m.stall_warning() is None and m.small_steps == 0
    scaled = LagrangeMultiplier(lr=0.1)  # the same costs in units of σ_C = 0.004 move λ: no warning
    scaled.observe(torch.tensor([0.004]))
    for _ in range(2 * STALL_STEPS):
        scaled.update(cost_scale=0.004)
    assert scaled.stall_warning() is None and not math.isclose(scaled.lam, 1.0)


def test_delayed_updates_do_not_count_as_stalled():
    m = LagrangeMultiplier(lr=0.1, delay_steps=10)
    m.observe(torch.tensor([0.0]))
    for _ in range(STALL_STEPS + 2):
        m.update()
    assert m.stall_warning() is None
