"""`saferlhf ppo --normalize.reward / --normalize.cost` end to end: the logged running statistics are numpy's over
every score so far, λ steps by (J_c - d)/σ_C with J_c and d raw, a killed normalised run resumes exactly (the
statistics are checkpointed), and a λ that barely moves is announced once."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from saferlhf.cli import main
from saferlhf.tracking import read_jsonl
from tiny_judges import build_tiny_judges, tiny_ppo_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faults.util import assert_same_weights, run_cli, run_killed  # noqa: E402

NORM = ["--normalize.reward", "true", "--normalize.cost", "true", "--log_samples", "4", "--save_every", "1"]
TIMING = ("time", "time/step_seconds", "rollout/tokens_per_s")


@pytest.fixture(scope="module")
def judges(tiny_models, pku_file, tmp_path_factory):
    return build_tiny_judges(tmp_path_factory.mktemp("norm"), tiny_models["llama"], pku_file)


@pytest.fixture(scope="module")
def normalised_run(judges, tmp_path_factory):
    out = tmp_path_factory.mktemp("normalised") / "run"
    assert main(tiny_ppo_args(judges, out, steps=3, extra=NORM)) == 0
    return out


def test_running_statistics_and_the_lambda_step_in_cost_stds(normalised_run):
    rows = [r for r in read_jsonl(normalised_run / "metrics.jsonl") if "lagrange/lambda" in r]
    samples = [json.loads(x) for x in (normalised_run / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and len(samples) == 12  # every response of every step
    log_lambda = 0.0  # λ_0 = 1
    for k, row in enumerate(rows, 1):
        rewards = np.array([s["reward"] for s in samples if s["step"] <= k])
        costs = np.array([s["cost"] for s in samples if s["step"] <= k])
        assert row["reward/running_mean"] == pytest.approx(rewards.mean(), rel=1e-5, abs=1e-6)
        assert row["reward/running_std"] == pytest.approx(rewards.std(), rel=1e-4)
        assert row["cost/running_std"] == pytest.approx(costs.std(), rel=1e-4)
        assert row["lagrange/episode_cost"] == pytest.approx(costs.mean(), rel=1e-5, abs=1e-6)  # raw J_c
        assert row["lagrange/threshold"] == 0.0 and row["lagrange/violation"] == row["lagrange/episode_cost"]
        log_lambda = min(math.log(5.0), log_lambda + 0.1 * math.exp(log_lambda) * costs.mean() / costs.std())
        assert row["lagrange/log_lambda"] == pytest.approx(log_lambda, rel=1e-4, abs=1e-6)


def test_a_killed_normalised_run_resumes_exactly(judges, normalised_run, tmp_path):
    out = tmp_path / "killed"
    args = tiny_ppo_args(judges, out, steps=3, extra=NORM)
    run_killed(args, "step:2")
    resumed = run_cli([*args, "--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(normalised_run / "actor", out / "actor")

    def rows(run):
        return [{k: v for k, v in r.items() if k not in TIMING} for r in read_jsonl(run / "metrics.jsonl")]

    assert rows(out) == rows(normalised_run)


def test_normalisation_off_logs_no_running_statistics_and_warns_when_lambda_stalls(judges, tmp_path, capsys):
    out = tmp_path / "stalled"
    assert main(tiny_ppo_args(judges, out, steps=6, extra=["--lagrange.lr", "1e-6"])) == 0
    err = capsys.readouterr().err
    assert err.count("λ barely moves") == 1 and "normalize.cost true" in err
    row = read_jsonl(out / "metrics.jsonl")[0]
    assert not any("running" in k for k in row)


def test_normalize_cost_needs_a_cost_model(judges, tmp_path, capsys):
    args = tiny_ppo_args(judges, tmp_path / "x", extra=["--algorithm", "ppo", "--normalize.cost", "true"])
    i = args.index("--cost_model_path")
    del args[i: i + 2]
    assert main(args) == 2
    assert "normalize.cost needs cost_model_path" in capsys.readouterr().err
