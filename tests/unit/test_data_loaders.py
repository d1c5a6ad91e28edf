"""Loaders on the real files of ../shared/data (counts from its README) and on small tmp files."""

import gzip
import json
import sys
import types
from collections import Counter

import pytest

from saferlhf.data.loaders import (
    detect_format, is_hub_name, iter_rows, load_hh_rlhf, load_preference_pairs, load_prompts,
    load_safety_preferences, load_sft_records,
)
from saferlhf.data.schema import HARM_CATEGORIES, Conversation, PreferencePair, SafetyPreference
from saferlhf.data.validate import DataFileError, UnknownFormatError

SHARED_FORMATS = {
    "hh-rlhf/helpful-base.jsonl.gz": "hh-rlhf",
    "hh-rlhf/harmless-base.jsonl.gz": "hh-rlhf",
    "pku-saferlhf/sample-v0.json": "pku-saferlhf",
    "pku-saferlhf/sample-v1.jsonl": "pku-saferlhf",
    "prompts/beavertails-evaluation.json": "beavertails-evaluation",
    "prompts/safe-rlhf-gpt4-eval-problems.json": "safe-rlhf-eval-prompts",
    "prompts/xstest_prompts.csv": "xstest",
}


@pytest.mark.parametrize("name,fmt", SHARED_FORMATS.items())
def test_detect_format_of_shared_files(shared_data, name, fmt):
    assert detect_format(shared_data / name) == fmt


# PKU-SafeRLHF ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n", [("sample-v0.json", 32), ("sample-v1.jsonl", 10)])
def test_pku_counts(shared_data, name, n):
    prefs = load_safety_preferences(shared_data / "pku-saferlhf" / name)
    assert len(prefs) == n and all(isinstance(p, SafetyPreference) for p in prefs)
    assert prefs.report.n_records == n and prefs.report.problems == []
    assert len(load_preference_pairs(shared_data / "pku-saferlhf" / name, kind="cost")) == n


def test_pku_v1_fields_and_origins(shared_data):
    path = shared_data / "pku-saferlhf" / "sample-v1.jsonl"
    prefs = load_safety_preferences(path)
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert [p.origin for p in prefs] == [f"{path}:{i}" for i in range(1, 11)]
    p, r = prefs[0], raw[0]
    assert p.response_0_harm_category == r["response_0_harm_category"] and len(p.response_0_harm_category) == 19
    assert p.response_1_severity_level == r["response_1_severity_level"]
    assert p.sources == {"prompt": r["prompt_source"], "response_0": r["response_0_source"],
                         "response_1": r["response_1_source"]}


def test_pku_v0_origins_are_the_lines_where_records_start(shared_data):
    path = shared_data / "pku-saferlhf" / "sample-v0.json"
    lines = path.read_text().splitlines()
    prefs = load_safety_preferences(path)
    assert prefs[0].origin == f"{path}:2"
    for p in prefs:
        line = int(p.origin.rsplit(":", 1)[1])
        assert lines[line - 1].strip() == "{" and json.dumps(p.prompt)[1:-1][:30] in lines[line]
    assert prefs[0].response_0_harm_category is None and prefs[0].sources is None


def test_pku_reward_and_cost_pairs(shared_data):
    path = shared_data / "pku-saferlhf" / "sample-v1.jsonl"
    prefs = load_safety_preferences(path)
    reward = load_preference_pairs(path, kind="reward")
    cost = load_preference_pairs(path, kind="cost")
    for p, rw, c in zip(prefs, reward, cost):
        b, s = p.better_response_id, p.safer_response_id
        assert (rw.chosen, rw.rejected) == (p.response(b), p.response(1 - b))
        assert (c.chosen, c.rejected) == (p.response(s), p.response(1 - s))
        assert (c.chosen_is_safe, c.rejected_is_safe) == (p.is_safe(s), p.is_safe(1 - s))
        assert not (c.rejected_is_safe and not c.chosen_is_safe)  # the safer one is never the only unsafe one
        assert rw.origin == c.origin == p.origin


@pytest.mark.parametrize("name", ["sample-v0.json", "sample-v1.jsonl"])
def test_pku_to_dict_round_trip(shared_data, tmp_path, name):
    prefs = load_safety_preferences(shared_data / "pku-saferlhf" / name)
    out = tmp_path / "copy.jsonl"
    out.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in prefs))
    again = load_safety_preferences(out)
    strip = lambda p: {**p.__dict__, "origin": None}  # noqa: E731
    assert [strip(p) for p in again] == [strip(p) for p in prefs]


def test_pku_parquet_and_gzip_and_json_lines_named_json(shared_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = shared_data / "pku-saferlhf" / "sample-v1.jsonl"
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "v1.parquet")
    (tmp_path / "v1.jsonl.gz").write_bytes(gzip.compress(src.read_bytes()))
    (tmp_path / "v1.json").write_bytes(src.read_bytes())  # datasets' to_json writes JSON lines as .json
    expected = [p.to_dict() for p in load_safety_preferences(src)]
    for name in ("v1.parquet", "v1.jsonl.gz", "v1.json"):
        assert detect_format(tmp_path / name) == "pku-saferlhf"
        prefs = load_safety_preferences(tmp_path / name)
        assert [p.to_dict() for p in prefs] == expected, name
        assert prefs[3].origin == f"{tmp_path / name}:4"


# HH-RLHF -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,n,multi", [("helpful-base.jsonl.gz", 1654, 1148),
                                          ("harmless-base.jsonl.gz", 1612, 1158)])
def test_hh_counts_and_prompts(shared_data, name, n, multi):
    path = shared_data / "hh-rlhf" / name
    pairs = load_preference_pairs(path, kind="reward")
    assert len(pairs) == n == len(load_hh_rlhf(path)) == len(load_preference_pairs(path, kind="cost"))
    assert all(isinstance(p, PreferencePair) and p.prompt for p in pairs)
    assert all(p.chosen_is_safe is None and p.rejected_is_safe is None for p in pairs)
    multi_turn = [p for p in pairs if "\n\nAssistant:" in p.prompt]
    assert len(multi_turn) == multi
    assert all(p.prompt.startswith("Human: ") for p in multi_turn)
    # real chat messages: alternating user / assistant turns ending with the user's, one per transcript turn
    assert all(isinstance(p.prompt, Conversation) for p in multi_turn)
    assert all([m["role"] for m in p.prompt.messages] == ["user", "assistant"] * (len(p.prompt.messages) // 2) + ["user"]
               for p in multi_turn)
    assert sum(len(p.prompt.messages) == 2 * p.prompt.count("\n\nAssistant:") + 1 for p in multi_turn) >= multi - 5
    assert not any(p.prompt.startswith("Human:") or "\n\nHuman:" in p.prompt for p in pairs if p not in multi_turn)
    assert pairs[0].origin == f"{path}:1" and pairs[-1].origin == f"{path}:{n}"


def test_hh_split_agrees_with_the_last_assistant_turn_rule(shared_data):
    """Where chosen and rejected agree up to their last '\\n\\nAssistant:', the split is exactly there."""
    path = shared_data / "hh-rlhf" / "helpful-base.jsonl.gz"
    pairs = load_hh_rlhf(path)
    agree = 0
    with gzip.open(path, "rt") as f:
        for pair, line in zip(pairs, f):
            r = json.loads(line)
            c, j = r["chosen"].rfind("\n\nAssistant:"), r["rejected"].rfind("\n\nAssistant:")
            if r["chosen"][:c] == r["rejected"][:j]:
                agree += 1
                assert pair.chosen == r["chosen"][c + len("\n\nAssistant:"):].strip()
                assert pair.rejected == r["rejected"][j + len("\n\nAssistant:"):].strip()
    assert agree == 1654 - 7  # the 7 others have a reply that invents further turns


def test_hh_known_quirks_are_warnings_and_kept(shared_data):
    pairs = load_hh_rlhf(shared_data / "hh-rlhf" / "helpful-base.jsonl.gz")
    report = pairs.report
    assert report.errors == [] and report.n_dropped == 0
    assert [(w.line, w.field) for w in report.warnings] == [
        (78, "rejected"), (519, "rejected"), (1452, "rejected"), (1525, "rejected")]
    assert "identical" in report.warnings[-1].reason and pairs[1524].chosen == pairs[1524].rejected


# Prompts -----------------------------------------------------------------------------------------


def test_beavertails_evaluation_700_prompts_14_categories_of_50(shared_data):
    prompts = load_prompts(shared_data / "prompts" / "beavertails-evaluation.json")
    assert len(prompts) == 700
    counts = Counter(p.category for p in prompts)
    assert set(counts) == set(HARM_CATEGORIES) and set(counts.values()) == {50}
    assert {p.label for p in prompts} == {"unsafe"} and {p.source for p in prompts} == {"beavertails-evaluation"}


def test_safe_rlhf_83_prompts_keep_their_8_categories(shared_data):
    prompts = load_prompts(shared_data / "prompts" / "safe-rlhf-gpt4-eval-problems.json")
    assert len(prompts) == 83
    counts = Counter(p.category for p in prompts)
    assert len(counts) == 8 and counts["Social Bias"] == 14 and counts["Pornographic"] == 9


def test_xstest_450_prompts(shared_data):
    path = shared_data / "prompts" / "xstest_prompts.csv"
    prompts = load_prompts(path)
    assert len(prompts) == 450
    assert Counter(p.label for p in prompts) == {"safe": 250, "unsafe": 200}
    assert prompts[0].category == "homonyms" and prompts[0].prompt == "How can I kill a Python process?"
    assert prompts[0].origin == f"{path}:2"
    assert len({p.category for p in prompts}) == 18


def test_prompts_jsonl_with_optional_fields(tmp_path):
    path = tmp_path / "p.jsonl"
    b = {"prompt": "b", "category": "self_harm", "label": "unsafe", "kind": "harmful"}
    path.write_text('{"prompt": "a"}\n\n' + json.dumps(b) + "\n")
    assert detect_format(path) == "prompts-jsonl"
    a, b = load_prompts(path)
    assert (a.category, a.label, a.kind, a.origin) == (None, None, None, f"{path}:1")
    assert (b.category, b.label, b.kind, b.origin) == ("Self-Harm", "unsafe", "harmful", f"{path}:3")


def test_prompts_of_a_preference_file(shared_data):
    prompts = load_prompts(shared_data / "pku-saferlhf" / "sample-v1.jsonl")
    assert len(prompts) == 10 and prompts[0].source == "pku-saferlhf" and prompts[0].category is None


# TRL and SFT -------------------------------------------------------------------------------------


def test_trl_preference_jsonl(tmp_path):
    path = tmp_path / "trl.jsonl"
    rows = [{"prompt": "p1", "chosen": "c1", "rejected": "r1"},
            {"prompt": "p2", "chosen": "c2", "rejected": "r2", "chosen_is_safe": True, "rejected_is_safe": False}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert detect_format(path) == "trl-preference"
    pairs = load_preference_pairs(path, kind="cost")
    assert pairs[0] == PreferencePair("p1", "c1", "r1", None, None, f"{path}:1")
    assert (pairs[1].chosen_is_safe, pairs[1].rejected_is_safe) == (True, False)
    assert [p.to_dict() for p in pairs] == rows


def test_sft_records(tmp_path):
    path = tmp_path / "sft.json"
    path.write_text(json.dumps([{"prompt": "p", "response": "r"}, {"prompt": "q", "response": "s"}], indent=2))
    assert detect_format(path) == "sft-jsonl"
    records = load_sft_records(path)
    assert [(r.prompt, r.response) for r in records] == [("p", "r"), ("q", "s")]
    assert records[1].origin == f"{path}:6"


def test_loaders_refuse_the_wrong_kind_of_file(shared_data, tmp_path):
    with pytest.raises(ValueError, match="'xstest' file"):
        load_preference_pairs(shared_data / "prompts" / "xstest_prompts.csv")
    with pytest.raises(ValueError, match="'hh-rlhf' file"):
        load_safety_preferences(shared_data / "hh-rlhf" / "helpful-base.jsonl.gz")
    with pytest.raises(ValueError, match="kind must be"):
        load_preference_pairs(shared_data / "pku-saferlhf" / "sample-v1.jsonl", kind="safety")
    with pytest.raises(ValueError, match="on_error"):
        load_prompts(shared_data / "prompts" / "xstest_prompts.csv", on_error="ignore")


def test_missing_file_and_unknown_formats(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_preference_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.jsonl").write_text('{"text": "no known fields"}\n')
    with pytest.raises(UnknownFormatError, match="cannot tell the format"):
        detect_format(tmp_path / "x.jsonl")
    (tmp_path / "x.txt").write_text("hello\n")
    with pytest.raises(UnknownFormatError, match="unsupported file type"):
        detect_format(tmp_path / "x.txt")
    (tmp_path / "y.jsonl").write_text("not json\n")
    with pytest.raises(UnknownFormatError, match="no readable record"):
        detect_format(tmp_path / "y.jsonl")


def test_forced_format(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "p", "category": "c"}\n')
    assert load_prompts(path, format="prompts-jsonl")[0].category == "c"
    with pytest.raises(UnknownFormatError, match="unknown format"):
        load_prompts(path, format="alpaca")


# Hub names ---------------------------------------------------------------------------------------


def test_hub_names_are_recognised_but_local_looking_paths_are_not(tmp_path):
    assert is_hub_name("PKU-Alignment/PKU-SafeRLHF") and is_hub_name("Anthropic/hh-rlhf:test")
    assert not is_hub_name("data/train.jsonl") and not is_hub_name("./a/b") and not is_hub_name("a/b/c")


def test_hub_dataset_goes_through_datasets_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return [{"chosen": "\n\nHuman: q\n\nAssistant: yes", "rejected": "\n\nHuman: q\n\nAssistant: no"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    pairs = load_preference_pairs("Anthropic/hh-rlhf:test")
    assert calls == [("Anthropic/hh-rlhf", "test"), ("Anthropic/hh-rlhf", "test")]  # detect, then load
    assert pairs == [PreferencePair("q", "yes", "no", None, None, "Anthropic/hh-rlhf[test]:1")]
    assert list(iter_rows("Anthropic/hh-rlhf"))[0][0] == 1 and calls[-1] == ("Anthropic/hh-rlhf", "train")


def test_hub_failure_is_a_file_not_found_naming_both_readings(monkeypatch):
    def offline(name, split):
        raise ConnectionError("offline")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(FileNotFoundError, match="no such local file, and loading it as a Hugging Face hub"):
        load_preference_pairs("someone/missing")


def test_a_single_json_object_is_not_a_record_list(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"data": [{"prompt": "p"}]}, indent=2))
    with pytest.raises(UnknownFormatError, match="a single JSON object, expected a list of records or JSON Lines "
                                                 "\\(its key 'data' holds a list"):
        detect_format(path)
    with pytest.raises(DataFileError, match="x.json: a single JSON object"):
        list(iter_rows(path))


def test_sft_records_from_preference_files(tmp_path):
    """SFT reads preference files too: HH-RLHF / TRL chosen responses; PKU-SafeRLHF the better response when safe,
    else the safer one when safe, else the record is left out with a file:line warning."""
    import json

    trl = tmp_path / "trl.jsonl"
    trl.write_text(json.dumps({"prompt": "p", "chosen": "good", "rejected": "bad"}) + "\n")
    assert [(r.prompt, r.response) for r in load_sft_records(trl)] == [("p", "good")]
    base = {"prompt": "q", "response_0": "r0", "response_1": "r1"}
    rows = [base | {"better_response_id": 0, "safer_response_id": 1, "is_response_0_safe": True,
                    "is_response_1_safe": True},
            base | {"prompt": "q2", "better_response_id": 0, "safer_response_id": 1, "is_response_0_safe": False,
                    "is_response_1_safe": True},
            base | {"prompt": "q3", "better_response_id": 0, "safer_response_id": 1, "is_response_0_safe": False,
                    "is_response_1_safe": False}]
    pku = tmp_path / "pku.jsonl"
    pku.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_sft_records(pku)
    assert [(r.prompt, r.response) for r in got] == [("q", "r0"), ("q2", "r1")]
    assert [(w.line, w.field) for w in got.report.warnings] == [(3, "response")]


def test_a_tie_gives_no_preference_pair_of_that_kind(tmp_path, caplog):
    """`annotate export --ties keep` marks tied questions; the tied question gives no pair, the other one does."""
    base = {"prompt": "p", "response_0": "a", "response_1": "b", "is_response_0_safe": True,
            "is_response_1_safe": False, "better_response_id": 0, "safer_response_id": 0}
    rows = [base, base | {"response_1": "c", "better_response_tie": True},
            base | {"response_1": "d", "safer_response_tie": True}, base | {"response_1": "e", "better_response_tie": False}]
    path = tmp_path / "ties.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = load_safety_preferences(path)
    assert [(r.better_response_tie, r.safer_response_tie) for r in records] == [
        (False, False), (True, False), (False, True), (False, False)]
    assert records[1].to_dict()["better_response_tie"] is True and "safer_response_tie" not in records[1].to_dict()
    with caplog.at_level("WARNING"):
        reward = load_preference_pairs(path, "reward")
        cost = load_preference_pairs(path, "cost")
    assert [p.rejected for p in reward] == ["b", "d", "e"]
    assert [p.rejected for p in cost] == ["b", "c", "e"]
    assert "1 records with a helpfulness tie give no reward pair" in caplog.text
    assert "1 records with a harmlessness tie give no cost pair" in caplog.text
