"""Supervised fine-tuning: next-token cross-entropy on response tokens only.

Input: a JSONL/JSON file of {prompt, response} records (e.g. `saferlhf world corpus`), PKU-SafeRLHF
files (both responses of every pair whose response is labelled safe are NOT used: give SFT data),
or TRL prompt/chosen files (chosen is used). Each example is the chat-formatted prompt + response + eos.

Deviations / choices:
1. Loss on response tokens only (prompt tokens are labels -100), mean over response tokens of the batch. The
   vocabulary projection runs only at the positions that predict a response token (`labelled_logits`):
   prompt and padding positions get no logits (bench/bench_sft_logits.py measures the gain).
2. Optional packing concatenates whole examples into blocks of `max_length` tokens; attention then
   crosses example boundaries inside a block (cheap packing; off by default).
3. Exact resume: `--save_every N` writes a checkpoint (model, optimiser, schedule, RNG states, step) every
   N optimiser steps and one at the end; `--resume true` continues from it and gives the weights and
   metrics rows of an uninterrupted run (the batch order is a pure function of (seed, epoch)). With LoRA the
   checkpoint holds the adapters (and optimiser state) only, and `model/` is merged unless
   `--lora.merge_on_save false` (then it is the adapter folder, loaded over its base by every command).
4. Weight decay (when set) exempts biases and normalisation weights (`saferlhf.training.decay_groups`).

Run folder (`saferlhf.tracking.start_run`): a folder that holds a run is refused unless `--resume true` or
`--overwrite true`; `status.json` says `complete` only once `model/` is written.

Launch: `saferlhf sft --model_path M --train_file F --out DIR` (one CPU or GPU);
`accelerate launch -m saferlhf sft ...` for several processes (DDP or DeepSpeed via accelerate config).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from saferlhf.batching import batch_stream, epoch_rng, pack_examples, packed_batch, rank_share, sft_batch
from saferlhf.config import option
from saferlhf.data.formatting import encode_example
from saferlhf.errors import UserError
from saferlhf.losses import sft_loss
from saferlhf.rollout import labelled_logits
from saferlhf.training import (OptimConfig, PolicyLoraSettings, RuntimeConfig, assert_finite, build_optimizer,
                               make_accelerator, optimizer_step, restore_loop, start_run_on_every_rank)


@dataclass
class SFTConfig:
    model_path: str = option("", "HF causal LM path or hub name to fine-tune")
    train_file: str = option("", "training data: prompt + response records, or a preference file (PKU-SafeRLHF: the "
                                 "better response when safe, else the safer safe one; HH-RLHF / TRL: chosen)")
    eval_file: str | None = option(None, "optional held-out file of the same kind; eval loss reported")
    out: str = option("runs/sft", "output folder (model, tokenizer, config.yaml, metrics.jsonl, checkpoint)")
    max_length: int = option(512, "max tokens of prompt + response", ge=2)
    batch_size: int = option(16, "examples per optimiser step per process", ge=1)
    epochs: float = option(3.0, "passes over the training data", gt=0)
    max_steps: int = option(0, "stop after this many optimiser steps (0 = use epochs)", ge=0)
    packing: bool = option(False, "pack several examples per row of max_length tokens")
    log_every: int = option(10, "log train metrics every N steps", ge=1)
    save_every: int = option(0, "write a resumable checkpoint every N optimiser steps (0 = only at the end)", ge=0)
    resume: bool = option(False, "continue from out/checkpoint")
    overwrite: bool = option(False, "replace a previous run in out")
    allow_config_change: bool = option(False, "resume even though the config differs from the saved run")
    optim: OptimConfig = option(OptimConfig(lr=2e-5, weight_decay=0.0), "optimiser")
    lora: PolicyLoraSettings = option(PolicyLoraSettings(), "LoRA adapters instead of full fine-tuning (model/: "
                                                            "merged, or the adapter alone with merge_on_save false)")
    runtime: RuntimeConfig = option(RuntimeConfig(), "runtime")


def load_examples(path: str, tokenizer, max_length: int, what: str) -> list[tuple[list[int], int]]:
    """Encoded (ids, n_prompt) examples of an SFT file; a file without examples is a ``UserError``."""
    from saferlhf.data.loaders import load_sft_records

    examples = [encode_example(tokenizer, r.prompt, r.response, max_length) for r in load_sft_records(path)]
    if not examples:
        raise UserError(f"sft: {what}: {path} holds no (prompt, response) examples")
    return examples


def epoch_batches(examples, global_bs: int, seed: int, epoch: int, packing: bool, max_length: int) -> list[list]:
    """The global batches of one epoch (examples, or packed blocks): a pure function of (seed, epoch)."""
    order = list(examples)
    epoch_rng(seed, epoch).shuffle(order)
    rows = pack_examples(order, max_length) if packing else order
    return [rows[i: i + global_bs] for i in range(0, len(rows), global_bs)]


@torch.no_grad()
def evaluate_loss(model, examples, tokenizer, batch_size: int, device) -> float:
    """Token-mean response cross-entropy on ``examples``."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(examples), batch_size):
        b = {k: v.to(device) for k, v in sft_batch(examples[i: i + batch_size], tokenizer.pad_token_id).items()}
        logits, positions = labelled_logits(model, b)
        loss, diag = sft_loss(logits, b["labels"], positions)
        total += float(loss) * diag["n_tokens"]
        n += int(diag["n_tokens"])
    model.train()
    return total / max(n, 1)


def run(cfg: SFTConfig) -> int:
    from saferlhf.models.hf import check_model_path
    from saferlhf.models.lora import apply_lora_settings
    from saferlhf.models.policy import load_policy, save_policy
    from saferlhf.models.tokenizers import load_tokenizer
    from saferlhf.files import fault_point
    from saferlhf.tracking import MetricsLogger, finish_run, progress
    from saferlhf.rl import global_means

    check_model_path(cfg.model_path, "model_path")
    acc = make_accelerator(cfg.runtime, step_scheduler_with_optimizer=False)  # one schedule step per step
    main = acc.is_main_process
    # 1. Data first: bad input fails here, before the model is loaded or the run folder is touched.
    tokenizer = load_tokenizer(cfg.model_path)
    train = load_examples(cfg.train_file, tokenizer, cfg.max_length, "train_file")
    evals = load_examples(cfg.eval_file, tokenizer, cfg.max_length, "eval_file") if cfg.eval_file else []
    out = start_run_on_every_rank(acc, cfg, "sft")
    logger = MetricsLogger(out, enabled=main, report_to=cfg.runtime.report_to)

    # 2. Model, optimiser, schedule; the checkpoint when resuming.
    model, tokenizer = load_policy(cfg.model_path, gradient_checkpointing=cfg.runtime.gradient_checkpointing)
    model = apply_lora_settings(model, cfg.lora)
    global_bs = cfg.batch_size * acc.num_processes

    def batches_of(epoch: int) -> list[list]:
        return epoch_batches(train, global_bs, cfg.runtime.seed, epoch, cfg.packing, cfg.max_length)

    steps_per_epoch = len(batches_of(0))
    total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    opt, sched = build_optimizer(model, cfg.optim, total)
    model, opt, sched = acc.prepare(model, opt, sched)
    state, ckpt, _ = restore_loop(acc, out, logger, cfg.resume, "sft")
    start = state.step
    model.train()

    # 3. Loop: every global batch is dealt out to the processes (rank_share).
    stream = batch_stream(batches_of, start)
    t0, tokens, diag = time.time(), 0, {"loss": float("nan")}
    bar = progress(total=total, desc="sft", disable=not (cfg.runtime.progress and main))
    bar.update(start)
    while state.step < total:
        _, batch = next(stream)
        rows, weight = rank_share(batch, acc.process_index, acc.num_processes)
        b = packed_batch(rows, tokenizer.pad_token_id) if cfg.packing else sft_batch(rows, tokenizer.pad_token_id)
        b = {k: v.to(acc.device) for k, v in b.items()}
        step = state.step + 1
        logits, positions = labelled_logits(model, b)
        loss, diag = sft_loss(logits, b["labels"], positions)
        assert_finite(step, loss=loss)
        acc.backward(loss * weight)
        gnorm = optimizer_step(acc, model.parameters(), opt, sched, cfg.optim.grad_clip, step=step, what="policy")
        state.step = step
        tokens += int(b["attention_mask"].sum())
        bar.update(1)
        bar.set_postfix(loss=f"{diag['loss']:.3f}")
        if step % cfg.log_every == 0 or step == total:
            logger.log(step, global_means({"train/loss": diag["loss"], "train/lr": sched.get_last_lr()[0],
                                           "train/grad_norm": gnorm, "train/epoch": step / steps_per_epoch,
                                           "time/tokens_per_s": tokens / (time.time() - t0)}, acc))  # a collective
        fault_point("step")
        if cfg.save_every and step % cfg.save_every == 0 and step < total:
            ckpt.save()
    bar.close()

    # 4. Held-out loss; the summary row, then the end checkpoint (so a run resumed from it, which has
    #    logged the row already, does not log it twice); the model; the run is complete.
    final = {"train/steps": state.step}
    if evals:
        final["eval/loss"] = evaluate_loss(acc.unwrap_model(model), evals, tokenizer, cfg.batch_size, acc.device)
    if start < total:
        logger.log(state.step, final | {"time/seconds": time.time() - t0})
        ckpt.save()
    acc.wait_for_everyone()
    if main:
        save_policy(acc.unwrap_model(model), tokenizer, Path(out) / "model", merge=cfg.lora.merge_on_save)
        print(f"sft: {state.step} steps, final loss {diag['loss']:.4f}"
              + (f", eval loss {final['eval/loss']:.4f}" if evals else "") + f" -> {out}/model")
    finish_run(out, is_main=main, **final)
    return 0
