"""Tokenisation and padding shared by every recipe (one formatting for SFT, score models and RL).

A (prompt, response) example is encoded as ``ids(format_prompt(prompt)) + ids(response) + [eos]``:
the prompt and the response are tokenised separately so that the prompt tokens are exactly the
tokens a policy is conditioned on at generation time.

Training order (SFT and score models): each epoch's batches are a pure function of (seed, epoch)
(`epoch_rng`), so that a resumed run finds its data position from the step alone (`batch_stream`); every
global batch is dealt out to the processes by `rank_share`.
"""

from __future__ import annotations

import random
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


@torch.no_grad()
def text_end_scores(score_model, tokenizer, prompts: Sequence[str], responses: Sequence[str], max_length: int = 512,
                    batch_size: int = 64) -> torch.Tensor:
    """[N] end scores of (prompt, response) texts, encoded exactly as score models are trained
    (``encode_example``: prompt + response + eos), right-padded, on the model's device."""
    device = next(score_model.parameters()).device
    out = []
    for i in range(0, len(prompts), batch_size):
        seqs = [encode_example(tokenizer, p, r, max_length)[0]
                for p, r in zip(prompts[i: i + batch_size], responses[i: i + batch_size])]
        ids, mask = pad(seqs, tokenizer.pad_token_id)
        out.append(score_model(ids.to(device), mask.to(device)).end_scores.float())
    return torch.cat(out) if out else torch.zeros(0, device=device)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding: cumsum(mask) - 1, clamped at 0 (the reference ignored this)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)



# --------------------------------------------------------------------------------------------------
# Length grouping and padding-free packing (score-model training)
# --------------------------------------------------------------------------------------------------
def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng, mega_batches: int = 50) -> list[list[int]]:
    """Indices ``0..n-1`` cut into batches of similar length, for one epoch.

    Shuffle, sort each mega-batch of ``mega_batches * batch_size`` items by length (longest first;
    ties keep the shuffled order), cut it into batches, then shuffle the order of all batches. Only the
    last batch of the epoch can be short. Deterministic for the state of ``rng`` (a `random.Random`).
    """
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    mega = max(1, batch_size * max(1, mega_batches))
    batches: list[list[int]] = []
    for start in range(0, len(idx), mega):
        group = sorted(idx[start: start + mega], key=lambda i: -lengths[i])
        batches += [group[j: j + batch_size] for j in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token lists, leaving each at least one token of its own."""
    k, stop = 0, min(len(a), len(b)) - 1
    while k < stop and a[k] == b[k]:
        k += 1
    return k


def pack_pairs(chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]],
               share_prefix: bool = True) -> dict:
    """Padding-free batch of B pairs: every token of the batch in ONE row, no padding.

    Layout per pair: ``[common prefix | rest of chosen | rest of rejected]`` when ``share_prefix``
    (the prompt, and anything else both sequences start with, is computed once), else
    ``[chosen | rejected]``. Position ids restart at 0 for every sequence; the rejected part continues
    from the end of the prefix, so every token sees exactly the positions it has in its own sequence.

    Returns ``input_ids`` and ``position_ids`` [1, N], ``ends`` [2B] (the index of the last token of
    chosen 0..B-1, then rejected 0..B-1: where the score is read) and ``segments``: the attention
    pieces, a tuple of ``(ranges, keep)``. Each piece is causal self-attention over the concatenation
    of its token ``ranges`` (``(start, end)`` pairs); its outputs from position ``keep`` on, taken
    piece after piece, are the outputs of positions 0..N-1 in order. A chosen sequence is one piece;
    a rejected sequence after a shared prefix is the piece ``((prefix), (rest))`` keeping the rest.
    """
    if len(chosen) != len(rejected):
        raise ValueError(f"pack_pairs: {len(chosen)} chosen but {len(rejected)} rejected sequences")
    B = len(chosen)
    ids: list[int] = []
    pos: list[int] = []
    segments = []
    ends = [0] * (2 * B)
    for i, (a, b) in enumerate(zip(chosen, rejected)):
        if not len(a) or not len(b):
            raise ValueError("pack_pairs: empty sequence")
        s, k = len(ids), shared_prefix_length(a, b) if share_prefix else 0
        ids += list(a)
        pos += range(len(a))
        segments.append((((s, s + len(a)),), 0))
        ends[i] = s + len(a) - 1
        r = s + len(a)  # start of the rejected part
        ids += list(b[k:])
        pos += range(k, len(b))
        segments.append((((s, s + k), (r, r + len(b) - k)), k) if k else (((r, r + len(b)),), 0))
        ends[B + i] = r + len(b) - k - 1
    return {"input_ids": torch.tensor([ids], dtype=torch.long), "position_ids": torch.tensor([pos], dtype=torch.long),
            "ends": torch.tensor(ends, dtype=torch.long), "segments": tuple(segments)}


# --------------------------------------------------------------------------------------------------
# Batch order and the per-rank share of a batch (SFT and score-model training)
# --------------------------------------------------------------------------------------------------
def epoch_rng(seed: int, epoch: int):
    """The `random.Random` that orders epoch ``epoch``: a pure function of (seed, epoch), so that the
    step alone locates the data position on resume."""
    return random.Random(f"saferlhf-epoch/{seed}/{epoch}")


def batch_stream(make_epoch, start_step: int = 0):
    """Yield ``(epoch, batch)`` forever from ``make_epoch(epoch) -> list of batches``, skipping the first
    ``start_step`` batches (resume). An epoch without batches is an error, not an endless loop."""
    epoch, skip = 0, start_step
    while True:
        batches = make_epoch(epoch)
        if not batches:
            raise RuntimeError(f"epoch {epoch} has no batches (empty training set)")
        if skip >= len(batches):
            skip -= len(batches)
        else:
            for b in batches[skip:]:
                yield epoch, b
            skip = 0
        epoch += 1


def rank_share(rows: Sequence, rank: int, world: int) -> tuple[list, float]:
    """This rank's rows of a global batch and the weight of its loss.

    Rows are dealt out strided (``rows[rank::world]``). A short last batch can leave a rank without rows:
    it gets ``rows[:1]`` with weight 0, so that every rank still runs forward and backward together (DDP)
    and no row counts twice; the other ranks get weight ``world / ranks with rows``, so that the DDP
    average of the weighted losses is the mean over the ranks that hold rows (weight 1 for full batches)."""
    mine = list(rows[rank::world])
    if not mine:
        return list(rows[:1]), 0.0
    return mine, world / min(len(rows), world)


class LoopState:
    """Optimiser steps done: registered with accelerate so that checkpoints record the loop position."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
