"""Direct Preference Optimization and its safety-aware variants (algorithm-reference §4 and §8).

DPO (Rafailov et al. 2023, arXiv 2305.18290), β = 0.1:

    L = -mean log σ(β·[(log π(y_w|x) - log π_ref(y_w|x)) - (log π(y_l|x) - log π_ref(y_l|x))])

with log π(y|x) summed over EVERY response token, the first one and the end token included (the reference
implementation slices its log-probs one token off; ours are tested against a naive per-token loop).

Variants (`--variant`; each a row of `VARIANTS`: which pairs, which loss):
  dpo            helpfulness preferences (PKU-SafeRLHF better_response_id; HH-RLHF / TRL: chosen)
  harmless       harmlessness preferences (PKU-SafeRLHF safer_response_id; HH-RLHF harmless-base / TRL: chosen)
  safe_filtered  helpfulness preferences restricted to pairs whose preferred response is labelled safe
  safedpo        SafeDPO (Kim et al. 2025, arXiv 2505.20065): helpfulness pairs in safety-aware order (a safe
                 response is preferred to an unsafe one whatever the helpfulness label), loss
                 -log σ(m - Δ·(h_l - h_w)) with h = 1 for an unsafe response and the safety margin Δ (`delta`)
  sacpo          SACPO (Wachi et al. 2024, arXiv 2404.11049), stepwise: DPO on helpfulness preferences (β), then
                 DPO on harmlessness preferences from that model, which is also the second stage's reference
                 (β = `safety_beta`); `--sacpo_order safe_first` runs the stages the other way round

Deviations / choices:
1. Reference log-probs are computed once before training (`precompute_ref`, the same numbers as on the fly:
   the reference is frozen) with the reference model on the accelerator, each rank its share of the pairs
   (gathered), and the model is then freed; with LoRA and no `ref_model_path` the reference is the starting
   model (the adapters start at zero) and on the fly it is the actor with its adapters disabled, so one base
   is held either way. On the fly, the reference reads the policy's own (packed) batch. Dropout is off in the
   model (`--lora.dropout` still acts on the adapters), so at step 1 the policy is the reference: loss ln 2.
   A `ref_model_path` with another tokenizer than the policy's is refused before training.
2. Training batches are padding-free (`saferlhf.packing`): the 2B sequences of a batch in one row, the prompt
   shared by chosen and rejected computed once, attention restricted to each sequence, the LM head only on
   the response-predicting positions. Padded batches when the model does not give the same log-probs so
   (checked at start on four pairs).
3. Bad pairs fail at load time with file, line and field: identical or empty responses (HH-RLHF keeps them as
   warnings for score models; they carry no DPO signal), and missing safety labels for `safe_filtered` and
   `safedpo`. A response cut at `max_length` gets no end token (it did not end); pairs whose two token
   sequences are identical after that cut are left out (counted on stderr; none left to train on is an error),
   and so is an `eval_ratio` split with no held-out pair.
4. Exact resume as for SFT (`--save_every`, `--resume true`); SACPO's stages are run folders of their own
   (`out/stage1_*`, `out/stage2_*`), a finished stage is not run again. SACPO's first stage is regularised
   towards `ref_model_path` (default: `model_path`); the second towards the first stage's model.
5. What could not be checked against the SafeDPO paper here (no internet access to its text): the handling
   of pairs whose two responses are both unsafe (kept, in helpfulness order, with no offset) and the default
   Δ = 2; SACPO's default β_safety = 0.1 is a starting value, not the paper's tuned one.

Outputs in `out/`: `model/` (the policy, LoRA merged), `metrics.jsonl`, `eval.json` (held-out implicit-reward
accuracy and margin), `config.yaml`, `checkpoint/`, `status.json`.

Launch: `saferlhf dpo --model_path SFT --train_file F --variant safedpo --out DIR` (one CPU or GPU);
`accelerate launch -m saferlhf dpo ...` for several processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch

from saferlhf.config import option
from saferlhf.errors import UserError
from saferlhf.packing import pair_response_logprobs
from saferlhf.training import (OptimConfig, PolicyLoraSettings, RuntimeConfig, assert_finite, build_optimizer,
                               disable_dropout, make_accelerator, optimizer_step)

Variant = Literal["dpo", "harmless", "safe_filtered", "safedpo", "sacpo"]


@dataclass
class DPOConfig:
    model_path: str = option("", "HF causal LM to align (usually the SFT model); also the reference by default")
    train_file: str = option("", "preference file: PKU-SafeRLHF json/jsonl/parquet, HH-RLHF jsonl(.gz), TRL jsonl")
    variant: Variant = option("dpo", "dpo | harmless | safe_filtered | safedpo | sacpo (see the docstring)")
    eval_file: str | None = option(None, "held-out preference file (default: eval_ratio of train_file)")
    eval_ratio: float = option(0.1, "share of train_file held out when eval_file is unset", ge=0, lt=1)
    safety_file: str | None = option(None, "sacpo: the harmlessness preference file of the safety stage "
                                           "(default: train_file, e.g. PKU-SafeRLHF with both labels)")
    out: str = option("runs/dpo", "output folder")
    beta: float = option(0.1, "β: strength of the KL regularisation to the reference", gt=0)
    delta: float = option(2.0, "safedpo: safety margin Δ added when the preferred response is safe and the other "
                               "unsafe", ge=0)
    safety_beta: float = option(0.1, "sacpo: β of the safety stage (the paper's β/λ)", gt=0)
    sacpo_order: Literal["helpful_first", "safe_first"] = option("helpful_first", "sacpo: order of the two stages")
    ref_model_path: str | None = option(None, "reference policy, with the policy's tokenizer (default: model_path; "
                                               "sacpo: the first stage's)")
    precompute_ref: bool = option(True, "compute the reference log-probs once before training (else on the fly)")
    max_length: int = option(512, "max tokens of prompt + response", ge=2)
    batch_size: int = option(16, "pairs per optimiser step per process", ge=1)
    epochs: float = option(2.0, "passes over the training pairs", gt=0)
    max_steps: int = option(0, "stop after this many optimiser steps (0 = use epochs)", ge=0)
    max_pairs: int = option(0, "use at most this many training pairs (0 = all)", ge=0)
    on_error: Literal["raise", "drop"] = option("raise", "bad records: raise (file:line errors) or drop with a report")
    packing: bool = option(True, "padding-free batches (checked against padded ones at start)")
    log_every: int = option(10, "log train metrics every N steps", ge=1)
    save_every: int = option(0, "write a resumable checkpoint every N optimiser steps (0 = only at the end)", ge=0)
    resume: bool = option(False, "continue from out/checkpoint")
    overwrite: bool = option(False, "replace a previous run in out")
    allow_config_change: bool = option(False, "resume even though the config differs from the saved run")
    optim: OptimConfig = option(OptimConfig(lr=1e-6, weight_decay=0.05), "optimiser (the reference's DPO lr 1e-6)")
    lora: PolicyLoraSettings = option(PolicyLoraSettings(), "LoRA adapters instead of full fine-tuning (model/: "
                                                            "merged, or the adapter alone with merge_on_save false)")
    runtime: RuntimeConfig = option(RuntimeConfig(), "runtime")


# --------------------------------------------------------------------------- pairs per variant (pure)


def needs_labels(pairs: list, variant: str) -> None:
    """Raise a `DataValidationError` (file:line: field) for every pair without both safety labels."""
    from saferlhf.data.validate import DataValidationError, Problem

    problems = [Problem.at(p, "chosen_is_safe", f"variant {variant} needs per-response safety labels "
                           "(PKU-SafeRLHF is_response_0_safe / is_response_1_safe, or TRL chosen_is_safe / "
                           "rejected_is_safe)") for p in pairs if p.chosen_is_safe is None or p.rejected_is_safe is None]
    if problems:
        raise DataValidationError(problems, note="(variants dpo, harmless and sacpo do not need safety labels)")


def safe_filtered(pairs: list) -> list:
    """Helpfulness pairs whose preferred response is labelled safe."""
    return [p for p in pairs if p.chosen_is_safe]


def safedpo_order(pairs: list) -> list:
    """SafeDPO's safety-aware preference: a pair whose preferred response is unsafe and the other safe is swapped
    (the safe one becomes y_w); every other pair keeps its helpfulness order. A swapped pair's soft target (the
    helpfulness share) no longer applies: it is dropped (a hard label)."""
    return [dataclasses.replace(p, chosen=p.rejected, rejected=p.chosen, chosen_is_safe=True, rejected_is_safe=False,
                                **({"target": None} if hasattr(p, "target") else {}))
            if (not p.chosen_is_safe and p.rejected_is_safe) else p for p in pairs]


@dataclass(frozen=True)
class VariantSpec:
    kind: Literal["reward", "cost"]  # which preference of the file (loaders' pair kind)
    select: Callable[[list], list]  # pure: loaded pairs -> training pairs
    labels: bool  # needs safety labels
    safety_loss: bool  # safedpo_loss instead of dpo_loss


VARIANTS: dict[str, VariantSpec] = {
    "dpo": VariantSpec("reward", list, False, False),
    "harmless": VariantSpec("cost", list, False, False),
    "safe_filtered": VariantSpec("reward", safe_filtered, True, False),
    "safedpo": VariantSpec("reward", safedpo_order, True, True),
}


def check_pairs(pairs: list) -> None:
    """Identical or empty responses carry no DPO signal: a `DataValidationError` naming file, line and field."""
    from saferlhf.data.validate import DataValidationError, Problem

    problems = []
    for p in pairs:
        for name in ("chosen", "rejected"):
            if not getattr(p, name).strip():
                problems.append(Problem.at(p, name, "empty response (no DPO signal)"))
        if p.chosen.strip() and p.chosen == p.rejected:
            problems.append(Problem.at(p, "rejected", "identical to chosen (no DPO signal)"))
    if problems:
        raise DataValidationError(problems, note="(remove these pairs, or load with --on_error drop to skip them)")


def load_variant_pairs(path: str, variant: str, on_error: str) -> list:
    """The training pairs of ``variant`` from ``path``: loaded, checked (`check_pairs`, `needs_labels`),
    selected; with on_error=drop, pairs that fail `check_pairs` are left out instead."""
    from saferlhf.data.loaders import load_preference_pairs

    spec = VARIANTS[variant]
    pairs = list(load_preference_pairs(path, kind=spec.kind, on_error=on_error))
    if on_error == "drop":
        pairs = [p for p in pairs if p.chosen.strip() and p.rejected.strip() and p.chosen != p.rejected]
    check_pairs(pairs)
    if spec.labels:
        needs_labels(pairs, variant)
    pairs = spec.select(pairs)
    if not pairs:
        raise UserError(f"dpo: {path}: no {variant} training pairs"
                        + (" (no pair's preferred response is labelled safe)" if variant == "safe_filtered" else ""))
    return pairs


# --------------------------------------------------------------------------- the loop


@contextlib.contextmanager
def eval_mode(model):
    """``model`` (for an adapters-disabled reference: the actor it wraps) in eval mode for the block: the
    reference is read without dropout, as when it is precomputed."""
    target = getattr(model, "peft", model)
    was = target.training
    target.eval()
    try:
        yield model
    finally:
        target.train(was)


@torch.no_grad()
def frozen_logprobs(model, rows, packed: bool, pad_id: int) -> torch.Tensor:
    """[B, 2] (chosen, rejected) log-probs of a batch as the policy reads it (packed rows with per-sequence
    attention, or padded), in eval mode, without gradients, on the model's device: the reference's numbers."""
    from saferlhf.packing import packed_attention_enabled

    with eval_mode(model), packed_attention_enabled(model) if packed else contextlib.nullcontext():
        return torch.stack(pair_response_logprobs(model, rows, packed, pad_id).chunk(2), 1).float()


def rank_block(n: int, rank: int, world: int) -> list[int]:
    """The rows of 0..n-1 that ``rank`` computes: a contiguous block of ceil(n / world), padded with row n-1 so
    that every rank runs the same batches; the blocks concatenated in rank order start with rows 0..n-1."""
    m = -(-n // world)
    return [min(i, n - 1) for i in range(rank * m, (rank + 1) * m)] if n else []


def all_logprobs(model, pairs, packed: bool, pad_id: int, batch_size: int, acc) -> torch.Tensor:
    """[N, 2] (chosen, rejected) log-probs of every pair, in eval mode, on the CPU: each rank computes its
    `rank_block` on the model's device, and the blocks are gathered (every rank gets all N rows)."""
    if not pairs:
        return torch.zeros(0, 2)
    mine = [pairs[i] for i in rank_block(len(pairs), acc.process_index, acc.num_processes)]
    out = torch.cat([frozen_logprobs(model, mine[i: i + batch_size], packed, pad_id)
                     for i in range(0, len(mine), batch_size)])
    return acc.gather(out)[: len(pairs)].cpu()


def objective(cfg: DPOConfig, spec: VariantSpec, policy: torch.Tensor, ref: torch.Tensor, pairs) -> tuple:
    """The variant's loss on [B, 2] policy and reference log-probs; soft targets (a record's
    ``better_response_prob`` / ``safer_response_prob``, `annotate export --aggregation soft`) where the batch has
    them (a pair without one counts as p = 1), else the hard loss."""
    from saferlhf.losses import dpo_loss, safedpo_loss

    target = None
    if any(getattr(p, "target", None) is not None for p in pairs):
        target = torch.tensor([1.0 if p.target is None else p.target for p in pairs], device=policy.device)
    if spec.safety_loss:
        unsafe_w = torch.tensor([not p.chosen_is_safe for p in pairs], device=policy.device)
        unsafe_l = torch.tensor([not p.rejected_is_safe for p in pairs], device=policy.device)
        return safedpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], unsafe_w, unsafe_l, cfg.beta, cfg.delta,
                            target=target)
    return dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], cfg.beta, target=target)


def implicit_reward_metrics(policy: torch.Tensor, ref: torch.Tensor, beta: float) -> dict[str, float]:
    """Held-out DPO metrics from [N, 2] log-probs: accuracy = P(r̂_w > r̂_l), mean margin, mean r̂_w, r̂_l."""
    r = beta * (policy - ref)
    margin = r[:, 0] - r[:, 1]
    return {"eval/accuracy": float((margin > 0).float().mean()), "eval/margin": float(margin.mean()),
            "eval/chosen_reward": float(r[:, 0].mean()), "eval/rejected_reward": float(r[:, 1].mean()),
            "eval/pairs": int(len(margin))}


def split_train_eval(cfg: DPOConfig, pairs: list) -> tuple[list, list]:
    """(train, held-out) pairs: ``eval_file``'s, or ``eval_ratio`` of ``train_file`` (a `UserError` when that
    split leaves no pair on one side); at most ``max_pairs`` training pairs."""
    from saferlhf.data.split import split_for_training

    if cfg.eval_file:
        return pairs[: cfg.max_pairs or None], load_variant_pairs(cfg.eval_file, cfg.variant, cfg.on_error)
    train, held_out = split_for_training(pairs, cfg.eval_ratio, cfg.runtime.seed, "dpo", cfg.train_file)
    return train[: cfg.max_pairs or None], held_out


def distinct_after_cut(encoded: list) -> list:
    """The encoded pairs whose two token sequences still differ after truncation (identical ones carry no DPO
    signal: their loss is ln 2 whatever the policy)."""
    return [p for p in encoded if p.chosen != p.rejected]


def encode_for_dpo(pairs: list, tokenizer, max_length: int, what: str, main: bool) -> list:
    """`encode_pairs` with no end token after a cut, less the pairs `distinct_after_cut` leaves out (counted on
    stderr; a `UserError` when none is left for training)."""
    from saferlhf.packing import encode_pairs

    encoded = encode_pairs(pairs, tokenizer, max_length, end_after_cut=False)
    kept = distinct_after_cut(encoded)
    if len(kept) < len(encoded) and (main or not kept):
        message = (f"dpo: {what}: {len(encoded) - len(kept)} of {len(encoded)} pairs have identical chosen and "
                   f"rejected tokens after truncation to max_length {max_length} (no DPO signal)")
        if not kept and what == "train":
            raise UserError(message, hint="raise --max_length")
        print(f"{message}: left out", file=sys.stderr)
    return kept


def check_reference_tokenizer(path: str, ref_tokenizer, tokenizer) -> None:
    """The reference must read the policy's token ids: the same tokenizer (`load_policy` fits each model's
    embeddings to its own), else a `UserError` before any training."""
    if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UserError(f"dpo: ref_model_path {path} has another tokenizer than model_path ({len(ref_tokenizer)} vs "
                        f"{len(tokenizer)} tokens); the reference must read the policy's token ids",
                        hint="use the reference the policy was fine-tuned from, with its tokenizer")


def load_reference(path: str, tokenizer) -> torch.nn.Module:
    """The reference policy at ``path``, checked (`check_reference_tokenizer`)."""
    from saferlhf.models.policy import load_policy

    ref, ref_tokenizer = load_policy(path)
    check_reference_tokenizer(path, ref_tokenizer, tokenizer)
    return ref


def run(cfg: DPOConfig) -> int:
    if cfg.variant == "sacpo":
        return run_sacpo(cfg)
    return run_stage(cfg, VARIANTS[cfg.variant])


def run_stage(cfg: DPOConfig, spec: VariantSpec) -> int:
    from saferlhf.batching import batch_stream, epoch_rng, rank_share
    from saferlhf.files import atomic_write_json, fault_point
    from saferlhf.models.hf import check_model_path
    from saferlhf.models.lora import AdaptersDisabled, apply_lora_settings
    from saferlhf.models.policy import load_policy, save_policy
    from saferlhf.models.tokenizers import load_tokenizer
    from saferlhf.packing import logprob_packing_problem, packed_attention_enabled
    from saferlhf.tracking import MetricsLogger, finish_run, progress
    from saferlhf.rl import global_means
    from saferlhf.training import restore_loop, start_run_on_every_rank

    check_model_path(cfg.model_path, "model_path")
    if cfg.ref_model_path:
        check_model_path(cfg.ref_model_path, "ref_model_path")
    acc = make_accelerator(cfg.runtime, step_scheduler_with_optimizer=False)
    main = acc.is_main_process
    # 1. Data first: every bad pair fails here with file:line: field, before any model is loaded.
    train_pairs, eval_pairs = split_train_eval(cfg, load_variant_pairs(cfg.train_file, cfg.variant, cfg.on_error))
    tokenizer = load_tokenizer(cfg.model_path, padding_side="right")
    train = encode_for_dpo(train_pairs, tokenizer, cfg.max_length, "train", main)
    evals = encode_for_dpo(eval_pairs, tokenizer, cfg.max_length, "eval", main)
    pad_id = tokenizer.pad_token_id
    ref_model = load_reference(cfg.ref_model_path, tokenizer) if cfg.ref_model_path else None
    out = start_run_on_every_rank(acc, cfg, "dpo")
    logger = MetricsLogger(out, enabled=main, report_to=cfg.runtime.report_to)

    # 2. Policy (dropout off: policy and reference compute the same function); packing check; reference
    # log-probs (precomputed once, on the device, split across ranks) or a reference model kept for the loop.
    model, _ = load_policy(cfg.model_path, gradient_checkpointing=cfg.runtime.gradient_checkpointing)
    disable_dropout(model)  # before LoRA: the adapters keep --lora.dropout
    model.to(acc.device)
    problem = logprob_packing_problem(model, train, pad_id) if cfg.packing else "off"
    packed = problem is None
    if cfg.packing and not packed and main:
        print(f"dpo: packing not used ({problem}); training on padded batches", file=sys.stderr)
    if ref_model is not None:
        ref_model.to(acc.device).eval().requires_grad_(False)
    ref_train = ref_eval = None
    if cfg.precompute_ref:
        ref = ref_model or model  # before LoRA is applied: the starting model itself
        ref_train = all_logprobs(ref, train, packed, pad_id, cfg.batch_size, acc)
        ref_eval = all_logprobs(ref, evals, packed, pad_id, cfg.batch_size, acc)
        ref = ref_model = None
    model = apply_lora_settings(model, cfg.lora)
    if not cfg.precompute_ref and ref_model is None:
        ref_model = AdaptersDisabled(model) if cfg.lora.enabled else load_policy(cfg.model_path)[0]
        if not cfg.lora.enabled:  # (AdaptersDisabled shares the actor)
            ref_model.to(acc.device).eval().requires_grad_(False)

    global_bs = cfg.batch_size * acc.num_processes
    steps_per_epoch = math.ceil(len(train) / global_bs)
    total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    opt, sched = build_optimizer(model, cfg.optim, total)
    model, opt, sched = acc.prepare(model, opt, sched)
    state, ckpt, _ = restore_loop(acc, out, logger, cfg.resume, "dpo")
    start = state.step
    model.train()

    def batches_of(epoch: int) -> list[list[int]]:  # a pure function of (seed, epoch): the step locates resume
        order = list(range(len(train)))
        epoch_rng(cfg.runtime.seed, epoch).shuffle(order)
        return [order[i: i + global_bs] for i in range(0, len(order), global_bs)]

    # 3. Loop.
    stream = batch_stream(batches_of, start)
    t0 = time.time()
    bar = progress(total=total, desc=f"dpo ({cfg.variant})", disable=not (cfg.runtime.progress and main))
    bar.update(start)
    with packed_attention_enabled(model) if packed else contextlib.nullcontext():
        while state.step < total:
            _, batch = next(stream)
            idx, weight = rank_share(batch, acc.process_index, acc.num_processes)
            rows = [train[i] for i in idx]
            step = state.step + 1
            policy = torch.stack(pair_response_logprobs(model, rows, packed, pad_id).chunk(2), 1)
            if ref_train is not None:
                ref = ref_train[idx].to(policy.device)
            else:  # the same packed row as the policy's, with the reference's own attention switched
                ref = frozen_logprobs(ref_model, rows, packed, pad_id)
            loss, diag = objective(cfg, spec, policy, ref, rows)
            assert_finite(step, logprobs=policy, loss=loss)
            acc.backward(loss * weight)
            gnorm = optimizer_step(acc, model.parameters(), opt, sched, cfg.optim.grad_clip, step=step, what="policy")
            state.step = step
            bar.update(1)
            bar.set_postfix(loss=f"{diag['loss']:.3f}", acc=f"{diag['accuracy']:.2f}")
            if step % cfg.log_every == 0 or step == total:
                logger.log(step, global_means({f"train/{k}": v for k, v in diag.items()} |
                                              {"train/lr": sched.get_last_lr()[0], "train/grad_norm": gnorm,
                                               "time/pairs_per_s": (step - start) * global_bs / (time.time() - t0)},
                                              acc))  # averaged over the ranks' shares (a collective)
            fault_point("step")
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                ckpt.save()
    bar.close()

    # 4. Held-out implicit-reward metrics; summary row; end checkpoint; the model; complete.
    policy_model = acc.unwrap_model(model)
    metrics = {"train/steps": state.step, "train/pairs": len(train), "train/packed": packed}
    if evals:
        ev_ref = ref_eval if ref_eval is not None else all_logprobs(ref_model, evals, packed, pad_id, cfg.batch_size,
                                                                    acc)
        metrics |= implicit_reward_metrics(all_logprobs(policy_model, evals, packed, pad_id, cfg.batch_size, acc),
                                           ev_ref, cfg.beta)
    seconds = time.time() - t0
    if start < total:
        logger.log(state.step, metrics | {"time/seconds": seconds})
        ckpt.save()
    acc.wait_for_everyone()
    if main:
        atomic_write_json(Path(out) / "eval.json", metrics | {"train/seconds": seconds})
        save_policy(policy_model, tokenizer, Path(out) / "model", merge=cfg.lora.merge_on_save)
        shown = f", held-out accuracy {metrics['eval/accuracy']:.3f}" if evals else ""
        print(f"dpo ({cfg.variant}): {state.step} steps on {len(train)} pairs{shown} -> {out}/model")
    finish_run(out, is_main=main, **{k: v for k, v in metrics.items() if k.startswith("train/")})
    return 0


def run_sacpo(cfg: DPOConfig) -> int:
    """SACPO: two DPO stages, each a run folder of its own; the first is regularised towards ``ref_model_path``
    (default: ``model_path``), the second starts from (and is regularised towards) the first stage's model.
    ``out/model`` is the second stage's model."""
    from saferlhf.files import atomic_write_json
    from saferlhf.models.hf import check_model_path
    from saferlhf.models.tokenizers import load_tokenizer
    from saferlhf.tracking import finish_run, run_state, start_run

    stages = [("helpful", "dpo", cfg.train_file, cfg.beta), ("safe", "harmless", cfg.safety_file or cfg.train_file,
                                                             cfg.safety_beta)]
    if cfg.sacpo_order == "safe_first":
        stages.reverse()
    for _, variant, path, _ in stages:  # both files and the first stage's reference checked before anything trains
        load_variant_pairs(path, variant, cfg.on_error)
    check_model_path(cfg.model_path, "model_path")
    if cfg.ref_model_path:
        check_model_path(cfg.ref_model_path, "ref_model_path")
        check_reference_tokenizer(cfg.ref_model_path, load_tokenizer(cfg.ref_model_path),
                                  load_tokenizer(cfg.model_path))
    out = start_run(cfg.out, cfg, "dpo", resume=cfg.resume, overwrite=cfg.overwrite,
                    allow_config_change=cfg.allow_config_change)
    model_path, summary = cfg.model_path, {}
    for k, (name, variant, path, beta) in enumerate(stages, 1):
        folder = Path(out) / f"stage{k}_{name}"
        if run_state(folder) != "complete":
            stage_cfg = dataclasses.replace(cfg, variant=variant, train_file=path, beta=beta, model_path=model_path,
                                            ref_model_path=cfg.ref_model_path if k == 1 else None,
                                            out=str(folder), overwrite=not cfg.resume,
                                            resume=cfg.resume and folder.exists())
            run_stage(stage_cfg, VARIANTS[variant])
        model_path = str(folder / "model")
        summary[f"stage{k}_{name}"] = json.loads((folder / "eval.json").read_text())
    final = Path(out) / "model"
    tmp = Path(out) / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_path, tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_json(Path(out) / "eval.json", summary)
    print(f"dpo (sacpo, {cfg.sacpo_order}): both stages done -> {final}")
    finish_run(out, is_main=True, stages=len(stages))
    return 0
