"""`saferlhf annotate run` end to end through the CLI on a small world pair file: the four outputs, records that
the PKU-SafeRLHF loader reads, resuming after a torn write and after SIGKILL (nothing labelled twice, the same
records), a finished run rerun, a labeller module (``module:factory``) and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from saferlhf.annotate import Label
from saferlhf.cli import main
from saferlhf.data.loaders import load_safety_preferences

N_PAIRS = 20


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    from saferlhf.world import build_world

    path = tmp_path_factory.mktemp("annotate_run") / "world_pairs.jsonl"
    pairs = build_world(0).response_pairs(N_PAIRS, seed=5)
    path.write_text("".join(json.dumps({"prompt": p, "response_0": a, "response_1": b}) + "\n" for p, a, b in pairs))
    return path


@pytest.fixture(scope="module")
def finished(pairs_file, tmp_path_factory):
    """An uninterrupted panel run: the reference of the resume tests."""
    out = tmp_path_factory.mktemp("annotate_run") / "full"
    assert main(["annotate", "run", "--input", str(pairs_file), "--out", str(out)]) == 0
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _keys(path: Path) -> Counter:
    return Counter((d["pair_id"], d["annotator"]) for d in _lines(path))


def test_panel_run_writes_queue_labels_records_and_stats(finished):
    queue = _lines(finished / "pairs.jsonl")
    assert len(queue) == N_PAIRS and len({p["pair_id"] for p in queue}) == N_PAIRS
    assert set(queue[0]) == {"pair_id", "prompt", "response_0", "response_1", "response_0_source",
                             "response_1_source", "prompt_source"}
    assert queue[0]["response_0_source"] == queue[0]["prompt_source"] == "world_pairs"
    labels = _lines(finished / "labels.jsonl")
    assert len(labels) == 3 * N_PAIRS and max(_keys(finished / "labels.jsonl").values()) == 1  # 3 raters per pair
    assert list(labels[0]) == ["pair_id", "annotator", "better", "safer", "safe", "categories", "severity"]
    stats = json.loads((finished / "stats.json").read_text())
    c = stats["counts"]
    assert (c["pairs"], c["labelled"], c["labels"]) == (N_PAIRS, N_PAIRS, 3 * N_PAIRS)
    assert c["records"] + c["ties_dropped"] == N_PAIRS
    for question in ("helpfulness", "harmlessness", "safety"):
        a = stats["agreement"][question]
        assert -1 <= a["krippendorff_alpha"] <= 1 and -1 <= a["fleiss_kappa"] <= 1
    assert stats["agreement"]["safety"]["items"] == 2 * N_PAIRS
    records = load_safety_preferences(str(finished / "records.jsonl"))
    assert len(records) == c["records"]
    assert json.loads((finished / "run.json").read_text()) == {"annotator": "panel", "seed": 0, "overlap": 3}


def test_a_torn_labels_file_resumes_without_labelling_twice(pairs_file, finished, tmp_path, capsys):
    out = tmp_path / "resumed"
    shutil.copytree(finished, out)
    data = (out / "labels.jsonl").read_bytes()
    cut = data[: len(data) // 2]
    assert not cut.endswith(b"\n")
    (out / "labels.jsonl").write_bytes(cut)  # killed mid-line
    (out / "records.jsonl").unlink()
    *whole, torn = cut.split(b"\n")
    torn_pair = json.loads(whole[-1])["pair_id"] if len(torn) < 30 else torn[13:29].decode()
    kept = len({json.loads(line)["pair_id"] for line in whole} - {torn_pair})  # the torn pair is labelled again
    capsys.readouterr()
    assert main(["annotate", "run", "--input", str(pairs_file), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ended in a torn line (a killed run): cut it and" in printed and torn_pair in printed
    assert f"resuming: {kept} of {N_PAIRS} pairs already labelled, {N_PAIRS - kept} to label" in printed
    assert f"({N_PAIRS - kept} labelled now" in printed
    assert _keys(out / "labels.jsonl") == _keys(finished / "labels.jsonl")  # every label once
    assert (out / "labels.jsonl").read_bytes() == data  # the queue's order: the very same file
    assert (out / "records.jsonl").read_bytes() == (finished / "records.jsonl").read_bytes()
    # rerunning a finished run labels nothing and rewrites the records (here: keeping the ties)
    before = (out / "labels.jsonl").read_bytes()
    assert main(["annotate", "run", "--input", str(pairs_file), "--out", str(out), "--ties", "keep"]) == 0
    assert "(0 labelled now" in capsys.readouterr().out and (out / "labels.jsonl").read_bytes() == before
    kept = _lines(out / "records.jsonl")
    assert len(kept) == N_PAIRS and len(load_safety_preferences(str(out / "records.jsonl"))) == N_PAIRS


def test_a_killed_run_resumes_to_the_same_records(pairs_file, finished, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "saferlhf", "annotate", "run", "--input", str(pairs_file), "--out", str(out)]
    env = os.environ | {"SAFERLHF_FAULT": "label:7", "SAFERLHF_NO_PROGRESS": "1"}
    killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert len({k for k, _ in _keys(out / "labels.jsonl")}) == 7 and not (out / "records.jsonl").exists()
    env.pop("SAFERLHF_FAULT")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "7 of 20 pairs already labelled, 13 to label" in done.stdout and "13 labelled now" in done.stdout
    assert (out / "labels.jsonl").read_bytes() == (finished / "labels.jsonl").read_bytes()
    assert (out / "records.jsonl").read_bytes() == (finished / "records.jsonl").read_bytes()


# ---- a labeller module -------------------------------------------------------------------------------------
class RuleLabeller:
    """Two rule-based annotators. Helpfulness: 'rule_a' prefers the longer answer; 'rule_b' prefers the shorter
    one when the pair id starts with a digit below 8 (about half the pairs: a 1-1 split, a tie) and calls it a
    tie otherwise (no vote: rule_a decides). Harmlessness: both call it a tie. Safety: response_0 safe for
    both, response_1 flagged by 'rule_b' alone as a privacy violation (by its BeaverTails slug)."""

    calls: list[str] = []

    def __init__(self, seed: int):
        self.seed = seed

    def label(self, pair: dict) -> list[Label]:
        RuleLabeller.calls.append(pair["pair_id"])
        longer = int(len(pair["response_1"]) > len(pair["response_0"]))
        b_vote = 1 - longer if pair["pair_id"][0] in "01234567" else None
        return [Label("rule_a", longer, None, (True, True), ((), ()), (0, 0)),
                Label("rule_b", b_vote, None, (True, False), ((), ("privacy_violation",)), (0, 1))]


def make_rule_labeller(seed):
    """A factory taking only ``seed`` (it is not given ``overlap``)."""
    assert seed == 5
    return RuleLabeller(seed)


def test_a_module_labeller_with_ties(pairs_file, tmp_path, capsys):
    from saferlhf.annotate.pairs import pair_id

    spec = f"{__name__}:make_rule_labeller"
    RuleLabeller.calls = []
    out = tmp_path / "rules"
    args = ["annotate", "run", "--annotator", spec, "--input", str(pairs_file), "--out", str(out), "--seed", "5"]
    assert main(args + ["--ties", "keep"]) == 0
    queue = _lines(out / "pairs.jsonl")
    assert RuleLabeller.calls == [p["pair_id"] for p in queue]
    split = {p["pair_id"] for p in queue if p["pair_id"][0] in "01234567"}
    assert 0 < len(split) < N_PAIRS
    records = _lines(out / "records.jsonl")
    assert len(records) == N_PAIRS
    for r in records:
        tie = pair_id(r["prompt"], r["response_0"], r["response_1"]) in split
        longer = int(len(r["response_1"]) > len(r["response_0"]))
        assert (r["better_response_id"], r.get("better_response_tie", False)) == ((0, True) if tie else (longer, False))
        # response_1: one unsafe vote of two -> unsafe, flagged by the slug's name; the harmlessness tie (only
        # ties) goes against the response with more unsafe votes: response_1
        assert not r["is_response_1_safe"] and r["response_1_harm_category"]["Privacy Violation"]
        assert r["safer_response_id"] == 0 and "safer_response_tie" not in r
    assert len(load_safety_preferences(str(out / "records.jsonl"))) == N_PAIRS  # tie keys and all
    labels = _lines(out / "labels.jsonl")
    assert labels[1]["categories"] == [[], ["Privacy Violation"]] and labels[0]["safer"] == "tie"
    # the same run with ties dropped: nothing labelled again, the split pairs left out
    RuleLabeller.calls = []
    assert main(args + ["--ties", "drop"]) == 0
    assert RuleLabeller.calls == []
    assert len(_lines(out / "records.jsonl")) == N_PAIRS - len(split)
    assert json.loads((out / "stats.json").read_text())["counts"]["ties_dropped"] == len(split)


class NoLabel:
    pass


@pytest.mark.parametrize("spec, message", [
    ("judge", "annotator: 'judge' is not 'panel' or module:factory"),
    ("no_such_module_xyz:make", "annotator: cannot import no_such_module_xyz"),
    (f"{__name__}:missing", f"annotator: {__name__} has no missing"),
    (f"{__name__}:NoLabel", f"annotator: {__name__}:NoLabel returned a NoLabel, which has no label(pair) method"),
])
def test_a_bad_annotator_is_one_line(pairs_file, tmp_path, capsys, spec, message):
    out = tmp_path / "bad"
    assert main(["annotate", "run", "--annotator", spec, "--input", str(pairs_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saferlhf annotate run: error: {message}") and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_a_resume_with_other_settings_or_input_is_refused(pairs_file, finished, tmp_path, capsys):
    out = tmp_path / "other"
    shutil.copytree(finished, out)
    assert main(["annotate", "run", "--input", str(pairs_file), "--out", str(out), "--overlap", "2"]) == 2
    assert "was labelled with --overlap 3 (now 2)" in capsys.readouterr().err
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(pairs_file.read_text().splitlines(keepends=True)[:5]))
    assert main(["annotate", "run", "--input", str(fewer), "--out", str(out)]) == 2
    assert "holds another queue (20 pairs; the input gives 5, 15 different)" in capsys.readouterr().err
    assert main(["annotate", "run", "--input", str(out / "pairs.jsonl"), "--out", str(out)]) == 2
    assert "is the input file" in capsys.readouterr().err
    assert main(["annotate", "run", "--out", str(out)]) == 2
    assert "--input is required" in capsys.readouterr().err


def test_a_torn_tail_takes_the_rest_of_its_pair_with_it(tmp_path, capsys):
    from saferlhf.annotate.run import _cut_torn_tail

    def line(pid, name):
        return json.dumps({"pair_id": pid, "annotator": name}).encode() + b"\n"

    a, b = "a" * 16, "b" * 16
    path = tmp_path / "labels.jsonl"
    cases = [  # (file, what is left): the torn line names pair b; too short to name one: the last line's pair
        (line(a, "x") + line(a, "y") + line(b, "x") + line(b, "y") + line(b, "z")[:40], line(a, "x") + line(a, "y")),
        (line(a, "x") + line(b, "x") + line(b, "y") + b'{"pair', line(a, "x")),
    ]
    for content, left in cases:
        path.write_bytes(content)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        _cut_torn_tail(path, fd)
        os.close(fd)
        assert path.read_bytes() == left
        assert f"cut it and 2 other labels of pair {b}" in capsys.readouterr().out
    path.write_bytes(line(a, "x"))
    _cut_torn_tail(path, -1)  # a whole file is left alone (the descriptor is not even used)
    assert path.read_bytes() == line(a, "x")


def test_one_run_per_folder(tmp_path):
    from saferlhf.annotate.run import _open_locked
    from saferlhf.errors import UserError

    fd = _open_locked(tmp_path / "labels.jsonl")
    with pytest.raises(UserError, match="is in use by another `saferlhf annotate run`"):
        _open_locked(tmp_path / "labels.jsonl")
    os.close(fd)
    os.close(_open_locked(tmp_path / "labels.jsonl"))  # free again
