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
        "eval.yaml": "eval", "cost_model_labels.yaml": "score-model"}


@pytest.mark.parametrize("name", sorted(SMOL))
def test_smollm2_presets_parse(name):
    assert sorted(p.name for p in (CONFIGS / "smollm2-135m").glob("*.yaml")) == sorted(SMOL)
    cfg = parse(config_class(SMOL[name]), ["--config", str(CONFIGS / "smollm2-135m" / name)])
    if name in ("sft.yaml", "reward_model.yaml", "cost_model.yaml", "cost_model_labels.yaml"):
        assert cfg.lora.enabled and cfg.lora.r == 16
    if name == "cost_model.yaml":
        assert cfg.kind == "cost"


def test_minilm_cost_model_and_judge_presets_are_cross_fitted():
    """The shipped cost model and the independent judge read the same labelled sources from ../shared/data, on
    disjoint prompt ranges (so the judge never saw a training prompt of the cost model), and the SmolLM2 LoRA
    variant uses the cost model's ranges."""
    cls = config_class("score-model")
    load = lambda *p: parse(cls, ["--config", str(CONFIGS.joinpath(*p))])  # noqa: E731
    cost, judge, smol = (load("minilm", "cost_model.yaml"), load("minilm", "judge_classifier.yaml"),
                         load("smollm2-135m", "cost_model_labels.yaml"))
    assert sorted(p.name for p in (CONFIGS / "minilm").glob("*.yaml")) == ["cost_model.yaml", "judge_classifier.yaml"]
    assert cost.kind == judge.kind == "cost" and cost.threshold_method == "best_f1"
    names = [s.name for s in cost.sources]
    assert names == [s.name for s in judge.sources] == [s.name for s in smol.sources]
    assert {"wildguardtest", "beavertails", "pku_saferlhf", "harmbench", "xstest_response", "dices",
            "safety_tuned_llamas", "hh_harmless_pairs"} <= set(names)
    for c, j, s in zip(cost.sources, judge.sources, smol.sources):
        assert c.path == j.path == s.path and c.path.startswith("../shared/data/")
        assert c.prompt_range == s.prompt_range
        assert c.prompt_range[0] >= j.prompt_range[1] or j.prompt_range[0] >= c.prompt_range[1]  # disjoint
        shared = CONFIGS.parent.parent / c.path.removeprefix("../")
        if (CONFIGS.parent.parent / "shared" / "data").is_dir():
            assert shared.is_file(), shared
