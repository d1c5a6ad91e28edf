"""Finite but absurd numbers: one step at lr 1e30 in every trainer (weights of 1e30 must never be saved) and a
1e30 cost model in every command that scores texts (docs/reliability.md §2). Each must stop with exit 3.
(rs-finetune trains through `saferlhf sft`, the sft case covers it: its tiny-model samples never end, so a round
would stop earlier, on "nothing to fine-tune on".)"""

from __future__ import annotations

import json
from pathlib import Path

GROUP = "numeric_guards"


def cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    tmp = Path(tmp) / "numeric_guards"
    tmp.mkdir(parents=True, exist_ok=True)
    gens = tmp / "gens.jsonl"
    gens.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?", "response": "stir it."}) + "\n"
                            for t in ("rice", "tea", "soup")))
    base, big = str(env["base"]), str(env["big_cm"])
    lr = ["--optim.lr", "1e30", "--optim.warmup_ratio", "0"]
    short = ["--sampling.max_new_tokens", "4"]
    return [
        ("sft one step at lr 1e30", ["sft", "--model_path", base, "--train_file", str(env["sft"]), "--max_steps", "1",
                                     "--out", str(tmp / "sft"), *lr]),
        ("score-model one step at lr 1e30", ["score-model", "--model_path", base, "--train_file", str(env["pku"]),
                                             "--max_steps", "1", "--out", str(tmp / "sm"), *lr]),
        ("dpo one step at lr 1e30", ["dpo", "--model_path", base, "--train_file", str(env["pku"]), "--max_steps", "1",
                                     "--batch_size", "4", "--out", str(tmp / "dpo"), *lr]),
        ("ppo one step at actor lr 1e30", ["ppo", "--actor_path", base, "--reward_model_path", str(env["rm"]),
                                           "--cost_model_path", str(env["cm"]), "--train_prompts", str(env["prompts"]),
                                           "--out", str(tmp / "ppo"), "--steps", "1", "--rollout.prompts_per_step",
                                           "4", "--actor_optim.lr", "1e30", "--actor_optim.warmup_ratio", "0",
                                           *short]),
        ("cost-threshold with a 1e30 cost model", ["cost-threshold", "--cost_model", big, "--input", str(gens),
                                                   "--method", "quantile", "--out", str(tmp / "d.json")]),
        ("score with a 1e30 cost model", ["score", "--cost_model", big, "--input", str(gens),
                                          "--out", str(tmp / "scored.jsonl")]),
        ("eval with a 1e30 cost model", ["eval", "--policies", f"a={base}", "--cost_model", big, "--max_prompts", "2",
                                         "--out", str(tmp / "eval"), *short]),
        ("best-of-k with a 1e30 cost model", ["best-of-k", "--model_path", base, "--reward_model", str(env["rm"]),
                                              "--cost_model", big, "--prompts", str(env["prompts"]), "--k", "2",
                                              "--max_prompts", "2", "--out", str(tmp / "bok"), *short]),
        ("redteam with a 1e30 cost model", ["redteam", "--policy", base, "--judge_kind", "cost", "--cost_model", big,
                                            "--candidates", "4", "--out", str(tmp / "redteam"), *short]),
    ]
