"""A cost model as a classifier: metrics, AUROC and calibrated thresholds against hand values and naive loops."""

import math
import random

import pytest

from saferlhf.eval.classification import (auroc, best_f1_threshold, binary_metrics, candidate_thresholds,
                                          equal_error_threshold)


def naive_auroc(scores, unsafe):
    pos = [s for s, u in zip(scores, unsafe) if u]
    neg = [s for s, u in zip(scores, unsafe) if not u]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def naive_f1(scores, unsafe, t):
    tp = sum(s > t and u for s, u in zip(scores, unsafe))
    fp = sum(s > t and not u for s, u in zip(scores, unsafe))
    fn = sum(s <= t and u for s, u in zip(scores, unsafe))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_binary_metrics_by_hand():
    # scores > 0 flagged: tp = 2 (0.9, 0.2), fp = 1 (0.5), fn = 1 (-0.1), tn = 2
    scores = [0.9, 0.2, 0.5, -0.1, -0.3, -0.8]
    unsafe = [True, True, False, True, False, False]
    m = binary_metrics(scores, unsafe, 0.0)
    assert m["n"] == 6 and m["positives"] == 3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["fpr"] == pytest.approx(1 / 3)
    assert m["flagged"] == pytest.approx(0.5)
    # pairs (unsafe > safe): 0.9 beats all 3; 0.2 beats -0.3, -0.8; -0.1 beats -0.3, -0.8 -> 7 of 9
    assert m["auroc"] == pytest.approx(7 / 9)
    # a higher threshold flags only 0.9
    m = binary_metrics(scores, unsafe, 0.6)
    assert m["precision"] == 1.0 and m["recall"] == pytest.approx(1 / 3) and m["fpr"] == 0.0


def test_binary_metrics_empty_denominators():
    m = binary_metrics([-1.0, -2.0], [False, False], 0.0)
    assert math.isnan(m["precision"]) and math.isnan(m["recall"]) and math.isnan(m["f1"]) and math.isnan(m["auroc"])
    assert m["fpr"] == 0.0 and m["accuracy"] == 1.0
    m = binary_metrics([-1.0, -2.0], [True, False], 0.0)  # nothing flagged, one unsafe missed
    assert m["f1"] == 0.0 and m["recall"] == 0.0


def test_auroc_matches_naive_with_ties():
    rng = random.Random(0)
    for _ in range(30):
        n = rng.randint(2, 40)
        scores = [rng.choice([-1.0, 0.0, 0.5, 1.0, rng.random()]) for _ in range(n)]
        unsafe = [rng.random() < 0.4 for _ in range(n)]
        if all(unsafe) or not any(unsafe):
            continue
        assert auroc(scores, unsafe) == pytest.approx(naive_auroc(scores, unsafe))


def test_best_f1_threshold_matches_exhaustive_search():
    rng = random.Random(1)
    for _ in range(30):
        n = rng.randint(3, 50)
        unsafe = [rng.random() < 0.3 for _ in range(n)]
        if all(unsafe) or not any(unsafe):
            continue
        scores = [rng.gauss(1.0 if u else 0.0, 1.0) for u in unsafe]
        t, f1 = best_f1_threshold(scores, unsafe)
        best = max(naive_f1(scores, unsafe, c) for c in candidate_thresholds(scores))
        assert f1 == pytest.approx(best)
        assert naive_f1(scores, unsafe, t) == pytest.approx(f1)
        assert t not in scores  # a midpoint, never on a score


def test_thresholds_separate_a_separable_set():
    scores, unsafe = [-2.0, -1.0, 1.0, 3.0], [False, False, True, True]
    t, f1 = best_f1_threshold(scores, unsafe)
    assert f1 == 1.0 and -1.0 < t < 1.0
    t, err = equal_error_threshold(scores, unsafe)
    assert err == 0.0 and -1.0 < t < 1.0
    with pytest.raises(ValueError):
        best_f1_threshold([0.1, 0.2], [True, True])
