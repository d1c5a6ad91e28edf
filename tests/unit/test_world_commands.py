"""`saferlhf world prompts | corpus | annotate` run functions (and through the CLI when wired)."""

from __future__ import annotations

import json

import pytest

from saferlhf.data.validate import DataFileError, DataValidationError
from saferlhf.annotate.pairs import input_pairs, unique_pairs
from saferlhf.world.commands import (WorldAnnotateConfig, WorldCorpusConfig, WorldPromptsConfig, run_world_annotate,
                                     run_world_corpus, run_world_prompts)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("split,n", [("train", 640), ("test", 240), ("all", 880)])
def test_world_prompts(tmp_path, capsys, split, n):
    out = tmp_path / "p.jsonl"
    assert run_world_prompts(WorldPromptsConfig(out=str(out), seed=0, split=split)) == 0
    rows = _rows(out)
    assert len(rows) == n and set(rows[0]) == {"prompt", "kind", "category", "topic", "split"}
    assert f"{n} {split} prompts" in capsys.readouterr().out


def test_world_prompts_redteam_test_and_adversarial_corpus_through_the_cli(tmp_path):
    from saferlhf import cli
    from saferlhf.world.adversarial import wrappers

    out = tmp_path / "rt.jsonl"
    assert cli.main(["world", "prompts", "--out", str(out), "--split", "redteam_test"]) == 0
    rows = _rows(out)
    test_names = {w.name for w in wrappers("test")}
    assert len(rows) == 224 and all(r["kind"] == "harmful" and r["wrappers"][0] in test_names for r in rows)
    corpus = tmp_path / "c.jsonl"
    assert cli.main(["world", "corpus", "--out", str(corpus), "--n", "400", "--adversarial_share", "0.5"]) == 0
    from saferlhf.world import build_world

    world = build_world(0)
    share = sum(bool(world.classify(r["prompt"]).wrappers) for r in _rows(corpus)) / 400
    assert 0.4 < share < 0.6
    assert cli.main(["world", "corpus", "--out", str(corpus), "--adversarial_share", "1.5"]) == 2


def test_world_corpus(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert run_world_corpus(WorldCorpusConfig(out=str(out), n=300, seed=1)) == 0
    rows = _rows(out)
    assert len(rows) == 300 and set(rows[0]) == {"prompt", "response", "kind"}
    assert "300 examples" in capsys.readouterr().out


def test_world_annotate_generated_and_from_file(tmp_path, capsys):
    out = tmp_path / "prefs.jsonl"
    assert run_world_annotate(WorldAnnotateConfig(out=str(out), n=120, seed=0)) == 0
    rows = _rows(out)
    assert len(rows) == 120 and rows[0]["prompt_source"] == "saferlhf-world"
    stats = json.loads((tmp_path / "prefs.stats.json").read_text())
    assert {"counts", "qualification", "agreement", "audit", "oracle_agreement"} <= set(stats)
    printed = capsys.readouterr().out
    assert "qualification" in printed and "Fleiss" in printed and "120 records" in printed

    pairs = tmp_path / "sft_pairs.jsonl"
    pairs.write_text("".join(json.dumps({k: r[k] for k in ("prompt", "response_0", "response_1")}) + "\n"
                             for r in rows[:40]))
    out2, report = tmp_path / "prefs2.jsonl", tmp_path / "stats.json"
    assert run_world_annotate(WorldAnnotateConfig(input=str(pairs), out=str(out2), report=str(report))) == 0
    rows2 = _rows(out2)
    assert len(rows2) == 40 and rows2[0]["response_0_source"] == "sft_pairs" and report.exists()


def test_world_annotate_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi", "response_0": "a"}) + "\n")
    with pytest.raises(ValueError, match="response_1"):
        run_world_annotate(WorldAnnotateConfig(input=str(bad), out=str(tmp_path / "o.jsonl")))


def test_world_annotate_input_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi", "response_0": "a", "response_1": "b"}) + "\n{not json\n")
    with pytest.raises(DataValidationError, match=f"{bad}:2: record: malformed JSON"):
        input_pairs(str(bad), "src")
    bad.write_text("")
    with pytest.raises(DataFileError, match=f"{bad}: the file is empty"):
        input_pairs(str(bad), "src")


def test_input_pairs_sources_and_unique_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "p", "response_0": "a", "response_1": "b", "response_1_source": "model-b"},
            {"prompt": "p", "response_0": "b", "response_1": "a"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (pair,) = input_pairs(str(path), "src")
    assert (pair["response_0_source"], pair["response_1_source"]) == ("src", "model-b")
    assert unique_pairs([("p", "a", "b"), ("p", "b", "a"), ("q", "a", "b")]) == [("p", "a", "b"), ("q", "a", "b")]


def test_cli_dispatch(tmp_path):
    cli = pytest.importorskip("saferlhf.cli")
    out = tmp_path / "p.jsonl"
    assert cli.main(["world", "prompts", "--out", str(out), "--split", "test"]) == 0
    assert len(_rows(out)) == 240
