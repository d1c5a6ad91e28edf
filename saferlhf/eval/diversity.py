"""Diversity of a policy's responses, to watch for mode collapse (pure functions on texts).

* ``distinct_n`` (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
  Models"): distinct n-grams / all n-grams over a set of responses;
* ``rouge_l`` (Lin 2004): F-measure of the longest common subsequence of two token lists (β = 1);
  ``pairwise_rouge_l``: its mean over every pair of samples of one prompt (high = the samples repeat each
  other). Tokens are lower-cased whitespace words.
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
