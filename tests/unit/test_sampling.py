"""One home for sampling settings (issue 20): every sampling command takes the same ``--sampling.*`` config with
the same defaults; the old flag names still work for one release (a deprecation line on stderr naming the new
key), from the CLI and from YAML; the world pipelines map their ``--max_new_tokens`` (64) into every stage."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

from saferlhf.cli import COMMANDS, main
from saferlhf.config import ConfigError, from_dict, help_text, leaf_fields, parse, to_dict
from saferlhf.sampling import MAX_NEW_TOKENS, SamplingConfig, require_one_per_prompt
from saferlhf.stages import PIPELINE_BATCH_SIZE, stage_sampling

ROOT = Path(__file__).resolve().parents[2]
SAMPLING_COMMANDS = ("generate", "eval", "best-of-k", "redteam", "rs-finetune", "ppo")
SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingConfig)}


def config_class(command: str):
    c = next(c for c in COMMANDS if c.name == command)
    return getattr(importlib.import_module(c.module), c.config)


@pytest.mark.parametrize("command", SAMPLING_COMMANDS)
def test_every_sampling_command_takes_the_one_sampling_config_with_its_defaults(command):
    cls = config_class(command)
    cfg = cls()
    assert type(cfg.sampling) is SamplingConfig
    assert to_dict(cfg.sampling) == to_dict(SamplingConfig())  # one default per field, not one per command
    assert cfg.sampling.max_new_tokens == MAX_NEW_TOKENS == 128
    assert parse(cls, ["--sampling.max_new_tokens", "7"]).sampling.max_new_tokens == 7


def test_no_command_declares_a_sampling_field_outside_sampling():
    """The seven copies are gone: a sampling field name appears only under ``sampling.`` (the pipelines' one
    ``max_new_tokens`` is mapped into their stages by `stage_sampling`)."""
    for c in COMMANDS:
        if c.module.endswith(("gguf", "serve.app")):  # not policy sampling: GGUF check tokens, the server's request
            continue
        for key, _, _ in leaf_fields(config_class(c.name)):
            if c.name in ("demo", "iterate") and key == "max_new_tokens":
                continue
            head, _, name = key.rpartition(".")
            if head in ("attacker", "judge"):  # an LLM endpoint's own settings, not the policy's sampling
                continue
            if name in SAMPLING_FIELDS - {"n", "batch_size"}:
                assert head.endswith("sampling"), f"{c.name}: {key}"


def test_the_generator_settings_are_the_config():
    from saferlhf.rollout import SamplingSettings

    assert SamplingSettings is SamplingConfig


@pytest.mark.parametrize("command,argv,key,value", [
    ("generate", ["--max_new_tokens", "12"], "max_new_tokens", 12),
    ("generate", ["--n_samples", "2"], "n", 2),
    ("generate", ["--batch_size", "8"], "batch_size", 8),
    ("eval", ["--greedy"], "greedy", True),  # a bare bool flag under its old name
    ("eval", ["--n_samples", "3"], "n", 3),
    ("eval", ["--top_p", "0.9"], "top_p", 0.9),
    ("best-of-k", ["--temperature", "0.7"], "temperature", 0.7),
    ("redteam", ["--samples", "2"], "n", 2),
    ("redteam", ["--max_prompt_length", "64"], "max_prompt_length", 64),
    ("rs-finetune", ["--max_new_tokens", "9"], "max_new_tokens", 9),
    ("ppo", ["--rollout.max_new_tokens", "12"], "max_new_tokens", 12),
    ("ppo", ["--rollout.temperature", "0.5"], "temperature", 0.5),
])
def test_an_old_flag_still_works_with_a_deprecation_line_naming_the_new_key(command, argv, key, value, capsys):
    cfg = parse(config_class(command), argv)
    assert getattr(cfg.sampling, key) == value
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "deprecated" in err[0] and f"--sampling.{key}" in err[0]


def test_old_yaml_keys_move_to_sampling_and_a_clash_is_an_error(tmp_path, capsys):
    ppo = config_class("ppo")
    old = tmp_path / "old.yaml"
    old.write_text("rollout:\n  prompts_per_step: 4\n  max_new_tokens: 12\n")
    cfg = parse(ppo, ["--config", str(old)])
    assert (cfg.rollout.prompts_per_step, cfg.sampling.max_new_tokens) == (4, 12)
    assert "'sampling.max_new_tokens'" in capsys.readouterr().err
    assert from_dict(config_class("eval"), {"n_samples": 2}).sampling.n == 2
    with pytest.raises(ConfigError, match="keep 'sampling.max_new_tokens'"):
        from_dict(ppo, {"rollout": {"max_new_tokens": 12}, "sampling": {"max_new_tokens": 8}})


def test_the_cli_and_help_name_the_new_keys(capsys):
    assert "--rollout.max_new_tokens -> --sampling.max_new_tokens" in "\n".join(help_text(config_class("ppo")))
    assert main(["generate", "--sampling.nope", "1"]) == 2
    assert "sampling.max_new_tokens" in capsys.readouterr().err  # the valid keys are listed


@pytest.mark.parametrize("command", ["ppo", "best-of-k", "rs-finetune"])
def test_commands_that_fix_responses_per_prompt_refuse_sampling_n(command):
    cfg = parse(config_class(command), ["--sampling.n", "2"])
    with pytest.raises(ConfigError, match="sampling.n"):
        require_one_per_prompt(cfg.sampling, command, "--k")


def test_ppo_refuses_sampling_n_before_loading_anything(tmp_path, capsys):
    assert main(["ppo", "--actor_path", "a", "--reward_model_path", "r", "--train_prompts", "p",
                 "--algorithm", "ppo", "--sampling.n", "2", "--out", str(tmp_path / "x")]) == 2
    assert "sampling.n" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_the_pipelines_keep_64_new_tokens_and_map_them_into_every_stage():
    demo, iterate = config_class("demo"), config_class("iterate")
    assert demo().max_new_tokens == iterate().max_new_tokens == 64
    assert parse(demo, ["--config", str(ROOT / "configs" / "demo.yaml")]).max_new_tokens == 64
    assert parse(demo, ["--fast"]).max_new_tokens == 64  # --fast's 24 is applied inside run (fast_config)
    s = stage_sampling(64, n=2)
    assert to_dict(s) == to_dict(SamplingConfig()) | {"max_new_tokens": 64, "n": 2, "batch_size": PIPELINE_BATCH_SIZE}


STAGE_CONFIGS = {"GenerateConfig", "EvalConfig", "PPOConfig", "RedteamConfig"}


@pytest.mark.parametrize("module", ["demo", "iterate"])
def test_every_sampling_stage_of_a_pipeline_gets_stage_sampling(module):
    """Each sampling stage's config is built with ``sampling=stage_sampling(cfg.max_new_tokens, ...)``: the one
    place the pipeline's value goes in, and no stage sets a sampling field by another name."""
    tree = ast.parse((ROOT / "saferlhf" / "pipelines" / f"{module}.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and n.func.attr in STAGE_CONFIGS]
    assert {c.func.attr for c in calls} >= ({"GenerateConfig", "EvalConfig", "PPOConfig"}
                                           | ({"RedteamConfig"} if module == "iterate" else set()))
    for call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        assert not (set(kw) & (SAMPLING_FIELDS | {"n_samples", "samples"})), (module, call.func.attr)
        value = kw["sampling"]
        assert isinstance(value, ast.Call) and value.func.id == "stage_sampling", (module, call.func.attr)
        assert ast.unparse(value.args[0]) == "cfg.max_new_tokens"
