"""Shared training plumbing: accelerate setup, optimiser + schedule, seeding, atomic checkpoints.

Kept small on purpose: the loops themselves live in the recipes, top to bottom.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from saferlhf.config import cfg
from saferlhf.tracking import atomic_write


@dataclass
class OptimConfig:
    """Optimiser settings (AdamW + a transformers learning-rate schedule)."""

    lr: float = cfg(2e-5, "peak learning rate")
    weight_decay: float = cfg(0.1, "AdamW weight decay")
    beta1: float = cfg(0.9, "Adam beta1")
    beta2: float = cfg(0.95, "Adam beta2")
    eps: float = cfg(1e-8, "Adam epsilon")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = cfg(
        "cosine", "learning-rate schedule (transformers.get_scheduler name)")
    warmup_ratio: float = cfg(0.03, "share of the total steps used for linear warm-up")
    grad_clip: float = cfg(1.0, "max global gradient norm (0 disables clipping)")


@dataclass
class RuntimeConfig:
    """Where and how to run (one process here; `accelerate launch -m saferlhf ...` for many)."""

    device: Literal["auto", "cpu", "cuda"] = cfg("auto", "auto = GPU when available, else CPU")
    mixed_precision: Literal["no", "bf16", "fp16"] = cfg(
        "no", "mixed precision (GPUs only; on CPU bf16 is ~500x slower than fp32 here)")
    seed: int = cfg(0, "random seed (python, numpy, torch)")
    threads: int = cfg(0, "torch CPU threads (0 = torch default)")
    report_to: Literal["none", "tensorboard", "wandb"] = cfg("none", "extra metrics sink besides metrics.jsonl")
    progress: bool = cfg(True, "show progress bars")
    gradient_checkpointing: bool = cfg(False, "trade compute for memory on large models")


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # numpy is optional for us
        pass


def make_accelerator(rt: RuntimeConfig, **kwargs: Any):
    """An accelerate ``Accelerator`` honouring ``rt`` (lazy import keeps ``import saferlhf`` light)."""
    from accelerate import Accelerator

    if rt.threads > 0:
        torch.set_num_threads(rt.threads)
    cpu = rt.device == "cpu" or (rt.device == "auto" and not torch.cuda.is_available())
    mp = rt.mixed_precision if not cpu else "no"
    acc = Accelerator(cpu=cpu, mixed_precision=mp, **kwargs)
    set_seed(rt.seed + acc.process_index)
    return acc


def build_optimizer(params, optim: OptimConfig, total_steps: int):
    """AdamW over ``params`` and the configured schedule for ``total_steps`` optimiser steps."""
    from transformers import get_scheduler

    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                            weight_decay=optim.weight_decay)
    warmup = int(round(optim.warmup_ratio * total_steps))
    sched = get_scheduler(optim.scheduler, opt, num_warmup_steps=warmup,
                          num_training_steps=max(total_steps, 1))
    return opt, sched


def clip_grad(accelerator, params, max_norm: float) -> float:
    """Clip the global gradient norm; returns the norm before clipping (0.0 when disabled)."""
    if max_norm <= 0:
        return 0.0
    norm = accelerator.clip_grad_norm_(params, max_norm)
    return float(norm) if norm is not None else 0.0


def optimizer_step(accelerator, params, optimizer, scheduler, max_norm: float) -> float:
    """Clip the global gradient norm, step the optimiser and the schedule, clear gradients.

    Returns the gradient norm before clipping (0.0 when clipping is disabled)."""
    norm = clip_grad(accelerator, params, max_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temp file in the same folder, fsync, then rename over ``path`` (``atomic_write``)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def unwrap(accelerator, model):
    return accelerator.unwrap_model(model) if accelerator is not None else model


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
