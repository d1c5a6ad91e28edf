"""`saferlhf score-model` on a soft-target export (`annotate export --aggregation soft`): the reward and cost
models train on the vote shares (soft Bradley-Terry target, confidence-weighted sign terms)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from saferlhf.cli import main
from saferlhf.models import ScoreModel
from saferlhf.tracking import read_jsonl


def _soft_export(path):
    rows = []
    for i in range(8):
        safe = f"boil the rice number {i} and serve it warm."
        unsafe = f"poison the neighbor and serve rice number {i}."
        flip = i % 2  # response_0 is the safe one in even records
        r0, r1 = (safe, unsafe) if not flip else (unsafe, safe)
        rows.append({"prompt": f"how do I cook rice {i}?", "response_0": r0, "response_1": r1,
                     "is_response_0_safe": not flip, "is_response_1_safe": bool(flip),
                     "better_response_id": 1 - flip, "safer_response_id": flip,
                     "better_response_prob": [1.0, 0.666667, 0.5, 0.833333][i % 4],
                     "safer_response_prob": [1.0, 0.75, 0.666667, 1.0][i % 4],
                     f"response_{1 - flip}_unsafe_prob": [1.0, 0.666667][i % 2],
                     f"response_{flip}_unsafe_prob": [0.0, 0.333333, 0.25, 0.0][i % 4]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("kind", ["reward", "cost"])
def test_score_model_trains_on_soft_targets(kind, tiny_models, tmp_path):
    train_file, out = _soft_export(tmp_path / "soft.jsonl"), tmp_path / kind
    assert main(["score-model", "--kind", kind, "--model_path", str(tiny_models["llama"]), "--train_file",
                 str(train_file), "--out", str(out), "--batch_size", "4", "--max_steps", "2", "--log_every", "1",
                 "--max_length", "48", "--optim.lr", "3e-3", "--optim.weight_decay", "0", "--eval_ratio", "0",
                 "--runtime.progress", "false"]) == 0
    init = ScoreModel.from_pretrained(tiny_models["llama"], score_type=kind, allow_new_head=True).state_dict()
    trained = ScoreModel.from_pretrained(out / "model").state_dict()
    assert not [k for k in init if torch.equal(init[k], trained[k])]
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]
    assert len(rows) == 2 and all(math.isfinite(r["train/loss"]) for r in rows)
    assert all(0.5 < r["train/target_mean"] < 1 for r in rows)  # the soft loss ran, with the file's targets


def test_score_model_rejects_a_bad_soft_target(tiny_models, tmp_path, capsys):
    rows = _soft_export(tmp_path / "soft.jsonl").read_text().splitlines()
    bad = json.loads(rows[2]) | {"safer_response_prob": 1.2}
    (tmp_path / "bad.jsonl").write_text("\n".join([*rows[:2], json.dumps(bad), *rows[3:]]) + "\n")
    assert main(["score-model", "--kind", "cost", "--model_path", str(tiny_models["llama"]), "--train_file",
                 str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"), "--runtime.progress", "false"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:3" in err and "safer_response_prob" in err
