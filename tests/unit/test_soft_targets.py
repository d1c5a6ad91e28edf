"""Soft targets (`annotate export --aggregation soft`): loading PKU records with vote shares, the soft
Bradley-Terry and confidence-weighted cost losses against hand-computed values and a naive loop, and the
exact reduction to the hard losses."""

from __future__ import annotations

import json
import math

import pytest
import torch

from saferlhf.data.loaders import load_preference_pairs
from saferlhf.data.validate import DataValidationError
from saferlhf.losses import cost_loss, mixed_score_loss, reward_loss, soft_cost_loss, soft_reward_loss
from saferlhf.packing import EncodedPair
from saferlhf.recipes.score_model import pair_loss, soft_targets


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _record(**extra) -> dict:
    return {"prompt": "p", "response_0": "a", "response_1": "b", "is_response_0_safe": True,
            "is_response_1_safe": False, "better_response_id": 1, "safer_response_id": 0} | extra


def _write(path, *records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# --------------------------------------------------------------------------- data


def test_pairs_carry_the_soft_targets(tmp_path):
    f = _write(tmp_path / "soft.jsonl", _record(better_response_prob=0.75, safer_response_prob=2 / 3,
                                                response_0_unsafe_prob=0.25, response_1_unsafe_prob=1),
               _record(prompt="q"))
    soft, hard = load_preference_pairs(f, "reward")
    assert (soft.chosen, soft.target, soft.chosen_safe_conf, soft.rejected_safe_conf) == ("b", 0.75, 1.0, 0.75)
    assert (hard.target, hard.chosen_safe_conf, hard.rejected_safe_conf) == (None, None, None)
    soft = load_preference_pairs(f, "cost")[0]
    # cost: chosen = response_0 (safe, 1/4 unsafe votes: confidence 3/4), rejected = response_1 (unsafe, 1)
    assert (soft.chosen, soft.target, soft.chosen_safe_conf, soft.rejected_safe_conf) == ("a", 2 / 3, 0.75, 1.0)


@pytest.mark.parametrize("field,value", [("better_response_prob", 1.5), ("safer_response_prob", -0.1),
                                         ("response_0_unsafe_prob", "0.5"), ("response_1_unsafe_prob", True)])
def test_an_invalid_soft_target_names_file_line_and_field(tmp_path, field, value):
    f = _write(tmp_path / "bad.jsonl", _record(), _record(prompt="q", **{field: value}))
    with pytest.raises(DataValidationError) as e:
        load_preference_pairs(f, "cost")
    assert "bad.jsonl:2" in str(e.value) and field in str(e.value) and "probability in [0, 1]" in str(e.value)


def test_soft_fields_round_trip_through_to_dict(tmp_path):
    from saferlhf.data.loaders import load_safety_preferences

    rec = _record(better_response_prob=0.5, response_1_unsafe_prob=0.8)
    got = load_safety_preferences(_write(tmp_path / "a.jsonl", rec))[0].to_dict()
    assert got["better_response_prob"] == 0.5 and got["response_1_unsafe_prob"] == 0.8
    assert "safer_response_prob" not in got
    assert not {k for k in load_safety_preferences(_write(tmp_path / "b.jsonl", _record()))[0].to_dict()
                if k.endswith("_prob")}


# --------------------------------------------------------------------------- losses


def test_soft_reward_loss_hand_computed():
    r_w, r_l = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.5])
    p = torch.tensor([0.75, 0.5])
    mu = 0.01
    expected = -((0.75 * _logsig(1.0) + 0.25 * _logsig(-1.0)) + (0.5 * _logsig(-0.5) + 0.5 * _logsig(0.5))) / 2
    expected += mu * (1.0 + 0.25) / 2 / 2
    loss, d = soft_reward_loss(r_w, r_l, p, l2_coef=mu)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert d["target_mean"] == pytest.approx(0.625)


def test_soft_losses_differ_from_hard_when_p_below_one():
    r_w, r_l = torch.tensor([1.0, -0.3]), torch.tensor([0.2, 0.4])
    hard, _ = reward_loss(r_w, r_l)
    soft, _ = soft_reward_loss(r_w, r_l, torch.tensor([0.6, 1.0]))
    assert float(soft) != pytest.approx(float(hard), abs=1e-4)
    safe = torch.tensor([True, True]), torch.tensor([False, False])
    hard, _ = cost_loss(r_w, r_l, *safe)
    ones = torch.ones(2)
    soft, _ = soft_cost_loss(r_w, r_l, *safe, ones, torch.tensor([0.6, 1.0]), ones)
    assert float(soft) != pytest.approx(float(hard), abs=1e-4)
    # the soft BT optimum: σ(Δ) = p, not Δ -> ∞
    delta = torch.zeros(1, requires_grad=True)
    soft_reward_loss(delta, torch.zeros(1), torch.tensor([0.7]), l2_coef=0.0)[0].backward()
    assert float(delta.grad) == pytest.approx(-(0.7 - 0.5))


def test_soft_cost_loss_matches_a_naive_loop():
    g = torch.Generator().manual_seed(3)
    cs, cu = torch.randn(5, generator=g), torch.randn(5, generator=g)
    safe_s = torch.tensor([True, True, False, True, True])
    safe_u = torch.tensor([False, True, False, False, False])
    has = torch.tensor([True, True, True, False, True])
    p, ws, wu = torch.rand(5, generator=g), torch.rand(5, generator=g), torch.rand(5, generator=g)
    mu = 0.02
    total = 0.0
    for b in range(5):
        m = float(cu[b] - cs[b])
        ell = float(p[b]) * _logsig(m) + (1 - float(p[b])) * _logsig(-m)
        if has[b]:
            ell += float(ws[b]) * _logsig((-1 if safe_s[b] else 1) * float(cs[b]))
            ell += float(wu[b]) * _logsig((-1 if safe_u[b] else 1) * float(cu[b]))
        total -= ell
    expected = total / 5 + mu * float((cs ** 2 + cu ** 2).mean()) / 2
    loss, d = soft_cost_loss(cs, cu, safe_s, safe_u, p, ws, wu, l2_coef=mu, has_labels=has)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # the mixed loss with unit weights and no singles gives the same number
    empty = torch.zeros(0)
    mixed, _ = mixed_score_loss("cost", cs, cu, torch.ones(5), empty, torch.zeros(0, dtype=torch.bool), empty, mu,
                                chosen_is_safe=safe_s, rejected_is_safe=safe_u, has_labels=has, target=p,
                                chosen_conf=ws, rejected_conf=wu)
    torch.testing.assert_close(mixed, loss)


def _grads(fn, *scores):
    xs = [s.clone().requires_grad_(True) for s in scores]
    loss, _ = fn(*xs)
    loss.backward()
    return loss.detach(), [x.grad for x in xs]


def test_p_one_and_unit_confidence_are_bit_identical_to_the_hard_losses():
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(16, generator=g) * 3, torch.randn(16, generator=g) * 3
    ones = torch.ones(16)
    safe_s, safe_u = torch.rand(16, generator=g) > 0.3, torch.rand(16, generator=g) > 0.7
    has = torch.rand(16, generator=g) > 0.2
    pairs = [
        (lambda x, y: reward_loss(x, y), lambda x, y: soft_reward_loss(x, y, ones)),
        (lambda x, y: cost_loss(x, y, safe_s, safe_u, has_labels=has),
         lambda x, y: soft_cost_loss(x, y, safe_s, safe_u, ones, ones, ones, has_labels=has)),
    ]
    for hard, soft in pairs:
        (lh, gh), (ls, gs) = _grads(hard, a, b), _grads(soft, a, b)
        assert torch.equal(lh, ls) and all(torch.equal(x, y) for x, y in zip(gh, gs))


# --------------------------------------------------------------------------- batches


def test_batches_carry_soft_targets_only_when_present():
    hard = [EncodedPair([1, 2], [1, 3], True, False, 1), EncodedPair([4, 5], [4, 6], None, None, 1)]
    assert soft_targets(hard) == {}
    mixed = [hard[0], EncodedPair([1, 2], [1, 3], True, False, 1, 0.8, 0.9, None)]
    got = soft_targets(mixed)
    assert got["target"].tolist() == pytest.approx([1.0, 0.8])
    assert got["chosen_conf"].tolist() == pytest.approx([1.0, 0.9]) and got["rejected_conf"].tolist() == [1.0, 1.0]
    # pair_loss takes the soft loss with them and the plain one without
    scores = torch.tensor([0.4, -0.2, 0.1, 0.3])
    batch = {"has_labels": torch.tensor([True, True]), "chosen_is_safe": torch.tensor([True, True]),
             "rejected_is_safe": torch.tensor([False, False]), "pair_weight": torch.ones(2),
             "single_weight": torch.zeros(0)}
    plain, _ = pair_loss("cost", scores, batch, 0.001)
    assert torch.equal(plain, cost_loss(scores[:2], scores[2:], batch["chosen_is_safe"], batch["rejected_is_safe"],
                                        has_labels=batch["has_labels"])[0])
    soft, d = pair_loss("cost", scores, batch | got, 0.001)
    expected, _ = soft_cost_loss(scores[:2], scores[2:], batch["chosen_is_safe"], batch["rejected_is_safe"],
                                 got["target"], got["chosen_conf"], got["rejected_conf"], has_labels=batch["has_labels"])
    assert torch.equal(soft, expected) and "target_mean" in d
