"""Sentence embeddings from any HF encoder folder (e.g. all-MiniLM-L6-v2), for the diversity metrics of
`saferlhf eval` (mean pairwise embedding distance: `saferlhf.eval.diversity.mean_pairwise_cosine_distance`).

Pooling follows the folder's sentence-transformers description where there is one (``1_Pooling/config.json``:
``pooling_mode_cls_token`` / ``pooling_mode_mean_tokens`` / ``pooling_mode_max_tokens``); otherwise the mean of
the token states over the attention mask, which is what all-MiniLM-L6-v2 uses. Vectors are L2-normalised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

POOLINGS = ("mean", "cls", "max")


def pooling_mode(path: str | Path) -> str:
    """The pooling the model folder declares (sentence-transformers layout), else "mean"."""
    for cfg_path in sorted(Path(path).glob("*_Pooling/config.json")):
        try:
            cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError):
            break
        for key, mode in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                          ("pooling_mode_mean_tokens", "mean")):
            if cfg.get(key):
                return mode
    return "mean"


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, T, H] token states and a [B, T] mask -> [B, H] (mean / max over real tokens, or the first token)."""
    if mode not in POOLINGS:
        raise ValueError(f"pool: mode must be one of {POOLINGS}, got {mode!r}")
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class Embedder:
    """An encoder with its tokenizer and pooling: ``embed(texts)`` -> [N, H] unit vectors (fp32, no grad)."""

    def __init__(self, path: str | Path, max_length: int = 256, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        from saferlhf.models.hf import check_model_kind, check_model_path, loading, quiet_hf

        check_model_path(path, "embedding model")
        check_model_kind(path, "embedding", "embedding model")
        with loading(path, "embedding model"), quiet_hf():
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
        self.mode, self.max_length, self.batch_size, self.path = pooling_mode(path), max_length, batch_size, str(path)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.model.config.hidden_size)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        for start in range(0, len(texts), self.batch_size):
            rows = order[start: start + self.batch_size]
            enc: Any = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt")
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            out[rows] = torch.nn.functional.normalize(pool(hidden, enc["attention_mask"], self.mode), dim=-1)
        return out
