"""The annotator seams: anything that labels response pairs into PKU-SafeRLHF records (``Annotator``), or
one pair at a time into per-annotator ``Label``s (``Labeller``).

An ``Annotator`` has one method, ``annotate(pairs) -> (records, stats)``:

* ``pairs``: ``(prompt, response_0, response_1)`` tuples, or dicts with ``prompt``, ``response_0``,
  ``response_1`` and optional ``response_0_source`` / ``response_1_source`` (or one ``source``) and
  ``ended_0`` / ``ended_1`` (False: that response was cut off at the generation limit; ``label_pairs``
  copies the flags into the records, so score models train on cut-off answers as PPO scores them).
* ``records``: one PKU-SafeRLHF v1 dict per labelled pair, in the order of ``pairs``: ``prompt``,
  ``response_0``, ``response_1``, ``prompt_source``, ``response_{0,1}_source``,
  ``is_response_{0,1}_safe``, ``response_{0,1}_harm_category`` (the 14 ``HARM_CATEGORIES`` names ->
  bool), ``response_{0,1}_severity_level`` (0 = safe, 1-3), ``better_response_id``,
  ``safer_response_id``, ``response_{0,1}_sha256`` (``labels.RECORD_KEYS``; ``labels.aggregate``
  writes them from per-annotator ``Label``s). An annotator may skip a pair it cannot judge (e.g. two
  identical responses) and says so in ``stats``.
* ``stats``: a JSON-serialisable dict of whatever the annotator measured (agreement, audits, cost).

Implementations: ``saferlhf.world.AnnotatorPanel`` (simulated crowdworkers with the paper's quality
control) today; an LLM judge (RLAIF) and a human web app later. ``label_pairs`` runs any of them and
checks its records with the data loader's PKU-SafeRLHF rules, so every record it returns loads with
``saferlhf.data.loaders.load_safety_preferences``.

A ``Labeller`` (what ``saferlhf annotate run --annotator module:factory`` runs) has one method,
``label(pair) -> list[Label]`` (or one ``Label``):

* ``pair``: a dict with ``pair_id``, ``prompt`` (a string, or a message list for a conversation),
  ``response_0``, ``response_1``, ``response_0_source``, ``response_1_source``, ``prompt_source`` and, where
  a response was cut off, ``ended_0`` / ``ended_1`` False;
* the result: one ``saferlhf.annotate.labels.Label`` per annotator who labelled the pair (indices 0 / 1
  = response_0 / response_1; ``better`` / ``safer`` None = a tie; categories by canonical name or
  BeaverTails slug), with distinct ``annotator`` names; an empty list = the pair was not labelled (it
  is asked again when the run resumes). ``saferlhf.annotate.aggregate.aggregate_labels`` turns the
  labels of many pairs into records. The world's panel is one (``saferlhf.world.annotators.PanelLabeller``);
  a person in the annotation app is another producer of the same ``Label``s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

Pair = tuple[str, str, str] | dict[str, Any]  # (prompt, response_0, response_1) or a dict of them


@runtime_checkable
class Annotator(Protocol):
    """Labels response pairs into PKU-SafeRLHF records (see the module docstring for the contract)."""

    def annotate(self, pairs: Sequence[Pair]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(records, stats) for ``pairs``: one PKU-SafeRLHF v1 record per labelled pair, in order."""
        ...


@runtime_checkable
class Labeller(Protocol):
    """Labels one pair into per-annotator ``Label``s (see the module docstring for the contract)."""

    def label(self, pair: dict[str, Any]) -> Any:
        """The ``Label``s (a list, or one ``Label``) of ``pair``'s annotators; [] = not labelled."""
        ...


def label_pairs(annotator: Annotator, pairs: Sequence[Pair]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``annotator.annotate(pairs)``, with every record checked by the PKU-SafeRLHF load rules.

    Raises ``TypeError`` if ``annotator`` has no ``annotate`` method and ``ValueError`` naming the
    first record the data loader would reject (a missing or mistyped field, identical responses, a
    safer response labelled unsafe while the other is safe).
    """
    from saferlhf.data.validate import pku_issues

    if not isinstance(annotator, Annotator):
        raise TypeError(f"{type(annotator).__name__} is not an Annotator: it has no annotate(pairs) method")
    records, stats = annotator.annotate(pairs)
    records = carry_ended_flags(pairs, records)
    for k, rec in enumerate(records):
        errors = [i for i in pku_issues(rec) if i.severity == "error"] if isinstance(rec, dict) else None
        if errors is None or errors:
            why = "not a dict" if errors is None else "; ".join(f"{i.field}: {i.reason}" for i in errors)
            raise ValueError(f"{type(annotator).__name__} wrote a bad record #{k}: {why}")
    return records, stats


def _pair_key(prompt: Any, r0: str, r1: str) -> str:
    import json

    from saferlhf.data.schema import prompt_json

    return json.dumps([prompt_json(prompt), r0, r1])


def carry_ended_flags(pairs: Sequence[Pair], records: list[Any]) -> list[Any]:
    """``records`` with the ``ended_0`` / ``ended_1`` flags of their input pair (matched by prompt and the two
    responses), written where one is False (``schema.ended_fields``); records of other pairs unchanged."""
    from saferlhf.data.schema import ended_fields, parse_ended

    flags = {_pair_key(p["prompt"], p["response_0"], p["response_1"]):
             {"ended_0": parse_ended(p.get("ended_0")), "ended_1": parse_ended(p.get("ended_1"))}
             for p in pairs if isinstance(p, dict)}
    out = []
    for rec in records:
        key = _pair_key(rec["prompt"], rec["response_0"], rec["response_1"]) if isinstance(rec, dict) else None
        out.append(rec | ended_fields(flags[key]) if key in flags else rec)
    return out
