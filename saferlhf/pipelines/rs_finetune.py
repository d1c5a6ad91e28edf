"""Rejection-sampling fine-tuning under a cost constraint (Llama 2, Touvron et al. 2023, arXiv 2307.09288, §3.2.3).

Each round r = 1..R: sample k responses per training prompt from the round r-1 policy (round 0: `model_path`),
keep one per prompt with `saferlhf.rl.best_of_k_choice` (the highest reward among candidates with cost ≤ d,
else the lowest cost), and fine-tune the round r-1 policy on the kept (prompt, response) pairs with
`saferlhf sft`. Llama 2's figure: the gap between the max and the median reward of the k samples per round
(`rounds[r].reward_max_minus_median` in summary.json; `reward_gap.png`).

Deviations / choices:
1. Each round fine-tunes the previous round's policy on that round's samples (Llama 2 later pooled the best
   samples of all rounds); every round's samples and model stay on disk (`round_<r>/`).
2. Prompts whose kept response is still infeasible (every candidate's cost > d) are left out of that round's
   SFT data: imitating the least unsafe answer would still teach an unsafe one.
3. Only complete, non-empty answers (they ended with eos) can be kept: a candidate cut off at the token limit
   would, as an SFT example with an end token appended, teach the policy to stop mid-answer. A prompt whose candidates
   were all cut off is left out of the round (``cut_off_share`` / ``kept`` in round.json say how many).
4. A finished round (its `round_<r>/sft/status.json` complete) is not run again: `--resume true` continues a
   killed run with the next unfinished stage.

Outputs in `out/`: `round_<r>/candidates.jsonl`, `round_<r>/selected.jsonl`, `round_<r>/sft/` (model, metrics),
`summary.json` (`rounds`), `reward_gap.png`, `config.yaml`, `status.json`.

Launch: `saferlhf rs-finetune --model_path SFT --reward_model R --cost_model C --prompts F --k 8 --rounds 3 --out DIR`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from saferlhf.config import option
from saferlhf.errors import UserError
from saferlhf.sampling import RENAMED, SamplingConfig, require_one_per_prompt
from saferlhf.training import OptimConfig, PolicyLoraSettings


@dataclass
class RSFinetuneConfig:
    __renamed__ = RENAMED | {"batch_size": "sampling.batch_size"}

    model_path: str = option("", "the starting policy (usually the SFT model)")
    reward_model: str = option("", "reward model folder")
    cost_model: str | None = option(None, "cost model folder (the constraint; none: best reward only)")
    prompts: str = option("world:train", "training prompt file, or world:train")
    world_seed: int = option(0, "world seed for world:* prompts")
    out: str = option("runs/rs_finetune", "output folder")
    rounds: int = option(3, "rejection-sampling rounds", ge=1)
    k: int = option(8, "samples per prompt per round", ge=1)
    threshold: float = option(0.0, "d: a sample is acceptable when its cost ≤ d")
    max_prompts: int = option(0, "use at most this many prompts (0 = all)", ge=0)
    sampling: SamplingConfig = option(SamplingConfig(), "how each round's candidates are sampled (n stays 1: "
                                                        "--k sets the samples per prompt)")
    sft_epochs: float = option(1.0, "SFT passes over a round's kept samples", gt=0)
    sft_batch_size: int = option(16, "SFT batch size", ge=1)
    sft_max_length: int = option(512, "SFT max tokens of prompt + response", ge=2)
    optim: OptimConfig = option(OptimConfig(lr=2e-5, weight_decay=0.0), "the SFT optimiser of every round")
    lora: PolicyLoraSettings = option(PolicyLoraSettings(), "LoRA for the SFT of every round")
    seed: int = option(0, "seed (round r samples with seed + r)")
    resume: bool = option(False, "continue a killed run: finished rounds are kept")
    overwrite: bool = option(False, "replace a previous run in out")


def run_round(cfg: RSFinetuneConfig, r: int, policy: str, prompts: list[str], folder: Path) -> dict:
    """One round: sample, select (`best_of_k`'s functions), write the SFT file, fine-tune; the round's stats."""
    from saferlhf.data.schema import prompt_json
    from saferlhf.files import atomic_write_json, atomic_write_text, dumps
    from saferlhf.models.policy import load_policy
    from saferlhf.models.score import load_judge
    from saferlhf.recipes import sft
    from saferlhf.recipes.best_of_k import reward_gap, sample_and_score, select
    from saferlhf.rollout import HFGenerator
    from saferlhf.training import RuntimeConfig, set_seed

    t0 = time.time()
    set_seed(cfg.seed + r)
    model, tokenizer = load_policy(policy)
    generator = HFGenerator(model, tokenizer, cfg.sampling)
    judges = {n: load_judge(p, n) for n, p in (("reward", cfg.reward_model), ("cost", cfg.cost_model)) if p}
    s = sample_and_score(generator, judges, prompts, cfg.k, cfg.sft_max_length)
    del model, generator
    complete = [[e and bool(t.strip()) for t, e in zip(ts, es)] for ts, es in zip(s["texts"], s["ended"])]
    idx, feasible = select(s, cfg.threshold, eligible=complete)  # deviation 3: complete, non-empty answers
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "candidates.jsonl", "".join(dumps({
        "prompt": prompt_json(p), "responses": s["texts"][i], "ended": s["ended"][i],
        "reward": s["reward"][i].tolist(), "cost": None if s["cost"] is None else s["cost"][i].tolist()}) + "\n"
        for i, p in enumerate(prompts)))
    kept = [(p, s["texts"][i][j]) for i, (p, j, ok) in enumerate(zip(prompts, idx, feasible)) if ok]
    if not kept:
        raise UserError(f"rs-finetune: round {r}: no prompt has a complete (not cut off) sample with cost ≤ "
                        f"{cfg.threshold}: nothing to fine-tune on",
                        hint="raise --threshold, --k or --sampling.max_new_tokens")
    atomic_write_text(folder / "selected.jsonl", "".join(dumps({"prompt": prompt_json(p), "response": t}) + "\n"
                                                         for p, t in kept))
    sft_out = folder / "sft"
    sft.run(sft.SFTConfig(model_path=policy, train_file=str(folder / "selected.jsonl"), out=str(sft_out),
                          epochs=cfg.sft_epochs, batch_size=cfg.sft_batch_size, max_length=cfg.sft_max_length,
                          optim=cfg.optim, lora=cfg.lora, overwrite=True,
                          runtime=RuntimeConfig(seed=cfg.seed + r)))
    kept_idx = [(i, j) for i, (j, ok) in enumerate(zip(idx, feasible)) if ok]
    chosen_r = [float(s["reward"][i, j]) for i, j in kept_idx]
    stats = {"round": r, "policy": policy, "prompts": len(prompts), "kept": len(kept),
             "feasible_share": sum(feasible) / len(feasible), **reward_gap(s["reward"]),
             "cut_off_share": sum(not e for es in s["ended"] for e in es) / sum(len(es) for es in s["ended"]),
             "kept_reward_mean": sum(chosen_r) / len(chosen_r), "seconds": round(time.time() - t0, 1)}
    if s["cost"] is not None:
        stats["kept_cost_mean"] = sum(float(s["cost"][i, j]) for i, j in kept_idx) / len(kept_idx)
    atomic_write_json(folder / "round.json", stats)
    return stats


def plot_gap(rounds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [r["reward_max_mean"] for r in rounds], "o-", label="max of k")
    ax.plot(xs, [r["reward_median_mean"] for r in rounds], "s-", label="median of k")
    ax.set_xlabel("round")
    ax.set_ylabel("reward (mean over prompts)")
    ax.set_xticks(xs)
    ax.set_title("rejection sampling: max vs median reward")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: RSFinetuneConfig) -> int:
    from saferlhf.eval.suite import take_prompts
    from saferlhf.files import atomic_write_json
    from saferlhf.models.hf import check_model_path, check_model_roles
    from saferlhf.data.prompt_source import prompt_texts
    from saferlhf.tracking import finish_run, run_state, start_run

    require_one_per_prompt(cfg.sampling, "rs-finetune", "--k sets the samples per prompt")
    check_model_path(cfg.model_path, "model_path")  # both required
    check_model_path(cfg.reward_model, "reward_model")
    check_model_roles(cfg, {"model_path": "policy", "reward_model": "reward", "cost_model": "cost"})
    prompts = prompt_texts(cfg.prompts, cfg.world_seed)
    if cfg.max_prompts:
        prompts = take_prompts(prompts, cfg.max_prompts, None)
    out = Path(start_run(cfg.out, cfg, "rs-finetune", resume=cfg.resume, overwrite=cfg.overwrite))
    policy, rounds = cfg.model_path, []
    for r in range(1, cfg.rounds + 1):
        folder = out / f"round_{r}"
        if run_state(folder / "sft") == "complete" and (folder / "round.json").exists():
            stats = json.loads((folder / "round.json").read_text())
        else:
            stats = run_round(cfg, r, policy, prompts, folder)
        rounds.append(stats)
        policy = str(folder / "sft" / "model")
        print(f"rs-finetune: round {r}: kept {stats['kept']} of {stats['prompts']}, reward max {stats['reward_max_mean']:.3f} "
              f"vs median {stats['reward_median_mean']:.3f}")
    plot_gap(rounds, out / "reward_gap.png")
    atomic_write_json(out / "summary.json", {"rounds": rounds, "final_model": policy})
    finish_run(out, is_main=True, rounds=len(rounds), final_model=policy)
    return 0
