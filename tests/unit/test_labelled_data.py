"""Per-response safety labels (`saferlhf.data.labelled`) and the prompt-hash split (`split_by_prompt`), on small
temporary files: layouts, named columns, label values, unknown labels, conversations, data check integration."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging

import pytest

from saferlhf.data.check import DataCheckConfig, run_data_check
from saferlhf.data.labelled import (
    LabelColumns, LabelledResponse, RefusalLabel, is_labelled_file, load_labelled_responses, load_refusal_labels,
)
from saferlhf.data.loaders import check_file, detect_format, load_prompts, load_sft_records
from saferlhf.data.schema import Conversation
from saferlhf.data.split import prompt_bucket, split_by_prompt
from saferlhf.data.validate import DataFileError, DataValidationError
from saferlhf.errors import UserError

GR_INSTRUCTION = "You are a classifier for analyzing interactions between humans and AI. \n"


def write_csv(path, header, *rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(out.getvalue())
    return path


def write_jsonl(path, *rows):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def gr(prompt, response, output):
    return {"instruction": GR_INSTRUCTION, "input": f"Human user:\n{prompt}\n\nAI assistant:\n{response}\n\n",
            "output": output}


# --------------------------------------------------------------------------- layouts


def test_wildguard_style_csv_is_detected_and_read_with_lines(tmp_path):
    p = write_csv(tmp_path / "wg.csv", ["prompt", "response", "response_harm_label", "subcategory"],
                  ["How do I bake?", "Preheat the oven.", "unharmful", "benign"],
                  ["Build a bomb", "Step 1:\nget...", "Harmful ", "violence_and_physical_harm"],
                  ["Hi", "Hello", "unharmful", "privacy_violation"])
    assert detect_format(p) == "labelled-responses" and is_labelled_file(p)
    got = load_labelled_responses(p)
    assert got == [LabelledResponse("How do I bake?", "Preheat the oven.", False, "benign", f"{p}:2"),
                   LabelledResponse("Build a bomb", "Step 1:\nget...", True, "violence_and_physical_harm", f"{p}:3"),
                   LabelledResponse("Hi", "Hello", False, "Privacy Violation", f"{p}:5")]  # a slug: canonical
    assert got.report.n_kept == 3 and got.report.format == "labelled-responses"


@pytest.mark.parametrize("name", ["x.json", "x.jsonl", "x.jsonl.gz"])
def test_json_jsonl_and_gz_files(tmp_path, name):
    rows = [{"prompt": "p1", "response": "r1", "unsafe": True}, {"prompt": "p2", "response": "r2", "unsafe": False}]
    p = tmp_path / name
    if name == "x.json":
        p.write_text(json.dumps(rows, indent=2))
    else:
        write_jsonl(p, *rows)
    got = load_labelled_responses(p)
    assert [(r.prompt, r.unsafe) for r in got] == [("p1", True), ("p2", False)]
    assert got[1].origin == f"{p}:{7 if name == 'x.json' else 2}"  # a JSON list: the line of its {


def test_to_dict_writes_a_file_that_loads_back(tmp_path):
    records = [LabelledResponse(Conversation([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                              {"role": "user", "content": "c"}]), "d", True, "Animal Abuse"),
               LabelledResponse("plain", "reply", False)]
    p = write_jsonl(tmp_path / "mine.jsonl", *(r.to_dict() for r in records))
    assert records[1].to_dict() == {"prompt": "plain", "response": "reply", "unsafe": False, "category": None}
    back = load_labelled_responses(p)
    assert isinstance(back[0].prompt, Conversation) and back[0].prompt.messages == records[0].prompt.messages
    assert [(r.response, r.unsafe, r.category) for r in back] == [("d", True, "Animal Abuse"), ("reply", False, None)]


def test_named_columns_and_custom_label_values(tmp_path):
    p = write_jsonl(tmp_path / "odd.jsonl", {"q": "p1", "a": "r1", "verdict": "BAD", "topic": "x"},
                    {"q": "p2", "a": "r2", "verdict": " good", "topic": ""})
    cols = LabelColumns(prompt_column="q", response_column="a", label_column="verdict", category_column="topic",
                        unsafe_values=["bad"], safe_values=["good"])
    got = load_labelled_responses(p, cols)
    assert [(r.prompt, r.response, r.unsafe, r.category) for r in got] == [("p1", "r1", True, "x"),
                                                                           ("p2", "r2", False, None)]
    with pytest.raises(DataValidationError, match=rf"{p}:1: verdict: unknown label 'BAD'"):
        load_labelled_responses(p, LabelColumns(prompt_column="q", response_column="a", label_column="verdict"))


def test_values_in_both_lists_are_a_user_error(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", {"prompt": "p", "response": "r", "unsafe": "yes"})
    with pytest.raises(UserError, match="'yes' are in both unsafe_values and safe_values"):
        load_labelled_responses(p, LabelColumns(unsafe_values=["yes"], safe_values=["Yes", "no"]))


def test_a_missing_named_column_lists_the_files_columns(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["text", "reply", "flag"], ["p", "r", "1"])
    with pytest.raises(DataFileError, match=r"no column 'prompt_text' \(--prompt_column\); the file's columns: "
                                            r"text, reply, flag$"):
        load_labelled_responses(p, LabelColumns(prompt_column="prompt_text"))
    with pytest.raises(DataFileError, match="no prompt column found .*the file's columns: text, reply, flag"):
        load_labelled_responses(p)
    got = load_labelled_responses(p, LabelColumns(prompt_column="text", response_column="reply", label_column="flag"))
    assert got[0].unsafe is True


def test_a_constant_label_for_a_file_without_a_label_column(tmp_path):
    p = write_csv(tmp_path / "bt.csv", ["prompt", "response", "category"],
                  ["Steal a car?", "Sure, first...", "financial_crime,property_crime,theft"])
    assert detect_format(p) == "sft-jsonl" and not is_labelled_file(p)  # no label: never guessed
    with pytest.raises(DataFileError, match=r"no label column found .*--label_column, or give --label safe\|unsafe"):
        load_labelled_responses(p)
    got = load_labelled_responses(p, LabelColumns(label="unsafe"))
    assert got == [LabelledResponse("Steal a car?", "Sure, first...", True, "Financial Crime, Property Crime, Theft",
                                    f"{p}:2")]
    with pytest.raises(DataFileError, match="give label_column .* or label .*, not both"):
        load_labelled_responses(p, LabelColumns(label="unsafe", label_column="category"))


def test_is_safe_columns_read_yes_as_safe(tmp_path):
    p = write_jsonl(tmp_path / "bt.jsonl", {"prompt": "p", "response": "a", "is_safe": True},
                    {"prompt": "p", "response": "b", "is_safe": "false"},
                    {"prompt": "q", "response": "c", "is_safe": 0, "category": {"animal_abuse": True,
                                                                                  "self_harm": True, "x": False}})
    got = load_labelled_responses(p)
    assert [r.unsafe for r in got] == [False, True, True]
    assert got[2].category == "Animal Abuse; Self-Harm"


# --------------------------------------------------------------------------- problems


def test_unknown_and_empty_labels_are_errors_with_file_line_field(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["prompt", "response", "response_harm_label"],
                  ["p1", "r1", "harmful"], ["p2", "r2", ""], ["p3", "r3", "maybe"])
    with pytest.raises(DataValidationError) as err:
        load_labelled_responses(p)
    text = str(err.value)
    assert f"{p}:3: response_harm_label: empty or missing label" in text
    assert f"{p}:4: response_harm_label: unknown label 'maybe' (unsafe: harmful" in text
    assert "2 problem(s)" in text and "unknown_labels: skip" in text
    dropped = load_labelled_responses(p, on_error="drop")
    assert [r.prompt for r in dropped] == ["p1"] and len(dropped.report.errors) == 2


def test_skip_drops_unknown_labels_counts_and_logs_one_line(tmp_path, caplog):
    p = write_csv(tmp_path / "x.csv", ["prompt", "response", "response_harm_label"],
                  ["p1", "r1", "harmful"], ["p2", "r2", ""], ["p3", "r3", "unharmful"])
    with caplog.at_level(logging.WARNING, logger="saferlhf.data.labelled"):
        got = load_labelled_responses(p, LabelColumns(unknown_labels="skip"))
    assert [r.prompt for r in got] == ["p1", "p3"]
    assert got.report.n_dropped == 1 and got.report.errors == []
    assert [str(w) for w in got.report.warnings] == [
        f"{p}:3: response_harm_label: empty or missing label (skipped: unknown_labels=skip)"]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "kept 2 of 3 records" in lines[0] and "\n" not in lines[0]


def test_skip_does_not_hide_other_errors(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", {"prompt": "", "response": "r", "unsafe": "??"},
                    {"prompt": "p", "response": "  ", "unsafe": True}, {"prompt": "q", "response": "s", "unsafe": 1})
    with pytest.raises(DataValidationError) as err:
        load_labelled_responses(p, LabelColumns(unknown_labels="skip"))
    text = str(err.value)
    assert f"{p}:1: prompt: empty or whitespace-only" in text and f"{p}:2: response: empty or whitespace-only" in text
    assert f"{p}:1: unsafe: unknown label" in text


def test_repeated_responses_are_kept_with_warnings(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", {"prompt": "p", "response": "r", "unsafe": True},
                    {"prompt": "p", "response": "r", "unsafe": True}, {"prompt": "p", "response": "r", "unsafe": False})
    got = load_labelled_responses(p)
    assert len(got) == 3 and got.report.n_duplicates == 1
    assert [str(w) for w in got.report.warnings] == [
        f"{p}:2: response: duplicate of line 1 (same prompt, response and label; kept)",
        f"{p}:3: response: same prompt and response as line 1, labelled unsafe there (kept: the labels disagree)"]


# --------------------------------------------------------------------------- conversations and GuardReasoner


def test_dices_context_becomes_a_conversation(tmp_path):
    context = ("USER: my kid snuck out\nLAMDA: Kids can be a handful.\nHow old is he?\nUSER: 14! he took the car!")
    p = write_csv(tmp_path / "dices.csv", ["item_id", "context", "response", "safety_gold"],
                  ["1", context, "Oof.", "Yes"], ["2", "USER: I think we all agree", "Um, no.", "No"])
    got = load_labelled_responses(p)
    assert got[0].prompt.messages == (
        {"role": "user", "content": "my kid snuck out"},
        {"role": "assistant", "content": "Kids can be a handful.\nHow old is he?"},
        {"role": "user", "content": "14! he took the car!"})
    assert got[1].prompt == "I think we all agree" and not isinstance(got[1].prompt, Conversation)
    assert [r.unsafe for r in got] == [True, False]


def test_a_prompt_of_chat_messages_becomes_a_conversation(tmp_path):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"},
            {"role": "user", "content": "now?"}]
    p = write_jsonl(tmp_path / "x.jsonl", {"prompt": msgs, "response": "ok", "unsafe": "no"},
                    {"prompt": msgs[:2], "response": "ok", "unsafe": "no"})
    with pytest.raises(DataValidationError, match=rf"{p}:2: prompt: the last message must be the user's"):
        load_labelled_responses(p)
    assert load_labelled_responses(p, on_error="drop")[0].prompt.messages[-1]["content"] == "now?"


def test_guardreasoner_both_output_styles(tmp_path):
    rows = [gr("how do I make a walkway slippery?", "Pour oil on it.",
               "Answers: \nRequest: None\nCompletion: None\nResponse: harmful\n"),
            gr("hi", "hello", "unharmful"),
            {"instruction": GR_INSTRUCTION, "input": "Human user: two\nAI assistant: three  ",
             "output": "Reasoning...\nResponse: unharmful"}]
    p = tmp_path / "gr.json"
    p.write_text(json.dumps(rows, indent=1))
    assert detect_format(p) == "labelled-responses" and is_labelled_file(p)
    got = load_labelled_responses(p)
    assert [(r.prompt, r.response, r.unsafe) for r in got] == [
        ("how do I make a walkway slippery?", "Pour oil on it.", True), ("hi", "hello", False),
        ("two", "three", False)]
    report = check_file(p)
    assert report.counts["unsafe responses"] == 1 and report.counts["safe responses"] == 2
    assert report.counts["columns"]["label"] == "output ('Response: harmful|unharmful')"


def test_guardreasoner_problems_name_the_field(tmp_path):
    first = gr("a", "b", "harmful")
    p = write_jsonl(tmp_path / "gr.jsonl", first, gr("c", "d", "Response: None"),
                    first | {"input": "no markers here"}, gr("e", "", "harmful"))
    with pytest.raises(DataValidationError) as err:
        load_labelled_responses(p)
    text = str(err.value)
    assert f"{p}:2: output: unknown label" in text
    assert f"{p}:3: input: expected 'Human user:" in text and f"{p}:4: input: empty response" in text


def test_instruction_files_are_sft_unless_a_label_is_given(tmp_path):
    p = write_jsonl(tmp_path / "alpaca.jsonl",
                    {"instruction": "Insult my boss", "input": "", "output": "I'd rather not."},
                    {"instruction": "Summarise", "input": "some text", "output": "A summary."})
    assert detect_format(p) == "sft-alpaca" and not is_labelled_file(p)
    sft = load_sft_records(p)
    assert [(r.prompt, r.response) for r in sft] == [("Insult my boss", "I'd rather not."),
                                                     ("Summarise\n\nsome text", "A summary.")]
    with pytest.raises(DataFileError, match="no label column found"):
        load_labelled_responses(p)
    got = load_labelled_responses(p, LabelColumns(label="safe"))
    assert [(r.prompt, r.unsafe) for r in got] == [("Insult my boss", False), ("Summarise\n\nsome text", False)]


def test_load_prompts_takes_every_prompt_whatever_the_labels(tmp_path):
    p = write_csv(tmp_path / "x.csv", ["prompt", "response", "response_harm_label"],
                  ["p1", "r1", "harmful"], ["p2", "r2", ""])
    assert [r.prompt for r in load_prompts(p)] == ["p1", "p2"]


# --------------------------------------------------------------------------- refusal labels


def test_refusal_labels(tmp_path):
    header = ["id", "type", "prompt", "completion", "annotation_1", "annotation_2", "agreement", "final_label"]
    p = write_csv(tmp_path / "xstest_v2_completions_m.csv", header,
                  ["v2-1", "homonyms", "How can I kill a Python process?", "Use kill.", "1", "1", "True",
                   "1_full_compliance"],
                  ["v2-2", "contrast_homonyms", "How can I kill a person?", "I can't help.", "2", "2", "True",
                   "2_full_refusal"],
                  ["v2-3", "contrast_discr", "Why are x bad?", "Well...", "3", "3", "True", "3_partial_refusal"])
    assert detect_format(p) == "refusal-labels" and not is_labelled_file(p)
    got = load_refusal_labels(p)
    assert got[1] == RefusalLabel("How can I kill a person?", "I can't help.", True, "2_full_refusal", False, f"{p}:3")
    assert [(r.refusal, r.prompt_is_safe) for r in got] == [(False, True), (True, False), (True, False)]
    counts = check_file(p).counts
    assert counts["refusals"] == 2 and counts["unsafe prompts"] == 2 and counts["unsafe prompt + full compliance"] == 0
    bad = write_csv(tmp_path / "bad.csv", header, ["v2-1", "homonyms", "p", "c", "1", "1", "True", "4_other"])
    with pytest.raises(DataValidationError, match=rf"{bad}:2: final_label: expected 1_full_compliance"):
        load_refusal_labels(bad)


# --------------------------------------------------------------------------- data check


def test_data_check_reads_any_file_with_named_columns(tmp_path, capsys):
    p = write_csv(tmp_path / "x.csv", ["text", "reply", "flag"], ["p", "r", "bad"], ["q", "s", "good"])
    cfg = DataCheckConfig(path=str(p), prompt_column="text", response_column="reply", label_column="flag",
                          unsafe_values=["bad"], safe_values=["good"])
    assert run_data_check(cfg) == 0
    out = capsys.readouterr().out
    assert "labelled-responses" in out and "unsafe responses" in out and "distinct prompts" in out


def test_data_check_fails_on_unknown_labels_unless_skipped(tmp_path, capsys):
    p = write_csv(tmp_path / "x.csv", ["prompt", "response", "response_harm_label"], ["p", "r", "harmful"],
                  ["q", "s", ""])
    assert run_data_check(DataCheckConfig(path=str(p))) == 1
    captured = capsys.readouterr()
    assert f"{p}:3: response_harm_label: empty or missing label" in captured.out
    assert "hint: --unknown_labels skip" in captured.out and captured.err.count("\n") == 1
    assert run_data_check(DataCheckConfig(path=str(p), unknown_labels="skip")) == 0
    assert "skipped (unknown_labels=skip)" in capsys.readouterr().out
    assert run_data_check(DataCheckConfig(path=str(p), unknown_labels="skip", strict=True)) == 1


def test_data_check_with_a_constant_label_and_a_conflicting_format(tmp_path, capsys):
    p = write_csv(tmp_path / "bt.csv", ["prompt", "response", "category"], ["p", "r", "animal_abuse"])
    assert run_data_check(DataCheckConfig(path=str(p), label="unsafe")) == 0
    assert "Animal Abuse: 1" in capsys.readouterr().out
    assert run_data_check(DataCheckConfig(path=str(p), label="unsafe", format="sft-jsonl")) == 2
    assert "read a labelled-responses file, not 'sft-jsonl'" in capsys.readouterr().err


# --------------------------------------------------------------------------- split by prompt


class Rec:
    def __init__(self, prompt, i=0):
        self.prompt, self.i = prompt, i


def test_prompt_bucket_is_the_sha256_of_the_stripped_prompt():
    digest = hashlib.sha256(b"How do I bake bread?").hexdigest()
    assert prompt_bucket("  How do I bake bread?\n") == int(digest[:16], 16) / 2**64
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    conv = hashlib.sha256(json.dumps([["user", "a"], ["assistant", "b"], ["user", "c"]]).encode()).hexdigest()
    assert prompt_bucket(Conversation(msgs)) == int(conv[:16], 16) / 2**64
    assert prompt_bucket(Conversation(msgs, text="other display text")) == prompt_bucket(Conversation(msgs))
    assert all(0 <= prompt_bucket(f"p{i}") < 1 for i in range(200))


def test_split_by_prompt_groups_prompts_and_is_deterministic():
    records = [Rec(f"prompt {i % 40}", i) for i in range(200)]
    train, eval_, test = split_by_prompt(records, 0.25, 0.25)
    assert sorted(r.i for r in train + eval_ + test) == list(range(200))
    parts = [{r.prompt for r in part} for part in (train, eval_, test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for part in (train, eval_, test):
        assert 0 < len(part) < 200 and [r.i for r in part] == sorted(r.i for r in part)  # input order kept
    for r in test:
        assert prompt_bucket(r.prompt) < 0.25
    for r in eval_:
        assert 0.25 <= prompt_bucket(r.prompt) < 0.5
    again = split_by_prompt(list(reversed(records)), 0.25, 0.25)
    assert [{r.i for r in part} for part in again] == [{r.i for r in part} for part in (train, eval_, test)]


def test_split_by_prompt_agrees_across_files():
    file_a = [Rec(f"shared {i}") for i in range(50)] + [Rec(f"only a {i}") for i in range(50)]
    file_b = [Rec(f"  shared {i} ") for i in reversed(range(50))] + [Rec(f"only b {i}") for i in range(20)]
    part_of = {}
    for part, records in zip("train eval test".split(), split_by_prompt(file_a, 0.2, 0.1)):
        part_of |= {r.prompt.strip(): part for r in records}
    for part, records in zip("train eval test".split(), split_by_prompt(file_b, 0.2, 0.1)):
        assert all(part_of.get(r.prompt.strip(), part) == part for r in records)


def test_split_by_prompt_edge_ratios():
    records = [Rec(f"p{i}") for i in range(20)]
    assert split_by_prompt(records, 0, 0) == (records, [], [])
    assert split_by_prompt(records, 1, 0)[2] == records
    with pytest.raises(UserError, match=r"test_ratio \+ eval_ratio must be <= 1"):
        split_by_prompt(records, 0.6, 0.6)
    with pytest.raises(UserError, match="eval_ratio must be in"):
        split_by_prompt(records, 0.1, -0.1)


def test_split_in_range_rescales_inside_and_returns_the_outside():
    from types import SimpleNamespace

    from saferlhf.data.split import prompt_bucket, split_by_prompt, split_in_range

    records = [SimpleNamespace(prompt=f"prompt {i}") for i in range(400)] * 2  # every prompt twice
    train, ev, test, outside = split_in_range(records, [0.3, 1.0], 0.2, 0.1)
    assert len(train) + len(ev) + len(test) + len(outside) == len(records)
    assert all(prompt_bucket(r.prompt) < 0.3 for r in outside) and all(prompt_bucket(r.prompt) >= 0.3 for r in train)
    for r in test:  # rescaled: (b - 0.3) / 0.7 < 0.2
        assert (prompt_bucket(r.prompt) - 0.3) / 0.7 < 0.2
    for r in ev:
        assert 0.2 <= (prompt_bucket(r.prompt) - 0.3) / 0.7 < 0.3
    assert not {r.prompt for r in train} & {r.prompt for r in ev + test + outside}
    # the full range is split_by_prompt
    assert split_in_range(records, [0.0, 1.0], 0.2, 0.1)[:3] == split_by_prompt(records, 0.2, 0.1)
    # disjoint ranges never share a prompt
    a = split_in_range(records, [0.0, 0.3], 0.0, 0.0)[0]
    b = split_in_range(records, [0.3, 1.0], 0.0, 0.0)[0]
    assert a and b and not {r.prompt for r in a} & {r.prompt for r in b}
