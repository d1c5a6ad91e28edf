"""`saferlhf score-model` (reward and cost) end to end on tiny models."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from saferlhf.batching import pad
from saferlhf.data.formatting import encode_example
from saferlhf.cli import main
from saferlhf.models import ScoreModel
from saferlhf.tracking import read_jsonl
from saferlhf.training import RuntimeConfig


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
    init = ScoreModel.from_pretrained(tiny_models[arch], score_type=kind, allow_new_head=True).state_dict()
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


# ---------------------------------------------------------------- hardening
@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (instead of hanging the test run) when the block takes longer than ``seconds``."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s: an endless loop?")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _contradictory(prompt: str) -> dict:
    """A PKU record whose safer response is labelled unsafe while the other is safe (dropped for cost)."""
    return {"prompt": prompt, "response_0": "a", "response_1": "b", "is_response_0_safe": False,
            "is_response_1_safe": True, "better_response_id": 0, "safer_response_id": 0}


def _nan_model(path, out):
    """A copy of the causal LM at ``path`` whose embeddings are NaN (saved with plain transformers)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.get_input_embeddings().weight.fill_(float("nan"))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    return out


def test_every_record_dropped_is_an_error_naming_the_file_not_a_hang(tiny_models, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [_contradictory(f"p{i}") for i in range(3)])
    with deadline(60):
        assert _train("cost", tiny_models["llama"], bad, tmp_path / "o", extra=["--on_error", "drop"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "o" / "model").exists()


@pytest.mark.parametrize("empty", ["train_file", "eval_file"])
def test_no_pairs_after_loading_is_a_user_error(empty, pku_file, tmp_path, monkeypatch):
    """Whatever the loader lets through: no training pairs (or an eval file without any) never starts a loop."""
    from saferlhf.data import loaders
    from saferlhf.errors import UserError
    from saferlhf.recipes.score_model import ScoreModelConfig, load_pairs

    other = tmp_path / "other.jsonl"
    real = loaders.load_preference_pairs
    monkeypatch.setattr(loaders, "load_preference_pairs",
                        lambda path, **kw: [] if str(path) == str(other) else real(path, **kw))
    cfg = ScoreModelConfig(train_file=str(other if empty == "train_file" else pku_file),
                           eval_file=str(other) if empty == "eval_file" else None, on_error="drop")
    with pytest.raises(UserError, match=f"{empty}: {re.escape(str(other))}: no reward preference pairs"):
        load_pairs(cfg)


def test_an_eval_file_without_pairs_is_an_error_naming_it(tiny_models, pku_file, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "bad_eval.jsonl", [_contradictory("p")])
    assert _train("cost", tiny_models["llama"], pku_file, tmp_path / "o",
                  extra=["--eval_file", str(bad), "--on_error", "drop"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_eval_ratio_never_leaves_training_empty(tiny_models, pku_file, tmp_path, capsys):
    """Two pairs of one prompt and eval_ratio 0.9 (a hang before): the prompt stays in training, so nothing
    is held out, which is an error rather than a silent run without evaluation; eval_ratio 0 trains."""
    rows = [json.loads(line) for line in pku_file.read_text().splitlines()[:1]] * 2
    small = write_jsonl(tmp_path / "small.jsonl", rows)
    with deadline(60):
        assert _train("reward", tiny_models["llama"], small, tmp_path / "o", steps=2,
                      extra=["--eval_ratio", "0.9"]) == 2
        assert "holds out no pair" in capsys.readouterr().err
        assert _train("reward", tiny_models["llama"], small, tmp_path / "o2", steps=2,
                      extra=["--eval_ratio", "0"]) == 0
    assert json.loads((tmp_path / "o2" / "eval.json").read_text())["train/pairs"] == 2


def test_held_out_split_is_disjoint_from_training_with_duplicates(pku_file, tmp_path):
    from saferlhf.recipes.score_model import ScoreModelConfig, load_pairs

    rows = [json.loads(line) for line in pku_file.read_text().splitlines()]
    dup = write_jsonl(tmp_path / "dup.jsonl", rows + rows[::3] + rows[::7])  # many records twice or three times
    for seed in range(5):
        cfg = ScoreModelConfig(kind="reward", train_file=str(dup), eval_ratio=0.25, runtime=RuntimeConfig(seed=seed))
        train, held_out = load_pairs(cfg)
        triples = [{(p.prompt, p.chosen, p.rejected) for p in part} for part in (train, held_out)]
        assert held_out and not triples[0] & triples[1]
        assert len(train) + len(held_out) == len(rows) + len(rows[::3]) + len(rows[::7])


def test_huge_learning_rate_stops_naming_step_and_tensor(tiny_models, pku_file, tmp_path, capsys):
    out = tmp_path / "o"
    assert _train("reward", tiny_models["llama"], pku_file, out, steps=6,
                  extra=["--optim.lr", "1e30", "--save_every", "1"]) == 3
    err = capsys.readouterr().err
    assert re.search(r"stopped: step [1-6]: (loss|scores|reward model gradient norm|reward model parameters|"
                     r"reward model weights exploded)", err), err
    assert not (out / "checkpoint" / "COMPLETE").exists()  # step 1's 1e30 weights are never saved
    assert not (out / "model").exists()
    assert json.loads((out / "status.json").read_text())["state"] == "failed"
    json.loads((out / "status.json").read_text(), parse_constant=pytest.fail)


def test_non_finite_scores_stop_at_the_first_step(tiny_models, pku_file, tmp_path, capsys):
    nan = _nan_model(tiny_models["llama"], tmp_path / "nan")
    assert _train("cost", nan, pku_file, tmp_path / "o", steps=3) == 3
    assert "stopped: step 1: scores is not finite" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model").exists()


def test_gradient_checkpointing_recomputes_every_layer(tiny_models, pku_file, tmp_path, llama_mlp_calls):
    """With checkpointing each decoder layer runs twice per training step (forward, then again in backward)."""
    calls, counts = llama_mlp_calls, {}
    for on in ("false", "true"):
        calls.clear()
        assert _train("reward", tiny_models["llama"], pku_file, tmp_path / on, steps=3,
                      extra=["--runtime.gradient_checkpointing", on]) == 0
        counts[on] = len(calls)
    layers = AutoModelForSequenceClassification.from_pretrained(tmp_path / "true" / "model").config.num_hidden_layers
    assert counts["true"] - counts["false"] == 3 * layers


def test_run_folder_rule(tiny_models, pku_file, tmp_path, capsys):
    out = tmp_path / "o"
    assert _train("reward", tiny_models["llama"], pku_file, out, steps=2) == 0
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "complete" and status["command"] == "score-model"
    assert (out / "eval.json").stat().st_mtime <= (out / "status.json").stat().st_mtime  # status written last
    capsys.readouterr()
    assert _train("reward", tiny_models["llama"], pku_file, out, steps=2) == 2
    assert "already holds a run (complete)" in capsys.readouterr().err
    assert _train("reward", tiny_models["llama"], pku_file, out, steps=2, extra=["--overwrite", "true"]) == 0
    assert _train("reward", tiny_models["llama"], pku_file, out, steps=3, extra=["--resume", "true"]) == 2
    assert "max_steps" in capsys.readouterr().err  # a changed config is refused on resume, naming the field


@pytest.mark.parametrize("make", ["missing", "no weights"])
def test_bad_model_path_is_checked_before_the_tokenizer(make, pku_file, tiny_models, tmp_path, capsys):
    p = tmp_path / "m"
    if make == "no weights":
        shutil.copytree(tiny_models["llama"], p)
        (p / "model.safetensors").unlink()
    assert _train("reward", p, pku_file, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2  # the message and its hint
    assert str(p) in err and "expected a folder with config.json" in err
    assert not (tmp_path / "o").exists()
