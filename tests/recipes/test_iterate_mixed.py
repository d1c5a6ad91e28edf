"""`saferlhf iterate --annotator mixed --human_share x --audit targeted|random` end to end (--fast): the AI labels every
pair, the panel the share x, the labelling cost per round in the summary, the cell counts carried across rounds
(and rebuilt exactly by a resumed process), `--setup_from` reusing another run's set-up, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saferlhf.cli import main
from saferlhf.tracking import read_jsonl

ARGS = ["iterate", "--fast", "--rounds", "2", "--redteam_from_round", "1", "--annotator", "mixed"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("iterate_mixed") / "targeted"
    assert main([*ARGS, "--human_share", "0.25", "--audit", "targeted", "--out", str(out)]) == 0
    return out


def _stats(path: Path) -> dict:
    return json.loads(path.read_text())


def test_humans_label_the_share_and_the_summary_counts_them(run):
    summary = _stats(run / "summary.json")
    for k in (1, 2):
        stats = _stats(run / f"round{k}" / "preferences.stats.json")
        c = stats["counts"]
        assert c["human_pairs"] == round(0.25 * c["records"]) and c["human_pairs"] + c["ai_pairs"] == c["records"]
        assert c["human_labels"] == 3 * c["human_pairs"]  # three qualified raters per human pair
        assert c["ai_requests"] == 2 * c["records"]  # the AI: both orders of every pair
        assert stats["audit"] == "targeted" and stats["human_share"] == 0.25
        assert stats["cost_judge"] is (k == 2)  # round 2 asks round 1's cost model
        assert summary["rounds"][k]["human_pairs"] == c["human_pairs"]
        assert len(read_jsonl(run / f"round{k}" / "preferences.jsonl")) == c["records"]
        assert stats["oracle_agreement"]["final"]["accuracy"] >= 0.5
    world = _stats(run / "world" / "world_preferences.stats.json")
    assert world["counts"]["human_pairs"] == round(0.25 * world["counts"]["records"])
    # the cell counts grow over the calls: the world pairs, round 1, round 2
    calls = [_stats(p)["mixed_history"]["calls"] for p in (run / "world" / "world_preferences.stats.json",
                                                            run / "round1" / "preferences.stats.json",
                                                            run / "round2" / "preferences.stats.json")]
    assert calls == [1, 2, 3]


def test_a_resumed_process_labels_round_2_exactly_as_the_run_did(run, tmp_path):
    """A fresh process has a fresh annotator: the history from round 1's statistics rebuilds its cells, so round 2's
    labels are those of the uninterrupted run."""
    from saferlhf.pipelines.iterate import MixedStage, _annotate, _mixed_history, mixed_annotator
    from saferlhf.world.core import build_world

    annotator = mixed_annotator(build_world(0), 0, MixedStage(), 0.25, "targeted")
    mined = read_jsonl(run / "round1" / "redteam" / "prompts.jsonl")
    _annotate(annotator, run / "round2" / "pairs.jsonl", tmp_path / "prefs.jsonl", 2,
              redteam={r["prompt"] for r in mined}, history=_mixed_history(run, 2),
              cost_model=str(run / "round1" / "cost" / "model"))
    assert read_jsonl(tmp_path / "prefs.jsonl") == read_jsonl(run / "round2" / "preferences.jsonl")


def test_setup_from_reuses_the_set_up_and_changes_only_the_labels(run, tmp_path):
    out = tmp_path / "random"
    assert main([*ARGS, "--human_share", "0.25", "--audit", "random", "--setup_from", str(run), "--out", str(out)]) == 0
    a, b = _stats(run / "summary.json"), _stats(out / "summary.json")
    assert a["rounds"][0] | {"seconds": 0, "stage_seconds": 0, "policy": ""} == \
        b["rounds"][0] | {"seconds": 0, "stage_seconds": 0, "policy": ""}  # round 0 (SFT) is the same evaluation
    assert (out / "sft" / "model" / "model.safetensors").read_bytes() == \
        (run / "sft" / "model" / "model.safetensors").read_bytes()
    assert read_jsonl(out / "world" / "sft_corpus.jsonl") == read_jsonl(run / "world" / "sft_corpus.jsonl")
    assert _stats(out / "round1" / "preferences.stats.json")["audit"] == "random"


@pytest.mark.parametrize("extra, message", [
    (["--seed", "1"], "was set up with other seed"),
    (["--sft.epochs", "1"], "was set up with other sft"),
])
def test_setup_from_another_set_up_is_one_line(run, tmp_path, capsys, extra, message):
    assert main([*ARGS, "--setup_from", str(run), "--out", str(tmp_path / "bad"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_setup_from_an_unfinished_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert main([*ARGS, "--setup_from", str(tmp_path / "half"), "--out", str(tmp_path / "bad")]) == 2
    assert "is not an iterate run with a finished set-up" in capsys.readouterr().err


@pytest.mark.parametrize("extra, field", [(["--human_share", "1.5"], "human_share"), (["--audit", "all"], "audit")])
def test_bad_mixed_options_are_one_line(tmp_path, capsys, extra, field):
    assert main([*ARGS, "--out", str(tmp_path / "bad"), *extra]) == 2
    assert field in capsys.readouterr().err
