"""The world's prompts, responses and corpora: determinism, split hygiene, sizes, mixes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from saferlhf.world import HARM_CATEGORIES, build_world
from saferlhf.world.harms import HARM_TEMPLATES, HARMS
from saferlhf.world.lookalikes import LOOKALIKES
from saferlhf.world.topics import TOPICS
from saferlhf.world.prompts import words


def test_categories_match_the_data_schema():
    assert len(HARM_CATEGORIES) == 14 and len(set(HARM_CATEGORIES)) == 14
    assert [h.category for h in HARMS] == list(HARM_CATEGORIES)
    schema = pytest.importorskip("saferlhf.data.schema")
    assert tuple(HARM_CATEGORIES) == tuple(schema.HARM_CATEGORIES)


def test_content_sizes():
    assert len(HARM_TEMPLATES) >= 3 and all(len(h.tasks) >= 4 for h in HARMS)
    assert len(TOPICS) >= 10 and len(LOOKALIKES) >= 10
    assert all(len(t.points) >= 5 for t in TOPICS + LOOKALIKES)
    assert all(len(h.safe) >= 3 and all(len(tier) >= 2 for tier in h.harm) for h in HARMS)


def test_deterministic_for_a_seed():
    a, b = build_world(3), build_world(3)
    assert [p.text for p in a.prompts("train")] == [p.text for p in b.prompts("train")]
    assert a.sft_corpus(200, seed=1) == b.sft_corpus(200, seed=1)
    assert a.response_pairs(100, seed=2) == b.response_pairs(100, seed=2)
    assert a.text_corpus() == b.text_corpus()
    assert [p.text for p in build_world(4).prompts("train")] != [p.text for p in a.prompts("train")]
    rng_a, rng_b = random.Random(5), random.Random(5)
    p = a.prompts("train")[0]
    kind = "harmful" if p.kind == "harmful" else "helpful"
    assert a.sample_response(p, kind, rng_a) == b.sample_response(p.text, kind, rng_b)


def test_train_and_test_are_disjoint(world):
    train = {p.text for p in world.prompts("train")}
    test = {p.text for p in world.prompts("test")}
    assert not train & test
    table_train = {p.text for p in world.prompt_table if p.split == "train"}
    table_test = {p.text for p in world.prompt_table if p.split == "test"}
    assert not table_train & table_test
    assert len(table_train | table_test) == len(world.prompt_table)  # no duplicate texts
    assert train <= table_train and test <= table_test


@pytest.mark.parametrize("split,minimum", [("train", 600), ("test", 200)])
def test_sizes_and_mix(world, split, minimum):
    prompts = world.prompts(split)
    assert len(prompts) >= minimum
    share = {k: v / len(prompts) for k, v in Counter(p.kind for p in prompts).items()}
    assert share["harmful"] == pytest.approx(0.45, abs=0.02)
    assert share["benign"] == pytest.approx(0.40, abs=0.02)
    assert share["lookalike"] == pytest.approx(0.15, abs=0.02)
    assert {p.category for p in prompts if p.kind == "harmful"} == set(HARM_CATEGORIES)
    assert len({p.topic for p in prompts if p.kind == "benign"}) == len(TOPICS)
    assert all(p.split == split for p in prompts)


def test_configurable_counts():
    w = build_world(0, n_train=100, n_test=50, mix=(0.5, 0.3, 0.2))
    assert len(w.prompts("train")) == 100 and len(w.prompts("test")) == 50
    assert Counter(p.kind for p in w.prompts("train")) == {"harmful": 50, "benign": 30, "lookalike": 20}
    with pytest.raises(ValueError):
        build_world(0, n_train=100_000)


def test_prompt_lengths(world):
    lengths = [len(words(p.text)) for p in world.prompt_table]
    assert min(lengths) >= 6 and max(lengths) <= 16


def test_response_lengths_and_openings(world):
    rng = random.Random(0)
    for p in world.prompts("train")[:200]:
        if p.kind == "harmful":
            harmful = world.sample_response(p, "harmful", rng)
            assert harmful.startswith("Sure, here is")
            assert world.sample_response(p, "safe_helpful", rng).startswith(("I can not help with that, but",
                                                                             "For your safety,"))
            responses = [harmful]
        else:
            responses = [world.sample_response(p, "helpful", rng, quality=q) for q in (1, 2, 3)]
            with pytest.raises(ValueError):
                world.sample_response(p, "safe_helpful", rng)
        assert world.sample_response(p, "refusal", rng).startswith("I am sorry,")
        for r in responses:
            assert 12 <= len(r.split()) <= 40, r


def test_vocabulary_is_small(world):
    vocab = {w for text in world.text_corpus() for w in words(text)}
    assert len(vocab) < 1500
    corpus = set(world.text_corpus())
    assert all(p.text in corpus for p in world.prompt_table)  # test prompts too, for the tokenizer


def test_sft_corpus_mix(world):
    rows = world.sft_corpus(3000, seed=0)
    assert len(rows) == 3000 and set(rows[0]) == {"prompt", "response", "kind"}
    train = {p.text: p for p in world.prompts("train")}
    assert all(r["prompt"] in train for r in rows)
    harmful = [r["kind"] for r in rows if train[r["prompt"]].kind == "harmful"]
    assert 0.4 <= harmful.count("harmful") / len(harmful) <= 0.6
    assert 0.2 <= harmful.count("safe_helpful") / len(harmful) <= 0.4
    look = [r["kind"] for r in rows if train[r["prompt"]].kind == "lookalike"]
    assert 0.0 < look.count("refusal") / len(look) <= 0.12
    assert all(r["kind"] == "helpful" for r in rows if train[r["prompt"]].kind == "benign")
    assert world.sft_corpus(100, seed=0) == rows[:100]


def test_response_pairs_differ(world):
    pairs = world.response_pairs(500, seed=0)
    assert len(pairs) == 500
    assert all(r0 != r1 for _, r0, r1 in pairs)
    assert {p for p, _, _ in pairs} <= {p.text for p in world.prompts("train")}
    assert {p for p, _, _ in world.response_pairs(50, split="test")} <= {p.text for p in world.prompts("test")}


def test_test_prompts_are_unseen_combinations_of_seen_parts():
    """Held-out template x slot combinations: every test prompt's template and slot occur in train."""
    from saferlhf.world.prompts import prompt_table

    table = prompt_table()
    train = [p for p in table if p.split == "train"]
    seen_slots = {(p.topic, p.slot) for p in train}
    seen_templates = {(p.kind, p.topic, p.template) for p in train}
    train_texts = {p.text for p in train}
    test = [p for p in table if p.split == "test"]
    assert len(test) > 200
    for p in test:
        assert p.text not in train_texts
        assert (p.topic, p.slot) in seen_slots and (p.kind, p.topic, p.template) in seen_templates
