"""The refusal judge against human labels: XSTest v2's 2250 model completions (Röttger et al. 2024).

Each of the five files (gpt4, llama2new, llama2orig, mistralguard, mistralinstruct) holds the 450 XSTest
prompts, one model's completion of each, and the human ``final_label``: 1_full_compliance, 2_full_refusal or
3_partial_refusal (a refusal here: 2 or 3; read with `saferlhf.data.labelled.load_refusal_labels`).
`saferlhf.eval.judges.RefusalJudge` labels every completion with each rule of `REFUSAL_LISTS` (gcg: GCG's 29
strings anywhere, the default; xstest: XSTest's refusal openings), and this script reports accuracy,
precision, recall and F1 of "refusal" per model file and overall, on the safe prompts (type not starting with
``contrast_``: over-refusal is measured there), the unsafe ones and all; plus, per rule, the most frequent
openings of the refusals it misses and the strings behind its false alarms.
No model, no network, a second.

    python bench/bench_refusal_judge.py            # -> bench/results/refusal_judge.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DATA = common.REPO.parent / "shared" / "data" / "xstest"
SUBSETS = ("safe", "unsafe", "all")


def scores(truth: list[bool], predicted: list[bool]) -> dict:
    """Accuracy, precision, recall and F1 of the positive class (refusal), with the confusion counts."""
    tp = sum(t and p for t, p in zip(truth, predicted))
    fp = sum(p and not t for t, p in zip(truth, predicted))
    fn = sum(t and not p for t, p in zip(truth, predicted))
    tn = len(truth) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": round((tp + tn) / len(truth), 4) if truth else None, "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4), "n": len(truth), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "human_refusal_rate": round((tp + fn) / len(truth), 4) if truth else None,
            "judge_refusal_rate": round((tp + fp) / len(truth), 4) if truth else None}


def by_subset(rows: list, predicted: list[bool]) -> dict:
    out = {}
    for subset in SUBSETS:
        keep = [k for k, r in enumerate(rows) if subset == "all" or r.prompt_is_safe == (subset == "safe")]
        out[subset] = scores([rows[k].refusal for k in keep], [predicted[k] for k in keep])
    return out


def opening(text: str, words: int = 4) -> str:
    return " ".join(text.replace("\u2019", "'").split()[:words])


def misses(rows: list, predicted: list[bool], rule, top: int) -> dict:
    """What the rule gets wrong: the commonest openings of missed refusals, and for false alarms the matched
    strings (anywhere rules) or openings (start rules)."""
    missed = Counter(opening(r.response) for r, p in zip(rows, predicted) if r.refusal and not p)
    alarms: Counter = Counter()
    for r, p in zip(rows, predicted):
        if p and not r.refusal:
            text = r.response.replace("\u2019", "'")
            alarms.update([s for s in rule.strings if s in text] if rule.where == "anywhere" else [opening(text)])
    return {"missed_refusals": sum(missed.values()), "missed_openings": dict(missed.most_common(top)),
            "false_alarms": sum(p and not r.refusal for r, p in zip(rows, predicted)),
            "false_alarm_matches": dict(alarms.most_common(top))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DATA), help="folder of xstest_v2_completions_*.csv")
    ap.add_argument("--top", type=int, default=12, help="openings / strings listed per error kind")
    a = ap.parse_args()
    from saferlhf.data.labelled import load_refusal_labels
    from saferlhf.eval.judges import REFUSAL_LISTS, RefusalJudge

    files = sorted(Path(a.data).glob("xstest_v2_completions_*.csv"))
    if not files:
        raise SystemExit(f"no xstest_v2_completions_*.csv in {a.data} (the shared data folder, ../shared/data)")
    data = {f.stem.removeprefix("xstest_v2_completions_"): list(load_refusal_labels(f)) for f in files}
    every = [r for rows in data.values() for r in rows]
    result: dict = {"benchmark": "refusal_judge", "default_rule": "gcg",
                    "data": {name: len(rows) for name, rows in data.items()}, "rules": {}}
    for rule_name, rule in REFUSAL_LISTS.items():
        judge = RefusalJudge(rule)
        predicted = {name: [bool(judge.judge(r.prompt, r.response).refusal) for r in rows]
                     for name, rows in data.items()}
        flat = [p for name in data for p in predicted[name]]
        result["rules"][rule_name] = {
            "overall": by_subset(every, flat),
            "per_model": {name: by_subset(rows, predicted[name]) for name, rows in data.items()},
            "errors": misses(every, flat, rule, a.top)}
    result["headline"] = {rule: {s: {"accuracy": r["overall"][s]["accuracy"], "f1": r["overall"][s]["f1"]}
                                 for s in SUBSETS} for rule, r in result["rules"].items()}
    result |= {"versions": common.versions(), "machine": common.machine(), "command": " ".join(sys.argv)}
    path = common.write_result("refusal_judge", result)
    print(json.dumps(result, indent=2))
    print(f"-> {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
