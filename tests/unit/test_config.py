"""Config system: defaults < YAML < CLI, unknown keys and wrong types are errors listing valid keys."""

from dataclasses import dataclass
from typing import Literal

import pytest

from saferlhf.config import ConfigError, cfg, help_text, parse, valid_keys


@dataclass
class Inner:
    lr: float = cfg(1e-3, "learning rate")
    sched: Literal["cosine", "constant"] = cfg("cosine", "schedule")


@dataclass
class Outer:
    path: str = cfg("", "input", positional=True)
    steps: int = cfg(10, "steps")
    flag: bool = cfg(False, "a flag")
    maybe: float | None = cfg(None, "optional")
    names: list[str] = cfg(["a"], "names")
    inner: Inner = cfg(Inner(), "nested")


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
