"""The policy role: load a causal LM with its tokenizer (pad, eos and generation ids set), save it atomically.

A policy folder is a full HF model, or a LoRA adapter folder (``adapter_config.json`` naming its base; written by
``--lora.merge_on_save false``), which loads as its base with the adapter merged in (`saferlhf.models.lora`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from saferlhf.files import atomic_save_dir
from saferlhf.models.hf import (check_finite_weights, check_model_kind, check_model_path, enable_checkpointing,
                                fit_embeddings, loading, quiet_hf, set_generation_ids)
from saferlhf.models.tokenizers import load_tokenizer


def load_policy(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    gradient_checkpointing: bool = False,
    padding_side: str = "left",
):
    """Load a causal LM and its tokenizer -> (model, tokenizer).

    ``model.generation_config`` gets the tokenizer's pad and eos ids; the tokenizer pads on the left
    (for generation) unless told otherwise. An adapter folder gives its base with the adapter merged in (a plain
    model) and the folder's own tokenizer.
    """
    model, tokenizer = _load(path, dtype, padding_side, depth=0)
    if gradient_checkpointing:
        enable_checkpointing(model)
    if device is not None:
        model.to(device)
    return model, tokenizer


def _load(path: str | Path, dtype: torch.dtype, padding_side: str, depth: int):
    from transformers import AutoModelForCausalLM

    from saferlhf.errors import UserError
    from saferlhf.models.lora import MAX_ADAPTER_DEPTH, adapter_base, is_adapter_folder, load_adapter

    check_model_path(path, "policy")
    adapter = is_adapter_folder(path)
    base = None
    if adapter:
        if depth >= MAX_ADAPTER_DEPTH:
            raise UserError(f"policy: {path}: more than {MAX_ADAPTER_DEPTH} LoRA adapter folders stacked over "
                            "one another (or a loop); merge one (--lora.merge_on_save true)")
        base = _load(adapter_base(path), dtype, padding_side, depth + 1)[0]
    else:
        check_model_kind(path, "policy", "policy")
    tokenizer = load_tokenizer(path, padding_side=padding_side)
    with quiet_hf(progress_only=True), loading(path, "policy"):
        model = load_adapter(base, path) if adapter else AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    fit_embeddings(model, tokenizer)  # a pad token added by load_tokenizer
    set_generation_ids(model, tokenizer)
    return model, tokenizer



def save_policy(model: Any, tokenizer: Any, path: str | Path, merge: bool = True) -> Path:
    """Save a causal LM and its tokenizer as one HF folder, atomically (never with non-finite weights). A LoRA
    model is merged into a plain copy first, or with ``merge=False`` saved as its adapter alone (an adapter
    folder that `load_policy` and peft's ``PeftModel.from_pretrained(base, path)`` read)."""
    from saferlhf.models.lora import merge_lora, save_adapter

    adapter = not merge and hasattr(model, "peft_config")
    model = model if adapter else merge_lora(model)
    check_finite_weights(model, f"the policy to {path}")

    def write(tmp: Path) -> None:
        with quiet_hf(progress_only=True):
            if adapter:
                save_adapter(model, tmp)
            else:
                model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_save_dir(write, path)


