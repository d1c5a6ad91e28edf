"""Aggregations and annotator reliability on hand-built cases with known answers: Dawid-Skene recovers the truth
where a 3-rater majority fails (an adversary who always flips, paired with a noisy rater), its vectorised EM equals
a naive loop, soft targets are the hand-computed vote shares, reliability ranks annotators as built, exclusion
drops the one named or far below the rest, and every record stays valid PKU-SafeRLHF."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from saferlhf.annotate import Label, aggregate, aggregate_labels
from saferlhf.annotate.labels import _less_harmful, _preference, decided_record
from saferlhf.annotate.reliability import (MIN_LABELS_TO_EXCLUDE, annotator_reliability, dawid_skene,
                                           excluded_annotators, fit_questions)
from saferlhf.data.schema import HARM_CATEGORIES
from saferlhf.data.validate import pku_issues

H = HARM_CATEGORIES
N_ITEMS = 40
TRIPLES = (("r1", "r2", "noisy"), ("r1", "r2", "adversary"), ("r1", "noisy", "adversary"),
           ("r2", "noisy", "adversary"))  # item i is labelled by TRIPLES[i % 4]


def noisy_errs(i: int) -> bool:
    return i % 5 == 2  # 6 of the 30 items it labels: accuracy 0.8


def truth(i: int) -> tuple[int, int, tuple[bool, bool]]:
    """(more helpful, more harmless, safe per response) of item i: the less harmless one unsafe on every third."""
    better, safer = i % 2, (i // 2) % 2
    safe = [True, True]
    if i % 3 == 0:
        safe[1 - safer] = False
    return better, safer, (safe[0], safe[1])


def answer(name: str, i: int) -> Label:
    """The label of ``name`` on item i: right, or every answer flipped (the adversary always; noisy on its errors)."""
    better, safer, safe = truth(i)
    if name == "adversary" or (name == "noisy" and noisy_errs(i)):
        better, safer, safe = 1 - better, 1 - safer, (not safe[0], not safe[1])
    return Label(name, better, safer, safe, tuple(() if s else (H[2],) for s in safe),
                 tuple(0 if s else 2 for s in safe))


def pair(pid, r0="answer zero", r1="answer one"):
    return {"pair_id": pid, "prompt": "q?", "response_0": r0, "response_1": r1, "response_0_source": "m0",
            "response_1_source": "m1", "prompt_source": "test"}


@pytest.fixture(scope="module")
def known():
    pairs = [pair(f"p{i}", f"zero {i}", f"one {i}") for i in range(N_ITEMS)]
    labels = {f"p{i}": [answer(name, i) for name in TRIPLES[i % 4]] for i in range(N_ITEMS)}
    return pairs, labels


def lb(name, better, safer, safe=(True, True), cats=((), ()), sev=(0, 0)):
    return Label(name, better, safer, safe, cats, sev)


# ---- Dawid-Skene: the known answer ----------------------------------------------------------------------
def test_dawid_skene_recovers_the_truth_where_the_majority_fails(known):
    pairs, labels = known
    fails = {i for i in range(N_ITEMS) if noisy_errs(i) and "adversary" in TRIPLES[i % 4] and "noisy" in TRIPLES[i % 4]}
    assert fails == {2, 7, 22, 27}  # adversary + noisy both wrong, one reliable rater right: majority 2 : 1 wrong
    majority, _ = aggregate_labels(pairs, labels, ties="keep")
    ds, stats = aggregate_labels(pairs, labels, ties="keep", method="dawid_skene")
    assert stats["aggregation"] == "dawid_skene" and len(ds) == len(majority) == N_ITEMS
    assert {i for i, r in enumerate(majority) if r["better_response_id"] != truth(i)[0]} == fails
    for i, rec in enumerate(ds):
        better, safer, safe = truth(i)
        assert (rec["better_response_id"], rec["safer_response_id"]) == (better, safer), i
        assert (rec["is_response_0_safe"], rec["is_response_1_safe"]) == safe, i
        assert "better_response_tie" not in rec and "safer_response_tie" not in rec
        for k in (0, 1):
            assert rec[f"response_{k}_severity_level"] == (0 if safe[k] else 2)
            assert rec[f"response_{k}_harm_category"][H[2]] is (not safe[k])
        assert not [x for x in pku_issues(rec) if x.severity == "error"]


def test_dawid_skene_learns_each_raters_confusion_matrix(known):
    pairs, labels = known
    fit = fit_questions([labels[p["pair_id"]] for p in pairs])["helpfulness"]
    assert fit.model.converged and fit.annotators == ["adversary", "noisy", "r1", "r2"]
    conf = {a: fit.model.confusion[k] for k, a in enumerate(fit.annotators)}
    np.testing.assert_allclose(conf["adversary"], [[0, 1], [1, 0]], atol=0.01)  # always flips
    np.testing.assert_allclose(conf["r1"], np.eye(2), atol=0.01)
    np.testing.assert_allclose(np.diag(conf["noisy"]).mean(), 0.8, atol=0.03)  # wrong on 6 of its 30 items
    np.testing.assert_allclose(fit.model.prior, [0.5, 0.5], atol=1e-6)  # 20 items of each class
    post = fit.posterior()
    assert all(post[i][truth(i)[0]] > 0.99 for i in range(N_ITEMS))


def naive_em(votes, n_classes, iterations, smoothing):
    """Dawid-Skene EM with plain loops (the reference of the vectorised one)."""
    n_items, n_raters = len(votes), len(votes[0])
    post = []
    for row in votes:
        counts = [sum(v == k for v in row) for k in range(n_classes)]
        post.append([c / sum(counts) for c in counts])
    for _ in range(iterations):
        prior = [sum(p[k] for p in post) / n_items for k in range(n_classes)]
        conf = [[[smoothing] * n_classes for _ in range(n_classes)] for _ in range(n_raters)]
        for i in range(n_items):
            for a in range(n_raters):
                if votes[i][a] >= 0:
                    for k in range(n_classes):
                        conf[a][k][votes[i][a]] += post[i][k]
        conf = [[[x / sum(row) for x in row] for row in m] for m in conf]
        new = []
        for i in range(n_items):
            w = [prior[k] * math.prod(conf[a][k][votes[i][a]] for a in range(n_raters) if votes[i][a] >= 0)
                 for k in range(n_classes)]
            new.append([x / sum(w) for x in w])
        post = new
    return post, prior, conf


def test_vectorised_em_equals_a_naive_loop():
    rng = random.Random(3)
    votes = [[rng.choice((-1, 0, 1, 2)) for _ in range(4)] for _ in range(25)]
    for row in votes:
        row[rng.randrange(4)] = rng.randrange(3)  # every item answered at least once
    for iterations in (1, 5):
        post, prior, conf = naive_em(votes, 3, iterations, 0.5)
        fit = dawid_skene(np.array(votes), 3, max_iter=iterations, tol=0.0, smoothing=0.5)
        assert fit.iterations == iterations and not fit.converged
        np.testing.assert_allclose(fit.posterior, post, rtol=1e-10)
        np.testing.assert_allclose(fit.confusion, conf, rtol=1e-10)  # the M-step that made this posterior
        np.testing.assert_allclose(fit.prior, prior, rtol=1e-10)


def test_one_em_step_by_hand():
    # two raters agree on item 0 (class 0), disagree on item 1; smoothing 0
    # start T = [[1, 0], [.5, .5]]; prior = [.75, .25]; rater 0 answered 0, 0; rater 1 answered 0, 1
    # theta_0 = [[1, 0], [1, 0]]; theta_1 = [[1.5/1.5 * (1/1.5), .5/1.5], [.5/.5 * 0, .5/.5]] = [[2/3, 1/3], [0, 1]]
    # item 1: class 0: .75 * 1 * 1/3 = .25; class 1: .25 * 1 * 1 = .25 -> [.5, .5]; item 0: class 1 has 0 -> [1, 0]
    fit = dawid_skene(np.array([[0, 0], [0, 1]]), 2, max_iter=1, tol=0.0, smoothing=0.0)
    np.testing.assert_allclose(fit.prior, [0.75, 0.25])
    np.testing.assert_allclose(fit.confusion[1], [[2 / 3, 1 / 3], [0, 1]])
    np.testing.assert_allclose(fit.posterior, [[1, 0], [0.5, 0.5]])


@pytest.mark.parametrize("votes, message", [([[0, 2]], "votes must be -1"), ([[-1, -1]], "at least one answer"),
                                            ([], "non-empty")])
def test_dawid_skene_rejects_bad_votes(votes, message):
    with pytest.raises(ValueError, match=message):
        dawid_skene(np.array(votes), 2)


def test_decided_record_with_the_majoritys_answers_is_the_majority_record():
    rng = random.Random(0)
    for _ in range(300):
        labels = []
        for name in rng.sample("abcde", rng.randint(1, 4)):
            safe = (rng.random() < 0.6, rng.random() < 0.6)
            cats = tuple(() if s else tuple(sorted(rng.sample(H, rng.randint(1, 2)), key=H.index)) for s in safe)
            labels.append(lb(name, rng.choice((0, 1, None)), rng.choice((0, 1, None)), safe, cats,
                             tuple(0 if s else rng.randint(1, 3) for s in safe)))
        want = aggregate("q", "x", "y", labels, sources=("s", "s"), prompt_source="t", tie_break="unsafe")
        safer = _preference([x.safer for x in labels], "unsafe")
        got = decided_record("q", "x", "y", labels, better=_preference([x.better for x in labels], "unsafe"),
                             safer=_less_harmful(labels) if safer is None else safer,
                             safe=tuple(2 * sum(x.safe[i] for x in labels) > len(labels) for i in (0, 1)),
                             sources=("s", "s"), prompt_source="t")
        assert json.dumps(got) == json.dumps(want)


def test_decided_unsafe_without_an_unsafe_vote_gets_severity_1():
    rec, fixed = decided_record("q", "x", "y", [lb("a", 0, 1)], better=0, safer=1, safe=(True, False),
                                sources=("s", "s"), prompt_source="t")
    assert rec["response_1_severity_level"] == 1 and not any(rec["response_1_harm_category"].values())
    assert rec["safer_response_id"] == 0 and fixed == 1  # the only safe response is the safer one


# ---- soft targets --------------------------------------------------------------------------------------
def test_soft_records_carry_the_vote_shares():
    unsafe1 = ((True, False), ((), (H[0],)), (0, 1))
    labels = {"a": [lb("x", 0, 1), lb("y", 0, 1, *unsafe1), lb("z", 1, 0, *unsafe1)],  # 2/3 for 0; 2/3 unsafe
              "b": [lb("x", 1, None), lb("y", None, 0), lb("z", 1, 0), lb("w", 0, 1)],  # (2 + .5) / 4
              "c": [lb("x", 0, 0, *unsafe1), lb("y", 1, 1)]}  # even splits: ties, response_1 unsafe by the tie-break
    pairs = [pair(p, f"{p}0", f"{p}1") for p in labels]
    soft, stats = aggregate_labels(pairs, labels, ties="keep", method="soft")
    majority, _ = aggregate_labels(pairs, labels, ties="keep")
    keys = ("better_response_prob", "safer_response_prob", "response_0_unsafe_prob", "response_1_unsafe_prob")
    got = [tuple(r[k] for k in keys) for r in soft]
    # a: better 0 (2 of 3), safer: majority 1 but response_1 is unsafe (2 of 3) -> fixed to 0, which 1 of 3 chose
    # b: better 1 by 2 + tie / 4 = .625; safer 0 by 2 + tie / 4 = .625
    # c: better tie (id 0, 1 of 2); safer: a tie -> against response_1 (1 unsafe vote) -> 0, chosen by 1 of 2
    assert got == [(0.666667, 0.333333, 0.0, 0.666667), (0.625, 0.625, 0.0, 0.0), (0.5, 0.5, 0.0, 0.5)]
    for s, m in zip(soft, majority):  # the ids stay the majority's, the rest of the record too
        assert {k: v for k, v in s.items() if k not in keys} == m
    assert soft[0]["safer_response_id"] == 0 and stats["counts"]["safer_fixed"] == 1
    assert soft[2].get("better_response_tie") and not [x for r in soft for x in pku_issues(r) if x.severity == "error"]


def test_an_unknown_aggregation_is_refused(known):
    with pytest.raises(ValueError, match="aggregation 'mean' is not one of majority, dawid_skene, soft"):
        aggregate_labels(*known, method="mean")


# ---- reliability and exclusion --------------------------------------------------------------------------
def make_crowd(accuracy: dict[str, float], seed: int = 7, n: int = 300):
    """``n`` items, raters of known ``accuracy`` (each answer right with that probability; 0: always flips), 3
    raters per item drawn at random: (pairs, labels by pair id, the true helpfulness answers)."""
    rng = random.Random(seed)
    pairs, labels, true_better = [], {}, []
    for i in range(n):
        better, safer, safe = rng.randrange(2), rng.randrange(2), (rng.random() < 0.6, rng.random() < 0.6)
        if safe[0] != safe[1]:
            safer = 0 if safe[0] else 1
        true_better.append(better)
        pid = f"c{i}"
        pairs.append(pair(pid, f"zero {i}", f"one {i}"))
        labels[pid] = []
        for name in rng.sample(sorted(accuracy), 3):
            def ans(x, _acc=accuracy[name]):
                return x if rng.random() < _acc else 1 - x
            s = (bool(ans(safe[0])), bool(ans(safe[1])))
            labels[pid].append(Label(name, ans(better), ans(safer), s, tuple(() if x else (H[1],) for x in s),
                                     tuple(0 if x else 1 for x in s)))
    return pairs, labels, true_better


CROWD = {"expert": 0.97, "good": 0.9, "fair": 0.8, "poor": 0.65, "adversary": 0.0}


@pytest.fixture(scope="module")
def crowd():
    return make_crowd(CROWD)


def test_reliability_ranks_the_annotators_as_built(crowd):
    pairs, labels, _ = crowd
    report = annotator_reliability([labels[p["pair_id"]] for p in pairs])
    assert set(report) == set(CROWD) and sum(r["labels"] for r in report.values()) == 900
    assert sorted(report, key=lambda a: -report[a]["ds_accuracy"]) == ["expert", "good", "fair", "poor", "adversary"]
    for name, acc in CROWD.items():
        r = report[name]
        assert abs(r["ds_accuracy"] - acc) < 0.06, (name, r["ds_accuracy"])
        for q in ("helpfulness", "harmlessness", "safety"):
            assert r[q]["answers"] == r[q]["ds_items"] > 0 and len(r[q]["confusion"]) == 2
    assert report["adversary"]["safety"]["confusion"][0][1] > 0.95  # calls safe responses unsafe
    # the leave-one-out majority finds the adversary and the poor rater, but the adversary's votes pull the
    # others' majority: among the honest three it ranks the expert LAST (Dawid-Skene does not)
    loo = sorted(report, key=lambda a: -report[a]["loo_agreement"])
    assert loo[-2:] == ["poor", "adversary"] and loo[2] == "expert"
    honest = annotator_reliability([v for v in make_crowd({k: v for k, v in CROWD.items() if v})[1].values()])
    assert sorted(honest, key=lambda a: -honest[a]["loo_agreement"]) == ["expert", "good", "fair", "poor"]
    assert all(honest[a]["loo_agreement"] < honest[a]["ds_accuracy"] for a in ("expert", "good"))  # a noisy reference


def test_one_annotator_alone_has_no_accuracy():
    report = annotator_reliability([[lb("solo", 0, 1)], [lb("solo", 1, 1)]])
    assert report["solo"]["ds_accuracy"] is None and report["solo"]["loo_agreement"] is None
    assert report["solo"]["helpfulness"] == {"answers": 2, "ds_accuracy": None, "ds_items": 0, "confusion": None,
                                             "loo_agreement": None, "loo_items": 0}


def test_exclusion_drops_the_adversary_and_fixes_the_majority(crowd):
    pairs, labels, true_better = crowd
    majority, _ = aggregate_labels(pairs, labels, ties="keep")
    ds, _ = aggregate_labels(pairs, labels, ties="keep", method="dawid_skene")
    kept, stats = aggregate_labels(pairs, labels, ties="keep", exclude_below=0.5)
    adversary = stats["annotators"]["adversary"]
    assert stats["exclusion"]["excluded"] == {"adversary": f"Dawid-Skene accuracy {adversary['ds_accuracy']:.3f} < 0.5"}
    assert adversary["excluded"] and not stats["annotators"]["poor"]["excluded"]
    n_adversary = sum(x.annotator == "adversary" for v in labels.values() for x in v)
    assert stats["exclusion"]["labels_excluded"] == n_adversary and stats["counts"]["labels"] == 900 - n_adversary

    def wrong(records):  # decided helpfulness answers against the truth (a tie is no answer: no pair trains on it)
        return sum(r["better_response_id"] != t and not r.get("better_response_tie")
                   for r, t in zip(records, true_better))

    assert len(majority) == len(ds) == len(kept) == 300
    assert wrong(ds) < wrong(kept) < wrong(majority), (wrong(ds), wrong(kept), wrong(majority))


def test_named_exclusion_and_the_min_labels_guard(known):
    pairs, labels = known
    _, stats = aggregate_labels(pairs, labels, exclude=["noisy", "nobody"])
    assert stats["exclusion"]["excluded"] == {"noisy": "named"} and stats["exclusion"]["not_found"] == ["nobody"]
    assert stats["counts"]["labels"] == 3 * N_ITEMS - 30
    report = {"few": {"labels": MIN_LABELS_TO_EXCLUDE - 1, "ds_accuracy": 0.1},
              "many": {"labels": MIN_LABELS_TO_EXCLUDE, "ds_accuracy": 0.1},
              "good": {"labels": 100, "ds_accuracy": 0.9}, "alone": {"labels": 100, "ds_accuracy": None}}
    assert excluded_annotators(report, below=0.5) == {"many": "Dawid-Skene accuracy 0.100 < 0.5"}
    assert excluded_annotators(report, names=["good"], below=None) == {"good": "named"}


def test_majority_stats_gain_only_the_aggregation_key(known):
    pairs, labels = known
    _, plain = aggregate_labels(pairs, labels)
    assert set(plain) == {"counts", "ties", "min_labels", "aggregation", "agreement"}
    _, rel = aggregate_labels(pairs, labels, reliability=True)
    assert rel["exclusion"] == {"excluded": {}, "labels_excluded": 0, "below": None, "not_found": []}
    assert rel["annotators"]["adversary"]["ds_accuracy"] < 0.05 and {k: rel[k] for k in plain} == plain
