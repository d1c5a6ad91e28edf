"""`saferlhf ppo` (PPO-Lag, PPO, reward shaping) end to end on tiny models: training moves the
parameters and the metrics, resume after SIGKILL matches an uninterrupted run bit for bit (PTX included),
two processes under `accelerate launch` keep λ and the weights identical and resume exactly from their own
per-rank state, numerical guards stop a run on a broken judge, the run-folder rule refuses a changed
config, gradient checkpointing really recomputes the actor and both critics, and the PTX gradient has
the reference's scale."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from saferlhf import models as M
from saferlhf.cli import main
from saferlhf.errors import NumericalError, UserError
from saferlhf.recipes import ppo
from saferlhf.tracking import read_jsonl

REQUIRED = ["reward/mean", "cost/mean", "cost/violation_rate", "lagrange/lambda", "lagrange/episode_cost",
            "lagrange/threshold", "lagrange/threshold_outside_costs", "rollout/kl", "train/actor_entropy",
            "train/actor_clip_frac", "train/reward_explained_variance", "train/cost_explained_variance",
            "rollout/response_length", "rollout/tokens_per_s", "train/reward_critic_loss", "train/cost_critic_loss"]
TIMING = ("time", "time/step_seconds", "rollout/tokens_per_s")  # the only metrics that may differ between runs


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
            "--steps", str(steps), "--rollout.prompts_per_step", "8", "--sampling.max_new_tokens", "12",
            "--ppo_epochs", "2", "--num_minibatches", "2", "--actor_optim.lr", "1e-3", "--critic_optim.lr", "1e-3",
            "--runtime.progress", "false", *extra]


def _status(out: Path) -> str | None:
    path = out / "status.json"
    return json.loads(path.read_text())["state"] if path.exists() else None


def _actor(path: Path) -> dict:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


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
    # one λ step per rollout (declared deviation 8), although each rollout gives 2 epochs × 2 minibatches
    assert rows[0]["lagrange/log_lambda"] == pytest.approx(0.1 * 1.0 * rows[0]["lagrange/violation"])
    eta = rows[0]["lagrange/log_lambda"]
    assert rows[1]["lagrange/log_lambda"] == pytest.approx(eta + 0.1 * math.exp(eta) * rows[1]["lagrange/violation"])
    assert (out / "checkpoint" / "COMPLETE").exists() and (out / "config.yaml").exists()
    assert _status(out) == "complete"
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["kl_coef"] == 0.01  # β resolved, not None


def test_pid_controller_moves_lambda_by_its_terms(rl_setup, tmp_path):
    """--lambda.controller pid (issue 25 §2): λ_t = kp·Δ_t + ki·I_t + kd·(Δ_t - Δ_{t-1})+ from the logged violations,
    and a fixed controller keeps λ at init."""
    out = tmp_path / "pid"
    assert main(ppo_args(rl_setup, out, extra=["--lambda.controller", "pid", "--lambda.kp", "0.5", "--lambda.ki",
                                               "0.2", "--lambda.kd", "0.3"])) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    integral, prev = 1.0 / 0.2, None
    for r in rows:
        v = r["lagrange/violation"]
        rise = 0.0 if prev is None else max(0.0, v - prev)
        prev, integral = v, min(5.0 / 0.2, max(0.0, integral + v))
        assert r["lagrange/pid_integral"] == pytest.approx(integral)
        assert r["lagrange/lambda"] == pytest.approx(min(5.0, max(1e-3, 0.5 * v + 0.2 * integral + 0.3 * rise)))
    fixed = tmp_path / "fixed"
    assert main(ppo_args(rl_setup, fixed, steps=2, extra=["--lagrange.controller", "fixed", "--lagrange.init",
                                                          "0.7"])) == 0
    assert [r["lagrange/lambda"] for r in read_jsonl(fixed / "metrics.jsonl")] == pytest.approx([0.7, 0.7])


@pytest.mark.parametrize("algorithm,extra", [("ppo", []), ("reward_shaping", ["--shaping_lambda", "2.0"])])
def test_baselines_are_settings_of_the_same_loop(rl_setup, tmp_path, algorithm, extra):
    out = tmp_path / algorithm
    assert main(ppo_args(rl_setup, out, algorithm, steps=2, extra=extra)) == 0
    row = read_jsonl(out / "metrics.jsonl")[-1]
    assert "lagrange/lambda" not in row and "train/cost_critic_loss" not in row
    assert row["rollout/kl_coef"] == 0.02 and "cost/mean" in row
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["kl_coef"] == 0.02  # the algorithm's default, saved


@pytest.mark.parametrize("algorithm,extra", [("pairwise_ppo", []), ("pairwise_ppo_lag", ["--joint_clip", "true"]),
                                           ("pairwise_ppo_lag", ["--ppo_epochs", "1", "--num_minibatches", "1"])])
def test_pairwise_ppo_is_a_row_of_the_same_loop_with_no_critic(rl_setup, tmp_path, algorithm, extra):
    out = tmp_path / algorithm
    assert main(ppo_args(rl_setup, out, algorithm, steps=3, extra=extra)) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    row = rows[-1]
    assert "train/actor_score_gap" in row and row["train/actor_score_gap"] > 0
    assert not [k for k in row if "critic" in k or "explained_variance" in k]  # no critic at all
    assert ("lagrange/lambda" in row) == (algorithm == "pairwise_ppo_lag")
    if algorithm == "pairwise_ppo_lag":
        for prev, cur in zip(rows, rows[1:]):  # λ follows the violation, as for PPO-Lag
            assert (cur["lagrange/lambda"] - prev["lagrange/lambda"]) * cur["lagrange/violation"] > 0
    before, after = _actor(rl_setup["actor"]), _actor(out / "actor")
    assert not [k for k in before if torch.equal(before[k], after[k])]
    samples = read_jsonl(out / "samples.jsonl")
    assert samples[0]["prompt"] == samples[1]["prompt"]  # two responses per prompt, adjacent


def test_pairwise_ppo_lag_lowers_cost(rl_setup, mixed_sft_actor, tmp_path):
    s = dict(rl_setup, actor=mixed_sft_actor)
    extra = ["--actor_optim.lr", "2e-3", "--rollout.prompts_per_step", "8", "--sampling.max_new_tokens", "20",
             "--lagrange.lr", "0.5"]
    assert main(ppo_args(s, tmp_path / "pw", "pairwise_ppo_lag", steps=12, extra=extra)) == 0
    rows = read_jsonl(tmp_path / "pw" / "metrics.jsonl")
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    assert mean(rows[-3:], "cost/mean") < mean(rows[:3], "cost/mean") - 0.5


@pytest.fixture(scope="module")
def mixed_sft_actor(rl_setup, pku_file, tmp_path_factory):
    """An SFT policy that answers with safe and harmful responses about equally often."""
    root = tmp_path_factory.mktemp("mixed")
    rows = [json.loads(x) for x in pku_file.read_text().splitlines()]
    corpus = root / "mixed.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": r["prompt"], "response": r[f"response_{i}"]}) + "\n"
                              for r in rows for i in (0, 1)))
    assert main(["sft", "--model_path", str(rl_setup["actor"]), "--train_file", str(corpus), "--out",
                 str(root / "sft"), "--max_steps", "80", "--batch_size", "16", "--optim.lr", "1e-2",
                 "--optim.weight_decay", "0", "--runtime.progress", "false"]) == 0
    return root / "sft" / "model"


def test_ppo_lag_lowers_cost_and_ppo_raises_reward(rl_setup, mixed_sft_actor, tmp_path):
    """From a half-harmful SFT policy: PPO-Lag drives the rollout cost down; PPO drives reward up."""
    s = dict(rl_setup, actor=mixed_sft_actor)
    extra = ["--actor_optim.lr", "2e-3", "--rollout.prompts_per_step", "16", "--sampling.max_new_tokens", "20",
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


def _subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SAFERLHF_FAULT"}
    return dict(env, SAFERLHF_NO_PROGRESS="1", OMP_NUM_THREADS="1", **extra)


def test_resume_after_sigkill_with_ptx_is_bit_identical(rl_setup, tmp_path):
    """Killed after step 3 (of 5) with a checkpoint at step 2, then resumed: the same weights, bit for bit,
    and the same metrics rows, with PTX (whose batches used to restart from the first one on resume)."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    extra = ["--save_every", "2", "--ptx_file", str(rl_setup["sft"]), "--ptx_coef", "1.0"]
    assert main(ppo_args(rl_setup, full, steps=5, extra=extra)) == 0
    cmd = [sys.executable, "-m", "saferlhf", *ppo_args(rl_setup, cut, steps=5, extra=extra)]
    res = subprocess.run(cmd, env=_subprocess_env(SAFERLHF_FAULT="step:3"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert not (cut / "actor").exists() and _status(cut) == "running"
    assert [r["step"] for r in read_jsonl(cut / "metrics.jsonl")] == [1, 2, 3]
    assert main(ppo_args(rl_setup, cut, steps=5, extra=[*extra, "--resume", "true"])) == 0
    _assert_same_weights(_actor(full / "actor"), _actor(cut / "actor"))
    la, lb = read_jsonl(full / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5]
    assert _without_timing(la) == _without_timing(lb)
    assert _status(cut) == "complete"


def _launch_two(args: list[str], **env) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "saferlhf", *args]
    return subprocess.run(cmd, env=_subprocess_env(**env), capture_output=True, text=True, timeout=300)


def _rank_states(out: Path) -> list[dict]:
    return [torch.load(out / "checkpoint" / f"rank_state_{i}.pt", weights_only=False) for i in (0, 1)]


def test_two_processes_keep_lambda_and_weights_identical_and_resume_exactly(rl_setup, tmp_path):
    """Two CPU processes (gloo) with PTX: λ and the weights agree across ranks; each rank keeps its own cost
    window (saved per rank); killed after step 2 and resumed, the run ends bit-identical to an uninterrupted one."""
    full, cut = tmp_path / "ddp", tmp_path / "cut"
    extra = ["--rollout.prompts_per_step", "4", "--ptx_file", str(rl_setup["sft"]), "--ptx_coef", "1.0",
             "--save_every", "1"]
    res = _launch_two(ppo_args(rl_setup, full, steps=3, extra=extra))
    assert res.returncode == 0, res.stderr[-3000:]
    ranks = [json.loads((full / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["num_processes"] == 2
    assert ranks[0]["lambda"] == ranks[1]["lambda"]
    assert ranks[0]["actor_checksum"] == ranks[1]["actor_checksum"]
    assert ranks[0]["lambda"] != 1.0  # λ moved
    states = _rank_states(full)
    assert states[0]["lagrange"]["log_lambda"] == states[1]["lagrange"]["log_lambda"]
    assert states[0]["lagrange"]["costs"] != states[1]["lagrange"]["costs"]  # each rank's own window

    res = _launch_two(ppo_args(rl_setup, cut, steps=3, extra=extra), SAFERLHF_FAULT="step:2")
    assert res.returncode != 0 and _status(cut) == "running" and not (cut / "actor").exists()
    res = _launch_two(ppo_args(rl_setup, cut, steps=3, extra=[*extra, "--resume", "true"]))
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_weights(_actor(full / "actor"), _actor(cut / "actor"))
    assert _rank_states(cut) == states
    assert [json.loads((cut / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1)] == ranks
    assert _without_timing(read_jsonl(full / "metrics.jsonl")) == _without_timing(read_jsonl(cut / "metrics.jsonl"))


# --------------------------------------------------------------------------- data streams (PTX, prompts)


def test_stream_indices_is_pure_disjoint_across_ranks_and_wraps_around():
    a = ppo.stream_indices(10, 3, 4, rank=1, world=2, seed=5)
    assert a == ppo.stream_indices(10, 3, 4, rank=1, world=2, seed=5)  # a pure function
    # one epoch of 10 records = batches 0..1 of 2 ranks × ... : every record exactly once in positions 0..9
    positions = [i for b in range(3) for r in range(2) for i in ppo.stream_indices(10, b, 2, r, 2, seed=5)][:10]
    assert sorted(positions) == list(range(10))
    r0 = ppo.stream_indices(10, 0, 5, rank=0, world=2, seed=5)
    r1 = ppo.stream_indices(10, 0, 5, rank=1, world=2, seed=5)
    assert not set(r0) & set(r1)  # ranks draw different records
    small = ppo.stream_indices(3, 0, 8, rank=0, world=1, seed=0)  # fewer records than the batch: wrap around
    assert len(small) == 8 and set(small) == {0, 1, 2}
    assert ppo.prompt_batch(list("abcdefgh"), 1, 3, 0, 1, 0) == [list("abcdefgh")[i]
                                                                 for i in ppo.stream_indices(8, 1, 3, 0, 1, 0)]


@pytest.fixture
def no_hang():
    """Fail instead of hanging: the old PTX loader looped forever on a file smaller than a batch."""
    def timeout(*_):
        raise TimeoutError("the run hangs (PTX loader)")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_ptx_file_smaller_than_the_batch_does_not_hang(rl_setup, tmp_path, no_hang):
    """3 PTX records and 8 prompts per step: the old loader's inner range was empty and it looped forever."""
    tiny = tmp_path / "ptx.jsonl"
    tiny.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?", "response": f"boil the {t}."}) + "\n"
                            for t in ("rice", "tea", "soup")))
    assert main(ppo_args(rl_setup, tmp_path / "run", steps=1, extra=["--ptx_file", str(tiny)])) == 0
    assert "train/actor_ptx_loss" in read_jsonl(tmp_path / "run" / "metrics.jsonl")[-1]


def test_empty_ptx_file_is_a_user_error(rl_setup, tmp_path, monkeypatch, no_hang):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(ppo_args(rl_setup, tmp_path / "a", steps=1, extra=["--ptx_file", str(empty)])) == 2
    # a file the loader reads as zero records (e.g. every record dropped) is refused by ppo itself
    monkeypatch.setattr("saferlhf.data.loaders.load_sft_records", lambda path: [])
    with pytest.raises(UserError, match="holds no"):
        ppo.run(ppo.PPOConfig(actor_path=str(rl_setup["actor"]), reward_model_path=str(rl_setup["rm"]),
                              cost_model_path=str(rl_setup["cm"]), train_prompts=str(rl_setup["prompts"]),
                              ptx_file=str(rl_setup["sft"]), out=str(tmp_path / "b")))
    assert not (tmp_path / "b").exists()  # refused before the run folder was touched


# --------------------------------------------------------------------------- numerical guards


def broken_judge(monkeypatch, path: Path, value: float, from_call: int = 1, as_type: str | None = None) -> None:
    """The score model loaded from ``path`` as ``as_type`` (None: as a judge; "critic") returns ``value``
    everywhere from its ``from_call``-th forward on."""
    real = M.ScoreModel.from_pretrained

    def load(p, score_type=None, **kw):
        model = real(p, score_type, **kw)
        if str(p) == str(path) and score_type == as_type:
            forward, calls = model.forward, [0]

            def broken(ids, mask):
                out = forward(ids, mask)
                calls[0] += 1
                if calls[0] < from_call:
                    return out
                return M.ScoreOutput(scores=torch.full_like(out.scores, value),
                                     end_scores=torch.full_like(out.end_scores, value))

            model.forward = broken
        return model

    monkeypatch.setattr(M.ScoreModel, "from_pretrained", load)


def test_nan_reward_model_stops_at_step_1_naming_the_model(rl_setup, tmp_path, monkeypatch, capsys):
    broken_judge(monkeypatch, rl_setup["rm"], float("nan"))
    out = tmp_path / "nan"
    assert main(ppo_args(rl_setup, out, steps=3)) == 3
    err = capsys.readouterr().err
    assert "stopped: step 1:" in err and str(rl_setup["rm"]) in err and "nan" in err
    assert not (out / "actor").exists() and not (out / "checkpoint").exists()
    assert _status(out) == "failed"


def test_absurd_cost_stops_and_keeps_the_last_good_checkpoint(rl_setup, tmp_path, monkeypatch):
    """A finite but absurd cost (1e30) from step 3 on: it would be clamped to ±50 and trained on; now the
    run stops at step 3, the step-2 checkpoint stays (finite), nothing is saved as actor/."""
    broken_judge(monkeypatch, rl_setup["cm"], 1e30, from_call=3)
    out = tmp_path / "absurd"
    cfg_args = ppo_args(rl_setup, out, steps=4, extra=["--save_every", "1"])
    from saferlhf.config import parse

    cfg = parse(ppo.PPOConfig, cfg_args[1:])
    with pytest.raises(NumericalError, match="1e\\+30") as info:
        ppo.run(cfg)
    assert (info.value.step, info.value.tensor) == (3, "cost") and "score_limit" in str(info.value)
    assert str(rl_setup["cm"]) in str(info.value)
    assert not (out / "actor").exists() and _status(out) != "complete"
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    state = torch.load(out / "checkpoint" / "custom_checkpoint_0.pkl", weights_only=False)
    assert state["step"] == 2
    from safetensors.torch import load_file

    for f in (out / "checkpoint").glob("model*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(f)).values())


def test_nan_critic_values_stop_naming_the_critic(rl_setup, tmp_path, monkeypatch):
    broken_judge(monkeypatch, rl_setup["cm"], float("nan"), as_type="critic")
    with pytest.raises(NumericalError) as info:
        ppo.run(ppo.PPOConfig(actor_path=str(rl_setup["actor"]), reward_model_path=str(rl_setup["rm"]),
                              cost_model_path=str(rl_setup["cm"]), train_prompts=str(rl_setup["prompts"]),
                              out=str(tmp_path / "c"), steps=2, rollout=ppo.RolloutConfig(prompts_per_step=4),
                              sampling=ppo.SamplingConfig(max_new_tokens=6),
                              runtime=ppo.RuntimeConfig(progress=False)))
    assert (info.value.step, info.value.tensor) == (1, "cost_values") and "cost critic" in str(info.value)


def test_streams_and_advantages_are_checked(rl_setup):
    """compute_advantages refuses a non-finite stream even when it gets past the rollout checks."""
    from saferlhf.rollout import Rollout

    B, N = 2, 3
    ro = Rollout(input_ids=torch.zeros(B, N + 1, dtype=torch.long), attention_mask=torch.ones(B, N + 1),
                 prompt_length=1, response_mask=torch.ones(B, N), logprobs=torch.zeros(B, N),
                 ref_logprobs=torch.zeros(B, N), reward=torch.tensor([1.0, float("inf")]),
                 reward_values=torch.zeros(B, N), cost=torch.zeros(B), cost_values=torch.zeros(B, N))
    with pytest.raises(NumericalError) as info:
        ppo.compute_advantages(ppo.PPOConfig(reward_clamp=float("inf")), ppo.ALGORITHMS["ppo_lag"], ro, beta=0.01,
                               step=7)
    assert (info.value.step, info.value.tensor) == (7, "reward_stream")


def test_threshold_outside_the_cost_range_warns_once(rl_setup, tmp_path, capsys):
    out = tmp_path / "far"
    assert main(ppo_args(rl_setup, out, steps=2, extra=["--lagrange.threshold", "1000"])) == 0
    err = capsys.readouterr().err
    assert err.count("warning: the cost threshold d = 1000 is above every episode cost") == 1
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["lagrange/threshold_outside_costs"] for r in rows] == [1.0, 1.0]
    assert rows[-1]["lagrange/lambda"] >= 1e-3  # never 0: the floor lagrange.min_value


# --------------------------------------------------------------------------- run folder and resume safety


def test_resume_refuses_a_changed_config_naming_the_fields(rl_setup, tmp_path, capsys):
    out = tmp_path / "run"
    args = ppo_args(rl_setup, out, steps=1)
    assert main(args) == 0
    assert main(args) == 2  # the folder holds a run: neither resume nor overwrite
    assert "already holds a run" in capsys.readouterr().err
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"prompt": "how do I cook tea?"}) + "\n")
    changed = [*args, "--resume", "true", "--algorithm", "ppo", "--runtime.seed", "5", "--lagrange.lr", "0.2",
               "--train_prompts", str(other)]
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "algorithm, kl_coef, lagrange.lr, runtime.seed, train_prompts" in err  # β is resolved per algorithm
    assert _status(out) == "complete"  # untouched
    assert main([*args, "--resume", "true", "--runtime.progress", "true"]) == 0  # a run-independent field
    assert main([*args, "--overwrite", "true", "--runtime.seed", "5"]) == 0


# --------------------------------------------------------------------------- gradient checkpointing


def _count_recomputations(monkeypatch) -> dict:
    """Per trained model (actor, reward critic, cost critic), how many decoder-layer MLPs ran during a
    backward pass: only gradient checkpointing recomputes forwards there."""
    import accelerate

    counts: dict[str, int] = {}
    in_backward = [False]
    real_backward = accelerate.Accelerator.backward

    def backward(self, loss, **kw):
        in_backward[0] = True
        try:
            return real_backward(self, loss, **kw)
        finally:
            in_backward[0] = False

    real_build = ppo.build_optimizer
    order = iter(["actor", "reward", "cost"])

    def build(model, optim, total):
        name = next(order)
        counts[name] = 0
        for module_name, module in model.named_modules():
            if module_name.endswith(".mlp"):  # a pre-hook: recomputation may stop early inside the layer
                module.register_forward_pre_hook(lambda *_, n=name: counts.__setitem__(n, counts[n] + in_backward[0]))
        return real_build(model, optim, total)

    monkeypatch.setattr(accelerate.Accelerator, "backward", backward)
    monkeypatch.setattr(ppo, "build_optimizer", build)
    return counts


@pytest.mark.parametrize("epochs", [1, 2])  # 1: the fused update (rollout forwards reused), 2: recomputed
def test_gradient_checkpointing_recomputes_actor_and_both_critics(rl_setup, tmp_path, monkeypatch, epochs):
    extra = ["--ppo_epochs", str(epochs), "--num_minibatches", "1", "--rollout.prompts_per_step", "4",
             "--ptx_file", str(rl_setup["sft"])]
    counts = _count_recomputations(monkeypatch)
    assert main(ppo_args(rl_setup, tmp_path / "gc", steps=1,
                         extra=[*extra, "--runtime.gradient_checkpointing", "true"])) == 0
    layers = 2
    # per update: the actor's RL and PTX forwards, each critic's value forward, recomputed once per layer
    assert counts == {"actor": 2 * layers * epochs, "reward": layers * epochs, "cost": layers * epochs}
    monkeypatch.undo()
    counts_off = _count_recomputations(monkeypatch)
    assert main(ppo_args(rl_setup, tmp_path / "plain", steps=1, extra=extra)) == 0
    assert counts_off == {"actor": 0, "reward": 0, "cost": 0}
    a, b = _actor(tmp_path / "gc" / "actor"), _actor(tmp_path / "plain" / "actor")
    for k in a:  # same maths
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "gc" / "actor").config.use_cache == \
        AutoModelForCausalLM.from_pretrained(rl_setup["actor"]).config.use_cache


# --------------------------------------------------------------------------- PTX gradient scale


def test_ptx_gradient_has_the_reference_scale(rl_setup, tmp_path, monkeypatch):
    """The reference accumulates the RL and the PTX backward over a window of 2 micro-steps (each scaled
    by 1/2): with c_ptx = 0 the actor gradient must be exactly half the PTX-free one (ours was equal)."""
    norms: dict[str, list] = {}
    real = ppo.optimizer_step

    def record(acc, params, opt, sched, max_norm, *, step=None, what="model"):
        norm = real(acc, params, opt, sched, max_norm, step=step, what=what)
        norms.setdefault(what, []).append((step, norm))
        return norm

    monkeypatch.setattr(ppo, "optimizer_step", record)
    extra = ["--ppo_epochs", "1", "--num_minibatches", "1", "--actor_optim.grad_clip", "0"]
    assert main(ppo_args(rl_setup, tmp_path / "plain", steps=1, extra=extra)) == 0
    plain = norms.pop("actor")
    assert set(norms) == {"reward critic", "cost critic"} and norms["reward critic"][0][0] == 1  # step= and what=
    assert main(ppo_args(rl_setup, tmp_path / "ptx", steps=1,
                         extra=[*extra, "--ptx_file", str(rl_setup["sft"]), "--ptx_coef", "0"])) == 0
    with_ptx = norms["actor"]
    assert plain[0][0] == with_ptx[0][0] == 1
    assert with_ptx[0][1] == pytest.approx(plain[0][1] / 2, rel=1e-6)


@pytest.mark.parametrize("fused", [False, True], ids=["minibatches", "fused"])
def test_ppo_lag_with_lora_actor_and_critics(rl_setup, tmp_path, fused):
    """LoRA actor (the reference = the same base with adapters off) and LoRA critics: the saved actor is a
    plain merged model, only the adapted projections moved, the first rollout's KL is exactly 0 (B = 0 at
    init: actor == reference), and the killed run resumes to the same weights."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from faults.util import assert_same_weights, run_cli, run_killed

    extra = ["--lora.enabled", "true", "--lora.r", "4", "--critic_lora.enabled", "true", "--save_every", "1"]
    if fused:
        extra += ["--ppo_epochs", "1", "--num_minibatches", "1"]
    out = tmp_path / "lora"
    assert run_cli(ppo_args(rl_setup, out, steps=3, extra=extra)).returncode == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "lagrange/lambda" in r]
    assert len(steps) == 3 and steps[0]["rollout/kl"] == pytest.approx(0.0, abs=1e-6)
    base = load_file(next(Path(rl_setup["actor"]).glob("*.safetensors")))
    actor = load_file(out / "actor" / "model.safetensors")
    assert not any("lora" in k for k in actor)  # merged on save
    moved = {k for k in actor if k in base and not torch.equal(actor[k], base[k])}
    assert moved and all(("q_proj" in k or "v_proj" in k) for k in moved), moved  # the base stayed frozen
    killed = tmp_path / "killed"
    run_killed(ppo_args(rl_setup, killed, steps=3, extra=extra), "step:2")
    resumed = run_cli([*ppo_args(rl_setup, killed, steps=3, extra=extra), "--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(out / "actor", killed / "actor")
    # samples.jsonl: 2 rows per step by default; the resumed run re-sampled exactly the steps after its checkpoint
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in samples] == [1, 1, 2, 2, 3, 3] and all(isinstance(r["reward"], float) for r in samples)
    assert (killed / "samples.jsonl").read_text() == (out / "samples.jsonl").read_text()


def test_ref_model_path_is_the_kl_reference(rl_setup, mixed_sft_actor, tmp_path):
    """KL at step 1 is exactly 0 when the reference is the initial policy, and positive with another reference
    (the SFT model of an earlier round in `saferlhf iterate --kl_reference sft`)."""
    assert main(ppo_args(rl_setup, tmp_path / "own", steps=1)) == 0
    assert main(ppo_args(rl_setup, tmp_path / "other", steps=1, extra=("--ref_model_path", str(mixed_sft_actor)))) == 0
    own, other = (read_jsonl(tmp_path / n / "metrics.jsonl")[0] for n in ("own", "other"))
    assert own["rollout/kl"] == pytest.approx(0.0, abs=1e-6)
    assert other["rollout/kl"] > 0.01


def test_ref_model_path_errors_are_one_line(rl_setup, tmp_path, capsys):
    from saferlhf.models import build_tiny_model

    foreign = build_tiny_model(tmp_path / "foreign", ["a b c d e f g", "h i j k l m n"] * 20, vocab_size=120,
                               hidden_size=16, num_layers=1, num_heads=2)
    assert main(ppo_args(rl_setup, tmp_path / "a", steps=1, extra=("--ref_model_path", str(foreign)))) == 2
    assert "has another tokenizer than actor_path" in capsys.readouterr().err
    assert main(ppo_args(rl_setup, tmp_path / "b", steps=1, extra=("--ref_model_path", str(rl_setup["actor"]),
                                                                    "--lora.enabled", "true"))) == 2
    assert "does not combine with LoRA" in capsys.readouterr().err
    assert main(ppo_args(rl_setup, tmp_path / "c", steps=1, extra=("--ref_model_path", str(tmp_path / "none")))) == 2
    assert "ref_model_path" in capsys.readouterr().err
