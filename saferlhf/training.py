"""Shared training plumbing: accelerate setup, optimiser + schedule, seeding, numerical guards, atomic
resumable checkpoints.

Kept small on purpose: the loops themselves live in the recipes, top to bottom.

Numerical guards (``assert_finite``, and ``optimizer_step`` itself): a non-finite loss, score, advantage,
gradient norm or parameter stops the run with a ``NumericalError`` that names the step and the tensor.
``optimizer_step`` refuses to apply a non-finite gradient and checks the parameters after the update (finite,
and max |w| within ``WEIGHT_GROWTH_LIMIT`` times its value before training: lr 1e30 gives finite but absurd
weights), so a run never continues from, and never saves, such weights; the last checkpoint on disk stays.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from saferlhf.config import option
from saferlhf.errors import NumericalError
from saferlhf.files import atomic_save_dir, fault_point


@dataclass
class OptimConfig:
    """Optimiser settings (AdamW + a transformers learning-rate schedule)."""

    lr: float = option(2e-5, "peak learning rate", gt=0)
    weight_decay: float = option(0.1, "AdamW weight decay", ge=0)
    beta1: float = option(0.9, "Adam beta1", ge=0, lt=1)
    beta2: float = option(0.95, "Adam beta2", ge=0, lt=1)
    eps: float = option(1e-8, "Adam epsilon", gt=0)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = option(
        "cosine", "learning-rate schedule (transformers.get_scheduler name)")
    warmup_ratio: float = option(0.03, "share of the total steps used for linear warm-up", ge=0, le=1)
    grad_clip: float = option(1.0, "max global gradient norm (0 disables clipping)", ge=0)


@dataclass
class LoraSettings:
    """LoRA adapters (peft) instead of full fine-tuning; merged into the weights when the model is saved."""

    enabled: bool = option(False, "train LoRA adapters (and the score head) instead of every weight")
    r: int = option(8, "adapter rank", ge=1)
    alpha: int = option(16, "LoRA alpha (the update is scaled by alpha / r)", ge=1)
    dropout: float = option(0.0, "dropout on the adapter input", ge=0, lt=1)
    target_modules: list[str] = option(factory=list, help="module names to adapt (default: peft's choice for the "
                                                          "architecture, e.g. q_proj v_proj for Llama)")


@dataclass
class PolicyLoraSettings(LoraSettings):
    """LoRA of a policy (sft, dpo, ppo's actor), whose final folder is either merged or the adapter alone.
    Checkpoints keep the adapters and optimiser state only, whichever is chosen."""

    merge_on_save: bool = option(True, "write the final model/ as a plain HF folder with the adapters merged in; "
                                       "false: the adapter alone (adapter_model.safetensors + adapter_config.json + "
                                       "tokenizer, megabytes), which every saferlhf command and peft's "
                                       "PeftModel.from_pretrained(base, folder) load over the base it names")


@dataclass
class RuntimeConfig:
    """Where and how to run (one process here; `accelerate launch -m saferlhf ...` for many)."""

    device: Literal["auto", "cpu", "cuda", "mps"] = option(
        "auto", "auto = CUDA GPU when available, else CPU; mps = Apple-silicon GPU (opt in); a device that is not "
                "available is an error")
    mixed_precision: Literal["no", "bf16", "fp16"] = option(
        "no", "mixed precision (GPUs only; on CPU bf16 is ~500x slower than fp32 here)")
    seed: int = option(0, "random seed (python, numpy, torch)")
    threads: int = option(0, "torch CPU threads (0 = torch default)", ge=0)
    report_to: Literal["none", "tensorboard", "wandb"] = option(
        "none", "extra metrics sink besides metrics.jsonl (needs the extra of the same name, e.g. pip "
                "install 'saferlhf[wandb]')")
    wandb_project: str = option("saferlhf", "W&B project of the run (report_to wandb); the W&B run is named after "
                                            "the run folder and carries the resolved config")
    progress: bool = option(True, "show progress bars")
    gradient_checkpointing: bool = option(False, "trade compute for memory on large models")


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % (2**32))
    except ImportError:  # numpy is optional for us
        pass


def resolve_device(device: str) -> str:
    """``runtime.device`` -> "cpu" | "cuda" | "mps"; a device this machine does not have is a one-line
    ``UserError`` (instead of a silent fall-back to the CPU)."""
    from saferlhf.errors import UserError

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("runtime.device cuda: a CUDA GPU is not available on this machine",
                        hint="use --runtime.device auto (or cpu)")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UserError("runtime.device mps: the Apple-silicon GPU (MPS) is not available on this machine",
                        hint="mps needs a Mac with Apple silicon and a torch build with MPS; use --runtime.device "
                             "auto (or cpu)")
    return device


def make_accelerator(rt: RuntimeConfig, **kwargs: Any):
    """An accelerate ``Accelerator`` honouring ``rt`` (lazy import keeps ``import saferlhf`` light). Checks first,
    before any run folder exists: the device is available (`resolve_device`), the ``report_to`` package is
    installed (`saferlhf.tracking.check_report_to`)."""
    from accelerate import Accelerator

    from saferlhf.tracking import check_report_to

    device = resolve_device(rt.device)
    check_report_to(rt.report_to)
    if rt.threads > 0:
        torch.set_num_threads(rt.threads)
    cpu = device == "cpu"  # otherwise accelerate takes the GPU there is: CUDA, else MPS
    mp = rt.mixed_precision if not cpu else "no"
    acc = Accelerator(cpu=cpu, mixed_precision=mp, **kwargs)
    set_seed(rt.seed + acc.process_index)
    return acc


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups as in the reference: weight decay on matrices (weights of linear and
    embedding layers), none on biases and normalisation weights (every parameter with < 2 dims)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
            if g["params"]]


def build_optimizer(model: torch.nn.Module, optim: OptimConfig, total_steps: int):
    """AdamW over ``model``'s trainable parameters (``decay_groups``) and the configured schedule for
    ``total_steps`` optimiser steps."""
    from transformers import get_scheduler

    opt = torch.optim.AdamW(decay_groups(model, optim.weight_decay), lr=optim.lr, betas=(optim.beta1, optim.beta2),
                            eps=optim.eps)
    opt.initial_max_abs = weight_stats([p for p in model.parameters() if p.requires_grad])[1]  # weight guard
    warmup = int(round(optim.warmup_ratio * total_steps))
    sched = get_scheduler(optim.scheduler, opt, num_warmup_steps=warmup,
                          num_training_steps=max(total_steps, 1))
    return opt, sched


def clip_grad(accelerator, params, max_norm: float) -> float:
    """Clip the global gradient norm to ``max_norm`` (no clipping when <= 0); returns the norm before
    clipping (computed either way, so that a non-finite gradient is always seen)."""
    norm = accelerator.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(norm) if norm is not None else 0.0


def optimizer_step(accelerator, params, optimizer, scheduler, max_norm: float, *, step: int | None = None,
                   what: str = "model") -> float:
    """Clip the global gradient norm, step the optimiser and the schedule, clear gradients.

    Raises ``NumericalError`` (before touching the weights) when the gradient norm is not finite, and
    after the update when a parameter is no longer finite. Returns the gradient norm before clipping."""
    params = [p for p in params if p.requires_grad]
    norm = clip_grad(accelerator, params, max_norm)
    if not math.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        raise NumericalError(f"step {step}: {what} gradient norm is {norm}; the update was not applied "
                             "(lower the learning rate, check the data and the score models)", step, f"{what}.grad")
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimiser
    if getattr(inner, "initial_max_abs", None) is None:  # an optimiser not built by build_optimizer
        inner.initial_max_abs = weight_stats(params)[1]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    bad, max_abs = weight_stats(params)
    if bad:
        raise NumericalError(f"step {step}: {what} parameters became non-finite after the update ({bad} of "
                             f"{len(params)} tensors); nothing was saved from this step (lower the learning rate)",
                             step, f"{what}.parameters")
    limit = weight_limit(inner.initial_max_abs)
    if max_abs > limit:
        raise NumericalError(f"step {step}: {what} weights exploded after the update: max |w| = {max_abs:.3g}, over "
                             f"the limit {limit:.3g} ({WEIGHT_GROWTH_LIMIT:g} x max(1, max |w| before training = "
                             f"{inner.initial_max_abs:.3g})); nothing was saved from this step (lower the learning "
                             "rate)", step, f"{what}.parameters")
    return norm


WEIGHT_GROWTH_LIMIT = 1e4  # max |w| may grow to this factor of its value before training (at least 1), no further


def weight_limit(initial_max_abs: float, factor: float = WEIGHT_GROWTH_LIMIT) -> float:
    """The largest |w| a trained model may hold: ``factor`` x the largest before training (a floor of 1, so
    that zero-initialised weights such as LoRA's B may still learn)."""
    return factor * max(float(initial_max_abs), 1.0)


def weight_stats(params) -> tuple[int, float]:
    """(how many of ``params`` hold a NaN or an infinity, the largest |w| over all of them); one device sync."""
    params = [p for p in params if p.numel()]
    if not params:
        return 0, 0.0
    per_tensor = torch.stack([p.detach().abs().max().float() for p in params])
    finite = torch.isfinite(per_tensor)
    bad = int((~finite).sum())
    return bad, float(per_tensor[finite].max()) if bad < len(params) else math.inf


def bad_values(t: torch.Tensor, limit: float = math.inf) -> tuple[int, int, float] | None:
    """The values of ``t`` that are NaN, ±inf or larger than ``limit`` in magnitude, as (how many, flat
    index of the first, its value); None when there is none. One device sync when all are fine."""
    flat = t.detach().flatten()
    bad = ~torch.isfinite(flat) | (flat.abs() > limit)
    if not bool(bad.any()):
        return None
    first = int(bad.nonzero()[0, 0])
    return int(bad.sum()), first, float(flat[first])


def assert_finite(step: int | None, **tensors: Any) -> None:
    """Raise ``NumericalError`` naming ``step`` and the first of ``tensors`` (tensors or floats; None is
    skipped) that holds a NaN or an infinity."""
    for name, value in tensors.items():
        if value is None:
            continue
        t = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        found = bad_values(t)
        if found is not None:
            kinds = "nan" if bool(torch.isnan(t).any()) else "inf"
            raise NumericalError(f"step {step}: {name} is not finite ({found[0]} of {t.numel()} values are {kinds}); "
                                 "training stopped, the last checkpoint is kept", step, name)


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off everywhere in ``model``: nn.Dropout modules and the float attention-dropout rates that some
    attention implementations read in training mode. Train and eval mode then compute the same function (the
    saved config keeps its rates)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        for name in ("attention_dropout", "dropout"):
            if isinstance(getattr(m, name, None), float):
                setattr(m, name, 0.0)


@contextlib.contextmanager
def _quiet_logger(name: str):
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


class Checkpointer:
    """Atomic, resumable checkpoints in ``out/checkpoint`` through ``accelerator.save_state``: models,
    optimisers, schedulers, every rank's RNG states and the objects registered with
    ``register_for_checkpointing`` (the loop position), plus one ``rank_state_<k>.pt`` per rank for
    state that differs between ranks (PPO: λ and its cost window). The folder is swapped in atomically: a kill during a save leaves
    the previous checkpoint in place.

    A model with frozen parameters (LoRA: the base) keeps only its trained parameters and its buffers, in
    ``trained_<i>.safetensors`` (its ``model_<i>`` file is empty): the frozen weights are those the run loads
    from its model path again on resume, so the checkpoint of a LoRA run on SmolLM2 is megabytes, not a copy
    of the 540 MB base. Fully trained models are saved whole, as accelerate does."""

    def __init__(self, accelerator, out_dir: str | Path):
        self.acc, self.dir = accelerator, Path(out_dir) / "checkpoint"
        if not getattr(accelerator, "_saferlhf_trained_only", False):  # once per accelerator
            accelerator.register_save_state_pre_hook(lambda models, weights, d: _save_trained_only(
                accelerator, models, weights, d))
            accelerator.register_load_state_pre_hook(lambda models, d: _load_trained_only(models, d))
            accelerator._saferlhf_trained_only = True

    def exists(self) -> bool:
        return (self.dir / "COMPLETE").exists()

    def save(self, rank_state: dict[str, Any] | None = None) -> None:
        import shutil

        acc = self.acc
        tmp = self.dir.parent / ".checkpoint.tmp"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)  # a save killed half-way
        acc.wait_for_everyone()
        with _quiet_logger("accelerate.utils.other"):  # "Removed shared tensor": tied embeddings, expected
            acc.save_state(str(tmp))
        if rank_state is not None:
            torch.save(rank_state, tmp / f"rank_state_{acc.process_index}.pt")
        acc.wait_for_everyone()
        fault_point("checkpoint")
        if acc.is_main_process:
            (tmp / "COMPLETE").write_text("")
            atomic_save_dir(lambda d: [p.rename(d / p.name) for p in tmp.iterdir()], self.dir)
            tmp.rmdir()
        acc.wait_for_everyone()

    def load(self) -> dict[str, Any] | None:
        """Restore everything ``save`` wrote; returns this rank's ``rank_state`` (None if none was saved).

        A checkpoint written by another number of processes is a ``UserError``: accelerate keeps one RNG
        state per rank, and per-rank state (a cost window) cannot be dealt out to a different count."""
        from saferlhf.errors import UserError

        saved = len(list(self.dir.glob("random_states_*.pkl")))
        if saved != self.acc.num_processes:
            raise UserError(f"{self.dir} was written by {saved} processes; resume it with {saved}, "
                            f"not {self.acc.num_processes}")
        self.acc.load_state(str(self.dir))
        path = self.dir / f"rank_state_{self.acc.process_index}.pt"
        return torch.load(path, weights_only=False) if path.exists() else None


TRAINED_FILE = "trained_{}.safetensors"  # the trained part of model i of a checkpoint (`Checkpointer`)


def frozen_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of ``model``'s parameters that are not trained (tied names included)."""
    return {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def _save_trained_only(acc, models: list, weights: list, output_dir: str) -> None:
    """accelerate's save-state hook: a model with frozen parameters is written as its trained part alone."""
    from safetensors.torch import save_file

    if len(weights) != len(models):  # DeepSpeed / FSDP write their own files
        return
    for i, model in enumerate(models):
        frozen = frozen_names(model)
        if not frozen:
            continue
        kept = {k: v.detach().cpu().clone() for k, v in weights[i].items() if k not in frozen}  # no shared storage
        if acc.is_main_process:
            save_file(kept, str(Path(output_dir) / TRAINED_FILE.format(i)), metadata={"format": "pt"})
        weights[i] = {}


def _load_trained_only(models: list, input_dir: str) -> None:
    """accelerate's load-state hook: load each ``trained_<i>`` file into model i (every trained parameter must be
    there) and hand accelerate an empty placeholder for its empty ``model_<i>`` file."""
    from safetensors.torch import load_file

    from saferlhf.errors import UserError

    for i, model in enumerate(models):
        path = Path(input_dir) / TRAINED_FILE.format(i)
        if not path.exists():
            continue
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
        missing = sorted(set(missing) - frozen_names(model))
        if missing or unexpected:
            raise UserError(f"{path} does not fit the run's model {i}: " + "; ".join(
                f"{what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                for what, names in (("missing", missing), ("unexpected", list(unexpected))) if names),
                hint="resume with the settings (LoRA included) the checkpoint was written with")
        models[i] = torch.nn.Module()


def start_run_on_every_rank(acc, cfg, command: str) -> Path:
    """The run-folder rule (`tracking.start_run`) on every rank: the other ranks check the folder before the
    main process writes (or, with overwrite, deletes) it, so that all of them judge the same folder."""
    from saferlhf.tracking import start_run

    kw = dict(resume=cfg.resume, overwrite=cfg.overwrite, allow_config_change=cfg.allow_config_change)
    if not acc.is_main_process:
        start_run(cfg.out, cfg, command, is_main=False, **kw)
    acc.wait_for_everyone()
    if acc.is_main_process:
        start_run(cfg.out, cfg, command, is_main=True, **kw)
    acc.wait_for_everyone()
    return Path(cfg.out)


def restore_loop(acc, out: Path, logger, resume: bool, command: str) -> tuple[Any, Checkpointer, dict | None]:
    """The loop position (registered for checkpointing), the checkpointer of ``out`` and this rank's saved
    ``rank_state`` (None when none was loaded). On resume: the checkpoint, if any, is loaded (models,
    optimisers, schedules, RNG states, step, rank state), and the metrics rows that the killed run logged
    after it (all of them, without a checkpoint) are dropped."""
    from saferlhf.batching import LoopState

    state, ckpt, rank_state = LoopState(), Checkpointer(acc, out), None
    acc.register_for_checkpointing(state)
    if resume and ckpt.exists():
        rank_state = ckpt.load()
        if acc.is_main_process:
            print(f"{command}: resumed from {ckpt.dir} at step {state.step}")
    elif resume and acc.is_main_process:
        print(f"{command}: {out} has no checkpoint yet: starting from step 0")
    if resume:
        logger.truncate_after(state.step)
    return state, ckpt, rank_state
