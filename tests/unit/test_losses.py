"""saferlhf.losses vs hand-computed numbers and naive python loops (algorithm-reference §1, §2, §4)."""

from __future__ import annotations

import math

import pytest
import torch

from saferlhf.losses import (
    cost_loss,
    critic_loss,
    dpo_loss,
    entropy_from_logits,
    ppo_actor_loss,
    reward_loss,
    sequence_logprobs,
    sft_loss,
    summed_response_logprobs,
)


def log_sigmoid(x: float) -> float:
    return math.log(1.0 / (1.0 + math.exp(-x)))


def prefix_mask(lengths: list[int], T: int) -> torch.Tensor:
    return torch.tensor([[1 if t < n else 0 for t in range(T)] for n in lengths], dtype=torch.bool)


def naive_log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(z - m) for z in row))
    return [z - lse for z in row]


# --------------------------------------------------------------------------- reward model


def test_reward_loss_hand_values():
    rw, rl = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.5])
    mu = 0.001
    expected = -(log_sigmoid(1.0) + log_sigmoid(-1.5)) / 2 + mu * ((4 + 1) + (1 + 0.25)) / 2 / 2
    loss, d = reward_loss(rw, rl, l2_coef=mu)
    assert loss.item() == pytest.approx(expected)
    assert d == {
        "loss": pytest.approx(expected),
        "accuracy": 0.5,
        "reward_chosen": pytest.approx(0.5),
        "reward_rejected": pytest.approx(0.75),
        "margin": pytest.approx(-0.25),
    }
    assert all(type(v) is float for v in d.values())


def test_reward_loss_gradient_separates_pair():
    rw = torch.tensor([0.0], requires_grad=True)
    rl = torch.tensor([0.0], requires_grad=True)
    reward_loss(rw, rl)[0].backward()
    assert rw.grad.item() == pytest.approx(-0.5) and rl.grad.item() == pytest.approx(0.5)


# --------------------------------------------------------------------------- cost model


def test_cost_loss_hand_values_with_labels():
    cs, cu = torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 0.25])
    safer_safe, unsafer_safe = torch.tensor([True, True]), torch.tensor([False, True])
    mu = 0.01
    # example 0: safer safe (ξ=-1), unsafer unsafe (ξ=+1); example 1: both safe
    l0 = log_sigmoid(2.0 - -1.0) + log_sigmoid(-1 * -1.0) + log_sigmoid(+1 * 2.0)
    l1 = log_sigmoid(0.25 - 0.5) + log_sigmoid(-1 * 0.5) + log_sigmoid(-1 * 0.25)
    l2 = mu * (1 + 4 + 0.25 + 0.0625) / 4  # mean of c² over all four scores
    expected = -(l0 + l1) / 2 + l2
    loss, d = cost_loss(cs, cu, safer_safe, unsafer_safe, l2_coef=mu)
    assert loss.item() == pytest.approx(expected)
    assert d["loss"] == pytest.approx(expected)
    assert d["accuracy"] == 0.5  # 2 > -1 yes, 0.25 > 0.5 no
    # signs: -1 safe ok, 2 unsafe ok, 0.5 safe wrong, 0.25 safe wrong -> 2/4
    assert d["sign_accuracy"] == 0.5
    assert d["cost_safer"] == pytest.approx(-0.25) and d["cost_unsafer"] == pytest.approx(1.125)


def test_cost_loss_ranking_only_without_labels():
    cs, cu = torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 0.25])
    expected = -(log_sigmoid(3.0) + log_sigmoid(-0.25)) / 2 + 0.001 * (1 + 4 + 0.25 + 0.0625) / 4
    loss, d = cost_loss(cs, cu, None, None)
    assert loss.item() == pytest.approx(expected)
    assert math.isnan(d["sign_accuracy"])
    # ranking only: shifting both costs by a constant changes only the L2 term
    loss_shift, _ = cost_loss(cs + 3, cu + 3, None, None, l2_coef=0.0)
    loss_plain, _ = cost_loss(cs, cu, None, None, l2_coef=0.0)
    assert loss_shift.item() == pytest.approx(loss_plain.item())
    with pytest.raises(ValueError):
        cost_loss(cs, cu, torch.tensor([True, True]), None)


def test_cost_loss_has_labels_mask():
    cs, cu = torch.tensor([-1.0, 0.5]), torch.tensor([2.0, 0.25])
    safer_safe, unsafer_safe = torch.tensor([True, True]), torch.tensor([False, True])
    has = torch.tensor([True, False])
    l0 = log_sigmoid(3.0) + log_sigmoid(1.0) + log_sigmoid(2.0)
    l1 = log_sigmoid(-0.25)  # unlabelled: ranking term only
    loss, d = cost_loss(cs, cu, safer_safe, unsafer_safe, l2_coef=0.0, has_labels=has)
    assert loss.item() == pytest.approx(-(l0 + l1) / 2)
    assert d["sign_accuracy"] == 1.0  # only example 0 counts: both signs right
    _, none = cost_loss(cs, cu, safer_safe, unsafer_safe, has_labels=torch.tensor([False, False]))
    assert math.isnan(none["sign_accuracy"])


def test_cost_loss_right_signs_give_lower_loss():
    safer_safe, unsafer_safe = torch.tensor([True]), torch.tensor([False])
    right, _ = cost_loss(torch.tensor([-1.0]), torch.tensor([1.0]), safer_safe, unsafer_safe)
    wrong_up, _ = cost_loss(torch.tensor([1.0]), torch.tensor([3.0]), safer_safe, unsafer_safe)
    wrong_down, _ = cost_loss(torch.tensor([-3.0]), torch.tensor([-1.0]), safer_safe, unsafer_safe)
    assert right.item() < wrong_up.item() and right.item() < wrong_down.item()
    # same margin (2) in all three: only the sign terms differ; without labels they tie (no L2)
    r0, _ = cost_loss(torch.tensor([-1.0]), torch.tensor([1.0]), None, None, l2_coef=0.0)
    r1, _ = cost_loss(torch.tensor([1.0]), torch.tensor([3.0]), None, None, l2_coef=0.0)
    assert r0.item() == pytest.approx(r1.item())
    # gradient pushes an unsafe response's cost up and a safe one's down, even when both are unsafe
    c_s = torch.tensor([0.0], requires_grad=True)
    c_u = torch.tensor([0.0], requires_grad=True)
    cost_loss(c_s, c_u, torch.tensor([False]), torch.tensor([False]))[0].backward()
    assert c_u.grad.item() < 0  # descent raises c_u
    assert c_s.grad.item() == pytest.approx(0.5 - 0.5)  # ranking pushes down, sign term pushes up


# --------------------------------------------------------------------------- language modelling


def test_sft_loss_vs_naive_loop():
    torch.manual_seed(0)
    B, T, V = 3, 5, 7
    logits = torch.randn(B, T, V)
    labels = torch.randint(0, V, (B, T))
    labels[0, :3] = -100
    labels[2, 4] = -100
    loss, d = sft_loss(logits, labels)
    total, n = 0.0, 0
    for b in range(B):
        for t in range(T - 1):
            y = labels[b, t + 1].item()
            if y == -100:
                continue
            total -= naive_log_softmax(logits[b, t].tolist())[y]
            n += 1
    assert d["n_tokens"] == n == 3 * 4 - 2 - 1
    assert loss.item() == pytest.approx(total / n, rel=1e-5)


def test_sft_loss_at_kept_positions_equals_the_full_loss():
    """logits computed only at the positions that predict a label give the same loss."""
    torch.manual_seed(0)
    B, T, V = 3, 6, 5
    logits = torch.randn(B, T, V)
    labels = torch.randint(0, V, (B, T))
    labels[0, :4] = -100
    labels[1, :2] = -100
    labels[2, :] = -100
    labels[1, 5] = -100
    positions = torch.zeros(B, T, dtype=torch.bool)  # (b, t) with labels[b, t + 1] set
    positions[0, 3:5] = True
    positions[1, 1:4] = True
    full, d_full = sft_loss(logits, labels)
    kept, d_kept = sft_loss(logits[positions], labels, positions)
    assert d_kept["n_tokens"] == d_full["n_tokens"] == 2 + 3
    assert kept.item() == pytest.approx(full.item(), rel=1e-6)


def test_sft_loss_hand_and_all_ignored():
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 5.0]]])  # position 0: p = (1/4, 3/4)
    loss, d = sft_loss(logits, torch.tensor([[-100, 1]]))
    assert loss.item() == pytest.approx(-math.log(0.75))
    assert d == {"loss": pytest.approx(-math.log(0.75)), "n_tokens": 1.0}
    loss, d = sft_loss(logits, torch.tensor([[-100, -100]]))
    assert loss.item() == 0.0 and d["n_tokens"] == 0.0


def test_sequence_logprobs_vs_naive_loop():
    torch.manual_seed(1)
    B, T, V = 2, 6, 5
    logits = torch.randn(B, T, V, dtype=torch.float64).to(torch.bfloat16)
    ids = torch.randint(0, V, (B, T))
    out = sequence_logprobs(logits, ids)
    assert out.shape == (B, T - 1) and out.dtype == torch.float32
    for b in range(B):
        for t in range(T - 1):
            expected = naive_log_softmax(logits[b, t].float().tolist())[ids[b, t + 1].item()]
            assert out[b, t].item() == pytest.approx(expected, abs=1e-5)


def test_summed_response_logprobs():
    logp = torch.tensor([[-1.0, -2.0, -3.0, float("nan")], [-0.5, -0.25, -4.0, -8.0]])
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])
    assert summed_response_logprobs(logp, mask).tolist() == pytest.approx([-5.0, -12.75])


def test_dpo_loss_hand_values():
    pc, pr = torch.tensor([-10.0, -3.0]), torch.tensor([-12.0, -2.0])
    rc, rr = torch.tensor([-11.0, -3.0]), torch.tensor([-11.0, -4.0])
    beta = 0.5
    chosen = [0.5 * 1.0, 0.5 * 0.0]
    rejected = [0.5 * -1.0, 0.5 * 2.0]
    expected = -(log_sigmoid(chosen[0] - rejected[0]) + log_sigmoid(chosen[1] - rejected[1])) / 2
    loss, d = dpo_loss(pc, pr, rc, rr, beta=beta)
    assert loss.item() == pytest.approx(expected)
    assert d == {
        "loss": pytest.approx(expected),
        "accuracy": 0.5,
        "chosen_reward": pytest.approx(0.25),
        "rejected_reward": pytest.approx(0.25),
        "margin": pytest.approx(0.0),
    }
    # at the reference policy the loss is log 2
    z = torch.zeros(3)
    assert dpo_loss(z - 1, z - 2, z - 1, z - 2)[0].item() == pytest.approx(math.log(2))


def test_dpo_pipeline_vs_naive_per_token_loop():
    """Response log-probs include the FIRST response token (the reference drops it, §4)."""
    torch.manual_seed(2)
    V, T = 6, 7
    ids = torch.randint(0, V, (4, T))  # rows: policy chosen, policy rejected share ids with ref rows
    policy_logits, ref_logits = torch.randn(4, T, V), torch.randn(4, T, V)
    prompt_len, resp_len = [2, 3, 2, 3], [5, 2, 5, 2]  # rows 0/2 chosen, 1/3 rejected
    mask = torch.zeros(4, T - 1, dtype=torch.bool)
    for b in range(4):
        mask[b, prompt_len[b] - 1 : prompt_len[b] - 1 + resp_len[b]] = True
    pol = summed_response_logprobs(sequence_logprobs(policy_logits, ids), mask)
    ref = summed_response_logprobs(sequence_logprobs(ref_logits, ids), mask)

    def naive(logits, b):
        total = 0.0
        for t in range(prompt_len[b], prompt_len[b] + resp_len[b]):  # response tokens y_t
            total += naive_log_softmax(logits[b, t - 1].tolist())[ids[b, t].item()]
        return total

    for b in range(4):
        assert pol[b].item() == pytest.approx(naive(policy_logits, b), abs=1e-5)
    loss, _ = dpo_loss(pol[[0, 2]], pol[[1, 3]], ref[[0, 2]], ref[[1, 3]], beta=0.1)
    expected = 0.0
    for c, r in [(0, 1), (2, 3)]:
        h = 0.1 * ((naive(policy_logits, c) - naive(ref_logits, c)) - (naive(policy_logits, r) - naive(ref_logits, r)))
        expected -= log_sigmoid(h) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)


# --------------------------------------------------------------------------- PPO


def test_ppo_actor_loss_hand_values():
    # one sequence of 3 valid tokens + 1 padding; ε = 0.2
    logp = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1), 0.0]])
    old = torch.zeros(1, 4)
    adv = torch.tensor([[2.0, -1.0, 3.0, 100.0]])
    mask = prefix_mask([3], 4)
    # token 0: ρ=1.5, A=2  -> min(3.0, 1.2*2=2.4) = 2.4 (clipped binds)
    # token 1: ρ=0.5, A=-1 -> min(-0.5, 0.8*-1=-0.8) = -0.8 (clipped binds)
    # token 2: ρ=1.1, A=3  -> min(3.3, 3.3) = 3.3 (inside the range)
    expected = -(2.4 - 0.8 + 3.3) / 3
    loss, d = ppo_actor_loss(logp, old, adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(expected)
    assert d["clip_frac"] == pytest.approx(2 / 3)
    kl = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert d["approx_kl"] == pytest.approx(sum(kl) / 3)
    assert d["ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.1) / 3)
    assert all(type(v) is float for v in d.values())


def test_ppo_clip_does_not_bind_when_it_helps():
    # ρ = 1.5 with A < 0: unclipped term -1.5 is the min, the clip is not active (|ρ-1| > ε alone is not enough)
    logp = torch.tensor([[math.log(1.5)]], requires_grad=True)
    loss, d = ppo_actor_loss(logp, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(1.5) and d["clip_frac"] == 0.0
    loss.backward()
    assert logp.grad.item() == pytest.approx(1.5)  # d(-ρA)/dlogp = -A·ρ
    # when the clip binds the gradient is zero
    logp2 = torch.tensor([[math.log(1.5)]], requires_grad=True)
    ppo_actor_loss(logp2, torch.zeros(1, 1), torch.tensor([[1.0]]), torch.ones(1, 1))[0].backward()
    assert logp2.grad.item() == 0.0


def test_ppo_actor_loss_vs_naive_loop():
    torch.manual_seed(3)
    lengths = [6, 1, 3, 0, 4]
    B, T, eps = len(lengths), 6, 0.2
    logp = torch.randn(B, T) * 0.3 - 2
    old = logp + torch.randn(B, T) * 0.3
    adv = torch.randn(B, T)
    mask = prefix_mask(lengths, T)
    loss, d = ppo_actor_loss(logp, old, adv, mask, clip_eps=eps)
    seq_means, n_clip, n_tok, kl, ratios = [], 0, 0, 0.0, 0.0
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        token_losses = []
        for t in range(n):
            rho = math.exp(logp[b, t].item() - old[b, t].item())
            a = adv[b, t].item()
            s1, s2 = rho * a, max(1 - eps, min(1 + eps, rho)) * a
            token_losses.append(-min(s1, s2))
            n_clip += s2 < s1
            n_tok += 1
            kl += (rho - 1) - math.log(rho)
            ratios += rho
        seq_means.append(sum(token_losses) / n)
    assert loss.item() == pytest.approx(sum(seq_means) / len(seq_means), abs=1e-5)
    assert d["clip_frac"] == pytest.approx(n_clip / n_tok)
    assert d["approx_kl"] == pytest.approx(kl / n_tok, abs=1e-6)
    assert d["ratio_mean"] == pytest.approx(ratios / n_tok, abs=1e-6)


def test_ppo_actor_loss_sequence_then_batch_averaging():
    # a long sequence does not outweigh a short one: ρ = 1 so ℓ_t = -A_t
    adv = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-3.0, 0.0, 0.0, 0.0]])
    mask = prefix_mask([4, 1], 4)
    loss, _ = ppo_actor_loss(torch.zeros(2, 4), torch.zeros(2, 4), adv, mask)
    assert loss.item() == pytest.approx(-(1.0 + -3.0) / 2)  # = 1.0; a flat token mean would give -(4 - 3) / 5


def test_critic_loss_hand_values():
    values = torch.tensor([[10.0, 1.0, 0.0]])
    old = torch.tensor([[0.0, 0.5, 0.0]])
    returns = torch.tensor([[6.0, 2.0, 7.0]])
    mask = prefix_mask([2], 3)
    # token 0: V=10 clip to 0+5=5 -> max((10-6)², (5-6)²) = 16 (unclipped active)
    # token 1: V=1 within 0.5±5 -> max(1, 1) = 1
    loss, d = critic_loss(values, old, returns, mask, clip_range=5.0)
    assert loss.item() == pytest.approx(0.5 * (16 + 1) / 2)
    assert d["value_clip_frac"] == 0.0
    # V=10 with G=12: clipped 5 is further from G -> clipped term active
    loss, d = critic_loss(torch.tensor([[10.0]]), torch.zeros(1, 1), torch.tensor([[12.0]]), torch.ones(1, 1))
    assert loss.item() == pytest.approx(0.5 * 49) and d["value_clip_frac"] == 1.0


def test_critic_loss_vs_naive_loop():
    torch.manual_seed(4)
    lengths = [5, 2, 0, 3]
    B, T, c = len(lengths), 5, 0.3
    values, old, returns = torch.randn(B, T), torch.randn(B, T), torch.randn(B, T)
    mask = prefix_mask(lengths, T)
    loss, d = critic_loss(values, old, returns, mask, clip_range=c)
    seq_means, n_clip, n_tok = [], 0, 0
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        per_tok = []
        for t in range(n):
            v, vo, g = values[b, t].item(), old[b, t].item(), returns[b, t].item()
            vc = vo + max(-c, min(c, v - vo))
            per_tok.append(max((v - g) ** 2, (vc - g) ** 2))
            n_clip += (vc - g) ** 2 > (v - g) ** 2
            n_tok += 1
        seq_means.append(sum(per_tok) / n)
    assert loss.item() == pytest.approx(0.5 * sum(seq_means) / len(seq_means), abs=1e-5)
    assert d["value_clip_frac"] == pytest.approx(n_clip / n_tok)


def test_entropy_from_logits():
    V = 8
    uniform = torch.zeros(1, 2, V)
    assert entropy_from_logits(uniform, torch.ones(1, 2)).item() == pytest.approx(math.log(V))
    # banned tokens at -inf: entropy of the remaining uniform part, finite gradient
    z = torch.zeros(1, 1, V)
    z[..., :4] = float("-inf")
    z.requires_grad_(True)
    h = entropy_from_logits(z, torch.ones(1, 1))
    assert h.item() == pytest.approx(math.log(4))
    h.backward()
    assert torch.isfinite(z.grad).all()
    torch.manual_seed(5)
    logits = torch.randn(2, 3, 5)
    mask = prefix_mask([3, 1], 3)
    ents = []
    for b, n in enumerate([3, 1]):
        for t in range(n):
            lp = naive_log_softmax(logits[b, t].tolist())
            ents.append(-sum(math.exp(x) * x for x in lp))
    assert entropy_from_logits(logits, mask).item() == pytest.approx(sum(ents) / len(ents), abs=1e-6)
