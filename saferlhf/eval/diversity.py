"""Diversity of a policy's responses, to watch for mode collapse (pure functions on texts).

* ``distinct_n`` (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
  Models"): distinct n-grams / all n-grams over a set of responses;
* ``rouge_l`` (Lin 2004): F-measure of the longest common subsequence of two token lists (β = 1);
  ``pairwise_rouge_l``: its mean over every pair of samples of one prompt (high = the samples repeat each
  other). Tokens are lower-cased whitespace words.
* ``mean_pairwise_cosine_distance``: mean of 1 - cos(u, v) over every pair of sentence embeddings (the
  embedding-based diversity used e.g. by Kirk et al. 2024, "Understanding the Effects of RLHF on LLM
  Generalisation and Diversity"); ``embedding_diversity`` reports it between the samples of one prompt and
  across the responses to different prompts (a policy that says the same thing to every prompt scores low).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def tokens(text: str) -> list[str]:
    return text.lower().split()


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / total n-grams over all ``texts`` (0 when there is no n-gram)."""
    if n < 1:
        raise ValueError("distinct_n: n must be >= 1")
    grams = [tuple(t[i:i + n]) for t in map(tokens, texts) for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a)·len(b)))."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 of two texts: 2·P·R / (P + R) with P = LCS/|a|, R = LCS/|b| (0 when either is empty)."""
    ta, tb = tokens(a), tokens(b)
    if not ta or not tb:
        return 0.0
    lcs = lcs_length(ta, tb)
    if not lcs:
        return 0.0
    p, r = lcs / len(ta), lcs / len(tb)
    return 2 * p * r / (p + r)


def pairwise_rouge_l(samples: Sequence[str]) -> float | None:
    """Mean ROUGE-L over all pairs of ``samples`` (the responses to ONE prompt); None for fewer than 2."""
    pairs = list(itertools.combinations(samples, 2))
    return sum(rouge_l(a, b) for a, b in pairs) / len(pairs) if pairs else None


def mean_pairwise_cosine_distance(vectors) -> float | None:
    """Mean of 1 - cos(v_i, v_j) over all pairs i < j of the rows of ``vectors`` ([N, D], any norm; zero rows
    count as distance 1); None for fewer than 2 rows. Closed form: (N² - |Σ u_i|²) / (N (N - 1)) over unit u_i."""
    import torch

    v = torch.as_tensor(vectors, dtype=torch.float64)
    n = v.shape[0]
    if n < 2:
        return None
    u = torch.nn.functional.normalize(v, dim=-1)
    total = u.sum(0).pow(2).sum() - u.pow(2).sum()  # Σ_{i != j} cos(u_i, u_j)
    return float(1.0 - total / (n * (n - 1)))


def evenly_spaced(n: int, k: int) -> list[int]:
    """At most ``k`` indices of range(n), evenly spaced, first and last included (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    if k <= 1:
        return [0][:k]
    return [round(i * (n - 1) / (k - 1)) for i in range(k)]


def embedding_diversity(vectors, n_samples: int, max_across: int = 256) -> dict[str, float]:
    """``vectors``: embeddings of a policy's responses, prompt-major with ``n_samples`` per prompt.
    ``embedding_distance``: mean pairwise distance between the samples of one prompt (n_samples > 1), averaged
    over prompts; ``embedding_distance_across_prompts``: mean pairwise distance between the first samples of
    (at most ``max_across``, evenly spaced) different prompts."""
    import torch

    vectors = torch.as_tensor(vectors, dtype=torch.float64)
    out: dict[str, float] = {}
    n = len(vectors)
    if n_samples > 1:
        within = [mean_pairwise_cosine_distance(vectors[k: k + n_samples]) for k in range(0, n, n_samples)]
        within = [d for d in within if d is not None]
        if within:
            out["embedding_distance"] = sum(within) / len(within)
    starts = range(0, n, n_samples)  # the first sample of each prompt
    firsts = [starts[k] for k in evenly_spaced(len(starts), max_across)]
    across = mean_pairwise_cosine_distance(vectors[firsts]) if len(firsts) > 1 else None
    if across is not None:
        out["embedding_distance_across_prompts"] = across
    return out
