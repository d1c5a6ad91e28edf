"""Best-of-k selection under a constraint and the cost-model classifier, against naive loops; the bounds by hand."""

from __future__ import annotations

import math

import pytest
import torch

from saferlhf.rl import best_of_k_bounds, best_of_k_choice, first_acceptable


def naive_choice(reward, cost, d):
    out = []
    for r, c in zip(reward, cost):
        ok = [j for j in range(len(r)) if c[j] <= d]
        if ok:
            out.append((max(ok, key=lambda j: (r[j], -j)), True))
        else:
            out.append((min(range(len(c)), key=lambda j: (c[j], j)), False))
    return out


def test_best_of_k_choice_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    reward, cost = torch.randn(200, 5, generator=g), torch.randn(200, 5, generator=g)
    idx, feasible = best_of_k_choice(reward, cost, threshold=-0.5)
    assert list(zip(idx.tolist(), feasible.tolist())) == naive_choice(reward.tolist(), cost.tolist(), -0.5)
    assert 0 < int(feasible.sum()) < 200  # both branches exercised


def test_best_of_k_by_hand():
    reward = torch.tensor([[1.0, 5.0, 3.0], [1.0, 5.0, 3.0]])
    cost = torch.tensor([[-1.0, 2.0, -0.5], [3.0, 2.0, 4.0]])
    idx, ok = best_of_k_choice(reward, cost)
    assert idx.tolist() == [2, 1] and ok.tolist() == [True, False]  # best safe; else the least unsafe
    idx, ok = best_of_k_choice(reward, None)
    assert idx.tolist() == [1, 1] and ok.all()


def test_best_of_k_choice_keeps_only_eligible_candidates():
    """rs-finetune passes `ended` as `eligible`: a cut-off answer is never kept, even with the best reward."""
    reward = torch.tensor([[9.0, 1.0, 2.0], [9.0, 1.0, 2.0], [9.0, 1.0, 2.0]])
    cost = torch.tensor([[-1.0, -1.0, 5.0], [-1.0, -1.0, -1.0], [-1.0, 3.0, -2.0]])
    eligible = torch.tensor([[False, True, True], [False, False, False], [False, True, True]])
    idx, ok = best_of_k_choice(reward, cost, 0.0, eligible)
    assert idx.tolist()[0] == 1 and ok.tolist() == [True, False, True] and idx.tolist()[2] == 2
    idx, ok = best_of_k_choice(reward, None, 0.0, eligible)
    assert idx.tolist()[0] == 2 and ok.tolist() == [True, False, True]
    g = torch.Generator().manual_seed(1)
    reward, cost = torch.randn(100, 4, generator=g), torch.randn(100, 4, generator=g)
    eligible = torch.rand(100, 4, generator=g) > 0.4
    idx, ok = best_of_k_choice(reward, cost, 0.0, eligible)
    for r, c, e, i, f in zip(reward.tolist(), cost.tolist(), eligible.tolist(), idx.tolist(), ok.tolist()):
        good = [j for j in range(4) if e[j] and c[j] <= 0.0]
        assert f == bool(good) and (not good or i == max(good, key=lambda j: r[j]))


def test_first_acceptable_is_the_cm_classifier():
    cost = torch.tensor([[1.0, -1.0, -2.0], [2.0, 3.0, 1.0], [-1.0, 5.0, 5.0]])
    idx, accepted = first_acceptable(cost)
    assert accepted.tolist() == [True, False, True] and idx[accepted].tolist() == [1, 0]


@pytest.mark.parametrize("k", [1, 4, 16])
def test_bounds(k):
    b = best_of_k_bounds(k)
    assert b["kl_upper_bound"] == pytest.approx(math.log(k) - (k - 1) / k)
    assert b["win_rate_upper_bound"] == pytest.approx(k / (k + 1))
