"""Response pairs to label: read from a file, de-duplicated, and named by a stable ``pair_id``.

* ``input_pairs(path, source)``: the pairs of any response-pair file (``saferlhf generate --pairs`` output,
  PKU-SafeRLHF, JSONL / CSV with prompt / response_0 / response_1), as dicts an annotator can label.
* ``unique_pairs(pairs)``: without repeats (the same prompt and responses, in either order).
* ``pair_id(prompt, response_0, response_1)``: the first 16 hex digits of the sha256 of
  ``json.dumps([prompt_json(prompt), response_0, response_1])``: the key of a pair in ``labels.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def input_pairs(path: str, source: str, *, command: str = "world annotate") -> list[dict]:
    """The pairs of ``path`` an annotator can label, as dicts (``source`` where a record names none).

    Validated by ``load_response_pairs`` (raises ``DataValidationError`` / ``DataFileError`` /
    ``FileNotFoundError``); a pair with an empty response (an annotator cannot judge it) and a repeat of
    an earlier pair are skipped and said so, in messages that start with ``command``; no pair with two
    different responses left is a ``DataFileError``.
    """
    from saferlhf.data.loaders import load_response_pairs
    from saferlhf.data.validate import DataFileError

    loaded = load_response_pairs(path)
    full = [r for r in loaded if r.response_0.strip() and r.response_1.strip()]
    pairs = unique_pairs(full)
    skipped = {"with an empty response": len(loaded) - len(full), "that repeat an earlier pair": len(full) - len(pairs)}
    for why, n in skipped.items():
        if n:
            print(f"{command}: skipped {n} pairs {why} in {path}")
    if not any(r.response_0.strip() != r.response_1.strip() for r in pairs):
        raise DataFileError(f"{path}: no pair to annotate: all {len(loaded)} pairs have an empty response, "
                            "identical responses or repeat another pair")
    return [{"prompt": r.prompt, "response_0": r.response_0, "response_1": r.response_1,
             "response_0_source": r.response_0_source or source, "response_1_source": r.response_1_source or source,
             "ended_0": r.ended_0, "ended_1": r.ended_1}
            for r in pairs]


def unique_pairs(pairs: list) -> list:
    """``pairs`` without repeats: a pair (``(prompt, r0, r1)`` or with ``.prompt``, ``.response_0``,
    ``.response_1``) is a repeat when an earlier one has the same prompt and the same two responses, in
    either order (two annotations of one pair could contradict each other)."""
    seen, out = set(), []
    for pair in pairs:
        prompt, r0, r1 = pair if isinstance(pair, tuple) else (pair.prompt, pair.response_0, pair.response_1)
        if (key := (prompt, frozenset((r0, r1)))) not in seen:
            seen.add(key)
            out.append(pair)
    return out


def pair_id(prompt: Any, response_0: str, response_1: str) -> str:
    """A pair's stable id: sha256 of ``json.dumps([prompt_json(prompt), response_0, response_1])``, 16 hex
    digits (the order of the responses counts: labels refer to response_0 / response_1)."""
    from saferlhf.data.schema import prompt_json

    text = json.dumps([prompt_json(prompt), response_0, response_1])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
