"""`saferlhf dpo` end to end on tiny models: every variant trains (parameters change, the held-out implicit
reward ranks the preferred response higher), LoRA with an on-the-fly reference, SACPO's two stages, bad input."""

from __future__ import annotations

import json

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
