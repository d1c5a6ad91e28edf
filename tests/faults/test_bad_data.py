"""Hostile-user faults of the data layer: every bad input is one clear error at load time (the exception
type, the file, and the line and field where a record is at fault), never a traceback, never accepted.
One test per fault of the review, parametrized over the bad inputs; then every case of bad_data_cases."""

from __future__ import annotations

import csv
import gzip
import json

import pytest
from bad_data_cases import A, CLEAR_ERRORS, HH, PKU, SFT, TRL, H, bad_data_cases, classify, load_for

from saferlhf.data.loaders import (
    detect_format, load_preference_pairs, load_prompts, load_safety_preferences, load_sft_records,
)
from saferlhf.data.loaders import check_file
from saferlhf.data.validate import DataFileError, DataValidationError, UnknownFormatError


def _write_jsonl(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _problem(err: DataValidationError, path, line: int, field: str):
    """The one problem of ``err`` at path:line on ``field`` (and its text is in the message)."""
    found = [p for p in err.problems if (p.file, p.line, p.field) == (str(path), line, field)]
    assert found, f"no {path}:{line}: {field}: problem in\n{err}"
    assert str(found[0]) in str(err)
    return found[0]


# 1. ids ------------------------------------------------------------------------------------------

BAD_IDS = [1.0, 0.0, True, False, "1", "0", -1, 2, 10**20, [1], {"id": 1}]


@pytest.mark.parametrize("field", ["safer_response_id", "better_response_id"])
@pytest.mark.parametrize("value", BAD_IDS, ids=repr)
def test_fault1_ids_must_be_the_ints_0_or_1(tmp_path, field, value):
    path = _write_jsonl(tmp_path / "pku.jsonl", PKU, PKU | {"prompt": "another", field: value})
    for kind in ("cost", "reward"):
        with pytest.raises(DataValidationError) as err:
            load_preference_pairs(path, kind=kind)
        assert "expected 0 or 1" in _problem(err.value, path, 2, field).reason
    report = check_file(path)  # `saferlhf data check`: a problem, not a KeyError
    assert [(p.line, p.field) for p in report.errors] == [(2, field)] and report.n_valid == 1
    assert len(load_preference_pairs(path, kind="cost", on_error="drop")) == 1


# 2. invalid text ---------------------------------------------------------------------------------

BAD_TEXTS = {"lone high surrogate": "\ud800", "lone low surrogate in text": "ok \udfff tail",
             "reversed surrogate pair": "\ude00\ud83d"}
TEXT_FIELDS = [  # (file name, a valid record, text field, loader)
    *[("pku.jsonl", PKU, f, "pairs") for f in ("prompt", "response_0", "response_1")],
    *[("trl.jsonl", TRL, f, "pairs") for f in ("prompt", "chosen", "rejected")],
    *[("hh.jsonl", HH, f, "pairs") for f in ("chosen", "rejected")],
    *[("sft.jsonl", SFT, f, "sft") for f in ("prompt", "response")],
    ("prompts.jsonl", {"prompt": "p", "category": "c"}, "prompt", "prompts"),
    ("prompts.jsonl", {"prompt": "p", "category": "c"}, "category", "prompts"),
    ("bt.json", {"prompt": "p", "category": "self_harm", "category_id": 11}, "prompt", "prompts"),
    ("eval.json", {"prompt": "p", "category": "Social Bias"}, "prompt", "prompts"),
    ("xs.json", {"id": 1, "prompt": "p", "type": "homonyms", "label": "safe", "focus": "f", "note": "n"}, "prompt",
     "prompts"),
    ("pairs.jsonl", {"prompt": "p", "response_0": "a", "response_1": "b"}, "response_1", "prompts"),
]
LOADERS = {"pairs": load_preference_pairs, "sft": load_sft_records, "prompts": load_prompts}


@pytest.mark.parametrize("bad", BAD_TEXTS)
@pytest.mark.parametrize("name,record,field,loader", TEXT_FIELDS, ids=lambda x: x if isinstance(x, str) else "")
def test_fault2_invalid_text_is_a_load_time_problem(tmp_path, bad, name, record, field, loader):
    rows = [record, record | {field: f"{record[field]} {BAD_TEXTS[bad]}"}]  # HH: in the last reply
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(rows, indent=2))
        line = [i for i, text in enumerate(path.read_text().splitlines(), 1) if text.strip() == "{"][1]
    else:
        _write_jsonl(path, *rows)
        line = 2
    with pytest.raises(DataValidationError) as err:
        LOADERS[loader](path)
    assert _problem(err.value, path, line, field).reason.startswith("invalid text")
    assert [p.line for p in check_file(path).errors] == [line]


# 3. file-level errors ----------------------------------------------------------------------------


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode())


FILE_CASES = {  # name: (file name, content, exception, words of the message after "<path>")
    "empty": ("x.jsonl", b"", DataFileError, ": the file is empty"),
    "blank lines": ("x.jsonl", b"\n\n  \n", DataFileError, ": the file is empty"),
    "empty gz": ("x.jsonl.gz", _gz(""), DataFileError, ": the file is empty"),
    "txt": ("x.txt", b'{"prompt": "p"}\n', DataFileError,
            ": unsupported file type '.txt'; expected .json, .jsonl, .csv, .parquet (optionally .gz)"),
    "gz not gzip": ("x.jsonl.gz", b'{"prompt": "p"}\n', DataFileError, ": not a gzip file"),
    "gzip named jsonl": ("x.jsonl", _gz('{"prompt": "p"}\n'), DataFileError,
                         ": a gzip-compressed file without the .gz extension"),
    "single object": ("x.json", json.dumps(SFT, indent=2).encode(), DataFileError,
                      ": a single JSON object, expected a list of records or JSON Lines"),
    "single object jsonl": ("x.jsonl", json.dumps(SFT, indent=2).encode(), DataFileError,
                            ": a single JSON object, expected a list of records or JSON Lines"),
    "single string": ("x.json", b'"hello"', DataFileError, ": a single JSON string, expected a list"),
    "empty list": ("x.json", b"[ ]", DataFileError, ": an empty JSON list (no records)"),
    "binary": ("x.jsonl", bytes(range(256)), DataFileError, ": a binary file (it contains NUL bytes)"),
    "utf-16": ("x.json", '[{"prompt": "p"}]'.encode("utf-16"), DataFileError, ": UTF-16 (or UTF-32) text"),
    "latin-1 csv": ("x.csv", "prompt\nok\ncaf\xe9\n".encode("latin-1"), DataFileError, ":3: not UTF-8 text"),
    "latin-1 json": ("x.json", '[{"prompt": "caf\xe9"}]'.encode("latin-1"), DataFileError, ":1: not UTF-8 text"),
    "latin-1 jsonl": ("x.jsonl", '{"prompt": "caf\xe9"}\n'.encode("latin-1"), DataFileError,
                      ": no readable record (1 unreadable); first: {path}:1: record: not UTF-8"),
    "not parquet": ("x.parquet", b"id,prompt\n1,p\n", DataFileError, ": not a parquet file"),
    "truncated gzip": ("x.jsonl.gz", _gz('{"prompt": "p"}\n' * 100)[:-12], DataFileError,
                       ": corrupt or truncated gzip file"),
    "csv header only": ("x.csv", b"prompt,label\n", DataFileError, ": only a CSV header row"),
    "csv duplicate column": ("x.csv", b"prompt,prompt\na,b\n", DataFileError, ":1: CSV header: duplicate column"),
    "malformed only": ("x.jsonl", b"not json\n{oops\n", DataFileError,
                       ": no readable record (2 unreadable); first: {path}:1: record: malformed JSON"),
    "directory": ("d.jsonl", None, IsADirectoryError, ": is a directory; expected a data file"),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_fault3_file_level_errors_name_the_file_and_the_real_cause(tmp_path, case):
    name, content, exc, words = FILE_CASES[case]
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for call in (detect_format, check_file, load_prompts, lambda p: load_preference_pairs(p, kind="cost")):
        with pytest.raises(exc) as err:
            call(path)
        message = str(err.value)
        assert message.startswith(str(path)) and words.format(path=path) in message
        assert "\n" not in message and "Traceback" not in message and "no readable record to detect" not in message
    assert issubclass(DataFileError, UnknownFormatError)


@pytest.mark.parametrize("name,content", [
    ("bom.jsonl", b"\xef\xbb\xbf" + json.dumps(PKU).encode() + b"\n"),
    ("bom.json", b"\xef\xbb\xbf" + json.dumps([PKU], indent=2).encode()),
    ("bom.jsonl.gz", gzip.compress(b"\xef\xbb\xbf" + json.dumps(PKU).encode() + b"\n")),
    ("bom.csv", b"\xef\xbb\xbf" + (",".join(PKU) + "\n" + "p,a,b,true,false,1,0\n").encode()),
    ("list.jsonl", json.dumps([PKU], indent=2).encode()),  # a JSON list named .jsonl
])
def test_fault3_a_utf8_bom_and_a_list_named_jsonl_are_accepted(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert detect_format(path) == "pku-saferlhf"
    (pref,) = load_safety_preferences(path)
    assert pref.prompt in (PKU["prompt"], "p") and pref.origin.startswith(f"{path}:")
    assert check_file(path).problems == []


# 4. duplicates and the held-out split ------------------------------------------------------------


def _swapped(rec: dict) -> dict:
    return rec | {"chosen": rec["rejected"], "rejected": rec["chosen"]}


def _pku_swapped_order(rec: dict) -> dict:
    """The same PKU record with response_0 / response_1 swapped, every label following its response."""
    return rec | {"response_0": rec["response_1"], "response_1": rec["response_0"],
                  "is_response_0_safe": rec["is_response_1_safe"], "is_response_1_safe": rec["is_response_0_safe"],
                  "better_response_id": 1 - rec["better_response_id"],
                  "safer_response_id": 1 - rec["safer_response_id"]}


HH_OTHER = {"chosen": f"{H} Another question.{A} Yes.", "rejected": f"{H} Another question.{A} No."}
FLIPPED = {  # name: (record, an unrelated record, the record with its labels flipped, kind, field on both lines)
    "pku better flipped": (PKU, PKU | {"prompt": "other"}, PKU | {"better_response_id": 0}, "reward",
                           "better_response_id"),
    "pku safer flipped": (PKU | {"is_response_1_safe": True}, PKU | {"prompt": "other"},
                          PKU | {"is_response_1_safe": True, "safer_response_id": 1}, "cost", "safer_response_id"),
    "pku safety label flipped": (PKU, PKU | {"prompt": "other"}, PKU | {"is_response_1_safe": True}, "cost",
                                 "is_response_1_safe"),
    "pku order swapped, better flipped": (PKU, PKU | {"prompt": "other"},
                                          _pku_swapped_order(PKU | {"better_response_id": 0}), "reward",
                                          "better_response_id"),
    "trl swapped": (TRL, TRL | {"prompt": "other"}, _swapped(TRL), "reward", "chosen"),
    "hh swapped": (HH, HH_OTHER, _swapped(HH), "cost", "chosen"),
}


@pytest.mark.parametrize("case", FLIPPED)
def test_fault4_flipped_label_duplicates_are_errors_naming_both_lines(tmp_path, case):
    first, other, flipped, kind, field = FLIPPED[case]
    path = _write_jsonl(tmp_path / "d.jsonl", first, other, flipped)
    with pytest.raises(DataValidationError) as err:
        load_preference_pairs(path, kind=kind)
    assert "contradicts line 3" in _problem(err.value, path, 1, field).reason
    assert "contradicts line 1" in _problem(err.value, path, 3, field).reason
    kept = load_preference_pairs(path, kind=kind, on_error="drop")
    assert [p.origin for p in kept] == [f"{path}:2"]  # both contradicting records are dropped


@pytest.mark.parametrize("records", [
    [PKU, PKU], [PKU, _pku_swapped_order(PKU)], [TRL, TRL], [HH, HH], [SFT, SFT], [{"prompt": "p"}, {"prompt": "p"}],
], ids=["pku", "pku-order-swapped", "trl", "hh", "sft", "prompts"])
def test_fault4_exact_duplicates_are_warnings_kept_and_counted(tmp_path, records):
    path = _write_jsonl(tmp_path / "d.jsonl", records[0], records[1])
    report = check_file(path)
    assert report.errors == [] and report.n_valid == 2
    (warning,) = report.warnings
    assert (warning.line, warning.field) == (2, "record") and "duplicate of line 1" in warning.reason
    assert report.counts["duplicate records (kept)"] == 1


def test_fault4_data_check_prints_duplicates(tmp_path, capsys):
    from saferlhf.data.check import DataCheckConfig, run_data_check

    path = _write_jsonl(tmp_path / "d.jsonl", TRL, TRL, _swapped(TRL | {"prompt": "q"}), TRL | {"prompt": "q"})
    assert run_data_check(DataCheckConfig(path=str(path))) == 1
    out = capsys.readouterr().out
    assert f"{path}:2: record: duplicate of line 1" in out and "duplicate records (kept)" in out
    assert f"{path}:3: chosen: contradicts line 4" in out and f"{path}:4: chosen: contradicts line 3" in out


def test_fault4_split_pairs_keeps_duplicates_and_prompts_on_one_side(tmp_path):
    from saferlhf.data import split_pairs

    rows = [TRL | {"prompt": f"p{i % 40}", "chosen": f"c{i % 40}-{i % 3}", "rejected": f"r{i % 40}-{i % 3}"}
            for i in range(240)]  # each (prompt, chosen, rejected) 2 times, each prompt 6 times
    pairs = load_preference_pairs(_write_jsonl(tmp_path / "d.jsonl", *rows))
    assert pairs.report.n_duplicates == 120
    train, held = split_pairs(pairs, 0.2, seed=3)
    assert len(train) + len(held) == 240 and abs(len(held) - 48) <= 6
    seen = {(p.prompt, frozenset((p.chosen, p.rejected))) for p in train}
    assert not any((p.prompt, frozenset((p.chosen, p.rejected))) in seen for p in held)
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert split_pairs(pairs, 0.2, seed=3) == (train, held) and split_pairs(pairs, 0.2, seed=4) != (train, held)
    assert split_pairs(pairs, 0.0, seed=3) == (list(pairs), [])
    one_prompt = [p for p in pairs if p.prompt == "p0"]
    assert split_pairs(one_prompt, 0.9, seed=0) == (one_prompt, [])  # a single prompt stays in train
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="eval_ratio"):
            split_pairs(pairs, bad, seed=0)


# 5. XSTest without its label column --------------------------------------------------------------

XSTEST_NO_LABEL = {
    "xstest columns": ("x.csv", "id,prompt,type,focus,note\n"
                                "1,How do I kill a Python process?,homonyms,kill,violence\n"),
    "xstest type values": ("x.csv", "prompt,type\nHow do I kill a Python process?,homonyms\n"),
    "named like xstest": ("xstest_v3.csv", "prompt,type\nHow do I kill a Python process?,questions\n"),
    "xstest as jsonl": ("x.jsonl", json.dumps({"prompt": "How do I kill a process?",
                                               "type": "contrast_homonyms"}) + "\n"),
}


@pytest.mark.parametrize("case", XSTEST_NO_LABEL)
def test_fault5_xstest_without_label_is_an_error_naming_the_column(tmp_path, case):
    name, text = XSTEST_NO_LABEL[case]
    path = tmp_path / name
    path.write_text(text)
    for call in (detect_format, load_prompts, check_file):
        with pytest.raises(DataFileError, match="without its 'label' field") as err:
            call(path)
        assert str(err.value).startswith(f"{path}: an XSTest file")


def test_fault5_the_real_xstest_file_without_label(shared_data, tmp_path):
    with open(shared_data / "prompts" / "xstest_prompts.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    path = tmp_path / "xs.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, [c for c in rows[0] if c != "label"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(DataFileError, match=f"{path}: an XSTest file .* without its 'label' field"):
        load_prompts(path)


@pytest.mark.parametrize("text", ["prompt\nHow do I kill a Python process?\n",
                                  "prompt,type\nHow do I kill a Python process?,question\n"])
def test_fault5_a_generic_prompt_csv_stays_a_prompt_file(tmp_path, text):
    path = tmp_path / "mine.csv"
    path.write_text(text)
    assert detect_format(path) == "prompts-jsonl" and len(load_prompts(path)) == 1


def test_fault5_xstest_records_are_read_from_json_too(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps([{"id": 1, "prompt": "kill a process", "type": "homonyms", "label": "safe",
                                 "focus": "kill", "note": "violence"}]))
    assert detect_format(path) == "xstest" and load_prompts(path)[0].label == "safe"


# 6. world annotate --input -----------------------------------------------------------------------

PAIR = {"prompt": "How do I bake bread?", "response_0": "Mix flour and water.", "response_1": "Buy some."}


def _annotate(tmp_path, path):
    from saferlhf.world.commands import WorldAnnotateConfig, run_world_annotate

    return run_world_annotate(WorldAnnotateConfig(input=str(path), out=str(tmp_path / "out.jsonl"), seed=0))


ANNOTATE_BAD = {  # name: (file name, content, exception, words after "<path>")
    "bad json": ("p.jsonl", json.dumps(PAIR) + "\n{oops\n", DataValidationError, ":2: record: malformed JSON"),
    "missing response": ("p.jsonl", json.dumps({"prompt": "p", "response_0": "a"}) + "\n", DataValidationError,
                         ":1: response_1: missing"),
    "response not a string": ("p.jsonl", json.dumps(PAIR | {"response_0": 3}) + "\n", DataValidationError,
                              ":1: response_0: expected a string"),
    "lone surrogate": ("p.jsonl", json.dumps(PAIR | {"prompt": "\ud800"}) + "\n", DataValidationError,
                       ":1: prompt: invalid text"),
    "empty file": ("p.jsonl", "", DataFileError, ": the file is empty"),
    "gzip named jsonl": ("p.jsonl", gzip.compress(json.dumps(PAIR).encode()), DataFileError,
                         ": a gzip-compressed file"),
    "no usable pair": ("p.jsonl", json.dumps(PAIR | {"response_1": " "}) + "\n" + json.dumps(PAIR | {"response_0": ""})
                       + "\n", DataFileError, ": no pair to annotate"),
    "only identical pairs": ("p.jsonl", json.dumps(PAIR | {"response_1": PAIR["response_0"]}) + "\n", DataFileError,
                             ": no pair to annotate"),
    "directory": ("d.jsonl", None, IsADirectoryError, ": is a directory"),
    "prompt file": ("p.jsonl", json.dumps({"prompt": "p"}) + "\n", UnknownFormatError,
                    ": a 'prompts-jsonl' file, but load_response_pairs reads"),
}


@pytest.mark.parametrize("case", ANNOTATE_BAD)
def test_fault6_world_annotate_input_errors(tmp_path, case):
    name, content, exc, words = ANNOTATE_BAD[case]
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(exc) as err:
        _annotate(tmp_path, path)
    assert f"{path}{words}" in str(err.value) and "Traceback" not in str(err.value)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("name,content", [
    ("bom.jsonl", b"\xef\xbb\xbf" + (json.dumps(PAIR) + "\n").encode()),
    ("pairs.jsonl.gz", gzip.compress((json.dumps(PAIR) + "\n").encode())),
    ("pairs.csv", ("prompt,response_0,response_1\n" + ",".join(PAIR.values()) + "\n").encode()),
    ("pku.jsonl", (json.dumps(PKU | {"better_response_id": 7}) + "\n").encode()),  # labels are not read
])
def test_fault6_world_annotate_reads_any_pair_file(tmp_path, name, content, capsys):
    path = tmp_path / name
    path.write_bytes(content)
    assert _annotate(tmp_path, path) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert row["prompt"] in (PAIR["prompt"], PKU["prompt"]) and row["safer_response_id"] in (0, 1)


def test_fault6_world_annotate_skips_empty_and_repeated_pairs(tmp_path, capsys):
    swapped = PAIR | {"response_0": PAIR["response_1"], "response_1": PAIR["response_0"]}
    rows = [PAIR, PAIR | {"response_1": ""}, swapped]
    path = _write_jsonl(tmp_path / "p.jsonl", *rows)
    assert _annotate(tmp_path, path) == 0
    out = capsys.readouterr().out
    assert "skipped 1 pairs with an empty response" in out and "skipped 1 pairs that repeat an earlier pair" in out
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1


# 7. generality -----------------------------------------------------------------------------------


def test_fault7_typed_csv_columns_and_parquet_gz_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "pku.csv"
    csv_path.write_text(",".join(PKU) + "\n" + '"q, with a comma",a,b,True,false,0,0\n')
    (pref,) = load_safety_preferences(csv_path)
    assert (pref.prompt, pref.is_response_0_safe, pref.is_response_1_safe, pref.better_response_id) == (
        "q, with a comma", True, False, 0)
    pq.write_table(pa.Table.from_pylist([PKU]), tmp_path / "x.parquet")
    (tmp_path / "x.parquet.gz").write_bytes(gzip.compress((tmp_path / "x.parquet").read_bytes()))
    assert load_safety_preferences(tmp_path / "x.parquet.gz")[0].prompt == PKU["prompt"]


# every case of bad_data_cases --------------------------------------------------------------------


def test_bad_data_cases_are_many_and_distinct(tmp_path):
    cases = bad_data_cases(tmp_path)
    assert len(cases) >= 60 and len({name for name, _, _ in cases}) == len(cases)
    assert {kind for _, _, kind in cases} == {"pairs-reward", "pairs-cost", "prompts", "sft", "check"}


def _unclear(path, kind) -> str | None:
    """Why the error of a case is not clear (None if it is): the file:line: field: reason of every record
    problem, one line naming the file for a file-level error."""
    verdict, message = classify(kind, path)
    if verdict != "clear error":
        return f"{verdict}: {message[:300]}"
    try:
        load_for(kind, path)
    except DataValidationError as e:
        bad = [p for p in e.problems if p.file != str(path) or p.line < 1 or not p.field or "\n" in p.reason]
        return f"problems not at file:line: field: {bad}" if bad else None
    except CLEAR_ERRORS as e:
        return None if str(path) in str(e) and "\n" not in str(e) else f"unclear file-level message: {e}"
    return "accepted"


def test_every_bad_data_case_is_a_clear_error(tmp_path):
    failures = [f"{name} ({k}): {why}" for name, path, kind in bad_data_cases(tmp_path)
                for k in {kind, "check"} if (why := _unclear(path, k))]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("record,loader,words", [
    ({"prompt": "p", "response_0": "a", "response_1": "b"}, "pairs",
     "a 'response-pairs' file, but load_preference_pairs reads pku-saferlhf, hh-rlhf, trl-preference"),
    ({"prompt": "p"}, "pairs", "a 'prompts-jsonl' file, but load_preference_pairs reads"),
    ({"prompt": "p", "response_0": "a", "response_1": "b"}, "sft",
     "a 'response-pairs' file, but load_sft_records reads sft-jsonl, sft-messages, pku-saferlhf, hh-rlhf, trl-preference"),
])
def test_a_valid_file_of_another_kind_is_an_unknown_format_error(tmp_path, record, loader, words):
    path = _write_jsonl(tmp_path / "x.jsonl", record)
    with pytest.raises(UnknownFormatError, match=words) as err:
        LOADERS[loader](path)
    assert str(err.value).startswith(f"{path}: ") and check_file(path).errors == []
