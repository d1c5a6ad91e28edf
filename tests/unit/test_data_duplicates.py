"""Pure functions of the data layer: duplicates (find_duplicates), the held-out split (split_pairs), the
text and id checks."""

import pytest

from saferlhf.data.duplicates import conflicts, find_duplicates, identity
from saferlhf.data.schema import PreferencePair, PromptRecord, ResponsePair, SafetyPreference, SFTRecord
from saferlhf.data.split import split_pairs
from saferlhf.data.validate import bad_text, require_binary_id, require_text


def _pku(origin, r0="a", r1="b", better=0, safer=0, safe=(True, False)):
    return SafetyPreference("p", r0, r1, better, safer, *safe, origin=origin)


def test_identity_ignores_the_order_of_the_responses():
    assert identity(_pku("f:1")) == identity(_pku("f:2", r0="b", r1="a"))
    assert identity(PreferencePair("p", "c", "r")) == identity(PreferencePair("p", "r", "c"))
    assert identity(ResponsePair("p", "a", "b")) == identity(ResponsePair("p", "b", "a"))
    assert identity(SFTRecord("p", "a")) != identity(SFTRecord("p", "b"))
    assert identity(PromptRecord("p", category="x")) == identity(PromptRecord("p", category="y"))


def test_conflicts_follow_the_responses_not_their_positions():
    a = _pku("f:1")
    assert conflicts(a, _pku("f:2", r0="b", r1="a", better=1, safer=1, safe=(False, True))) == []
    assert conflicts(a, _pku("f:2", better=1)) == ["better_response_id"]
    assert conflicts(a, _pku("f:2", r0="b", r1="a", better=0, safer=1, safe=(False, True))) == ["better_response_id"]
    assert conflicts(a, _pku("f:2", safe=(True, True))) == ["is_response_1_safe"]
    pair = PreferencePair("p", "c", "r", True, None)
    assert conflicts(pair, PreferencePair("p", "r", "c")) == ["chosen"]
    assert conflicts(pair, PreferencePair("p", "c", "r", None, False)) == []  # unknown contradicts nothing
    assert conflicts(pair, PreferencePair("p", "c", "r", False, None)) == ["chosen_is_safe"]
    assert conflicts(PromptRecord("p", label="safe"), PromptRecord("p", label="unsafe")) == ["label"]
    assert conflicts(PromptRecord("p", label="safe"), PromptRecord("p")) == []


def test_find_duplicates_exact_and_contradictory_groups():
    records = [_pku("f:1"), _pku("f:2", r0="x"), _pku("f:3"), _pku("f:4", better=1), _pku("f:5", r0="x")]
    problems = [(p.line, p.field, p.severity, p.reason) for p in find_duplicates(records)]
    assert problems == [
        (1, "better_response_id", "error", "contradicts line 4 (same prompt and responses, but the other response "
                                           "is the better one)"),
        (3, "better_response_id", "error", "contradicts line 4 (same prompt and responses, but the other response "
                                           "is the better one)"),
        (4, "better_response_id", "error", "contradicts line 1 (same prompt and responses, but the other response "
                                           "is the better one)"),
        (5, "record", "warning", "duplicate of line 2 (same prompt and responses; kept)"),
    ]
    assert find_duplicates([SFTRecord("p", "a", "f:1"), SFTRecord("p", "b", "f:2")]) == []


def test_split_pairs_groups_by_prompt_and_is_deterministic():
    pairs = [PreferencePair(f"p{i % 10}", f"c{i}", f"r{i}") for i in range(100)]
    train, held = split_pairs(pairs, 0.3, seed=1)
    assert len(held) == 30 and not {p.prompt for p in train} & {p.prompt for p in held}
    assert train == [p for p in pairs if p in train] and (train, held) == split_pairs(pairs, 0.3, seed=1)
    assert split_pairs([], 0.5) == ([], [])
    assert split_pairs([PreferencePair(" p ", "a", "b"), PreferencePair("p", "c", "d")], 0.5) == (
        [PreferencePair(" p ", "a", "b"), PreferencePair("p", "c", "d")], [])  # same prompt once stripped


@pytest.mark.parametrize("text,reason", [("ok", None), ("\ud800", "unpaired surrogate '\\ud800' at position 0"),
                                         ("ab\udc00", "at position 2"),
                                         ("\U0001f600 paired", None)])
def test_bad_text(text, reason):
    got = bad_text(text)
    assert got is None if reason is None else reason in got
    assert require_text({"t": text}, "t") == ([] if reason is None else [("t", got, "error")])


def test_require_text_empty_severity_and_binary_ids():
    assert require_text({"t": " "}, "t", empty="warning")[0].severity == "warning"
    for value in (0, 1):
        assert require_binary_id({"i": value}, "i") == []
    for value in (1.0, 0.0, True, False, "1", 2, -1, None, [0]):
        assert len(require_binary_id({"i": value}, "i")) == 1, value
