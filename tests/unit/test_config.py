"""Config system: defaults < YAML < CLI, unknown keys and wrong types are errors listing valid keys."""

from dataclasses import dataclass
from typing import Literal

import pytest

from saferlhf.config import ConfigError, help_text, option, parse, valid_keys


@dataclass
class Inner:
    lr: float = option(1e-3, "learning rate")
    sched: Literal["cosine", "constant"] = option("cosine", "schedule")


@dataclass
class Outer:
    path: str = option("", "input", positional=True)
    steps: int = option(10, "steps")
    flag: bool = option(False, "a flag")
    maybe: float | None = option(None, "optional")
    names: list[str] = option(["a"], "names")
    inner: Inner = option(Inner(), "nested")


def test_defaults_yaml_cli_precedence(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("steps: 20\ninner:\n  lr: 0.5\n")
    c = parse(Outer, ["--config", str(y), "--inner.lr", "0.25", "file.jsonl"], positional=["path"])
    assert (c.steps, c.inner.lr, c.path, c.inner.sched) == (20, 0.25, "file.jsonl", "cosine")
    assert parse(Outer, []).steps == 10


def test_types_and_flags():
    c = parse(Outer, ["--flag", "--maybe", "none", "--names", "x,y", "--steps=3", "--inner.sched", "constant"])
    assert c.flag is True and c.maybe is None and c.names == ["x", "y"] and c.steps == 3
    assert parse(Outer, ["--maybe", "0.5", "--flag", "false"]).maybe == 0.5
    assert parse(Outer, ["--flag", "false"]).flag is False


def test_list_fields_take_several_values_up_to_the_next_key():
    c = parse(Outer, ["--names", "x", "y,z", "w", "--steps", "4"])
    assert c.names == ["x", "y", "z", "w"] and c.steps == 4
    assert parse(Outer, ["--names=p,q"]).names == ["p", "q"]
    with pytest.raises(ConfigError, match="needs at least one value"):
        parse(Outer, ["--names", "--steps", "4"])


@pytest.mark.parametrize("argv,msg", [
    (["--stepz", "3"], "unknown config key 'stepz'"),
    (["--inner.lrr", "3"], "unknown config key 'inner.lrr'"),
    (["--steps", "three"], "steps: expected int"),
    (["--flag", "maybe"], "unexpected argument"),
    (["--inner.sched", "linear"], "not one of"),
])
def test_errors_name_the_key(argv, msg):
    with pytest.raises(ConfigError, match=msg):
        parse(Outer, argv)


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("inner:\n  bogus: 1\n")
    with pytest.raises(ConfigError) as e:
        parse(Outer, ["--config", str(y)])
    assert "inner.bogus" in str(e.value) and "inner.lr" in str(e.value)
    y.write_text("steps: [1, 2]\n")
    with pytest.raises(ConfigError, match="steps"):
        parse(Outer, ["--config", str(y)])


def test_help_lists_every_field():
    text = "\n".join(help_text(Outer))
    for key in valid_keys(Outer):
        assert f"--{key} " in text
    assert "learning rate" in text


# --- ranges (hardening): values outside a field's range name the field and the allowed range ------------
from saferlhf.config import check_config, option  # noqa: E402


@dataclass
class Ranged:
    steps: int = option(10, "steps", ge=1)
    ratio: float = option(0.1, "ratio", ge=0, lt=1)
    cap: float | None = option(None, "optional cap", gt=0)
    grid: list[float] = option([0.5], "grid", ge=0)
    inner: Inner = option(Inner(), "nested")


@pytest.mark.parametrize("argv, field, allowed", [
    (["--steps", "0"], "steps", ">= 1"),
    (["--steps", "-2"], "steps", ">= 1"),
    (["--ratio", "1.0"], "ratio", ">= 0 and < 1"),
    (["--ratio", "-0.1"], "ratio", ">= 0 and < 1"),
    (["--cap", "0"], "cap", "> 0"),
    (["--grid", "0.5,-1"], "grid", ">= 0"),
])
def test_out_of_range_names_field_and_range(argv, field, allowed):
    with pytest.raises(ConfigError) as e:
        parse(Ranged, argv)
    assert str(e.value).startswith(f"{field}: ") and f"allowed: {allowed}" in str(e.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_rejected_everywhere(value):
    with pytest.raises(ConfigError, match=r"inner\.lr: .* is not a finite number"):
        parse(Ranged, ["--inner.lr", value])


def test_in_range_values_and_none_pass():
    c = parse(Ranged, ["--steps", "1", "--ratio", "0", "--cap", "none", "--grid", "0,2"])
    assert (c.steps, c.ratio, c.cap, c.grid) == (1, 0.0, None, [0.0, 2.0])


def test_check_config_catches_programmatic_configs():
    with pytest.raises(ConfigError, match="steps"):
        check_config(Ranged(steps=0))


def test_help_shows_the_allowed_range():
    assert any("--ratio float (default: 0.1; allowed: >= 0 and < 1)" in line for line in help_text(Ranged))


def test_every_recipe_bounds_its_counts_and_rates():
    """The fields the fuzzing review found unchecked all carry a range now."""
    from saferlhf.recipes.ppo import PPOConfig
    from saferlhf.recipes.score_model import ScoreModelConfig
    from saferlhf.recipes.sft import SFTConfig

    bad = [(SFTConfig, ["--max_steps", "-1"]), (SFTConfig, ["--epochs", "0"]), (SFTConfig, ["--max_length", "1"]),
           (SFTConfig, ["--log_every", "0"]), (ScoreModelConfig, ["--eval_ratio", "-0.5"]),
           (ScoreModelConfig, ["--eval_ratio", "1.0"]), (ScoreModelConfig, ["--batch_size", "-2"]),
           (ScoreModelConfig, ["--l2_coef", "-1"]), (PPOConfig, ["--ppo_epochs", "0"]),
           (PPOConfig, ["--kl_coef", "-0.1"]), (PPOConfig, ["--clip_eps", "-0.2"]), (PPOConfig, ["--save_every", "-1"]),
           (PPOConfig, ["--lagrange.lr", "-0.1"]), (PPOConfig, ["--actor_optim.lr", "inf"])]
    for cls, argv in bad:
        with pytest.raises(ConfigError, match=argv[0][2:].replace(".", r"\.")):
            parse(cls, argv)
