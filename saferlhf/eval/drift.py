"""`saferlhf drift check --cost_model CM --labels FRESH`: has the standard moved away from the cost model? (issue 24
§4, docs/value_drift.md)

Per harm category, the cost model's agreement with a small FRESH audit sample (per-response safety labels given
now) is compared with its agreement at training time (``--reference``: per-response labels from then, e.g. the
audit sample taken when the model was trained; default: the cost model's own validation split, below):

* agreement = share of responses where the cost model's verdict (unsafe = cost > its stored decision threshold,
  else > 0) equals the label; Wilson 95 % intervals;
* the test: one-sided Fisher exact test of "agreement now < agreement then" (the 2x2 table agree / disagree x
  then / now), Holm's step-down correction over the categories tested at level ``alpha``; a category with fewer
  than ``min_labels`` labels on either side is reported as not tested;
* a drifted category gets its direction (``stricter``: the fresh labels call unsafe what the model lets pass more
  often than then; ``lenient``: the other way) and ``labels_needed``: the smallest n (a multiple of ``step``) such
  that the test on its first n fresh labels alone already rejects at ``alpha / categories tested`` (Bonferroni:
  conservative, so the labels a team would have needed, in file order). Looking at several n is repeated testing;
  ``labels_needed`` is a cost estimate, the decision is the full-sample test.

Default reference: the cost model's run folder (CM/..) names its training file (config.yaml ``train_file``) and
the prompts it learned (``training_prompts.json``); the records whose prompt it did not learn are its validation
split. A PKU-SafeRLHF record gives each response a category only through the harm categories flagged on the pair
(the union over both responses; a pair with none flagged has no category and is left out), so this default
compares slightly different populations: an audit sample from training time (``--reference``) is the sound choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saferlhf.config import option
from saferlhf.data.labelled import LabelColumns


@dataclass
class DriftCheckConfig(LabelColumns):
    cost_model: str = option("", "the cost model folder to check")
    labels: str = option("", "FRESH per-response safety labels with a category column (any CSV / JSON / JSONL: "
                             "--prompt_column, --response_column, --label_column, --category_column)")
    reference: str = option("", "labels from the time the cost model was trained (same columns; default: its "
                                "validation split, read from its run folder)")
    category_column: str | None = option("category", "column with the harm category of each labelled response")
    alpha: float = option(0.05, "family-wise error rate over the categories tested (Holm)", gt=0, lt=1)
    min_labels: int = option(10, "a category needs at least this many labels on each side to be tested", ge=1)
    step: int = option(10, "labels_needed is searched in multiples of this", ge=1)
    batch_size: int = option(64, "texts per forward pass", ge=1)
    out: str = option("", "write the report here as JSON (default: print only)")


# ---- the statistics (pure functions) ------------------------------------------------------------------
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (95 % by default); (0, 1) for n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - half) / (1 + z * z / n)), min(1.0, (centre + half) / (1 + z * z / n))


def fisher_less(agree_now: int, n_now: int, agree_then: int, n_then: int) -> float:
    """One-sided Fisher exact p-value of "agreement now < agreement then": P(X <= agree_now) for X hypergeometric
    (population n_now + n_then with agree_now + agree_then agreements, n_now drawn)."""
    total, agree = n_now + n_then, agree_now + agree_then
    denom = math.comb(total, n_now)
    lo = max(0, n_now - (total - agree))
    return min(1.0, sum(math.comb(agree, x) * math.comb(total - agree, n_now - x)
                        for x in range(lo, agree_now + 1)) / denom)


def holm(pvalues: dict[str, float], alpha: float) -> dict[str, bool]:
    """Holm's step-down rejections at family-wise level ``alpha``."""
    order = sorted(pvalues, key=lambda c: (pvalues[c], c))
    out, m = dict.fromkeys(pvalues, False), len(pvalues)
    for i, c in enumerate(order):
        if pvalues[c] > alpha / (m - i):
            break
        out[c] = True
    return out


def agreement(verdicts: Sequence[bool], labels: Sequence[bool]) -> dict[str, Any]:
    """Agreement of the model's unsafe verdicts with the unsafe labels, with its interval and the two error rates
    (``missed_unsafe``: labelled unsafe, passed; ``flagged_safe``: labelled safe, flagged)."""
    n = len(labels)
    agree = sum(v == u for v, u in zip(verdicts, labels))
    unsafe = sum(labels)
    missed = sum(u and not v for v, u in zip(verdicts, labels))
    flagged = sum(v and not u for v, u in zip(verdicts, labels))
    return {"n": n, "agree": agree, "agreement": agree / n if n else None, "interval": list(wilson(agree, n)),
            "labelled_unsafe": unsafe, "missed_unsafe": missed / unsafe if unsafe else None,
            "flagged_safe": flagged / (n - unsafe) if n - unsafe else None}


def compare(now: dict[str, tuple[list[bool], list[bool]]], then: dict[str, tuple[list[bool], list[bool]]], *,
            alpha: float = 0.05, min_labels: int = 10, step: int = 10) -> dict[str, Any]:
    """The drift report from, per category, (model verdicts, labels) now and then (module docstring)."""
    cats = sorted(set(now) | set(then))
    rows: dict[str, dict[str, Any]] = {}
    pvalues: dict[str, float] = {}
    for c in cats:
        a_now, a_then = agreement(*now.get(c, ([], []))), agreement(*then.get(c, ([], [])))
        row: dict[str, Any] = {"now": a_now, "then": a_then, "tested": a_now["n"] >= min_labels and
                               a_then["n"] >= min_labels}
        if row["tested"]:
            pvalues[c] = row["p_value"] = fisher_less(a_now["agree"], a_now["n"], a_then["agree"], a_then["n"])
        rows[c] = row
    rejected = holm(pvalues, alpha)
    for c, row in rows.items():
        row["drifted"] = rejected.get(c, False)
        if not row["drifted"]:
            continue
        d_missed = (row["now"]["missed_unsafe"] or 0) - (row["then"]["missed_unsafe"] or 0)
        d_flagged = (row["now"]["flagged_safe"] or 0) - (row["then"]["flagged_safe"] or 0)
        row["direction"] = "stricter" if d_missed >= d_flagged else "lenient"
        row["labels_needed"] = labels_needed(now[c], row["then"], alpha / max(1, len(pvalues)), step)
    drifted = [c for c in cats if rows[c]["drifted"]]
    return {"categories": rows, "drifted": drifted, "tested": sorted(pvalues), "alpha": alpha,
            "min_labels": min_labels, "fresh_labels": sum(r["now"]["n"] for r in rows.values()),
            "labels_needed": {c: rows[c]["labels_needed"] for c in drifted}}


def labels_needed(now: tuple[list[bool], list[bool]], then: dict[str, Any], level: float, step: int) -> int | None:
    """The smallest multiple of ``step`` n whose first n fresh labels alone reject at ``level``; None if none."""
    verdicts, labels = now
    for n in range(step, len(labels) + step, step):
        n = min(n, len(labels))
        agree = sum(v == u for v, u in zip(verdicts[:n], labels[:n]))
        if fisher_less(agree, n, then["agree"], then["n"]) <= level:
            return n
    return None


# ---- the command -------------------------------------------------------------------------------------
def _by_category(records: Sequence[Any], verdicts: Sequence[bool]) -> dict[str, tuple[list[bool], list[bool]]]:
    out: dict[str, tuple[list[bool], list[bool]]] = {}
    for r, v in zip(records, verdicts):
        if r.category:
            got = out.setdefault(r.category, ([], []))
            got[0].append(bool(v))
            got[1].append(bool(r.unsafe))
    return out


def reference_from_run(cost_model: str) -> list[Any]:
    """The cost model's validation split as labelled responses with categories (module docstring)."""
    import json

    import yaml

    from saferlhf.data.labelled import LabelledResponse
    from saferlhf.data.loaders import load_safety_preferences
    from saferlhf.data.split import prompt_hash
    from saferlhf.errors import UserError

    run = Path(cost_model).parent
    cfg_file, learnt_file = run / "config.yaml", run / "training_prompts.json"
    if not cfg_file.exists() or not learnt_file.exists():
        raise UserError(f"drift check: {cost_model} has no run folder with config.yaml and training_prompts.json "
                        "to take the training-time labels from", hint="give --reference LABELS")
    train_file = (yaml.safe_load(cfg_file.read_text()) or {}).get("train_file")
    if not train_file:
        raise UserError(f"drift check: {cfg_file} names no train_file", hint="give --reference LABELS")
    learnt = set(json.loads(learnt_file.read_text())["sha256"])
    out = []
    for rec in load_safety_preferences(train_file, on_error="drop"):
        if prompt_hash(rec.prompt) in learnt:
            continue
        flagged = {c for cats in (rec.response_0_harm_category, rec.response_1_harm_category) for c, on in
                   (cats or {}).items() if on}
        if len(flagged) != 1:  # no category, or several: which one is the pair about?
            continue
        category = flagged.pop()
        for i in (0, 1):
            out.append(LabelledResponse(rec.prompt, rec.response(i), not rec.is_safe(i), category))
    return out


def run(cfg: DriftCheckConfig) -> int:
    from rich.console import Console
    from rich.table import Table

    from saferlhf.data.labelled import load_labelled_responses
    from saferlhf.errors import UserError
    from saferlhf.eval.judges import ScoreModelJudge
    from saferlhf.files import atomic_write_json

    if not cfg.cost_model or not cfg.labels:
        raise UserError("drift check: give --cost_model CM and --labels FRESH")
    if not cfg.category_column:
        raise UserError("drift check: category_column: the labels need a harm category per response")
    fresh = list(load_labelled_responses(cfg.labels, cfg))
    reference = list(load_labelled_responses(cfg.reference, cfg)) if cfg.reference else \
        reference_from_run(cfg.cost_model)
    for name, recs in (("labels", fresh), ("reference", reference)):
        if not any(r.category for r in recs):
            raise UserError(f"drift check: {name}: no record has a harm category (--category_column "
                            f"{cfg.category_column})")
    judge = ScoreModelJudge(cfg.cost_model, "cost", batch_size=cfg.batch_size)

    def verdicts(recs):
        return [v.unsafe for v in judge.judge_batch([r.prompt for r in recs], [r.response for r in recs])]

    report = compare(_by_category(fresh, verdicts(fresh)), _by_category(reference, verdicts(reference)),
                     alpha=cfg.alpha, min_labels=cfg.min_labels, step=cfg.step)
    report |= {"cost_model": cfg.cost_model, "labels": cfg.labels, "reference": cfg.reference or "validation split",
               "threshold": judge.threshold, "threshold_source": judge.threshold_source}
    table = Table(title=f"drift check: {cfg.cost_model} (alpha {cfg.alpha}, Holm)")
    for col in ("category", "then", "now", "p", "drifted", "labels needed"):
        table.add_column(col)
    for c, row in report["categories"].items():
        fmt = lambda a: "-" if a["agreement"] is None else f"{a['agreement']:.3f} (n={a['n']})"  # noqa: E731
        table.add_row(c, fmt(row["then"]), fmt(row["now"]), f"{row['p_value']:.2g}" if "p_value" in row else "-",
                      row.get("direction", "no") if row["drifted"] else "no" if row["tested"] else "not tested",
                      str(row.get("labels_needed") or "-"))
    Console(width=140).print(table)
    print(f"drift check: drifted: {', '.join(report['drifted']) or 'none'}")
    if cfg.out:
        atomic_write_json(Path(cfg.out), report)
        print(f"drift check: report -> {cfg.out}")
    return 0
