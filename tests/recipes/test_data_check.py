"""`saferlhf data check PATH` end to end: real files pass (exit 0), corrupted copies fail (exit 1) with
file:line problems, a missing file or unknown format exits 2."""

import json
import subprocess
import sys

import pytest

from saferlhf.data.check import DataCheckConfig, run_data_check

SHARED_FILES = [
    "hh-rlhf/helpful-base.jsonl.gz", "hh-rlhf/harmless-base.jsonl.gz", "pku-saferlhf/sample-v0.json",
    "pku-saferlhf/sample-v1.jsonl", "prompts/beavertails-evaluation.json",
    "prompts/safe-rlhf-gpt4-eval-problems.json", "prompts/xstest_prompts.csv",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saferlhf", "data", "check", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", SHARED_FILES)
def test_shared_files_pass(shared_data, name):
    out = _cli(shared_data / name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK:" in out.stdout and "records" in out.stdout


def test_output_shows_format_counts_and_warnings(shared_data, capsys):
    path = shared_data / "hh-rlhf" / "helpful-base.jsonl.gz"
    assert run_data_check(DataCheckConfig(path=str(path))) == 0
    text = capsys.readouterr().out
    assert "hh-rlhf" in text and "1654" in text and "cost pairs (ranking only)" in text
    assert f"{path}:1525: rejected: identical to chosen" in text
    assert run_data_check(DataCheckConfig(path=str(path), strict=True)) == 1


def test_pku_counts_printed(shared_data, capsys):
    assert run_data_check(DataCheckConfig(path=str(shared_data / "pku-saferlhf" / "sample-v1.jsonl"))) == 0
    text = capsys.readouterr().out
    for words in ("pku-saferlhf", "reward pairs", "cost pairs", "safe responses", "unsafe responses",
                  "harm categories (BeaverTails)", "Financial Crime, Property Crime, Theft"):
        assert words in text


def test_corrupted_pku_copy_fails_with_file_line_field(shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / "pku-saferlhf" / "sample-v1.jsonl").read_text().splitlines()]
    rows[1]["better_response_id"] = 2
    rows[4]["response_1"] = rows[4]["response_0"]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{oops\n")
    out = _cli(path)
    assert out.returncode == 1
    for line in (f"{path}:2: better_response_id: expected 0 or 1, got 2", f"{path}:5: response_1: identical",
                 f"{path}:11: record: malformed JSON"):
        assert line in out.stdout
    assert "FAILED: 3 error(s)" in out.stdout


def test_corrupted_csv_copy_fails(shared_data, tmp_path, capsys):
    lines = (shared_data / "prompts" / "xstest_prompts.csv").read_text().splitlines()
    lines[9] = "9,only two fields"
    path = tmp_path / "xs.csv"
    path.write_text("\n".join(lines) + "\n")
    assert run_data_check(DataCheckConfig(path=str(path))) == 1
    assert f"{path}:10: record: bad CSV row" in capsys.readouterr().out


def test_max_problems_caps_the_listing(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": ""}\n' * 30)
    assert run_data_check(DataCheckConfig(path=str(path), max_problems=5)) == 1
    text = capsys.readouterr().out
    assert f"{path}:5: prompt" in text and f"{path}:6: prompt" not in text and "... and 25 more" in text


def test_missing_file_and_unknown_format_exit_2(tmp_path):
    assert _cli(tmp_path / "nope.jsonl").returncode == 2
    (tmp_path / "x.jsonl").write_text('{"text": "?"}\n')
    out = _cli(tmp_path / "x.jsonl")
    assert out.returncode == 2 and "saferlhf data check: error: " in out.stderr
    assert "cannot tell the format" in out.stderr and "Traceback" not in out.stderr
    assert _cli(tmp_path / "x.jsonl", "--format", "alpaca").returncode == 2
    assert run_data_check(DataCheckConfig(path="")) == 2


@pytest.mark.parametrize("name,content,words", [
    ("empty.jsonl", b"", "the file is empty"),
    ("x.jsonl.gz", b'{"prompt": "p"}\n', "not a gzip file"),
    ("x.json", json.dumps({"prompt": "p", "response": "r"}, indent=2).encode(), "a single JSON object"),
    ("x.txt", b"hello\n", "unsupported file type '.txt'"),
    ("dir.jsonl", None, "is a directory"),
])
def test_unreadable_files_exit_2_with_one_line_on_stderr(tmp_path, capsys, name, content, words):
    path = tmp_path / name
    path.mkdir() if content is None else path.write_bytes(content)
    assert run_data_check(DataCheckConfig(path=str(path))) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saferlhf data check: error: {path}: ") and words in err and err.count("\n") == 1


def test_errors_exit_1_with_a_one_line_summary_on_stderr(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": "\\ud800"}\n')
    assert run_data_check(DataCheckConfig(path=str(path))) == 1
    out = capsys.readouterr()
    assert out.err == (f"saferlhf data check: error: 1 error(s), 0 warning(s) in {path}; first: {path}:2: prompt: "
                       "invalid text: an unpaired surrogate '\\ud800' at position 0 (not valid Unicode)\n")
    assert f"{path}:2: prompt: invalid text" in out.out


def test_forced_format(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"prompt": "p", "category": "c"}\n')
    out = _cli(path, "--format", "safe-rlhf-eval-prompts")
    assert out.returncode == 0 and "safe-rlhf-eval-prompts" in out.stdout
