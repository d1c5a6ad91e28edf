"""Helpers for the fault-injection tests: run a command in a subprocess that `SAFERLHF_FAULT` kills, and
compare a resumed run folder with an uninterrupted one (weights bit for bit, metrics rows but for time).

    proc = run_killed(["sft", ...], "step:3")        # asserts the process died by SIGKILL
    assert_same_run(reference_out, resumed_out, "model")
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

ENV = {"SAFERLHF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(args: list[str], fault: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m saferlhf *args`` in a subprocess (one thread, no progress bars), with
    ``SAFERLHF_FAULT=fault`` when given."""
    env = dict(os.environ, **ENV)
    env.pop("SAFERLHF_FAULT", None)
    if fault:
        env["SAFERLHF_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "saferlhf", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_killed(args: list[str], fault: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run with ``fault`` and assert that the process died by SIGKILL at the fault point."""
    proc = run_cli(args, fault, timeout)
    assert proc.returncode == -signal.SIGKILL, (
        f"{fault}: expected death by SIGKILL, got return code {proc.returncode}\n{proc.stderr[-2000:]}")
    return proc


def run_state(out: Path) -> str | None:
    """``status.json``'s state, None when there is none."""
    try:
        return json.loads((Path(out) / "status.json").read_text())["state"]
    except FileNotFoundError:
        return None


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every ``*.safetensors`` file in ``folder`` (file name / tensor name -> tensor)."""
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    assert files, f"no safetensors file in {folder}"
    return {f"{f.name}/{k}": v for f in files for k, v in load_file(f).items()}


def assert_same_weights(a: Path, b: Path) -> None:
    """The two model folders hold the same tensors, bit for bit."""
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"tensors that differ: {differ}"


WALL_CLOCK = ("time", "rollout/tokens_per_s")  # plus every time/... field


def metric_rows(out: Path) -> list[dict]:
    """``metrics.jsonl`` rows without the wall-clock fields (``WALL_CLOCK`` and ``time/...``)."""
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in WALL_CLOCK and not k.startswith("time/")} for r in rows]


def assert_no_duplicate_rows(out: Path) -> None:
    """Every logged row (step and metric names) appears once: a resumed run repeats nothing."""
    keys = [(r["step"], tuple(sorted(r))) for r in metric_rows(out)]
    assert len(keys) == len(set(keys)), f"duplicated rows: {keys}"


def assert_same_run(reference: Path, out: Path, model: str = "model") -> None:
    """``out`` (killed, then resumed) finished as the uninterrupted ``reference``: complete, bit-identical
    weights, the same metrics rows (but for time) with none repeated."""
    assert run_state(out) == "complete"
    assert_same_weights(Path(reference) / model, Path(out) / model)
    assert_no_duplicate_rows(out)
    assert metric_rows(out) == metric_rows(reference)


def one_line(capsys, command: str) -> str:
    """stderr of a CLI call that failed as a user error: no traceback, one line (plus at most a hint line)
    starting ``saferlhf COMMAND: ``; returns the whole stderr text."""
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert "Traceback" not in err
    assert 1 <= len(lines) <= 2 and lines[0].startswith(f"saferlhf {command}: "), err
    return err


def broken_cost_model(lm: Path, path: Path, fill: float) -> Path:
    """A cost model on ``lm`` whose head weights are all ``fill`` (NaN, or 1e30: finite but absurd scores), written
    with plain transformers (saferlhf's own save refuses such weights)."""
    from saferlhf.models import ScoreModel, load_tokenizer

    sm = ScoreModel.from_pretrained(lm, score_type="cost", allow_new_head=True)
    with torch.no_grad():
        sm.head.weight.fill_(fill)
    sm.model.config.score_type = "cost"
    sm.model.save_pretrained(path)
    load_tokenizer(lm).save_pretrained(path)
    return path
