"""A cost model as a harm classifier: unsafe = cost > threshold. Pure functions on (scores, labels).

* `binary_metrics`: accuracy, precision, recall, F1, false-positive rate at a threshold, plus AUROC;
* `auroc`: P(score of a random unsafe response > score of a random safe one), ties counted half
  (the Mann-Whitney U statistic divided by n_unsafe·n_safe);
* `best_f1_threshold` / `equal_error_threshold`: the decision threshold a cost model stores
  (``saferlhf.models.score.THRESHOLD_KEY``), calibrated on its own validation split.

Thresholds are midpoints between neighbouring distinct scores, so a stored threshold never sits exactly on a
validation score. Labels are booleans: True = unsafe (the positive class).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check(scores: Sequence[float], unsafe: Sequence[bool]) -> None:
    if len(scores) != len(unsafe):
        raise ValueError(f"{len(scores)} scores but {len(unsafe)} labels")


def auroc(scores: Sequence[float], unsafe: Sequence[bool]) -> float:
    """Area under the ROC curve (unsafe is positive); NaN when either class is empty. O(n log n) by ranks."""
    _check(scores, unsafe)
    n_pos = sum(bool(u) for u in unsafe)
    n_neg = len(unsafe) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum, i = 0.0, 0
    while i < len(order):  # average ranks (1-based) over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        rank_sum += mean_rank * sum(bool(unsafe[order[k]]) for k in range(i, j + 1))
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def binary_metrics(scores: Sequence[float], unsafe: Sequence[bool], threshold: float = 0.0) -> dict[str, float]:
    """Classification of ``unsafe`` by ``score > threshold``: n, positives (unsafe count), accuracy, precision,
    recall, f1, fpr (safe responses flagged unsafe), flagged (share predicted unsafe) and auroc. A ratio whose
    denominator is zero is NaN (e.g. precision when nothing is flagged); f1 is 0 when precision + recall is 0."""
    _check(scores, unsafe)
    tp = fp = tn = fn = 0
    for s, u in zip(scores, unsafe):
        flagged = s > threshold
        if u:
            tp += flagged
            fn += not flagged
        else:
            fp += flagged
            tn += not flagged
    n = tp + fp + tn + fn
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    if math.isnan(precision) or math.isnan(recall):
        f1 = float("nan") if tp + fn == 0 else 0.0
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"n": n, "positives": tp + fn, "accuracy": _ratio(tp + tn, n), "precision": precision,
            "recall": recall, "f1": f1, "fpr": _ratio(fp, fp + tn), "flagged": _ratio(tp + fp, n),
            "auroc": auroc(scores, unsafe)}


def candidate_thresholds(scores: Sequence[float]) -> list[float]:
    """Midpoints between neighbouring distinct scores, plus one below the lowest and one above the highest."""
    values = sorted(set(float(s) for s in scores))
    if not values:
        return [0.0]
    mids = [(a + b) / 2 for a, b in zip(values, values[1:])]
    return [values[0] - 1.0] + mids + [values[-1] + 1.0]


def best_f1_threshold(scores: Sequence[float], unsafe: Sequence[bool]) -> tuple[float, float]:
    """(threshold, F1) maximising F1 over `candidate_thresholds` (the lowest such threshold on ties).
    O(n log n): one sweep from the highest score down."""
    _check(scores, unsafe)
    n_pos = sum(bool(u) for u in unsafe)
    if not n_pos or n_pos == len(unsafe):
        raise ValueError("best_f1_threshold: needs both unsafe and safe responses")
    pairs = sorted(zip((float(s) for s in scores), (bool(u) for u in unsafe)), key=lambda p: -p[0])
    cands = candidate_thresholds(scores)
    best = (cands[-1], 0.0)  # flag nothing: F1 0
    tp = fp = 0
    i = 0
    # thresholds from high to low: a threshold t flags every score > t
    for t in reversed(cands):
        while i < len(pairs) and pairs[i][0] > t:
            tp += pairs[i][1]
            fp += not pairs[i][1]
            i += 1
        f1 = 2 * tp / (2 * tp + fp + (n_pos - tp)) if tp else 0.0
        if f1 >= best[1]:
            best = (t, f1)
    return best


def equal_error_threshold(scores: Sequence[float], unsafe: Sequence[bool]) -> tuple[float, float]:
    """(threshold, error) where the false-positive rate and the false-negative rate are closest (their mean at
    that point is the equal error rate), over `candidate_thresholds`."""
    _check(scores, unsafe)
    pos = [float(s) for s, u in zip(scores, unsafe) if u]
    neg = [float(s) for s, u in zip(scores, unsafe) if not u]
    if not pos or not neg:
        raise ValueError("equal_error_threshold: needs both unsafe and safe responses")
    best: tuple[float, float, float] | None = None
    for t in candidate_thresholds(scores):
        fpr = sum(s > t for s in neg) / len(neg)
        fnr = sum(s <= t for s in pos) / len(pos)
        key = abs(fpr - fnr)
        if best is None or key < best[2]:
            best = (t, (fpr + fnr) / 2, key)
    assert best is not None
    return best[0], best[1]
