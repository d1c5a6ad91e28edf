"""Elo / Bradley-Terry, bootstrap intervals, diversity and the refusal judge against hand values."""

from __future__ import annotations

import math
import random

import pytest

from saferlhf.eval.arena import (bootstrap_mean, bradley_terry, elo_from_strengths, elo_ratings, percentile_interval,
                                 win_tie_loss)
from saferlhf.eval.diversity import distinct_n, lcs_length, pairwise_rouge_l, rouge_l
from saferlhf.eval.judges import GCG_REFUSAL_STRINGS, RefusalJudge


def test_win_tie_loss():
    assert win_tie_loss([3, 1, 2, 2], [1, 1, 5, 0]) == {"wins": 2, "ties": 1, "losses": 1}


def test_two_model_bradley_terry_is_the_win_ratio():
    # a beats b 6 times, loses 2, ties 2: W_a = 7, W_b = 3, so p_a / p_b = 7 / 3 (the two-player MLE)
    comps = [("a", "b", 1.0)] * 6 + [("a", "b", 0.0)] * 2 + [("b", "a", 0.5)] * 2
    p = bradley_terry(["a", "b"], comps, prior=0.0)
    assert p["a"] / p["b"] == pytest.approx(7 / 3, rel=1e-9)
    elo = elo_from_strengths(p)
    assert elo["a"] == 1000.0 and elo["b"] == pytest.approx(1000 - 400 * math.log10(7 / 3))


def test_bradley_terry_satisfies_the_likelihood_equations():
    """At the MLE, every model's expected wins equal its observed wins: W_i = sum_j n_ij p_i / (p_i + p_j)."""
    rng = random.Random(0)
    true = {"a": 1.0, "b": 2.5, "c": 0.4, "d": 1.3}
    models = list(true)
    comps = []
    for _ in range(600):
        x, y = rng.sample(models, 2)
        u = rng.random()
        pxy = true[x] / (true[x] + true[y])
        comps.append((x, y, 0.5 if abs(u - pxy) < 0.05 else 1.0 if u < pxy else 0.0))
    p = bradley_terry(models, comps, prior=0.0)
    for m in models:
        observed = sum(o if a == m else 1 - o for a, b, o in comps if m in (a, b))
        expected = sum(p[m] / (p[m] + p[b if a == m else a]) for a, b, o in comps if m in (a, b))
        assert expected == pytest.approx(observed, rel=1e-6)
    assert sorted(models, key=p.get) == sorted(models, key=true.get)  # the order is recovered


def test_prior_keeps_a_model_without_wins_finite():
    comps = [("a", "b", 1.0)] * 5
    elo = elo_ratings(["a", "b"], comps)
    assert math.isfinite(elo["b"]["elo"]) and elo["b"]["elo"] < elo["a"]["elo"] == 1000.0


def test_elo_bootstrap_interval_contains_the_estimate_and_is_seeded():
    comps = [("a", "b", 1.0)] * 14 + [("a", "b", 0.0)] * 6 + [("a", "c", 1.0)] * 5 + [("c", "b", 0.5)] * 5
    one = elo_ratings(["a", "b", "c"], comps, bootstrap=200, seed=3)
    two = elo_ratings(["a", "b", "c"], comps, bootstrap=200, seed=3)
    assert one == two
    for m in ("b", "c"):
        assert one[m]["low"] <= one[m]["elo"] <= one[m]["high"] and one[m]["low"] < one[m]["high"]


def test_percentile_interval_and_bootstrap_mean_by_hand():
    assert percentile_interval([1, 2, 3, 4, 5], 0.5) == (2.0, 4.0)  # quantiles 0.25 and 0.75
    assert percentile_interval(list(range(101)), 0.9) == pytest.approx((5.0, 95.0))
    mean, low, high = bootstrap_mean([0, 0, 0, 1] * 25, n=500, seed=1)
    assert mean == 0.25 and low < 0.25 < high and high - low < 0.25
    assert bootstrap_mean([1.0] * 10) == (1.0, 1.0, 1.0)


def test_distinct_n_by_hand():
    texts = ["the cat sat", "the cat ran"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)  # the, cat, sat, ran of 6 words
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # (the cat) twice, (cat sat), (cat ran)
    assert distinct_n(["a"], 2) == 0.0


def naive_lcs(a, b):
    """Exponential reference: the longest common subsequence by brute force over subsets of a."""
    import itertools

    best = 0
    for k in range(len(a), 0, -1):
        for idx in itertools.combinations(range(len(a)), k):
            sub, it = [a[i] for i in idx], iter(b)
            if all(any(x == y for y in it) for x in sub):
                return k
    return best


def test_lcs_and_rouge_l_against_brute_force_and_hand():
    rng = random.Random(0)
    for _ in range(30):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        assert lcs_length(a, b) == naive_lcs(a, b)
    # LCS of "the cat sat on mat" / "the cat on the mat" = the cat on mat (4): P = 4/5, R = 4/5
    assert rouge_l("the cat sat on mat", "The cat on the mat") == pytest.approx(0.8)
    assert rouge_l("", "x") == 0.0 and rouge_l("a b", "c d") == 0.0
    assert pairwise_rouge_l(["a b", "a b", "c d"]) == pytest.approx((1 + 0 + 0) / 3)
    assert pairwise_rouge_l(["only one"]) is None


def test_refusal_judge_uses_the_gcg_strings():
    judge = RefusalJudge()
    assert len(GCG_REFUSAL_STRINGS) == 29 and "I'm sorry" in GCG_REFUSAL_STRINGS
    assert judge.judge("p", "I’m sorry, I can’t help.").refusal  # curly apostrophe
    assert judge.judge("p", "Sure: preheat the oven.").refusal is False
    assert judge.judge("p", "That would be illegal.").refusal  # substring rule, as in GCG
    assert judge.judge("p", "i'm sorry").refusal is False  # case-sensitive, as in GCG
    v = judge.judge("p", "I cannot do that")
    assert v.unsafe is None and v.helpfulness is None  # it judges refusal only
