"""Pairwise PPO (P3O): the loss by hand, its gradient at ρ = 1, invariance to a per-prompt reward shift,
clipping, and the KL-regularised scores."""

from __future__ import annotations

import pytest
import torch

from saferlhf.losses import pairwise_ppo_loss
from saferlhf.rl import pairwise_scores


@pytest.mark.parametrize("joint", [False, True])
def test_gradient_at_ratio_one_is_half_the_score_difference(joint):
    """At π_θ = π_old: ∂L/∂log π(y_1) = -Δ/2 / B and ∂L/∂log π(y_2) = +Δ/2 / B (the P3O policy gradient)."""
    old = torch.tensor([[-5.0, -7.0], [-3.0, -2.0]])
    logp = old.clone().requires_grad_(True)
    scores = torch.tensor([[2.0, 0.5], [-1.0, 1.0]])
    loss, d = pairwise_ppo_loss(logp, old, scores, clip_eps=0.2, joint_clip=joint)
    loss.backward()
    delta = scores[:, 0] - scores[:, 1]
    expected = torch.stack([-delta / 2, delta / 2], 1) / 2  # mean over B = 2 prompts
    torch.testing.assert_close(logp.grad, expected)
    # at ρ = 1: separate clip -Σ_i A_i = 0 per prompt; joint clip -Δ/2
    assert loss.item() == pytest.approx(0.0 if not joint else -(delta.mean() / 2).item(), abs=1e-7)
    assert d["score_gap"] == pytest.approx(delta.abs().mean().item()) and d["clip_frac"] == 0.0


def test_separate_clip_by_hand_and_shift_invariance():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.5, -0.1]], requires_grad=True)  # ρ_1 = e^0.5 > 1.2 (clipped), ρ_2 = e^-0.1
    scores = torch.tensor([[3.0, 1.0]])  # Δ = 2: A_1 = +1, A_2 = -1
    loss, d = pairwise_ppo_loss(logp, old, scores, clip_eps=0.2)
    r1, r2 = torch.exp(torch.tensor(0.5)), torch.exp(torch.tensor(-0.1))
    term1 = min(r1 * 1.0, 1.2 * 1.0)
    term2 = min(r2 * -1.0, max(min(r2, 1.2), 0.8) * -1.0)
    assert loss.item() == pytest.approx(-(term1 + term2).item(), rel=1e-6)
    loss.backward()
    assert logp.grad[0, 0].item() == 0.0 and logp.grad[0, 1].item() != 0.0  # the clipped term has no gradient
    assert d["clip_frac"] == 0.5
    shifted, _ = pairwise_ppo_loss(logp.detach(), old, scores + 100.0, clip_eps=0.2)  # a per-prompt constant
    assert shifted.item() == pytest.approx(loss.item())


def test_joint_clip_by_hand():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.3, 0.0]])  # ρ = ρ_1 / ρ_2 = e^0.3 > 1.2
    loss, _ = pairwise_ppo_loss(logp, old, torch.tensor([[1.0, 0.0]]), clip_eps=0.2, joint_clip=True)
    assert loss.item() == pytest.approx(-1.2 * 1.0 / 2)
    loss, _ = pairwise_ppo_loss(logp, old, torch.tensor([[0.0, 1.0]]), clip_eps=0.2, joint_clip=True)
    assert loss.item() == pytest.approx(-(torch.exp(torch.tensor(0.3)) * -1.0).item() / 2)  # min keeps ρ·Δ


def test_pairwise_scores_by_hand():
    r, c, kl = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([3.0, 1.0])
    torch.testing.assert_close(pairwise_scores(r, None, 0.0, kl, 0.1, lagrangian=False), r - 0.1 * kl)
    torch.testing.assert_close(pairwise_scores(r, c, 2.0, kl, 0.1, lagrangian=True), (r - 2.0 * c) / 3.0 - 0.1 * kl)
    with pytest.raises(ValueError, match="needs the cost"):
        pairwise_scores(r, None, 1.0, kl, 0.1, lagrangian=True)
