"""PPO-Lagrangian (Safe RLHF), PPO (reward only) and reward shaping — three settings of ONE loop.

Safe RLHF (Dai et al., ICLR 2024; algorithm-reference §2): max_θ E[R(x,y)] s.t. E[C(x,y)] <= d, solved as
min_θ max_{λ>=0} -J_R(θ) + λ·(J_C(θ) - d). Per step:
  1. sample responses y ~ π_old(·|x) for a batch of prompts (KV cache, temperature / top-p);
  2. R(x,y), C(x,y) from the frozen reward and cost models; V^r, V^c from the two critics;
     KL_t = log π_old(a_t) - log π_ref(a_t);
  3. streams r_t = -β·KL_t + 1[t=T]·R and c_t = +β·KL_t + 1[t=T]·C, clamped to ±50;
  4. GAE per stream (γ, λ_GAE); returns G = A + V;
  5. λ update: log λ <- log λ + lr_λ·λ·(J_c - d), J_c = mean of the last `cost_window` episode costs,
     averaged across ranks so that every rank holds the same λ;
  6. actor: clipped surrogate on Ã = (A^r - λ·A^c)/(1+λ) (λ detached); critics: clipped value losses;
     optional PTX (supervised) loss in the same actor step.
PPO: a single reward stream with β = 0.02. Reward shaping: R' = R - λ_fixed·C in the reward stream,
no (1+λ) normalisation, β = 0.02.

Defaults are the paper's / reference's (β 0.01 for PPO-Lag, γ 1, λ_GAE 0.95, ε 0.2, value clip 5, λ_0 1,
lr_λ 0.1, d 0, window 128, actor lr 1e-5 cosine + 3 % warm-up + wd 0.01, critic lr 5e-6 constant, Adam
betas (0.9, 0.95), grad clip 1, 16 prompts per device, 1 PPO epoch, 1 minibatch, PTX coefficient 16).

Deliberate deviations from the reference implementation:
  1. PPO epochs and minibatches are configurable (the reference used each rollout for exactly one
     gradient step, so clipping never acted). Defaults stay at 1 / 1.
  2. Optional advantage whitening (`whiten_advantages`, off by default) and entropy bonus (`entropy_coef`).
  3. γ and λ_GAE are configurable (hard-coded in the reference).
  4. Position ids are computed from the attention mask, so left-padded prompts get correct positions.
  5. λ, the cost window, optimisers, schedulers, data position and RNG states are checkpointed
     atomically and training resumes exactly (the reference had no resume).
  6. Dropout is disabled in actor and critics (log-probs of π_old and π_θ come from the same function).
  7. Rollouts run in eval mode with the actor's own KV cache through `generate`; score models may use
     a different tokenizer (responses are re-tokenised as text then).

Launch: `saferlhf ppo --algorithm ppo_lag --actor_path SFT --reward_model_path RM --cost_model_path CM
--train_prompts prompts.jsonl --out DIR` (one CPU or GPU); `accelerate launch -m saferlhf ppo ...` for DDP /
DeepSpeed (each rank samples its own prompts; J_c is averaged across ranks).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from saferlhf.config import option
from saferlhf.training import OptimConfig, RuntimeConfig, build_optimizer, make_accelerator, optimizer_step

DEFAULT_KL = {"ppo_lag": 0.01, "ppo": 0.02, "reward_shaping": 0.02}


@dataclass
class RolloutConfig:
    prompts_per_step: int = option(16, "prompts sampled per RL step per process (one response each)", ge=1)
    max_new_tokens: int = option(128, "max response tokens", ge=1)
    max_prompt_length: int = option(256, "prompts are cut to their last N tokens", ge=1)
    temperature: float = option(1.0, "sampling temperature (reference: 1.0)", gt=0)
    top_p: float = option(1.0, "nucleus sampling threshold (reference: 1.0)", gt=0, le=1)


@dataclass
class LagrangeConfig:
    init: float = option(1.0, "initial λ (reference 1.0)", gt=0)
    lr: float = option(0.1, "SGD learning rate of log λ (reference 0.1)", gt=0)
    max_value: float | None = option(None, "optional cap λ_max (the paper mentions 5)", gt=0)
    delay_steps: int = option(0, "RL steps before λ starts to move", ge=0)
    threshold: float = option(0.0, "cost threshold d: constraint E[C] <= d (0 = 'on average classified safe')")
    window: int = option(128, "J_c = mean of the last N episode costs (per rank, then averaged across ranks)", ge=1)


@dataclass
class PPOConfig:
    algorithm: Literal["ppo_lag", "ppo", "reward_shaping"] = option(
        "ppo_lag", "ppo_lag = Safe RLHF; ppo = reward only; reward_shaping = R - shaping_lambda·C")
    actor_path: str = option("", "initial policy (HF causal LM, usually the SFT model); also the frozen reference")
    reward_model_path: str = option("", "reward model (score model folder)")
    cost_model_path: str | None = option(None, "cost model (required for ppo_lag / reward_shaping; with ppo only logged)")
    reward_critic_path: str | None = option(None, "reward critic init (default: the reward model)")
    cost_critic_path: str | None = option(None, "cost critic init (default: the cost model)")
    train_prompts: str = option("", "prompt file (jsonl with 'prompt', BeaverTails json, XSTest csv, ...)")
    ptx_file: str | None = option(None, "optional SFT file mixed in as a PTX loss")
    ptx_coef: float = option(16.0, "PTX loss coefficient (reference 16)", ge=0)
    out: str = option("runs/ppo", "output folder: actor/, checkpoint/, metrics.jsonl, config.yaml")
    steps: int = option(100, "RL steps (each: one rollout batch, then PPO epochs over it)", ge=1)
    ppo_epochs: int = option(1, "passes over each rollout batch (reference: 1)", ge=1)
    num_minibatches: int = option(1, "minibatches per pass (reference: 1)", ge=1)
    kl_coef: float | None = option(None, "β; default 0.01 for ppo_lag, 0.02 for ppo and reward_shaping", ge=0)
    clip_eps: float = option(0.2, "PPO ratio clip ε", gt=0, lt=1)
    value_clip: float = option(5.0, "critic value clip range around V_old", gt=0)
    reward_clamp: float = option(50.0, "clamp of the per-token streams after the KL term", gt=0)
    gamma: float = option(1.0, "discount γ", ge=0, le=1)
    gae_lambda: float = option(0.95, "GAE λ", ge=0, le=1)
    whiten_advantages: bool = option(False, "whiten the actor advantage over the batch (off in the reference)")
    entropy_coef: float = option(0.0, "entropy bonus coefficient (none in the reference)", ge=0)
    shaping_lambda: float = option(1.0, "fixed λ of reward shaping (R - λ·C)", ge=0)
    lagrange: LagrangeConfig = option(LagrangeConfig(), "Lagrange multiplier (ppo_lag)")
    rollout: RolloutConfig = option(RolloutConfig(), "sampling")
    actor_optim: OptimConfig = option(OptimConfig(lr=1e-5, weight_decay=0.01), "actor optimiser")
    critic_optim: OptimConfig = option(OptimConfig(lr=5e-6, weight_decay=0.0, scheduler="constant", warmup_ratio=0.0),
                                       "critic optimiser")
    save_every: int = option(0, "write a resumable checkpoint every N steps (0 = only at the end)", ge=0)
    resume: bool = option(False, "continue from out/checkpoint when it exists")
    log_every: int = option(1, "log metrics every N steps", ge=1)
    runtime: RuntimeConfig = option(RuntimeConfig(), "runtime")


class TrainState:
    """Loop position + Lagrange multiplier: registered with accelerate so that it is checkpointed."""

    def __init__(self, lagrange):
        self.step, self.lagrange = 0, lagrange

    def state_dict(self):
        return {"step": self.step, "lagrange": self.lagrange.state_dict() if self.lagrange else None}

    def load_state_dict(self, state):
        self.step = state["step"]
        if self.lagrange is not None:
            self.lagrange.load_state_dict(state["lagrange"])


def _no_dropout(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def prompt_batch(prompts: list, step: int, per_step: int, rank: int, world: int, seed: int) -> list:
    """The prompts of ``step`` for ``rank``: epochs of a seeded shuffle, each rank a disjoint slice."""
    global_bs = per_step * world
    start = step * global_bs
    out = []
    for j in range(start + rank * per_step, start + (rank + 1) * per_step):
        epoch, pos = divmod(j, len(prompts))
        order = list(range(len(prompts)))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(prompts[order[pos]])
    return out


@torch.no_grad()
def end_scores(score_model, score_tok, same_tokenizer: bool, ids, mask, prompts, responses, max_length: int):
    """R(x,y) or C(x,y) at each sequence's last token; re-tokenises text for a foreign tokenizer."""
    if same_tokenizer:
        return score_model(ids, mask).end_scores.float()
    from saferlhf.batching import text_end_scores

    return text_end_scores(score_model, score_tok, prompts, responses, max_length, batch_size=len(prompts))


def fused_update(cfg: PPOConfig, batch_size: int) -> bool:
    """One PPO epoch over one minibatch (the default, as the reference): at the update π_old = π_θ and
    V_old = V, so the rollout's actor and critic forwards, kept with their graphs, are the update's
    forwards (1 actor + 1 forward per critic saved per step; same maths). Single-process runs only: with
    several processes the update's forwards must go through the DDP-wrapped models."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return cfg.ppo_epochs == 1 and max(1, min(cfg.num_minibatches, batch_size)) == 1 and not distributed


@torch.no_grad()
def make_experience(cfg: PPOConfig, actor, ref, reward_model, cost_model, reward_critic, cost_critic,
                    tokenizer, scorers, prompts: list[str]):
    """Steps 1-2: sample, then score every sequence with all frozen and critic models.

    With `fused_update`, the actor's logits and the critics' values are computed with gradients and
    kept in ``rollout.live`` for `ppo_update`; their detached copies are log π_old and V_old.
    """
    from saferlhf.batching import encode_prompt
    from saferlhf.rollout import Rollout, action_logits, critic_values, decode_responses, gather_logprobs, sample

    ro = cfg.rollout
    prompt_ids = [encode_prompt(tokenizer, p, ro.max_prompt_length) for p in prompts]
    ids, mask, P, rmask = sample(actor, tokenizer, prompt_ids, ro.max_new_tokens, ro.temperature, ro.top_p)
    actions = ids[:, P:]
    responses = decode_responses(tokenizer, actions, rmask)
    live = {} if fused_update(cfg, ids.shape[0]) else None
    with torch.set_grad_enabled(live is not None):
        logits = action_logits(actor, ids, mask, P)
        logprobs = gather_logprobs(logits, actions)
        values = {name: critic_values(critic, ids, mask, P)
                  for name, critic in (("reward", reward_critic), ("cost", cost_critic)) if critic is not None}
    if live is not None:
        live = {"logits": logits, "logprobs": logprobs} | values
        logprobs, values = logprobs.detach(), {k: v.detach() for k, v in values.items()}
    del logits  # [B, N, V]: kept only in `live`
    ref_logprobs = gather_logprobs(action_logits(ref, ids, mask, P), actions)
    max_len = ro.max_prompt_length + ro.max_new_tokens + 2
    reward = end_scores(reward_model, *scorers["reward"], ids, mask, prompts, responses, max_len)
    cost = (end_scores(cost_model, *scorers["cost"], ids, mask, prompts, responses, max_len)
            if cost_model is not None else None)
    return Rollout(input_ids=ids, attention_mask=mask, prompt_length=P, response_mask=rmask, logprobs=logprobs,
                   ref_logprobs=ref_logprobs, reward=reward, cost=cost,
                   reward_values=values["reward"], cost_values=values.get("cost"),
                   prompts=list(prompts), responses=responses, live=live)


def compute_advantages(cfg: PPOConfig, rollout, beta: float) -> None:
    """Steps 3-4: per-token streams (opposite KL signs) and GAE per stream, written into ``rollout``."""
    from saferlhf.rl import gae, kl_per_token, token_rewards

    kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs)
    m = rollout.response_mask
    end_reward = rollout.reward
    if cfg.algorithm == "reward_shaping":
        end_reward = rollout.reward - cfg.shaping_lambda * rollout.cost
    r = token_rewards(kl, end_reward, m, beta, sign=-1, clamp=cfg.reward_clamp)
    rollout.reward_advantages, rollout.reward_returns = gae(r, rollout.reward_values, m, cfg.gamma, cfg.gae_lambda)
    if cfg.algorithm == "ppo_lag":
        c = token_rewards(kl, rollout.cost, m, beta, sign=+1, clamp=cfg.reward_clamp)
        rollout.cost_advantages, rollout.cost_returns = gae(c, rollout.cost_values, m, cfg.gamma, cfg.gae_lambda)


def actor_advantages(cfg: PPOConfig, rollout, lam: float) -> torch.Tensor:
    """Step 5: Ã = (A^r - λ·A^c)/(1+λ) for PPO-Lag, A^r otherwise; optionally whitened."""
    from saferlhf.rl import combine_advantages, masked_whiten

    adv = rollout.reward_advantages
    if cfg.algorithm == "ppo_lag":
        adv = combine_advantages(rollout.reward_advantages, rollout.cost_advantages, lam)
    if cfg.whiten_advantages:
        adv = masked_whiten(adv, rollout.response_mask)
    return adv.detach()


def ppo_update(cfg: PPOConfig, acc, actor, critics: dict, optims: dict, scheds: dict, rollout, adv,
               ptx_batches) -> dict[str, float]:
    """Step 6: `ppo_epochs` × `num_minibatches` clipped updates of the actor and each critic."""
    from saferlhf.losses import critic_loss, entropy_from_logits, ppo_actor_loss, sft_loss
    from saferlhf.rl import explained_variance
    from saferlhf.rollout import action_logits, critic_values, gather_logprobs

    B, P = rollout.input_ids.shape[0], rollout.prompt_length
    live, rollout.live = rollout.live, None  # graph-carrying rollout forwards (fused_update), used once
    stats: dict[str, list[float]] = {}
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(B)
        for idx in perm.chunk(max(1, min(cfg.num_minibatches, B))):
            mb, mb_adv = rollout.select(idx), adv[idx.to(adv.device)]
            if live is not None:
                i = idx.to(live["logits"].device)
                logits, logp = live["logits"][i], live["logprobs"][i]
            else:
                logits = action_logits(actor, mb.input_ids, mb.attention_mask, P)
                logp = gather_logprobs(logits, mb.response_ids)
            loss, diag = ppo_actor_loss(logp, mb.logprobs, mb_adv, mb.response_mask, cfg.clip_eps)
            entropy = entropy_from_logits(logits, mb.response_mask)
            if cfg.entropy_coef:
                loss = loss - cfg.entropy_coef * entropy
            diag["entropy"] = float(entropy.detach())
            if ptx_batches is not None:
                b = next(ptx_batches)
                ptx, _ = sft_loss(actor(input_ids=b["input_ids"].to(acc.device),
                                        attention_mask=b["attention_mask"].to(acc.device)).logits,
                                  b["labels"].to(acc.device))
                loss = loss + cfg.ptx_coef * ptx
                diag["ptx_loss"] = float(ptx.detach())
            acc.backward(loss)
            diag["grad_norm"] = optimizer_step(acc, actor.parameters(), optims["actor"], scheds["actor"],
                                               cfg.actor_optim.grad_clip)
            for k, v in diag.items():
                stats.setdefault(f"train/actor_{k}", []).append(v)
            for name, critic in critics.items():
                values = (live[name][idx.to(live[name].device)] if live is not None
                          else critic_values(critic, mb.input_ids, mb.attention_mask, P))
                old, ret = getattr(mb, f"{name}_values"), getattr(mb, f"{name}_returns")
                vloss, vdiag = critic_loss(values, old, ret, mb.response_mask, cfg.value_clip)
                acc.backward(vloss)
                optimizer_step(acc, critic.parameters(), optims[name], scheds[name], cfg.critic_optim.grad_clip)
                stats.setdefault(f"train/{name}_critic_loss", []).append(vdiag["loss"])
    out = {k: sum(v) / len(v) for k, v in stats.items()}
    for name in critics:
        out[f"train/{name}_explained_variance"] = explained_variance(
            getattr(rollout, f"{name}_values"), getattr(rollout, f"{name}_returns"), rollout.response_mask)
    return out


def rollout_metrics(rollout, beta: float, seconds: float) -> dict[str, float]:
    """rollout/, reward/ and cost/ metrics of one batch (means over the local batch)."""
    from saferlhf.rl import kl_per_token, masked_mean

    m = rollout.response_mask
    kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs)
    out = {"rollout/response_length": float(m.sum(-1).float().mean()),
           "rollout/kl": float((kl * m).sum(-1).mean()),
           "rollout/kl_per_token": float(masked_mean(kl, m)),
           "rollout/tokens_per_s": float(m.sum()) / max(seconds, 1e-9),
           "reward/mean": float(rollout.reward.mean()), "reward/std": float(rollout.reward.std(unbiased=False)),
           "rollout/kl_coef": beta}
    if rollout.cost is not None:
        out |= {"cost/mean": float(rollout.cost.mean()),
                "cost/violation_rate": float((rollout.cost > 0).float().mean())}
    return out


def _ptx_iterator(cfg: PPOConfig, tokenizer, batch_size: int, seed: int):
    from saferlhf.batching import encode_example, sft_batch
    from saferlhf.data.loaders import load_sft_records

    ex = [encode_example(tokenizer, r.prompt, r.response, cfg.rollout.max_prompt_length + cfg.rollout.max_new_tokens)
          for r in load_sft_records(cfg.ptx_file)]
    rng = random.Random(seed)
    while True:
        rng.shuffle(ex)
        for i in range(0, len(ex) - batch_size + 1, batch_size):
            yield sft_batch(ex[i: i + batch_size], tokenizer.pad_token_id)


def _write_rank_report(out: Path, acc, actor, lagrange, step: int) -> None:
    """Each rank records its λ, J_c and a checksum of its actor weights: ranks must agree exactly."""
    from saferlhf.tracking import atomic_write_json

    with torch.no_grad():
        checksum = sum(float(p.double().sum()) for p in acc.unwrap_model(actor).parameters())
    atomic_write_json(out / "ranks" / f"rank{acc.process_index}.json",
                      {"rank": acc.process_index, "num_processes": acc.num_processes, "step": step,
                       "lambda": lagrange.lam if lagrange else None,
                       "log_lambda": lagrange.log_lambda if lagrange else None,
                       "actor_checksum": checksum})


def _check(cfg: PPOConfig) -> None:
    if not cfg.actor_path or not cfg.reward_model_path or not cfg.train_prompts:
        raise SystemExit("ppo: actor_path, reward_model_path and train_prompts are required")
    if cfg.algorithm in ("ppo_lag", "reward_shaping") and not cfg.cost_model_path:
        raise SystemExit(f"ppo: algorithm={cfg.algorithm} needs cost_model_path")
    for name in ("actor_path", "reward_model_path", "cost_model_path", "reward_critic_path", "cost_critic_path"):
        p = getattr(cfg, name)
        if p and not Path(p).exists() and p.count("/") != 1:
            raise SystemExit(f"ppo: {name}: model path not found: {p}")


def run(cfg: PPOConfig) -> int:
    from saferlhf.data.loaders import load_prompts
    from saferlhf.models import ScoreModel, load_policy, load_tokenizer
    from saferlhf.rl import LagrangeMultiplier, global_mean
    from saferlhf.tracking import MetricsLogger, prepare_out_dir, progress
    from saferlhf.models import atomic_save_dir, save_policy

    _check(cfg)
    acc = make_accelerator(cfg.runtime)
    prompts = [r.prompt for r in load_prompts(cfg.train_prompts)]  # validated before any model loads
    beta = cfg.kl_coef if cfg.kl_coef is not None else DEFAULT_KL[cfg.algorithm]
    out = prepare_out_dir(cfg.out, cfg, acc.is_main_process)

    # Models: trained actor + critics; frozen reference, reward and cost models.
    actor, tokenizer = load_policy(cfg.actor_path)
    ref, _ = load_policy(cfg.actor_path)
    reward_model = ScoreModel.from_pretrained(cfg.reward_model_path)
    cost_model = ScoreModel.from_pretrained(cfg.cost_model_path) if cfg.cost_model_path else None
    critics = {"reward": ScoreModel.from_pretrained(cfg.reward_critic_path or cfg.reward_model_path, score_type="critic")}
    if cfg.algorithm == "ppo_lag":
        critics["cost"] = ScoreModel.from_pretrained(cfg.cost_critic_path or cfg.cost_model_path, score_type="critic")
    for m in [actor, *critics.values()]:
        _no_dropout(m)
    scorers = {}
    for name, path in (("reward", cfg.reward_model_path), ("cost", cfg.cost_model_path)):
        if path:
            stok = load_tokenizer(path, padding_side="right")
            scorers[name] = (stok, stok.get_vocab() == tokenizer.get_vocab())
    frozen = [ref, reward_model] + ([cost_model] if cost_model is not None else [])
    for m in frozen:
        m.eval().requires_grad_(False).to(acc.device)
    if cfg.runtime.gradient_checkpointing:
        actor.gradient_checkpointing_enable()

    # Optimisers: one per trained model; schedules count optimiser steps.
    updates = cfg.steps * cfg.ppo_epochs * max(1, min(cfg.num_minibatches, cfg.rollout.prompts_per_step))
    optims, scheds = {}, {}
    optims["actor"], scheds["actor"] = build_optimizer(actor, cfg.actor_optim, updates)
    for name, critic in critics.items():
        optims[name], scheds[name] = build_optimizer(critic, cfg.critic_optim, updates)
    names = ["actor", *critics]
    prepared = acc.prepare(*([actor] + list(critics.values()) + [optims[n] for n in names] + [scheds[n] for n in names]))
    k = len(names)
    actor, critic_list = prepared[0], prepared[1:k]
    critics = dict(zip(list(critics), critic_list))
    optims = dict(zip(names, prepared[k: 2 * k]))
    scheds = dict(zip(names, prepared[2 * k: 3 * k]))
    lagrange = None
    if cfg.algorithm == "ppo_lag":
        lc = cfg.lagrange
        lagrange = LagrangeMultiplier(lc.init, lc.lr, lc.max_value, lc.delay_steps, lc.threshold, lc.window)
    state = TrainState(lagrange)
    acc.register_for_checkpointing(state)
    ckpt = Path(out) / "checkpoint"
    logger = MetricsLogger(out, enabled=acc.is_main_process, report_to=cfg.runtime.report_to)
    if cfg.resume and ckpt.exists():
        acc.load_state(str(ckpt))
        logger.truncate_after(state.step)
        if acc.is_main_process:
            print(f"ppo: resumed from {ckpt} at step {state.step}")
    ptx = _ptx_iterator(cfg, tokenizer, cfg.rollout.prompts_per_step, cfg.runtime.seed) if cfg.ptx_file else None

    def save_checkpoint() -> None:
        tmp = Path(out) / ".checkpoint.tmp"
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            atomic_save_dir(lambda d: [p.rename(d / p.name) for p in tmp.iterdir()], ckpt)
            tmp.rmdir()
        acc.wait_for_everyone()

    bar = progress(total=cfg.steps, desc=cfg.algorithm, disable=not (cfg.runtime.progress and acc.is_main_process))
    bar.update(state.step)
    unwrapped = {n: acc.unwrap_model(m) for n, m in critics.items()}
    while state.step < cfg.steps:
        t0 = time.time()
        batch = prompt_batch(prompts, state.step, cfg.rollout.prompts_per_step, acc.process_index,
                             acc.num_processes, cfg.runtime.seed)
        rollout = make_experience(cfg, acc.unwrap_model(actor), ref, reward_model, cost_model, unwrapped["reward"],
                                  unwrapped.get("cost"), tokenizer, scorers, batch)
        t_roll = time.time() - t0
        compute_advantages(cfg, rollout, beta)
        metrics = rollout_metrics(rollout, beta, t_roll)
        lam = cfg.shaping_lambda if cfg.algorithm == "reward_shaping" else 0.0
        if lagrange is not None:  # λ first, from the freshest episode costs (as the reference does)
            lagrange.observe(rollout.cost)
            lam = lagrange.update(global_mean(lagrange.episode_cost(), acc))
            metrics |= lagrange.metrics()
        adv = actor_advantages(cfg, rollout, lam)
        metrics |= ppo_update(cfg, acc, actor, critics, optims, scheds, rollout, adv, ptx)
        metrics |= {"train/actor_lr": scheds["actor"].get_last_lr()[0], "time/step_seconds": time.time() - t0}
        state.step += 1
        bar.update(1)
        bar.set_postfix(R=f"{metrics['reward/mean']:.2f}",
                        C=f"{metrics.get('cost/mean', float('nan')):.2f}", lam=f"{lam:.2f}")
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            logger.log(state.step, metrics)
        if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.steps:
            save_checkpoint()
    bar.close()
    save_checkpoint()
    _write_rank_report(Path(out), acc, actor, lagrange, state.step)
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_policy(acc.unwrap_model(actor), tokenizer, Path(out) / "actor")
        print(f"{cfg.algorithm}: {state.step} steps -> {out}/actor"
              + (f" (λ = {lagrange.lam:.3f}, J_c = {lagrange.episode_cost():.3f})" if lagrange else ""))
    return 0
