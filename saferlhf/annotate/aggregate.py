"""Many pairs' per-annotator labels as PKU-SafeRLHF records, with agreement statistics.

    records, stats = aggregate_labels(pairs, labels_by_pair, ties="drop")

Used by ``saferlhf annotate run`` and the annotation app's export, so that every producer of ``Label``s
(the simulated panel, a labeller module, people) ends in the same records and the same numbers.

* ``aggregate_labels``: per pair ``labels.aggregate(..., tie_break="unsafe")``: the majority of the votes
  that are not ties; an even split of a response's safety votes makes it UNSAFE; a harmlessness tie goes
  against the response with more unsafe votes (then the higher total severity); a helpfulness tie, or a
  harmlessness tie left after that, is dropped (``ties="drop"``) or kept as id 0 with
  ``better_response_tie`` / ``safer_response_tie`` True (``ties="keep"``; the PKU loader reads such
  records, ignoring the extra keys).
* ``load_labels``: the ``(pair_id, Label)`` lines of a ``labels.jsonl`` (``label_to_dict`` plus
  ``pair_id``), a bad line being a ``file:line: field: reason`` error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from saferlhf.annotate.labels import Label, aggregate, agreement, label_from_dict


def aggregate_labels(pairs: Sequence[dict[str, Any]], labels_by_pair: Mapping[str, Sequence[Label]], *,
                     ties: Literal["drop", "keep"] = "drop",
                     min_labels: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """PKU-SafeRLHF v1 records of ``pairs`` from their labels, in the order of ``pairs``, and statistics.

    ``pairs``: dicts with ``pair_id``, ``prompt`` (a string or a message list), ``response_0``,
    ``response_1``, ``response_0_source``, ``response_1_source``, ``prompt_source`` and optional
    ``ended_0`` / ``ended_1`` (copied into the records where False). ``labels_by_pair[pair_id]``: the
    pair's labels (most trusted annotator first). A pair with fewer than ``min_labels`` labels is not
    labelled (no record); a pair with identical responses has no record either (the PKU rules reject it).

    ``stats``: ``counts`` (``pairs``, ``labels``, ``labelled``, ``records``, ``ties_dropped``,
    ``safer_fixed``: safer ids made the only safe response, ``skipped_identical``), ``ties``,
    ``min_labels`` and ``agreement`` per question (``helpfulness``, ``harmlessness``, ``safety`` per
    response: ``pairwise_agreement``, ``fleiss_kappa``, ``krippendorff_alpha``, ``items``) over every
    labelled pair (those later dropped for a tie included).
    """
    from saferlhf.data.schema import ended_fields, parse_ended
    from saferlhf.data.validate import pku_issues

    if ties not in ("drop", "keep"):
        raise ValueError(f"ties {ties!r} is not 'drop' or 'keep'")
    if min_labels < 1:
        raise ValueError(f"min_labels must be >= 1, got {min_labels}")
    counts = dict.fromkeys(("pairs", "labels", "labelled", "records", "ties_dropped", "safer_fixed",
                            "skipped_identical"), 0)
    counts["pairs"] = len(pairs)
    records, rated = [], []
    for pair in pairs:
        labels = list(labels_by_pair.get(pair["pair_id"], ()))
        counts["labels"] += len(labels)
        if len(labels) < min_labels:
            continue
        if pair["response_0"] == pair["response_1"]:
            counts["skipped_identical"] += 1
            continue
        counts["labelled"] += 1
        rated.append(labels)
        rec, fixed = aggregate(_prompt(pair["prompt"]), pair["response_0"], pair["response_1"], labels,
                               sources=(pair.get("response_0_source", ""), pair.get("response_1_source", "")),
                               prompt_source=pair.get("prompt_source", ""), tie_break="unsafe")
        if ties == "drop" and (rec.get("better_response_tie") or rec.get("safer_response_tie")):
            counts["ties_dropped"] += 1
            continue
        counts["safer_fixed"] += fixed
        rec |= ended_fields({f"ended_{i}": parse_ended(pair.get(f"ended_{i}")) for i in (0, 1)})
        if errors := [i for i in pku_issues(rec) if i.severity == "error"]:  # a guard: labels are checked
            raise ValueError(f"pair {pair['pair_id']}: {errors[0].field}: {errors[0].reason}")
        records.append(rec)
    counts["records"] = len(records)
    return records, {"counts": counts, "ties": ties, "min_labels": min_labels,
                     "agreement": agreement(rated, alpha=True)}


def _prompt(value: Any) -> Any:
    """A prompt as ``labels.aggregate`` takes it: a message list (from JSON) as a ``Conversation``."""
    from saferlhf.data.schema import as_prompt

    return as_prompt(value) if isinstance(value, list) else value


def load_labels(path: str | Path) -> list[tuple[str, Label]]:
    """The ``(pair_id, Label)`` of every line of a ``labels.jsonl`` (``{"pair_id", **label_to_dict}``), in
    order; ``DataValidationError`` listing every bad line as ``file:line: field: reason``. Lines of another
    ``type`` (``annotate export`` writes the admins' audit verdicts as ``{"type": "audit", ...}``) are not
    votes and are left out."""
    from saferlhf.data.validate import DataValidationError, Problem

    out, problems = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                if not isinstance(d, dict):
                    raise ValueError("label: not a JSON object")
                if d.get("type", "label") != "label":
                    continue
                if not isinstance(d.get("pair_id"), str) or not d["pair_id"]:
                    raise ValueError("pair_id: missing or not a string")
                out.append((d["pair_id"], label_from_dict(d)))
            except json.JSONDecodeError as e:
                problems.append(Problem(str(path), n, "record", f"malformed JSON ({e.msg})"))
            except ValueError as e:
                field, _, reason = str(e).partition(": ")
                problems.append(Problem(str(path), n, field, reason))
    if problems:
        raise DataValidationError(problems, note="(a labels.jsonl line is {pair_id, annotator, better, safer, "
                                                 "safe, categories, severity}: fix or delete those lines)")
    return out
