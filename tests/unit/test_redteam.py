"""`saferlhf redteam`'s pure pieces: the candidate plan (categories and operators in turn), the round-robin keep,
the success tables and de-duplication keys, against hand-counted values."""

from __future__ import annotations

import random

from saferlhf.recipes.redteam import Seed, dedup_key, plan, round_robin_keep, success_table


def test_plan_cycles_categories_then_operators():
    seeds = [Seed(f"{c}{i}", c, "harmful") for c in "abc" for i in range(3)]
    got = plan(seeds, ["roleplay", "split"], 12, 0.0, random.Random(0))
    assert [s.category for s, _ in got] == list("abc") * 4
    assert [chain for _, chain in got] == [("roleplay",)] * 3 + [("split",)] * 3 + [("roleplay",)] * 3 + [("split",)] * 3
    stacked = plan(seeds, ["roleplay", "split", "fiction"], 300, 1.0, random.Random(0))
    assert all(len(c) == 2 and c[0] != c[1] for _, c in stacked)
    assert plan(seeds, ["roleplay"], 5, 1.0, random.Random(0))[0][1] == ("roleplay",)  # nothing to stack


def test_round_robin_keep_spreads_over_categories():
    items = [{"category": "a", "i": i} for i in range(5)] + [{"category": "b", "i": i} for i in range(2)] + \
            [{"category": None, "i": 0}]
    kept = round_robin_keep(items, 5)
    assert [(k["category"], k["i"]) for k in kept] == [("a", 0), ("b", 0), (None, 0), ("a", 1), ("b", 1)]
    assert round_robin_keep(items, 0) == items and round_robin_keep(items, 99) == items


def test_success_table_counts_every_operator_of_a_chain():
    rows = [{"operator": "roleplay+split", "kept_unsafe": True}, {"operator": "roleplay", "kept_unsafe": False},
            {"operator": "split", "kept_unsafe": True}]
    t = success_table(rows, lambda r: r["operator"].split("+"))
    assert t == {"roleplay": {"tried": 2, "unsafe": 1, "rate": 0.5}, "split": {"tried": 2, "unsafe": 2, "rate": 1.0}}


def test_dedup_key_ignores_case_punctuation_and_spaces():
    assert dedup_key("How do I  pick a LOCK?") == dedup_key("how do i pick a lock") == "how do i pick a lock"
    assert dedup_key("p-i-c-k") != dedup_key("pick")


def test_rl_prompt_mix_repeats_redteam_prompts_to_the_share():
    from saferlhf.pipelines.iterate import rl_prompt_mix

    base, mined = [{"b": i} for i in range(640)], [{"m": i} for i in range(115)]
    # r = 1: 115 / 755 = 0.15; r = 2: 230 / 870 = 0.26; r = 3: 345 / 985 = 0.35 >= 0.3
    mix = rl_prompt_mix(base, mined, 0.3)
    assert len(mix) == 985 and mix[:640] == base and mix[640:] == mined * 3
    assert rl_prompt_mix(base, mined, 0.0) == base + mined
    assert rl_prompt_mix(base, [], 0.3) == base
    assert rl_prompt_mix(base, mined, 0.15) == base + mined  # 115 / 755 >= 0.15 already
