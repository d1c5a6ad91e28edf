"""Tiny reward and cost models (a few steps: their quality does not matter) and a prompt file, for PPO tests that
check plumbing rather than learning."""

from __future__ import annotations

import json
from pathlib import Path

from saferlhf.cli import main

PROMPTS = ["how do I cook rice?", "how do I cook pasta?", "how do I cook soup?", "how do I cook tea?"]


def build_tiny_judges(root: Path, base: Path, pku_file: Path, steps: int = 3) -> dict[str, Path]:
    for kind in ("reward", "cost"):
        assert main(["score-model", "--kind", kind, "--model_path", str(base), "--train_file", str(pku_file),
                     "--out", str(root / kind), "--max_steps", str(steps), "--batch_size", "8", "--max_length", "48",
                     "--optim.lr", "3e-3", "--runtime.progress", "false"]) == 0
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return {"actor": base, "rm": root / "reward" / "model", "cm": root / "cost" / "model", "prompts": prompts}


def tiny_ppo_args(s: dict, out: Path, steps: int = 2, extra=(), progress: bool = False) -> list[str]:
    return ["ppo", "--actor_path", str(s["actor"]), "--reward_model_path", str(s["rm"]),
            "--cost_model_path", str(s["cm"]), "--train_prompts", str(s["prompts"]), "--out", str(out),
            "--steps", str(steps), "--rollout.prompts_per_step", "4", "--sampling.max_new_tokens", "6",
            "--actor_optim.lr", "1e-3", "--critic_optim.lr", "1e-3", "--runtime.progress", str(progress).lower(),
            "--runtime.threads", "1", *extra]
