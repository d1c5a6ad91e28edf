"""`saferlhf sft` end to end on tiny models: every parameter changes and the loss falls."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from saferlhf.cli import main
from saferlhf.tracking import read_jsonl


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sft_trains_every_parameter_and_loss_falls(arch, tiny_models, sft_file, tmp_path):
    out = tmp_path / "sft"
    rc = main(["sft", "--model_path", str(tiny_models[arch]), "--train_file", str(sft_file), "--out", str(out),
               "--eval_file", str(sft_file), "--batch_size", "8", "--max_steps", "40", "--log_every", "1",
               "--optim.lr", "1e-2", "--optim.weight_decay", "0", "--max_length", "64", "--runtime.progress", "false"])
    assert rc == 0
    before = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]
    assert rows[-1]["train/loss"] < 0.5 * rows[0]["train/loss"]
    assert (out / "config.yaml").exists()
    ev = [r for r in read_jsonl(out / "metrics.jsonl") if "eval/loss" in r]
    assert ev and ev[-1]["eval/loss"] < rows[0]["train/loss"]


def test_sft_packing(tiny_models, sft_file, tmp_path):
    out = tmp_path / "sft_packed"
    assert main(["sft", "--model_path", str(tiny_models["llama"]), "--train_file", str(sft_file), "--out", str(out),
                 "--packing", "--max_length", "64", "--batch_size", "4", "--max_steps", "6",
                 "--runtime.progress", "false"]) == 0
    assert (out / "model" / "config.json").exists()


def test_sft_rejects_bad_data_before_training(tiny_models, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "response": "hello"}\n{"prompt": "x", "response": ""}\nnot json\n')
    rc = main(["sft", "--model_path", str(tiny_models["llama"]), "--train_file", str(bad), "--out", str(tmp_path / "o")])
    msg = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}:2" in msg and "response" in msg and f"{bad}:3" in msg
    assert not (tmp_path / "o" / "model").exists()


def test_missing_model_path_is_a_clear_error(sft_file, tmp_path, capsys):
    rc = main(["sft", "--model_path", str(tmp_path / "nope"), "--train_file", str(sft_file), "--out", str(tmp_path / "o")])
    assert rc == 2 and "model path not found" in capsys.readouterr().err
