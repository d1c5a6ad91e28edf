"""Pairwise comparisons, once: outcomes, win rates, win / tie / loss counts, the paper's 2×2 arena table,
Elo from a Bradley-Terry fit with bootstrap intervals, and intervals of a mean or a rate.

Intervals resample PROMPTS, not responses (a cluster bootstrap): the samples of one prompt, and the
comparisons made on one prompt, are correlated, so resampling them one by one gives intervals that are too
narrow. A rate whose count is 0 or N gets a Wilson score interval instead (a bootstrap of all-equal values
collapses to [r, r])."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence


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
          cost_b: Sequence[float], threshold: float = 0.0) -> dict:
    """The paper's 2×2 arena (safe = cost <= ``threshold`` d; the paper's d = 0): per cell
    "A_<safe|unsafe>__B_<safe|unsafe>", the number of paired items and A's reward win rate over B (`outcome`)."""
    cells: dict[str, list[float]] = {}
    for ra, ca, rb, cb in zip(reward_a, cost_a, reward_b, cost_b):
        key = f"A_{'safe' if ca <= threshold else 'unsafe'}__B_{'safe' if cb <= threshold else 'unsafe'}"
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
                seed: int = 0, level: float = 0.95, prior: float = 0.01,
                clusters: Sequence[Hashable] | None = None) -> dict[str, dict[str, float]]:
    """Elo per model from a Bradley-Terry fit of ``comparisons``; with ``bootstrap`` > 0 also the percentile
    interval (``level``) over fits to resampled comparisons: {model: {elo, low, high}}. ``clusters[k]`` names the
    group of comparison k (its prompt): groups are resampled whole; without it each comparison is its own group."""
    _, categories, counts = _counts(models, comparisons)
    elo = elo_from_strengths(_strengths(models, categories, counts, prior), models[0])  # counted once
    out = {m: {"elo": e} for m, e in elo.items()}
    if bootstrap and comparisons:
        import numpy as np

        rng = np.random.default_rng(_seed_int(f"elo-bootstrap/{seed}"))
        index, position = {m: k for k, m in enumerate(models)}, {c: k for k, c in enumerate(categories)}
        ids = [position[index[a], index[b], float(o)] for a, b, o in comparisons]
        draws = cluster_count_draws(ids, len(categories), clusters, bootstrap, rng)
        p = _bt_fit(len(models), categories, draws, prior, iters=2000, tol=1e-9)
        elos = ELO_ANCHOR + ELO_SCALE * np.log(p / p[:, :1]) / math.log(ELO_BASE)
        for k, m in enumerate(models):
            out[m]["low"], out[m]["high"] = percentile_interval(elos[:, k].tolist(), level)
    return out


def cluster_count_draws(category_ids: Sequence[int], n_categories: int, clusters: Sequence[Hashable] | None,
                        n: int, rng) -> "np.ndarray":
    """[n, K] counts of the K distinct comparison categories in ``n`` cluster-bootstrap resamples.

    ``category_ids[k]``: the category of comparison k; ``clusters[k]``: its cluster (None: each comparison is
    its own). C clusters are drawn with replacement, each bringing all its comparisons: the draw counts [n, C]
    (multinomial) times the per-cluster category counts [C, K], every resample at once."""
    import numpy as np

    keys = list(range(len(category_ids))) if clusters is None else list(clusters)
    if len(keys) != len(category_ids):
        raise ValueError(f"cluster bootstrap: {len(keys)} cluster keys for {len(category_ids)} comparisons")
    cluster_of = {c: k for k, c in enumerate(dict.fromkeys(keys))}
    per_cluster = np.zeros((len(cluster_of), n_categories))
    for key, cat in zip(keys, category_ids):
        per_cluster[cluster_of[key], cat] += 1
    C = len(cluster_of)
    picks = rng.multinomial(C, np.full(C, 1.0 / C), size=n)
    return picks @ per_cluster


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
    """(mean, low, high): the mean of ``values`` and its percentile bootstrap interval (``n`` resamples of the
    values one by one: for independent values; see `cluster_bootstrap_mean` for several samples per prompt)."""
    return cluster_bootstrap_mean([[v] for v in values], n, seed, level)


def cluster_bootstrap_mean(clusters: Sequence[Sequence[float]], n: int = 1000, seed: int = 0,
                           level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of all values and its percentile interval over ``n`` cluster-bootstrap
    resamples: C clusters (the samples of one prompt) drawn with replacement, the mean taken over all values of
    the drawn clusters (sum of their sums / sum of their sizes)."""
    clusters = [list(c) for c in clusters if len(c)]
    if not clusters:
        return float("nan"), float("nan"), float("nan")
    import numpy as np

    rng = np.random.default_rng(_seed_int(f"mean-bootstrap/{seed}"))
    sums = np.asarray([sum(c) for c in clusters], dtype=np.float64)
    sizes = np.asarray([len(c) for c in clusters], dtype=np.float64)
    C = len(clusters)
    picks = rng.integers(0, C, size=(n, C)) if n else np.zeros((0, C), dtype=np.int64)
    means = sums[picks].sum(1) / sizes[picks].sum(1)
    low, high = percentile_interval(means.tolist(), level)
    return float(sums.sum() / sizes.sum()), low, high


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval of a proportion k / n: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n),
    z the normal quantile of (1 + level) / 2. Not degenerate at k = 0 or k = n (0 of 448: [0, 0.0085])."""
    if n <= 0:
        return float("nan"), float("nan")
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    denom = 1 + z * z / n
    low = 0.0 if k == 0 else max(0.0, (centre - half) / denom)  # exact bounds where rounding would miss them
    high = 1.0 if k == n else min(1.0, (centre + half) / denom)
    return low, high


def rate_interval(clusters: Sequence[Sequence[float]], n: int = 1000, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high) of 0/1 values grouped by prompt: the cluster bootstrap, or Wilson's interval over all
    values when every value is 0 or every value is 1 (where any bootstrap gives [r, r])."""
    values = [v for c in clusters for v in c]
    if not values:
        return float("nan"), float("nan"), float("nan")
    k = sum(values)
    if k == 0 or k == len(values):
        return k / len(values), *wilson_interval(int(k), len(values), level)
    return cluster_bootstrap_mean(clusters, n, seed, level)
