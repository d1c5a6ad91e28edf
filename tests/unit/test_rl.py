"""saferlhf.rl vs hand-computed numbers and naive python loops (algorithm-reference §2)."""

from __future__ import annotations

import math

import pytest
import torch

from saferlhf.rl import (
    LAMBDA_CEILING,
    LagrangeMultiplier,
    combine_advantages,
    explained_variance,
    gae,
    global_mean,
    kl_per_token,
    last_token_index,
    log_lambda_step,
    masked_mean,
    masked_var,
    masked_whiten,
    sequence_token_mean,
    token_rewards,
)


def prefix_mask(lengths: list[int], T: int) -> torch.Tensor:
    return torch.tensor([[1 if t < n else 0 for t in range(T)] for n in lengths], dtype=torch.bool)


# --------------------------------------------------------------------------- masked statistics


def test_masked_mean_hand_values():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx((1 + 2 + 4) / 3)
    assert masked_mean(x, mask, dim=-1).tolist() == pytest.approx([1.5, 4.0])
    assert masked_mean(x, mask, dim=0).tolist() == pytest.approx([2.5, 2.0, 0.0])  # empty column -> 0


def test_masked_mean_ignores_nan_and_inf_in_padding():
    x = torch.tensor([[1.0, float("nan"), float("-inf")]])
    mask = torch.tensor([[True, False, False]])
    assert masked_mean(x, mask).item() == 1.0


def test_masked_var_hand_values():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # values 1, 2, 3: mean 2, population var (1 + 0 + 1) / 3, unbiased (1 + 0 + 1) / 2
    assert masked_var(x, mask).item() == pytest.approx(2 / 3)
    assert masked_var(x, mask, unbiased=True).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        masked_var(x, torch.tensor([[1, 0, 0], [0, 0, 0]]), unbiased=True)


def test_masked_whiten():
    torch.manual_seed(0)
    x = torch.randn(4, 7) * 3 + 2
    mask = prefix_mask([7, 3, 1, 5], 7)
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-5)
    assert masked_var(w, mask).item() == pytest.approx(1.0, abs=1e-4)
    assert (w[~mask] == 0).all()
    vals = x[mask]
    expected = (vals - vals.mean()) / vals.var(unbiased=False).add(1e-8).sqrt()
    assert torch.allclose(w[mask], expected, atol=1e-5)
    scale_only = masked_whiten(x, mask, shift_mean=False)
    assert torch.allclose(scale_only[mask], expected + vals.mean(), atol=1e-5)


def test_sequence_token_mean_hand_and_empty_row():
    x = torch.tensor([[1.0, 3.0, 9.0], [2.0, 7.0, 7.0], [5.0, 5.0, 5.0]])
    mask = prefix_mask([2, 1, 0], 3)
    assert sequence_token_mean(x, mask).tolist() == pytest.approx([2.0, 2.0, 0.0])


# --------------------------------------------------------------------------- rewards


def test_kl_per_token():
    a, b = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    assert kl_per_token(a, b).tolist() == [[0.5, -1.0]]


def test_last_token_index():
    assert last_token_index(prefix_mask([3, 1, 0, 4], 4)).tolist() == [2, 0, -1, 3]


def test_token_rewards_hand_values():
    kl = torch.tensor([[0.5, 1.0, 2.0], [4.0, 9.0, 9.0]])
    mask = prefix_mask([3, 1], 3)
    end = torch.tensor([10.0, -3.0])
    beta = 0.1
    r = token_rewards(kl, end, mask, beta=beta, sign=-1)
    expected_r = [[-0.05, -0.1, -0.2 + 10.0], [-0.4 - 3.0, 0.0, 0.0]]
    assert r.tolist() == [pytest.approx(row) for row in expected_r]
    c = token_rewards(kl, end, mask, beta=beta, sign=+1)
    expected_c = [[0.05, 0.1, 0.2 + 10.0], [0.4 - 3.0, 0.0, 0.0]]
    assert c.tolist() == [pytest.approx(row) for row in expected_c]


def test_token_rewards_clamp_after_kl():
    kl = torch.tensor([[0.0, 100.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    # end score 49, KL term -0.01*100 = -1 on the same token: 48, no clamp
    assert token_rewards(kl, torch.tensor([49.0]), mask, 0.01, -1).tolist()[0] == pytest.approx([0.0, 48.0])
    # end score 60: -1 + 60 = 59 -> clamped to 50 (clamping before adding KL would give 49)
    assert token_rewards(kl, torch.tensor([60.0]), mask, 0.01, -1).tolist()[0] == pytest.approx([0.0, 50.0])
    assert token_rewards(kl, torch.tensor([-60.0]), mask, 0.01, +1, clamp=5.0).tolist()[0] == pytest.approx([0.0, -5.0])
    with pytest.raises(ValueError):
        token_rewards(kl, torch.tensor([0.0]), mask, 0.01, sign=2)


def test_token_rewards_vs_naive_loop():
    torch.manual_seed(1)
    lengths = [6, 1, 4, 0, 3]
    B, T, beta, clamp = len(lengths), 6, 0.3, 2.0
    kl = torch.randn(B, T) * 5
    end = torch.randn(B) * 3
    mask = prefix_mask(lengths, T)
    for sign in (-1, 1):
        out = token_rewards(kl, end, mask, beta, sign, clamp=clamp)
        for b, n in enumerate(lengths):
            for t in range(T):
                if t >= n:
                    expected = 0.0
                else:
                    v = sign * beta * kl[b, t].item() + (end[b].item() if t == n - 1 else 0.0)
                    expected = max(-clamp, min(clamp, v))
                assert out[b, t].item() == pytest.approx(expected, abs=1e-6)


# --------------------------------------------------------------------------- GAE


def naive_gae(rewards, values, lengths, gamma, lam):
    adv = torch.zeros_like(rewards)
    for b, n in enumerate(lengths):
        a_next = 0.0
        for t in reversed(range(n)):
            v_next = values[b, t + 1].item() if t + 1 < n else 0.0
            delta = rewards[b, t].item() + gamma * v_next - values[b, t].item()
            a_next = delta + gamma * lam * a_next
            adv[b, t] = a_next
    ret = adv + values * prefix_mask(lengths, rewards.shape[1])
    return adv, ret


def test_gae_hand_values():
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.25, 0.5]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    gamma, lam = 0.9, 0.5
    d2 = 1.0 + 0 - 0.5  # 0.5
    d1 = 0.0 + 0.9 * 0.5 - 0.25  # 0.2
    d0 = 0.0 + 0.9 * 0.25 - 0.5  # -0.275
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    adv, ret = gae(r, v, mask, gamma, lam)
    assert adv.tolist()[0] == pytest.approx([a0, a1, a2])
    assert ret.tolist()[0] == pytest.approx([a0 + 0.5, a1 + 0.25, a2 + 0.5])


def test_gae_vs_naive_loop_variable_lengths():
    torch.manual_seed(2)
    lengths = [8, 3, 1, 5, 0, 8, 2]
    B, T = len(lengths), 8
    mask = prefix_mask(lengths, T)
    rewards = torch.randn(B, T)
    values = torch.randn(B, T)
    # garbage in the padding must not leak into any real position
    rewards[~mask] = 1e6
    values[~mask] = -1e6
    for gamma, lam in [(1.0, 0.95), (0.9, 0.7), (1.0, 1.0), (0.99, 0.0)]:
        adv, ret = gae(rewards, values, mask, gamma, lam)
        ref_adv, ref_ret = naive_gae(rewards, values, lengths, gamma, lam)
        assert torch.allclose(adv, ref_adv, atol=1e-4)
        assert torch.allclose(ret, ref_ret, atol=1e-4)
        assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_gae_batch_equals_rows_alone():
    """A row's advantages do not depend on the other rows' lengths (the early reference bug)."""
    torch.manual_seed(3)
    lengths = [2, 6, 4]
    mask = prefix_mask(lengths, 6)
    r, v = torch.randn(3, 6), torch.randn(3, 6)
    adv, _ = gae(r, v, mask)
    for b, n in enumerate(lengths):
        alone, _ = gae(r[b : b + 1, :n], v[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool))
        assert torch.allclose(adv[b, :n], alone[0], atol=1e-6)


def test_gamma_one_lambda_one_advantage_is_return_to_go_minus_value():
    r = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    v = torch.tensor([[0.5, 0.5, 0.5, 9.0]])
    mask = prefix_mask([3], 4)
    adv, ret = gae(r, v, mask, gamma=1.0, lam=1.0)
    assert ret.tolist()[0] == pytest.approx([6.0, 5.0, 3.0, 0.0])
    assert adv.tolist()[0] == pytest.approx([5.5, 4.5, 2.5, 0.0])


# --------------------------------------------------------------------------- combined advantage


def test_combine_advantages_hand():
    a_r, a_c = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.5])
    assert combine_advantages(a_r, a_c, 2.0).tolist() == pytest.approx([(1 - 6) / 3, (-2 - 1) / 3])
    assert combine_advantages(a_r, a_c, 0.0).tolist() == pytest.approx([1.0, -2.0])


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 5.0, 100.0])
def test_net_kl_coefficient_is_beta_whatever_lambda(lam):
    """(-β·KL - λ·β·KL) / (1 + λ) = -β·KL for one token, zero values, zero end scores (§2.3)."""
    beta, kl_value = 0.01, 0.7
    kl = torch.tensor([[kl_value]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    zeros_v, zeros_end = torch.zeros(1, 1), torch.zeros(1)
    adv_r, _ = gae(token_rewards(kl, zeros_end, mask, beta, -1), zeros_v, mask)
    adv_c, _ = gae(token_rewards(kl, zeros_end, mask, beta, +1), zeros_v, mask)
    assert combine_advantages(adv_r, adv_c, lam).item() == pytest.approx(-beta * kl_value)


# --------------------------------------------------------------------------- explained variance


def test_explained_variance():
    g = torch.tensor([[1.0, 2.0, 3.0, 50.0]])
    mask = prefix_mask([3], 4)
    assert explained_variance(g.clone(), g, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(g, 2.0), g, mask) == pytest.approx(0.0, abs=1e-6)
    v = torch.tensor([[1.0, 1.0, 1.0, -7.0]])  # G - V = 0, 1, 2: var 2/3; Var[G] = 2/3 -> 0
    assert explained_variance(v, g, mask) == pytest.approx(0.0, abs=1e-6)
    v = torch.tensor([[2.0, 2.0, 4.0, 0.0]])  # G - V = -1, 0, -1: var 2/9 -> 1 - (2/9)/(2/3) = 2/3
    assert explained_variance(v, g, mask) == pytest.approx(2 / 3)
    assert math.isnan(explained_variance(v, torch.ones_like(g), mask))


# --------------------------------------------------------------------------- Lagrange multiplier


def test_lagrange_hand_checked_update():
    lag = LagrangeMultiplier(init=1.0, lr=0.1, threshold=0.0)
    assert lag.log_lambda == 0.0 and lag.lam == 1.0
    new = lag.update(0.5)
    assert lag.log_lambda == pytest.approx(0.05)
    assert new == pytest.approx(math.exp(0.05))
    # second step uses the new λ: η ← 0.05 + 0.1·e^0.05·(0.5 - 0)
    lag.update(0.5)
    assert lag.log_lambda == pytest.approx(0.05 + 0.1 * math.exp(0.05) * 0.5)


def test_lagrange_direction_and_threshold():
    up = LagrangeMultiplier(threshold=-1.0)
    up.observe(torch.tensor([0.0, -0.5]))  # J_c = -0.25 > d = -1
    assert up.update() > 1.0
    down = LagrangeMultiplier(threshold=0.0)
    down.observe(torch.tensor([-2.0, -1.0]))  # J_c = -1.5 < 0
    lam = down.update()
    assert lam < 1.0
    assert down.log_lambda == pytest.approx(0.1 * 1.0 * -1.5)
    m = down.metrics()
    assert m == {
        "lagrange/lambda": pytest.approx(lam),
        "lagrange/log_lambda": pytest.approx(-0.15),
        "lagrange/episode_cost": pytest.approx(-1.5),
        "lagrange/threshold": 0.0,
        "lagrange/violation": pytest.approx(-1.5),
        "lagrange/threshold_outside_costs": 1.0,  # d = 0 is above every cost seen (-2, -1)
    }


def test_lagrange_respects_cap():
    lag = LagrangeMultiplier(init=1.0, lr=1.0, max_value=5.0)
    for _ in range(20):
        lam = lag.update(10.0)
        assert lam <= 5.0
    assert lam == pytest.approx(5.0)
    assert lag.log_lambda == pytest.approx(math.log(5.0))
    # a single step down from the cap moves immediately (no hidden excess above the cap)
    lag.update(-0.1)
    assert lag.lam < 5.0
    assert LagrangeMultiplier(init=10.0, max_value=5.0).lam == pytest.approx(5.0)


def test_lagrange_delay():
    lag = LagrangeMultiplier(delay_steps=3)
    for _ in range(3):
        assert lag.update(1.0) == 1.0
    assert lag.step == 3
    assert lag.update(1.0) > 1.0
    assert lag.step == 4


def test_lagrange_window_keeps_last_128():
    lag = LagrangeMultiplier()
    assert math.isnan(lag.episode_cost())
    with pytest.raises(ValueError):
        lag.update()  # nothing observed: refuse to corrupt η
    lag.observe(torch.full((100,), 10.0))
    lag.observe(torch.arange(128, dtype=torch.float32))
    assert len(lag.costs) == 128
    assert lag.episode_cost() == pytest.approx(sum(range(128)) / 128)
    small = LagrangeMultiplier(window=3)
    small.observe(torch.tensor([1.0, 2.0]))
    small.observe(torch.tensor([3.0, 4.0]))
    assert list(small.costs) == [2.0, 3.0, 4.0]


def test_lagrange_global_cost_overrides_local():
    lag = LagrangeMultiplier()
    lag.observe(torch.tensor([-5.0]))
    lag.update(global_episode_cost=0.5)
    assert lag.log_lambda == pytest.approx(0.05)
    assert lag.metrics()["lagrange/episode_cost"] == 0.5


def test_lagrange_state_dict_round_trip_is_exact():
    torch.manual_seed(4)
    kwargs = dict(init=0.5, lr=0.05, max_value=5.0, delay_steps=2, threshold=0.1, window=16)
    a = LagrangeMultiplier(**kwargs)
    for _ in range(5):
        a.observe(torch.randn(7))
        a.update()
    b = LagrangeMultiplier(**kwargs)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    for _ in range(5):
        costs = torch.randn(7)
        a.observe(costs)
        b.observe(costs)
        assert a.update() == b.update()
        assert a.metrics() == b.metrics()
    assert b.step == 10


def test_log_lambda_step_hand_values_and_bounds():
    lo, hi = math.log(1e-3), math.log(5.0)
    # inside the bounds: η + lr·e^η·(J_c - d)
    assert log_lambda_step(0.0, 0.1, 0.5, lo, hi) == pytest.approx(0.05)
    assert log_lambda_step(0.05, 0.1, -2.0, lo, hi) == pytest.approx(0.05 - 0.2 * math.exp(0.05))
    # a step past a bound stops at it; a step too large for a float (inf) too, without OverflowError
    assert log_lambda_step(0.0, 1e6, -1.0, lo, hi) == lo
    assert log_lambda_step(0.0, 1e6, 1.0, lo, hi) == hi
    assert log_lambda_step(hi, 1e308, 1e308, lo, hi) == hi
    assert log_lambda_step(hi, 1e308, -1e308, lo, hi) == lo
    with pytest.raises(ValueError):
        log_lambda_step(0.0, 0.1, float("nan"), lo, hi)


def test_lagrange_threshold_far_below_costs_never_overflows():
    """--lagrange.threshold -20: λ went 1 → e² → e^16.8 → OverflowError. Now bounded in log space."""
    lag = LagrangeMultiplier(init=1.0, lr=0.1, max_value=None, threshold=-20.0)
    assert lag.update(0.0) == pytest.approx(math.exp(2.0))      # η = 0 + 0.1·1·20
    eta2 = 2.0 + 0.1 * math.exp(2.0) * 20.0                        # 16.78 > log 1e6
    assert eta2 > math.log(LAMBDA_CEILING)
    assert lag.update(0.0) == pytest.approx(LAMBDA_CEILING)
    for _ in range(20):
        assert lag.update(0.0) == pytest.approx(LAMBDA_CEILING)
    capped = LagrangeMultiplier(threshold=-20.0)  # default cap: the reference script's λ_max = 5
    for _ in range(5):
        lam = capped.update(0.0)
    assert lam == pytest.approx(5.0) and capped.max_value == 5.0


def test_lagrange_huge_step_down_keeps_lambda_positive_and_it_recovers():
    """--lagrange.lr 1e6 (or d far above the costs) drove λ to exactly 0.0, where the multiplicative update
    η ← η + lr·λ·(J_c - d) cannot move it again: the constraint was silently switched off."""
    lag = LagrangeMultiplier(init=1.0, lr=1e6, min_value=1e-3)
    assert lag.update(-1.0) == pytest.approx(1e-3)       # floor, not 0
    assert lag.log_lambda == pytest.approx(math.log(1e-3))
    # back up: η = log 1e-3 + 1e6·1e-3·1 = 993 -> capped at log 5
    assert lag.update(1.0) == pytest.approx(5.0)
    # with the reference lr: one step from the floor is the hand-computed 0.1·1e-3·(J_c - d)
    slow = LagrangeMultiplier(init=1e-3, lr=0.1, min_value=1e-3)
    slow.update(2.0)
    assert slow.log_lambda == pytest.approx(math.log(1e-3) + 0.1 * 1e-3 * 2.0)


def test_lagrange_validates_its_settings():
    for bad in (dict(lr=0.0), dict(lr=-1.0), dict(lr=float("nan")), dict(lr=float("inf")), dict(init=0.0),
                dict(init=float("inf")), dict(min_value=0.0), dict(min_value=1.0, max_value=1.0),
                dict(max_value=float("inf")), dict(threshold=float("nan"))):
        with pytest.raises(ValueError):
            LagrangeMultiplier(**bad)
    assert LagrangeMultiplier(init=1e-9, min_value=1e-3).lam == pytest.approx(1e-3)  # clamped like the cap


def test_lagrange_threshold_outside_observed_costs():
    lag = LagrangeMultiplier(threshold=0.0)
    assert lag.threshold_side() == 0 and lag.threshold_warning() is None  # nothing seen yet
    lag.observe(torch.tensor([-1.0, 2.0]))
    assert lag.threshold_side() == 0 and lag.threshold_warning() is None
    above = LagrangeMultiplier(threshold=5.0)
    above.observe(torch.tensor([-1.0, 2.0]))
    above.update()
    assert above.threshold_side() == 1 and above.metrics()["lagrange/threshold_outside_costs"] == 1.0
    assert "above every episode cost seen so far [-1, 2]" in above.threshold_warning()
    below = LagrangeMultiplier(threshold=-3.0)
    below.observe(torch.tensor([-1.0, 2.0]))
    assert below.threshold_side() == -1
    assert "below every episode cost" in below.threshold_warning()
    below.observe(torch.tensor([-4.0]))  # the range only widens: now d is inside
    assert below.threshold_side() == 0
    assert (below.cost_min, below.cost_max) == (-4.0, 2.0)
    # the range survives a state_dict round trip (a resumed run warns the same way)
    again = LagrangeMultiplier(threshold=-3.0)
    again.load_state_dict(below.state_dict())
    assert (again.cost_min, again.cost_max) == (-4.0, 2.0)


class FakeAccelerator:
    def __init__(self, num_processes, others):
        self.num_processes, self.others, self.device = num_processes, others, torch.device("cpu")
        self.calls = []

    def reduce(self, tensor, reduction="sum"):
        self.calls.append(reduction)
        values = [tensor.item(), *self.others]
        return torch.tensor(sum(values) / len(values))


def test_global_mean():
    assert global_mean(0.25) == 0.25
    one = FakeAccelerator(1, [])
    assert global_mean(0.25, one) == 0.25 and one.calls == []
    many = FakeAccelerator(4, [1.0, 2.0, 3.0])
    assert global_mean(0.0, many) == pytest.approx(1.5)  # (0 + 1 + 2 + 3) / 4: not the local value
    assert many.calls == ["mean"]


def test_global_means_averages_every_number_across_ranks():
    """Training metrics used to be rank 0's alone; now every number is the mean over ranks (one reduce)."""
    from saferlhf.rl import global_means

    class VectorFake:
        num_processes, device = 2, torch.device("cpu")

        def __init__(self, other):
            self.other, self.calls = other, 0

        def reduce(self, tensor, reduction="sum"):
            assert reduction == "mean"
            self.calls += 1
            return (tensor + self.other) / 2

    metrics = {"train/loss": 1.0, "cost/mean": -2.0, "train/steps": 4, "train/packed": True, "name": "x"}
    assert global_means(metrics) is metrics and global_means(metrics, FakeAccelerator(1, [])) is metrics
    # the other rank's values, in sorted key order: cost/mean, train/loss, train/steps
    fake = VectorFake(torch.tensor([4.0, 3.0, 4.0], dtype=torch.float64))
    got = global_means(metrics, fake)
    assert got == {"train/loss": 2.0, "cost/mean": 1.0, "train/steps": 4.0, "train/packed": True, "name": "x"}
    assert fake.calls == 1


def test_violation_rate_counts_costs_above_the_threshold():
    from types import SimpleNamespace

    from saferlhf.recipes.ppo import rollout_metrics

    cost = torch.tensor([-1.0, 0.5, 1.5, 3.0])
    ro = SimpleNamespace(response_mask=torch.ones(4, 2), logprobs=torch.zeros(4, 2), ref_logprobs=torch.zeros(4, 2),
                         reward=torch.zeros(4), cost=cost)
    assert rollout_metrics(ro, 0.1, 1.0)["cost/violation_rate"] == 0.75  # d = 0
    assert rollout_metrics(ro, 0.1, 1.0, threshold=1.0)["cost/violation_rate"] == 0.5  # cost > d, not cost > 0


# --------------------------------------------------------------------------- the algorithm table


def test_algorithm_rows_use_the_right_combination_functions():
    from saferlhf.rl import ALGORITHMS

    R, C = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, -1.0, 0.0])
    A_r = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    A_c = torch.tensor([[4.0, -2.0], [1.0, 1.0]])
    lag, ppo_, shaping = ALGORITHMS["ppo_lag"], ALGORITHMS["ppo"], ALGORITHMS["reward_shaping"]
    # end score of the reward stream: R for PPO and PPO-Lag (λ is ignored), R - λ·C for reward shaping
    assert lag.end_score(R, C, 2.0).tolist() == [1.0, -2.0, 0.5]
    assert ppo_.end_score(R, None, 2.0).tolist() == [1.0, -2.0, 0.5]
    assert shaping.end_score(R, C, 2.0).tolist() == [1.0 - 6.0, -2.0 + 2.0, 0.5]  # hand: R - 2·C
    assert shaping.end_score(R, C, 0.0).tolist() == R.tolist()
    # actor advantage: (A^r - λ·A^c)/(1 + λ) for PPO-Lag with λ = 3; A^r otherwise
    assert lag.actor_advantage(A_r, A_c, 3.0).tolist() == [[(1 - 12) / 4, (2 + 6) / 4], [(0 - 3) / 4, (-1 - 3) / 4]]
    assert ppo_.actor_advantage(A_r, None, 3.0).tolist() == A_r.tolist()
    assert shaping.actor_advantage(A_r, None, 3.0).tolist() == A_r.tolist()
    # what each row needs
    assert (lag.cost_critic, lag.adaptive_lambda, lag.needs_cost_model, lag.kl_coef) == (True, True, True, 0.01)
    assert (ppo_.cost_critic, ppo_.adaptive_lambda, ppo_.needs_cost_model, ppo_.kl_coef) == (False, False, False, 0.02)
    assert (shaping.cost_critic, shaping.adaptive_lambda, shaping.needs_cost_model) == (False, False, True)
    with pytest.raises(ValueError, match="cost"):
        shaping.end_score(R, None, 1.0)
    with pytest.raises(ValueError, match="cost advantages"):
        lag.actor_advantage(A_r, None, 1.0)


@pytest.mark.parametrize("algorithm, want", [("reward_shaping", [1.0 - 0.5 * 2.0, 0.0 - 0.5 * -4.0]),
                                              ("ppo", [1.0, 0.0]), ("ppo_lag", [1.0, 0.0])])
def test_ppo_reward_stream_ends_in_the_algorithms_end_score(algorithm, want):
    """Through the recipe's `compute_advantages`: with β = 0, γ = λ_GAE = 1 and zero values, every advantage
    of a row is its end score: R - λ·C (λ = shaping_lambda = 0.5) for reward shaping, R otherwise."""
    from saferlhf.recipes import ppo
    from saferlhf.rl import ALGORITHMS
    from saferlhf.rollout import Rollout

    B, N = 2, 3
    ro = Rollout(input_ids=torch.zeros(B, N + 1, dtype=torch.long), attention_mask=torch.ones(B, N + 1),
                 prompt_length=1, response_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]), logprobs=torch.zeros(B, N),
                 ref_logprobs=torch.zeros(B, N), reward=torch.tensor([1.0, 0.0]), reward_values=torch.zeros(B, N),
                 cost=torch.tensor([2.0, -4.0]), cost_values=torch.zeros(B, N))
    cfg = ppo.PPOConfig(algorithm=algorithm, shaping_lambda=0.5, gamma=1.0, gae_lambda=1.0)
    ppo.compute_advantages(cfg, ALGORITHMS[algorithm], ro, beta=0.0)
    assert ro.reward_advantages.tolist() == [[want[0]] * 3, [want[1]] * 2 + [0.0]]
    assert (ro.cost_advantages is not None) == (algorithm == "ppo_lag")
    if algorithm == "ppo_lag":
        assert ro.cost_advantages.tolist() == [[2.0] * 3, [-4.0] * 2 + [0.0]]
