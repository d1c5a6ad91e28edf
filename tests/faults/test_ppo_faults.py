"""PPO-Lag with a PTX file, killed (SIGKILL, `SAFERLHF_FAULT`) after an RL step, inside a checkpoint save or
inside a folder swap, then resumed with `--resume true`, ends exactly as an uninterrupted run: bit-identical
actor and critics (the critics live in the checkpoint), the same λ state, the same metrics rows (but for
the wall-clock fields), none repeated, status complete.

The killed runs are subprocesses (`python -m saferlhf ppo ...`); the uninterrupted reference (module-scoped)
and the resumed runs run in this process, all on one thread. The fault points are drawn with a seeded
`random.Random`; one fixed case kills the run before its first checkpoint (the resume then starts again
from step 0, with the rows already logged truncated).
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from faults.util import (assert_no_duplicate_rows, assert_same_weights, metric_rows, run_killed, run_state,
                         tensors)
from saferlhf.cli import main

STEPS, SAVE_EVERY = 4, 1


def fault_counts() -> dict[str, int]:
    """Fault points an uninterrupted run passes: one ``step`` per RL step, one ``checkpoint`` per save
    (every ``SAVE_EVERY`` steps before the last, and one at the end), one ``dir_save`` per checkpoint swap
    plus actor/."""
    checkpoints = len(range(SAVE_EVERY, STEPS, SAVE_EVERY)) + 1
    return {"step": STEPS, "checkpoint": checkpoints, "dir_save": checkpoints + 1}


def _draw() -> list[str]:
    """One seeded point per kind (``step`` from 2: step 1 is the fixed case) and the fixed ``step:1``."""
    rng = random.Random(20251201)
    return [f"{kind}:{rng.randint(2 if kind == 'step' else 1, n)}" for kind, n in fault_counts().items()] + ["step:1"]


CASES = _draw()


@pytest.fixture(scope="module")
def setup(tiny_models, sft_file, tmp_path_factory) -> dict:
    """A tiny actor, reward and cost models with fresh heads on its backbone, prompts, and the PTX file."""
    from saferlhf.models import ScoreModel, load_tokenizer

    root = tmp_path_factory.mktemp("ppo-faults")
    actor = tiny_models["llama"]
    tok = load_tokenizer(actor, padding_side="right")
    for seed, kind in enumerate(("reward", "cost"), start=1):
        ScoreModel.from_pretrained(actor, score_type=kind, seed=seed, allow_new_head=True).save_pretrained(
            root / kind, tokenizer=tok)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?"}) + "\n"
                               for t in ("rice", "pasta", "soup", "bread", "tea", "salad")))
    return {"actor": actor, "rm": root / "reward", "cm": root / "cost", "prompts": prompts, "ptx": sft_file}


def args(s: dict, out) -> list[str]:
    return ["ppo", "--algorithm", "ppo_lag", "--actor_path", str(s["actor"]), "--reward_model_path", str(s["rm"]),
            "--cost_model_path", str(s["cm"]), "--train_prompts", str(s["prompts"]), "--ptx_file", str(s["ptx"]),
            "--ptx_coef", "1.0", "--out", str(out), "--steps", str(STEPS), "--save_every", str(SAVE_EVERY),
            "--rollout.prompts_per_step", "4", "--sampling.max_new_tokens", "8", "--actor_optim.lr", "1e-3",
            "--critic_optim.lr", "1e-3", "--lagrange.lr", "0.5", "--runtime.progress", "false",
            "--runtime.threads", "1", "--runtime.device", "cpu"]


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo-reference") / "run"
    n = torch.get_num_threads()
    assert main(args(setup, out)) == 0
    torch.set_num_threads(n)
    assert run_state(out) == "complete"
    return out


def test_fault_points_are_drawn_within_range():
    counts = fault_counts()
    for case in CASES:
        kind, n = case.split(":")
        assert 1 <= int(n) <= counts[kind]


@pytest.mark.parametrize("fault", CASES)
def test_killed_then_resumed_equals_uninterrupted(setup, reference, tmp_path, fault):
    out = tmp_path / "run"
    run_killed(args(setup, out), fault)
    assert run_state(out) == "running"  # visibly not finished
    if fault == "step:1":  # killed before the first checkpoint: nothing to resume from
        assert not (out / "checkpoint").exists() and [r["step"] for r in metric_rows(out)] == [1]
    assert main([*args(setup, out), "--resume", "true"]) == 0
    assert run_state(out) == "complete"
    assert_same_weights(reference / "actor", out / "actor")
    critics_ref, critics = tensors(reference / "checkpoint"), tensors(out / "checkpoint")  # actor + 2 critics
    assert len({k.split("/")[0] for k in critics}) == 3
    assert critics.keys() == critics_ref.keys()
    assert all(torch.equal(critics[k], critics_ref[k]) for k in critics)
    lam = [torch.load(o / "checkpoint" / "rank_state_0.pt", weights_only=False) for o in (reference, out)]
    assert lam[0] == lam[1]
    assert_no_duplicate_rows(out)
    assert [r["step"] for r in metric_rows(out)] == list(range(1, STEPS + 1))
    assert metric_rows(out) == metric_rows(reference)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no half-written folder left
