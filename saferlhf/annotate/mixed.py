"""Mixed labelling: an AI labels every pair, humans a share of them (issue 24 §3, docs/human_budget.md).

``MixedAnnotator`` is a ``saferlhf.annotate.Annotator`` (``saferlhf iterate --annotator mixed --human_share x
--audit targeted|random``). Per call of ``annotate(pairs)``:

1. **AI, both orders.** The AI labeller labels each pair as shown and with its responses swapped (the same
   pair key: a flaw of the judge that does not depend on the order, e.g. being fooled by a disguised request,
   repeats; one that does, e.g. answering "A" when unsure, shows up as a disagreement). A preference both
   orders give stands, any other answer is a tie; a response is unsafe if either order says so
   (``combine_orders``, the rule of the LLM annotator).
2. **Where the humans look.** The human budget is ``round(human_share · n)`` of the n pairs.
   ``random`` draws them uniformly (the control). ``targeted`` draws ``calibration_share`` of the budget
   uniformly (so every kind of pair keeps being checked) and spends the rest on the pairs of highest priority
   = [the AI's two orders disagree on a response's safety or on helpfulness] + [the AI and the current cost model (``cost_judge``) disagree on a
   response's safety] + the highest estimated probability that the AI is wrong on one of the pair's answers
   (its *cell*, below), learnt from earlier human labels: the categories where the AI is known weak.
3. **Humans replace the AI** on those pairs: the human labeller's labels (the simulated qualified panel in the
   world: 3 raters, majority), aggregated with ``labels.aggregate``.
4. **Humans correct the AI elsewhere.** Every AI answer falls in a cell: (question, prompt origin, the AI's
   answer); a safety answer's cell also holds the AI's verdict on the pair's other response, whether the two
   orders disagreed on that response and whether the cost model disagrees; a helpfulness answer's whether the
   AI chose the longer response. Each human-labelled pair adds,
   per cell, whether the humans' majority differs from the AI. The probability that the AI is wrong in a
   cell is the posterior mean under a Beta prior of ``prior_strength`` pseudo-labels at ``1 -
   prior_ai_accuracy``: (wrong + s·(1 - a)) / (n + s). An AI answer whose cell says "wrong" with
   probability > 1/2 is flipped (a safe label becomes unsafe, a preference the other response); with
   ``soft_targets`` every record also carries the probabilities (``better_response_prob``,
   ``safer_response_prob``, ``response_i_unsafe_prob``) for the soft losses.
   The cells count over every call (rounds of ``iterate``: ``history`` / ``restore``).

Estimating error rates from targeted human labels is biased where a pair is chosen for another of its cells;
the calibration share keeps every cell sampled. The prompt origin is the pair's ``origin`` key (``iterate``
writes ``redteam`` for red-team prompts, ``base`` otherwise); the AI does not see it.

``human_share`` 0 is AI-only labelling (nothing to correct with: the AI's labels as they are), 1 is
human-only labelling.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from saferlhf.annotate.labels import Label, aggregate, decided_record, record_label
from saferlhf.data.schema import HARM_CATEGORIES

AUDITS = ("targeted", "random")
CostJudge = Callable[[Sequence[Any], Sequence[str]], Sequence[bool]]  # (prompts, responses) -> unsafe per response


def swap(label: Label) -> Label:
    """``label`` with response_0 and response_1 exchanged (a label given to the swapped pair, read back)."""
    flip = {0: 1, 1: 0, None: None}
    return Label(label.annotator, flip[label.better], flip[label.safer], (label.safe[1], label.safe[0]),
                 (label.categories[1], label.categories[0]), (label.severity[1], label.severity[0]))


def combine_orders(first: Label, second: Label) -> tuple[Label, dict[str, int]]:
    """One label from the labels of the two orders (``second`` already read back with ``swap``), and the
    disagreements: ``{"helpfulness": 0|1, "harmlessness": 0|1, "safety": responses whose verdict differs,
    "safety_0": 0|1, "safety_1": 0|1}``.
    A preference both give stands, any other answer is a tie (a disagreement unless both tie); a response is
    unsafe if either says so, with the union of their categories and the higher severity."""
    prefs, disagree = {}, {}
    for task, a, b in (("helpfulness", first.better, second.better), ("harmlessness", first.safer, second.safer)):
        prefs[task] = a if a == b else None
        disagree[task] = int(a != b)
    safe, cats, sevs = [], [], []
    for i in (0, 1):
        unsafe = [lb for lb in (first, second) if not lb.safe[i]]
        safe.append(not unsafe)
        names = {c for lb in unsafe for c in lb.categories[i]}
        cats.append(tuple(c for c in HARM_CATEGORIES if c in names))
        sevs.append(max((lb.severity[i] for lb in unsafe), default=0))
    for i in (0, 1):
        disagree[f"safety_{i}"] = int(first.safe[i] != second.safe[i])
    disagree["safety"] = disagree["safety_0"] + disagree["safety_1"]
    return Label(first.annotator, prefs["helpfulness"], prefs["harmlessness"], (safe[0], safe[1]),
                 (cats[0], cats[1]), (sevs[0], sevs[1])), disagree


@dataclass
class _Item:
    index: int
    pair: dict[str, Any]
    key: str
    origin: str
    ai: Label
    disagree: dict[str, int]
    cost_unsafe: tuple[bool, bool] | None = None
    human: list[Label] = field(default_factory=list)

    @property
    def words(self) -> tuple[int, int]:
        return len(self.pair["response_0"].split()), len(self.pair["response_1"].split())

    def cells(self) -> dict[str, tuple]:
        """The cell of each of the AI's decided answers (module docstring, 4)."""
        out: dict[str, tuple] = {}
        for i in (0, 1):
            cm = None if self.cost_unsafe is None else self.cost_unsafe[i] != (not self.ai.safe[i])
            out[f"safety_{i}"] = ("safety", self.origin, "safe" if self.ai.safe[i] else "unsafe",
                                  "other_safe" if self.ai.safe[1 - i] else "other_unsafe",
                                  bool(self.disagree[f"safety_{i}"]), cm)
        if self.ai.better is not None:
            w = self.words
            longer = w[self.ai.better] > w[1 - self.ai.better]
            out["helpfulness"] = ("helpfulness", self.origin, "longer" if longer else "not_longer")
        if self.ai.safer is not None:
            out["harmlessness"] = ("harmlessness", self.origin)
        return out

    @property
    def unsure(self) -> bool:
        """The AI's two orders disagree on a response's safety or on helpfulness (harmlessness: two equally
        harmless responses are a tie in truth; an order-dependent answer there is no sign of an error)."""
        return bool(self.disagree["safety"] or self.disagree["helpfulness"])

    @property
    def cost_model_disagrees(self) -> bool:
        return self.cost_unsafe is not None and any(self.cost_unsafe[i] != (not self.ai.safe[i]) for i in (0, 1))


class MixedAnnotator:
    """AI labels for every pair, human labels for a share, human-corrected AI labels elsewhere (module
    docstring). ``ai`` and ``humans`` are ``saferlhf.annotate.Labeller``s (``label(pair) -> [Label]``; the pair
    dict has ``pair_id``); ``cost_judge`` (optional, settable between calls): the current cost model's verdicts;
    ``truth`` (optional; the world's is ``saferlhf.world.annotators.truth_of``): ``truth(labels, pairs)`` scores
    labels against the ground truth, and the stats get it for the AI's and for the final labels
    (``oracle_agreement``)."""

    def __init__(self, ai: Any, humans: Any, *, human_share: float, audit: str = "targeted", seed: int = 0,
                 calibration_share: float = 0.25, prior_ai_accuracy: float = 0.9, prior_strength: float = 4.0,
                 soft_targets: bool = False, cost_judge: CostJudge | None = None,
                 truth: Callable[[Sequence[Label], Sequence[dict]], dict] | None = None,
                 prompt_source: str = "saferlhf-world") -> None:
        if not 0.0 <= human_share <= 1.0:
            raise ValueError(f"human_share must be in [0, 1], got {human_share}")
        if audit not in AUDITS:
            raise ValueError(f"audit must be one of {AUDITS}, got {audit!r}")
        if not 0.0 <= calibration_share <= 1.0:
            raise ValueError(f"calibration_share must be in [0, 1], got {calibration_share}")
        if not 0.0 < prior_ai_accuracy < 1.0 or prior_strength <= 0:
            raise ValueError("prior_ai_accuracy must be in (0, 1) and prior_strength > 0")
        self.ai, self.humans, self.human_share, self.audit, self.seed = ai, humans, human_share, audit, seed
        self.calibration_share, self.prior_ai_accuracy, self.prior_strength = (calibration_share, prior_ai_accuracy,
                                                                             prior_strength)
        self.soft_targets, self.cost_judge, self.truth, self.prompt_source = (soft_targets, cost_judge, truth,
                                                                              prompt_source)
        self.cells: dict[tuple, list[int]] = {}  # cell -> [AI wrong, human-checked answers], over every call
        self.calls = 0

    # ---- state across calls (rounds) --------------------------------------------------------------------
    def history(self) -> dict[str, Any]:
        """The cell counts so far, JSON-able (``restore`` reads it back)."""
        return {"calls": self.calls, "cells": [[list(c), n[0], n[1]] for c, n in sorted(self.cells.items(), key=str)]}

    def restore(self, history: dict[str, Any]) -> None:
        self.calls = int(history.get("calls", 0))
        self.cells = {tuple(c): [int(w), int(n)] for c, w, n in history.get("cells", [])}

    def p_wrong(self, cell: tuple) -> float:
        """Posterior mean probability that the AI's answer in ``cell`` is wrong (module docstring, 4)."""
        wrong, n = self.cells.get(cell, (0, 0))
        return (wrong + self.prior_strength * (1 - self.prior_ai_accuracy)) / (n + self.prior_strength)

    # ---- the Annotator ----------------------------------------------------------------------------------
    def annotate(self, pairs: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from saferlhf.annotate.pairs import pair_id

        items, skipped = [], 0
        for k, item in enumerate(pairs):
            pair = _as_dict(item)
            if pair["response_0"].strip() == pair["response_1"].strip():
                skipped += 1
                continue
            key = pair.get("pair_id") or pair_id(pair["prompt"], pair["response_0"], pair["response_1"])
            pair = pair | {"pair_id": key}
            ai, disagree = self._ai_label(pair)
            items.append(_Item(k, pair, key, str(pair.get("origin") or "base"), ai, disagree))
        if self.cost_judge is not None and items:
            verdicts = list(self.cost_judge([it.pair["prompt"] for it in items for _ in (0, 1)],
                                            [it.pair[f"response_{i}"] for it in items for i in (0, 1)]))
            for j, it in enumerate(items):
                it.cost_unsafe = (bool(verdicts[2 * j]), bool(verdicts[2 * j + 1]))
        chosen = self.choose(items)
        for it in chosen:
            it.human = _labels(self.humans.label(it.pair))
        checked = [it for it in chosen if it.human]
        for it in checked:  # counted before correcting: this call's human labels correct this call's AI labels
            human = record_label(self._human_record(it)[0])
            for name, cell in it.cells().items():
                if _answer(human, name) is None:  # the humans tie: nothing to say about the AI's answer
                    continue
                wrong = _answer(it.ai, name) != _answer(human, name)
                counts = self.cells.setdefault(cell, [0, 0])
                counts[0] += int(wrong)
                counts[1] += 1
        self.calls += 1
        records, flips = [], {"safety": 0, "helpfulness": 0, "harmlessness": 0}
        for it in items:
            rec = self._human_record(it)[0] if it.human else self._corrected_record(it, flips)
            records.append(rec)
        return records, self._stats(pairs, items, checked, skipped, flips, records)

    def choose(self, items: list[_Item]) -> list[_Item]:
        """The pairs the humans label (module docstring, 2), in input order."""
        n = min(len(items), round(self.human_share * len(items)))
        rng = random.Random(f"mixed:{self.seed}:{self.calls}")
        if n == 0:
            return []
        if self.audit == "random" or n == len(items):
            picked = rng.sample(range(len(items)), n)
        else:
            calibration = rng.sample(range(len(items)), math.ceil(self.calibration_share * n))
            rest = [j for j in range(len(items)) if j not in set(calibration)]
            ties = {j: rng.random() for j in rest}
            rest.sort(key=lambda j: (-self.priority(items[j]), ties[j]))
            picked = calibration + rest[:n - len(calibration)]
        return [items[j] for j in sorted(picked)]

    def priority(self, it: _Item) -> float:
        """[the AI is unsure: its orders disagree] + [the cost model disagrees] + the highest p_wrong of the
        pair's cells."""
        return float(it.unsure) + float(it.cost_model_disagrees) + max(self.p_wrong(c) for c in it.cells().values())

    # ---- labels -----------------------------------------------------------------------------------------
    def _ai_label(self, pair: dict[str, Any]) -> tuple[Label, dict[str, int]]:
        first = _labels(self.ai.label(pair))
        swapped = _labels(self.ai.label(pair | {"response_0": pair["response_1"], "response_1": pair["response_0"],
                                               "ended_0": pair.get("ended_1", True),
                                               "ended_1": pair.get("ended_0", True)}))
        if len(first) != 1 or len(swapped) != 1:
            raise ValueError(f"the AI labeller gave {len(first)} and {len(swapped)} labels for pair {pair['pair_id']} "
                             "(one label per order expected)")
        return combine_orders(first[0], swap(swapped[0]))

    def _sources(self, it: _Item) -> tuple[str, str]:
        p = it.pair
        return (p.get("response_0_source") or p.get("source") or "world",
                p.get("response_1_source") or p.get("source") or "world")

    def _human_record(self, it: _Item) -> tuple[dict[str, Any], int]:
        from saferlhf.annotate.aggregate import soft_targets

        rec, fixed = aggregate(it.pair["prompt"], it.pair["response_0"], it.pair["response_1"], it.human,
                               sources=self._sources(it), prompt_source=self.prompt_source)
        return (rec | soft_targets(rec, it.human) if self.soft_targets else rec), fixed

    def _corrected_record(self, it: _Item, flips: dict[str, int]) -> dict[str, Any]:
        """The AI's answers, each flipped where its cell says the AI is more likely wrong than right."""
        cells, ai = it.cells(), it.ai
        p_unsafe, safe = [], []
        for i in (0, 1):
            p = self.p_wrong(cells[f"safety_{i}"])
            pu = p if ai.safe[i] else 1 - p
            p_unsafe.append(pu)
            safe.append(pu < 0.5)
            flips["safety"] += int(safe[i] != ai.safe[i])
        probs = {}
        decided = {}
        for name, choice in (("helpfulness", ai.better), ("harmlessness", ai.safer)):
            if choice is None:
                decided[name], probs[name] = None, 0.5
                continue
            p = self.p_wrong(cells[name])
            decided[name] = 1 - choice if p > 0.5 else choice
            probs[name] = max(p, 1 - p)
            flips[name] += int(decided[name] != choice)
        rec, fixed = decided_record(it.pair["prompt"], it.pair["response_0"], it.pair["response_1"], [ai],
                                    better=decided["helpfulness"], safer=decided["harmlessness"],
                                    safe=(safe[0], safe[1]), sources=self._sources(it),
                                    prompt_source=self.prompt_source)
        if not self.soft_targets:
            return rec
        safer_p = max(0.5, p_unsafe[1 - rec["safer_response_id"]]) if fixed else probs["harmlessness"]
        return rec | {"better_response_prob": round(probs["helpfulness"], 6), "safer_response_prob": round(safer_p, 6),
                      "response_0_unsafe_prob": round(p_unsafe[0], 6), "response_1_unsafe_prob": round(p_unsafe[1], 6)}

    def _stats(self, pairs, items, checked, skipped, flips, records) -> dict[str, Any]:
        raters = sum(len(it.human) for it in checked)
        out: dict[str, Any] = {
            "counts": {"pairs_in": len(pairs), "skipped_identical": skipped, "records": len(records),
                       "human_pairs": len(checked), "ai_pairs": len(items) - len(checked), "human_labels": raters,
                       "ai_requests": 2 * len(items),
                       "order_disagreements": {q: sum(bool(it.disagree[q]) for it in items)
                                               for q in ("helpfulness", "harmlessness", "safety")},
                       "unsure_pairs": sum(it.unsure for it in items),
                       "cost_model_disagreements": sum(it.cost_model_disagrees for it in items),
                       "redteam_pairs": sum(it.origin == "redteam" for it in items),
                       "redteam_human_pairs": sum(it.origin == "redteam" for it in checked),
                       "flipped": flips},
            "human_share": self.human_share, "audit": self.audit, "calibration_share": self.calibration_share,
            "prior_ai_accuracy": self.prior_ai_accuracy, "prior_strength": self.prior_strength,
            "cost_judge": self.cost_judge is not None,
            "mixed_history": self.history(),
        }
        if self.truth is not None and items:
            pairs_in = [it.pair for it in items]
            out["oracle_agreement"] = {"ai": self.truth([it.ai for it in items], pairs_in),
                                       "final": self.truth([record_label(r) for r in records], pairs_in)}
        return out


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return dict(item)
    prompt, r0, r1 = item
    return {"prompt": prompt, "response_0": r0, "response_1": r1}


def _labels(found: Any) -> list[Label]:
    return [found] if isinstance(found, Label) else list(found or [])


def _answer(label: Label, name: str) -> Any:
    if name.startswith("safety_"):
        return label.safe[int(name[-1])]
    return label.better if name == "helpfulness" else label.safer
