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
from saferlhf.errors import UserError


@dataclass
class TinyModelConfig:
    out: str = option("runs/tiny-model", "output folder for the model + tokenizer")
    corpus: str = option("world", "'world' (the synthetic world's text) or a .jsonl/.txt file to train the tokenizer on")
    world_seed: int = option(0, "seed of the synthetic world when corpus=world")
    world_adversarial: bool = option(False, "corpus=world: also the world's adversarial prompt wrappers (red-teaming)")
    arch: Literal["llama", "qwen2", "gpt2"] = option("llama", "HF architecture created from a config")
    vocab_size: int = option(2048, "BPE vocabulary size", ge=64)
    hidden_size: int = option(128, "hidden size", ge=1)
    num_layers: int = option(2, "transformer layers", ge=1)
    num_heads: int = option(4, "attention heads", ge=1)
    max_position_embeddings: int = option(512, "context length", ge=2)
    seed: int = option(0, "initialisation seed")
    overwrite: bool = option(False, "replace an existing folder at out (otherwise it is refused)")


def corpus_texts(corpus: str, world_seed: int = 0, adversarial_prompts: bool = False) -> list[str]:
    """Texts to train a tokenizer on: the world's text or the string fields of a file."""
    if corpus == "world":
        from saferlhf.world import build_world

        return build_world(world_seed).text_corpus(adversarial_prompts)
    path = Path(corpus)
    if not path.is_file():
        raise UserError(f"tiny-model: corpus: {path} is not a file", hint="give 'world' or a .jsonl/.txt file")
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(_read_text(path).splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: invalid JSON: {e.msg}") from None
            strings = [v for v in rec.values() if isinstance(v, str)] if isinstance(rec, dict) else []
            if any(_has_surrogate(v) for v in strings):
                raise UserError(f"{path}:{n}: text holds an unpaired UTF-16 surrogate (invalid Unicode)")
            texts += strings
    else:
        texts = [line for line in _read_text(path).splitlines() if line.strip()]
    if not texts:
        raise UserError(f"tiny-model: corpus: {path} holds no text to train a tokenizer on")
    return texts


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"tiny-model: corpus: {path} is not UTF-8 text (byte {e.start})") from None


def run(cfg: TinyModelConfig) -> int:
    from saferlhf.models.tiny import build_tiny_model

    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise UserError(f"tiny-model: {out} already exists", hint="pass --overwrite true to replace it, or choose "
                                                                  "another --out")
    from saferlhf.files import check_writable, replaceable_model_folder

    replaceable_model_folder(out, "tiny-model")  # --overwrite replaces a model folder, nothing else
    check_writable(out.parent, "tiny-model")
    if cfg.hidden_size % cfg.num_heads:
        raise UserError(f"tiny-model: hidden_size {cfg.hidden_size} is not a multiple of num_heads {cfg.num_heads}")
    texts = corpus_texts(cfg.corpus, cfg.world_seed, cfg.world_adversarial)
    path = build_tiny_model(cfg.out, texts, arch=cfg.arch, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                           num_layers=cfg.num_layers, num_heads=cfg.num_heads,
                           max_position_embeddings=cfg.max_position_embeddings, seed=cfg.seed)
    print(f"tiny {cfg.arch} model ({cfg.hidden_size}x{cfg.num_layers}, vocab {cfg.vocab_size}) -> {path}")
    return 0
