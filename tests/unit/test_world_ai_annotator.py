"""The world's AI annotator (``world:ai``): each flaw is present at its set rate on world pairs and absent at rate 0,
acts only where documented (disguised requests; unsure pairs), and a pair's label depends only on the seed and the
pair."""

from __future__ import annotations

import random

import pytest

from saferlhf.annotate import Labeller
from saferlhf.annotate.pairs import pair_id
from saferlhf.world import adversarial
from saferlhf.world.annotators import AI_NAME, AIAnnotator, AILabeller, _harm_score, ai_labeller

N_PAIRS = 2000
OFF = {"miss_disguised": 0.0, "verbosity_bias": 0.0, "position_bias": 0.0, "noise": 0.0}  # a flawless judge


@pytest.fixture(scope="module")
def judged(world):
    """World pairs, the harmful prompts of every other pair disguised in an adversarial wrapper, with the oracle's
    judgements: (prompt, r0, r1, j0, j1, words, disguised) per pair."""
    labeller = AILabeller(world)
    out = []
    for k, (prompt, r0, r1) in enumerate(world.response_pairs(N_PAIRS, seed=3)):
        if world.lookup(prompt).kind == "harmful" and k % 2 == 0:
            prompt = adversarial.apply(adversarial.WRAPPERS[k % len(adversarial.WRAPPERS)], prompt)
        j0, j1 = labeller.oracle.judge(prompt, r0), labeller.oracle.judge(prompt, r1)
        out.append((prompt, r0, r1, j0, j1, (len(r0.split()), len(r1.split())), labeller.disguised(prompt)))
    return out


def run(judged, **flaws):
    judge = AIAnnotator(**(OFF | flaws))
    return [judge.label(j0, j1, words, disguised, random.Random(f"test:{k}"))
            for k, (_, _, _, j0, j1, words, disguised) in enumerate(judged)]


def oracle_better(j0, j1):
    return None if j0.helpfulness == j1.helpfulness else int(j1.helpfulness > j0.helpfulness)


def test_the_flawless_judge_is_the_oracle(judged):
    assert sum(d for *_, d in judged) > 400  # enough disguised requests to measure on
    for lb, (_, _, _, j0, j1, _, _) in zip(run(judged), judged):
        assert lb.annotator == AI_NAME
        assert lb.safe == (not j0.harmful, not j1.harmful)
        assert lb.categories == (tuple(j0.categories), tuple(j1.categories))
        if oracle_better(j0, j1) is not None:
            assert lb.better == oracle_better(j0, j1)
        if _harm_score(j0) != _harm_score(j1):
            assert lb.safer == int(_harm_score(j1) < _harm_score(j0))


@pytest.mark.parametrize("rate", [0.2, 0.5, 1.0])
def test_disguised_requests_are_missed_at_the_set_rate(judged, rate):
    labels = run(judged, miss_disguised=rate)
    unsafe_pairs = [(lb, item) for lb, item in zip(labels, judged) if item[3].harmful or item[4].harmful]
    disguised = [(lb, item) for lb, item in unsafe_pairs if item[6]]
    missed = [all(lb.safe) for lb, _ in disguised]  # every unsafe response of the pair called safe
    assert len(disguised) > 200 and abs(sum(missed) / len(missed) - rate) < 0.06, sum(missed) / len(missed)
    plain = [(lb, it) for lb, it in unsafe_pairs if not it[6]]
    assert all(lb.safe == (not it[3].harmful, not it[4].harmful) for lb, it in plain)  # a plain request: never missed


def test_verbosity_bias_picks_the_longer_answer_at_the_set_rate(judged):
    base = run(judged)
    for rate in (0.2, 0.6):
        labels = run(judged, verbosity_bias=rate)
        longer = [int(w[1] > w[0]) for *_, w, _ in judged]
        shorter_wins = [k for k, (lb, it) in enumerate(zip(base, judged))
                        if it[5][0] != it[5][1] and lb.better != longer[k]]
        assert len(shorter_wins) > 300
        share = sum(labels[k].better == longer[k] for k in shorter_wins) / len(shorter_wins)
        assert abs(share - rate) < 0.06, share
        changed = [k for k in range(len(judged)) if labels[k].better != base[k].better]
        assert set(changed) <= set(shorter_wins)  # it only ever turns an answer toward the longer response
        assert all(a.safer == b.safer and a.safe == b.safe for a, b in zip(labels, base))


def test_position_bias_answers_a_when_unsure_at_the_set_rate(judged):
    margin = AIAnnotator.unsure_margin
    base = run(judged)
    unsure_help = {k for k, it in enumerate(judged) if abs(it[3].helpfulness - it[4].helpfulness) < margin}
    unsure_harm = {k for k, it in enumerate(judged) if _harm_score(it[3]) == _harm_score(it[4])}
    for rate in (0.3, 0.7):
        labels = run(judged, position_bias=rate)
        b_before = [(k, "better") for k in unsure_help if base[k].better == 1]
        b_before += [(k, "safer") for k in unsure_harm if base[k].safer == 1]
        assert len(b_before) > 400
        share = sum(getattr(labels[k], q) == 0 for k, q in b_before) / len(b_before)
        assert abs(share - rate) < 0.06, share
        # sure answers never move
        assert all(labels[k].better == base[k].better for k in set(range(len(judged))) - unsure_help)
        assert all(labels[k].safer == base[k].safer for k in set(range(len(judged))) - unsure_harm)


def test_noise_flips_answers_at_the_set_rate(judged):
    base, noisy = run(judged), run(judged, noise=0.1)
    flips = [a.better != b.better for a, b in zip(noisy, base)] + [a.safe[i] != b.safe[i] for a, b in zip(noisy, base)
                                                                   for i in (0, 1)]
    assert abs(sum(flips) / len(flips) - 0.1) < 0.02


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="position_bias must be a probability"):
        AIAnnotator(position_bias=1.5)
    with pytest.raises(ValueError, match="unsure_margin"):
        AIAnnotator(unsure_margin=-0.1)


def test_the_labeller_is_keyed_by_seed_and_pair(world, judged):
    labeller = ai_labeller(seed=0)
    assert isinstance(labeller, Labeller) and labeller.annotator == AIAnnotator()
    rows = [{"pair_id": pair_id(p, a, b), "prompt": p, "response_0": a, "response_1": b} for p, a, b, *_ in judged[:30]]
    forward = [labeller.label(r) for r in rows]
    assert forward == [ai_labeller(seed=0).label(r) for r in reversed(rows)][::-1]
    assert all(len(x) == 1 and x[0].annotator == "world:ai" for x in forward)
    assert [ai_labeller(seed=1).label(r) for r in rows] != forward
    # the documented draws: random.Random("ai:<seed>:<pair_id>") fed to AIAnnotator.label
    k = 5
    p, a, b, j0, j1, words, disguised = judged[k]
    want = AIAnnotator().label(j0, j1, words, disguised, random.Random(f"ai:0:{rows[k]['pair_id']}"))
    assert forward[k] == [want]
    assert labeller.label({"prompt": p, "response_0": a, "response_1": b}) == [want]  # no pair_id: computed
    assert labeller.label({"prompt": p, "response_0": a, "response_1": a + " "}) == []  # identical: not labelled
    strict = ai_labeller(seed=0, miss_disguised=1.0, noise=0.0)
    assert strict.annotator.miss_disguised == 1.0 and strict.annotator.verbosity_bias == AIAnnotator.verbosity_bias
