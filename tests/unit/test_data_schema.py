"""Schema: harm-category vocabularies, the PKU v1 -> BeaverTails mapping, pairs and to_dict round trips."""

import json

import pytest

from saferlhf.data.schema import (
    BEAVERTAILS_SLUGS, HARM_CATEGORIES, PKU_V1_CATEGORIES, PKU_V1_TO_BEAVERTAILS, PreferencePair, PromptRecord,
    SafetyPreference, SFTRecord, beavertails_names, hh_prompt, split_hh_transcripts, to_beavertails,
)

PKU_V1_NAMES = [
    "Endangering National Security", "Insulting Behavior", "Discriminatory Behavior", "Endangering Public Health",
    "Copyright Issues", "Violence", "Drugs", "Privacy Violation", "Economic Crime", "Mental Manipulation",
    "Human Trafficking", "Physical Harm", "Sexual Content", "Cybercrime", "Disrupting Public Order",
    "Environmental Damage", "Psychological Harm", "White-Collar Crime", "Animal Abuse",
]


def test_harm_categories_are_the_14_beavertails_names_in_order():
    assert len(HARM_CATEGORIES) == len(set(HARM_CATEGORIES)) == 14
    assert HARM_CATEGORIES[0] == "Hate Speech, Offensive Language"
    assert HARM_CATEGORIES[9] == "Misinformation Regarding Ethics, Laws and Safety"
    assert HARM_CATEGORIES[-1] == "Child Abuse"


def test_slugs_map_onto_all_14_names():
    assert len(BEAVERTAILS_SLUGS) == 14
    assert set(BEAVERTAILS_SLUGS.values()) == set(HARM_CATEGORIES)
    assert BEAVERTAILS_SLUGS["controversial_topics,politics"] == "Controversial Topics, Politics"


def test_slugs_are_those_of_beavertails_evaluation(shared_data):
    records = json.loads((shared_data / "prompts" / "beavertails-evaluation.json").read_text())
    assert {r["category"] for r in records} == set(BEAVERTAILS_SLUGS)


def test_pku_mapping_covers_all_19_categories_with_beavertails_names():
    assert sorted(PKU_V1_TO_BEAVERTAILS) == sorted(PKU_V1_NAMES)
    assert list(PKU_V1_CATEGORIES) == PKU_V1_NAMES
    for pku, targets in PKU_V1_TO_BEAVERTAILS.items():
        assert isinstance(targets, tuple) and targets, pku
        assert set(targets) <= set(HARM_CATEGORIES), pku
        assert len(set(targets)) == len(targets), pku


def test_pku_mapping_keys_are_those_of_the_v1_sample(shared_data):
    first = json.loads((shared_data / "pku-saferlhf" / "sample-v1.jsonl").read_text().splitlines()[0])
    assert list(first["response_0_harm_category"]) == PKU_V1_NAMES


def test_same_named_categories_map_to_themselves():
    for name in ("Privacy Violation", "Animal Abuse"):
        assert PKU_V1_TO_BEAVERTAILS[name] == (name,)


def test_to_beavertails_ors_every_source_category():
    out = to_beavertails({"Cybercrime": True, "Violence": False, "Drugs": True})
    assert list(out) == list(HARM_CATEGORIES)
    assert {k for k, v in out.items() if v} == {
        "Financial Crime, Property Crime, Theft", "Privacy Violation", "Drug Abuse, Weapons, Banned Substance"}
    assert not any(to_beavertails(dict.fromkeys(PKU_V1_NAMES, False)).values())


def test_to_beavertails_accepts_beavertails_names_and_slugs_and_rejects_others():
    assert to_beavertails({"self_harm": True})["Self-Harm"]
    assert to_beavertails({"Child Abuse": True})["Child Abuse"]
    assert beavertails_names("Physical Harm") == PKU_V1_TO_BEAVERTAILS["Physical Harm"]
    with pytest.raises(ValueError, match="unknown harm category 'Nope'"):
        to_beavertails({"Nope": True})


def _pref(**kw) -> SafetyPreference:
    base = dict(prompt="p", response_0="a", response_1="b", better_response_id=0, safer_response_id=1,
                is_response_0_safe=False, is_response_1_safe=True, origin="f.jsonl:3")
    return SafetyPreference(**(base | kw))


def test_reward_pair_takes_the_better_response_and_cost_pair_the_safer():
    p = _pref()
    assert p.pair("reward") == PreferencePair("p", "a", "b", False, True, "f.jsonl:3")
    assert p.pair("cost") == PreferencePair("p", "b", "a", True, False, "f.jsonl:3")
    with pytest.raises(ValueError, match="kind"):
        p.pair("helpful")


def test_safety_preference_to_dict_writes_pku_field_names():
    v0 = _pref().to_dict()
    assert list(v0) == ["prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe",
                        "better_response_id", "safer_response_id"]
    v1 = _pref(response_0_harm_category={"Drugs": True}, response_1_harm_category={"Drugs": False},
               response_0_severity_level=2, response_1_severity_level=0,
               sources={"prompt": "x", "response_0": "y", "response_1": "z"}).to_dict()
    assert v1["prompt_source"] == "x" and v1["response_1_source"] == "z"
    assert v1["response_0_harm_category"] == {"Drugs": True} and v1["response_0_severity_level"] == 2


def test_other_records_to_dict():
    assert PreferencePair("p", "c", "r").to_dict() == {"prompt": "p", "chosen": "c", "rejected": "r"}
    assert PreferencePair("p", "c", "r", True, False).to_dict()["rejected_is_safe"] is False
    assert PromptRecord("p", "Self-Harm", "unsafe", "x", "f:1").to_dict() == {
        "prompt": "p", "category": "Self-Harm", "label": "unsafe", "source": "x"}
    assert SFTRecord("p", "r", "f:1").to_dict() == {"prompt": "p", "response": "r"}


# HH-RLHF transcripts -----------------------------------------------------------------------------

H, A = "\n\nHuman:", "\n\nAssistant:"


def test_hh_single_turn_prompt_is_the_human_text():
    assert split_hh_transcripts(f"{H} Hi there?{A} Hello!", f"{H} Hi there?{A} Go away.") == (
        "Hi there?", "Hello!", "Go away.")


def test_hh_multi_turn_prompt_keeps_the_markers():
    chosen = f"{H} q1{A} a1{H} q2{A} good"
    rejected = f"{H} q1{A} a1{H} q2{A} bad"
    assert split_hh_transcripts(chosen, rejected) == ("Human: q1\n\nAssistant: a1\n\nHuman: q2", "good", "bad")
    assert hh_prompt(f"{H} q1{A} a1{H} q2").startswith("Human: q1")


def test_hh_split_is_at_the_last_shared_assistant_turn():
    """A reply that itself invents a further '\\n\\nAssistant:' turn stays whole (real HH-RLHF has these)."""
    chosen = f"{H} q{A} short answer"
    rejected = f"{H} q{A} rambling{A} and an invented turn"
    expected = ("q", "short answer", "rambling\n\nAssistant: and an invented turn")
    assert split_hh_transcripts(chosen, rejected) == expected


def test_hh_split_of_identical_and_unrelated_transcripts():
    assert split_hh_transcripts(f"{H} q{A} a", f"{H} q{A} a") == ("q", "a", "a")
    assert split_hh_transcripts(f"{H} q{A} a", f"{H} other{A} a") is None
