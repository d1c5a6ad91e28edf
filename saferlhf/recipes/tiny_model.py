"""Build a tiny HF causal LM for tests, the demo and benchmarks: a tokenizer trained on a corpus plus a
model created from a config (Llama, Qwen2 or GPT-2 architecture), saved with `save_pretrained`.

The corpus is the synthetic world's text (`corpus: world`) or any JSONL/text file: every string field
of JSONL records (prompt, response, chosen, ...) or every line of a text file.

Launch: `saferlhf tiny-model --out runs/tiny --arch llama --hidden_size 128`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from saferlhf.config import option


@dataclass
class TinyModelConfig:
    out: str = option("runs/tiny-model", "output folder for the model + tokenizer")
    corpus: str = option("world", "'world' (the synthetic world's text) or a .jsonl/.txt file to train the tokenizer on")
    world_seed: int = option(0, "seed of the synthetic world when corpus=world")
    arch: Literal["llama", "qwen2", "gpt2"] = option("llama", "HF architecture created from a config")
    vocab_size: int = option(2048, "BPE vocabulary size", ge=64)
    hidden_size: int = option(128, "hidden size", ge=1)
    num_layers: int = option(2, "transformer layers", ge=1)
    num_heads: int = option(4, "attention heads", ge=1)
    max_position_embeddings: int = option(512, "context length", ge=2)
    seed: int = option(0, "initialisation seed")


def corpus_texts(corpus: str, world_seed: int = 0) -> list[str]:
    """Texts to train a tokenizer on: the world's text or the string fields of a file."""
    if corpus == "world":
        from saferlhf.world import build_world

        return build_world(world_seed).text_corpus()
    path = Path(corpus)
    if not path.exists():
        raise FileNotFoundError(f"corpus file not found: {path}")
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: invalid JSON: {e.msg}") from None
            texts += [v for v in rec.values() if isinstance(v, str)]
        return texts
    return [line for line in path.read_text().splitlines() if line.strip()]


def run(cfg: TinyModelConfig) -> int:
    from saferlhf.models import build_tiny_model

    texts = corpus_texts(cfg.corpus, cfg.world_seed)
    path = build_tiny_model(cfg.out, texts, arch=cfg.arch, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                           num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                           max_position_embeddings=cfg.max_position_embeddings, seed=cfg.seed)
    print(f"tiny {cfg.arch} model ({cfg.hidden_size}x{cfg.num_layers}, vocab {cfg.vocab_size}) -> {path}")
    return 0
