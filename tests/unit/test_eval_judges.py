"""Judges, verdicts and the arena: pure functions on hand-made inputs (no training)."""

from __future__ import annotations

import pytest

from saferlhf.eval.arena import arena, outcome, win_rate
from saferlhf.eval.judges import Judge, OracleJudge, Verdict, judge_all, merge


def test_outcome_and_win_rate_by_hand():
    assert [outcome(2, 1), outcome(1, 1), outcome(0, 1)] == [1.0, 0.5, 0.0]
    assert win_rate([0.9, 0.5, 0.1, 0.3], [0.1, 0.5, 0.2, 0.3]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert win_rate([], []) != win_rate([], [])  # nan
    with pytest.raises(ValueError):
        win_rate([1.0], [])


def test_arena_cells_by_hand():
    # A: (reward, cost), B: (reward, cost); safe = cost <= 0
    got = arena([3, 1, 2, 5], [-1, -1, 0.5, 2], [1, 2, 2, 4], [-2, 1, -1, 3])
    assert got == {"A_safe__B_safe": {"count": 1, "win_rate_A": 1.0},
                   "A_safe__B_unsafe": {"count": 1, "win_rate_A": 0.0},
                   "A_unsafe__B_safe": {"count": 1, "win_rate_A": 0.5},
                   "A_unsafe__B_unsafe": {"count": 1, "win_rate_A": 1.0}}


def test_merge_keeps_the_first_judge_that_set_a_field():
    a = Verdict(helpfulness=0.7, unsafe=False, refusal=False)
    b = Verdict(unsafe=True, cost=1.5)
    c = Verdict(reward=2.0, helpfulness=0.1)
    m = merge(a, b, c)
    assert (m.helpfulness, m.unsafe, m.cost, m.reward, m.refusal, m.categories) == (0.7, False, 1.5, 2.0, False, None)
    assert merge() == Verdict()


class CountingJudge:
    """A custom judge: refusal by a marker word; records how it was called."""

    name = "marker"

    def __init__(self):
        self.calls = 0

    def judge(self, prompt, response):
        self.calls += 1
        return Verdict(refusal="cannot" in response)


class BatchJudge(CountingJudge):
    def judge_batch(self, prompts, responses):
        self.calls += 100
        return [Verdict(reward=float(len(r))) for r in responses]


def test_judge_all_uses_batches_when_offered_and_checks_alignment():
    j, b = CountingJudge(), BatchJudge()
    assert isinstance(j, Judge) and isinstance(b, Judge)
    assert [v.refusal for v in judge_all(j, ["p", "q"], ["I cannot", "sure"])] == [True, False] and j.calls == 2
    assert [v.reward for v in judge_all(b, ["p", "q"], ["ab", "abcd"])] == [2.0, 4.0] and b.calls == 100
    with pytest.raises(ValueError):
        judge_all(j, ["p"], [])


def test_oracle_judge_maps_the_judgement(world, oracle):
    p = next(p for p in world.prompts("test") if p.kind == "harmful")
    text = world.sample_response(p, "harmful", __import__("random").Random(0))
    v, j = OracleJudge(oracle).judge(p.text, text), oracle.judge(p.text, text)
    assert (v.helpfulness, v.unsafe, v.categories, v.refusal, v.severity) == (
        j.helpfulness, j.harmful, tuple(j.categories), j.refusal, j.severity)
    assert v.unsafe is True and v.reward is None and v.cost is None


def test_evaluation_rows_take_any_judge(world, oracle):
    from saferlhf.eval.suite import judge_rows, load_prompt_set, policy_metrics

    items = load_prompt_set("world:test").items[:6]
    responses = ["I cannot help with that."] * 3 + ["Here is how."] * 3
    rows = judge_rows(items, responses, [OracleJudge(oracle), CountingJudge(), BatchJudge()])
    assert [r["refusal"] for r in rows] == [oracle.judge(p.text, r).refusal for p, r in zip(items, responses)]
    assert [r["reward"] for r in rows] == [float(len(r)) for r in responses]  # the batch judge's field
    assert {"harmful_rate", "helpfulness", "over_refusal_rate"} <= set(policy_metrics(items, rows, 1, bootstrap=0))


class EndedJudge:
    """Records the ended flags it is given (like a score model, whose encoding depends on them)."""

    name, uses_ended = "ended", True

    def __init__(self):
        self.seen = None

    def judge_batch(self, prompts, responses, ended=None):
        self.seen = ended
        return [Verdict(reward=0.0) for _ in prompts]


def test_ended_flags_reach_the_judges_that_use_them_and_the_rows():
    from saferlhf.eval.suite import PromptItem, judge_rows

    items = [PromptItem("p"), PromptItem("q")]
    ej, bj = EndedJudge(), BatchJudge()
    rows = judge_rows(items, ["a", "b"], [ej, bj], ended=[True, False])
    assert ej.seen == [True, False] and [r["ended"] for r in rows] == [True, False]
    assert [r["reward"] for r in rows] == [0.0, 0.0]  # the first judge's field wins
    with pytest.raises(ValueError, match="ended flags"):
        judge_all(ej, ["p"], ["a"], ended=[True, False])
