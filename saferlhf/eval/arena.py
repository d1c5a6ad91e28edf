"""Pairwise comparisons, once: outcomes, win rates, win / tie / loss counts, the paper's 2×2 arena table,
Elo from a Bradley-Terry fit with bootstrap intervals, and bootstrap intervals of a mean."""

from __future__ import annotations

import math
from collections.abc import Sequence


def outcome(a: float, b: float) -> float:
    """1 if a > b, 0.5 on a tie, 0 if a < b (the win rate's unit)."""
    return 1.0 if a > b else 0.5 if a == b else 0.0


def win_rate(a: Sequence[float], b: Sequence[float]) -> float:
    """P(a > b) over paired items, ties counted one half; nan for no items."""
    if len(a) != len(b):
        raise ValueError(f"win_rate: {len(a)} items against {len(b)}")
    if not len(a):
        return float("nan")
    return sum(outcome(x, y) for x, y in zip(a, b)) / len(a)


def arena(reward_a: Sequence[float], cost_a: Sequence[float], reward_b: Sequence[float],
          cost_b: Sequence[float]) -> dict:
    """The paper's 2×2 arena (safe = cost <= 0): per cell "A_<safe|unsafe>__B_<safe|unsafe>", the number of
    paired items and A's reward win rate over B (`outcome`)."""
    cells: dict[str, list[float]] = {}
    for ra, ca, rb, cb in zip(reward_a, cost_a, reward_b, cost_b):
        key = f"A_{'safe' if ca <= 0 else 'unsafe'}__B_{'safe' if cb <= 0 else 'unsafe'}"
        cells.setdefault(key, []).append(outcome(ra, rb))
    return {k: {"count": len(v), "win_rate_A": sum(v) / len(v)} for k, v in sorted(cells.items())}


def win_tie_loss(a: Sequence[float], b: Sequence[float]) -> dict[str, int]:
    """Counts of a > b, a == b and a < b over paired items."""
    if len(a) != len(b):
        raise ValueError(f"win_tie_loss: {len(a)} items against {len(b)}")
    out = {"wins": 0, "ties": 0, "losses": 0}
    for x, y in zip(a, b):
        out["wins" if x > y else "ties" if x == y else "losses"] += 1
    return out


# --------------------------------------------------------------------------------------------------
# Elo from a Bradley-Terry fit (the paper's Elo figures; FastChat's "MLE Elo")
# --------------------------------------------------------------------------------------------------
ELO_BASE, ELO_SCALE, ELO_ANCHOR = 10.0, 400.0, 1000.0


def _counts(models: Sequence[str], comparisons: Sequence[tuple[str, str, float]]):
    """(index, categories [K, 3] of distinct (i, j, outcome), their counts [K]) of validated comparisons."""
    from collections import Counter

    index = {m: k for k, m in enumerate(models)}
    if len(index) != len(models):
        raise ValueError("bradley_terry: model names must be distinct")
    for a, b, o in comparisons:
        if a not in index or b not in index or a == b:
            raise ValueError(f"bradley_terry: bad comparison ({a!r}, {b!r})")
        if o not in (0.0, 0.5, 1.0):
            raise ValueError(f"bradley_terry: outcome must be 0, 0.5 or 1, got {o!r}")
    counted = Counter((index[a], index[b], float(o)) for a, b, o in comparisons)
    return index, list(counted), [float(c) for c in counted.values()]


def _bt_fit(n: int, categories, counts, prior: float, iters: int, tol: float):
    """Hunter's MM iteration for B count vectors at once: ``counts`` [B, K] over ``categories`` (i, j, o);
    returns strengths [B, n] with geometric mean 1."""
    import numpy as np

    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    B = counts.shape[0]
    wins = np.zeros((B, n))
    games = np.zeros((B, n, n))
    for k, (i, j, o) in enumerate(categories):
        c = counts[:, k]
        wins[:, i] += o * c
        wins[:, j] += (1.0 - o) * c
        games[:, i, j] += c
        games[:, j, i] += c
    off = 1.0 - np.eye(n)
    games += prior * off
    wins += 0.5 * prior * (n - 1)
    p = np.ones((B, n))
    for _ in range(iters):
        denom = (games / (p[:, :, None] + p[:, None, :])).sum(-1)  # diagonal games are 0
        new = np.where(denom > 0, wins / np.where(denom > 0, denom, 1.0), p)
        new = new / np.exp(np.log(np.maximum(new, 1e-300)).mean(-1, keepdims=True))
        done = bool((np.abs(new - p) / np.maximum(p, 1e-300)).max() < tol)
        p = new
        if done:
            break
    return p


def bradley_terry(models: Sequence[str], comparisons: Sequence[tuple[str, str, float]], prior: float = 0.01,
                  iters: int = 10_000, tol: float = 1e-12) -> dict[str, float]:
    """Bradley-Terry strengths p_i (P(i beats j) = p_i / (p_i + p_j)) by maximum likelihood.

    ``comparisons``: (model_a, model_b, outcome) with outcome 1 (a wins), 0.5 (tie: half a win each) or 0
    (b wins). Fitted by Hunter's (2004) MM iteration p_i <- W_i / sum_j n_ij / (p_i + p_j), W_i = wins of
    i with ties counted 0.5, n_ij = comparisons between i and j. ``prior`` adds that many virtual ties to
    every pair of models, so that a model without a win keeps a finite strength (0.01: negligible
    otherwise; 0 = the plain MLE, which needs every model to win and lose somewhere). Strengths are
    returned with geometric mean 1.
    """
    _, categories, counts = _counts(models, comparisons)
    return _strengths(models, categories, counts, prior, iters, tol)


def _strengths(models: Sequence[str], categories, counts, prior: float, iters: int = 10_000,
               tol: float = 1e-12) -> dict[str, float]:
    """`bradley_terry` on already counted comparisons."""
    p = _bt_fit(len(models), categories, [counts] if counts else [[]], prior, iters, tol)[0]
    return dict(zip(models, (float(x) for x in p)))


def elo_from_strengths(strengths: dict[str, float], anchor: str | None = None) -> dict[str, float]:
    """Elo_i = 1000 + 400·log10(p_i / p_anchor) (base 10, scale 400; the first model anchored at 1000)."""
    names = list(strengths)
    ref = strengths[anchor if anchor is not None else names[0]]
    return {m: ELO_ANCHOR + ELO_SCALE * math.log(s / ref, ELO_BASE) for m, s in strengths.items()}


def elo_ratings(models: Sequence[str], comparisons: Sequence[tuple[str, str, float]], *, bootstrap: int = 0,
                seed: int = 0, level: float = 0.95, prior: float = 0.01) -> dict[str, dict[str, float]]:
    """Elo per model from a Bradley-Terry fit of ``comparisons``; with ``bootstrap`` > 0 also the percentile
    interval (``level``) over fits to comparisons resampled with replacement: {model: {elo, low, high}}."""
    _, categories, counts = _counts(models, comparisons)
    elo = elo_from_strengths(_strengths(models, categories, counts, prior), models[0])  # counted once
    out = {m: {"elo": e} for m, e in elo.items()}
    if bootstrap and comparisons:
        import numpy as np

        # Resampling N comparisons with replacement = multinomial counts over the distinct (i, j, outcome)
        # categories with probabilities count / N: all resamples are drawn and fitted at once.
        rng = np.random.default_rng(_seed_int(f"elo-bootstrap/{seed}"))
        draws = rng.multinomial(len(comparisons), np.asarray(counts) / len(comparisons), size=bootstrap)
        p = _bt_fit(len(models), categories, draws, prior, iters=2000, tol=1e-9)
        elos = ELO_ANCHOR + ELO_SCALE * np.log(p / p[:, :1]) / math.log(ELO_BASE)
        for k, m in enumerate(models):
            out[m]["low"], out[m]["high"] = percentile_interval(elos[:, k].tolist(), level)
    return out


def _seed_int(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of ``values`` (linear interpolation)."""
    xs = sorted(values)
    if not xs:
        return float("nan"), float("nan")

    def q(f: float) -> float:
        pos = f * (len(xs) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return q((1 - level) / 2), q((1 + level) / 2)


def bootstrap_mean(values: Sequence[float], n: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of ``values`` and its percentile bootstrap interval (``n`` resamples)."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    import numpy as np

    rng = np.random.default_rng(_seed_int(f"mean-bootstrap/{seed}"))
    v = np.asarray(values, dtype=np.float64)
    k = len(v)
    means = v[rng.integers(0, k, size=(n, k))].mean(1) if n else np.asarray([])
    low, high = percentile_interval(means.tolist(), level)
    return float(v.mean()), low, high
