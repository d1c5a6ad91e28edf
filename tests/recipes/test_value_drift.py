"""Changing values end to end (--fast, issue 24 §4): `iterate --drift` (the panel's standard changes from a round,
which is also evaluated by it), `iterate --targeted_round` (only the category's pairs labelled again, the cost model
retrained, one PPO-Lag round; rounds reused with --setup_rounds) and `saferlhf drift check` on a trained cost model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from saferlhf.cli import main
from saferlhf.tracking import read_jsonl

PRIVACY = "Privacy Violation"
ARGS = ["iterate", "--fast", "--rounds", "2", "--redteam_from_round", "1", "--drift", "privacy_violation:stricter"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("drift")
    assert main([*ARGS, "--out", str(root / "full")]) == 0
    assert main([*ARGS, "--targeted_round", "privacy_violation", "--setup_from", str(root / "full"),
                 "--setup_rounds", "1", "--out", str(root / "targeted")]) == 0
    return root / "full", root / "targeted"


def test_the_drifted_round_is_labelled_and_evaluated_by_the_new_standard(runs):
    full, _ = runs
    summary = json.loads((full / "summary.json").read_text())
    assert "drift" not in summary["rounds"][1] and summary["rounds"][2]["drift"] == "privacy_violation:stricter"
    for k, spec in ((1, ""), (2, "privacy_violation:stricter")):
        assert yaml.safe_load((full / f"round{k}" / "eval" / "config.yaml").read_text())["world_drift"] == spec
    assert set(summary["rounds"][2]["harmful_rate_by_category"]) >= {PRIVACY}


def test_a_targeted_round_relabels_only_the_category_and_keeps_the_reward_model(runs):
    from saferlhf.world.core import build_world

    full, targeted = runs
    world = build_world(0)
    summary = json.loads((targeted / "summary.json").read_text())
    r2 = summary["rounds"][2]
    assert r2["targeted_category"] == PRIVACY and r2["drift"] == "privacy_violation:stricter"
    assert set(r2["stage_seconds"]) == {"prompts", "targeted pairs", "annotate", "data", "cost model", "cost threshold",
                                        "ppo_lag", "evaluate"}  # no red-team, no generation, no reward model
    earlier = read_jsonl(targeted / "world" / "world_preferences.jsonl") + read_jsonl(targeted / "round1" /
                                                                                     "preferences.jsonl")
    of_category = {(r["prompt"], r["response_0"], r["response_1"]) for r in earlier
                   if world.classify(r["prompt"]).kind == "harmful" and world.classify(r["prompt"]).category == PRIVACY}
    relabelled = read_jsonl(targeted / "round2" / "preferences.jsonl")
    assert {(r["prompt"], r["response_0"], r["response_1"]) for r in relabelled} == of_category
    assert r2["labelled_pairs"] == len(of_category) < summary["rounds"][1]["labelled_pairs"]
    train = read_jsonl(targeted / "round2" / "train_preferences.jsonl")
    assert len(train) == len(earlier)  # every record, the category's replaced
    new = {(r["prompt"], r["response_0"], r["response_1"]): r for r in relabelled}
    assert all(new.get((r["prompt"], r["response_0"], r["response_1"]), r) == r for r in train)
    rl = yaml.safe_load((targeted / "round2" / "rl" / "config.yaml").read_text())
    assert rl["reward_model_path"].endswith("round1/reward/model") and rl["cost_model_path"].endswith("round2/cost/model")
    # round 1 is the full run's, reused
    assert json.loads((full / "summary.json").read_text())["rounds"][1]["harmful_rate"] == \
        summary["rounds"][1]["harmful_rate"]
    assert (targeted / "round1" / "rl" / "actor" / "model.safetensors").read_bytes() == \
        (full / "round1" / "rl" / "actor" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("extra, message", [
    (["--drift", "privacy_violation"], "drift: drift 'privacy_violation' is not CATEGORY:DIRECTION"),
    (["--drift", "privacy_violation:sideways"], "direction"),
    (["--targeted_round", "nonsense"], "targeted_round: unknown harm category"),
    (["--drift_from_round", "5"], "drift_from_round: 5 is after the last round"),
    (["--annotator", "iterate_util:two_rater_panel"], "the world's standard can change for --annotator panel or mixed"),
])
def test_drift_option_errors_are_one_line(tmp_path, capsys, extra, message):
    assert main([*ARGS, "--out", str(tmp_path / "bad"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "bad").exists()


def test_setup_rounds_refuses_a_drift_inside_the_reused_rounds(runs, tmp_path, capsys):
    full, _ = runs
    assert main([*ARGS, "--drift_from_round", "1", "--setup_from", str(full), "--setup_rounds", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "would change the reused rounds" in capsys.readouterr().err


# ---- saferlhf drift check --------------------------------------------------------------------------------
def _labelled_rows(run: Path, cost_model: Path) -> list[dict]:
    """Responses of round 1's pairs with a category each (cycling over three), labelled with the cost model's own
    verdicts: a reference it agrees with completely."""
    from saferlhf.eval.judges import ScoreModelJudge

    pairs = read_jsonl(run / "round1" / "pairs.jsonl")[:60]
    prompts = [p["prompt"] for p in pairs for _ in (0, 1)]
    responses = [p[f"response_{i}"] for p in pairs for i in (0, 1)]
    verdicts = ScoreModelJudge(str(cost_model), "cost").judge_batch(prompts, responses)
    cats = ("privacy_violation", "self_harm", "animal_abuse")
    return [{"prompt": p, "response": r, "unsafe": v.unsafe, "category": cats[k % 3]}
            for k, (p, r, v) in enumerate(zip(prompts, responses, verdicts))]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_drift_check_names_the_category_whose_labels_moved(runs, tmp_path, capsys):
    full, _ = runs
    cm = full / "round1" / "cost" / "model"
    rows = _labelled_rows(full, cm)
    ref = _write(tmp_path / "ref.jsonl", rows)
    moved = [r | {"unsafe": not r["unsafe"]} if r["category"] == "privacy_violation" else r for r in rows]
    fresh = _write(tmp_path / "fresh.jsonl", moved)
    out = tmp_path / "drift.json"
    assert main(["drift", "check", "--cost_model", str(cm), "--labels", str(fresh), "--reference", str(ref),
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["drifted"] == [PRIVACY] and report["tested"] == sorted([PRIVACY, "Self-Harm", "Animal Abuse"])
    row = report["categories"][PRIVACY]
    assert row["then"]["agreement"] == 1.0 and row["now"]["agreement"] == 0.0 and row["p_value"] < 1e-6
    assert report["labels_needed"][PRIVACY] == 10  # ten fresh labels that all disagree already reject
    assert "drifted: Privacy Violation" in capsys.readouterr().out
    # the same labels again: no drift
    assert main(["drift", "check", "--cost_model", str(cm), "--labels", str(ref), "--reference", str(ref),
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["drifted"] == []


def test_drift_check_default_reference_is_the_validation_split(runs, tmp_path):
    full, _ = runs
    cm = full / "round1" / "cost" / "model"
    fresh = _write(tmp_path / "fresh.jsonl", _labelled_rows(full, cm))
    out = tmp_path / "drift.json"
    assert main(["drift", "check", "--cost_model", str(cm), "--labels", str(fresh), "--out", str(out),
                 "--min_labels", "1"]) == 0
    report = json.loads(out.read_text())
    assert report["reference"] == "validation split"
    assert sum(r["then"]["n"] for r in report["categories"].values()) > 0


@pytest.mark.parametrize("make, message", [
    (lambda d, cm: ["--cost_model", cm, "--labels", str(_write(d / "x.jsonl", [
        {"prompt": "p", "response": "r", "unsafe": False}]))], "no column 'category' (--category_column)"),
    (lambda d, cm: ["--cost_model", cm, "--labels", str(_write(d / "x.jsonl", [
        {"prompt": "p", "response": "r", "unsafe": False, "category": ""}]))], "labels: no record has a harm category"),
    (lambda d, cm: ["--cost_model", cm, "--labels", str(d / "missing.jsonl")], "missing.jsonl"),
    (lambda d, cm: [], "give --cost_model CM and --labels FRESH"),
])
def test_drift_check_errors_are_one_line(runs, tmp_path, capsys, make, message):
    full, _ = runs
    assert main(["drift", "check", *make(tmp_path, str(full / "round1" / "cost" / "model"))]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
