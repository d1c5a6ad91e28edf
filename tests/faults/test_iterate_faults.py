"""`saferlhf iterate` killed by SIGKILL in the middle of round 2 resumes where it stopped: finished stages are kept
(not recomputed), the killed training stage continues from its checkpoint, and the run ends as an
uninterrupted one did (the same weights and per-round numbers)."""

from __future__ import annotations

import json

from util import assert_same_weights, run_cli, run_killed, run_state

ARGS = ["iterate", "--fast", "--rounds", "2", "--redteam_from_round", "1"]


def numbers(out):
    rounds = json.loads((out / "summary.json").read_text())["rounds"]
    return [{k: v for k, v in r.items() if k not in ("seconds", "stage_seconds", "policy")} for r in rounds]


def test_killed_iterate_resumes_exactly(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    proc = run_cli([*ARGS, "--out", str(ref)], timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_killed([*ARGS, "--out", str(out)], "step:60", timeout=600)  # SFT 20, round 1 about 30 steps: in round 2
    assert run_state(out) == "running" and run_state(out / "round1" / "rl") == "complete"
    assert not (out / "summary.json").exists()  # visibly unfinished
    sft_mtime = (out / "sft" / "status.json").stat().st_mtime_ns
    r1_mtime = (out / "round1" / "rl" / "status.json").stat().st_mtime_ns
    proc = run_cli([*ARGS, "--out", str(out), "--resume", "true"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sft: done" in proc.stdout and "round 1: ppo_lag: done" in proc.stdout
    assert (out / "sft" / "status.json").stat().st_mtime_ns == sft_mtime
    assert (out / "round1" / "rl" / "status.json").stat().st_mtime_ns == r1_mtime
    assert run_state(out) == "complete"
    assert_same_weights(ref / "round2" / "rl" / "actor", out / "round2" / "rl" / "actor")
    assert numbers(out) == numbers(ref)
