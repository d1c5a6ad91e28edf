"""Who to believe when annotators disagree: Dawid-Skene, per-annotator reliability, exclusion.

    fits = fit_questions(all_labels)            # one Dawid-Skene model per question
    report = annotator_reliability(all_labels, fits)
    dropped = excluded_annotators(report, below=0.7)

Pure functions of the labels (numpy, imported inside the functions); ``aggregate.aggregate_labels`` uses them
for ``method="dawid_skene"``, the ``annotators`` block of ``stats.json`` and ``exclude`` / ``exclude_below``.

* ``dawid_skene(votes)`` (``dawid_skene_answers``: the same on one entry per answer): the EM of Dawid & Skene (1979, "Maximum likelihood estimation of observer error-rates
  using the EM algorithm"). Each item i has an unknown true class t_i with prior pi_k; annotator a answers l
  with probability theta^a_{k l} when the truth is k (a confusion matrix per annotator). E-step: the posterior
  T_ik = P(t_i = k | votes) ∝ pi_k prod_a theta^a_{k y_ia}; M-step: pi_k = mean_i T_ik and
  theta^a_{k l} = (sum_i T_ik 1[y_ia = l] + s) / (sum_i T_ik 1[a answered i] + K s) (``smoothing`` s keeps a
  log finite). Starts from the vote shares (the soft majority), so the classes keep their meaning; stops when
  a round raises the mean log-likelihood per item by less than ``tol``.
* ``fit_questions(all_labels)``: the three questions of a ``Label`` as Dawid-Skene problems: helpfulness
  (``better``) and harmlessness (``safer``), one item per pair, classes response_0 / response_1, a tie vote
  left out; safety, one item per response, classes safe (0) / unsafe (1).
* ``annotator_reliability(all_labels)``: per annotator, per question, the Dawid-Skene accuracy (the posterior
  probability that its answers are right, averaged over its answers on items shared with another annotator)
  with its confusion matrix, and the agreement with the leave-one-out majority (each answer
  against the strict majority of the OTHER annotators' answers on that item).
* ``excluded_annotators(report, names, below)``: the annotators to drop, with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from saferlhf.annotate.labels import Label

QUESTIONS: tuple[str, ...] = ("helpfulness", "harmlessness", "safety")
MIN_LABELS_TO_EXCLUDE = 20  # --exclude_below judges only annotators with at least this many labelled pairs


@dataclass
class DawidSkene:
    """A fitted Dawid-Skene model: ``posterior`` (items, K) = T_ik, ``confusion`` (annotators, K, K) =
    theta^a_{k l} (row: the truth k, column: the answer l), ``prior`` (K,) = pi_k."""

    posterior: Any
    confusion: Any
    prior: Any
    iterations: int
    converged: bool


def dawid_skene(votes: Any, n_classes: int = 2, **em: Any) -> DawidSkene:
    """Dawid-Skene EM (module docstring) on ``votes``, an int array (items, annotators): the class each annotator
    answered for each item, -1 where it gave none. Every item needs at least one answer. ``em``: ``max_iter``,
    ``tol``, ``smoothing`` of ``dawid_skene_answers``."""
    import numpy as np

    votes = np.asarray(votes, dtype=int)
    if votes.ndim != 2 or votes.size == 0:
        raise ValueError(f"votes must be a non-empty (items, annotators) array, got shape {votes.shape}")
    if votes.max() >= n_classes or votes.min() < -1:
        raise ValueError(f"votes must be -1 (none) or a class 0..{n_classes - 1}")
    item, rater = np.nonzero(votes >= 0)
    return dawid_skene_answers(item, rater, votes[item, rater], votes.shape, n_classes, **em)


def dawid_skene_answers(item: Any, rater: Any, answer: Any, shape: tuple[int, int], n_classes: int = 2, *,
                        max_iter: int = 200, tol: float = 1e-6, smoothing: float = 0.01) -> DawidSkene:
    """Dawid-Skene EM on the answers as three int arrays of one entry per answer (``item``, ``rater``, the class
    ``answer``), ``shape`` = (items, annotators): memory and time per round grow with the answers, not with
    items x annotators. Stops when a round raises the mean log-likelihood of an item's answers, log sum_k pi_k
    prod_a theta^a_{k y_ia} averaged over items, by less than ``tol`` (``converged``), or after ``max_iter``
    rounds."""
    import numpy as np

    n_items, n_raters = shape
    item, rater, answer = (np.asarray(x, dtype=int) for x in (item, rater, answer))
    cell = rater * n_classes + answer  # (annotator, answer) of each answer, flattened
    votes = np.stack([np.bincount(item, weights=answer == k, minlength=n_items) for k in range(n_classes)], axis=1)
    if not (votes.sum(axis=1) > 0).all():
        raise ValueError("every item needs at least one answer")
    posterior = votes / votes.sum(axis=1, keepdims=True)  # start: the vote shares
    converged, it, loglik = False, 0, -np.inf
    for it in range(1, max_iter + 1):
        prior = posterior.mean(axis=0)
        counts = np.stack([np.bincount(cell, weights=posterior[item, k], minlength=n_raters * n_classes)
                           for k in range(n_classes)], axis=1)  # (annotator * answer l, truth k)
        counts = counts.reshape(n_raters, n_classes, n_classes).transpose(0, 2, 1) + smoothing  # (annotator, k, l)
        confusion = counts / np.maximum(counts.sum(axis=2, keepdims=True), 1e-300)
        with np.errstate(divide="ignore"):  # log 0 = -inf: a class that an answer rules out (smoothing 0)
            log_theta = np.log(confusion)[rater, :, answer]  # (answers, K): log theta^a_{k y_ia}
            log_post = np.log(prior) + np.stack([np.bincount(item, weights=log_theta[:, k], minlength=n_items)
                                                 for k in range(n_classes)], axis=1)
        top = log_post.max(axis=1, keepdims=True)
        if not np.isfinite(top).all():
            raise ValueError("an item's answers rule out every class: use smoothing > 0")
        posterior = np.exp(log_post - top)
        total = posterior.sum(axis=1, keepdims=True)
        posterior /= total
        previous, loglik = loglik, float((top + np.log(total)).mean())  # mean log P(item's answers)
        if loglik - previous < tol:
            converged = True
            break
    return DawidSkene(posterior, confusion, prior, it, converged)


def question_answers(all_labels: Sequence[Sequence[Label]]) -> dict[str, dict[Any, dict[str, int]]]:
    """Per question, item key -> {annotator: class} (tie votes left out; safety: 1 = unsafe)."""
    out: dict[str, dict[Any, dict[str, int]]] = {q: {} for q in QUESTIONS}
    for k, labels in enumerate(all_labels):
        for lb in labels:
            if lb.better is not None:
                out["helpfulness"].setdefault(k, {})[lb.annotator] = lb.better
            if lb.safer is not None:
                out["harmlessness"].setdefault(k, {})[lb.annotator] = lb.safer
            for i in (0, 1):
                out["safety"].setdefault((k, i), {})[lb.annotator] = int(not lb.safe[i])
    return out


@dataclass
class QuestionFit:
    """Dawid-Skene on one question: ``items`` (the item keys: a pair's index, or (pair index, response) for
    safety; the model's rows), ``annotators`` (the model's annotator order) and the fitted ``model``."""

    items: list[Any]
    annotators: list[str]
    model: DawidSkene

    def posterior(self) -> dict[Any, list[float]]:
        """Item key -> its posterior over the classes."""
        return dict(zip(self.items, self.model.posterior.tolist()))


def fit_questions(all_labels: Sequence[Sequence[Label]], **em: Any) -> dict[str, QuestionFit | None]:
    """Dawid-Skene per question over ``all_labels`` (per pair, its labels); None for a question without an
    answer. ``em``: passed to ``dawid_skene_answers``."""
    fits: dict[str, QuestionFit | None] = {}
    for q, answers in question_answers(all_labels).items():
        items = [key for key, votes in answers.items() if votes]
        if not items:
            fits[q] = None
            continue
        names = sorted({a for key in items for a in answers[key]})
        col = {a: c for c, a in enumerate(names)}
        triples = [(r, col[a], v) for r, key in enumerate(items) for a, v in answers[key].items()]
        item, rater, answer = zip(*triples)
        fits[q] = QuestionFit(items, names, dawid_skene_answers(item, rater, answer, (len(items), len(names)), **em))
    return fits


def annotator_reliability(all_labels: Sequence[Sequence[Label]],
                          fits: dict[str, QuestionFit | None] | None = None) -> dict[str, dict[str, Any]]:
    """Per annotator: ``labels`` (pairs it labelled), per question (``helpfulness``, ``harmlessness``,
    ``safety``) ``{answers, ds_accuracy, ds_items, confusion, loo_agreement, loo_items}`` and pooled over the
    questions (weighted by ``ds_items`` / ``loo_items``) ``ds_accuracy`` and ``loo_agreement``; a number with
    nothing to measure is None.

    ``ds_accuracy``: mean of the Dawid-Skene posterior of the class it answered, over its answers on items that
    another annotator answered too (``ds_items``; on an item only it answered the posterior mostly repeats its
    own vote, so one annotator alone has no accuracy).
    ``confusion``: its Dawid-Skene confusion matrix, rows the truth, columns its answer (helpfulness /
    harmlessness: response_0, response_1; safety: safe, unsafe). ``loo_agreement``: the share of its answers
    equal to the strict majority of the other annotators' answers on the item (``loo_items``: answers with
    such a majority; an item where the others tie or that nobody else answered is left out)."""
    fits = fit_questions(all_labels) if fits is None else fits
    answers = question_answers(all_labels)
    names = sorted({lb.annotator for labels in all_labels for lb in labels})
    report: dict[str, dict[str, Any]] = {a: {"labels": 0} for a in names}
    for labels in all_labels:
        for lb in labels:
            report[lb.annotator]["labels"] += 1
    for q in QUESTIONS:
        for a, r in _question_reliability(answers[q], fits.get(q), names).items():
            report[a][q] = r
    for a in names:
        for key, count in (("ds_accuracy", "ds_items"), ("loo_agreement", "loo_items")):
            parts = [(report[a][q][key], report[a][q][count]) for q in QUESTIONS if report[a][q][key] is not None]
            total = sum(n for _, n in parts)
            report[a][key] = round(sum(v * n for v, n in parts) / total, 4) if total else None
    return report


def _question_reliability(answers: dict[Any, dict[str, int]], fit: QuestionFit | None,
                          names: list[str]) -> dict[str, dict[str, Any]]:
    """One question's ``annotator_reliability`` entry of every annotator of ``names``, in one pass over the answers."""
    post = fit.posterior() if fit is not None else {}
    tally = {a: dict.fromkeys(("answers", "ds_items", "ds_sum", "loo_items", "loo_agree"), 0) for a in names}
    for key, votes in answers.items():
        n, ones = len(votes), sum(votes.values())
        for a, v in votes.items():
            t = tally[a]
            t["answers"] += 1
            if n > 1:
                t["ds_items"] += 1
                t["ds_sum"] += post[key][v]
                others, others_ones = n - 1, ones - v
                if 2 * others_ones != others:  # the others have a strict majority
                    t["loo_items"] += 1
                    t["loo_agree"] += v == int(2 * others_ones > others)
    out = {}
    for a, t in tally.items():
        shared, loo = t["ds_items"], t["loo_items"]
        confusion = None
        if fit is not None and shared:
            confusion = [[round(float(x), 4) for x in row] for row in fit.model.confusion[fit.annotators.index(a)]]
        out[a] = {"answers": t["answers"], "ds_accuracy": round(t["ds_sum"] / shared, 4) if shared else None,
                  "ds_items": shared, "confusion": confusion,
                  "loo_agreement": round(t["loo_agree"] / loo, 4) if loo else None, "loo_items": loo}
    return out


def excluded_annotators(report: dict[str, dict[str, Any]], *, names: Iterable[str] = (), below: float | None = None,
                        min_labels: int = MIN_LABELS_TO_EXCLUDE) -> dict[str, str]:
    """The annotators to drop, name -> reason: those in ``names``, and (``below``) those with at least
    ``min_labels`` labelled pairs whose pooled Dawid-Skene accuracy is below ``below`` (fewer labels than that:
    too little to judge, kept). A name in ``names`` with no label is ignored (nothing to drop)."""
    out = {a: "named" for a in names if a in report}
    if below is not None:
        for a, r in report.items():
            if a not in out and r["labels"] >= min_labels and r["ds_accuracy"] is not None and r["ds_accuracy"] < below:
                out[a] = f"Dawid-Skene accuracy {r['ds_accuracy']:.3f} < {below:g}"
    return dict(sorted(out.items()))
