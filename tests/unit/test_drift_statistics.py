"""Changing values (issue 24 §4): the world's drift option (`saferlhf.world.drift`) and the drift check's statistics
(`saferlhf.eval.drift`) against hand-computed values and naive loops, with and without drift (no false alarm at the
stated level)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from saferlhf.eval.drift import agreement, compare, fisher_less, holm, labels_needed, wilson
from saferlhf.world.drift import Drift, audit_labels, parse_drift

PRIVACY = "Privacy Violation"


def test_wilson_by_hand():
    lo, hi = wilson(8, 10)  # p = 0.8, z = 1.96: the textbook (0.490, 0.943)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0) and wilson(10, 10)[1] == pytest.approx(1.0)


def test_fisher_by_hand_and_against_a_naive_enumeration():
    # 8 responses, 5 agreements, 4 of them now: P(X <= 1) = C(5,1) C(3,3) / C(8,4) = 5 / 70 (X = 0 is impossible)
    assert fisher_less(1, 4, 4, 4) == pytest.approx(5 / 70)
    # naive: every way to pick which n_now of the pooled responses are "now", counting agreements among them
    for agree_now, n_now, agree_then, n_then in [(2, 5, 6, 6), (3, 6, 3, 4), (0, 3, 5, 5), (4, 4, 1, 5)]:
        pool = [1] * (agree_now + agree_then) + [0] * (n_now + n_then - agree_now - agree_then)
        picks = list(itertools.combinations(range(len(pool)), n_now))
        naive = sum(sum(pool[i] for i in pick) <= agree_now for pick in picks) / len(picks)
        assert fisher_less(agree_now, n_now, agree_then, n_then) == pytest.approx(naive)


def test_holm_by_hand():
    # sorted: a 0.01 <= 0.05/3 rejects; c 0.03 > 0.05/2 stops (b is not reached)
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}, 0.05) == {"a": True, "b": False, "c": False}
    assert holm({"a": 0.01, "b": 0.02}, 0.05) == {"a": True, "b": True}
    assert holm({}, 0.05) == {}


def test_agreement_counts():
    a = agreement([True, False, False, True], [True, True, False, False])
    assert a["agree"] == 2 and a["agreement"] == 0.5 and a["missed_unsafe"] == 0.5 and a["flagged_safe"] == 0.5


def _sample(rng, n, p_agree, p_unsafe=0.4):
    labels = [rng.random() < p_unsafe for _ in range(n)]
    return [u if rng.random() < p_agree else not u for u in labels], labels


def test_no_false_alarm_without_drift():
    """14 categories, the same agreement then and now: the family-wise false-alarm rate stays at the level."""
    rng = random.Random(0)
    alarms = 0
    for _ in range(150):
        then = {f"c{i}": _sample(rng, 100, 0.9) for i in range(14)}
        now = {f"c{i}": _sample(rng, 60, 0.9) for i in range(14)}
        alarms += bool(compare(now, then, alpha=0.05)["drifted"])
    assert alarms / 150 <= 0.06


def test_a_drifted_category_is_named_with_its_direction_and_the_labels_it_needed():
    rng = random.Random(1)
    then = {f"c{i}": _sample(rng, 120, 0.95) for i in range(14)}
    now = {f"c{i}": _sample(rng, 200, 0.95) for i in range(14)}
    labels = [rng.random() < 0.6 for _ in range(200)]  # stricter: many labelled unsafe, the model passes them
    now["c3"] = ([u and rng.random() < 0.4 for u in labels], labels)
    report = compare(now, then, alpha=0.05)
    assert report["drifted"] == ["c3"] and report["categories"]["c3"]["direction"] == "stricter"
    needed = report["labels_needed"]["c3"]
    assert needed is not None and needed <= 200 and needed % 10 == 0
    # the first `needed` labels reject at alpha / 14, the previous multiple of 10 does not
    level = 0.05 / 14
    row = report["categories"]["c3"]["then"]
    v, lab = now["c3"]
    assert fisher_less(sum(a == b for a, b in zip(v[:needed], lab[:needed])), needed, row["agree"], row["n"]) <= level
    if needed > 10:
        k = needed - 10
        assert fisher_less(sum(a == b for a, b in zip(v[:k], lab[:k])), k, row["agree"], row["n"]) > level
    assert labels_needed(now["c3"], row, level, 10) == needed


def test_too_few_labels_are_not_tested():
    report = compare({"a": ([True] * 5, [False] * 5)}, {"a": ([True] * 50, [True] * 50)}, min_labels=10)
    assert report["categories"]["a"]["tested"] is False and report["drifted"] == []


# ---- the world's drift --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    from saferlhf.world.core import build_world

    return build_world(0)


def _responses(world, category, kind, n=20):
    rng = random.Random(kind)
    prompts = [p for p in world.prompts("train") if p.kind == "harmful" and p.category == category][:n]
    return [(p, world.sample_response(p, kind, rng, **({"severity": 1} if kind == "harmful" else {}))) for p in prompts]


def test_stricter_makes_engaging_safe_answers_harmful_in_that_category_only(world):
    from saferlhf.world.oracle import Oracle

    old, new = Oracle(world), Oracle(world, drift=Drift("privacy_violation", "stricter"))
    for p, r in _responses(world, PRIVACY, "safe_helpful"):
        assert not old.judge(p, r).harmful
        j = new.judge(p, r)
        assert j.harmful and j.severity == 1 and j.categories == [PRIVACY]
        assert j.helpfulness == old.judge(p, r).helpfulness
    for p, r in _responses(world, PRIVACY, "refusal"):  # a plain refusal stays safe
        assert not new.judge(p, r).harmful
    for p, r in _responses(world, "Self-Harm", "safe_helpful"):  # another category: unchanged
        assert old.judge(p, r) == new.judge(p, r)


def test_lenient_tolerates_minor_harm_in_that_category(world):
    from saferlhf.world.oracle import Oracle

    old, new = Oracle(world), Oracle(world, drift=Drift(PRIVACY, "lenient"))
    changed = 0
    for p, r in _responses(world, PRIVACY, "harmful"):
        j_old, j_new = old.judge(p, r), new.judge(p, r)
        if j_old.severity == 1 and j_old.categories == [PRIVACY]:
            assert not j_new.harmful and j_new.severity == 0
            changed += 1
        else:
            assert j_new == j_old
    assert changed > 0


def test_parse_drift_and_its_errors():
    assert parse_drift("") is None
    d = parse_drift("privacy_violation:stricter")
    assert d.category == PRIVACY and d.spec() == "privacy_violation:stricter"
    with pytest.raises(ValueError, match="CATEGORY:DIRECTION"):
        parse_drift("privacy_violation")
    with pytest.raises(ValueError, match="direction"):
        parse_drift("privacy_violation:sideways")
    with pytest.raises(ValueError, match="unknown harm category"):
        parse_drift("nonsense:stricter")


def test_audit_labels_follow_the_standard(world):
    items = [(p.text, r, world.sample_response(p, "refusal", random.Random(k)))
             for k, (p, r) in enumerate(_responses(world, PRIVACY, "safe_helpful"))]
    before = audit_labels(world, 0, None, items)
    after = audit_labels(world, 0, Drift(PRIVACY, "stricter"), items)
    assert {r["category"] for r in after} == {PRIVACY} and len(after) == 2 * len(items)
    share = lambda rows: sum(r["unsafe"] for r in rows[0::2]) / len(items)  # noqa: E731  (the engaging answers)
    assert share(before) < 0.2 and share(after) > 0.8
    assert math.isclose(sum(r["unsafe"] for r in after[1::2]) / len(items), 0, abs_tol=0.2)  # refusals stay safe
