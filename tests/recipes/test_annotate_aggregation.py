"""`saferlhf annotate run` with the world's AI judge (``--annotator world:ai``) and with the aggregations
(``--aggregation majority|dawid_skene|soft``, ``--exclude``, ``--exclude_below``) end to end through the CLI: records
the PKU-SafeRLHF loader reads, per-annotator reliability in stats.json, and a rerun that re-aggregates without
labelling again."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from saferlhf.annotate.labels import Label
from saferlhf.cli import main
from saferlhf.data.loaders import load_safety_preferences

N_PAIRS = 40


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """World pairs, the harmful prompts of every other pair in an adversarial wrapper."""
    from saferlhf.world import adversarial, build_world

    world = build_world(0)
    rows = []
    for k, (p, a, b) in enumerate(world.response_pairs(N_PAIRS, seed=8)):
        if world.lookup(p).kind == "harmful" and k % 2 == 0:
            p = adversarial.apply(adversarial.WRAPPERS[k % len(adversarial.WRAPPERS)], p)
        rows.append({"prompt": p, "response_0": a, "response_1": b})
    path = tmp_path_factory.mktemp("aggregation") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_world_ai_end_to_end(pairs_file, tmp_path, capsys):
    out = tmp_path / "ai"
    assert main(["annotate", "run", "--annotator", "world:ai", "--input", str(pairs_file), "--out", str(out)]) == 0
    labels = _lines(out / "labels.jsonl")
    assert len(labels) == N_PAIRS and {x["annotator"] for x in labels} == {"world:ai"}
    stats = json.loads((out / "stats.json").read_text())
    ai = stats["world_ai"]
    assert (ai["miss_disguised"], ai["verbosity_bias"], ai["position_bias"], ai["seed"]) == (0.5, 0.2, 0.5, 0)
    assert 5 < ai["disguised_pairs"] < N_PAIRS
    assert stats["aggregation"] == "majority" and stats["annotators"]["world:ai"]["ds_accuracy"] is None  # alone
    assert len(load_safety_preferences(str(out / "records.jsonl"))) == stats["counts"]["records"] > 30
    assert json.loads((out / "run.json").read_text())["annotator"] == "world:ai"
    assert "annotator world:ai: 40 pairs" in capsys.readouterr().out
    # the same pairs under another seed: other draws
    other = tmp_path / "ai1"
    assert main(["annotate", "run", "--annotator", "world:ai", "--input", str(pairs_file), "--out", str(other),
                 "--seed", "1"]) == 0
    assert _lines(other / "labels.jsonl") != labels


def test_world_ai_flaws_from_the_command_line(pairs_file, tmp_path):
    """--ai.*: a flawless judge (every rate 0) gives the oracle's answers; the folder remembers the flaws."""
    from saferlhf.world import Oracle, build_world

    out = tmp_path / "flawless"
    zero = ["--ai.miss_disguised", "0", "--ai.verbosity_bias", "0", "--ai.position_bias", "0", "--ai.noise", "0"]
    assert main(["annotate", "run", "--annotator", "world:ai", "--input", str(pairs_file), "--out", str(out),
                 *zero]) == 0
    stats = json.loads((out / "stats.json").read_text())["world_ai"]
    assert (stats["miss_disguised"], stats["verbosity_bias"], stats["noise"]) == (0.0, 0.0, 0.0)
    oracle, pairs = Oracle(build_world(0)), _lines(pairs_file)
    labels = {x["pair_id"]: x for x in _lines(out / "labels.jsonl")}
    queue = _lines(out / "pairs.jsonl")
    for q in queue:
        lab = labels[q["pair_id"]]
        for i in (0, 1):  # safety is the oracle's, disguised or not
            assert lab["safe"][i] != oracle.judge(q["prompt"], q[f"response_{i}"]).harmful
    assert len(queue) == len(pairs)
    # the same folder with other flaws is another annotator: refused
    assert main(["annotate", "run", "--annotator", "world:ai", "--input", str(pairs_file), "--out", str(out)]) == 2


# ---- a crowd with an adversary, as a labeller module ----------------------------------------------------
class CrowdLabeller:
    """Three raters from the oracle's answers (the flawless world:ai judge): ``honest`` always right, ``sloppy``
    wrong on a quarter of the pairs (all its answers flipped), ``adversary`` always flipped."""

    calls = 0

    def __init__(self):
        from saferlhf.world.annotators import ai_labeller

        self.oracle = ai_labeller(0, miss_disguised=0.0, verbosity_bias=0.0, position_bias=0.0, noise=0.0)

    def label(self, pair):
        CrowdLabeller.calls += 1
        truth = self.oracle.label(pair)[0]
        sloppy_wrong = random.Random(pair["pair_id"]).random() < 0.25
        return [_as(truth, "honest", False), _as(truth, "sloppy", sloppy_wrong), _as(truth, "adversary", True)]


def _as(truth: Label, name: str, flip: bool) -> Label:
    if not flip:
        return Label(name, truth.better, truth.safer, truth.safe, truth.categories, truth.severity)
    safe = (not truth.safe[0], not truth.safe[1])
    return Label(name, 1 - truth.better, 1 - truth.safer, safe, tuple(() if s else ("Animal Abuse",) for s in safe),
                 tuple(0 if s else 1 for s in safe))


def make_crowd():
    return CrowdLabeller()


def test_aggregations_and_exclusion_end_to_end(pairs_file, tmp_path, capsys):
    out = tmp_path / "crowd"
    base = ["annotate", "run", "--annotator", f"{__name__}:make_crowd", "--input", str(pairs_file), "--out", str(out),
            "--ties", "keep"]
    CrowdLabeller.calls = 0
    assert main(base) == 0 and CrowdLabeller.calls == N_PAIRS
    labels = (out / "labels.jsonl").read_bytes()
    truth = {x["pair_id"]: x["better"] for x in _lines(out / "labels.jsonl") if x["annotator"] == "honest"}
    queue = [p["pair_id"] for p in _lines(out / "pairs.jsonl")]

    def run(*extra):
        assert main(base + list(extra)) == 0
        return _lines(out / "records.jsonl"), json.loads((out / "stats.json").read_text())

    def wrong(records):
        return sum(r["better_response_id"] != truth[p] for r, p in zip(records, queue))

    majority, stats = run()
    rel = stats["annotators"]
    assert set(rel) == {"honest", "sloppy", "adversary"} and not any(r["excluded"] for r in rel.values())
    assert rel["honest"]["ds_accuracy"] > rel["sloppy"]["ds_accuracy"] > 0.5 > rel["adversary"]["ds_accuracy"]
    ds, stats = run("--aggregation", "dawid_skene")
    assert stats["aggregation"] == "dawid_skene" and wrong(ds) == 0 < wrong(majority)  # majority: sloppy + adversary
    soft, stats = run("--aggregation", "soft")
    assert [r["better_response_id"] for r in soft] == [r["better_response_id"] for r in majority]
    assert {r["better_response_prob"] for r in soft} == {0.666667}  # 3 raters, never unanimous (the adversary)
    assert all(0 <= r["response_0_unsafe_prob"] <= 1 for r in soft)
    assert len(load_safety_preferences(str(out / "records.jsonl"))) == N_PAIRS
    capsys.readouterr()
    kept, stats = run("--exclude_below", "0.5")
    assert list(stats["exclusion"]["excluded"]) == ["adversary"] and stats["annotators"]["adversary"]["excluded"]
    assert stats["counts"]["labels"] == 2 * N_PAIRS and wrong(kept) < wrong(majority)
    assert "annotator adversary: 40 pairs" in capsys.readouterr().out.split("EXCLUDED")[0]
    _, stats = run("--exclude", "sloppy", "nobody")
    assert list(stats["exclusion"]["excluded"]) == ["sloppy"]
    assert "--exclude names no annotator of these labels: nobody" in capsys.readouterr().out
    assert CrowdLabeller.calls == N_PAIRS and (out / "labels.jsonl").read_bytes() == labels  # nothing labelled again


def test_a_bad_aggregation_is_one_line(pairs_file, tmp_path, capsys):
    out = tmp_path / "bad"
    assert main(["annotate", "run", "--input", str(pairs_file), "--out", str(out), "--aggregation", "mean"]) == 2
    err = capsys.readouterr().err
    assert "aggregation" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert main(["annotate", "run", "--input", str(pairs_file), "--out", str(out), "--exclude_below", "2"]) == 2
    assert not out.exists()
