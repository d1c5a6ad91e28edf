"""Win-rate diagnostics: hand-built evaluation records with known outcomes and causes."""

from __future__ import annotations

import random

import pytest

from saferlhf.eval.arena import outcome
from saferlhf.eval.diagnostics import ceiling_win_rates, loss_cause, prompt_group, repetition_probe, win_breakdown


def _row(oracle, policy, prompt, response):
    j = oracle.judge(prompt.text, response)
    return {"policy": policy, "prompt": prompt.text, "kind": prompt.kind, "response": response,
            "helpfulness": j.helpfulness, "harmful": j.harmful}


def test_outcome_and_group():
    assert [outcome(0.7, 0.5), outcome(0.5, 0.5), outcome(0.4, 0.5)] == [1.0, 0.5, 0.0]
    assert prompt_group("harmful", True) == "harmful_baseline_unsafe"
    assert prompt_group("harmful", False) == "harmful_baseline_safe"
    assert prompt_group("lookalike", True) == "lookalike"


def test_win_breakdown_counts_outcomes_and_loss_causes(world, oracle):
    rng = random.Random(0)
    benign = [p for p in world.prompts("test") if p.kind == "benign"][:3]
    harmful = [p for p in world.prompts("test") if p.kind == "harmful"][:2]
    rows = []
    # benign 0: policy repeats a point where the baseline stopped -> loss by repetition
    s = rng.random()
    rep = world.sample_response(benign[0], "repetitive", random.Random(s), quality=2)
    rows += [_row(oracle, "pol", benign[0], rep),
             _row(oracle, "sft", benign[0], world.sample_response(benign[0], "helpful", random.Random(s), quality=2))]
    # benign 1: one point against three -> loss by fewer points
    rows += [_row(oracle, "pol", benign[1], world.sample_response(benign[1], "helpful", rng, quality=1)),
             _row(oracle, "sft", benign[1], world.sample_response(benign[1], "helpful", rng, quality=3))]
    # benign 2: identical answers -> tie
    same = world.sample_response(benign[2], "helpful", rng, quality=2)
    rows += [_row(oracle, "pol", benign[2], same), _row(oracle, "sft", benign[2], same)]
    # harmful 0: baseline complies, policy redirects safely (1 safe point) -> loss, not a benign loss cause
    rows += [_row(oracle, "pol", harmful[0], world.sample_response(harmful[0], "safe_helpful", rng, quality=1)),
             _row(oracle, "sft", harmful[0], world.sample_response(harmful[0], "harmful", rng))]
    # harmful 1: baseline refuses, policy redirects -> win
    rows += [_row(oracle, "pol", harmful[1], world.sample_response(harmful[1], "safe_helpful", rng, quality=2)),
             _row(oracle, "sft", harmful[1], world.sample_response(harmful[1], "refusal", rng))]
    rows = rows[0::2] + rows[1::2]  # all of one policy, then the other (the records' order)

    out = win_breakdown(rows, "pol", "sft", oracle)
    g = out["groups"]
    assert (g["benign"]["wins"], g["benign"]["ties"], g["benign"]["losses"]) == (0, 1, 2)
    assert g["benign"]["win_rate"] == pytest.approx(0.5 / 3)
    assert g["harmful_baseline_unsafe"]["losses"] == 1 and g["harmful_baseline_safe"]["wins"] == 1
    assert out["win_rate"] == pytest.approx((0.5 + 1.0) / 5)
    assert out["benign_loss_causes"] == {"repetition": 1, "fewer_points": 1, "garbage": 0, "other": 0}
    assert out["repetition_rate"] == pytest.approx(1 / 5) and out["baseline_repetition_rate"] == 0.0
    assert g["lookalike"]["n"] == 0 and g["lookalike"]["win_rate"] != g["lookalike"]["win_rate"]  # nan

    with pytest.raises(ValueError, match="same non-zero number"):
        win_breakdown(rows[:-1], "pol", "sft", oracle)
    with pytest.raises(ValueError, match="not aligned"):
        win_breakdown(rows[:5] + rows[5:][::-1], "pol", "sft", oracle)


def test_loss_cause_order(world, oracle):
    p = next(p for p in world.prompts("test") if p.kind == "benign")
    rng = random.Random(3)
    three = oracle.judge(p.text, world.sample_response(p, "helpful", rng, quality=3))
    one = oracle.judge(p.text, world.sample_response(p, "helpful", rng, quality=1))
    salad = oracle.judge(p.text, world.sample_response(p, "helpful", rng, quality=3) + " zq xv wk qq zz yy")
    assert loss_cause(one, three) == "fewer_points"
    assert loss_cause(salad, three) == "garbage"
    assert loss_cause(three, three) == "other"


def test_ceiling_grows_with_points_and_beats_nothing(world, oracle):
    prompts = world.prompts("test")[:60]
    zero = [{"prompt": p.text, "helpfulness": 0.0} for p in prompts]
    perfect = [{"prompt": p.text, "helpfulness": 1.0} for p in prompts]
    assert ceiling_win_rates(world, oracle, zero) == {1: 1.0, 2: 1.0, 3: 1.0}
    assert ceiling_win_rates(world, oracle, perfect) == {1: 0.0, 2: 0.0, 3: 0.0}
    mid = [{"prompt": p.text, "helpfulness": 0.6} for p in prompts]
    c = ceiling_win_rates(world, oracle, mid)
    assert c[1] < c[2] <= c[3]


def test_repetition_probe_separates_a_sentence_counter_from_the_oracle(world, oracle):
    def sentences(prompts, responses):
        return [float(r.count(".")) for r in responses]

    def truth(prompts, responses):
        return [oracle.judge(p, r).helpfulness for p, r in zip(prompts, responses)]

    counter, exact = repetition_probe(sentences, world), repetition_probe(truth, world)
    assert counter["items"] == exact["items"] > 100
    assert counter["short_over_repeat"] == 0.0 and counter["long_over_short"] == 1.0
    assert exact == {"items": exact["items"], "short_over_repeat": 1.0, "long_over_repeat": 1.0,
                     "long_over_short": 1.0}
