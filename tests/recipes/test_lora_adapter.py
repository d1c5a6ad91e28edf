"""LoRA runs save adapters: ``--lora.merge_on_save false`` writes model/ as an adapter folder
(adapter_model.safetensors + adapter_config.json + tokenizer) that peft's ``PeftModel.from_pretrained(base,
folder)`` and every saferlhf loader read, with the logits of the merged model; checkpoints of LoRA runs hold the
adapters and optimiser state only, and a killed LoRA run still resumes bit for bit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saferlhf.cli import main
from saferlhf.errors import UserError
from saferlhf.models.policy import load_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faults.util import assert_same_weights, run_cli, run_killed  # noqa: E402

LORA = ["--lora.enabled", "true", "--lora.r", "4", "--optim.lr", "1e-2"]


def sft_args(model, data, out, *extra, steps=4):
    return ["sft", "--model_path", str(model), "--train_file", str(data), "--out", str(out), "--batch_size", "8",
            "--max_steps", str(steps), "--max_length", "48", "--save_every", "2", "--runtime.progress", "false",
            "--runtime.threads", "1", *LORA, *extra]


@pytest.fixture(scope="module")
def lora_runs(tiny_models, sft_file, tmp_path_factory):
    """The same LoRA SFT run twice: model/ merged (the default) and model/ as the adapter alone."""
    root = tmp_path_factory.mktemp("lora-sft")
    base = tiny_models["llama"]
    assert main(sft_args(base, sft_file, root / "merged")) == 0
    assert main(sft_args(base, sft_file, root / "adapter", "--lora.merge_on_save", "false")) == 0
    return {"base": base, "merged": root / "merged", "adapter": root / "adapter"}


def _logits(model, tok):
    ids = tok(["how do I cook rice?", "tea"], return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.eval()(**ids).logits


def test_the_adapter_folder_loads_with_peft_and_saferlhf_with_the_merged_logits(lora_runs):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = lora_runs["adapter"] / "model"
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "config.json" not in names and "model.safetensors" not in names
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(Path(lora_runs["base"]).resolve())  # absolute: loads anywhere
    assert all("lora_" in k for k in load_file(folder / "adapter_model.safetensors"))

    merged, tok = load_policy(lora_runs["merged"] / "model")
    loaded, tok2 = load_policy(folder)  # saferlhf: base + adapter, merged at load
    assert tok2.get_vocab() == tok.get_vocab()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(lora_runs["base"]), str(folder))
    want = _logits(merged, tok)
    assert not torch.allclose(want, _logits(AutoModelForCausalLM.from_pretrained(lora_runs["base"]), tok))  # trained
    torch.testing.assert_close(_logits(loaded, tok), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(_logits(peft, tok), want, rtol=1e-5, atol=1e-5)


def test_lora_checkpoints_hold_the_adapters_only(lora_runs, tiny_models):
    base_bytes = sum(f.stat().st_size for f in Path(tiny_models["llama"]).glob("*.safetensors"))
    for run in ("merged", "adapter"):
        ckpt = lora_runs[run] / "checkpoint"
        trained = load_file(ckpt / "trained_0.safetensors")
        assert trained and all("lora_" in k for k in trained), sorted(trained)[:5]
        assert load_file(ckpt / "model.safetensors") == {}  # no base weights
        weights = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
        assert weights < base_bytes / 10, (weights, base_bytes)


def test_a_killed_lora_sft_resumes_bit_for_bit(lora_runs, sft_file, tmp_path):
    out = tmp_path / "killed"
    args = sft_args(lora_runs["base"], sft_file, out, "--lora.merge_on_save", "false")
    run_killed(args, "step:3")  # after the checkpoint of step 2
    resumed = run_cli([*args, "--resume", "true"])
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-2000:]
    assert_same_weights(lora_runs["adapter"] / "model", out / "model")


def test_commands_take_the_adapter_folder_as_a_model_path(lora_runs, sft_file, tmp_path):
    """generate reads it; an SFT from it writes an adapter over an adapter, which loads through both."""
    folder = lora_runs["adapter"] / "model"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "how do I cook rice?"}) + "\n")
    assert main(["generate", "--model_path", str(folder), "--prompts", str(prompts), "--out", str(tmp_path / "g.jsonl"),
                 "--sampling.max_new_tokens", "4", "--sampling.greedy", "true"]) == 0
    assert json.loads((tmp_path / "g.jsonl").read_text().splitlines()[0])["response"] is not None
    second = tmp_path / "second"
    assert main(sft_args(folder, sft_file, second, "--lora.merge_on_save", "false", steps=2)) == 0
    config = json.loads((second / "model" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(folder.resolve())
    stacked, tok = load_policy(second / "model")
    first, _ = load_policy(folder)
    assert not torch.allclose(_logits(stacked, tok), _logits(first, tok))  # the second adapter acts on the first


def test_an_adapter_folder_without_its_base_is_one_line(lora_runs, tmp_path, capsys):
    import shutil

    folder = tmp_path / "orphan"
    shutil.copytree(lora_runs["adapter"] / "model", folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="LoRA adapter folder over the base .*gone, which does not exist"):
        load_policy(folder)
    assert main(["generate", "--model_path", str(folder), "--prompts", str(tmp_path / "p.jsonl"),
                 "--out", str(tmp_path / "g.jsonl")]) == 2


def test_dpo_with_lora_saves_the_adapter_on_request(tiny_models, pku_file, tmp_path):
    out = tmp_path / "dpo"
    assert main(["dpo", "--model_path", str(tiny_models["llama"]), "--train_file", str(pku_file), "--out", str(out),
                 "--max_steps", "2", "--batch_size", "8", "--max_length", "48", "--runtime.progress", "false",
                 *LORA, "--lora.merge_on_save", "false"]) == 0
    assert (out / "model" / "adapter_model.safetensors").exists() and not (out / "model" / "config.json").exists()
    model, tok = load_policy(out / "model")
    assert torch.isfinite(_logits(model, tok)).all()


def test_a_killed_lora_score_model_resumes_bit_for_bit_from_an_adapter_checkpoint(tiny_models, pku_file, tmp_path):
    def args(out):
        return ["score-model", "--kind", "cost", "--model_path", str(tiny_models["llama"]), "--train_file",
                str(pku_file), "--out", str(out), "--max_steps", "3", "--save_every", "1", "--batch_size", "8",
                "--max_length", "48", "--optim.lr", "3e-3", "--runtime.progress", "false", "--runtime.threads", "1",
                "--lora.enabled", "true", "--lora.r", "4"]

    assert main(args(tmp_path / "whole")) == 0
    trained = load_file(tmp_path / "whole" / "checkpoint" / "trained_0.safetensors")
    assert any("lora_" in k for k in trained) and any("score" in k for k in trained)
    assert all("lora_" in k or "score" in k for k in trained)  # the frozen base is not copied
    run_killed(args(tmp_path / "killed"), "step:2")
    resumed = run_cli([*args(tmp_path / "killed"), "--resume", "true"])
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr[-2000:]
    assert_same_weights(tmp_path / "whole" / "model", tmp_path / "killed" / "model")
