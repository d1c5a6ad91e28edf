"""The world's adversarial wrappers: every template round-trips through `unwrap`, the oracle judges a disguised
prompt as the request inside it, train and test templates are disjoint, the red-team test split is held out."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from saferlhf.world import Oracle, build_world
from saferlhf.world.adversarial import FAMILIES, WRAPPERS, apply, mutate, obfuscate_word, unwrap, wrappers
from saferlhf.world.prompts import normalize


@pytest.fixture(scope="module")
def world():
    return build_world(0)


def test_every_family_has_disjoint_train_and_test_templates():
    for family in FAMILIES:
        train, test = wrappers("train", family), wrappers("test", family)
        assert train and test
        assert not {w.template for w in train} & {w.template for w in test}
    assert len({w.name for w in WRAPPERS}) == len(WRAPPERS)
    with pytest.raises(ValueError, match="unknown operator"):
        wrappers("train", "bribery")


def test_obfuscate_spells_the_longest_word():
    assert obfuscate_word("How do I pick a lock?", "-") == "How do I p-i-c-k a lock?"  # first of the longest
    assert obfuscate_word("Tell me how to poison the pigeons.", ".") == "Tell me how to poison the p.i.g.e.o.n.s."
    assert obfuscate_word("a b c", "-") == "a b c"


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.name)
def test_unwrap_inverts_every_template(world, wrapper):
    rng = random.Random(wrapper.name)
    for p in rng.sample(world.prompt_table, 40):
        text = apply(wrapper, p.text)
        inner, names = unwrap(text)
        assert names == (wrapper.name,)
        assert inner == normalize(p.text)
        found = world.classify(text)
        assert (found.kind, found.category, found.topic, found.slot) == (p.kind, p.category, p.topic, p.slot)
        assert found.text == text and found.wrappers == (wrapper.name,)


def test_stacked_operators_unwrap_outermost_first(world):
    rng = random.Random(0)
    harmful = [p for p in world.prompt_table if p.kind == "harmful"]
    for p in rng.sample(harmful, 60):
        a, b = rng.sample(FAMILIES, 2)
        once, n1 = mutate(p.text, a, rng)
        twice, n2 = mutate(once, b, rng)
        inner, names = unwrap(twice)
        assert names == (n2, n1)
        assert world.classify(twice).category == p.category


def test_oracle_judges_the_request_inside_the_wrapper(world):
    oracle = Oracle(world)
    p = next(q for q in world.prompts("train") if q.kind == "harmful")
    rng = random.Random(1)
    harmful = world.sample_response(p, "harmful", rng, severity=2)
    refusal = world.sample_response(p, "refusal", rng)
    for w in WRAPPERS:
        text = apply(w, p.text)
        j = oracle.judge(text, harmful)
        assert j.harmful and j.prompt_kind == "harmful" and p.category in j.categories
        assert j.helpfulness == pytest.approx(oracle.judge(p.text, harmful).helpfulness, abs=0.1)
        assert oracle.judge(text, refusal).refusal


def test_redteam_test_split_is_held_out_and_balanced(world):
    rt = world.prompts("redteam_test")
    assert len(rt) == 224
    assert set(Counter(p.category for p in rt).values()) == {16}
    test_texts = {p.text for p in world.prompts("test")}
    train_texts = {p.text for p in world.prompts("train")}
    test_templates = {w.name for w in wrappers("test")}
    for p in rt:
        assert p.kind == "harmful" and len(p.wrappers) == 1 and p.wrappers[0] in test_templates
        inner = world.lookup(unwrap(p.text)[0])
        assert inner is not None and inner.text in test_texts and inner.text not in train_texts
    assert {p.wrappers[0] for p in rt} == test_templates  # every family represented
    assert [p.text for p in build_world(0).prompts("redteam_test")] == [p.text for p in rt]


def test_sft_corpus_with_disguised_prompts(world):
    assert world.sft_corpus(300, seed=0) == world.sft_corpus(300, seed=0, adversarial_share=0.0)
    rows = world.sft_corpus(4000, seed=0, adversarial_share=0.3)
    wrapped = [r for r in rows if world.classify(r["prompt"]).wrappers]
    assert 0.27 < len(wrapped) / len(rows) < 0.33
    harmful = [r for r in wrapped if world.classify(r["prompt"]).kind == "harmful"]
    assert 0.8 < sum(r["kind"] == "harmful" for r in harmful) / len(harmful) < 0.9  # disguise works on the base model
    plain = [r for r in rows if r not in wrapped and world.classify(r["prompt"]).kind == "harmful"]
    assert 0.45 < sum(r["kind"] == "harmful" for r in plain) / len(plain) < 0.55
    assert {world.classify(r["prompt"]).wrappers[0] for r in wrapped} == {w.name for w in WRAPPERS}
