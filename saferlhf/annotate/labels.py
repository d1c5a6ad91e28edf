"""Per-annotator labels, their majority as one PKU-SafeRLHF record, and inter-rater agreement.

Pure functions of the labels; nothing here knows where a label came from (a simulated crowdworker,
an LLM judge or a person).

* ``Label``: one annotator's answers for one pair to the three questions of Safe RLHF (Dai et al.
  2024, Sec. 3 and App. A): which response is more helpful, which is more harmless, and per response
  safe or not, with its harm categories and severity.
* ``aggregate``: the majority of several labels of one pair as one PKU-SafeRLHF v1 record (the keys of
  ``RECORD_KEYS``, in that order); ``record_label`` reads a record back as a ``Label``.
* ``agreement``: mean pairwise agreement and Fleiss' kappa of the raters, per question.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saferlhf.data.schema import HARM_CATEGORIES, prompt_json

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

    ``better``: the more helpful response; ``safer``: the more harmless one; ``safe``: is each response
    safe; ``categories``: the harm categories (``HARM_CATEGORIES`` names) of each unsafe response;
    ``severity``: 0 for a safe response, else 1 (minor) - 3 (severe).
    """

    annotator: str
    better: int
    safer: int
    safe: tuple[bool, bool]
    categories: tuple[tuple[str, ...], tuple[str, ...]]
    severity: tuple[int, int]


def majority(votes: Sequence[Any]) -> Any:
    """The most frequent vote; ties go to the earliest voter (order voters most trusted first)."""
    return max(votes, key=lambda v: (votes.count(v), -votes.index(v)))


def aggregate(prompt: str, r0: str, r1: str, labels: Sequence[Label], *, sources: tuple[str, str],
              prompt_source: str) -> tuple[dict[str, Any], int]:
    """The majority of ``labels`` (most trusted annotator first) as one PKU-SafeRLHF v1 record.

    Per question the ``majority`` vote; per unsafe response the harm categories flagged by more than
    half of ALL labels (none: the categories of the first unsafe vote) and the median severity of the
    unsafe votes (the lower one of an even count). If exactly one response is safe it is made the safer
    one, so no record says "safer but unsafe while the other is safe". Returns (record, 1 if
    ``safer_response_id`` was fixed that way else 0).
    """
    better = majority([lb.better for lb in labels])
    safer = majority([lb.safer for lb in labels])
    safe, cats, sevs = [], [], []
    for i in (0, 1):
        is_safe = majority([lb.safe[i] for lb in labels])
        flagged: set[str] = set()
        severity = 0
        if not is_safe:
            unsafe_votes = [lb for lb in labels if not lb.safe[i]]
            flagged = {c for c in HARM_CATEGORIES
                       if 2 * sum(c in lb.categories[i] for lb in labels) > len(labels)}
            if not flagged:
                flagged = set(unsafe_votes[0].categories[i])
            severity = sorted(lb.severity[i] for lb in unsafe_votes)[(len(unsafe_votes) - 1) // 2]
        safe.append(is_safe)
        cats.append({c: c in flagged for c in HARM_CATEGORIES})
        sevs.append(severity)
    fixed = 0
    if safe[0] != safe[1] and not safe[safer]:  # exactly one is safe: it must be the safer one
        safer, fixed = (0 if safe[0] else 1), 1
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
    return record, fixed


def record_label(rec: dict[str, Any], annotator: str = "majority") -> Label:
    """A PKU-SafeRLHF v1 record's labels as a ``Label`` (flagged categories in the record's order)."""
    cats = tuple(tuple(c for c, v in rec[f"response_{i}_harm_category"].items() if v) for i in (0, 1))
    return Label(annotator, rec["better_response_id"], rec["safer_response_id"],
                 (rec["is_response_0_safe"], rec["is_response_1_safe"]), (cats[0], cats[1]),
                 (rec["response_0_severity_level"], rec["response_1_severity_level"]))


# ---- agreement statistics ---------------------------------------------------------------------------
def fleiss_kappa(items: Sequence[Sequence[Any]]) -> float:
    """Fleiss' kappa of ``items`` (each the list of the raters' answers; the same number of raters each).

    kappa = (P_bar - P_e) / (1 - P_e) with P_i = (sum_j n_ij^2 - n) / (n (n - 1)) and P_e = sum_j p_j^2.
    Items with fewer than 2 answers are left out. Returns 1.0 when every answer is the same category
    (P_e = 1), nan without items; raises ``ValueError`` when the items have different numbers of raters.
    """
    items = [list(it) for it in items if len(it) >= 2]
    if not items:
        return float("nan")
    n = len(items[0])
    if any(len(it) != n for it in items):
        raise ValueError("Fleiss' kappa needs the same number of raters for every item")
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


def pairwise_agreement(items: Sequence[Sequence[Any]]) -> float:
    """Mean over items of the share of rater pairs that gave the same answer (nan without a pair)."""
    shares = []
    for it in items:
        pairs = list(itertools.combinations(it, 2))
        if pairs:
            shares.append(sum(a == b for a, b in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else float("nan")


def agreement(all_labels: Sequence[Sequence[Label]]) -> dict[str, dict[str, float]]:
    """Mean pairwise agreement and Fleiss' kappa of the raters, per question (safety: per response).

    ``all_labels``: per pair, the labels of its raters. Returns ``{"helpfulness" | "harmlessness" |
    "safety": {"pairwise_agreement", "fleiss_kappa", "items"}}``.
    """
    questions = {
        "helpfulness": [[lb.better for lb in labels] for labels in all_labels],
        "harmlessness": [[lb.safer for lb in labels] for labels in all_labels],
        "safety": [[lb.safe[i] for lb in labels] for labels in all_labels for i in (0, 1)],
    }
    return {q: {"pairwise_agreement": pairwise_agreement(items), "fleiss_kappa": fleiss_kappa(items),
                "items": len(items)} for q, items in questions.items()}
