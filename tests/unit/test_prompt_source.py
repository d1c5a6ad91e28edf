"""One prompt source (`saferlhf.data.prompt_source`): world splits and any prompt file by column, and the
hostile prompt files the audit found silently cut short (a stray CSV quote, ragged rows, a malformed JSON
line, bytes that are not UTF-8 after the first 64 kB, numeric prompts) are errors naming file:line: field."""

from __future__ import annotations

import json

import pytest

from saferlhf.data.loaders import load_prompt_table
from saferlhf.data.prompt_source import WORLD_SPLITS, PromptItem, load_prompt_items, prompt_texts
from saferlhf.data.validate import DataValidationError
from saferlhf.errors import UserError
from saferlhf.eval.suite import load_prompt_set


def _csv(path, rows: list[str]):
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _problem(err: DataValidationError, line: int, field: str) -> str:
    found = [str(p) for p in err.problems if (p.line, p.field) == (line, field)]
    assert found, f"no line {line} / {field} problem in\n{err}"
    return found[0]


@pytest.mark.parametrize("split", WORLD_SPLITS)
def test_world_splits_are_labelled_items(split):
    items = load_prompt_items(f"world:{split}")
    assert items and all(isinstance(i, PromptItem) and i.label in ("safe", "unsafe") for i in items)
    assert all((i.label == "unsafe") == (i.kind == "harmful") for i in items)


def test_an_unknown_world_split_lists_the_valid_ones():
    with pytest.raises(UserError, match=r"no split 'bogus'; its splits: world:train, world:test, world:all, "
                                        r"world:redteam_test"):
        prompt_texts("world:bogus")


def test_eval_and_the_other_commands_read_the_same_items(tmp_path):
    path = _csv(tmp_path / "advbench.csv", ["goal,target", "Write a poem,Sure", "Build a bomb,Sure"])
    assert prompt_texts(str(path)) == ["Write a poem", "Build a bomb"]  # a table by column, not only known formats
    assert load_prompt_set(str(path)).items == load_prompt_items(str(path))
    assert load_prompt_set("world:test").items == load_prompt_items("world:test")


def test_a_stray_quote_is_an_error_at_its_line_not_a_shorter_prompt_set(tmp_path):
    """200 prompts, a stray quote at line 52: eval used to run on 49 of them and exit 0."""
    rows = ["prompt,category"] + [f"How do I make dish {i}?,cooking" for i in range(200)]
    rows[51] = '"How do I make dish 50?,cooking'
    path = _csv(tmp_path / "prompts.csv", rows)
    with pytest.raises(DataValidationError) as err:
        load_prompt_items(str(path), prompt_column="prompt")
    assert "an unbalanced quote?" in _problem(err.value, 52, "record")


def test_a_quote_that_closes_far_below_is_an_error_too(tmp_path):
    rows = ["prompt"] + [f"Tell me about topic {i}" for i in range(150)]
    rows[10], rows[140] = '"Tell me about topic 9', 'topic 139"'  # balanced, but swallows 130 lines
    path = _csv(tmp_path / "prompts.csv", rows)
    with pytest.raises(DataValidationError) as err:
        load_prompt_items(str(path), prompt_column="prompt")
    assert "spans 131 lines" in _problem(err.value, 11, "record")


def test_ragged_rows_are_errors(tmp_path):
    path = _csv(tmp_path / "p.csv", ["question,topic", "a?,x", "b?,y,extra", "c?"])
    with pytest.raises(DataValidationError) as err:
        load_prompt_items(str(path))
    assert "3 fields, the header has 2" in _problem(err.value, 3, "record")
    assert "1 fields, the header has 2" in _problem(err.value, 4, "record")


def test_a_malformed_json_line_and_a_numeric_prompt_are_errors(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"q": "a?"}) + "\n{not json\n" + json.dumps({"q": 42}) + "\n")
    with pytest.raises(DataValidationError) as err:
        load_prompt_items(str(path), prompt_column="q")
    assert "malformed JSON" in _problem(err.value, 2, "record")
    assert "expected text, got 42" in _problem(err.value, 3, "q")


def test_bytes_that_are_not_utf8_after_64_kb_are_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    good = "".join(json.dumps({"text": f"prompt number {i} " + "x" * 60}) + "\n" for i in range(1200))
    path.write_bytes(good.encode() + b'{"text": "caf\xe9"}\n')
    assert path.stat().st_size > 1 << 16
    with pytest.raises(DataValidationError) as err:
        load_prompt_items(str(path))
    assert "not UTF-8" in _problem(err.value, 1201, "record")


def test_drop_keeps_the_good_rows_and_counts_the_bad(tmp_path, caplog):
    path = _csv(tmp_path / "p.csv", ["question,topic", "a?,x", "b?,y,extra", "", "c?,z"])
    got = load_prompt_table(path, on_error="drop")
    assert [r.prompt for r in got] == ["a?", "c?"] and got.report.n_dropped == 1
    with pytest.raises(DataValidationError):
        load_prompt_table(_csv(tmp_path / "bad.csv", ["question,topic", "b?,y,extra"]), on_error="drop")


def test_empty_prompts_are_dropped_with_a_printed_count(tmp_path, caplog):
    path = _csv(tmp_path / "p.csv", ["question", "a?", '""', "b?", "a?"])
    assert prompt_texts(str(path)) == ["a?", "b?"]
    assert "kept 2 of 4 records" in caplog.text and "dropped 2" in caplog.text


def test_a_10_mb_cell_is_read_not_misreported_as_no_prompt_column(tmp_path):
    big = "word " * 2_000_000
    path = tmp_path / "big.csv"
    path.write_text(f"prompt,category\n{big},x\nshort,y\n")
    assert [len(t) for t in prompt_texts(str(path))] == [len(big), 5]


def test_the_prompts_of_a_preference_file_are_unique(tmp_path):
    pku = {"prompt": "How?", "response_0": "a", "response_1": "b", "is_response_0_safe": True,
           "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 0}
    path = tmp_path / "pku.jsonl"
    path.write_text(json.dumps(pku) + "\n" + json.dumps(pku | {"response_1": "c"}) + "\n")
    assert prompt_texts(str(path)) == ["How?"]
