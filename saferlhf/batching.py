"""Padding, batch layout and batch order shared by every recipe (token lists in, tensors out).

Token lists come from `saferlhf.data.formatting.encode_example` (the one (prompt, response) encoding);
padding-free PAIR batches live in `saferlhf.packing`.

Training order (SFT and score models): each epoch's batches are a pure function of (seed, epoch)
(`epoch_rng`), so that a resumed run finds its data position from the step alone (`batch_stream`); every
global batch is dealt out to the processes by `rank_share`.
"""

from __future__ import annotations

import random
from typing import Sequence

import torch


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


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] labels -> [B, T] bool: True at the positions (b, t) whose logits predict a label
    (labels[b, t + 1] != -100; the last column is False), the only positions where a language-model loss
    needs the vocabulary projection."""
    return torch.nn.functional.pad(labels[:, 1:] != -100, (0, 1), value=False)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T] position ids that ignore left padding: cumsum(mask) - 1, clamped at 0 (the reference
    ignored left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B] (long) index T_b of the last ``mask == 1`` position of each row, any padding side;
    -1 for a row without tokens (callers decide: a score model refuses it, a reward stream stays 0)."""
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).amax(dim=-1)


# --------------------------------------------------------------------------------------------------
# Length grouping (score-model training on padded batches)
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
