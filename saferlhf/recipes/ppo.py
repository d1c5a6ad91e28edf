"""PPO-Lagrangian (Safe RLHF), PPO (reward only), reward shaping and pairwise PPO — settings of ONE loop.

Safe RLHF (Dai et al., ICLR 2024; algorithm-reference §2): max_θ E[R(x,y)] s.t. E[C(x,y)] <= d, solved as
min_θ max_{λ>=0} -J_R(θ) + λ·(J_C(θ) - d). Per step:
  1. sample responses y ~ π_old(·|x) for a batch of prompts (KV cache, temperature / top-p);
  2. R(x,y), C(x,y) from the frozen reward and cost models; V^r, V^c from the two critics;
     KL_t = log π_old(a_t) - log π_ref(a_t);
  3. streams r_t = -β·KL_t + 1[t=T]·R and c_t = +β·KL_t + 1[t=T]·C, clamped to ±50;
  4. GAE per stream (γ, λ_GAE); returns G = A + V;
  5. λ update: log λ <- clamp(log λ + lr_λ·λ·(J_c - d), log λ_min, log λ_max), J_c = mean of the last
     `cost_window` episode costs, averaged across ranks so that every rank holds the same λ;
  6. actor: clipped surrogate on Ã = (A^r - λ·A^c)/(1+λ) (λ detached); critics: clipped value losses;
     optional PTX (supervised) loss in the same actor step: L = (L_RL + c_ptx·L_PTX)/2 as the reference.
PPO: a single reward stream with β = 0.02. Reward shaping: R' = R - λ_fixed·C in the reward stream,
no (1+λ) normalisation, β = 0.02. Each algorithm is one row of `saferlhf.rl.ALGORITHMS` (its end score, its
actor advantage, which critics and controllers it needs, its default β), chosen once at set-up; the loop
below has no per-algorithm branch. The models of a run are one `PPOModels` record.
Pairwise PPO (P3O, Wu et al. 2023, arXiv 2310.00212; `pairwise_ppo`, and ours with the Lagrange multiplier,
`pairwise_ppo_lag`): two responses per prompt, no critic, no GAE; KL folded into trajectory scores
s = R - β·KL(y) (or (R - λ·C)/(1+λ) - β·KL(y), λ updated as for PPO-Lag), and the trajectory-wise clipped
objective on the score difference (`losses.pairwise_ppo_loss`: separate clip, or `--joint_clip true`). Its
three stages (no streams, `pairwise_advantages`, `pairwise_update`) are chosen once at set-up like the rest.

Defaults are the paper's / reference's (β 0.01 for PPO-Lag, γ 1, λ_GAE 0.95, ε 0.2, value clip 5, λ_0 1,
lr_λ 0.1, λ_max 5, d 0, window 128, actor lr 1e-5 cosine + 3 % warm-up + wd 0.01 (not on biases and
norms), critic lr 5e-6 constant, Adam betas (0.9, 0.95), grad clip 1, 16 prompts per device, 1 PPO epoch,
1 minibatch, PTX coefficient 16, PTX gradient scaled by 1/2).

Deliberate deviations from the reference implementation:
  1. PPO epochs and minibatches are configurable (the reference used each rollout for exactly one
     gradient step, so clipping never acted). Defaults stay at 1 / 1.
  2. Optional advantage whitening (`whiten_advantages`, off by default) and entropy bonus (`entropy_coef`).
  3. γ and λ_GAE are configurable (hard-coded in the reference).
  4. Position ids are computed from the attention mask, so left-padded prompts get correct positions.
  5. λ, the cost windows (one per rank), optimisers, schedulers, RNG states and the step are checkpointed
     atomically and training resumes exactly (the reference had no resume); prompt and PTX batches are
     pure functions of (seed, rank, batch index), so they need no saved position.
  6. Dropout is disabled in actor and critics (log-probs of π_old and π_θ come from the same function).
  7. Rollouts run in eval mode with the actor's own KV cache; score models may use a different
     tokenizer (responses are re-tokenised as text then).
  8. λ is updated once per rollout, before the PPO epochs; the reference updates it before every
     minibatch step (identical with the default 1 epoch × 1 minibatch). J_c only changes with new
     rollouts, so repeating the step k times per rollout only multiplies lr_λ by k and ties λ's speed
     to the minibatch setting.
  9. λ has a floor `lagrange.min_value` (1e-3; the reference only caps from above). The update is
     multiplicative in λ, so a λ that reached 0.0 could never move again (constraint silently off).
 10. Numerical guards: a NaN / inf anywhere in a rollout, the streams, advantages, returns, losses,
     gradient norms or parameters, or a score with |R| or |C| > `score_limit` (1e6: a broken judge),
     stops the run (`NumericalError`, CLI exit 3) naming the step and the tensor; the last checkpoint
     stays, nothing non-finite is saved. A warning (stderr and `lagrange/threshold_outside_costs`) says
     when d lies outside the range of every episode cost seen.
 11. With PTX the learning-rate schedule counts the optimiser steps actually taken (the reference sizes
     the actor schedule for twice as many steps when PTX is on).
 12. Optional running score normalisation (`--normalize.reward`, `--normalize.cost`, both off as in the
     reference): R -> (R - μ_R)/σ_R (the reference's affine normaliser), C -> C/σ_C (scale only, so the
     safe / unsafe zero stays), statistics over every score so far. The λ update then uses (J_c - d)/σ_C with
     J_c and d in raw units: d keeps its meaning, and λ's step no longer depends on the cost model's scale
     (a cost model scoring ±0.05 moved λ by 4e-4 a step). A warning says when lr·|J_c - d|/σ_C stays below
     1e-3 for 5 updates (λ barely moves).
 13. With LoRA, checkpoints hold the adapters and optimiser states only (`training.Checkpointer`); actor/ is
     merged unless `--lora.merge_on_save false` (then it is the adapter folder, loaded over its base).

Run folder (`saferlhf.tracking.start_run`): a folder that holds a run is refused unless `--resume true`
(the config must match, except run-independent fields, unless `--allow_config_change true`) or
`--overwrite true`; `status.json` says `complete` only once actor/ and the rank reports are written.

Launch: `saferlhf ppo --algorithm ppo_lag --actor_path SFT --reward_model_path RM --cost_model_path CM
--train_prompts prompts.jsonl --out DIR` (one CPU or GPU); `accelerate launch -m saferlhf ppo ...` for DDP /
DeepSpeed (each rank samples its own prompts and PTX batches; J_c is averaged across ranks).
"""

from __future__ import annotations

import dataclasses
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch

from saferlhf.config import option
from saferlhf.errors import NumericalError, UserError
from saferlhf.rl import ALGORITHMS, Algorithm, AlgorithmName
from saferlhf.sampling import SamplingConfig, require_one_per_prompt
from saferlhf.training import (LoraSettings, OptimConfig, PolicyLoraSettings, RuntimeConfig, assert_finite, bad_values,
                               build_optimizer, disable_dropout, make_accelerator, optimizer_step, restore_loop,
                               start_run_on_every_rank)

PTX_SEED_OFFSET = 7_919  # the PTX stream's seed differs from the prompt stream's


@dataclass
class RolloutConfig:
    prompts_per_step: int = option(16, "prompts sampled per RL step per process (one response each), as one batch; "
                                       "how they are sampled: --sampling.*", ge=1)


@dataclass
class LagrangeConfig:
    init: float = option(1.0, "initial λ (reference 1.0)", gt=0)
    lr: float = option(0.1, "SGD learning rate of log λ (reference 0.1)", gt=0)
    max_value: float | None = option(5.0, "cap λ_max (reference script 5.0); none = only the numerical ceiling 1e6",
                                     gt=0)
    min_value: float = option(1e-3, "floor λ_min: λ never reaches 0, where the multiplicative update could not "
                                    "move it again (1/λ falls by about lr·(J_c - d) per step)", gt=0)
    delay_steps: int = option(0, "RL steps before λ starts to move", ge=0)
    threshold: float = option(0.0, "cost threshold d: constraint E[C] <= d (0 = 'on average classified safe')")
    window: int = option(128, "J_c = mean of the last N episode costs (per rank, then averaged across ranks)", ge=1)
    controller: Literal["gradient", "pid", "fixed"] = option(
        "gradient", "how λ moves: gradient (ascent on log λ with lr, the paper's), pid (Stooke et al. 2020: "
                    "kp·Δ + ki·∫Δ + kd·(rise of J_c)+, Δ = J_c - d) or fixed (λ stays at init)")
    kp: float = option(0.5, "pid: proportional gain", ge=0)
    ki: float = option(0.1, "pid: integral gain (the integral starts at init / ki, so λ starts at init)", ge=0)
    kd: float = option(0.0, "pid: derivative gain on the rise of the episode cost", ge=0)


@dataclass
class NormalizeConfig:
    reward: bool = option(False, "standardise R by its running mean and std, (R - μ_R)/σ_R, before the RL maths (the "
                                 "reference's optional affine score normaliser; off there by default)")
    cost: bool = option(False, "scale C by its running std, C/σ_C (no shift: the safe / unsafe zero stays), in the "
                               "cost stream and in the λ update, (J_c - d)/σ_C: d, J_c and the metrics stay in raw "
                               "units; λ's step is then in cost standard deviations, whatever the cost model's scale")


@dataclass
class PPOConfig:
    # the rollouts' sampling fields moved from rollout.* to the shared --sampling.* (saferlhf.sampling)
    __renamed__ = {f"rollout.{name}": f"sampling.{name}"
                   for name in ("max_new_tokens", "max_prompt_length", "temperature", "top_p")}
    __aliases__ = {"lambda": "lagrange"}  # --lambda.controller pid: the multiplier's options by the symbol's name

    algorithm: AlgorithmName = option(
        "ppo_lag", "ppo_lag = Safe RLHF; ppo = reward only; reward_shaping = R - shaping_lambda·C; pairwise_ppo = "
                   "P3O (two responses per prompt, no critic); pairwise_ppo_lag = P3O with the Lagrangian reward")
    actor_path: str = option("", "initial policy (HF causal LM, usually the SFT model); also the frozen reference")
    ref_model_path: str | None = option(None, "frozen KL reference π_ref when it is not the initial policy (e.g. the "
                                              "SFT model in a later round of `saferlhf iterate`); not with LoRA")
    reward_model_path: str = option("", "reward model (score model folder)")
    cost_model_path: str | None = option(None, "cost model (required for ppo_lag / reward_shaping; with ppo only logged)")
    reward_critic_path: str | None = option(None, "reward critic init (default: the reward model)")
    cost_critic_path: str | None = option(None, "cost critic init (default: the cost model)")
    train_prompts: str = option("", "prompt file (jsonl with 'prompt', BeaverTails json, XSTest csv, any CSV / JSON "
                                    "with a prompt column, ...) or world:train (the synthetic world's prompts)")
    world_seed: int = option(0, "world seed for world:* train prompts")
    ptx_file: str | None = option(None, "optional SFT file mixed in as a PTX loss")
    ptx_coef: float = option(16.0, "PTX loss coefficient (reference 16)", ge=0)
    out: str = option("runs/ppo", "output folder: actor/, checkpoint/, metrics.jsonl, config.yaml, status.json")
    steps: int = option(100, "RL steps (each: one rollout batch, then PPO epochs over it)", ge=1)
    ppo_epochs: int = option(1, "passes over each rollout batch (reference: 1)", ge=1)
    num_minibatches: int = option(1, "minibatches per pass (reference: 1)", ge=1)
    kl_coef: float | None = option(None, "β; none = the algorithm's default (0.01 ppo_lag, 0.02 ppo and reward_shaping), "
                                         "resolved before the run starts and saved in config.yaml", ge=0)
    clip_eps: float = option(0.2, "PPO ratio clip ε", gt=0, lt=1)
    value_clip: float = option(5.0, "critic value clip range around V_old", gt=0)
    reward_clamp: float = option(50.0, "clamp of the per-token streams after the KL term", gt=0)
    score_limit: float = option(1e6, "stop when a reward / cost score or a critic value exceeds ±N: a broken judge "
                                     "(finite but absurd scores make the ±reward_clamp clamp meaningless)", gt=0)
    gamma: float = option(1.0, "discount γ", ge=0, le=1)
    gae_lambda: float = option(0.95, "GAE λ", ge=0, le=1)
    whiten_advantages: bool = option(False, "whiten the actor advantage over the batch (off in the reference)")
    entropy_coef: float = option(0.0, "entropy bonus coefficient (none in the reference)", ge=0)
    shaping_lambda: float = option(1.0, "fixed λ of reward shaping (R - λ·C)", ge=0)
    joint_clip: bool = option(False, "pairwise_ppo*: clip the ratio of the two trajectory ratios (P3O's joint clip) "
                                     "instead of each ratio separately")
    lagrange: LagrangeConfig = option(LagrangeConfig(), "Lagrange multiplier (ppo_lag)")
    normalize: NormalizeConfig = option(NormalizeConfig(), "running normalisation of the reward and cost scores "
                                                           "(statistics over every rollout so far, checkpointed)")
    rollout: RolloutConfig = option(RolloutConfig(), "rollout batches")
    sampling: SamplingConfig = option(SamplingConfig(), "how rollouts are sampled (n stays 1: one response per "
                                                        "prompt; batch_size unused: a rollout is one batch)")
    actor_optim: OptimConfig = option(OptimConfig(lr=1e-5, weight_decay=0.01), "actor optimiser")
    lora: PolicyLoraSettings = option(PolicyLoraSettings(), "LoRA actor; the reference policy is then the same base "
                                                            "with the adapters disabled (one base model less)")
    critic_lora: LoraSettings = option(LoraSettings(), "LoRA critics: adapters + a fully trained value head")
    critic_optim: OptimConfig = option(OptimConfig(lr=5e-6, weight_decay=0.0, scheduler="constant", warmup_ratio=0.0),
                                       "critic optimiser")
    save_every: int = option(0, "write a resumable checkpoint every N steps (0 = only at the end)", ge=0)
    resume: bool = option(False, "continue the run in `out` from its checkpoint (from step 0 when it has none)")
    overwrite: bool = option(False, "delete the run already in `out` and start afresh")
    allow_config_change: bool = option(False, "on resume, accept a config that differs from the saved one")
    log_every: int = option(1, "log metrics every N steps", ge=1)
    log_samples: int = option(2, "sampled (prompt, response, reward, cost) rows per logged step in samples.jsonl, to "
                                 "spot reward hacking while training (0 = none)", ge=0)
    runtime: RuntimeConfig = option(RuntimeConfig(), "runtime")


def _set_mode(models, train: bool) -> None:
    """Train mode for the forwards that carry gradients (gradient checkpointing only acts there), eval mode
    for sampling and scoring; with dropout off both compute the same function."""
    for m in models:
        if m is not None:
            m.train(train)


# --------------------------------------------------------------------------- data streams


def stream_indices(n: int, index: int, per_rank: int, rank: int, world: int, seed: int) -> list[int]:
    """Record indices of batch ``index`` of ``rank``: a pure function of its arguments.

    The records form an endless stream of epochs, each a seeded shuffle (``random.Random(seed·1000003 +
    epoch)``); batch ``index`` is the slice of ``world·per_rank`` positions starting at ``index·world·per_rank``,
    and ``rank`` takes its ``per_rank`` positions of it, so ranks never share a position. The stream wraps
    around epochs, so a batch may be larger than ``n`` (records then repeat)."""
    if n <= 0:
        raise ValueError("stream_indices needs at least one record")
    start = (index * world + rank) * per_rank
    orders: dict[int, list[int]] = {}
    out = []
    for j in range(start, start + per_rank):
        epoch, pos = divmod(j, n)
        if epoch not in orders:
            orders[epoch] = list(range(n))
            random.Random(seed * 1_000_003 + epoch).shuffle(orders[epoch])
        out.append(orders[epoch][pos])
    return out


def prompt_batch(prompts: list, step: int, per_step: int, rank: int, world: int, seed: int) -> list:
    """The prompts of ``step`` for ``rank``: epochs of a seeded shuffle, each rank a disjoint slice."""
    return [prompts[i] for i in stream_indices(len(prompts), step, per_step, rank, world, seed)]


def ptx_batch(examples: list, index: int, batch_size: int, rank: int, world: int, seed: int, pad_id: int) -> dict:
    """PTX batch ``index`` of ``rank`` (``stream_indices`` with its own seed): a pure function of (seed, rank,
    index), so a resumed run draws exactly the batches of an uninterrupted one without a saved position,
    ranks draw disjoint examples, and a file with fewer records than ``batch_size`` wraps around."""
    from saferlhf.batching import sft_batch

    idx = stream_indices(len(examples), index, batch_size, rank, world, seed + PTX_SEED_OFFSET)
    return sft_batch([examples[i] for i in idx], pad_id)


def n_minibatches(cfg: "PPOConfig", batch_size: int) -> int:
    return max(1, min(cfg.num_minibatches, batch_size))


# --------------------------------------------------------------------------- one RL step


@dataclass
class FrozenScorer:
    """A frozen reward or cost model with its tokenizer; ``same_tokenizer``: it reads the actor's token ids."""

    model: torch.nn.Module
    tokenizer: object
    same_tokenizer: bool

    @torch.no_grad()
    def end_scores(self, samples, prompts: list[str], max_prompt_length: int) -> torch.Tensor:
        """R(x, y) or C(x, y) [B] at each sequence's last token. With a foreign tokenizer the texts are
        re-tokenised by `score_texts` as in training, the prompt cut to ``max_prompt_length`` tokens as the
        actor's was, eos only after responses that ended (not after ones cut off at max_new_tokens), and no
        other cut than the score model's own context length."""
        if self.same_tokenizer:
            return self.model(samples.input_ids, samples.attention_mask).end_scores.float()
        from saferlhf.models.score import context_length, score_texts

        return score_texts(self.model, self.tokenizer, prompts, samples.responses, ended=samples.ended,
                           max_prompt_length=max_prompt_length, max_length=context_length(self.model),
                           batch_size=len(prompts), limit=float("inf"))  # check_rollout applies score_limit


@dataclass
class PPOModels:
    """Every model of one run. ``critics`` maps a stream ("reward", and "cost" for PPO-Lag) to its critic;
    ``judges`` maps "reward" (and "cost" when a cost model is given) to the frozen scorer."""

    actor: torch.nn.Module
    ref: torch.nn.Module
    tokenizer: object
    critics: dict
    judges: dict

    def trained(self) -> dict:
        """The trained models by optimiser name: actor, then one critic per stream."""
        return {"actor": self.actor} | self.critics


def fused_update(cfg: PPOConfig, batch_size: int) -> bool:
    """One PPO epoch over one minibatch (the default, as the reference): at the update π_old = π_θ and
    V_old = V, so the rollout's actor and critic forwards, kept with their graphs, are the update's
    forwards (1 actor + 1 forward per critic saved per step; same maths). Single-process runs only: with
    several processes the update's forwards must go through the DDP-wrapped models. Works with gradient
    checkpointing (those forwards run in train mode, so they are checkpointed as the update's are)."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return cfg.ppo_epochs == 1 and n_minibatches(cfg, batch_size) == 1 and not distributed


@torch.no_grad()
def make_experience(cfg: PPOConfig, models: PPOModels, generator, prompts: list[str], step: int | None = None,
                    on_phase: Callable[[str], None] | None = None):
    """Steps 1-2: sample (``generator``: a `saferlhf.rollout.Generator` over the actor), then score every
    sequence with the reference, the judges and the critics (``on_phase("score")`` between the two).

    With `fused_update`, the actor's logits and the critics' values are computed with gradients (in train
    mode) and kept in ``rollout.live`` for `ppo_update`; their detached copies are log π_old and V_old.
    """
    from saferlhf.rollout import Rollout, action_logits, critic_values, gather_logprobs

    try:
        samples = generator.sample(prompts)
    except NumericalError as e:
        raise NumericalError(f"step {step}: {e}", step, e.tensor) from None
    if on_phase is not None:
        on_phase("score")
    ids, mask, P, rmask = samples.input_ids, samples.attention_mask, samples.prompt_length, samples.response_mask
    actions = ids[:, P:]
    actor, critics = models.actor, models.critics
    live = {} if fused_update(cfg, ids.shape[0]) else None
    _set_mode([actor, *critics.values()], train=live is not None)
    with torch.set_grad_enabled(live is not None):
        logits = action_logits(actor, ids, mask, P)
        logprobs = gather_logprobs(logits, actions)
        values = {name: critic_values(critic, ids, mask, P) for name, critic in critics.items()}
    if live is not None:
        live = {"logits": logits, "logprobs": logprobs} | values
        logprobs, values = logprobs.detach(), {k: v.detach() for k, v in values.items()}
    del logits  # [B, N, V]: kept only in `live`
    ref_logprobs = gather_logprobs(action_logits(models.ref, ids, mask, P), actions)
    scores = {name: judge.end_scores(samples, list(prompts), cfg.sampling.max_prompt_length)
              for name, judge in models.judges.items()}
    return Rollout(input_ids=ids, attention_mask=mask, prompt_length=P, response_mask=rmask, logprobs=logprobs,
                   ref_logprobs=ref_logprobs, reward=scores["reward"], cost=scores.get("cost"),
                   reward_values=values.get("reward"), cost_values=values.get("cost"),
                   prompts=list(prompts), responses=samples.responses, live=live)


def check_scores(step: int | None, name: str, scores: torch.Tensor | None, source: str, limit: float) -> None:
    """Stop on a broken judge or critic: ``NumericalError`` when a score is NaN / inf or |score| > ``limit``.

    A finite but absurd score (say 1e30) would be clamped to ±reward_clamp in the streams and look like
    a normal reward, while the critics (initialised from the same model) and every square of it blow up:
    training on it is meaningless, so it is refused like a NaN."""
    found = None if scores is None else bad_values(scores, limit)
    if found is None:
        return
    n_bad, _, example = found
    raise NumericalError(f"step {step}: {source} returned {example:g} for {n_bad} of {scores.numel()} values "
                         f"(|value| must be finite and <= score_limit = {limit:g}): the model is broken or the "
                         "wrong model; training stopped, the last checkpoint is kept", step, name)


def check_rollout(cfg: PPOConfig, rollout, step: int | None) -> None:
    """Guards after steps 1-2: R and C, critic values (finite and within ``score_limit``), log-probs (finite)."""
    check_scores(step, "reward", rollout.reward, f"the reward model {cfg.reward_model_path}", cfg.score_limit)
    check_scores(step, "cost", rollout.cost, f"the cost model {cfg.cost_model_path}", cfg.score_limit)
    check_scores(step, "reward_values", rollout.reward_values,
                 f"the reward critic (from {cfg.reward_critic_path or cfg.reward_model_path})", cfg.score_limit)
    check_scores(step, "cost_values", rollout.cost_values,
                 f"the cost critic (from {cfg.cost_critic_path or cfg.cost_model_path})", cfg.score_limit)
    assert_finite(step, logprobs=rollout.logprobs, ref_logprobs=rollout.ref_logprobs)


def normalize_scores(rollout, normalizers: dict, acc=None) -> dict[str, float]:
    """``--normalize.*``: update each running normaliser (`saferlhf.rl.RunningMeanStd`) with this step's scores,
    gathered from every rank so that all ranks hold the same statistics, then set ``rollout.norm_reward`` =
    (R - μ_R)/σ_R and ``rollout.norm_cost`` = C/σ_C. Returns their reward/ and cost/running_* metrics."""
    def gathered(t: torch.Tensor) -> torch.Tensor:
        return acc.gather(t) if acc is not None and acc.num_processes > 1 else t

    out: dict[str, float] = {}
    if "reward" in normalizers:
        rms = normalizers["reward"]
        rms.update(gathered(rollout.reward))
        rollout.norm_reward = rms.standardize(rollout.reward)
        out |= {"reward/running_mean": rms.mean, "reward/running_std": rms.std}
    if "cost" in normalizers and rollout.cost is not None:
        rms = normalizers["cost"]
        rms.update(gathered(rollout.cost))
        rollout.norm_cost = rms.scale(rollout.cost)
        out |= {"cost/running_std": rms.std}
    return out


def compute_advantages(cfg: PPOConfig, algo: Algorithm, rollout, beta: float, step: int | None = None) -> None:
    """Steps 3-4: per-token streams (opposite KL signs) and GAE per stream, written into ``rollout``. The
    reward stream ends in ``algo.end_score`` (R, or R - λ·C for reward shaping); the cost stream exists
    when ``algo.cost_critic``. R and C are the normalised scores with ``--normalize.*`` (`normalize_scores`).
    Every stream, advantage and return must be finite (``NumericalError``)."""
    from saferlhf.rl import gae, kl_per_token, token_rewards

    kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs)
    m = rollout.response_mask
    end_reward = algo.end_score(rollout.rl_reward, rollout.rl_cost, cfg.shaping_lambda)
    r = token_rewards(kl, end_reward, m, beta, sign=-1, clamp=cfg.reward_clamp)
    rollout.reward_advantages, rollout.reward_returns = gae(r, rollout.reward_values, m, cfg.gamma, cfg.gae_lambda)
    assert_finite(step, reward_stream=r, reward_advantages=rollout.reward_advantages,
                  reward_returns=rollout.reward_returns)
    if algo.cost_critic:
        c = token_rewards(kl, rollout.rl_cost, m, beta, sign=+1, clamp=cfg.reward_clamp)
        rollout.cost_advantages, rollout.cost_returns = gae(c, rollout.cost_values, m, cfg.gamma, cfg.gae_lambda)
        assert_finite(step, cost_stream=c, cost_advantages=rollout.cost_advantages,
                      cost_returns=rollout.cost_returns)


def actor_advantages(cfg: PPOConfig, algo: Algorithm, rollout, lam: float) -> torch.Tensor:
    """Step 5: ``algo.actor_advantage`` (Ã = (A^r - λ·A^c)/(1+λ) for PPO-Lag, A^r otherwise), detached;
    optionally whitened."""
    from saferlhf.rl import masked_whiten

    adv = algo.actor_advantage(rollout.reward_advantages, rollout.cost_advantages, lam)
    if cfg.whiten_advantages:
        adv = masked_whiten(adv, rollout.response_mask)
    return adv.detach()


def ppo_update(cfg: PPOConfig, acc, actor, critics: dict, optims: dict, scheds: dict, rollout, adv,
               ptx: Callable[[int], dict] | None, step: int | None = None) -> dict[str, float]:
    """Step 6: `ppo_epochs` × `num_minibatches` clipped updates of the actor and each critic.

    ``ptx(k)`` gives the PTX batch of the k-th update of this step (or None: no PTX). Every loss must be
    finite, and `optimizer_step` refuses a non-finite gradient and checks the parameters after the update."""
    from saferlhf.losses import critic_loss, ppo_actor_loss
    from saferlhf.rl import explained_variance
    from saferlhf.rollout import action_logits, critic_values, gather_logprobs

    B, P = rollout.input_ids.shape[0], rollout.prompt_length
    live, rollout.live = rollout.live, None  # graph-carrying rollout forwards (fused_update), used once
    _set_mode([actor, *critics.values()], train=True)
    stats: dict[str, list[float]] = {}
    k = 0
    for _ in range(cfg.ppo_epochs):
        perm = torch.randperm(B)
        for idx in perm.chunk(n_minibatches(cfg, B)):
            mb, mb_adv = rollout.select(idx), adv[idx.to(adv.device)]
            if live is not None:
                i = idx.to(live["logits"].device)
                logits, logp = live["logits"][i], live["logprobs"][i]
            else:
                logits = action_logits(actor, mb.input_ids, mb.attention_mask, P)
                logp = gather_logprobs(logits, mb.response_ids)
            loss, diag = ppo_actor_loss(logp, mb.logprobs, mb_adv, mb.response_mask, cfg.clip_eps)
            actor_step(cfg, acc, actor, optims, scheds, loss, diag, logits, mb.response_mask, ptx, k, step, stats)
            for name, critic in critics.items():
                values = (live[name][idx.to(live[name].device)] if live is not None
                          else critic_values(critic, mb.input_ids, mb.attention_mask, P))
                old, ret = getattr(mb, f"{name}_values"), getattr(mb, f"{name}_returns")
                vloss, vdiag = critic_loss(values, old, ret, mb.response_mask, cfg.value_clip)
                assert_finite(step, **{f"{name}_critic_loss": vloss})
                acc.backward(vloss)
                optimizer_step(acc, critic.parameters(), optims[name], scheds[name], cfg.critic_optim.grad_clip,
                               step=step, what=f"{name} critic")
                stats.setdefault(f"train/{name}_critic_loss", []).append(vdiag["loss"])
            k += 1
    out = {key: sum(v) / len(v) for key, v in stats.items()}
    for name in critics:
        out[f"train/{name}_explained_variance"] = explained_variance(
            getattr(rollout, f"{name}_values"), getattr(rollout, f"{name}_returns"), rollout.response_mask)
    return out


def actor_step(cfg: PPOConfig, acc, actor, optims: dict, scheds: dict, loss: torch.Tensor, diag: dict, logits, mask,
               ptx: Callable[[int], dict] | None, k: int, step: int | None, stats: dict) -> None:
    """The actor's optimiser step on its RL ``loss``: entropy bonus, PTX term (``ptx(k)``), finiteness guards;
    the step's diagnostics are appended to ``stats`` as train/actor_*."""
    from saferlhf.losses import actor_ptx_objective, entropy_from_logits, sft_loss
    from saferlhf.rollout import labelled_logits

    entropy = entropy_from_logits(logits, mask)
    if cfg.entropy_coef:
        loss = loss - cfg.entropy_coef * entropy
    diag["entropy"] = float(entropy.detach())
    if ptx is not None:
        b = {key: v.to(acc.device) for key, v in ptx(k).items()}
        ptx_logits, positions = labelled_logits(actor, b)
        ptx_loss, _ = sft_loss(ptx_logits, b["labels"], positions)
        assert_finite(step, ptx_loss=ptx_loss)
        loss = actor_ptx_objective(loss, ptx_loss, cfg.ptx_coef)
        diag["ptx_loss"] = float(ptx_loss.detach())
    assert_finite(step, actor_loss=loss)
    acc.backward(loss)
    diag["grad_norm"] = optimizer_step(acc, actor.parameters(), optims["actor"], scheds["actor"],
                                       cfg.actor_optim.grad_clip, step=step, what="actor")
    for key, v in diag.items():
        stats.setdefault(f"train/actor_{key}", []).append(v)


# --------------------------------------------------------------------------- pairwise PPO (P3O): no critic


def no_streams(cfg: PPOConfig, algo: Algorithm, rollout, beta: float, step: int | None = None) -> None:
    """Pairwise PPO has no per-token streams or GAE: its scores need this step's λ (`pairwise_advantages`)."""


def pairwise_advantages(cfg: PPOConfig, algo: Algorithm, rollout, lam: float) -> torch.Tensor:
    """[B/2, 2] KL-regularised trajectory scores of the response pairs (rows 2j, 2j + 1 answer one prompt),
    `saferlhf.rl.pairwise_scores`, detached."""
    from saferlhf.rl import kl_per_token, pairwise_scores

    kl_seq = (kl_per_token(rollout.logprobs, rollout.ref_logprobs) * rollout.response_mask).sum(-1)
    s = pairwise_scores(rollout.rl_reward, rollout.rl_cost, lam, kl_seq, cfg.kl_coef, algo.adaptive_lambda)
    return s.view(-1, 2).detach()


def pairwise_update(cfg: PPOConfig, acc, actor, critics: dict, optims: dict, scheds: dict, rollout, scores,
                    ptx: Callable[[int], dict] | None, step: int | None = None) -> dict[str, float]:
    """`ppo_epochs` × `num_minibatches` updates of the actor on `pairwise_ppo_loss`, minibatches of whole pairs."""
    from saferlhf.losses import pairwise_ppo_loss
    from saferlhf.rollout import action_logits, gather_logprobs

    n_pairs, P = rollout.input_ids.shape[0] // 2, rollout.prompt_length
    live, rollout.live = rollout.live, None
    _set_mode([actor], train=True)
    stats: dict[str, list[float]] = {}
    k = 0
    for _ in range(cfg.ppo_epochs):
        for pidx in torch.randperm(n_pairs).chunk(n_minibatches(cfg, n_pairs)):
            rows = torch.stack([2 * pidx, 2 * pidx + 1], 1).reshape(-1)
            mb = rollout.select(rows)
            if live is not None:
                i = rows.to(live["logits"].device)
                logits, logp = live["logits"][i], live["logprobs"][i]
            else:
                logits = action_logits(actor, mb.input_ids, mb.attention_mask, P)
                logp = gather_logprobs(logits, mb.response_ids)
            m = mb.response_mask
            new, old = (logp * m).sum(-1).view(-1, 2), (mb.logprobs * m).sum(-1).view(-1, 2)
            loss, diag = pairwise_ppo_loss(new, old, scores[pidx.to(scores.device)], cfg.clip_eps, cfg.joint_clip)
            actor_step(cfg, acc, actor, optims, scheds, loss, diag, logits, m, ptx, k, step, stats)
            k += 1
    return {key: sum(v) / len(v) for key, v in stats.items()}


def rollout_metrics(rollout, beta: float, seconds: float, threshold: float = 0.0) -> dict[str, float]:
    """rollout/, reward/ and cost/ metrics of one batch (means over the local batch; the loop averages them
    across ranks before logging). ``cost/violation_rate``: the share of responses with cost above the
    threshold d (the constraint's own level, not 0)."""
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
                "cost/violation_rate": float((rollout.cost > threshold).float().mean())}
    return out


# --------------------------------------------------------------------------- set-up helpers


def _load_ptx_records(cfg: PPOConfig) -> list:
    """The PTX file's (prompt, response) records, read before any model loads; none is a ``UserError``."""
    from saferlhf.data.loaders import load_sft_records

    if not cfg.ptx_file:
        return []
    records = list(load_sft_records(cfg.ptx_file))
    if not records:
        raise UserError(f"ppo: ptx_file {cfg.ptx_file} holds no (prompt, response) records",
                        hint="give an SFT file, or leave ptx_file unset to train without PTX")
    return records


def lambda_controller(lc: LagrangeConfig):
    """The ``LambdaController`` of ``lagrange.controller`` (saferlhf.rl)."""
    from saferlhf.rl import FixedController, GradientController, PIDController

    if lc.controller == "pid":
        return PIDController(lc.kp, lc.ki, lc.kd, init=lc.init, max_value=lc.max_value)
    return FixedController() if lc.controller == "fixed" else GradientController(lc.lr)


def _write_rank_report(out: Path, acc, actor, lagrange, step: int) -> None:
    """Each rank records its λ, J_c and a checksum of its actor weights: ranks must agree exactly."""
    from saferlhf.files import atomic_write_json

    with torch.no_grad():
        checksum = sum(float(p.double().sum()) for p in acc.unwrap_model(actor).parameters())
    atomic_write_json(out / "ranks" / f"rank{acc.process_index}.json",
                      {"rank": acc.process_index, "num_processes": acc.num_processes, "step": step,
                       "lambda": lagrange.lam if lagrange else None,
                       "log_lambda": lagrange.log_lambda if lagrange else None,
                       "episode_cost_local": lagrange.episode_cost() if lagrange else None,
                       "actor_checksum": checksum})


def _check(cfg: PPOConfig) -> None:
    if not cfg.actor_path or not cfg.reward_model_path or not cfg.train_prompts:
        raise UserError("ppo: actor_path, reward_model_path and train_prompts are required")
    require_one_per_prompt(cfg.sampling, "ppo", "one response per prompt; rollout.prompts_per_step sets the batch")
    if ALGORITHMS[cfg.algorithm].needs_cost_model and not cfg.cost_model_path:
        raise UserError(f"ppo: algorithm={cfg.algorithm} needs cost_model_path")
    if cfg.normalize.cost and not cfg.cost_model_path:
        raise UserError("ppo: normalize.cost needs cost_model_path (there is no cost to normalise)")
    lc = cfg.lagrange
    if lc.max_value is not None and lc.max_value <= lc.min_value:
        raise UserError(f"ppo: lagrange.max_value ({lc.max_value:g}) must be > lagrange.min_value ({lc.min_value:g})")
    from saferlhf.models.hf import check_model_roles

    if cfg.ref_model_path and cfg.lora.enabled:
        raise UserError("ppo: ref_model_path does not combine with LoRA (the LoRA reference is the actor's base with "
                        "its adapters off)")
    # critics may start from any backbone or score model: their kind is not checked
    check_model_roles(cfg, {"actor_path": "policy", "ref_model_path": "policy", "reward_model_path": "reward",
                            "cost_model_path": "cost", "reward_critic_path": None, "cost_critic_path": None})


# --------------------------------------------------------------------------- the loop


def log_samples(path: Path, step: int, rollout, n: int) -> None:
    """Append the first ``n`` (prompt, response, reward, cost) rows of this step's rollout to ``path``."""
    from saferlhf.data.schema import prompt_json
    from saferlhf.files import dumps

    rows = [{"step": step, "prompt": prompt_json(rollout.prompts[i]), "response": rollout.responses[i],
             "reward": float(rollout.reward[i]),
             "cost": None if rollout.cost is None else float(rollout.cost[i])}
            for i in range(min(n, len(rollout.prompts)))]
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(dumps(r) + "\n" for r in rows))


def trim_samples(path: Path, step: int) -> None:
    """Keep the sample rows of steps <= ``step`` (those after a resumed checkpoint are sampled again)."""
    import json

    from saferlhf.files import atomic_write_text

    if path.exists():
        lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        kept = [x for x in lines if _step_of(x, json) <= step]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(x + "\n" for x in kept))


def _step_of(line: str, json) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return 1 << 62  # a torn last line: dropped


def load_models(cfg: PPOConfig, algo: Algorithm, device) -> PPOModels:
    """Trained actor and critics; frozen reference and judges. Gradient checkpointing (actor and critics) acts
    in the update's train-mode forwards; sampling runs in eval mode with the KV cache."""
    from saferlhf.models.policy import load_policy
    from saferlhf.models.score import ScoreModel
    from saferlhf.models.tokenizers import load_tokenizer

    from saferlhf.models.lora import AdaptersDisabled, apply_lora_settings

    gc = cfg.runtime.gradient_checkpointing
    actor, tokenizer = load_policy(cfg.actor_path, gradient_checkpointing=gc)
    if cfg.lora.enabled:  # LoRA actor; the reference is the same base with the adapters off
        use_cache = actor.config.use_cache
        actor = apply_lora_settings(actor, cfg.lora)
        ref = AdaptersDisabled(actor)
        actor.config.use_cache = use_cache
    else:
        ref, ref_tokenizer = load_policy(cfg.ref_model_path or cfg.actor_path)
        if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise UserError(f"ppo: ref_model_path {cfg.ref_model_path} has another tokenizer than actor_path "
                            f"{cfg.actor_path}; the KL reference must read the actor's token ids")
        actor.config.use_cache = ref.config.use_cache  # the saved actor keeps its own setting
    judges = {}
    for name, path in (("reward", cfg.reward_model_path), ("cost", cfg.cost_model_path)):
        if path:
            stok = load_tokenizer(path, padding_side="right")
            judges[name] = FrozenScorer(ScoreModel.from_pretrained(path), stok, stok.get_vocab() == tokenizer.get_vocab())
    critic_kw = dict(score_type="critic", gradient_checkpointing=gc, allow_new_head=True)  # any backbone
    critics = {} if algo.pairwise else {
        "reward": ScoreModel.from_pretrained(cfg.reward_critic_path or cfg.reward_model_path, **critic_kw)}
    if algo.cost_critic:
        critics["cost"] = ScoreModel.from_pretrained(cfg.cost_critic_path or cfg.cost_model_path, **critic_kw)
    critics = {n: apply_lora_settings(c, cfg.critic_lora) for n, c in critics.items()}  # head fully trained
    for m in [actor, *critics.values()]:
        disable_dropout(m)
    for m in [*([] if cfg.lora.enabled else [ref]), *(j.model for j in judges.values())]:
        m.eval().requires_grad_(False).to(device)
    return PPOModels(actor=actor, ref=ref, tokenizer=tokenizer, critics=critics, judges=judges)


def prepare_trained(acc, models: PPOModels, optims: dict, scheds: dict) -> None:
    """``accelerate.prepare`` every trained model with its optimiser and schedule, by name, in place."""
    trained = models.trained()
    names = list(trained)
    prepared = acc.prepare(*(trained[n] for n in names), *(optims[n] for n in names), *(scheds[n] for n in names))
    k = len(names)
    for i, name in enumerate(names):
        trained[name], optims[name], scheds[name] = prepared[i], prepared[k + i], prepared[2 * k + i]
    models.actor = trained["actor"]
    models.critics = {n: trained[n] for n in names if n != "actor"}


def run(cfg: PPOConfig) -> int:
    from saferlhf.data.formatting import encode_example
    from saferlhf.data.prompt_source import prompt_texts
    from saferlhf.files import fault_point
    from saferlhf.models.policy import save_policy
    from saferlhf.rl import LagrangeMultiplier, RunningMeanStd, global_mean, global_means
    from saferlhf.rollout import HFGenerator
    from saferlhf.tracking import MetricsLogger, finish_run, progress

    _check(cfg)
    algo = ALGORITHMS[cfg.algorithm]  # the algorithm is chosen once, here
    if cfg.kl_coef is None:  # resolved before the run starts, so config.yaml records the β actually used
        cfg = dataclasses.replace(cfg, kl_coef=algo.kl_coef)
    beta = cfg.kl_coef
    acc = make_accelerator(cfg.runtime)
    prompts = prompt_texts(cfg.train_prompts, cfg.world_seed)  # data validated before any model loads
    ptx_records = _load_ptx_records(cfg)
    out = start_run_on_every_rank(acc, cfg, "ppo")
    main = acc.is_main_process

    models = load_models(cfg, algo, acc.device)
    tokenizer = models.tokenizer
    sp = cfg.sampling  # PTX examples get the actor's budgets: the prompt as sampled, the response as generated
    ptx_examples = [encode_example(tokenizer, r.prompt, r.response, sp.max_prompt_length + sp.max_new_tokens + 1,
                                   max_prompt_length=sp.max_prompt_length) for r in ptx_records]

    # Optimisers: one per trained model; schedules count optimiser steps.
    per_step = cfg.ppo_epochs * n_minibatches(cfg, cfg.rollout.prompts_per_step)  # optimiser steps per RL step
    optims, scheds = {}, {}
    for name, model in models.trained().items():
        optim_cfg = cfg.actor_optim if name == "actor" else cfg.critic_optim
        optims[name], scheds[name] = build_optimizer(model, optim_cfg, cfg.steps * per_step)
    prepare_trained(acc, models, optims, scheds)
    actor, critics = models.actor, models.critics
    lagrange = None
    if algo.adaptive_lambda:
        lc = cfg.lagrange
        lagrange = LagrangeMultiplier(init=lc.init, lr=lc.lr, max_value=lc.max_value, delay_steps=lc.delay_steps,
                                      threshold=lc.threshold, window=lc.window, min_value=lc.min_value,
                                      controller=lambda_controller(lc))
    normalizers = {name: RunningMeanStd() for name, on in (("reward", cfg.normalize.reward),
                                                           ("cost", cfg.normalize.cost)) if on}
    generator = HFGenerator(acc.unwrap_model(actor), tokenizer, cfg.sampling)
    # the rollout forwards run on the unwrapped models; the update's go through the (DDP) wrappers
    rollout_models = PPOModels(actor=acc.unwrap_model(actor), ref=models.ref, tokenizer=tokenizer,
                               critics={n: acc.unwrap_model(m) for n, m in critics.items()}, judges=models.judges)

    # Checkpoint: models, optimisers, schedules, RNG states and the step (accelerate), plus each rank's own
    # λ state (its cost window differs from the other ranks'). Prompt / PTX batches need no position.
    logger = MetricsLogger(out, enabled=main, report_to=cfg.runtime.report_to)
    state, ckpt, mine = restore_loop(acc, out, logger, cfg.resume, "ppo")
    if main:
        trim_samples(out / "samples.jsonl", state.step)  # a resumed run rewrites the steps after its checkpoint
    if mine is not None and lagrange is not None:
        lagrange.load_state_dict(mine["lagrange"])
    for name, rms in normalizers.items():
        if mine is not None and name in (mine.get("normalizers") or {}):
            rms.load_state_dict(mine["normalizers"][name])

    def rank_state() -> dict:
        return {"lagrange": lagrange.state_dict() if lagrange else None,
                "normalizers": {name: rms.state_dict() for name, rms in normalizers.items()}}

    # the step's three stages, chosen once: streams + GAE, the actor's advantage, the update
    streams, advantages, update = ((no_streams, pairwise_advantages, pairwise_update) if algo.pairwise else
                                   (compute_advantages, actor_advantages, ppo_update))
    bar = progress(total=cfg.steps, desc=cfg.algorithm, disable=not (cfg.runtime.progress and main))
    bar.update(state.step)

    def phase(name: str) -> None:  # where the step is: "rollout" (sampling), "score" (judges, critics), "update"
        bar.set_description(f"{cfg.algorithm}: {name}", refresh=True)

    warned: set[str] = set()
    while state.step < cfg.steps:
        t0, step = time.time(), state.step + 1  # `step`: the 1-based number this step is logged under
        batch = prompt_batch(prompts, state.step, cfg.rollout.prompts_per_step, acc.process_index,
                             acc.num_processes, cfg.runtime.seed)
        if algo.pairwise:  # two responses per prompt, in adjacent rows
            batch = [p for p in batch for _ in (0, 1)]
        phase("rollout")
        rollout = make_experience(cfg, rollout_models, generator, batch, step, on_phase=phase)
        t_roll = time.time() - t0
        check_rollout(cfg, rollout, step)
        norm_metrics = normalize_scores(rollout, normalizers, acc)
        streams(cfg, algo, rollout, beta, step)
        metrics = rollout_metrics(rollout, beta, t_roll, cfg.lagrange.threshold) | norm_metrics
        lam = 0.0  # the actor advantage's λ: adaptive for PPO-Lag, unused otherwise
        if lagrange is not None:  # λ first, from the freshest episode costs (as the reference does)
            lagrange.observe(rollout.cost)
            cost_scale = normalizers["cost"].std if "cost" in normalizers else 1.0  # d and J_c stay raw
            lam = lagrange.update(global_mean(lagrange.episode_cost(), acc), cost_scale=cost_scale)
            metrics |= lagrange.metrics()
            for kind, warning in (("threshold", lagrange.threshold_warning()), ("stall", lagrange.stall_warning())):
                if warning and main and kind not in warned:  # each kind once per run
                    print(f"ppo: warning: {warning}" + (" (lagrange.threshold)" if kind == "threshold" else ""),
                          file=sys.stderr)
                    warned.add(kind)
        adv = advantages(cfg, algo, rollout, lam)
        assert_finite(step, actor_advantages=adv)
        ptx = None
        if ptx_examples:
            ptx = (lambda u, base=state.step * per_step: ptx_batch(
                ptx_examples, base + u, cfg.rollout.prompts_per_step, acc.process_index, acc.num_processes,
                cfg.runtime.seed, tokenizer.pad_token_id))
        phase("update")
        metrics |= update(cfg, acc, actor, critics, optims, scheds, rollout, adv, ptx, step)
        metrics |= {"train/actor_lr": scheds["actor"].get_last_lr()[0], "time/step_seconds": time.time() - t0}
        state.step += 1
        bar.update(1)
        bar.set_postfix(R=f"{metrics['reward/mean']:.2f}",
                        C=f"{metrics.get('cost/mean', float('nan')):.2f}", lam=f"{lam:.2f}")
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            logger.log(state.step, global_means(metrics, acc))  # every rank calls it: a collective
            if main and cfg.log_samples:
                log_samples(out / "samples.jsonl", state.step, rollout, cfg.log_samples)
        fault_point("step")
        if cfg.save_every and state.step % cfg.save_every == 0 and state.step < cfg.steps:
            ckpt.save(rank_state())
    bar.close()

    # Outputs, then the status (written last): checkpoint, rank reports, actor/.
    ckpt.save(rank_state())
    _write_rank_report(out, acc, actor, lagrange, state.step)
    acc.wait_for_everyone()
    if main:
        save_policy(acc.unwrap_model(actor), tokenizer, out / "actor", merge=cfg.lora.merge_on_save)
        print(f"{cfg.algorithm}: {state.step} steps -> {out}/actor"
              + (f" (λ = {lagrange.lam:.3f}, J_c = {lagrange.episode_cost():.3f})" if lagrange else ""))
    acc.wait_for_everyone()
    finish_run(out, is_main=main, steps=state.step,
               **({"lambda": lagrange.lam, "episode_cost": lagrange.episode_cost()} if lagrange else {}))
    return 0
