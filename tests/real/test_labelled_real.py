"""Every per-response labelled file of ../shared/data loads with the counts its README states (skipped, with the
reason, where that folder is absent: the `shared_data` fixture of tests/conftest.py). A few seconds in all."""

from __future__ import annotations

from collections import Counter

import pytest

from saferlhf.data.check import DataCheckConfig, run_data_check
from saferlhf.data.labelled import LabelColumns, is_labelled_file, load_labelled_responses, load_refusal_labels
from saferlhf.data.loaders import check_file, detect_format, load_sft_records
from saferlhf.data.schema import HARM_CATEGORIES, Conversation
from saferlhf.data.split import prompt_key, split_by_prompt
from saferlhf.data.validate import DataFileError, DataValidationError

# file -> (records, unsafe, safe, distinct prompts), as in ../shared/data/README.md
GUARDREASONER = {
    "0_A_beaver_tails.json": (3021, 1733, 1288, 2526),
    "0_9_safe_rlhf.json": (2000, 1000, 1000, 549),
    "0_5_harmbench_response.json": (602, 273, 329, 602),
    "0_6_xstest_response_harmful.json": (446, 78, 368, 446),
}
# model -> (refusals: final label 2 or 3, unsafe prompts fully complied with)
XSTEST = {"gpt4": (220, 1), "llama2new": (274, 0), "llama2orig": (349, 0), "mistralguard": (240, 7),
          "mistralinstruct": (76, 128)}


def counts(records) -> tuple[int, int, int, int]:
    return (len(records), sum(r.unsafe for r in records), sum(not r.unsafe for r in records),
            len({prompt_key(r.prompt) for r in records}))


@pytest.mark.parametrize("name,expected", GUARDREASONER.items())
def test_guardreasoner_files(shared_data, name, expected):
    path = shared_data / "guardreasoner-response-harm" / name
    assert detect_format(path) == "labelled-responses" and is_labelled_file(path)
    records = load_labelled_responses(path)
    assert counts(records) == expected
    assert records.report.errors == [] and not any(r.prompt.startswith("Human user") for r in records)


def test_guardreasoner_pku_sample_keeps_its_disagreeing_repeats(shared_data):
    records = load_labelled_responses(shared_data / "guardreasoner-response-harm" / "0_9_safe_rlhf.json")
    disagree = [w for w in records.report.warnings if w.reason.endswith("(kept: the labels disagree)")]
    assert len(records) == 2000 and len(records.report.warnings) == 318
    assert records.report.n_duplicates == 290 and len(disagree) == 28


def test_wildguardtest(shared_data):
    path = shared_data / "wildguardmix" / "wildguardtest.csv"
    with pytest.raises(DataValidationError) as err:
        load_labelled_responses(path)
    assert len(err.value.problems) == 8 and all(p.field == "response_harm_label" for p in err.value.problems)
    records = load_labelled_responses(path, LabelColumns(unknown_labels="skip"))
    assert counts(records) == (1027, 161, 866, 1027) and records.report.n_dropped == 8
    categories = Counter(r.category for r in records)
    assert len(categories) == 15 and categories["benign"] == 601
    assert records[0].origin == f"{path}:2"


def test_dices(shared_data):
    records = load_labelled_responses(shared_data / "dices" / "dices350_filtered.csv")
    assert counts(records) == (350, 175, 175, 271)
    conversations = [r.prompt for r in records if isinstance(r.prompt, Conversation)]
    assert len(conversations) == 179
    assert all(m["role"] in ("user", "assistant") and "LAMDA:" not in m["content"] and "USER:" not in m["content"]
               for c in conversations for m in c.messages)
    assert all(not r.prompt.startswith("USER:") for r in records)


def test_beavertails_sample_needs_its_constant_label(shared_data):
    path = shared_data / "beavertails" / "beavertails_sample.csv"
    with pytest.raises(DataFileError, match="no label column found"):
        load_labelled_responses(path)
    records = load_labelled_responses(path, LabelColumns(label="unsafe"))
    assert counts(records) == (140, 140, 0, 140)
    categories = Counter(r.category for r in records)
    assert set(categories) == set(HARM_CATEGORIES)
    assert categories["Child Abuse"] == 9 and categories["Terrorism, Organized Crime"] == 11


def test_safety_tuned_llamas(shared_data):
    path = shared_data / "safety-tuned-llamas" / "safety_only_data_Instructions.json"
    assert detect_format(path) == "sft-alpaca" and not is_labelled_file(path)
    assert len(load_sft_records(path)) == 2483
    assert counts(load_labelled_responses(path, LabelColumns(label="safe"))) == (2483, 0, 2483, 2479)


@pytest.mark.parametrize("model,expected", XSTEST.items())
def test_xstest_completions(shared_data, model, expected):
    path = shared_data / "xstest" / f"xstest_v2_completions_{model}.csv"
    assert detect_format(path) == "refusal-labels"
    records = load_refusal_labels(path)
    assert len(records) == 450 and sum(r.prompt_is_safe for r in records) == 250
    assert (sum(r.refusal for r in records), sum(not r.prompt_is_safe and not r.refusal for r in records)) == expected


def test_check_file_counts(shared_data):
    report = check_file(shared_data / "dices" / "dices350_filtered.csv")
    assert (report.format, report.n_valid, report.counts["unsafe responses"], report.counts["distinct prompts"],
            report.counts["multi-turn prompts"]) == ("labelled-responses", 350, 175, 271, 179)


def test_data_check_wildguard_with_skip(shared_data, capsys):
    path = shared_data / "wildguardmix" / "wildguardtest.csv"
    assert run_data_check(DataCheckConfig(path=str(path), unknown_labels="skip", max_problems=1)) == 0
    out = capsys.readouterr().out
    assert "labelled-responses" in out and "skipped (unknown_labels=skip)" in out and "161" in out


def test_held_out_prompts_stay_held_out_across_files(shared_data):
    beaver = load_labelled_responses(shared_data / "guardreasoner-response-harm" / "0_A_beaver_tails.json")
    pku = load_labelled_responses(shared_data / "guardreasoner-response-harm" / "0_9_safe_rlhf.json")
    part_of = {}
    for records in (beaver, pku):
        for part, chosen in zip(("train", "eval", "test"), split_by_prompt(records, 0.2, 0.1)):
            for r in chosen:
                assert part_of.setdefault(prompt_key(r.prompt), part) == part
    shared = {prompt_key(r.prompt) for r in beaver} & {prompt_key(r.prompt) for r in pku}
    assert len(shared) == 98
