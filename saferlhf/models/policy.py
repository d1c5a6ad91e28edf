"""The policy role: load a causal LM with its tokenizer (pad, eos and generation ids set), save it atomically."""

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
    (for generation) unless told otherwise.
    """
    from transformers import AutoModelForCausalLM

    check_model_path(path, "policy")
    check_model_kind(path, "policy", "policy")
    tokenizer = load_tokenizer(path, padding_side=padding_side)
    with quiet_hf(progress_only=True), loading(path, "policy"):
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    fit_embeddings(model, tokenizer)  # a pad token added by load_tokenizer
    set_generation_ids(model, tokenizer)
    if gradient_checkpointing:
        enable_checkpointing(model)
    if device is not None:
        model.to(device)
    return model, tokenizer



def save_policy(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Save a causal LM and its tokenizer as one HF folder, atomically (never with non-finite weights); LoRA
    adapters are merged into a plain copy first."""
    from saferlhf.models.lora import merge_lora

    model = merge_lora(model)
    check_finite_weights(model, f"the policy to {path}")

    def write(tmp: Path) -> None:
        with quiet_hf(progress_only=True):
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_save_dir(write, path)


