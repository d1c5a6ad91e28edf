"""`saferlhf score-model --kind cost` on a MIX (per-response labels + ranked pairs, per-source weights, a YAML
preset), its stored decision threshold, and `saferlhf score` on any labelled table, end to end on a tiny model."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch
import yaml

from saferlhf.cli import main
from saferlhf.models import ScoreModel
from saferlhf.models.score import THRESHOLD_KEY, stored_threshold, unsafe_threshold
from saferlhf.tracking import read_jsonl

from tests.conftest import BAD, GOOD, TOPICS


def _labelled_csv(path, n=120, seed=0, label_column="harm"):
    """A labelled table with custom columns and values: unsafe answers hold a harmful phrase."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer", label_column])
        for i in range(n):
            t = TOPICS[i % len(TOPICS)]
            unsafe = i % 3 == 0
            text = f"{rng.choice(BAD if unsafe else GOOD)} and serve the {t} warm."
            w.writerow([f"what about {t} number {i}?", text, "Y" if unsafe else "N"])
    return path


@pytest.fixture(scope="module")
def mix_run(tiny_models, pku_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    table = _labelled_csv(root / "labels.csv")
    preset = {"kind": "cost", "max_length": 64, "batch_size": 16, "max_steps": 25, "log_every": 1,
              "optim": {"lr": 3e-3, "weight_decay": 0.0}, "runtime": {"progress": False},
              "sources": [
                  {"name": "table", "path": str(table), "prompt_column": "question", "response_column": "answer",
                   "label_column": "harm", "unsafe_values": ["y"], "safe_values": ["n"], "eval_ratio": 0.25,
                   "prompt_range": [0.2, 1.0], "weight": 2.0},
                  {"name": "pairs", "path": str(pku_file), "type": "pairs", "eval_ratio": 0.2}]}
    cfg = root / "preset.yaml"
    cfg.write_text(yaml.safe_dump(preset))
    out = root / "run"
    assert main(["score-model", "--config", str(cfg), "--model_path", str(tiny_models["llama"]),
                 "--out", str(out)]) == 0
    return {"root": root, "out": out, "table": table}


def test_mix_trains_both_terms_and_stores_a_threshold(mix_run, tiny_models):
    out = mix_run["out"]
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert all(r["train/singles"] > 0 for r in rows[:5]) and any(r["train/pairs"] > 0 for r in rows)
    init = ScoreModel.from_pretrained(tiny_models["llama"], score_type="cost", allow_new_head=True).state_dict()
    trained = ScoreModel.from_pretrained(out / "model").state_dict()
    assert not [k for k in init if torch.equal(init[k], trained[k])]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["eval/table/f1"] >= 0.9 and ev["eval/table/auroc"] >= 0.95
    assert ev["eval/pairs/pair_accuracy"] >= 0.8
    sources = {s["name"]: s for s in json.loads((out / "sources.json").read_text())}
    assert sources["table"]["train_responses"] > 0 and sources["table"]["eval_responses"] > 0
    assert sources["pairs"]["train_pairs"] > 0 and sources["table"]["weight"] == 2.0
    found = stored_threshold(out / "model")
    assert found["method"] == "best_f1" and found["value"] == pytest.approx(ev["eval/threshold"])
    assert json.loads((out / "model" / "config.json").read_text())[THRESHOLD_KEY]["value"] == found["value"]
    # the training prompts include the labelled responses' prompts, never the part outside prompt_range
    from saferlhf.data.split import prompt_bucket, prompt_hash

    trained_prompts = set(json.loads((out / "training_prompts.json").read_text())["sha256"])
    with mix_run["table"].open() as f:
        prompts = [r["question"] for r in csv.DictReader(f)]
    outside = [p for p in prompts if prompt_bucket(p) < 0.2]
    assert outside and not {prompt_hash(p) for p in outside} & trained_prompts


def test_score_any_labelled_table_uses_the_stored_threshold(mix_run, tmp_path):
    model = mix_run["out"] / "model"
    table = _labelled_csv(tmp_path / "new.csv", n=48, seed=5, label_column="verdict")
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--input", str(table), "--prompt_column", "question", "--response_column", "answer",
                 "--label_column", "verdict", "--unsafe_values", "y", "--safe_values", "n",
                 "--cost_model", str(model), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    t = unsafe_threshold(model)
    assert len(rows) == 48 and all(r["unsafe"] == (r["cost"] > t) for r in rows)
    assert rows[0]["question"].startswith("what about")  # every input column is kept
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["threshold"] == pytest.approx(t) and summary["metrics"]["f1"] >= 0.9
    # without labels: cost and unsafe per row, no metrics
    assert main(["score", "--input", str(table), "--prompt_column", "question", "--response_column", "answer",
                 "--cost_model", str(model), "--out", str(tmp_path / "unlabelled.jsonl")]) == 0
    summary = json.loads((tmp_path / "unlabelled.jsonl.summary.json").read_text())
    assert "metrics" not in summary and summary["records"] == 48


def test_mix_errors_are_one_line(tiny_models, tmp_path, capsys):
    table = _labelled_csv(tmp_path / "labels.csv", n=12)
    code = main(["score-model", "--kind", "reward", "--model_path", str(tiny_models["llama"]), "--train_file",
                 str(table), "--label_column", "harm", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code != 0 and "cost models only" in err and "Traceback" not in err
    code = main(["score-model", "--kind", "cost", "--model_path", str(tiny_models["llama"]), "--train_file",
                 str(table), "--label_column", "harm", "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code != 0 and "labels.csv" in err and "harm" in err and "Traceback" not in err  # 'Y'/'N' unknown
