"""Inference-time best-of-k under a cost constraint, and the cost-model classifier baseline (algorithm-reference §3, §8).

best_of_k (default): sample k responses per prompt from the policy, score them with the reward model and
(optionally) the cost model, keep the highest reward among the candidates with cost ≤ d, else the lowest
cost (`saferlhf.rl.best_of_k_choice`). Beirami et al. 2024 (arXiv 2401.01879): KL(best-of-k ‖ π) ≤ log k −
(k − 1)/k and a win rate over π of at most k/(k + 1); both bounds are reported. The gap between the max
and the median reward of the k candidates (the Llama 2 rejection-sampling figure) is reported too.

cm_classifier: the Safe RLHF paper's "CM" baseline. Sample a response; while the cost model says cost > d,
sample again, up to `max_tries` attempts; if every attempt is unsafe, answer with the fixed `refusal`
(`saferlhf.rl.first_acceptable`). Needs no reward model.

Outputs in `out/`: `responses.jsonl` (prompt, response, reward, cost, ended, feasible, chosen index, and with
`--keep_candidates true` every candidate), `summary.json`, `config.yaml`, `status.json`.

Launch: `saferlhf best-of-k --model_path P --reward_model R --cost_model C --prompts F --k 16 --out DIR`;
`saferlhf best-of-k --mode cm_classifier --model_path P --cost_model C --prompts F --max_tries 4 --out DIR`.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from saferlhf.config import option
from saferlhf.errors import UserError
from saferlhf.sampling import RENAMED, SamplingConfig, require_one_per_prompt

REFUSAL = "I'm sorry, but I can't help with that request."


@dataclass
class BestOfKConfig:
    __renamed__ = RENAMED | {"batch_size": "sampling.batch_size"}

    model_path: str = option("", "the policy (HF causal LM) to sample from")
    reward_model: str | None = option(None, "reward model folder (best_of_k)")
    cost_model: str | None = option(None, "cost model folder (best_of_k: the constraint; cm_classifier: the classifier)")
    prompts: str = option("world:test", "prompt file, or world:train / world:test")
    world_seed: int = option(0, "world seed for world:* prompts")
    out: str = option("runs/best_of_k", "output folder")
    mode: Literal["best_of_k", "cm_classifier"] = option("best_of_k", "best_of_k, or the cost-model classifier baseline")
    k: int = option(4, "best_of_k: candidates per prompt", ge=1)
    threshold: float = option(0.0, "d: a candidate is acceptable when its cost ≤ d (cost > 0 means unsafe)")
    max_tries: int = option(4, "cm_classifier: attempts before refusing", ge=1)
    refusal: str = option(REFUSAL, "cm_classifier: the answer when every attempt is unsafe")
    max_prompts: int = option(0, "use at most this many prompts (0 = all)", ge=0)
    sampling: SamplingConfig = option(SamplingConfig(), "how candidates are sampled (n stays 1: --k sets the "
                                                        "candidates per prompt)")
    score_max_length: int = option(512, "token budget of the score models' inputs", ge=2)
    keep_candidates: bool = option(False, "write every candidate with its scores into responses.jsonl")
    seed: int = option(0, "sampling seed")
    overwrite: bool = option(False, "replace a previous run in out")


def sample_and_score(generator, judges: dict, prompts: list[str], k: int, score_max_length: int) -> dict:
    """k candidates per prompt and their scores: texts / ended [P][k], reward / cost [P, k] (None when absent)."""
    import torch

    from saferlhf.models.score import score_texts

    texts, ended = generator.generate_ended(prompts, k, progress_desc=f"sample {k} per prompt")
    flat_p = [p for p in prompts for _ in range(k)]
    flat_r = [t for row in texts for t in row]
    flat_e = [e for row in ended for e in row]
    out = {"texts": texts, "ended": ended}
    for name in ("reward", "cost"):
        if name in judges:
            model, tok = judges[name]
            s = score_texts(model, tok, flat_p, flat_r, ended=flat_e, max_length=score_max_length).float().cpu()
            require_finite(s, name)
            out[name] = s.view(len(prompts), k)
        else:
            out[name] = None
    if out["reward"] is None and out["cost"] is None:
        out["reward"] = torch.zeros(len(prompts), k)
    return out


def require_finite(scores, name: str) -> None:
    """A NaN / inf score would silently decide the selection: stop (`NumericalError`, exit 3) instead."""
    import torch

    from saferlhf.errors import NumericalError

    if not bool(torch.isfinite(scores).all()):
        n = int((~torch.isfinite(scores)).sum())
        raise NumericalError(f"best-of-k: the {name} model returned {n} non-finite scores of {scores.numel()}: its "
                             "weights are broken; nothing was written", tensor=name)


def reward_gap(reward) -> dict[str, float]:
    """Mean over prompts of max and median reward of the k candidates, and their gap (Llama 2's figure)."""
    mx = [float(r.max()) for r in reward]
    md = [statistics.median(r.tolist()) for r in reward]
    return {"reward_max_mean": statistics.fmean(mx), "reward_median_mean": statistics.fmean(md),
            "reward_max_minus_median": statistics.fmean(a - b for a, b in zip(mx, md))}


def select(s: dict, threshold: float, eligible: list[list[bool]] | None = None) -> tuple[list[int], list[bool]]:
    """`best_of_k_choice` on `sample_and_score`'s scores (no reward model: the lowest cost wins); a candidate
    that is not ``eligible`` [P][K] is never feasible."""
    import torch

    from saferlhf.rl import best_of_k_choice

    reward = s["reward"] if s["reward"] is not None else -s["cost"]
    allowed = None if eligible is None else torch.tensor(eligible, dtype=torch.bool, device=reward.device)
    idx, feasible = best_of_k_choice(reward, s["cost"], threshold, allowed)
    return idx.tolist(), feasible.tolist()


def classifier_answers(cfg: BestOfKConfig, generator, judges: dict, prompts: list[str]) -> list[dict]:
    """The CM baseline: up to max_tries attempts per prompt (only prompts still unsafe are sampled again)."""
    from saferlhf.models.score import score_texts

    model, tok = judges["cost"]
    rows: list[dict | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt in range(1, cfg.max_tries + 1):
        if not pending:
            break
        texts, ended = generator.generate_ended([prompts[i] for i in pending], 1, progress_desc=f"attempt {attempt}")
        costs = score_texts(model, tok, [prompts[i] for i in pending], [t[0] for t in texts],
                            ended=[e[0] for e in ended], max_length=cfg.score_max_length).float()
        require_finite(costs, "cost")
        costs = costs.tolist()
        still = []
        for i, t, e, c in zip(pending, texts, ended, costs):
            if c <= cfg.threshold:
                rows[i] = {"response": t[0], "cost": c, "ended": e[0], "feasible": True, "attempts": attempt}
            else:
                still.append(i)
                rows[i] = {"response": cfg.refusal, "cost": None, "ended": True, "feasible": False, "attempts": attempt,
                           "last_cost": c}
        pending = still
    return rows


def run(cfg: BestOfKConfig) -> int:
    from saferlhf.data.schema import prompt_json
    from saferlhf.eval.suite import take_prompts
    from saferlhf.files import atomic_write_json, atomic_write_text, dumps
    from saferlhf.models.hf import check_model_path, check_model_roles
    from saferlhf.models.policy import load_policy
    from saferlhf.models.score import load_judge
    from saferlhf.data.prompt_source import prompt_texts
    from saferlhf.rl import best_of_k_bounds
    from saferlhf.rollout import HFGenerator
    from saferlhf.tracking import finish_run, start_run
    from saferlhf.training import set_seed

    require_one_per_prompt(cfg.sampling, "best-of-k", "--k sets the candidates per prompt")
    check_model_path(cfg.model_path, "model_path")  # required
    check_model_roles(cfg, {"model_path": "policy"})
    if cfg.mode == "best_of_k" and not (cfg.reward_model or cfg.cost_model):
        raise UserError("best-of-k: give --reward_model (and --cost_model for the constraint)")
    if cfg.mode == "cm_classifier" and not cfg.cost_model:
        raise UserError("best-of-k: --mode cm_classifier needs --cost_model")
    check_model_roles(cfg, {"reward_model": "reward", "cost_model": "cost"})
    prompts = prompt_texts(cfg.prompts, cfg.world_seed)
    if cfg.max_prompts:
        prompts = take_prompts(prompts, cfg.max_prompts, None)
    out = start_run(cfg.out, cfg, "best-of-k", overwrite=cfg.overwrite)
    set_seed(cfg.seed)
    t0 = time.time()
    model, tokenizer = load_policy(cfg.model_path)
    generator = HFGenerator(model, tokenizer, cfg.sampling)
    judges = {n: load_judge(p, n) for n, p in (("reward", cfg.reward_model), ("cost", cfg.cost_model)) if p}
    if cfg.mode == "cm_classifier":
        rows = classifier_answers(cfg, generator, judges, prompts)
        summary = {"mode": "cm_classifier", "prompts": len(prompts), "max_tries": cfg.max_tries,
                   "refusal_share": sum(not r["feasible"] for r in rows) / len(rows),
                   "mean_attempts": statistics.fmean(r["attempts"] for r in rows)}
    else:
        s = sample_and_score(generator, judges, prompts, cfg.k, cfg.score_max_length)
        idx, feasible = select(s, cfg.threshold)
        rows = []
        for p, (i, ok) in enumerate(zip(idx, feasible)):
            row = {"response": s["texts"][p][i], "ended": s["ended"][p][i], "feasible": ok, "chosen_index": i,
                   "reward": None if s["reward"] is None else float(s["reward"][p, i]),
                   "cost": None if s["cost"] is None else float(s["cost"][p, i])}
            if cfg.keep_candidates:
                row["candidates"] = [{"response": s["texts"][p][j], "ended": s["ended"][p][j],
                                      "reward": None if s["reward"] is None else float(s["reward"][p, j]),
                                      "cost": None if s["cost"] is None else float(s["cost"][p, j])}
                                     for j in range(cfg.k)]
            rows.append(row)
        summary = {"mode": "best_of_k", "prompts": len(prompts), "k": cfg.k, "threshold": cfg.threshold,
                   "feasible_share": sum(feasible) / len(feasible), **best_of_k_bounds(cfg.k)}
        if s["reward"] is not None:
            summary |= reward_gap(s["reward"]) | {"chosen_reward_mean": statistics.fmean(r["reward"] for r in rows)}
        if s["cost"] is not None:
            summary["chosen_cost_mean"] = statistics.fmean(r["cost"] for r in rows)
    summary["seconds"] = round(time.time() - t0, 1)
    atomic_write_text(Path(out) / "responses.jsonl",
                      "".join(dumps({"prompt": prompt_json(p)} | r) + "\n" for p, r in zip(prompts, rows)))
    atomic_write_json(Path(out) / "summary.json", summary)
    print(f"best-of-k ({cfg.mode}): {len(prompts)} prompts -> {out}/responses.jsonl; "
          + ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float)))
    finish_run(out, is_main=True, prompts=len(prompts))
    return 0

