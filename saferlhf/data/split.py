"""A held-out split disjoint from training: ``split_pairs`` groups records by prompt.

Splitting pair by pair would put copies of a duplicated pair (and other pairs of the same prompt) on both
sides, so held-out accuracy would partly measure memorisation. Grouping by prompt keeps every prompt, and
so every duplicate, on one side only.

``split_by_prompt`` goes further for data drawn from several files: the part of a prompt is a function of the
prompt alone (``prompt_bucket``, from its sha256), so a test prompt of one file is a test prompt of every file.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")  # any record with a ``prompt`` (PreferencePair, SFTRecord, ...)


def split_pairs(pairs: Sequence[T], eval_ratio: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """(train, eval) with about ``eval_ratio`` of the pairs held out, no prompt on both sides.

    Prompts (compared after stripping surrounding whitespace) are shuffled with ``seed`` and moved to eval
    until it holds ``round(eval_ratio * len(pairs))`` pairs or more; one prompt always stays in train.
    Deterministic for a seed; both lists keep the input order. ``eval_ratio`` must be in [0, 1).
    """
    if not 0 <= eval_ratio < 1:
        raise ValueError(f"eval_ratio must be in [0, 1), got {eval_ratio!r}")
    sizes: dict[str, int] = {}
    for p in pairs:
        sizes[p.prompt.strip()] = sizes.get(p.prompt.strip(), 0) + 1
    prompts = list(sizes)
    random.Random(seed).shuffle(prompts)
    target, held, n_held = round(eval_ratio * len(pairs)), set(), 0
    for prompt in prompts[:-1]:
        if n_held >= target:
            break
        held.add(prompt)
        n_held += sizes[prompt]
    train = [p for p in pairs if p.prompt.strip() not in held]
    return train, [p for p in pairs if p.prompt.strip() in held]


def split_for_training(pairs: Sequence[T], eval_ratio: float, seed: int, command: str,
                       train_file: str) -> tuple[list[T], list[T]]:
    """`split_pairs` for a training command: a ``UserError`` naming ``train_file`` when the split leaves no pair
    to train on, or (``eval_ratio`` > 0) holds out none."""
    from saferlhf.errors import UserError

    train, held_out = split_pairs(pairs, eval_ratio, seed)
    where = f"{command}: train_file: {train_file}: eval_ratio {eval_ratio}"
    if not train:
        raise UserError(f"{where} leaves no pair to train on", hint="lower --eval_ratio or give --eval_file")
    if eval_ratio > 0 and not held_out:
        raise UserError(f"{where} holds out no pair ({len(pairs)} pairs; the split keeps every prompt on one side "
                        "and at least one prompt for training)",
                        hint="pass --eval_ratio 0 to train without a held-out evaluation, or give --eval_file")
    return train, held_out


__all__ = ["prompt_bucket", "prompt_hash", "prompt_key", "split_by_prompt", "split_for_training", "split_in_range",
           "split_pairs"]


def prompt_hash(prompt: str) -> str:
    """sha256 of a prompt's text, stripped: the key `score-model` stores per training prompt
    (``RUN/training_prompts.json``) so that calibration can tell held-out prompts from trained ones."""
    import hashlib

    return hashlib.sha256(prompt.strip().encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- splits that agree across files


def prompt_key(prompt: str) -> str:
    """The text a prompt is identified by across files: a plain prompt stripped; a `Conversation` its messages as
    canonical JSON (so two conversations with the same turns match, whatever their display text)."""
    import json

    from saferlhf.data.schema import Conversation

    if isinstance(prompt, Conversation):
        return json.dumps([[m["role"], m["content"]] for m in prompt.messages], ensure_ascii=False)
    return str(prompt).strip()


def prompt_bucket(prompt: str) -> float:
    """A number in [0, 1) from the sha256 of the prompt (`prompt_key`): its first 64 bits / 2**64. The same prompt
    gets the same bucket on every run, machine and file."""
    import hashlib

    digest = hashlib.sha256(prompt_key(prompt).encode("utf-8")).hexdigest()
    return int(digest[:16], 16) / 2**64


def split_by_prompt(records: Sequence[T], test_ratio: float, eval_ratio: float) -> tuple[list[T], list[T], list[T]]:
    """(train, eval, test) of records with a ``prompt``, by `prompt_bucket`: test = bucket < ``test_ratio``,
    eval = ``test_ratio`` <= bucket < ``test_ratio + eval_ratio``, train = the rest; each keeps the input order.

    Records sharing a prompt always land together, and a prompt lands in the same part in every file, so a prompt
    held out of one source stays held out of every other (prompts repeat within and across the PKU-SafeRLHF and
    BeaverTails files). The parts hold about the ratios of the PROMPTS, not exactly of the records.
    """
    from saferlhf.errors import UserError

    for name, ratio in (("test_ratio", test_ratio), ("eval_ratio", eval_ratio)):
        if not 0 <= ratio <= 1:
            raise UserError(f"split_by_prompt: {name} must be in [0, 1], got {ratio!r}")
    if test_ratio + eval_ratio > 1:
        raise UserError(f"split_by_prompt: test_ratio + eval_ratio must be <= 1, got {test_ratio} + {eval_ratio}")
    parts: tuple[list[T], list[T], list[T]] = ([], [], [])
    for r in records:
        bucket = prompt_bucket(r.prompt)
        parts[2 if bucket < test_ratio else 1 if bucket < test_ratio + eval_ratio else 0].append(r)
    return parts


def split_in_range(records: Sequence[T], prompt_range: Sequence[float], test_ratio: float,
                   eval_ratio: float) -> tuple[list[T], list[T], list[T], list[T]]:
    """(train, eval, test, outside) by `prompt_bucket`, for a model allowed only the prompts whose bucket is in
    ``prompt_range`` [lo, hi): records outside it come last (another model's part, or a benchmark's test set);
    inside it the bucket is rescaled to [0, 1) and split as `split_by_prompt` does. Two models given disjoint
    ranges never share a prompt (the shipped cost model and its independent judge: configs/minilm/)."""
    lo, hi = prompt_range
    inside: list[T] = []
    outside: list[T] = []
    for r in records:
        (inside if lo <= prompt_bucket(r.prompt) < hi else outside).append(r)
    parts: tuple[list[T], list[T], list[T]] = ([], [], [])
    for r in inside:
        b = (prompt_bucket(r.prompt) - lo) / (hi - lo)
        parts[2 if b < test_ratio else 1 if b < test_ratio + eval_ratio else 0].append(r)
    return parts[0], parts[1], parts[2], outside
