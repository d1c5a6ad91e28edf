"""PPO iteration throughput: saferlhf PPO and PPO-Lag vs TRL 1.12.0's experimental PPOTrainer.

    bash bench/setup_peers.sh && python bench/bench_ppo.py

Builds a tiny Llama policy (vocab 2048, hidden 256, 4 layers, 4 heads; fp32), a reward model and a
cost model (saferlhf `ScoreModel`s saved as HF sequence-classification folders) and a prompt JSONL in a
temporary folder, then runs whole PPO iterations (generation + scoring + update) with
  (a) `saferlhf.recipes.ppo.run(PPOConfig(algorithm="ppo"))`: actor, reward critic, frozen ref + reward;
  (b) the same with algorithm="ppo_lag": + frozen cost model, cost critic, λ update (two critics);
  (c) TRL's `PPOTrainer` in bench/.venv-trl112 (subprocess, `bench/peers/trl_ppo.py`): policy + value
      model, frozen ref + reward.
All: same policy folder, same reward folder (TRL's value model and saferlhf's reward critic both start
from it), same prompts, prompts per iteration, max new tokens, temperature 1 (no top-k, top-p 1), fp32,
no gradient checkpointing, 1 PPO epoch, 1 minibatch, same torch thread count.

Metric: rollout tokens per second = response tokens (up to and including eos; the full width when
there is no eos) generated per iteration / wall seconds per whole iteration. Both sides stamp the end
of every iteration (saferlhf: metrics.jsonl `time`, log_every=1; TRL: `on_step_end`); the first
`warmup` iterations are untimed. `*_tokens_per_s` is the median over timed iterations of
tokens_i / seconds_i (robust to other processes on a shared machine); `*_window` is total tokens /
total seconds over the timed window. Writes bench/results/ppo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

THREADS_DEFAULT = 1  # see bench/README.md: 2 OpenMP threads on a shared 2-core box are erratic

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _quiet_run(run, cfg):
    """The recipe's own prints go to stderr: stdout carries only the result JSON."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        return run(cfg)


def make_models(tmp: Path, seed: int) -> tuple[Path, Path, Path]:
    from saferlhf.models import ScoreModel, load_tokenizer

    policy = common.build_tiny_llama(tmp / "policy", seed=seed)
    tok = load_tokenizer(policy, padding_side="right")
    rm = ScoreModel.from_pretrained(policy, score_type="reward", seed=seed + 1, allow_new_head=True)
    rm.save_pretrained(tmp / "reward", tokenizer=tok)
    cm = ScoreModel.from_pretrained(policy, score_type="cost", seed=seed + 2, allow_new_head=True)
    cm.save_pretrained(tmp / "cost", tokenizer=tok)
    return policy, tmp / "reward", tmp / "cost"


def run_saferlhf(algorithm: str, policy: Path, reward: Path, cost: Path, prompts: Path, out: Path, a) -> dict:
    from saferlhf.recipes import ppo as ppo_module
    from saferlhf.recipes.ppo import PPOConfig, RolloutConfig, run
    from saferlhf.sampling import SamplingConfig
    from saferlhf.training import RuntimeConfig

    cfg = PPOConfig(
        algorithm=algorithm, actor_path=str(policy), reward_model_path=str(reward),
        cost_model_path=str(cost) if algorithm == "ppo_lag" else None, train_prompts=str(prompts),
        out=str(out), steps=a.warmup + a.steps, ppo_epochs=1, num_minibatches=1, log_every=1,
        kl_coef=a.kl_coef,
        rollout=RolloutConfig(prompts_per_step=a.prompts_per_step),
        sampling=SamplingConfig(max_new_tokens=a.max_new_tokens, temperature=1.0, top_p=1.0),
        runtime=RuntimeConfig(device="cpu", threads=a.threads, progress=False, seed=a.seed),
    )
    assert _quiet_run(run, cfg) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = {r["step"]: r for r in rows if "rollout/response_length" in r}
    n = a.warmup + a.steps
    assert sorted(rows) == list(range(1, n + 1)), sorted(rows)
    tokens = {s: rows[s]["rollout/response_length"] * a.prompts_per_step for s in rows}
    timed = range(a.warmup + 1, n + 1)
    seconds = {s: rows[s]["time"] - rows[s - 1]["time"] for s in timed}
    window = rows[n]["time"] - rows[a.warmup]["time"]
    return {
        "tokens_per_s_median": statistics.median(tokens[s] / seconds[s] for s in timed),
        "tokens_per_s_window": sum(tokens[s] for s in timed) / window,
        "mean_response_length": sum(tokens[s] for s in timed) / (a.steps * a.prompts_per_step),
        "step_seconds": [round(rows[s]["time/step_seconds"], 4) for s in sorted(rows)],
        "iteration_seconds": [round(seconds[s], 4) for s in timed],
        "median_iteration_seconds": statistics.median(seconds[s] for s in timed),
        "timed_seconds": window,
        "torch_threads": __import__("torch").get_num_threads(),
        # the rollout's actor / critic forwards reused by the update (saferlhf >= this change)
        "fused_update": bool(getattr(ppo_module, "fused_update", lambda *_: False)(cfg, a.prompts_per_step)),
    }


def run_trl(policy: Path, reward: Path, prompts: Path, a) -> dict:
    return common.run_peer("trl112", "trl_ppo.py", [
        "--policy", str(policy), "--reward_model", str(reward), "--prompts", str(prompts),
        "--prompts_per_step", str(a.prompts_per_step), "--max_new_tokens", str(a.max_new_tokens),
        "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads),
        "--kl_coef", str(a.kl_coef), "--seed", str(a.seed)], threads=a.threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts_per_step", type=int, default=16)
    ap.add_argument("--max_new_tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8, help="timed PPO iterations")
    ap.add_argument("--warmup", type=int, default=2, help="untimed PPO iterations first")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--kl_coef", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    ap.add_argument("--repeats", type=int, default=2, help="alternate the three runs this many times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip_trl", action="store_true")
    a = ap.parse_args()
    common.set_threads(a.threads)
    load_before = os.getloadavg()

    runs: dict[str, list[dict]] = {"ppo": [], "ppo_lag": [], "trl": []}
    with tempfile.TemporaryDirectory(prefix="saferlhf-bench-ppo-") as tmp:
        tmp = Path(tmp)
        policy, reward, cost = make_models(tmp, a.seed)
        prompts = tmp / "prompts.jsonl"
        common.make_prompt_file(prompts, a.prompts, a.seed)
        for r in range(a.repeats):
            runs["ppo"].append(run_saferlhf("ppo", policy, reward, cost, prompts, tmp / f"ppo-{r}", a))
            runs["ppo_lag"].append(run_saferlhf("ppo_lag", policy, reward, cost, prompts, tmp / f"lag-{r}", a))
            if not a.skip_trl:
                runs["trl"].append(run_trl(policy, reward, prompts, a))

    best = {k: max(v, key=lambda x: x["tokens_per_s_median"]) for k, v in runs.items() if v}
    result: dict = {
        "saferlhf_ppo_tokens_per_s": round(best["ppo"]["tokens_per_s_median"], 2),
        "saferlhf_ppo_lag_tokens_per_s": round(best["ppo_lag"]["tokens_per_s_median"], 2),
    }
    if "trl" in best:
        trl = best["trl"]["tokens_per_s_median"]
        result |= {"trl_ppo_tokens_per_s": round(trl, 2),
                   "ratio_ppo_lag_vs_trl": round(best["ppo_lag"]["tokens_per_s_median"] / trl, 3),
                   "ratio_ppo_vs_trl": round(best["ppo"]["tokens_per_s_median"] / trl, 3)}
    result["mean_response_length"] = {k: round(v["mean_response_length"], 2) for k, v in best.items()}
    result["tokens_per_s_window"] = {k: round(v["tokens_per_s_window"], 2) for k, v in best.items()}
    result["median_iteration_seconds"] = {k: round(v["median_iteration_seconds"], 3) for k, v in best.items()}
    result["settings"] = {
        "policy": "tiny Llama from saferlhf.models.build_tiny_model: vocab 2048, hidden 256, 4 layers, "
                  "4 heads, intermediate 1024, fp32, random init (responses mostly run to max_new_tokens)",
        "reward_and_cost_models": "saferlhf ScoreModel on the same backbone, saved as HF "
                                  "sequence-classification folders",
        "prompts_per_step": a.prompts_per_step, "max_new_tokens": a.max_new_tokens, "temperature": 1.0,
        "top_p": 1.0, "top_k": "off", "ppo_epochs": 1, "minibatches": 1, "kl_coef": a.kl_coef,
        "timed_iterations": a.steps, "warmup_iterations": a.warmup, "prompts_in_file": a.prompts,
        "torch_threads": a.threads, "gradient_checkpointing": False, "dtype": "float32",
        "trl": "stop_token='eos', missing_eos_penalty=1.0, local_rollout_forward_batch_size=prompts_per_step, "
               "num_sample_generations=0",
        "metric": "median over timed iterations of response tokens / whole-iteration wall seconds; "
                  "best of repeats per side",
        "repeats": a.repeats,
    }
    result["runs"] = {k: [{kk: vv for kk, vv in x.items() if kk != "versions"} for x in v]
                      for k, v in runs.items() if v}
    result["versions"] = {"saferlhf_side": common.versions()} | (
        {"trl_side": runs["trl"][0]["versions"]} if runs["trl"] else {})
    result["machine"] = common.machine() | {"loadavg_1_5_15_before": [round(x, 2) for x in load_before],
                                            "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()]}
    result["command"] = "python bench/bench_ppo.py " + " ".join(sys.argv[1:])
    common.write_result("ppo", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
