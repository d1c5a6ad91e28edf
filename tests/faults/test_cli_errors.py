"""Every user error is one clear line and exit status 2; a broken judge is an error, not a report.

Regression tests for the hardening review: model paths checked before anything loads, config ranges at
parse time, the CLI catching every user-caused exception type, `evaluate` refusing non-finite scores.
"""

from __future__ import annotations

import json

import pytest

from util import broken_cost_model, one_line

from saferlhf.cli import main


@pytest.fixture(scope="module")
def nan_cost_model(lm, tmp_path_factory):
    """A cost model whose head is NaN."""
    return broken_cost_model(lm, tmp_path_factory.mktemp("nan") / "cm", float("nan"))


@pytest.mark.parametrize("make", ["missing", "text file", "empty folder", "no config.json", "bad config.json"])
def test_bad_model_path_is_one_line_before_anything_loads(make, tmp_path, capsys, lm):
    p = tmp_path / "model"
    if make == "text file":
        p.write_text("hello")
    elif make != "missing":
        p.mkdir()
        if make == "bad config.json":
            (p / "config.json").write_text("{not json")
        elif make == "no config.json":
            (p / "weights.bin").write_bytes(b"x")
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n")
    assert main(["score-model", "--model_path", str(p), "--train_file", str(data), "--out", str(tmp_path / "o")]) == 2
    err = one_line(capsys, "score-model")
    assert str(p) in err
    assert not (tmp_path / "o" / "model").exists()


def test_log_every_zero_is_a_config_error(capsys):
    assert main(["sft", "--log_every", "0"]) == 2
    assert "log_every: 0 is out of range; allowed: >= 1" in one_line(capsys, "sft")


def test_inf_learning_rate_is_a_config_error(capsys):
    assert main(["score-model", "--optim.lr", "inf"]) == 2
    assert "optim.lr: inf is not a finite number" in one_line(capsys, "score-model")


def test_negative_lambda_lr_is_a_config_error(capsys):
    assert main(["ppo", "--lagrange.lr", "-0.1"]) == 2
    assert "lagrange.lr" in one_line(capsys, "ppo")


def test_unreadable_data_file_is_one_line(tmp_path, capsys, lm):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"this is not gzip")
    assert main(["sft", "--model_path", str(lm), "--train_file", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_evaluate_with_a_nan_cost_model_is_an_error_not_a_report(lm, nan_cost_model, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(["evaluate", "--policies", f"a={lm}", "--cost_model", str(nan_cost_model), "--max_prompts", "4",
               "--sampling.max_new_tokens", "4", "--out", str(out)])
    assert rc == 2
    assert "non-finite scores" in one_line(capsys, "evaluate")
    assert not (out / "results.json").exists()
    assert json.loads((out / "status.json").read_text())["state"] == "failed"


def test_evaluate_with_a_causal_lm_as_cost_model_is_refused(lm, tmp_path, capsys):
    rc = main(["evaluate", "--policies", f"a={lm}", "--cost_model", str(lm), "--max_prompts", "4",
               "--sampling.max_new_tokens", "4", "--out", str(tmp_path / "ev")])
    assert rc == 2
    one_line(capsys, "evaluate")


def test_evaluate_rerun_into_a_finished_folder_is_refused(lm, tmp_path, capsys):
    args = ["evaluate", "--policies", f"a={lm}", "--max_prompts", "2", "--sampling.max_new_tokens", "2",
            "--out", str(tmp_path / "ev")]
    assert main(args) == 0
    assert json.loads((tmp_path / "ev" / "status.json").read_text())["state"] == "complete"
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a run (complete)" in one_line(capsys, "evaluate")
    assert main([*args, "--overwrite", "true"]) == 0


def test_evaluate_json_is_valid_even_when_a_metric_is_undefined(lm, tmp_path):
    """No harmful prompt among the first 2 test prompts would make a rate undefined: never NaN in JSON."""
    out = tmp_path / "ev"
    assert main(["evaluate", "--policies", f"a={lm}", "--max_prompts", "1", "--sampling.max_new_tokens", "2",
                 "--out", str(out)]) == 0
    json.loads((out / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))


def test_tiny_model_refuses_an_existing_folder(lm, capsys):
    assert main(["tiny-model", "--out", str(lm)]) == 2
    assert "already exists" in one_line(capsys, "tiny-model")
