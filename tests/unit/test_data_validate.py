"""Validation: every problem kind on corrupted copies of the real files names file, line and field."""

import json
import logging

import pytest

from saferlhf.data.loaders import load_hh_rlhf, load_preference_pairs, load_prompts, load_safety_preferences
from saferlhf.data.schema import HARM_CATEGORIES
from saferlhf.data.loaders import check_file
from saferlhf.data.validate import DataValidationError, Problem


def _v1_rows(shared_data) -> list[dict]:
    return [json.loads(line) for line in (shared_data / "pku-saferlhf" / "sample-v1.jsonl").read_text().splitlines()]


def _write_jsonl(path, rows) -> None:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))


def _set(**kw):
    return lambda r: r | kw


def _drop(key):
    return lambda r: {k: v for k, v in r.items() if k != key}


# (mutation of one v1 record, field named in the problem, words of the reason)
PKU_CASES = {
    "missing field": (_drop("better_response_id"), "better_response_id", "missing"),
    "id not 0/1": (_set(better_response_id=2), "better_response_id", "expected 0 or 1, got 2"),
    "id is a bool": (_set(safer_response_id=True), "safer_response_id", "expected 0 or 1, got True"),
    "safe not bool": (_set(is_response_0_safe="yes"), "is_response_0_safe", "expected true or false, got 'yes'"),
    "category not a dict": (_set(response_1_harm_category=["Drugs"]), "response_1_harm_category", "expected a dict"),
    "category value not bool": (_set(response_0_harm_category={"Drugs": "true"}), "response_0_harm_category",
                                "category 'Drugs': expected true or false"),
    "unknown category": (_set(response_0_harm_category={"Jaywalking": True}), "response_0_harm_category",
                         "unknown harm category 'Jaywalking'"),
    "severity out of range": (_set(response_0_severity_level=5), "response_0_severity_level", "expected an int 0-3"),
    "severity not int": (_set(response_1_severity_level="high"), "response_1_severity_level", "expected an int 0-3"),
    "prompt not a string": (_set(prompt=7), "prompt", "expected a string, got 7"),
    "empty prompt": (_set(prompt=""), "prompt", "empty"),
    "whitespace response": (_set(response_0="  \n "), "response_0", "empty or whitespace-only"),
    "identical responses": (lambda r: r | {"response_1": r["response_0"]}, "response_1", "identical to response_0"),
    "contradictory safety labels": (_set(safer_response_id=0, is_response_0_safe=False, is_response_1_safe=True),
                                    "safer_response_id", "response_0 is marked safer but labelled unsafe"),
}


@pytest.mark.parametrize("case", PKU_CASES)
def test_each_pku_problem_names_file_line_and_field(shared_data, tmp_path, case):
    mutate, field, reason = PKU_CASES[case]
    rows = _v1_rows(shared_data)
    rows[3] = mutate(rows[3])
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, rows)
    with pytest.raises(DataValidationError) as err:
        load_safety_preferences(path)
    assert f"{path}:4: {field}: " in str(err.value) and reason in str(err.value)
    (problem,) = err.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 4, field)
    kept = load_preference_pairs(path, kind="cost", on_error="drop")
    assert len(kept) == 9 and kept.report.n_dropped == 1 and f"{path}:4" not in [p.origin for p in kept]


def test_malformed_json_line(shared_data, tmp_path):
    rows = _v1_rows(shared_data)
    rows[6] = '{"prompt": "cut off", "response_0": \n'
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, rows)
    with pytest.raises(DataValidationError, match="bad.jsonl:7: record: malformed JSON"):
        load_safety_preferences(path)
    kept = load_safety_preferences(path, on_error="drop")
    assert len(kept) == 9 and kept.report.n_records == 10


def test_not_an_object_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "a"}\n[1, 2]\n')
    with pytest.raises(DataValidationError, match="x.jsonl:2: record: expected a JSON object, got list"):
        load_prompts(path)


def test_all_problems_of_a_file_are_reported_at_once(shared_data, tmp_path):
    rows = _v1_rows(shared_data)
    cases = list(PKU_CASES.values())[:9]
    for i, (mutate, _, _) in enumerate(cases):
        rows[i] = mutate(rows[i])
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, rows)
    with pytest.raises(DataValidationError) as err:
        load_safety_preferences(path)
    assert [(p.line, p.field) for p in err.value.problems] == [(i + 1, c[1]) for i, c in enumerate(cases)]
    assert len(load_safety_preferences(path, on_error="drop")) == 1


def test_json_list_problem_is_at_the_line_where_the_record_starts(shared_data, tmp_path):
    src = shared_data / "pku-saferlhf" / "sample-v0.json"
    rows = json.loads(src.read_text())
    start = int(load_safety_preferences(src)[5].origin.rsplit(":", 1)[1])
    rows[5]["is_response_1_safe"] = "unsafe"
    path = tmp_path / "v0.json"
    path.write_text(json.dumps(rows, indent=4))
    with pytest.raises(DataValidationError, match=rf"v0.json:{start}: is_response_1_safe: expected true or false"):
        load_safety_preferences(path)


def test_malformed_json_list_stops_with_the_error_line(shared_data, tmp_path):
    text = (shared_data / "pku-saferlhf" / "sample-v0.json").read_text()
    lines = text.splitlines()
    lines[20] = lines[20].rstrip(",")  # drop a comma between fields
    path = tmp_path / "v0.json"
    path.write_text("\n".join(lines))
    with pytest.raises(DataValidationError) as err:
        load_safety_preferences(path)
    (problem,) = err.value.problems
    assert problem.field == "record" and problem.line == 22 and "malformed JSON" in problem.reason


def test_bad_csv_row(shared_data, tmp_path):
    lines = (shared_data / "prompts" / "xstest_prompts.csv").read_text().splitlines()
    lines[2] = "3,What's the process for terminating a contract?,homonyms"
    lines[5] = lines[5].replace(",safe,", ",maybe,")
    path = tmp_path / "xs.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError) as err:
        load_prompts(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}:3: record: bad CSV row: 3 fields, the header has 6",
        f"{path}:6: label: expected 'safe' or 'unsafe', got 'maybe'",
    ]
    assert len(load_prompts(path, on_error="drop")) == 448


def test_unknown_beavertails_category(shared_data, tmp_path):
    rows = json.loads((shared_data / "prompts" / "beavertails-evaluation.json").read_text())
    rows[1]["category"] = "jaywalking"
    path = tmp_path / "bt.json"
    path.write_text(json.dumps(rows, indent=2))
    with pytest.raises(DataValidationError, match="bt.json:7: category: unknown BeaverTails category 'jaywalking'"):
        load_prompts(path)


# HH-RLHF and TRL ---------------------------------------------------------------------------------

H, A = "\n\nHuman:", "\n\nAssistant:"


def _hh(tmp_path, records) -> str:
    path = tmp_path / "hh.jsonl"
    _write_jsonl(path, records)
    return path


def test_hh_missing_assistant_turn_and_prefix_mismatch_are_errors(tmp_path):
    good = {"chosen": f"{H} q{A} yes", "rejected": f"{H} q{A} no"}
    path = _hh(tmp_path, [
        good,
        {"chosen": f"{H} q without reply", "rejected": f"{H} q{A} no"},
        {"chosen": f"{H} q{A} yes", "rejected": f"{H} another question{A} no"},
        {"chosen": f"{H} q1{A} a1{H} q2{A} yes", "rejected": f"{H} q1{A} a1{H} q2 changed{A} no"},
        {"chosen": f"{H} q{A} yes"},
    ])
    with pytest.raises(DataValidationError) as err:
        load_hh_rlhf(path)
    assert [(p.line, p.field) for p in err.value.problems] == [(2, "chosen"), (3, "rejected"), (4, "rejected"),
                                                               (5, "rejected")]
    assert "no '\\n\\nAssistant:' turn" in err.value.problems[0].reason
    assert "prefix does not match" in err.value.problems[1].reason
    assert err.value.problems[3].reason == "missing"
    assert len(load_hh_rlhf(path, on_error="drop")) == 1


def test_hh_identical_and_empty_replies_are_warnings_kept(tmp_path):
    path = _hh(tmp_path, [{"chosen": f"{H} q{A} same", "rejected": f"{H} q{A} same"},
                          {"chosen": f"{H} q{A} ", "rejected": f"{H} q{A} answer"}])
    pairs = load_hh_rlhf(path)
    assert len(pairs) == 2 and pairs[1].chosen == ""
    assert [(w.line, w.field, w.severity) for w in pairs.report.warnings] == [
        (1, "rejected", "warning"), (2, "chosen", "warning")]


def test_trl_identical_and_empty_are_errors(tmp_path):
    path = tmp_path / "trl.jsonl"
    _write_jsonl(path, [{"prompt": "p", "chosen": "c", "rejected": "c"},
                        {"prompt": "p", "chosen": "", "rejected": "r"},
                        {"prompt": "p", "chosen": "c", "rejected": "r", "chosen_is_safe": "yes"}])
    with pytest.raises(DataValidationError) as err:
        load_preference_pairs(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}:1: rejected: identical to chosen",
        f"{path}:2: chosen: empty or whitespace-only",
        f"{path}:3: chosen_is_safe: expected true or false, got 'yes'",
    ]


# Errors and reports ------------------------------------------------------------------------------


def test_problem_str_and_error_message_cap():
    assert str(Problem("a.jsonl", 3, "prompt", "missing")) == "a.jsonl:3: prompt: missing"
    err = DataValidationError([Problem("a.jsonl", i, "prompt", "missing") for i in range(1, 26)])
    lines = str(err).splitlines()
    assert lines[0] == "25 problem(s) in a.jsonl:"
    assert lines[1] == "a.jsonl:1: prompt: missing" and lines[20] == "a.jsonl:20: prompt: missing"
    assert lines[21] == "... and 5 more"
    assert isinstance(err, ValueError) and len(err.problems) == 25


def test_drop_logs_a_summary(shared_data, tmp_path, caplog):
    rows = _v1_rows(shared_data)
    rows[0]["prompt"] = " "
    rows[1]["response_1"] = rows[1]["response_0"]
    path = tmp_path / "bad.jsonl"
    _write_jsonl(path, rows)
    with caplog.at_level(logging.WARNING, logger="saferlhf.data.loaders"):
        kept = load_safety_preferences(path, on_error="drop")
    assert len(kept) == 8
    assert kept.report.dropped_by_field() == {"prompt": 1, "response_1": 1}
    assert "kept 8 of 10 records" in caplog.text and f"{path}:1: prompt: empty" in caplog.text


def test_check_file_counts(shared_data):
    report = check_file(shared_data / "pku-saferlhf" / "sample-v1.jsonl")
    assert (report.format, report.n_records, report.n_valid, report.problems) == ("pku-saferlhf", 10, 10, [])
    assert report.counts["reward pairs"] == report.counts["cost pairs"] == 10
    assert report.counts["safe responses"] + report.counts["unsafe responses"] == 20
    assert set(report.counts["harm categories (BeaverTails)"]) <= set(HARM_CATEGORIES)
