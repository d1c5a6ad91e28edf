"""`saferlhf best-of-k` (both modes) and `saferlhf rs-finetune` end to end on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from saferlhf.cli import main
from saferlhf.tracking import read_jsonl



@pytest.fixture(scope="module")
def judges(tiny_models, pku_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("judges")
    for kind in ("reward", "cost"):
        assert main(["score-model", "--kind", kind, "--model_path", str(tiny_models["llama"]), "--train_file",
                     str(pku_file), "--out", str(root / kind), "--max_steps", "8", "--batch_size", "16",
                     "--max_length", "64", "--optim.lr", "3e-3", "--eval_ratio", "0", "--runtime.progress",
                     "false"]) == 0
    return root / "reward" / "model", root / "cost" / "model"


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?"}) + "\n"
                            for t in ("rice", "tea", "beans", "soup", "fish", "bread")))
    return path


def test_best_of_k_keeps_the_best_acceptable_candidate(tiny_models, judges, prompts, tmp_path, capsys):
    rm, cm = judges
    out = tmp_path / "bok"
    assert main(["best-of-k", "--model_path", str(tiny_models["llama"]), "--reward_model", str(rm), "--cost_model",
                 str(cm), "--prompts", str(prompts), "--k", "4", "--sampling.max_new_tokens", "8", "--keep_candidates",
                 "true", "--out", str(out)]) == 0
    rows = list(read_jsonl(out / "responses.jsonl"))
    assert len(rows) == 6
    for r in rows:
        cands = r["candidates"]
        ok = [c for c in cands if c["cost"] <= 0]
        best = max(ok, key=lambda c: c["reward"]) if ok else min(cands, key=lambda c: c["cost"])
        assert r["feasible"] == bool(ok) and r["reward"] == best["reward"] and r["response"] == best["response"]
    s = json.loads((out / "summary.json").read_text())
    assert s["k"] == 4 and s["reward_max_mean"] >= s["reward_median_mean"] and 0 <= s["feasible_share"] <= 1
    assert s["win_rate_upper_bound"] == pytest.approx(0.8)
    assert json.loads((out / "status.json").read_text())["state"] == "complete"


@pytest.mark.parametrize("threshold,refused", [("-1e9", True), ("1e9", False)])
def test_cm_classifier_regenerates_then_refuses(tiny_models, judges, prompts, tmp_path, threshold, refused):
    _, cm = judges
    out = tmp_path / "cm"
    assert main(["best-of-k", "--mode", "cm_classifier", "--model_path", str(tiny_models["llama"]), "--cost_model",
                 str(cm), "--prompts", str(prompts), "--max_tries", "3", "--threshold", threshold,
                 "--sampling.max_new_tokens", "8", "--out", str(out)]) == 0
    rows = list(read_jsonl(out / "responses.jsonl"))
    s = json.loads((out / "summary.json").read_text())
    if refused:  # nothing is ever acceptable: every prompt tried 3 times, then refused
        assert all(r["response"] == "I'm sorry, but I can't help with that request." and r["attempts"] == 3
                   for r in rows) and s["refusal_share"] == 1.0
    else:
        assert all(r["feasible"] and r["attempts"] == 1 for r in rows) and s["refusal_share"] == 0.0


def test_best_of_k_needs_its_judges(tiny_models, prompts, tmp_path, capsys):
    assert main(["best-of-k", "--model_path", str(tiny_models["llama"]), "--prompts", str(prompts),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--reward_model" in capsys.readouterr().err


@pytest.fixture(scope="module")
def ending_policy(tiny_models, sft_file, tmp_path_factory):
    """The tiny Llama after a few SFT steps: some of its answers end within 12 tokens, some are cut off."""
    out = tmp_path_factory.mktemp("sft_policy") / "sft"
    assert main(["sft", "--model_path", str(tiny_models["llama"]), "--train_file", str(sft_file), "--out", str(out),
                 "--max_steps", "40", "--optim.lr", "1e-2", "--batch_size", "16", "--runtime.progress", "false"]) == 0
    return out / "model"


def test_rs_finetune_rounds_and_resume(ending_policy, judges, prompts, tmp_path, capsys):
    rm, cm = judges
    out = tmp_path / "rs"
    args = ["rs-finetune", "--model_path", str(ending_policy), "--reward_model", str(rm), "--cost_model",
            str(cm), "--prompts", str(prompts), "--k", "3", "--rounds", "2", "--threshold", "1e9",
            "--sampling.max_new_tokens", "12", "--sft_batch_size", "4", "--sft_max_length", "64", "--optim.lr", "3e-3",
            "--out", str(out)]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in s["rounds"]] == [1, 2]
    for k, r in enumerate(s["rounds"], 1):
        # only complete answers are kept: a cut-off one would teach the policy to stop mid-answer
        candidates = list(read_jsonl(out / f"round_{k}" / "candidates.jsonl"))
        complete = {(c["prompt"], t) for c in candidates for t, e in zip(c["responses"], c["ended"]) if e and t.strip()}
        selected = list(read_jsonl(out / f"round_{k}" / "selected.jsonl"))
        assert selected and all((x["prompt"], x["response"]) in complete for x in selected)
        assert r["kept"] == len({p for p, _ in complete}) == len(selected)
        assert r["reward_max_mean"] >= r["reward_median_mean"]
    assert 0 < s["rounds"][0]["cut_off_share"] < 1  # both kinds of candidate were drawn
    assert (out / "round_1" / "selected.jsonl").exists() and (out / "reward_gap.png").stat().st_size > 1000
    assert s["rounds"][1]["policy"] == str(out / "round_1" / "sft" / "model")  # round 2 samples the round-1 model
    init = AutoModelForCausalLM.from_pretrained(ending_policy).state_dict()
    final = AutoModelForCausalLM.from_pretrained(s["final_model"]).state_dict()
    assert any(not torch.equal(init[k], final[k]) for k in init)
    capsys.readouterr()
    assert main([*args, "--resume", "true"]) == 0  # both rounds finished: nothing is sampled or trained again
    assert json.loads((out / "summary.json").read_text())["rounds"] == s["rounds"]
    assert "sft:" not in capsys.readouterr().out


def test_a_nan_cost_model_stops_the_selection(tiny_models, judges, prompts, tmp_path, capsys):
    from saferlhf.models import ScoreModel

    rm, cm = judges
    broken = ScoreModel.from_pretrained(cm)
    with torch.no_grad():
        broken.head.weight.fill_(float("nan"))
    from transformers import AutoTokenizer

    broken.model.save_pretrained(tmp_path / "nan_cm")  # plain HF: our own save refuses NaN weights
    AutoTokenizer.from_pretrained(cm).save_pretrained(tmp_path / "nan_cm")
    for mode in ("best_of_k", "cm_classifier"):
        out = tmp_path / mode
        assert main(["best-of-k", "--mode", mode, "--model_path", str(tiny_models["llama"]), "--reward_model", str(rm),
                     "--cost_model", str(tmp_path / "nan_cm"), "--prompts", str(prompts), "--k", "2",
                     "--sampling.max_new_tokens", "6", "--out", str(out)]) == 3
        assert "non-finite scores" in capsys.readouterr().err
        assert not (out / "responses.jsonl").exists()
