"""Issue 22 item 4: `--runtime.report_to` without its extra is one line before the run folder exists; W&B gets the
project, the run name and the resolved config; `--runtime.device mps` (or cuda) that the machine lacks is one line."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import yaml

from saferlhf.cli import main
from saferlhf.errors import UserError
from saferlhf.tracking import MetricsLogger
from saferlhf.training import RuntimeConfig, make_accelerator, resolve_device


@pytest.fixture
def fake_wandb(monkeypatch):
    """A `wandb` module that records what `init` and `log` receive."""
    mod = types.ModuleType("wandb")
    mod.run, mod.inits, mod.logs = None, [], []

    def init(**kwargs):
        mod.inits.append(kwargs)
        mod.run = types.SimpleNamespace(name=kwargs.get("name"))
        return mod.run

    def log(metrics, step=None):
        mod.logs.append((step, dict(metrics)))

    mod.init, mod.log = init, log
    monkeypatch.setitem(sys.modules, "wandb", mod)
    return mod


def sft_args(tiny_models, sft_file, out, *extra):
    return ["sft", "--model_path", str(tiny_models["llama"]), "--train_file", str(sft_file), "--out", str(out),
            "--batch_size", "4", "--max_steps", "2", "--log_every", "1", "--max_length", "48",
            "--runtime.progress", "false", "--runtime.threads", "1", *extra]


def test_wandb_gets_the_project_the_run_name_and_the_resolved_config(fake_wandb, tiny_models, sft_file, tmp_path):
    out = tmp_path / "smollm-sft-lr3e-4"
    assert main(sft_args(tiny_models, sft_file, out, "--runtime.report_to", "wandb",
                         "--runtime.wandb_project", "safety-lab")) == 0
    (kwargs,) = fake_wandb.inits
    assert kwargs["project"] == "safety-lab" and kwargs["name"] == "smollm-sft-lr3e-4" and kwargs["dir"] == str(out)
    config = kwargs["config"]
    assert config == yaml.safe_load((out / "config.yaml").read_text())  # the resolved config, every field
    assert config["model_path"] == str(tiny_models["llama"]) and config["max_steps"] == 2
    assert config["runtime"]["report_to"] == "wandb" and config["optim"]["lr"] == 2e-5
    steps = [step for step, metrics in fake_wandb.logs if "train/loss" in metrics]
    assert steps == [1, 2]


def test_the_default_project_and_a_config_given_in_code(fake_wandb, tmp_path):
    MetricsLogger(tmp_path / "run-a", report_to="wandb", config=RuntimeConfig())
    assert fake_wandb.inits[-1]["project"] == "saferlhf" and fake_wandb.inits[-1]["name"] == "run-a"
    assert fake_wandb.inits[-1]["config"]["report_to"] == "none"
    fake_wandb.run = None
    MetricsLogger(tmp_path / "run-b", report_to="wandb")  # no config.yaml there: an empty config, default project
    assert fake_wandb.inits[-1]["project"] == "saferlhf" and fake_wandb.inits[-1]["config"] == {}


@pytest.mark.parametrize("sink, module", [("wandb", "wandb"), ("tensorboard", "torch.utils.tensorboard")])
def test_a_missing_extra_is_one_line_before_the_run_folder(sink, module, monkeypatch, tiny_models, sft_file,
                                                          tmp_path, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    out = tmp_path / "run"
    assert main(sft_args(tiny_models, sft_file, out, "--runtime.report_to", sink)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saferlhf sft: error: runtime.report_to {sink}: the {sink} package is not installed (")
    assert f"pip install 'saferlhf[{sink}]'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert not out.exists()  # nothing to --overwrite: the same command runs once the extra is installed


def test_start_run_checks_the_extra_for_commands_without_an_accelerator(monkeypatch, tmp_path):
    from dataclasses import dataclass, field

    from saferlhf.tracking import start_run

    @dataclass
    class Config:
        runtime: RuntimeConfig = field(default_factory=lambda: RuntimeConfig(report_to="wandb"))

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(UserError, match="saferlhf\\[wandb\\]"):
        start_run(tmp_path / "run", Config(), "test")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- runtime.device


def test_mps_is_a_device_choice(monkeypatch):
    from saferlhf.config import ConfigError, parse

    assert parse(RuntimeConfig, ["--device", "mps"]).device == "mps"
    with pytest.raises(ConfigError, match="not one of"):
        parse(RuntimeConfig, ["--device", "tpu"])
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"


@pytest.mark.parametrize("device", ["mps", "cuda"])
def test_a_device_the_machine_lacks_is_one_line(device, monkeypatch, tiny_models, sft_file, tmp_path, capsys):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=f"runtime.device {device}: .* not available on this machine"):
        make_accelerator(RuntimeConfig(device=device))
    out = tmp_path / "run"
    assert main(sft_args(tiny_models, sft_file, out, "--runtime.device", device)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saferlhf sft: error: runtime.device {device}: ") and "Traceback" not in err
    assert not out.exists()
