"""Evaluation intervals resample prompts, not responses (issue 20): the cluster bootstrap of a mean and of Elo
against naive loops, Wilson's interval at 0 and N, and the metrics built on them; the safety-verdict rule that
never mixes two judges unless asked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from saferlhf.eval.arena import (_seed_int, bootstrap_mean, cluster_bootstrap_mean, cluster_count_draws, elo_ratings,
                                 percentile_interval, rate_interval, wilson_interval)


def test_wilson_by_hand():
    z = 1.959963984540054
    lo, hi = wilson_interval(0, 448)
    assert lo == 0.0 and hi == pytest.approx(z * z / (448 + z * z)) and hi == pytest.approx(0.0085, abs=5e-5)
    lo, hi = wilson_interval(448, 448)
    assert hi == 1.0 and lo == pytest.approx(448 / (448 + z * z))
    # 3 of 10, by the textbook formula
    p, n = 0.3, 10
    c, h = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson_interval(3, 10) == pytest.approx(((c - h) / (1 + z * z / n), (c + h) / (1 + z * z / n)))


def test_cluster_bootstrap_mean_equals_a_naive_loop():
    clusters = [[1.0, 0.0], [1.0], [0.0, 0.0, 1.0], [0.5, 1.0], [0.0]]
    n = 200
    rng = np.random.default_rng(_seed_int("mean-bootstrap/3"))
    picks = rng.integers(0, len(clusters), size=(n, len(clusters)))
    means = []
    for row in picks:  # one resample: the drawn clusters' values pooled
        values = [v for c in row for v in clusters[c]]
        means.append(sum(values) / len(values))
    want = percentile_interval(means, 0.95)
    m, lo, hi = cluster_bootstrap_mean(clusters, n, seed=3)
    assert m == pytest.approx(sum(map(sum, clusters)) / sum(map(len, clusters)))
    assert (lo, hi) == pytest.approx(want)


def test_correlated_samples_widen_the_interval():
    """2 samples per prompt that always agree: resampling responses counts each prompt twice as evidence."""
    clusters = [[1.0, 1.0]] * 30 + [[0.0, 0.0]] * 70
    _, lo_r, hi_r = bootstrap_mean([v for c in clusters for v in c], 2000)
    _, lo_c, hi_c = cluster_bootstrap_mean(clusters, 2000)
    assert (hi_c - lo_c) > 1.3 * (hi_r - lo_r)  # about sqrt(2) wider


def test_rate_interval_is_wilson_at_0_and_n_else_the_cluster_bootstrap():
    zeros = [[0.0, 0.0]] * 224
    assert rate_interval(zeros) == pytest.approx((0.0, *wilson_interval(0, 448)))
    assert rate_interval([[1.0]] * 5) == pytest.approx((1.0, *wilson_interval(5, 5)))
    mixed = [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    assert rate_interval(mixed, 100, 1) == cluster_bootstrap_mean(mixed, 100, 1)


def test_cluster_count_draws_equals_a_naive_loop():
    ids = [0, 1, 1, 2, 0, 0]  # comparison k's category
    clusters = ["p", "p", "q", "q", "r", "r"]
    n = 50
    draws = cluster_count_draws(ids, 3, clusters, n, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    picks = rng.multinomial(3, [1 / 3] * 3, size=n)
    for b in range(n):
        want = [0.0, 0.0, 0.0]
        for c, name in enumerate(["p", "q", "r"]):
            for k, cat in zip(clusters, ids):
                if k == name:
                    want[cat] += picks[b, c]
        assert draws[b].tolist() == want
    assert cluster_count_draws(ids, 3, None, n, np.random.default_rng(0)).sum(1).tolist() == [6.0] * n


def test_elo_interval_resamples_prompts():
    """Each prompt's comparison repeated (2 samples per prompt): with the prompt clusters the interval is as wide
    as for the prompts alone; resampling comparisons one by one makes it narrower."""
    rng = np.random.default_rng(0)
    per_prompt = [("a", "b", float(o)) for o in rng.choice([0.0, 1.0], size=60, p=[0.4, 0.6])]
    twice = [c for c in per_prompt for _ in range(2)]
    prompts = [k for k in range(60) for _ in range(2)]
    width = lambda r: r["b"]["high"] - r["b"]["low"]  # noqa: E731
    naive = width(elo_ratings(["a", "b"], twice, bootstrap=400))
    clustered = width(elo_ratings(["a", "b"], twice, bootstrap=400, clusters=prompts))
    alone = width(elo_ratings(["a", "b"], per_prompt, bootstrap=400))
    assert clustered > 1.25 * naive and clustered == pytest.approx(alone, rel=0.25)


def test_policy_metrics_cluster_by_prompt_and_wilson_at_zero():
    from saferlhf.eval.suite import PromptItem, policy_metrics

    items = [PromptItem(f"p{k}", label="unsafe", category="c") for k in range(224) for _ in range(2)]
    rows = [{"harmful": False, "response": "no"} for _ in items]
    m = policy_metrics(items, rows, 2, bootstrap=100)
    assert m["harmful_rate"] == 0.0 and m["harmful_rate_ci"] == pytest.approx([0.0, 0.00850], abs=5e-5)
    assert m["harmful_rate_by_category"]["c"]["ci"][1] > 0


class _Fake:
    def __init__(self, name, verdicts):
        self.name, self.verdicts = name, verdicts

    def judge_batch(self, prompts, responses):
        return self.verdicts


def test_a_failed_llm_verdict_is_never_replaced_unless_asked():
    from saferlhf.eval.judges import Verdict
    from saferlhf.eval.suite import PromptItem, judge_rows, policy_metrics

    items = [PromptItem("p1", label="unsafe"), PromptItem("p2", label="unsafe")]
    llm = _Fake("llm", [Verdict(unsafe=False), Verdict(error="HTTP 500")])
    cost = _Fake("cost_model", [Verdict(cost=2.0, unsafe=True), Verdict(cost=3.0, unsafe=True)])
    rows = judge_rows(items, ["r1", "r2"], [llm, cost])
    assert [r["harmful"] for r in rows] == [False, None] and [r["unsafe_by"] for r in rows] == ["llm", None]
    assert rows[1]["judge_error"] == "llm: HTTP 500" and rows[1]["cost"] == 3.0  # other fields still merge
    m = policy_metrics(items, rows, 1, bootstrap=0)
    assert m["harmful_rate"] == 0.0 and m["judge_failures"] == 1 and m["judge_substituted"] == 0
    rows = judge_rows(items, ["r1", "r2"], [llm, cost], fallback=True)
    assert [r["harmful"] for r in rows] == [False, True] and rows[1]["unsafe_by"] == "cost_model"
    m = policy_metrics(items, rows, 1, bootstrap=0)
    assert m["harmful_rate"] == 0.5 and m["judge_failures"] == 1 and m["judge_substituted"] == 1


def test_baseline_win_rate_interval_resamples_prompts():
    from saferlhf.eval.suite import baseline_win_rates

    def rows(helpful):
        return [{"prompt": f"p{k // 2}", "helpfulness": h} for k, h in enumerate(helpful)]

    records = {"base": rows([0.5] * 40), "new": rows([1.0, 1.0, 0.0, 0.0] * 10)}
    got = baseline_win_rates(records, "base", bootstrap=200)
    assert got["new"]["win_rate_vs_base"] == 0.5 and "win_rate_vs_base_ci" not in got["base"]
    lo, hi = got["new"]["win_rate_vs_base_ci"]
    assert lo < 0.5 < hi
