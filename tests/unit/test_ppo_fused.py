"""PPO with one epoch and one minibatch reuses the rollout's actor and critic forwards for the update
(`ppo.fused_update`): one step must give the same actor and critic weights, λ and metrics as
recomputing those forwards in the update (the path every other setting takes)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from saferlhf import models as M
from saferlhf.recipes import ppo

WORDS = "stir the rice often then serve it warm with salt and a little tea or soup for the guests".split()
TEXTS = [" ".join(random.Random(i).choices(WORDS, k=12)) + "." for i in range(120)]
SIZE = dict(hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=128)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ppo-fused")
    policy = M.build_tiny_model(root / "policy", TEXTS, arch="llama", vocab_size=300, **SIZE)
    tok = M.load_tokenizer(policy, padding_side="right")
    for i, kind in enumerate(("reward", "cost")):
        model = M.ScoreModel.from_pretrained(policy, score_type=kind, seed=i + 1, allow_new_head=True)
        model.save_pretrained(root / kind, tokenizer=tok)
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": " ".join(random.Random(i).choices(WORDS, k=5)) + "?"}) + "\n"
                               for i in range(16)))
    return {"policy": policy, "reward": root / "reward", "cost": root / "cost", "prompts": prompts}


def _run(s: dict, out: Path, algorithm: str, steps: int = 1, **kw) -> ppo.PPOConfig:
    from saferlhf.training import OptimConfig, RuntimeConfig

    cfg = ppo.PPOConfig(
        algorithm=algorithm, actor_path=str(s["policy"]), reward_model_path=str(s["reward"]),
        cost_model_path=str(s["cost"]), train_prompts=str(s["prompts"]), out=str(out), steps=steps,
        ppo_epochs=1, num_minibatches=1, kl_coef=0.05, entropy_coef=0.01,
        rollout=ppo.RolloutConfig(prompts_per_step=6),
        sampling=ppo.SamplingConfig(max_new_tokens=10),
        actor_optim=OptimConfig(lr=1e-3, weight_decay=0.01),
        critic_optim=OptimConfig(lr=1e-3, weight_decay=0.0, scheduler="constant", warmup_ratio=0.0),
        runtime=RuntimeConfig(device="cpu", threads=1, progress=False, seed=3), **kw)
    assert ppo.run(cfg) == 0
    return cfg


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def _critic_weights(out: Path) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    ckpt = out / "checkpoint"
    files = sorted(ckpt.glob("model_*.safetensors")) or sorted(ckpt.glob("pytorch_model_*.bin"))  # critics
    assert files, list(ckpt.iterdir())
    load = load_file if files[0].suffix == ".safetensors" else (lambda f: torch.load(f, map_location="cpu"))
    return [t for f in files for _, t in sorted(load(str(f)).items())]


@pytest.mark.parametrize("algorithm", ["ppo_lag", "ppo"])
def test_fused_update_equals_recomputed_update(setup, tmp_path, monkeypatch, algorithm):
    calls = []
    real = ppo.fused_update
    monkeypatch.setattr(ppo, "fused_update", lambda cfg, b: calls.append(real(cfg, b)) or calls[-1])
    _run(setup, tmp_path / "fused", algorithm)
    assert calls == [True]
    monkeypatch.setattr(ppo, "fused_update", lambda cfg, b: False)
    _run(setup, tmp_path / "plain", algorithm)

    init = _weights(setup["policy"])
    fused, plain = _weights(tmp_path / "fused" / "actor"), _weights(tmp_path / "plain" / "actor")
    assert any(not torch.equal(init[k], fused[k]) for k in init)  # the step moved the actor
    for k in plain:
        torch.testing.assert_close(fused[k], plain[k], atol=1e-5, rtol=1e-5, msg=k)
    for a, b in zip(_critic_weights(tmp_path / "fused"), _critic_weights(tmp_path / "plain")):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)  # lr 1e-3: 1 % of an Adam step
    m_fused = json.loads((tmp_path / "fused" / "metrics.jsonl").read_text().splitlines()[0])
    m_plain = json.loads((tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()[0])
    for k, v in m_plain.items():
        if k.startswith(("train/", "reward/", "cost/", "lagrange/", "rollout/kl")):
            assert m_fused[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    # π_old (the rollout's eval-mode, KV-cache-free forward) is the π_θ of the update's train-mode forward:
    # holds only when dropout is off and positions agree, so the recomputing path checks it
    assert m_plain["train/actor_ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert m_plain["train/actor_clip_frac"] == 0.0


def test_fused_update_only_for_one_epoch_and_one_minibatch():
    cfg = ppo.PPOConfig()
    assert ppo.fused_update(cfg, 16)
    assert not ppo.fused_update(ppo.PPOConfig(ppo_epochs=2), 16)
    assert not ppo.fused_update(ppo.PPOConfig(num_minibatches=2), 16)
    assert ppo.fused_update(ppo.PPOConfig(num_minibatches=4), 1)  # one sequence: one minibatch anyway


def test_two_steps_fused_and_plain_stay_together(setup, tmp_path, monkeypatch):
    _run(setup, tmp_path / "fused", "ppo_lag", steps=2)
    monkeypatch.setattr(ppo, "fused_update", lambda cfg, b: False)
    _run(setup, tmp_path / "plain", "ppo_lag", steps=2)
    fused, plain = _weights(tmp_path / "fused" / "actor"), _weights(tmp_path / "plain" / "actor")
    for k in plain:
        torch.testing.assert_close(fused[k], plain[k], atol=1e-5, rtol=1e-4, msg=k)
