"""One home for LLM endpoints (issue 20): response bodies that are not chat completions become counted failures
with a reason, the failure-rate rule, and the old flat option names mapped onto ``--judge.*`` / ``--attacker.*``."""

from __future__ import annotations

import pytest

from saferlhf.config import from_dict, parse
from saferlhf.endpoint import (EndpointError, EndpointFailure, answer_text, check_failure_rate, failure_line,
                               old_endpoint_names)


@pytest.mark.parametrize("body, kind", [
    (b"null", "body is null"), (b"[1]", "body is a JSON list"), (b'"x"', "body is a JSON str"),
    (b'{"choices": []}', "the body has no choices"), (b"{}", "the body has no choices"),
    (b'{"choices": [null]}', "the answer's content is null"),
    (b'{"choices": [{"message": {"content": null}}]}', "the answer's content is null"),
    (b'{"choices": [{"message": {"content": 3}}]}', "the answer's content is int"),
    (b"\xff\xfe", "body not JSON"), (b"<html>", "body not JSON"),
])
def test_bodies_that_are_not_chat_completions(body, kind):
    with pytest.raises(EndpointError) as e:
        answer_text(body)
    assert e.value.kind == kind


def test_a_chat_completion():
    assert answer_text(b'{"choices": [{"message": {"role": "assistant", "content": "VERDICT: safe"}}]}') == \
        "VERDICT: safe"


def test_failure_rate_rule():
    assert failure_line("eval: judge", 1, 20, 0.05, "--judge.max_failure_rate") is None  # 5 %: within
    assert failure_line("eval: judge", 0, 0, 0.0, "--judge.max_failure_rate") is None
    line = failure_line("eval: judge", 2, 20, 0.05, "--judge.max_failure_rate", {"HTTP 500": 2})
    assert line == ("eval: judge: 2 of 20 requests got no usable answer (10% > --judge.max_failure_rate 0.05): "
                    "2x HTTP 500")
    with pytest.raises(EndpointFailure) as e:
        check_failure_rate("eval: judge", 20, 20, 0.05, "--judge.max_failure_rate")
    assert "\n" not in e.value.args[0]


def test_old_names():
    assert old_endpoint_names("judge", "model", max_retries="retries") == {"judge_model": "judge.model",
                                                                           "judge_max_retries": "judge.retries"}


def test_eval_old_flags_map_to_the_endpoint_config(capsys):
    from saferlhf.eval.compare import EvalConfig

    cfg = parse(EvalConfig, ["--judge_timeout", "3", "--judge_parse_retries", "0", "--judge.model", "m"])
    assert (cfg.judge.timeout, cfg.judge.parse_retries, cfg.judge.model) == (3.0, 0, "m")
    assert "--judge_timeout is deprecated, use --judge.timeout" in capsys.readouterr().err


def test_redteam_selectors_and_endpoints(capsys):
    from saferlhf.recipes.redteam import RedteamConfig

    cfg = parse(RedteamConfig, ["--judge", "llm", "--judge.base_url", "http://h/v1", "--attacker_timeout", "7",
                                "--attacker_temperature", "0.5"])
    assert cfg.judge_kind == "llm" and cfg.judge.base_url == "http://h/v1"
    assert (cfg.attacker.timeout, cfg.attacker.temperature, cfg.attacker.max_tokens) == (7.0, 0.5, 256)
    assert "--judge is deprecated, use --judge_kind" in capsys.readouterr().err
    # YAML: a mapping under judge is the new endpoint config, a string the old selector
    cfg = from_dict(RedteamConfig, {"judge": {"model": "m"}, "attacker": "llm"})
    assert cfg.judge.model == "m" and cfg.judge_kind == "oracle" and cfg.attacker_kind == "llm"
    assert parse(RedteamConfig, []).attacker.temperature == 1.0  # the attacker samples; the judge is greedy
    assert parse(RedteamConfig, []).judge.temperature == 0.0
