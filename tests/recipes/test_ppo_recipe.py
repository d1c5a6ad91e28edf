"""`saferlhf ppo` (PPO-Lag, PPO, reward shaping) end to end on tiny models: training moves the
parameters and the metrics, resume after SIGKILL matches an uninterrupted run, and two processes
under `accelerate launch` keep λ and the weights identical."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from saferlhf.cli import main
from saferlhf.tracking import read_jsonl

REQUIRED = ["reward/mean", "cost/mean", "cost/violation_rate", "lagrange/lambda", "lagrange/episode_cost",
            "lagrange/threshold", "rollout/kl", "train/actor_entropy", "train/actor_clip_frac",
            "train/reward_explained_variance", "train/cost_explained_variance", "rollout/response_length",
            "rollout/tokens_per_s", "train/reward_critic_loss", "train/cost_critic_loss"]


@pytest.fixture(scope="module")
def rl_setup(tiny_models, pku_file, sft_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    base = tiny_models["llama"]
    for kind in ("reward", "cost"):
        assert main(["score-model", "--kind", kind, "--model_path", str(base), "--train_file", str(pku_file),
                     "--out", str(root / kind), "--max_steps", "30", "--batch_size", "16", "--max_length", "64",
                     "--optim.lr", "3e-3", "--runtime.progress", "false"]) == 0
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?"}) + "\n"
                               for t in ["rice", "pasta", "soup", "bread", "tea", "salad", "eggs", "beans"]))
    return {"actor": base, "rm": root / "reward" / "model", "cm": root / "cost" / "model", "prompts": prompts,
            "sft": sft_file}


def ppo_args(s, out, algorithm="ppo_lag", steps=3, extra=()):
    return ["ppo", "--algorithm", algorithm, "--actor_path", str(s["actor"]), "--reward_model_path", str(s["rm"]),
            "--cost_model_path", str(s["cm"]), "--train_prompts", str(s["prompts"]), "--out", str(out),
            "--steps", str(steps), "--rollout.prompts_per_step", "8", "--rollout.max_new_tokens", "12",
            "--ppo_epochs", "2", "--num_minibatches", "2", "--actor_optim.lr", "1e-3", "--critic_optim.lr", "1e-3",
            "--runtime.progress", "false", *extra]


def test_ppo_lag_trains_and_logs_every_metric(rl_setup, tmp_path):
    out = tmp_path / "lag"
    assert main(ppo_args(rl_setup, out, extra=["--ptx_file", str(rl_setup["sft"]), "--ptx_coef", "1.0"])) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    missing = [k for k in REQUIRED + ["train/actor_ptx_loss"] if k not in rows[-1]]
    assert not missing
    before = AutoModelForCausalLM.from_pretrained(rl_setup["actor"]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "actor").state_dict()
    assert not [k for k in before if torch.equal(before[k], after[k])]
    # λ moves in the direction of the constraint violation: up when J_c > d, down when J_c < d
    for prev, cur in zip(rows, rows[1:]):
        direction = cur["lagrange/lambda"] - prev["lagrange/lambda"]
        assert direction * cur["lagrange/violation"] > 0
    assert (out / "checkpoint").is_dir() and (out / "config.yaml").exists()


@pytest.mark.parametrize("algorithm,extra", [("ppo", []), ("reward_shaping", ["--shaping_lambda", "2.0"])])
def test_baselines_are_settings_of_the_same_loop(rl_setup, tmp_path, algorithm, extra):
    out = tmp_path / algorithm
    assert main(ppo_args(rl_setup, out, algorithm, steps=2, extra=extra)) == 0
    row = read_jsonl(out / "metrics.jsonl")[-1]
    assert "lagrange/lambda" not in row and "train/cost_critic_loss" not in row
    assert row["rollout/kl_coef"] == 0.02 and "cost/mean" in row


@pytest.fixture(scope="module")
def mixed_sft_actor(rl_setup, pku_file, tmp_path_factory):
    """An SFT policy that answers with safe and harmful responses about equally often."""
    root = tmp_path_factory.mktemp("mixed")
    rows = [json.loads(x) for x in pku_file.read_text().splitlines()]
    corpus = root / "mixed.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": r["prompt"], "response": r[f"response_{i}"]}) + "\n"
                              for r in rows for i in (0, 1)))
    assert main(["sft", "--model_path", str(rl_setup["actor"]), "--train_file", str(corpus), "--out", str(root),
                 "--max_steps", "80", "--batch_size", "16", "--optim.lr", "1e-2", "--optim.weight_decay", "0",
                 "--runtime.progress", "false"]) == 0
    return root / "model"


def test_ppo_lag_lowers_cost_and_ppo_raises_reward(rl_setup, mixed_sft_actor, tmp_path):
    """From a half-harmful SFT policy: PPO-Lag drives the rollout cost down; PPO drives reward up."""
    s = dict(rl_setup, actor=mixed_sft_actor)
    extra = ["--actor_optim.lr", "2e-3", "--rollout.prompts_per_step", "16", "--rollout.max_new_tokens", "20",
             "--lagrange.lr", "0.5"]
    assert main(ppo_args(s, tmp_path / "lag", "ppo_lag", steps=12, extra=extra)) == 0
    rows = read_jsonl(tmp_path / "lag" / "metrics.jsonl")
    first, last = rows[:3], rows[-3:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(last, "cost/mean") < mean(first, "cost/mean") - 0.5
    assert mean(last, "cost/violation_rate") < mean(first, "cost/violation_rate")
    assert main(ppo_args(s, tmp_path / "ppo", "ppo", steps=12, extra=extra)) == 0
    rows = read_jsonl(tmp_path / "ppo" / "metrics.jsonl")
    assert mean(rows[-3:], "reward/mean") > mean(rows[:3], "reward/mean")


def _actor(path: Path) -> dict:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def test_resume_after_sigkill_matches_uninterrupted_run(rl_setup, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(ppo_args(rl_setup, full, steps=6, extra=["--save_every", "1"])) == 0
    cmd = [sys.executable, "-m", "saferlhf", *ppo_args(rl_setup, cut, steps=6, extra=["--save_every", "1"])]
    env = dict(os.environ, SAFERLHF_NO_PROGRESS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once at least 2 steps are checkpointed, before the end
        m = cut / "metrics.jsonl"
        if m.exists() and len(read_jsonl(m)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "actor").exists(), "the run finished before it could be killed"
    assert main(ppo_args(rl_setup, cut, steps=6, extra=["--save_every", "1", "--resume"])) == 0
    a, b = _actor(full / "actor"), _actor(cut / "actor")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    la, lb = read_jsonl(full / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    assert la[-1]["lagrange/lambda"] == pytest.approx(lb[-1]["lagrange/lambda"], rel=1e-5)


def test_two_processes_keep_lambda_and_weights_identical(rl_setup, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "saferlhf", *ppo_args(rl_setup, out, steps=3, extra=["--rollout.prompts_per_step", "4"])]
    env = dict(os.environ, SAFERLHF_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["num_processes"] == 2
    assert ranks[0]["lambda"] == ranks[1]["lambda"]
    assert ranks[0]["actor_checksum"] == ranks[1]["actor_checksum"]
    assert ranks[0]["lambda"] != 1.0  # λ moved
