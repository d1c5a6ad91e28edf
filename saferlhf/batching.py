"""Tokenisation and padding shared by every recipe (one formatting for SFT, score models and RL).

A (prompt, response) example is encoded as ``ids(format_prompt(prompt)) + ids(response) + [eos]``:
the prompt and the response are tokenised separately so that the prompt tokens are exactly the
tokens a policy is conditioned on at generation time.
"""

from __future__ import annotations

from typing import Sequence

import torch


def encode_prompt(tokenizer, prompt: str, max_prompt_length: int | None = None) -> list[int]:
    """Token ids of the chat-formatted prompt (keeps the END of over-long prompts)."""
    from saferlhf.models import format_prompt

    ids = tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=True)["input_ids"]
    if max_prompt_length is not None and len(ids) > max_prompt_length:
        ids = ids[-max_prompt_length:]
    return ids


def encode_example(tokenizer, prompt: str, response: str, max_length: int) -> tuple[list[int], int]:
    """(ids, n_prompt_tokens) of prompt + response + eos, truncated to ``max_length``.

    The prompt keeps at most ``max_length // 2`` tokens (its end); the response is cut at the end but
    always finishes with eos so that score models read their score at eos.
    """
    p = encode_prompt(tokenizer, prompt, max_prompt_length=max(max_length // 2, 1))
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    room = max_length - len(p) - 1
    r = r[: max(room, 0)] + [tokenizer.eos_token_id]
    return p + r, len(p)


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right",
        value_dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad lists of ids to a [B, T] tensor; returns (ids, attention_mask)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=value_dtype)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not len(s):
            continue
        if side == "right":
            ids[i, : len(s)] = torch.as_tensor(s, dtype=value_dtype)
            mask[i, : len(s)] = 1
        else:
            ids[i, T - len(s):] = torch.as_tensor(s, dtype=value_dtype)
            mask[i, T - len(s):] = 1
    return ids, mask


def sft_batch(examples: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with labels = ids on response tokens, -100 on prompt and padding."""
    ids, mask = pad([e[0] for e in examples], pad_id)
    labels = ids.clone()
    labels[mask == 0] = -100
    for i, (_, n_prompt) in enumerate(examples):
        labels[i, :n_prompt] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack_examples(examples: Sequence[tuple[list[int], int]], block: int) -> list[tuple[list[int], list[int]]]:
    """Greedy packing: concatenate examples into blocks of <= ``block`` tokens.

    Returns (ids, labels) per block, with -100 on prompt tokens. Examples are not split; attention
    crosses example boundaries inside a block (the usual cheap packing; documented in the SFT recipe).
    """
    blocks: list[tuple[list[int], list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    for e_ids, n_prompt in examples:
        e_labels = [-100] * n_prompt + list(e_ids[n_prompt:])
        if ids and len(ids) + len(e_ids) > block:
            blocks.append((ids, labels))
            ids, labels = [], []
        ids = ids + list(e_ids)
        labels = labels + e_labels
    if ids:
        blocks.append((ids, labels))
    return blocks


def packed_batch(blocks: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    ids, mask = pad([b[0] for b in blocks], pad_id)
    labels, _ = pad([b[1] for b in blocks], -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: cumsum(mask) - 1, clamped at 0 (the reference ignored this)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
