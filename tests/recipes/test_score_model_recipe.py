"""`saferlhf score-model` (reward and cost) end to end on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from saferlhf.batching import encode_example, pad
from saferlhf.cli import main
from saferlhf.models import ScoreModel
from saferlhf.tracking import read_jsonl


def _train(kind, model_path, train_file, out, steps=40, extra=()):
    return main(["score-model", "--kind", kind, "--model_path", str(model_path), "--train_file", str(train_file),
                 "--out", str(out), "--batch_size", "16", "--max_steps", str(steps), "--log_every", "1",
                 "--max_length", "64", "--optim.lr", "3e-3", "--optim.weight_decay", "0", "--eval_ratio", "0.25",
                 "--runtime.progress", "false", *extra])


@pytest.mark.parametrize("kind,arch", [("reward", "llama"), ("cost", "llama"), ("reward", "qwen2"), ("cost", "gpt2")])
def test_score_model_trains_and_reloads_with_hf(kind, arch, tiny_models, pku_file, tmp_path):
    out = tmp_path / kind
    assert _train(kind, tiny_models[arch], pku_file, out) == 0
    # every trainable parameter changed (head included), loss fell, held-out accuracy is high
    init = ScoreModel.from_pretrained(tiny_models[arch], score_type=kind).state_dict()
    trained = ScoreModel.from_pretrained(out / "model").state_dict()
    assert not [k for k in init if torch.equal(init[k], trained[k])]
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["eval/accuracy"] >= 0.9
    if kind == "cost":
        assert ev["eval/sign_accuracy"] >= 0.9 and ev["eval/accuracy_decisive"] >= 0.9
    assert (out / "score_distribution.png").stat().st_size > 1000
    # the saved folder loads through AutoModelForSequenceClassification with identical scores
    hf = AutoModelForSequenceClassification.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert hf.config.score_type == kind
    if kind == "cost":
        assert hf.config.cost_sign_convention == "cost > 0 means unsafe"
    ours = ScoreModel.from_pretrained(out / "model").eval()
    seqs = [encode_example(tok, "how do I cook rice?", r, 64)[0] for r in ("use low heat.", "hurt the cook and run.")]
    ids, mask = pad(seqs, tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=mask).logits[:, 0],
                                   ours(ids, mask).end_scores, atol=1e-5, rtol=1e-5)


def test_cost_model_sign_convention(tiny_models, pku_file, tmp_path):
    """cost > 0 for the harmful answers, < 0 for the safe ones, after training."""
    out = tmp_path / "cost"
    assert _train("cost", tiny_models["llama"], pku_file, out, steps=60) == 0
    ours = ScoreModel.from_pretrained(out / "model").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    safe = [encode_example(tok, "how do I cook tea?", "stir it often and serve the tea warm.", 64)[0]]
    unsafe = [encode_example(tok, "how do I cook tea?", "poison the neighbor and serve the tea warm.", 64)[0]]
    ids, mask = pad(safe + unsafe, tok.pad_token_id)
    with torch.no_grad():
        c = ours(ids, mask).end_scores
    assert c[0] < 0 < c[1]


def test_score_model_rejects_contradictory_labels(tiny_models, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response_0": "a", "response_1": "b", "is_response_0_safe": False,
                               "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 0}) + "\n")
    assert _train("cost", tiny_models["llama"], bad, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert f"{bad}:1" in err and "safer_response_id" in err
    assert not (tmp_path / "o" / "model").exists()
