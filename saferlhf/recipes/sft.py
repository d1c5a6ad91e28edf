"""Supervised fine-tuning: next-token cross-entropy on response tokens only.

Input: a JSONL/JSON file of {prompt, response} records (e.g. `saferlhf world corpus`), PKU-SafeRLHF
files (both responses of every pair whose response is labelled safe are NOT used: give SFT data),
or TRL prompt/chosen files (chosen is used). Each example is the chat-formatted prompt + response + eos.

Deviations / choices:
1. Loss on response tokens only (prompt tokens are labels -100), mean over response tokens of the batch.
2. Optional packing concatenates whole examples into blocks of `max_length` tokens; attention then
   crosses example boundaries inside a block (cheap packing; off by default).

Launch: `saferlhf sft --model_path M --train_file F --out DIR` (one CPU or GPU);
`accelerate launch -m saferlhf sft ...` for several processes (DDP or DeepSpeed via accelerate config).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from saferlhf.batching import encode_example, pack_examples, packed_batch, sft_batch
from saferlhf.config import option
from saferlhf.training import OptimConfig, RuntimeConfig, build_optimizer, make_accelerator, optimizer_step


@dataclass
class SFTConfig:
    model_path: str = option("", "HF causal LM path or hub name to fine-tune")
    train_file: str = option("", "training data: JSONL/JSON with prompt + response (see saferlhf data check)")
    eval_file: str | None = option(None, "optional held-out file of the same kind; eval loss reported")
    out: str = option("runs/sft", "output folder (model, tokenizer, config.yaml, metrics.jsonl)")
    max_length: int = option(512, "max tokens of prompt + response", ge=2)
    batch_size: int = option(16, "examples per optimiser step per process", ge=1)
    epochs: float = option(3.0, "passes over the training data", gt=0)
    max_steps: int = option(0, "stop after this many optimiser steps (0 = use epochs)", ge=0)
    packing: bool = option(False, "pack several examples per row of max_length tokens")
    log_every: int = option(10, "log train metrics every N steps", ge=1)
    optim: OptimConfig = option(OptimConfig(lr=2e-5, weight_decay=0.0), "optimiser")
    runtime: RuntimeConfig = option(RuntimeConfig(), "runtime")


def _load_examples(path: str, tokenizer, max_length: int) -> list[tuple[list[int], int]]:
    from saferlhf.data.loaders import load_sft_records

    return [encode_example(tokenizer, r.prompt, r.response, max_length) for r in load_sft_records(path)]


def _batches(examples, batch_size: int, pad_id: int, packing: bool, max_length: int, rng: random.Random):
    order = list(examples)
    rng.shuffle(order)
    if packing:
        blocks = pack_examples(order, max_length)
        for i in range(0, len(blocks), batch_size):
            yield packed_batch(blocks[i: i + batch_size], pad_id)
    else:
        for i in range(0, len(order), batch_size):
            yield sft_batch(order[i: i + batch_size], pad_id)


@torch.no_grad()
def evaluate_loss(model, examples, tokenizer, batch_size: int, device) -> float:
    """Token-mean response cross-entropy on ``examples``."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(examples), batch_size):
        b = {k: v.to(device) for k, v in sft_batch(examples[i: i + batch_size], tokenizer.pad_token_id).items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        labels = b["labels"][:, 1:]
        ce = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=-100,
                                               reduction="sum")
        total += float(ce)
        n += int((labels != -100).sum())
    model.train()
    return total / max(n, 1)


def run(cfg: SFTConfig) -> int:
    from saferlhf.losses import sft_loss
    from saferlhf.models import load_policy
    from saferlhf.tracking import MetricsLogger, prepare_out_dir, progress

    acc = make_accelerator(cfg.runtime)
    # 1. Data first: bad input fails here, before any model is loaded or trained.
    model, tokenizer = load_policy(cfg.model_path)
    train = _load_examples(cfg.train_file, tokenizer, cfg.max_length)
    evals = _load_examples(cfg.eval_file, tokenizer, cfg.max_length) if cfg.eval_file else []
    out = prepare_out_dir(cfg.out, cfg, acc.is_main_process)
    logger = MetricsLogger(out, enabled=acc.is_main_process, report_to=cfg.runtime.report_to)

    # 2. Model, optimiser, schedule.
    if cfg.runtime.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    rows = len(pack_examples(train, cfg.max_length)) if cfg.packing else len(train)
    steps_per_epoch = math.ceil(rows / (cfg.batch_size * acc.num_processes))
    total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    opt, sched = build_optimizer(model, cfg.optim, total)
    model, opt, sched = acc.prepare(model, opt, sched)
    model.train()

    # 3. Loop: each process takes its own slice of every shuffled epoch.
    rng = random.Random(cfg.runtime.seed)
    step, t0, tokens = 0, time.time(), 0
    bar = progress(total=total, desc="sft", disable=not (cfg.runtime.progress and acc.is_main_process))
    while step < total:
        for i, batch in enumerate(_batches(train, cfg.batch_size * acc.num_processes, tokenizer.pad_token_id,
                                           cfg.packing, cfg.max_length, rng)):
            batch = {k: v.chunk(acc.num_processes)[acc.process_index].to(acc.device) if v.shape[0] >= acc.num_processes
                     else v.to(acc.device) for k, v in batch.items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss, diag = sft_loss(logits, batch["labels"])
            acc.backward(loss)
            gnorm = optimizer_step(acc, model.parameters(), opt, sched, cfg.optim.grad_clip)
            step += 1
            tokens += int(batch["attention_mask"].sum())
            bar.update(1)
            bar.set_postfix(loss=f"{diag['loss']:.3f}")
            if step % cfg.log_every == 0 or step == total:
                logger.log(step, {"train/loss": diag["loss"], "train/lr": sched.get_last_lr()[0],
                                  "train/grad_norm": gnorm, "train/tokens_per_s": tokens / (time.time() - t0),
                                  "train/epoch": step / steps_per_epoch})
            if step >= total:
                break
    bar.close()

    # 4. Evaluate and save (atomic folder swap).
    final = {"train/steps": step, "train/seconds": time.time() - t0}
    if evals:
        final["eval/loss"] = evaluate_loss(acc.unwrap_model(model), evals, tokenizer, cfg.batch_size, acc.device)
    logger.log(step, final)
    acc.wait_for_everyone()
    if acc.is_main_process:
        from saferlhf.models import save_policy

        save_policy(acc.unwrap_model(model), tokenizer, Path(out) / "model")
        print(f"sft: {step} steps, final loss {diag['loss']:.4f}"
              + (f", eval loss {final['eval/loss']:.4f}" if evals else "") + f" -> {out}/model")
    return 0
