"""The YAML presets in configs/: each one parses into its command's config through `--config`, and the demo
preset is exactly the demo's defaults."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from saferlhf.cli import COMMANDS
from saferlhf.config import parse, to_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = {"demo.yaml": "demo", "sft.yaml": "sft", "reward_model.yaml": "score-model", "cost_model.yaml": "score-model",
           "ppo_lag.yaml": "ppo", "generate.yaml": "generate",
           "tiny_model.yaml": "tiny-model", "eval.yaml": "eval"}


def config_class(command: str):
    c = next(c for c in COMMANDS if c.name == command)
    return getattr(importlib.import_module(c.module), c.config)


def test_every_preset_is_listed_and_every_training_command_has_one():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(PRESETS)
    assert {"demo", "sft", "score-model", "ppo", "generate", "eval", "tiny-model"} <= set(PRESETS.values())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parses_and_cli_overrides_win(name):
    cls = config_class(PRESETS[name])
    cfg = parse(cls, ["--config", str(CONFIGS / name)])
    assert isinstance(cfg, cls)
    again = parse(cls, ["--config", str(CONFIGS / name), "--out", "elsewhere"])
    assert again.out == "elsewhere"  # defaults < YAML < CLI


def test_demo_preset_is_the_demo_defaults():
    cls = config_class("demo")
    assert to_dict(parse(cls, ["--config", str(CONFIGS / "demo.yaml")])) == to_dict(cls())


def test_recipe_presets_hold_the_reference_values():
    ppo = parse(config_class("ppo"), ["--config", str(CONFIGS / "ppo_lag.yaml")])
    assert (ppo.algorithm, ppo.kl_coef, ppo.lagrange.lr, ppo.lagrange.max_value, ppo.clip_eps) == ("ppo_lag", 0.01, 0.1,
                                                                                                    5.0, 0.2)
    cost = parse(config_class("score-model"), ["--config", str(CONFIGS / "cost_model.yaml")])
    reward = parse(config_class("score-model"), ["--config", str(CONFIGS / "reward_model.yaml")])
    assert (cost.kind, reward.kind, reward.optim.lr, reward.epochs, reward.max_length) == ("cost", "reward", 2e-5, 2.0,
                                                                                           512)
    sft = parse(config_class("sft"), ["--config", str(CONFIGS / "sft.yaml")])
    assert sft.optim.lr == 2e-5 and sft.epochs == 3


SMOL = {"sft.yaml": "sft", "reward_model.yaml": "score-model", "cost_model.yaml": "score-model", "ppo_lag.yaml": "ppo",
        "eval.yaml": "eval"}


@pytest.mark.parametrize("name", sorted(SMOL))
def test_smollm2_presets_parse(name):
    assert sorted(p.name for p in (CONFIGS / "smollm2-135m").glob("*.yaml")) == sorted(SMOL)
    cfg = parse(config_class(SMOL[name]), ["--config", str(CONFIGS / "smollm2-135m" / name)])
    if name in ("sft.yaml", "reward_model.yaml", "cost_model.yaml"):
        assert cfg.lora.enabled and cfg.lora.r == 16
    if name == "cost_model.yaml":
        assert cfg.kind == "cost"
