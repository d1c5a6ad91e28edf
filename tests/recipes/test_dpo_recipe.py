"""`saferlhf dpo` end to end on tiny models: every variant trains (parameters change, the held-out implicit
reward ranks the preferred response higher), LoRA with an on-the-fly reference, SACPO's two stages, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from saferlhf.cli import main
from saferlhf.tracking import read_jsonl


def _dpo(model, train_file, out, *extra, steps=30):
    return main(["dpo", "--model_path", str(model), "--train_file", str(train_file), "--out", str(out),
                 "--batch_size", "16", "--max_steps", str(steps), "--log_every", "1", "--max_length", "64",
                 "--optim.lr", "3e-3", "--optim.weight_decay", "0", "--eval_ratio", "0.25",
                 "--runtime.progress", "false", *extra])


def _weights(path) -> dict[str, torch.Tensor]:
    return AutoModelForCausalLM.from_pretrained(path).state_dict()


@pytest.mark.parametrize("variant,arch", [("dpo", "llama"), ("harmless", "qwen2"), ("safe_filtered", "llama"),
                                          ("safedpo", "gpt2")])
def test_every_variant_trains_and_ranks_held_out_pairs(variant, arch, tiny_models, pku_file, tmp_path, capsys):
    out = tmp_path / variant
    assert _dpo(tiny_models[arch], pku_file, out, "--variant", variant) == 0
    init, trained = _weights(tiny_models[arch]), _weights(out / "model")
    changed = [k for k in init if not torch.equal(init[k], trained[k])]
    assert len(changed) >= 0.9 * len(init)  # every trained weight moved (tied / buffer entries aside)
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"] and rows[-1]["train/margin"] > rows[0]["train/margin"]
    ev = json.loads((out / "eval.json").read_text())
    assert ev["eval/accuracy"] >= 0.8 and ev["eval/margin"] > 0
    assert ev["train/packed"] is True  # padding-free batches on every tiny architecture
    if variant == "safedpo":
        assert 0 < rows[0]["train/offset_share"] <= 1
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    assert "held-out accuracy" in capsys.readouterr().out


def test_lora_with_reference_on_the_fly_equals_precomputed(tiny_models, pku_file, tmp_path):
    """LoRA: the reference is the actor with adapters disabled when computed on the fly; the same losses as the
    precomputed reference (the adapters start at zero, so both are the starting model)."""
    lora = ["--lora.enabled", "true", "--lora.r", "4", "--optim.lr", "1e-2"]
    assert _dpo(tiny_models["llama"], pku_file, tmp_path / "pre", *lora, steps=6) == 0
    assert _dpo(tiny_models["llama"], pku_file, tmp_path / "fly", *lora, "--precompute_ref", "false", steps=6) == 0
    a = [r["train/loss"] for r in read_jsonl(tmp_path / "pre" / "metrics.jsonl") if "train/loss" in r]
    b = [r["train/loss"] for r in read_jsonl(tmp_path / "fly" / "metrics.jsonl") if "train/loss" in r]
    assert a == pytest.approx(b, rel=1e-4, abs=1e-5) and a[-1] < a[0]
    init, merged = _weights(tiny_models["llama"]), _weights(tmp_path / "pre" / "model")
    assert any(not torch.equal(init[k], merged[k]) for k in init)  # adapters merged into the saved weights


def test_sacpo_runs_both_stages_in_order(tiny_models, pku_file, tmp_path):
    out = tmp_path / "sacpo"
    assert _dpo(tiny_models["llama"], pku_file, out, "--variant", "sacpo", steps=8) == 0
    s1, s2 = out / "stage1_helpful", out / "stage2_safe"
    assert (s1 / "model").is_dir() and (s2 / "model").is_dir() and (out / "model").is_dir()
    cfg2 = (s2 / "config.yaml").read_text()
    assert str(s1 / "model") in cfg2 and "variant: harmless" in cfg2  # stage 2 starts from stage 1
    summary = json.loads((out / "eval.json").read_text())
    assert set(summary) == {"stage1_helpful", "stage2_safe"}
    final, stage2 = _weights(out / "model"), _weights(s2 / "model")
    assert all(torch.equal(final[k], stage2[k]) for k in final)
    assert json.loads((out / "status.json").read_text())["state"] == "complete"


def test_bad_pairs_and_missing_labels_fail_at_load_time(tiny_models, tmp_path, capsys):
    hh = tmp_path / "hh.jsonl"
    same = "\n\nHuman: how do I cook rice?\n\nAssistant: boil it."
    hh.write_text(json.dumps({"chosen": same, "rejected": same}) + "\n"
                  + json.dumps({"chosen": same, "rejected": same.replace("boil", "steam")}) + "\n")
    assert _dpo(tiny_models["llama"], hh, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert f"{hh}:1: rejected: identical to chosen" in err and "Traceback" not in err
    assert not (tmp_path / "a").exists()
    trl = tmp_path / "trl.jsonl"
    trl.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "good", "rejected": "bad"}) + "\n"
                           for i in range(4)))
    assert _dpo(tiny_models["llama"], trl, tmp_path / "b", "--variant", "safedpo") == 2
    err = capsys.readouterr().err
    assert f"{trl}:1: chosen_is_safe: variant safedpo needs per-response safety labels" in err
    assert not (tmp_path / "b").exists()


def test_a_nan_policy_stops_before_anything_is_saved(tiny_models, pku_file, tmp_path, capsys):
    """No run trains on NaN: a policy with NaN weights stops with the numerical-error exit code, naming the
    tensor, and no model folder is written; the run folder does not say complete."""
    src = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with torch.no_grad():
        src.get_input_embeddings().weight.fill_(float("nan"))
    bad = tmp_path / "nan"
    src.save_pretrained(bad)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_models["llama"]).save_pretrained(bad)
    out = tmp_path / "run"
    assert _dpo(bad, pku_file, out, steps=3) == 3
    err = capsys.readouterr().err
    assert "not finite" in err or "NaN" in err
    assert not (out / "model").exists()
    assert json.loads((out / "status.json").read_text())["state"] != "complete"


def _losses(out) -> list[float]:
    return [r["train/loss"] for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]


@pytest.mark.parametrize("arch,precompute", [("llama", "false"), ("gpt2", "false"), ("gpt2", "true")])
def test_step_one_loss_is_ln2_without_lora(arch, precompute, tiny_models, pku_file, tmp_path):
    """At step 1 the policy is the reference, so the loss is ln 2 exactly: the on-the-fly reference reads the
    policy's packed row with per-sequence attention (not a rejected response without its prompt), and dropout
    is off (gpt2 has 0.1), so the policy in train mode computes the reference's function."""
    out = tmp_path / "run"
    assert _dpo(tiny_models[arch], pku_file, out, "--precompute_ref", precompute, steps=1) == 0
    assert _losses(out)[0] == pytest.approx(math.log(2), abs=1e-6)
    assert json.loads((out / "eval.json").read_text())["train/packed"] is True


def test_one_pair_with_eval_ratio_is_a_user_error(tiny_models, pku_file, tmp_path, capsys):
    one = tmp_path / "one.jsonl"
    one.write_text(pku_file.read_text().splitlines()[0] + "\n")
    assert _dpo(tiny_models["llama"], one, tmp_path / "run", "--eval_ratio", "0.5") == 2
    err = capsys.readouterr().err
    assert "eval_ratio 0.5 holds out no pair (1 pairs" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert _dpo(tiny_models["llama"], one, tmp_path / "ok", "--eval_ratio", "0", steps=1) == 0  # no eval asked


def test_pairs_with_nothing_left_to_compare_after_truncation_are_a_user_error(tiny_models, tmp_path, capsys):
    """A max_length so short that chosen and rejected keep the same tokens trains on nothing (loss ln 2 at every
    step): refused before any model is loaded."""
    trl = tmp_path / "trl.jsonl"
    trl.write_text("".join(json.dumps({"prompt": f"how do I cook rice? ({i})",
                                       "chosen": "rinse it first and use low heat, then serve it warm.",
                                       "rejected": "rinse it first and use low heat, then hurt the cook."}) + "\n"
                           for i in range(8)))
    assert _dpo(tiny_models["llama"], trl, tmp_path / "run", "--max_length", "2", "--eval_ratio", "0") == 2
    err = capsys.readouterr().err
    assert "8 of 8 pairs have identical chosen and rejected tokens after truncation to max_length 2" in err
    assert len(err.strip().splitlines()) <= 2 and not (tmp_path / "run").exists()  # the error and its hint


def test_a_reference_with_a_smaller_vocabulary_is_refused_before_training(tiny_models, pku_file, tmp_path, capsys):
    """A reference with another (here smaller) tokenizer would index its logits with the policy's token ids: one
    clear line before any training, not an IndexError."""
    from saferlhf.models import build_tiny_model

    texts = [f"how do I cook {t}? use low heat and serve it warm." for t in ("rice", "tea", "soup")] * 4
    small = build_tiny_model(tmp_path / "small", texts, vocab_size=300, hidden_size=32, num_layers=1, num_heads=2)
    for precompute in ("true", "false"):
        out = tmp_path / f"run_{precompute}"
        assert _dpo(tiny_models["llama"], pku_file, out, "--ref_model_path", str(small), "--precompute_ref",
                    precompute) == 2
        err = capsys.readouterr().err
        assert f"ref_model_path {small} has another tokenizer than model_path" in err and "Traceback" not in err
        assert not out.exists()
    assert _dpo(tiny_models["llama"], pku_file, tmp_path / "sacpo", "--variant", "sacpo", "--ref_model_path",
                str(small)) == 2  # SACPO's first stage: refused before its run folder is written
    assert "has another tokenizer" in capsys.readouterr().err and not (tmp_path / "sacpo").exists()


def test_sacpo_regularises_its_first_stage_towards_ref_model_path(tiny_models, pku_file, tmp_path):
    """SACPO honours --ref_model_path in its first stage (the policy starts away from that reference, so the
    first loss is not ln 2); the second stage's reference is the first stage's model (ln 2 at its step 1)."""
    ref = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ref.save_pretrained(tmp_path / "ref")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_models["llama"]).save_pretrained(tmp_path / "ref")
    out = tmp_path / "sacpo"
    assert _dpo(tiny_models["llama"], pku_file, out, "--variant", "sacpo", "--ref_model_path", str(tmp_path / "ref"),
                steps=2) == 0
    assert str(tmp_path / "ref") in (out / "stage1_helpful" / "config.yaml").read_text()
    assert abs(_losses(out / "stage1_helpful")[0] - math.log(2)) > 1e-3
    assert _losses(out / "stage2_safe")[0] == pytest.approx(math.log(2), abs=1e-6)


def test_soft_targets_reach_the_loss(tiny_models, pku_file, tmp_path):
    """Records with ``better_response_prob`` (issue 24 §2, `annotate export --aggregation soft`) train with the soft
    loss: at p = 1/2 the optimum is margin 0, which is where training starts, so the margin stays near 0 while the
    same pairs with hard labels open it."""
    rows = [json.loads(line) for line in pku_file.read_text().splitlines()]
    soft = tmp_path / "soft.jsonl"
    soft.write_text("".join(json.dumps(r | {"better_response_prob": 0.5}) + "\n" for r in rows))
    assert _dpo(tiny_models["llama"], soft, tmp_path / "soft", steps=15) == 0
    assert _dpo(tiny_models["llama"], pku_file, tmp_path / "hard", steps=15) == 0
    soft_rows = [r for r in read_jsonl(tmp_path / "soft" / "metrics.jsonl") if "train/loss" in r]
    hard_rows = [r for r in read_jsonl(tmp_path / "hard" / "metrics.jsonl") if "train/loss" in r]
    assert all(r["train/target_mean"] == pytest.approx(0.5) for r in soft_rows)
    assert "train/target_mean" not in hard_rows[0]
    assert abs(soft_rows[-1]["train/margin"]) < 0.1 * hard_rows[-1]["train/margin"]
