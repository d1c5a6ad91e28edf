"""Duplicate records of a file, found at load time.

Two records are the same item (``identity``) when they have the same prompt and the same responses, in
either order for pairs (an SFT record: the same prompt and response; a prompt record: the same prompt).

* An **exact duplicate** (same item, same labels) is a warning on the later line: kept, counted by
  ``saferlhf data check``; a split must keep both copies on the same side (``split_pairs``).
* A **contradictory duplicate** (same item, contradicting labels: the other response better or safer, a
  response labelled safe in one record and unsafe in the other, chosen and rejected swapped, a prompt
  labelled safe and unsafe) is an error on every line of the group, each naming a line it contradicts.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from saferlhf.data.schema import PreferencePair, PromptRecord, ResponsePair, SafetyPreference, SFTRecord
from saferlhf.data.validate import Problem, origin_location

_REASONS = {
    "better_response_id": "the other response is the better one",
    "safer_response_id": "the other response is the safer one",
    "chosen": "chosen and rejected are swapped",
}


def identity(record: Any) -> Hashable:
    """What makes two records the same item (see the module docstring)."""
    if isinstance(record, SafetyPreference | ResponsePair):
        return record.prompt, frozenset((record.response_0, record.response_1))
    if isinstance(record, PreferencePair):
        return record.prompt, frozenset((record.chosen, record.rejected))
    if isinstance(record, SFTRecord):
        return record.prompt, record.response
    if isinstance(record, PromptRecord):
        return (record.prompt,)
    raise TypeError(f"no identity for a {type(record).__name__}")


def conflicts(a: Any, b: Any) -> list[str]:
    """The fields of ``b`` whose labels contradict those of ``a``, a record with the same ``identity``."""
    if isinstance(b, SafetyPreference):
        fields = [name for name in ("better_response_id", "safer_response_id")
                  if b.response(getattr(b, name)) != a.response(getattr(a, name))]
        safe_in_a = {a.response(k): a.is_safe(k) for k in (0, 1)}
        return fields + [f"is_response_{k}_safe" for k in (0, 1) if safe_in_a[b.response(k)] != b.is_safe(k)]
    if isinstance(b, PreferencePair):
        if b.chosen != a.chosen:
            return ["chosen"]
        return [name for name in ("chosen_is_safe", "rejected_is_safe") if _differ(getattr(a, name), getattr(b, name))]
    if isinstance(b, PromptRecord):
        return ["label"] if _differ(a.label, b.label) else []
    return []


def _differ(x: Any, y: Any) -> bool:
    """Both known and different (a label missing in one record contradicts nothing)."""
    return x is not None and y is not None and x != y


def _same(record: Any) -> str:
    if isinstance(record, PromptRecord):
        return "prompt"
    return "prompt and response" if isinstance(record, SFTRecord) else "prompt and responses"


def find_duplicates(records: Sequence[Any]) -> list[Problem]:
    """Problems for the records that are the same item (``identity``) as another record, by line.

    Records need an ``origin`` ``"file:line"``. A group of exact duplicates: a warning on each line but the
    first, naming the first. A group whose labels contradict: on each member contradicting another, an
    error per contradicted field naming a line it contradicts (so ``on_error="drop"`` drops them all).
    """
    groups: dict[Hashable, list[Any]] = {}
    for record in records:
        groups.setdefault(identity(record), []).append(record)
    problems = [p for group in groups.values() if len(group) > 1 for p in _group_problems(group)]
    return sorted(problems, key=lambda p: p.line)


def _group_problems(group: list[Any]) -> list[Problem]:
    errors, clean = [], []
    for record in group:
        against: dict[str, Any] = {}  # contradicted field -> the first record contradicting it
        for other in group:
            for name in conflicts(other, record) if other is not record else ():
                against.setdefault(name, other)
        errors += [_conflict(record, name, other) for name, other in against.items()]
        if not against and record is not group[0]:
            clean.append(record)
    (_, first), same = origin_location(group[0].origin), _same(group[0])
    return errors + [Problem.at(r, "record", f"duplicate of line {first} (same {same}; kept)", "warning")
                     for r in clean]


def _conflict(record: Any, field: str, other: Any) -> Problem:
    reason = _REASONS.get(field, f"a different {field}")
    return Problem.at(record, field,
                      f"contradicts line {origin_location(other.origin)[1]} (same {_same(record)}, but {reason})")


__all__ = ["conflicts", "find_duplicates", "identity"]
