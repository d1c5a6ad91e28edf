"""Simulated crowdworkers who write PKU-SafeRLHF records, with the paper's quality control.

``AnnotatorPanel`` is the world's implementation of the ``saferlhf.annotate.Annotator`` protocol; the
label record, the majority aggregation and the agreement statistics it uses live in
``saferlhf.annotate.labels`` (they do not depend on the world).

As in Safe RLHF (Dai et al. 2024, Sec. 3 and App. A) each annotator answers three questions
INDEPENDENTLY for a pair of responses: which is more helpful (``better_response_id``), which is more
harmless (``safer_response_id``), and, per response, is it safe and which harm categories / severity.
Answers come from the oracle's judgement seen through the annotator's imperfections:

* ``noise``: probability that each answer is wrong (a flipped preference or safety label, a swapped
  harm category, a severity off by one);
* ``length_bias``: perceived helpfulness gains ``length_bias`` per 40 words (prefers long answers);
* ``safety_leniency``: probability of calling a severity-1 (minor) harmful response safe.

Quality control: ``qualify`` admits annotators with >= 90 % accuracy on a gold set built from the
oracle; each pair is labelled by 3 admitted annotators (``label_each``: their labels;
``PanelLabeller``: the panel as a ``saferlhf.annotate.Labeller`` for ``saferlhf annotate run``) and
aggregated by majority (ties, possible only with fewer than 3 admitted, go to the most accurate
annotator); a 10 % audit sample is re-checked against the oracle; agreement is reported as mean
pairwise agreement and Fleiss' kappa per question (``saferlhf.annotate.labels.agreement``).
Every random draw comes from ``random.Random`` seeded with a string of (panel seed, annotator, item).

``AIAnnotator`` / ``AILabeller`` / ``ai_labeller`` (``saferlhf annotate run --annotator world:ai``): a simulated
AI judge for RLAIF experiments, one label per pair from the oracle seen through configurable flaws of real LLM
judges: it misses disguised requests (adversarial wrappers) at a set rate, prefers the longer answer, and answers
"A" when unsure (docs/world.md, "The AI annotator").
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from saferlhf.annotate.base import Pair
from saferlhf.annotate.labels import Label, aggregate, agreement, record_label
from saferlhf.data.schema import HARM_CATEGORIES
from saferlhf.world.oracle import Judgement, Oracle

DECISIVE_HELPFULNESS = 0.05  # a helpfulness preference counts in accuracies when the gap is at least this
PROMPT_SOURCE = "saferlhf-world"


@dataclass(frozen=True)
class SimulatedAnnotator:
    """One simulated crowdworker (see the module docstring for the three imperfections).

    Not a ``saferlhf.annotate.Annotator`` (it labels one judged pair, ``label``); the panel of them is.
    """

    name: str
    noise: float = 0.03
    length_bias: float = 0.0
    safety_leniency: float = 0.0

    def label(self, j0: Judgement, j1: Judgement, words: tuple[int, int], rng: random.Random) -> Label:
        """This annotator's answers to the three questions for a pair judged ``j0``, ``j1`` by the oracle."""
        h = [j.helpfulness + self.length_bias * n / 40.0 for j, n in zip((j0, j1), words)]
        better = self._flip(_argmax(h, rng), rng)
        lenient = [j.harmful and j.severity == 1 and rng.random() < self.safety_leniency for j in (j0, j1)]
        harm = [0.0 if ok else _harm_score(j) for j, ok in zip((j0, j1), lenient)]
        safer = self._flip(_argmax([-harm[0], -harm[1]], rng), rng)
        safe, cats, sev = [], [], []
        for j, ok in zip((j0, j1), lenient):
            unsafe = j.harmful and not ok
            if rng.random() < self.noise:
                unsafe = not unsafe
            c = tuple(j.categories) if unsafe else ()
            if unsafe and (not c or rng.random() < self.noise):
                c = tuple(sorted(set(c[1:]) | {rng.choice(HARM_CATEGORIES)}, key=HARM_CATEGORIES.index))
            s = max(1, j.severity) if unsafe else 0
            if unsafe and rng.random() < self.noise:
                s = min(3, max(1, s + rng.choice((-1, 1))))
            safe.append(not unsafe)
            cats.append(c)
            sev.append(s)
        return Label(self.name, better, safer, (safe[0], safe[1]), (cats[0], cats[1]), (sev[0], sev[1]))

    def _flip(self, choice: int, rng: random.Random) -> int:
        return 1 - choice if rng.random() < self.noise else choice


def default_panel() -> list[SimulatedAnnotator]:
    """Six annotators: two careful, one who likes long answers, one lenient on mild harm, two bad ones."""
    return [
        SimulatedAnnotator("careful_a", noise=0.02),
        SimulatedAnnotator("careful_b", noise=0.04),
        SimulatedAnnotator("likes_long", noise=0.03, length_bias=0.15),
        SimulatedAnnotator("lenient", noise=0.03, safety_leniency=0.5),
        SimulatedAnnotator("careless", noise=0.30),
        SimulatedAnnotator("random_clicker", noise=0.45),
    ]


def _argmax(values: list[float], rng: random.Random) -> int:
    if abs(values[0] - values[1]) < 1e-9:
        return rng.randrange(2)
    return 0 if values[0] > values[1] else 1


def _harm_score(j: Judgement) -> float:
    return float(j.severity) + 0.1 * len(j.categories) if j.harmful else 0.0


def _words(text: str) -> int:
    return len(text.split())


# ---- the panel --------------------------------------------------------------------------------------
class AnnotatorPanel:
    """Qualifies annotators on a gold set, then labels pairs by majority of 3 admitted annotators.

    A ``saferlhf.annotate.Annotator``: ``annotate(pairs) -> (records, stats)``.
    """

    def __init__(self, world, seed: int = 0, annotators: list[SimulatedAnnotator] | None = None,
                 per_pair: int = 3, threshold: float = 0.9, audit_fraction: float = 0.1, gold_size: int = 200,
                 drift: Any = None):
        self.world = world
        self.oracle = Oracle(world, drift=drift)  # drift: the changed standard (saferlhf.world.drift)
        self.seed = seed
        self.annotators = list(annotators) if annotators is not None else default_panel()
        if len({a.name for a in self.annotators}) != len(self.annotators):
            raise ValueError("annotator names must be unique")
        self.per_pair, self.threshold = per_pair, threshold
        self.audit_fraction, self.gold_size = audit_fraction, gold_size
        self.qualification: dict[str, Any] | None = None
        self.accuracy: dict[str, float] = {}
        self.admitted: list[SimulatedAnnotator] = []

    def _rng(self, *parts: Any) -> random.Random:
        return random.Random(":".join(["panel", str(self.seed), *map(str, parts)]))

    def gold_pairs(self, n: int | None = None) -> list[tuple[str, str, str]]:
        """A gold set of world pairs (train prompts) whose answers the oracle knows."""
        return self.world.response_pairs(n or self.gold_size, seed=f"gold-{self.seed}")

    def _judge(self, pair: tuple[str, str, str]) -> tuple[Judgement, Judgement]:
        prompt, r0, r1 = pair
        return self.oracle.judge(prompt, r0), self.oracle.judge(prompt, r1)

    def qualify(self, gold_pairs: list[tuple[str, str, str]] | None = None) -> dict[str, Any]:
        """Each annotator's accuracy on the gold set; admits those at or above the threshold."""
        gold = gold_pairs if gold_pairs is not None else self.gold_pairs()
        judged = [(p, *self._judge(p)) for p in gold]
        report: dict[str, Any] = {"threshold": self.threshold, "gold_pairs": len(gold), "annotators": {}}
        for a in self.annotators:
            labels = [a.label(j0, j1, (_words(p[1]), _words(p[2])), self._rng("gold", a.name, k))
                      for k, (p, j0, j1) in enumerate(judged)]
            acc = oracle_accuracy(labels, [(j0, j1) for _, j0, j1 in judged])
            admitted = acc["accuracy"] >= self.threshold
            report["annotators"][a.name] = {**acc, "admitted": admitted, **{k: v for k, v in asdict(a).items()
                                                                            if k != "name"}}
            self.accuracy[a.name] = acc["accuracy"]
        self.admitted = [a for a in self.annotators if report["annotators"][a.name]["admitted"]]
        report["admitted"] = [a.name for a in self.admitted]
        self.qualification = report
        return report

    def annotate(self, pairs: Sequence[Pair]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """PKU-SafeRLHF records for ``pairs`` ((prompt, r0, r1) tuples or dicts with prompt, response_0,
        response_1 and optional response_0_source / response_1_source) and the panel statistics.

        Pairs with identical responses are skipped (``stats["counts"]["skipped_identical"]``)."""
        ranked = self._ranked()
        records, all_labels, judgements = [], [], []
        skipped = fixes = 0
        for k, item in enumerate(pairs):
            prompt, r0, r1, src0, src1 = _unpack(item)
            labels, judged = self._label_pair(k, prompt, r0, r1, ranked)
            if not labels:
                skipped += 1
                continue
            rec, fixed = aggregate(prompt, r0, r1, labels, sources=(src0, src1), prompt_source=PROMPT_SOURCE)
            fixes += fixed
            records.append(rec)
            all_labels.append(labels)
            judgements.append(judged)
        stats = {
            "counts": {"pairs_in": len(pairs), "skipped_identical": skipped, "records": len(records),
                       "safer_fixed_for_consistency": fixes,
                       "raters_per_pair": min(self.per_pair, len(ranked))},
            "qualification": self.qualification,
            "agreement": agreement(all_labels),
            "audit": self._audit(records, judgements),
            "oracle_agreement": oracle_accuracy([record_label(r) for r in records], judgements),
        }
        return records, stats

    def label_each(self, pairs: Sequence[Pair], keys: Sequence[Any] | None = None) -> list[list[Label]]:
        """Per pair, the labels of its raters (``per_pair`` admitted annotators, most accurate first), as
        ``annotate`` aggregates them; [] for a pair with identical responses. Qualifies first if needed.
        The random draws of pair k are keyed by ``keys[k]`` (default: k, as in ``annotate``)."""
        ranked = self._ranked()
        return [self._label_pair(k if keys is None else keys[k], *_unpack(item)[:3], ranked)[0]
                for k, item in enumerate(pairs)]

    def _ranked(self) -> list[SimulatedAnnotator]:
        """The admitted annotators, most accurate first (qualifying them first if needed)."""
        if self.qualification is None:
            self.qualify()
        if not self.admitted:
            raise RuntimeError("no annotator passed qualification; lower the threshold or change the panel")
        return sorted(self.admitted, key=lambda a: (-self.accuracy[a.name], a.name))

    def _label_pair(self, key: Any, prompt: str, r0: str, r1: str, ranked: list[SimulatedAnnotator]
                    ) -> tuple[list[Label], tuple[Judgement, Judgement] | None]:
        """The labels of ``per_pair`` raters drawn for the pair keyed ``key``, and the oracle's judgements;
        ([], None) for identical responses."""
        if r0.strip() == r1.strip():
            return [], None
        j0, j1 = self._judge((prompt, r0, r1))
        chosen = self._rng("assign", key).sample(ranked, min(self.per_pair, len(ranked)))
        chosen.sort(key=ranked.index)  # most accurate first: breaks ties
        return [a.label(j0, j1, (_words(r0), _words(r1)), self._rng("label", a.name, key)) for a in chosen], (j0, j1)

    def _audit(self, records: list[dict], judgements: list[tuple[Judgement, Judgement]]) -> dict[str, Any]:
        """Re-check a random ``audit_fraction`` of the records against the oracle."""
        if not records:
            return {"fraction": self.audit_fraction, "records": 0}
        n = max(1, round(self.audit_fraction * len(records)))
        idx = sorted(self._rng("audit").sample(range(len(records)), n))
        acc = oracle_accuracy([record_label(records[i]) for i in idx], [judgements[i] for i in idx])
        return {"fraction": self.audit_fraction, "records": n, **acc}


class PanelLabeller:
    """The panel as a ``saferlhf.annotate.Labeller`` (``saferlhf annotate run --annotator panel``):
    ``label(pair)`` gives the labels of the pair's raters, its random draws keyed by ``pair["pair_id"]``,
    so a pair gets the same labels whatever else is in the queue and however often the run resumes."""

    def __init__(self, panel: AnnotatorPanel):
        self.panel = panel

    def label(self, pair: dict[str, Any]) -> list[Label]:
        from saferlhf.data.schema import as_prompt

        item = pair | {"prompt": as_prompt(pair["prompt"])}  # a message list (JSON) as a Conversation
        return self.panel.label_each([item], keys=[pair["pair_id"]])[0]


def panel_labeller(seed: int = 0, overlap: int = 3) -> PanelLabeller:
    """The default panel of the seed-``seed`` world with ``overlap`` raters per pair, as a labeller."""
    from saferlhf.world.core import build_world

    return PanelLabeller(AnnotatorPanel(build_world(seed), seed=seed, per_pair=overlap))


def _unpack(item: Any) -> tuple[str, str, str, str, str]:
    if isinstance(item, dict):
        return (item["prompt"], item["response_0"], item["response_1"],
                item.get("response_0_source") or item.get("source") or "world",
                item.get("response_1_source") or item.get("source") or "world")
    prompt, r0, r1 = item
    return prompt, r0, r1, "world", "world"


def oracle_accuracy(labels: list[Label], judgements: list[tuple[Judgement, Judgement]]) -> dict[str, Any]:
    """Share of answers that match the oracle, per question and overall.

    Preferences count only where the oracle is decisive (helpfulness gap >= 0.05; different harm);
    every safety label counts. ``accuracy`` pools the three questions' answers.
    """
    right = {"helpfulness": 0, "harmlessness": 0, "safety": 0}
    total = dict.fromkeys(right, 0)
    for lb, (j0, j1) in zip(labels, judgements):
        if abs(j0.helpfulness - j1.helpfulness) >= DECISIVE_HELPFULNESS:
            total["helpfulness"] += 1
            right["helpfulness"] += lb.better == (0 if j0.helpfulness > j1.helpfulness else 1)
        h0, h1 = _harm_score(j0), _harm_score(j1)
        if h0 != h1:
            total["harmlessness"] += 1
            right["harmlessness"] += lb.safer == (0 if h0 < h1 else 1)
        for i, j in enumerate((j0, j1)):
            total["safety"] += 1
            right["safety"] += lb.safe[i] == (not j.harmful)
    out: dict[str, Any] = {q: (right[q] / total[q] if total[q] else float("nan")) for q in right}
    out["accuracy"] = sum(right.values()) / max(1, sum(total.values()))
    out["answers"] = sum(total.values())
    return out


def truth_of(world) -> Any:
    """``truth(labels, pairs) -> oracle_accuracy``: labels (one per pair dict with prompt, response_0, response_1)
    scored against the world's oracle (``saferlhf.annotate.mixed.MixedAnnotator``'s ``truth``)."""
    oracle = Oracle(world)

    def truth(labels: Sequence[Label], pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        judged = [(oracle.judge(p["prompt"], p["response_0"]), oracle.judge(p["prompt"], p["response_1"]))
                  for p in pairs]
        return oracle_accuracy(list(labels), judged)

    return truth


# ---- the AI annotator (world:ai) -------------------------------------------------------------------
AI_NAME = "world:ai"  # the annotator name of its labels
# The uniform draws of one pair, in a fixed order: a flaw's draw does not move when another rate changes, and
# raising a rate only adds pairs to those it already hits.
_AI_DRAWS = ("miss", "verbose", "position_help", "position_harm", "tie_help", "tie_harm", "noise_help",
             "noise_harm", "noise_safe_0", "noise_safe_1", "category_0", "category_1")


@dataclass(frozen=True)
class AIAnnotator:
    """A simulated AI judge (RLAIF) that answers the three questions from the oracle's judgements through the
    flaws that real LLM judges show, each a probability (defaults: docs/world.md, "The AI annotator"):

    * ``miss_disguised``: on a DISGUISED request (a prompt in the world's adversarial wrappers: role-play,
      fiction, ..., ``adversarial.py``) the judge takes the framing at face value with this probability, one
      draw per pair: it calls every response of the pair safe (no category, severity 0) and, both then looking
      harmless, answers the harmlessness question as when unsure;
    * ``verbosity_bias``: with this probability the helpfulness answer is the LONGER response (more words),
      whatever the oracle says (no effect when both have as many words);
    * ``position_bias``: when unsure (helpfulness: the oracle's gap below ``unsure_margin``; harmlessness: the
      same perceived harm, e.g. two safe responses) the judge answers response A (response_0, shown first)
      with this probability, else the oracle's answer (a coin flip on an exact tie);
    * ``noise``: each answer (the two preferences, each response's safety) is flipped with this probability.

    Harm categories and severity of a response called unsafe are the oracle's (a response made unsafe by noise:
    one category drawn at random, severity 1). Deterministic: the draws of a pair come from
    ``random.Random`` seeded with (seed, the pair's key).
    """

    miss_disguised: float = 0.5
    verbosity_bias: float = 0.2
    position_bias: float = 0.5
    unsure_margin: float = 0.1
    noise: float = 0.02

    def __post_init__(self):
        for name in ("miss_disguised", "verbosity_bias", "position_bias", "noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.unsure_margin <= 1.0:
            raise ValueError(f"unsure_margin must be in [0, 1], got {self.unsure_margin}")

    def label(self, j0: Judgement, j1: Judgement, words: tuple[int, int], disguised: bool,
              rng: random.Random) -> Label:
        """The judge's answers for a pair judged ``j0``, ``j1`` by the oracle (``words``: the responses' word
        counts; ``disguised``: the prompt is in adversarial wrappers)."""
        u = dict(zip(_AI_DRAWS, (rng.random() for _ in _AI_DRAWS)))
        help0, help1 = j0.helpfulness, j1.helpfulness
        if words[0] != words[1] and u["verbose"] < self.verbosity_bias:
            better = 0 if words[0] > words[1] else 1
        elif abs(help0 - help1) < self.unsure_margin and u["position_help"] < self.position_bias:
            better = 0
        else:
            better = _pick(help0, help1, u["tie_help"])
        missed = disguised and u["miss"] < self.miss_disguised
        unsafe = [j.harmful and not missed for j in (j0, j1)]
        harm = [_harm_score(j) if bad else 0.0 for j, bad in zip((j0, j1), unsafe)]
        if harm[0] == harm[1] and u["position_harm"] < self.position_bias:
            safer = 0
        else:
            safer = _pick(-harm[0], -harm[1], u["tie_harm"])
        better = 1 - better if u["noise_help"] < self.noise else better
        safer = 1 - safer if u["noise_harm"] < self.noise else safer
        cats, sev = [], []
        for i, j in enumerate((j0, j1)):
            if u[f"noise_safe_{i}"] < self.noise:
                unsafe[i] = not unsafe[i]
            if not unsafe[i]:
                cats.append(())
                sev.append(0)
            elif j.harmful:
                cats.append(tuple(j.categories))
                sev.append(max(1, j.severity))
            else:  # made unsafe by noise
                cats.append((HARM_CATEGORIES[int(u[f"category_{i}"] * len(HARM_CATEGORIES))],))
                sev.append(1)
        return Label(AI_NAME, better, safer, (not unsafe[0], not unsafe[1]), (cats[0], cats[1]), (sev[0], sev[1]))


def _pick(v0: float, v1: float, u: float) -> int:
    """0 if ``v0`` is the larger, 1 if ``v1``; on a tie the coin ``u`` (< 0.5: 0)."""
    if abs(v0 - v1) < 1e-9:
        return 0 if u < 0.5 else 1
    return 0 if v0 > v1 else 1


class AILabeller:
    """The AI judge as a ``saferlhf.annotate.Labeller`` (``saferlhf annotate run --annotator world:ai``): one
    ``Label`` per pair, annotator ``"world:ai"``, its draws keyed by (``seed``, ``pair["pair_id"]``; without
    one, ``pairs.pair_id`` of the pair), so a pair gets the same label wherever it sits in the queue."""

    def __init__(self, world, seed: int = 0, annotator: AIAnnotator | None = None):
        self.oracle = Oracle(world)
        self.seed = seed
        self.annotator = annotator if annotator is not None else AIAnnotator()

    def disguised(self, prompt: str) -> bool:
        """Whether ``prompt`` is a request in the world's adversarial wrappers (the oracle unwraps them)."""
        return bool(self.oracle.identify(prompt).wrappers)

    def label(self, pair: dict[str, Any]) -> list[Label]:
        from saferlhf.annotate.pairs import pair_id
        from saferlhf.data.schema import as_prompt

        prompt, r0, r1 = as_prompt(pair["prompt"]), pair["response_0"], pair["response_1"]
        if r0.strip() == r1.strip():
            return []
        key = pair.get("pair_id") or pair_id(prompt, r0, r1)
        rng = random.Random(":".join(["ai", str(self.seed), str(key)]))
        j0, j1 = self.oracle.judge(prompt, r0), self.oracle.judge(prompt, r1)
        return [self.annotator.label(j0, j1, (_words(r0), _words(r1)), self.disguised(prompt), rng)]

    def stats(self, queue: list[dict[str, Any]], labels_by_pair: dict[str, Any]) -> dict[str, Any]:
        """Merged into ``annotate run``'s ``stats.json``: the judge's settings and how many pairs were disguised."""
        from saferlhf.data.schema import as_prompt

        return {"world_ai": {"seed": self.seed, **asdict(self.annotator),
                             "disguised_pairs": sum(self.disguised(as_prompt(p["prompt"])) for p in queue)}}


def ai_labeller(seed: int = 0, *, miss_disguised: float = AIAnnotator.miss_disguised,
                verbosity_bias: float = AIAnnotator.verbosity_bias, position_bias: float = AIAnnotator.position_bias,
                unsure_margin: float = AIAnnotator.unsure_margin, noise: float = AIAnnotator.noise) -> AILabeller:
    """The AI judge of the seed-``seed`` world as a labeller (``world:ai``; the flaws and their defaults:
    ``AIAnnotator``). Explicit keywords, not ``**kw``: ``annotate run`` passes a factory only the ``seed`` /
    ``overlap`` it names."""
    from saferlhf.world.core import build_world

    flaws = AIAnnotator(miss_disguised=miss_disguised, verbosity_bias=verbosity_bias, position_bias=position_bias,
                        unsure_margin=unsure_margin, noise=noise)
    return AILabeller(build_world(seed), seed=seed, annotator=flaws)
