"""Tiny causal LMs created from a config (Llama, Qwen2, GPT-2 layouts) for tests, the demo and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Literal

import torch

from saferlhf.files import atomic_save_dir
from saferlhf.models.hf import quiet_hf, set_generation_ids
from saferlhf.models.tokenizers import train_tokenizer

Arch = Literal["llama", "qwen2", "gpt2"]


def create_tiny_model(
    tokenizer: Any,
    arch: Arch = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
):
    """A randomly initialised causal LM (fp32, tied embeddings), deterministic for a seed.

    Vocabulary size and pad/bos/eos ids come from the tokenizer. ``intermediate_size`` defaults to
    ``4 * hidden_size``. The global torch RNG is left untouched.
    """
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    inter = intermediate_size or 4 * hidden_size
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    if arch in ("llama", "qwen2"):
        cls = LlamaConfig if arch == "llama" else Qwen2Config
        config = cls(hidden_size=hidden_size, intermediate_size=inter, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, num_key_value_heads=num_heads,
                     max_position_embeddings=max_position_embeddings, **ids)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden_size, n_inner=inter, n_layer=num_layers, n_head=num_heads,
                            n_positions=max_position_embeddings, **ids)
    else:
        raise ValueError(f"unknown arch {arch!r}; expected 'llama', 'qwen2' or 'gpt2'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    set_generation_ids(model, tokenizer)
    return model


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    arch: Arch = "llama",
    vocab_size: int = 2048,
    seed: int = 0,
    **size: Any,
) -> Path:
    """Train a tokenizer on ``texts``, create a tiny model (``**size``: see `create_tiny_model`) and
    save both to ``out_dir`` atomically. Returns ``out_dir``."""
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.model_max_length = size.get("max_position_embeddings", 512)
    model = create_tiny_model(tokenizer, arch=arch, seed=seed, **size)

    def save(tmp: Path) -> None:
        with quiet_hf(progress_only=True):
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_save_dir(save, out_dir)

