"""Many pairs' per-annotator labels as PKU-SafeRLHF records, with agreement statistics.

    records, stats = aggregate_labels(pairs, labels_by_pair, ties="drop", method="majority")

Used by ``saferlhf annotate run`` and the annotation app's export, so that every producer of ``Label``s
(the simulated panel, a labeller module, people) ends in the same records and the same numbers.

* ``aggregate_labels``: one function per ``method`` (``AGGREGATIONS``), docs/annotate.md "Aggregation and
  disagreement":

  - ``majority`` (the default): per pair ``labels.aggregate(..., tie_break="unsafe")``: the majority of the
    votes that are not ties; an even split of a response's safety votes makes it UNSAFE; a harmlessness tie
    goes against the response with more unsafe votes (then the higher total severity);
  - ``dawid_skene``: per question the answer of highest posterior under per-annotator confusion matrices
    (``reliability.fit_questions``), so an annotator who is often wrong counts less and one who always flips
    counts reversed;
  - ``soft``: the majority's record plus the vote shares as soft targets (``soft_targets``).

  A helpfulness tie, or a harmlessness tie left after the tie-break, is dropped (``ties="drop"``) or kept as
  id 0 with ``better_response_tie`` / ``safer_response_tie`` True (``ties="keep"``; the PKU loader reads such
  records, ignoring the extra keys). ``exclude`` / ``exclude_below`` drop the labels of named or unreliable
  annotators first (``reliability.excluded_annotators``).
* ``load_labels``: the ``(pair_id, Label)`` lines of a ``labels.jsonl`` (``label_to_dict`` plus
  ``pair_id``), a bad line being a ``file:line: field: reason`` error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from saferlhf.annotate.labels import Label, _less_harmful, aggregate, agreement, decided_record, label_from_dict


AGGREGATIONS: tuple[str, ...] = ("majority", "dawid_skene", "soft")


def aggregate_labels(pairs: Sequence[dict[str, Any]], labels_by_pair: Mapping[str, Sequence[Label]], *,
                     ties: Literal["drop", "keep"] = "drop", min_labels: int = 1,
                     method: Literal["majority", "dawid_skene", "soft"] = "majority", exclude: Sequence[str] = (),
                     exclude_below: float | None = None,
                     reliability: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """PKU-SafeRLHF v1 records of ``pairs`` from their labels, in the order of ``pairs``, and statistics.

    ``pairs``: dicts with ``pair_id``, ``prompt`` (a string or a message list), ``response_0``,
    ``response_1``, ``response_0_source``, ``response_1_source``, ``prompt_source`` and optional
    ``ended_0`` / ``ended_1`` (copied into the records where False). ``labels_by_pair[pair_id]``: the
    pair's labels (most trusted annotator first). A pair with fewer than ``min_labels`` labels is not
    labelled (no record); a pair with identical responses has no record either (the PKU rules reject it).

    ``method`` (one function each, ``AGGREGATIONS``): ``majority`` (per pair, ties toward unsafe),
    ``dawid_skene`` (per question the class of highest posterior under per-annotator confusion matrices fitted
    on every labelled pair) or ``soft`` (the majority's record plus the vote shares ``better_response_prob``,
    ``safer_response_prob``, ``response_{0,1}_unsafe_prob``: ``soft_targets``). ``exclude``: annotators whose
    labels are dropped; ``exclude_below``: also those (with >= ``reliability.MIN_LABELS_TO_EXCLUDE`` labelled
    pairs) whose Dawid-Skene accuracy is below it.

    ``stats``: ``counts`` (``pairs``, ``labels`` (after exclusion), ``labelled``, ``records``, ``ties_dropped``,
    ``safer_fixed``: safer ids made the only safe response, ``skipped_identical``), ``ties``, ``min_labels``,
    ``aggregation`` (``method``) and ``agreement`` per question (``helpfulness``, ``harmlessness``, ``safety``
    per response: ``pairwise_agreement``, ``fleiss_kappa``, ``krippendorff_alpha``, ``items``) over every
    labelled pair (those later dropped for a tie included). With ``reliability``, ``dawid_skene`` or an
    exclusion also ``annotators`` (``reliability.annotator_reliability`` of the labels before exclusion, each
    with ``excluded``) and ``exclusion`` (``excluded``: name -> reason, ``labels_excluded``, ``below``,
    ``not_found``: names of ``exclude`` without a label).
    """
    from saferlhf.data.schema import ended_fields, parse_ended
    from saferlhf.data.validate import pku_issues

    if ties not in ("drop", "keep"):
        raise ValueError(f"ties {ties!r} is not 'drop' or 'keep'")
    if min_labels < 1:
        raise ValueError(f"min_labels must be >= 1, got {min_labels}")
    if method not in AGGREGATIONS:
        raise ValueError(f"aggregation {method!r} is not one of {', '.join(AGGREGATIONS)}")
    named = [(pair, list(labels_by_pair.get(pair["pair_id"], ()))) for pair in pairs]
    extra: dict[str, Any] = {}
    fits = None  # Dawid-Skene fits of the labels to aggregate, when already made
    if reliability or method == "dawid_skene" or exclude or exclude_below is not None:
        named, extra, fits = _reliability_and_exclusion(named, min_labels, exclude, exclude_below)
    counts = dict.fromkeys(("pairs", "labels", "labelled", "records", "ties_dropped", "safer_fixed",
                            "skipped_identical"), 0)
    counts["pairs"] = len(pairs)
    rated = []
    for pair, labels in named:
        counts["labels"] += len(labels)
        if len(labels) < min_labels:
            continue
        if pair["response_0"] == pair["response_1"]:
            counts["skipped_identical"] += 1
            continue
        counts["labelled"] += 1
        rated.append((pair, labels))
    records = []
    for (pair, _), (rec, fixed) in zip(rated, _METHODS[method](rated, fits)):
        if ties == "drop" and (rec.get("better_response_tie") or rec.get("safer_response_tie")):
            counts["ties_dropped"] += 1
            continue
        counts["safer_fixed"] += fixed
        rec |= ended_fields({f"ended_{i}": parse_ended(pair.get(f"ended_{i}")) for i in (0, 1)})
        if errors := [i for i in pku_issues(rec) if i.severity == "error"]:  # a guard: labels are checked
            raise ValueError(f"pair {pair['pair_id']}: {errors[0].field}: {errors[0].reason}")
        records.append(rec)
    counts["records"] = len(records)
    return records, {"counts": counts, "ties": ties, "min_labels": min_labels, "aggregation": method,
                     "agreement": agreement([labels for _, labels in rated], alpha=True), **extra}


Rated = list[tuple[dict[str, Any], list[Label]]]  # (pair, its labels) of every pair to aggregate


def _reliability_and_exclusion(named: Rated, min_labels: int, names: Sequence[str],
                               below: float | None) -> tuple[Rated, dict[str, Any], Any]:
    """``named`` without the labels of the excluded annotators; the statistics ``annotators`` (reliability of
    every annotator, measured on the pairs that would be aggregated, before exclusion) and ``exclusion``; and the
    Dawid-Skene fits made on the way when nobody was excluded (they are those of the labels to aggregate), else
    None."""
    from saferlhf.annotate.reliability import annotator_reliability, excluded_annotators, fit_questions

    judged = [labels for pair, labels in named
              if len(labels) >= min_labels and pair["response_0"] != pair["response_1"]]
    fits = fit_questions(judged)
    report = annotator_reliability(judged, fits)
    dropped = excluded_annotators(report, names=names, below=below)
    for name, r in report.items():
        r["excluded"] = name in dropped
    kept = [(pair, [lb for lb in labels if lb.annotator not in dropped]) for pair, labels in named]
    n_dropped = sum(len(a) - len(b) for (_, a), (_, b) in zip(named, kept))
    unknown = sorted(set(names) - set(report))
    exclusion = {"excluded": dropped, "labels_excluded": n_dropped, "below": below, "not_found": unknown}
    return kept, {"annotators": report, "exclusion": exclusion}, None if dropped else fits


def _majority(rated: Rated, fits: Any = None) -> list[tuple[dict[str, Any], int]]:
    """Per pair ``labels.aggregate(..., tie_break="unsafe")``. (Each method takes the Dawid-Skene ``fits`` of
    ``rated`` when they were made already; only ``_dawid_skene`` uses them.)"""
    return [aggregate(_prompt(pair["prompt"]), pair["response_0"], pair["response_1"], labels,
                      sources=(pair.get("response_0_source", ""), pair.get("response_1_source", "")),
                      prompt_source=pair.get("prompt_source", ""), tie_break="unsafe")
            for pair, labels in rated]


def _dawid_skene(rated: Rated, fits: Any = None) -> list[tuple[dict[str, Any], int]]:
    """Per question the class of highest Dawid-Skene posterior (``reliability.fit_questions`` over all of
    ``rated``): a preference with an even posterior (or no vote but ties) is a tie, a harmlessness tie then
    going against the response with more unsafe votes (as the majority's); a response is safe when its
    posterior of unsafe is below 1/2. Categories and severity: ``labels.decided_record``."""
    from saferlhf.annotate.reliability import fit_questions

    fits = fit_questions([labels for _, labels in rated]) if fits is None else fits
    post = {q: (fit.posterior() if fit is not None else {}) for q, fit in fits.items()}
    out = []
    for k, (pair, labels) in enumerate(rated):
        better = _decided(post["helpfulness"].get(k))
        safer = _decided(post["harmlessness"].get(k))
        if safer is None:
            safer = _less_harmful(labels)
        safe = tuple(bool(post["safety"][(k, i)][1] < 0.5) for i in (0, 1))
        out.append(decided_record(_prompt(pair["prompt"]), pair["response_0"], pair["response_1"], labels,
                                  better=better, safer=safer, safe=safe,
                                  sources=(pair.get("response_0_source", ""), pair.get("response_1_source", "")),
                                  prompt_source=pair.get("prompt_source", "")))
    return out


def _decided(posterior: Any) -> int | None:
    """The class of higher posterior; None without a posterior or for an even one."""
    if posterior is None or abs(float(posterior[1]) - 0.5) < 1e-9:
        return None
    return int(posterior[1] > 0.5)


def _soft(rated: Rated, fits: Any = None) -> list[tuple[dict[str, Any], int]]:
    """The majority's records plus ``soft_targets``."""
    return [(rec | soft_targets(rec, labels), fixed) for (_, labels), (rec, fixed) in zip(rated, _majority(rated))]


def soft_targets(record: dict[str, Any], labels: Sequence[Label]) -> dict[str, float]:
    """The vote shares of a record's labels, as soft targets (6 decimals):

    * ``better_response_prob``: the probability that the response named by ``better_response_id`` is the more
      helpful one = (votes for it + 1/2 per tie vote) / labels; ``safer_response_prob`` likewise for
      ``safer_response_id``. A majority record's are >= 1/2, except a safer id fixed to the only safe response;
      a tied question (id 0 with its tie key) reads 1/2 when its votes split evenly.
    * ``response_0_unsafe_prob`` / ``response_1_unsafe_prob``: the share of labels calling that response unsafe.
    """
    n = len(labels)

    def share(ids: list[int | None], chosen: int) -> float:
        return round((sum(v == chosen for v in ids) + 0.5 * sum(v is None for v in ids)) / n, 6)

    return {"better_response_prob": share([lb.better for lb in labels], record["better_response_id"]),
            "safer_response_prob": share([lb.safer for lb in labels], record["safer_response_id"]),
            **{f"response_{i}_unsafe_prob": round(sum(not lb.safe[i] for lb in labels) / n, 6) for i in (0, 1)}}


_METHODS = {"majority": _majority, "dawid_skene": _dawid_skene, "soft": _soft}  # AGGREGATIONS -> records


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
