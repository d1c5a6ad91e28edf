"""DPO's hostile inputs (issue 20): settings that would train on nothing, a split with no held-out pair, and a
reference that cannot read the policy's token ids (plain DPO and SACPO's first stage)."""

from __future__ import annotations

import json
from pathlib import Path

GROUP = "dpo"


def cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    from saferlhf.models import build_tiny_model

    root = tmp / "dpo"
    root.mkdir(parents=True, exist_ok=True)
    same_start = root / "same_start.jsonl"  # chosen and rejected share their first words
    same_start.write_text("".join(json.dumps({"prompt": f"how do I cook rice? ({i})",
                                              "chosen": "rinse it first and use low heat.",
                                              "rejected": "rinse it first and hurt the cook."}) + "\n"
                                  for i in range(8)))
    texts = [f"how do I cook {t}? stir it often." for t in ("rice", "tea")] * 4
    other_vocab = build_tiny_model(root / "other_vocab", texts, vocab_size=120, hidden_size=16, num_layers=1,
                                   num_heads=2)

    def dpo(name: str, *argv: str, train: Path = env["pku"]) -> tuple[str, list[str]]:
        return (f"dpo {name}", ["dpo", "--model_path", str(env["base"]), "--train_file", str(train), "--out",
                                str(root / "o" / name.replace(" ", "_")), "--max_steps", "1", *argv])

    return [
        dpo("max_length leaves chosen and rejected identical", "--max_length", "4", "--eval_ratio", "0",
            train=same_start),
        dpo("one pair eval_ratio 0.5", "--eval_ratio", "0.5", train=env["one_pku"]),
        dpo("reference with another vocabulary", "--ref_model_path", str(other_vocab)),
        dpo("reference with another vocabulary on the fly", "--ref_model_path", str(other_vocab),
            "--precompute_ref", "false"),
        dpo("sacpo reference with another vocabulary", "--variant", "sacpo", "--ref_model_path", str(other_vocab)),
        dpo("sacpo missing reference", "--variant", "sacpo", "--ref_model_path", str(root / "nope")),
    ]
