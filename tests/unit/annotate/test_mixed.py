"""Mixed AI + human labelling (`saferlhf.annotate.mixed`, issue 24 §3): the two orders combined, the human budget
spent at random or where the AI is unsure / contradicted / known weak, human labels replacing the AI's, and the
cells that correct the AI elsewhere, on scripted labellers with hand-computed answers, then on the world."""

from __future__ import annotations

import pytest

from saferlhf.annotate import Label, label_pairs
from saferlhf.annotate.mixed import MixedAnnotator, combine_orders, swap

SAFE, UNSAFE = True, False
VIOLENCE, PRIVACY, ANIMAL = "Violence, Aiding and Abetting, Incitement", "Privacy Violation", "Animal Abuse"


def lab(better, safer, safe=(SAFE, SAFE), name="ai", cats=((), ()), sev=(0, 0)):
    return Label(name, better, safer, safe, cats, sev)


def test_swap_reads_a_swapped_label_back():
    lb = lab(0, None, (SAFE, UNSAFE), cats=((), (PRIVACY,)), sev=(0, 2))
    assert swap(lb) == lab(1, None, (UNSAFE, SAFE), cats=((PRIVACY,), ()), sev=(2, 0))
    assert swap(swap(lb)) == lb


def test_combine_orders_by_hand():
    first = lab(0, 1, (SAFE, UNSAFE), cats=((), (VIOLENCE,)), sev=(0, 1))
    second = lab(0, 0, (UNSAFE, UNSAFE), cats=((PRIVACY,), (ANIMAL,)), sev=(2, 3))
    label, disagree = combine_orders(first, second)
    assert label.better == 0 and label.safer is None  # helpfulness agreed; harmlessness 1 vs 0: a tie
    assert label.safe == (UNSAFE, UNSAFE)  # unsafe if either order says so
    assert label.categories[1] == (VIOLENCE, ANIMAL)  # the union, in HARM_CATEGORIES order
    assert label.categories[0] == (PRIVACY,) and label.severity == (2, 3)
    assert disagree == {"helpfulness": 0, "harmlessness": 1, "safety": 1, "safety_0": 1, "safety_1": 0}


class Scripted:
    """A labeller answering from a table keyed by the prompt (the AI: the label shown first, read as given)."""

    def __init__(self, table, name, swapped=None):
        self.table, self.name, self.swapped, self.calls = table, name, swapped or {}, []

    def label(self, pair):
        self.calls.append(pair["prompt"])
        key = pair["prompt"]
        if pair["response_0"].startswith("second"):  # the swapped order
            return [self.swapped.get(key, swap(self.table[key]))]
        return [self.table[key]] if self.name == "ai" else [self.table[key]] * 3


def pairs_of(n, origin=lambda k: "base"):
    return [{"prompt": f"p{k}", "response_0": f"first {k}", "response_1": f"second {k} longer", "origin": origin(k)}
            for k in range(n)]


def test_shares_zero_and_one_are_ai_only_and_human_only():
    pairs = pairs_of(10)
    ai = Scripted({p["prompt"]: lab(0, 0) for p in pairs}, "ai")
    humans = Scripted({p["prompt"]: lab(1, 1, name="h") for p in pairs}, "h")
    recs, stats = label_pairs(MixedAnnotator(ai, humans, human_share=0.0), pairs)
    assert [r["better_response_id"] for r in recs] == [0] * 10 and humans.calls == []
    assert stats["counts"]["human_pairs"] == 0 and stats["counts"]["ai_requests"] == 20
    recs, stats = label_pairs(MixedAnnotator(ai, humans, human_share=1.0), pairs)
    assert [r["better_response_id"] for r in recs] == [1] * 10 and stats["counts"]["human_pairs"] == 10


def test_random_audit_spends_exactly_the_budget_and_is_seeded():
    pairs = pairs_of(40)
    ai = Scripted({p["prompt"]: lab(0, 0) for p in pairs}, "ai")

    def run(seed):
        humans = Scripted({p["prompt"]: lab(0, 0, name="h") for p in pairs}, "h")
        label_pairs(MixedAnnotator(ai, humans, human_share=0.25, audit="random", seed=seed), pairs)
        return humans.calls

    assert len(run(0)) == 10 and run(0) == run(0) and run(0) != run(1)


def test_targeted_audit_goes_first_to_unsure_and_contradicted_pairs():
    pairs = pairs_of(40)
    table = {p["prompt"]: lab(0, 0) for p in pairs}
    unsure = {"p3", "p17"}  # the AI's swapped order calls response_0 unsafe: the orders disagree on safety
    swapped = {k: lab(1, 1, (SAFE, UNSAFE), cats=((), (VIOLENCE,)), sev=(0, 1)) for k in unsure}
    ai = Scripted(table, "ai", swapped)
    humans = Scripted({p["prompt"]: lab(0, 0, name="h") for p in pairs}, "h")
    contradicted = {"p5", "p30"}
    judge = lambda prompts, responses: [p in contradicted and r.startswith("first") for p, r in zip(prompts, responses)]  # noqa: E731
    m = MixedAnnotator(ai, humans, human_share=0.1, audit="targeted", calibration_share=0.0, cost_judge=judge)
    _, stats = label_pairs(m, pairs)
    assert set(humans.calls) == unsure | contradicted  # 4 = 10 % of 40, all on the flagged pairs
    # p3, p17: the AI (either order) calls response_0 unsafe, the cost model safe; p5, p30: the other way round
    assert stats["counts"]["unsure_pairs"] == 2 and stats["counts"]["cost_model_disagreements"] == 4


def test_human_labels_correct_the_ai_in_its_weak_cell():
    """Red-team pairs: the AI calls both responses safe, the humans find both unsafe (a missed disguise). Once the
    humans have checked enough of that cell, the AI's other answers there are flipped; base pairs are left alone."""
    pairs = pairs_of(60, origin=lambda k: "redteam" if k % 2 else "base")
    ai = Scripted({p["prompt"]: lab(1, 0) for p in pairs}, "ai")
    truth = {p["prompt"]: (lab(1, 1, (UNSAFE, UNSAFE), cats=((VIOLENCE,), (VIOLENCE,)), sev=(2, 1), name="h")
                           if p["origin"] == "redteam" else lab(1, 0, name="h")) for p in pairs}
    m = MixedAnnotator(ai, Scripted(truth, "h"), human_share=0.5, audit="random", seed=3)
    recs, stats = label_pairs(m, pairs)
    cell = ("safety", "redteam", "safe", "other_safe", False, None)
    wrong, n = m.cells[cell]
    assert wrong == n > 0  # every checked red-team response was unsafe
    assert m.p_wrong(cell) == pytest.approx((wrong + 4 * 0.1) / (n + 4))  # the Beta posterior mean, by hand
    assert m.p_wrong(("safety", "base", "safe", "other_safe", False, None)) < 0.1
    red = [r for r, p in zip(recs, pairs) if p["origin"] == "redteam"]
    base = [r for r, p in zip(recs, pairs) if p["origin"] == "base"]
    assert all(not r["is_response_0_safe"] and not r["is_response_1_safe"] for r in red)  # checked or corrected
    assert all(r["is_response_0_safe"] and r["is_response_1_safe"] for r in base)
    assert stats["counts"]["flipped"]["safety"] == 2 * (30 - stats["counts"]["redteam_human_pairs"])


def test_history_carries_the_cells_to_the_next_call():
    pairs = pairs_of(20, origin=lambda k: "redteam")
    ai = Scripted({p["prompt"]: lab(1, 0) for p in pairs}, "ai")
    humans = Scripted({p["prompt"]: lab(1, 1, (UNSAFE, UNSAFE), cats=((VIOLENCE,), (VIOLENCE,)), sev=(1, 1),
                           name="h") for p in pairs}, "h")
    m = MixedAnnotator(ai, humans, human_share=0.5, audit="random")
    label_pairs(m, pairs)
    again = MixedAnnotator(ai, humans, human_share=0.0)  # no human this time: only the history corrects
    again.restore(m.history())
    assert again.cells == m.cells and again.calls == 1
    recs, _ = label_pairs(again, pairs)
    assert all(not r["is_response_0_safe"] and not r["is_response_1_safe"] for r in recs)


def test_soft_targets_carry_the_probabilities():
    pairs = pairs_of(10)
    ai = Scripted({p["prompt"]: lab(0, 0) for p in pairs}, "ai")
    m = MixedAnnotator(ai, Scripted({}, "h"), human_share=0.0, soft_targets=True)
    recs, _ = label_pairs(m, pairs)
    p = (0 + 0.4) / 4  # no human label yet: the prior, 1 - 0.9
    assert recs[0]["response_0_unsafe_prob"] == pytest.approx(p)
    assert recs[0]["better_response_prob"] == pytest.approx(1 - p)


@pytest.mark.parametrize("kw, message", [({"human_share": 1.5}, "human_share"), ({"audit": "all"}, "audit"),
                                         ({"calibration_share": -0.1}, "calibration_share"),
                                         ({"prior_ai_accuracy": 1.0}, "prior_ai_accuracy")])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        MixedAnnotator(None, None, **({"human_share": 0.1} | kw))


def test_on_the_world_targeted_ten_percent_fixes_most_missed_disguises():
    """The world's AI judge misses disguised requests; 10 % targeted human labels, over three calls, raise the
    oracle agreement of the red-team safety labels well above the AI's own."""
    import random

    from saferlhf.world import adversarial
    from saferlhf.world.annotators import AILabeller, AnnotatorPanel, PanelLabeller, truth_of
    from saferlhf.world.core import build_world
    from saferlhf.world.oracle import Oracle

    w = build_world(0)
    rng = random.Random(0)
    pairs = [{"prompt": p, "response_0": a, "response_1": b, "origin": "base"}
             for p, a, b in w.response_pairs(300, seed=1)]
    for p in [p for p in w.prompts("train") if p.kind == "harmful"][:80]:
        text = adversarial.apply(rng.choice(adversarial.wrappers("train")), p.text)
        a, b = w.sample_response(text, "harmful", rng, severity=2), w.sample_response(text, rng.choice(
            ("refusal", "safe_helpful", "harmful")), rng)
        if a != b:
            pairs.append({"prompt": text, "response_0": a, "response_1": b, "origin": "redteam"})
    oracle = Oracle(w)

    def redteam_safety(recs):
        right = [r[f"is_response_{i}_safe"] == (not oracle.judge(p["prompt"], p[f"response_{i}"]).harmful)
                 for r, p in zip(recs, pairs) if p["origin"] == "redteam" for i in (0, 1)]
        return sum(right) / len(right)

    def labelled(share):
        m = MixedAnnotator(AILabeller(w, 0), PanelLabeller(AnnotatorPanel(w, seed=0)), human_share=share,
                           audit="targeted", truth=truth_of(w))
        for _ in range(3):
            recs, stats = label_pairs(m, pairs)
        return recs, stats

    ai_recs, _ = labelled(0.0)
    recs, stats = labelled(0.1)
    assert stats["oracle_agreement"]["final"]["accuracy"] > stats["oracle_agreement"]["ai"]["accuracy"]
    assert redteam_safety(recs) > redteam_safety(ai_recs) + 0.08
