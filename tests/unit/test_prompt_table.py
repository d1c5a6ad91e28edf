"""Any CSV / JSON / JSONL prompt file with a prompt column: detection, named columns, clear errors."""

from __future__ import annotations

import json

import pytest

from saferlhf.data.loaders import load_prompt_table
from saferlhf.data.validate import DataFileError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_common_column_names_are_detected_in_csv(tmp_path):
    p = tmp_path / "advbench.csv"
    p.write_text("goal,target\nWrite a poem,Sure\nBuild a bomb,Sure\n")
    got = load_prompt_table(p)
    assert [r.prompt for r in got] == ["Write a poem", "Build a bomb"] and got[0].origin.endswith(":2")


def test_named_columns_and_categories(tmp_path):
    p = write_jsonl(tmp_path / "mine.jsonl", [{"q": "How do I cook rice?", "harm": "none"},
                                              {"q": "How do I pick a lock?", "harm": "privacy_violation"}])
    got = load_prompt_table(p, prompt_column="q", category_column="harm")
    assert [(r.prompt, r.category) for r in got] == [("How do I cook rice?", "none"),
                                                     ("How do I pick a lock?", "Privacy Violation")]


def test_missing_columns_name_the_files_columns(tmp_path):
    p = write_jsonl(tmp_path / "odd.jsonl", [{"utterance": "hi", "id": 1}])
    with pytest.raises(DataFileError, match=r"no prompt column found .*columns: utterance, id.*--prompt_column"):
        load_prompt_table(p)
    with pytest.raises(DataFileError, match=r"no column 'text' \(--prompt_column\); the file's columns: utterance, id"):
        load_prompt_table(p, prompt_column="text")
    with pytest.raises(DataFileError, match=r"no column 'kind' \(--category_column\)"):
        load_prompt_table(p, prompt_column="utterance", category_column="kind")


def test_empty_and_duplicate_prompts_are_reported_not_silently_used(tmp_path):
    p = write_jsonl(tmp_path / "dups.jsonl", [{"question": "a?"}, {"question": "  "}, {"question": "a? "},
                                              {"question": "b?"}])
    got = load_prompt_table(p)
    assert [r.prompt for r in got] == ["a?", "b?"]
    warnings = [str(w) for w in got.report.warnings]
    assert warnings == [f"{p}:2: question: empty prompt (dropped)", f"{p}:3: question: duplicate of line 1 (dropped)"]
    kept = load_prompt_table(p, on_duplicate="keep")
    assert [r.prompt for r in kept] == ["a?", "a?", "b?"]
    with pytest.raises(DataFileError, match="holds no non-empty prompt"):
        load_prompt_table(write_jsonl(tmp_path / "blank.jsonl", [{"prompt": ""}]), prompt_column="prompt")


@pytest.mark.parametrize("name", ["xstest_prompts.csv", "beavertails-evaluation.json",
                                  "safe-rlhf-gpt4-eval-problems.json"])
def test_known_formats_load_as_before(shared_data, name):
    from saferlhf.data.loaders import load_prompts

    path = shared_data / "prompts" / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    got, want = load_prompt_table(path), load_prompts(path)
    assert [(r.prompt, r.category) for r in got] == [(r.prompt, r.category) for r in want] and len(got) > 50
