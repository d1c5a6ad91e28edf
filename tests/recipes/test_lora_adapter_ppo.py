"""LoRA PPO-Lag saves its actor as an adapter on request (``--lora.merge_on_save false``), its checkpoints hold the
actor's and critics' adapters (and value heads) but no base weights, a killed run resumes to the same adapter, and
an adapter folder (a LoRA SFT saved unmerged) is a valid --actor_path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from saferlhf.cli import main
from saferlhf.models.policy import load_policy
from tiny_judges import build_tiny_judges, tiny_ppo_args

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faults.util import assert_same_weights, run_cli, run_killed  # noqa: E402

LORA = ["--lora.enabled", "true", "--lora.r", "4", "--lora.merge_on_save", "false", "--critic_lora.enabled", "true",
        "--save_every", "1"]


@pytest.fixture(scope="module")
def judges(tiny_models, pku_file, tmp_path_factory):
    return build_tiny_judges(tmp_path_factory.mktemp("lora-ppo"), tiny_models["llama"], pku_file)


def test_lora_ppo_saves_the_adapter_and_small_checkpoints_and_resumes(judges, tiny_models, tmp_path):
    out = tmp_path / "run"
    assert main(tiny_ppo_args(judges, out, steps=3, extra=LORA)) == 0
    actor = out / "actor"
    assert (actor / "adapter_model.safetensors").exists() and not (actor / "config.json").exists()
    model, tok = load_policy(actor)
    base, _ = load_policy(tiny_models["llama"])
    ids = tok(["how do I cook rice?"], return_tensors="pt")
    with torch.no_grad():
        assert not torch.allclose(model(**ids).logits, base(**ids).logits)  # the trained actor, merged at load
    ckpt = out / "checkpoint"
    trained = {i: load_file(ckpt / f"trained_{i}.safetensors") for i in range(3)}  # actor, reward and cost critics
    assert all("lora_" in k for k in trained[0])
    for i in (1, 2):
        assert all("lora_" in k or "score" in k for k in trained[i]) and any("score" in k for k in trained[i])
    base_bytes = sum(f.stat().st_size for f in Path(tiny_models["llama"]).glob("*.safetensors"))
    assert sum(f.stat().st_size for f in ckpt.glob("*.safetensors")) < base_bytes  # three models, less than one base

    killed = tmp_path / "killed"
    args = tiny_ppo_args(judges, killed, steps=3, extra=LORA)
    run_killed(args, "step:2")
    resumed = run_cli([*args, "--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(actor, killed / "actor")


def test_an_adapter_folder_is_a_valid_actor_path(judges, sft_file, tmp_path):
    sft = tmp_path / "sft"
    assert main(["sft", "--model_path", str(judges["actor"]), "--train_file", str(sft_file), "--out", str(sft),
                 "--max_steps", "2", "--batch_size", "8", "--max_length", "48", "--runtime.progress", "false",
                 "--lora.enabled", "true", "--lora.r", "4", "--optim.lr", "1e-2", "--lora.merge_on_save", "false"]) == 0
    setup = dict(judges, actor=sft / "model")
    out = tmp_path / "ppo"
    assert main(tiny_ppo_args(setup, out, steps=1, extra=LORA)) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["rollout/kl"] == pytest.approx(0.0, abs=1e-6)  # the reference is the SFT adapter merged
    config = json.loads((out / "actor" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((sft / "model").resolve())
    load_policy(out / "actor")
