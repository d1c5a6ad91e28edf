"""SFT, score-model and DPO runs killed (SIGKILL, `SAFERLHF_FAULT`) after a step, inside a checkpoint save or
inside a folder swap, then resumed with `--resume true`, end exactly as an uninterrupted run: bit-identical
weights, the same metrics rows (but for wall-clock fields), none repeated, status complete.

The killed runs are subprocesses (`python -m saferlhf ...`); the uninterrupted reference (one per recipe,
module-scoped) and the resumed runs run in this process, all on one thread. The fault points are drawn
with a seeded `random.Random`, so they vary between fault kinds but the test is reproducible. GPT-2 has
dropout, so the RNG states must be restored too.
"""

from __future__ import annotations

import random
import shutil

import pytest
import torch

from faults.util import assert_same_run, run_killed, run_state
from saferlhf.cli import main

STEPS = {"sft": 6, "score-model": 5, "dpo": 4}
SAVE_EVERY = {"sft": 2, "score-model": 1, "dpo": 1}


def fault_counts(recipe: str) -> dict[str, int]:
    """How often an uninterrupted run passes each fault point: one ``step`` per optimiser step, one
    ``checkpoint`` per save (every ``save_every`` steps before the last, and one at the end), one
    ``dir_save`` per checkpoint swap plus the model folder."""
    checkpoints = len(range(SAVE_EVERY[recipe], STEPS[recipe], SAVE_EVERY[recipe])) + 1
    return {"step": STEPS[recipe], "checkpoint": checkpoints, "dir_save": checkpoints + 1}


def _draw() -> list[tuple[str, str]]:
    rng = random.Random(20250601)
    cases = [(recipe, f"{kind}:{rng.randint(1, n)}") for recipe in STEPS for kind, n in fault_counts(recipe).items()]
    # and two fixed points: killed before the first checkpoint (nothing to resume from: rows truncated to 0),
    # and killed while writing the final model (every other output already there)
    return cases + [("sft", "step:1"), ("score-model", f"dir_save:{fault_counts('score-model')['dir_save']}")]


CASES = _draw()


def args(recipe: str, tiny_models, sft_file, pku_file, out) -> list[str]:
    common = ["--model_path", str(tiny_models["gpt2"]), "--out", str(out), "--max_steps", str(STEPS[recipe]),
              "--save_every", str(SAVE_EVERY[recipe]), "--log_every", "1", "--max_length", "48",
              "--runtime.progress", "false", "--runtime.threads", "1", "--runtime.device", "cpu"]
    if recipe == "sft":
        return ["sft", *common, "--train_file", str(sft_file), "--eval_file", str(sft_file), "--batch_size", "6",
                "--optim.lr", "3e-3"]
    if recipe == "dpo":
        return ["dpo", "--variant", "safedpo", *common, "--train_file", str(pku_file), "--batch_size", "8",
                "--eval_ratio", "0.25", "--optim.lr", "1e-3"]
    return ["score-model", "--kind", "cost", *common, "--train_file", str(pku_file), "--batch_size", "8",
            "--eval_ratio", "0.25", "--optim.lr", "3e-3"]


@pytest.fixture(scope="module")
def references(tiny_models, sft_file, pku_file, tmp_path_factory):
    """One uninterrupted run per recipe, built on first use."""
    done = {}

    def get(recipe: str):
        if recipe not in done:
            n = torch.get_num_threads()
            out = tmp_path_factory.mktemp(f"{recipe}-reference") / "run"
            assert main(args(recipe, tiny_models, sft_file, pku_file, out)) == 0
            torch.set_num_threads(n)
            assert run_state(out) == "complete"
            done[recipe] = out
        return done[recipe]

    return get


@pytest.mark.parametrize("recipe,fault", CASES, ids=[f"{r}-{f}" for r, f in CASES])
def test_killed_run_resumes_to_the_uninterrupted_result(recipe, fault, references, tiny_models, sft_file, pku_file,
                                                        tmp_path, capsys):
    reference = references(recipe)
    out = tmp_path / "run"
    cmd = args(recipe, tiny_models, sft_file, pku_file, out)
    run_killed(cmd, fault)
    assert run_state(out) == "running"  # a killed run never looks complete
    checkpointed = (out / "checkpoint" / "COMPLETE").exists()
    capsys.readouterr()
    assert main([*cmd, "--resume", "true"]) == 0
    assert ("resumed from" in capsys.readouterr().out) == checkpointed  # continued, not restarted
    assert_same_run(reference, out)


def test_killed_overwrite_of_a_finished_run_never_looks_complete(references, tiny_models, sft_file, pku_file,
                                                                 tmp_path):
    """A finished score-model run, replaced with --overwrite and killed while the new model is written:
    no old model next to new metrics, the folder says running; resuming completes it."""
    reference = references("score-model")
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    cmd = args("score-model", tiny_models, sft_file, pku_file, out)
    run_killed([*cmd, "--overwrite", "true"], f"dir_save:{fault_counts('score-model')['dir_save']}")
    assert run_state(out) == "running"
    assert not (out / "model").exists()
    assert main([*cmd, "--resume", "true"]) == 0
    assert_same_run(reference, out)
