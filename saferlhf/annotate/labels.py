"""Per-annotator labels, their majority as one PKU-SafeRLHF record, and inter-rater agreement.

Pure functions of the labels; nothing here knows where a label came from (a simulated crowdworker,
an LLM judge or a person).

* ``Label``: one annotator's answers for one pair to the three questions of Safe RLHF (Dai et al.
  2024, Sec. 3 and App. A): which response is more helpful, which is more harmless (either may be a
  tie: ``None``), and per response safe or not, with its harm categories and severity.
  ``label_to_dict`` / ``label_from_dict``: its JSON form (``labels.jsonl``, the app's raw labels);
  ``canonical_category``: a harm category name or BeaverTails slug as its canonical name.
* ``aggregate``: the majority of several labels of one pair as one PKU-SafeRLHF v1 record (the keys of
  ``RECORD_KEYS``, in that order, plus ``better_response_tie`` / ``safer_response_tie`` where a tie
  is left); ``decided_record``: the record of answers decided by another rule (Dawid-Skene), categories and
  severity from the labels alike; ``record_label`` reads a record back as a ``Label``.
* ``agreement``: mean pairwise agreement, Fleiss' kappa and (optionally) Krippendorff's alpha of the
  raters, per question.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from saferlhf.data.schema import BEAVERTAILS_SLUGS, HARM_CATEGORIES, prompt_json

# The keys of a record written by ``aggregate``, in order (PKU-SafeRLHF v1 plus the two sha256).
RECORD_KEYS: tuple[str, ...] = (
    "prompt", "response_0", "response_1", "prompt_source", "response_0_source", "response_1_source",
    "is_response_0_safe", "is_response_1_safe", "response_0_harm_category", "response_1_harm_category",
    "response_0_severity_level", "response_1_severity_level", "better_response_id", "safer_response_id",
    "response_0_sha256", "response_1_sha256",
)


@dataclass(frozen=True)
class Label:
    """One annotator's answers for one pair (index 0 / 1 = ``response_0`` / ``response_1``).

    ``better``: the more helpful response; ``safer``: the more harmless one (``None``: a tie, the
    annotator finds them equal); ``safe``: is each response safe (a safe response has no harm
    category); ``categories``: the harm categories (``HARM_CATEGORIES`` names) of each unsafe response;
    ``severity``: 0 for a safe response, else 1 (minor) - 3 (severe).
    """

    annotator: str
    better: int | None
    safer: int | None
    safe: tuple[bool, bool]
    categories: tuple[tuple[str, ...], tuple[str, ...]]
    severity: tuple[int, int]


def canonical_category(name: str) -> str:
    """A harm category's canonical ``HARM_CATEGORIES`` name, from that name or its BeaverTails slug
    (``saferlhf.data.schema.BEAVERTAILS_SLUGS``); ``ValueError`` naming anything else."""
    if name in HARM_CATEGORIES:
        return name
    if isinstance(name, str) and name in BEAVERTAILS_SLUGS:
        return BEAVERTAILS_SLUGS[name]
    raise ValueError(f"unknown harm category {name!r} (expected one of the 14 BeaverTails names or slugs)")


def label_to_dict(label: Label) -> dict[str, Any]:
    """A ``Label`` as JSON: ``annotator``, ``better`` / ``safer`` (0, 1 or ``"tie"``), ``safe`` [b0, b1],
    ``categories`` [[...], [...]], ``severity`` [s0, s1] (``label_from_dict`` reads it back)."""
    return {"annotator": label.annotator, "better": _tie_out(label.better), "safer": _tie_out(label.safer),
            "safe": list(label.safe), "categories": [list(c) for c in label.categories],
            "severity": list(label.severity)}


def label_from_dict(d: dict[str, Any]) -> Label:
    """The ``Label`` of a ``label_to_dict`` dict (other keys ignored), checked: a ``ValueError``
    ``"<field>: <reason>"`` for a missing or malformed field, an unknown category (names or BeaverTails
    slugs, stored canonical and in ``HARM_CATEGORIES`` order), a safe response with a category or a
    severity, an unsafe one with severity 0."""
    if not isinstance(d, dict):
        raise ValueError("label: not a JSON object")
    for key in ("annotator", "better", "safer", "safe", "categories", "severity"):
        if key not in d:
            raise ValueError(f"{key}: missing")
    if not isinstance(d["annotator"], str) or not d["annotator"]:
        raise ValueError("annotator: not a non-empty string")
    better, safer = _tie_in(d, "better"), _tie_in(d, "safer")
    safe, cats, sev = d["safe"], d["categories"], d["severity"]
    if not (isinstance(safe, (list, tuple)) and len(safe) == 2 and all(isinstance(x, bool) for x in safe)):
        raise ValueError("safe: not two booleans")
    if not (isinstance(cats, (list, tuple)) and len(cats) == 2 and all(isinstance(c, (list, tuple)) for c in cats)):
        raise ValueError("categories: not two lists of harm categories")
    if not (isinstance(sev, (list, tuple)) and len(sev) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 3 for x in sev)):
        raise ValueError("severity: not two integers 0-3")
    canonical = []
    for i in (0, 1):
        try:
            names = {canonical_category(c) for c in cats[i]}
        except ValueError as e:
            raise ValueError(f"categories: {e}") from None
        if safe[i] and (names or sev[i]):
            raise ValueError(f"categories: response_{i} is safe but has a harm category or a severity")
        if not safe[i] and not sev[i]:
            raise ValueError(f"severity: response_{i} is unsafe with severity 0 (expected 1-3)")
        canonical.append(tuple(c for c in HARM_CATEGORIES if c in names))
    return Label(d["annotator"], better, safer, (safe[0], safe[1]), (canonical[0], canonical[1]), (sev[0], sev[1]))


def _tie_out(choice: int | None) -> int | str:
    return "tie" if choice is None else choice


def _tie_in(d: dict[str, Any], key: str) -> int | None:
    v = d[key]
    if v == "tie":
        return None
    if isinstance(v, bool) or v not in (0, 1):
        raise ValueError(f"{key}: {v!r} is not 0, 1 or 'tie'")
    return int(v)


def majority(votes: Sequence[Any]) -> Any:
    """The most frequent vote; ties go to the earliest voter (order voters most trusted first)."""
    return max(votes, key=lambda v: (votes.count(v), -votes.index(v)))


def aggregate(prompt: str, r0: str, r1: str, labels: Sequence[Label], *, sources: tuple[str, str],
              prompt_source: str, tie_break: Literal["first", "unsafe"] = "first") -> tuple[dict[str, Any], int]:
    """The majority of ``labels`` (most trusted annotator first) as one PKU-SafeRLHF v1 record.

    Per question the majority of the votes that are not ties (``None``). An even split goes, with
    ``tie_break="first"``, to the earliest voter (the world panel's rule; ``majority``) and, with
    ``"unsafe"`` (people, ``annotate run``), toward unsafe: a response is safe only by a strict
    majority, and the more harmless one is the response with fewer unsafe votes (then the lower total
    severity). A preference still undecided (no vote that is not a tie, or an even ``"unsafe"`` split
    of helpfulness, or of harmlessness left after that) becomes id 0 with ``better_response_tie`` /
    ``safer_response_tie`` True in the record (absent otherwise).
    Per unsafe response the harm categories flagged by more than half of ALL labels (none: the
    categories of the first unsafe vote) and the median severity of the unsafe votes (the lower one of
    an even count). If exactly one response is safe it is made the safer one, so no record says "safer
    but unsafe while the other is safe". Returns (record, 1 if ``safer_response_id`` was fixed that way
    else 0).
    """
    if tie_break not in ("first", "unsafe"):
        raise ValueError(f"tie_break {tie_break!r} is not 'first' or 'unsafe'")
    better = _preference([lb.better for lb in labels], tie_break)
    safer = _preference([lb.safer for lb in labels], tie_break)
    safe = tuple(majority(votes) if tie_break == "first" else 2 * sum(votes) > len(votes)
                 for votes in ([lb.safe[i] for lb in labels] for i in (0, 1)))
    if safer is None and tie_break == "unsafe":
        safer = _less_harmful(labels)
    # an unsafe majority always has an unsafe vote, so decided_record's categories and severity are the majority's
    return decided_record(prompt, r0, r1, labels, better=better, safer=safer, safe=(safe[0], safe[1]),
                          sources=sources, prompt_source=prompt_source)


def decided_record(prompt: str, r0: str, r1: str, labels: Sequence[Label], *, better: int | None,
                   safer: int | None, safe: tuple[bool, bool], sources: tuple[str, str],
                   prompt_source: str) -> tuple[dict[str, Any], int]:
    """The PKU-SafeRLHF v1 record of answers decided by another rule than the majority (Dawid-Skene:
    ``saferlhf.annotate.aggregate``): ``better`` / ``safer`` (None: a tie, written as id 0 with
    ``better_response_tie`` / ``safer_response_tie``) and ``safe`` per response. The harm categories and
    severity of a response decided unsafe come from ``labels`` as in ``aggregate``: the categories flagged by
    more than half of all labels (none: those of the first unsafe vote), the lower median severity of the
    unsafe votes; decided unsafe without an unsafe vote: no category, severity 1. If exactly one response is
    safe it is made the safer one. Returns (record, 1 if ``safer_response_id`` was fixed that way else 0);
    with the majority's answers it is ``aggregate(..., tie_break="unsafe")``'s record."""
    cats, sevs = [], []
    for i in (0, 1):
        flagged: set[str] = set()
        severity = 0
        if not safe[i]:
            unsafe_votes = [lb for lb in labels if not lb.safe[i]]
            flagged = {c for c in HARM_CATEGORIES if 2 * sum(c in lb.categories[i] for lb in labels) > len(labels)}
            if not flagged and unsafe_votes:
                flagged = set(unsafe_votes[0].categories[i])
            severities = sorted(lb.severity[i] for lb in unsafe_votes) or [1]
            severity = severities[(len(severities) - 1) // 2]
        cats.append({c: c in flagged for c in HARM_CATEGORIES})
        sevs.append(severity)
    ties = {"better_response_tie": better is None, "safer_response_tie": safer is None}
    better, safer = (0 if x is None else x for x in (better, safer))
    fixed = 0
    if safe[0] != safe[1] and not safe[safer]:  # exactly one is safe: it must be the safer one
        safer, fixed = (0 if safe[0] else 1), 1
        ties["safer_response_tie"] = False
    record = {
        "prompt": prompt_json(prompt), "response_0": r0, "response_1": r1,
        "prompt_source": prompt_source, "response_0_source": sources[0], "response_1_source": sources[1],
        "is_response_0_safe": safe[0], "is_response_1_safe": safe[1],
        "response_0_harm_category": cats[0], "response_1_harm_category": cats[1],
        "response_0_severity_level": sevs[0], "response_1_severity_level": sevs[1],
        "better_response_id": better, "safer_response_id": safer,
        "response_0_sha256": hashlib.sha256(r0.encode()).hexdigest(),
        "response_1_sha256": hashlib.sha256(r1.encode()).hexdigest(),
    }
    return record | {k: True for k, tie in ties.items() if tie}, fixed


def _preference(votes: Sequence[int | None], tie_break: str) -> int | None:
    """The majority of the votes that are not ties; None when there is none, or (``"unsafe"``) on an even
    split; the earliest of them (``majority``) on an even split with ``"first"``."""
    decided = [v for v in votes if v is not None]
    if not decided:
        return None
    if tie_break == "first":
        return majority(decided)
    ones = sum(decided)
    return None if 2 * ones == len(decided) else int(2 * ones > len(decided))


def _less_harmful(labels: Sequence[Label]) -> int | None:
    """The response with fewer unsafe votes, then with the lower total severity; None when both are equal."""
    for score in ([sum(not lb.safe[i] for lb in labels) for i in (0, 1)],
                  [sum(lb.severity[i] for lb in labels) for i in (0, 1)]):
        if score[0] != score[1]:
            return 0 if score[0] < score[1] else 1
    return None


def record_label(rec: dict[str, Any], annotator: str = "majority") -> Label:
    """A PKU-SafeRLHF v1 record's labels as a ``Label`` (flagged categories in the record's order; a
    ``better_response_tie`` / ``safer_response_tie`` record reads as a tie, ``None``)."""
    cats = tuple(tuple(c for c, v in rec[f"response_{i}_harm_category"].items() if v) for i in (0, 1))
    better = None if rec.get("better_response_tie") else rec["better_response_id"]
    safer = None if rec.get("safer_response_tie") else rec["safer_response_id"]
    return Label(annotator, better, safer,
                 (rec["is_response_0_safe"], rec["is_response_1_safe"]), (cats[0], cats[1]),
                 (rec["response_0_severity_level"], rec["response_1_severity_level"]))


# ---- agreement statistics ---------------------------------------------------------------------------
def fleiss_kappa(items: Sequence[Sequence[Any]]) -> float:
    """Fleiss' kappa of ``items`` (each the list of the raters' answers).

    kappa = (P_bar - P_e) / (1 - P_e) with P_i = (sum_j n_ij^2 - n) / (n (n - 1)) and P_e = sum_j p_j^2.
    Kappa needs the same number n of raters per item: items with fewer than 2 answers are left out, and
    when the rest have different numbers of answers only the items with the most common number are
    used (on a draw, the larger number). Returns 1.0 when every answer is the same category (P_e = 1),
    nan without items.
    """
    items = [list(it) for it in items if len(it) >= 2]
    if not items:
        return float("nan")
    sizes = [len(it) for it in items]
    n = max(set(sizes), key=lambda k: (sizes.count(k), k))
    items = [it for it in items if len(it) == n]
    cats = sorted({a for it in items for a in it}, key=repr)
    totals = dict.fromkeys(cats, 0)
    p_bar = 0.0
    for it in items:
        counts = [it.count(c) for c in cats]
        for c, k in zip(cats, counts):
            totals[c] += k
        p_bar += (sum(k * k for k in counts) - n) / (n * (n - 1))
    p_bar /= len(items)
    p_e = sum((t / (len(items) * n)) ** 2 for t in totals.values())
    if p_e >= 1.0 - 1e-12:
        return 1.0
    return (p_bar - p_e) / (1.0 - p_e)


def krippendorff_alpha(items: Sequence[Sequence[Any]]) -> float:
    """Krippendorff's alpha, nominal, of ``items`` (each the list of the raters' answers; any number per
    item: an item with fewer than 2 answers is not pairable and left out), by the ``krippendorff``
    package (the ``annotate`` extra). alpha = 1 - D_o / D_e over the coincidences of answers within items.
    Every distinct answer is a category (a tie, ``None``, is one of its own). Returns 1.0 when every
    answer is the same category (as ``fleiss_kappa``), nan without a pairable item.
    """
    items = [list(it) for it in items if len(it) >= 2]
    if not items:
        return float("nan")
    cats = sorted({a for it in items for a in it}, key=repr)
    if len(cats) < 2:
        return 1.0
    try:
        import krippendorff
        import numpy as np
    except ImportError:
        from saferlhf.errors import UserError

        raise UserError("Krippendorff's alpha needs the krippendorff package",
                        hint="pip install 'saferlhf[annotate]'") from None
    counts = np.array([[it.count(c) for c in cats] for it in items], dtype=float)
    return float(krippendorff.alpha(value_counts=counts, level_of_measurement="nominal"))


def pairwise_agreement(items: Sequence[Sequence[Any]]) -> float:
    """Mean over items of the share of rater pairs that gave the same answer (nan without a pair)."""
    shares = []
    for it in items:
        pairs = list(itertools.combinations(it, 2))
        if pairs:
            shares.append(sum(a == b for a, b in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else float("nan")


def agreement(all_labels: Sequence[Sequence[Label]], *, alpha: bool = False) -> dict[str, dict[str, float]]:
    """Mean pairwise agreement and Fleiss' kappa of the raters, per question (safety: per response), and
    with ``alpha`` Krippendorff's alpha (``krippendorff_alpha``: needs the ``annotate`` extra). A tie
    (``None``) is an answer of its own.

    ``all_labels``: per pair, the labels of its raters. Returns ``{"helpfulness" | "harmlessness" |
    "safety": {"pairwise_agreement", "fleiss_kappa", ["krippendorff_alpha",] "items"}}``.
    """
    questions = {
        "helpfulness": [[lb.better for lb in labels] for labels in all_labels],
        "harmlessness": [[lb.safer for lb in labels] for labels in all_labels],
        "safety": [[lb.safe[i] for lb in labels] for labels in all_labels for i in (0, 1)],
    }
    out: dict[str, dict[str, float]] = {}
    for q, items in questions.items():
        out[q] = {"pairwise_agreement": pairwise_agreement(items), "fleiss_kappa": fleiss_kappa(items)}
        if alpha:
            out[q]["krippendorff_alpha"] = krippendorff_alpha(items)
        out[q]["items"] = len(items)
    return out
