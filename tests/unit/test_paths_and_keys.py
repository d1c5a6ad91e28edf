"""Issue 22 item 3: a mistyped model path is "no such folder" at once (never a minute of hub retries), and an
unknown config key suggests the nearest valid keys instead of dumping all of them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from saferlhf.cli import COMMANDS, main
from saferlhf.config import ConfigError, parse
from saferlhf.models import hf

TYPO = "models/smollm2-135m-instrct"


def config_of(command: str) -> type:
    import importlib

    cmd = next(c for c in COMMANDS if c.name == command)
    return getattr(importlib.import_module(cmd.module), cmd.config)


@pytest.fixture
def online(monkeypatch):
    """The hub looks reachable and online: only the path's shape decides."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "hub_reachable", lambda: True)


# ------------------------------------------------------------------------------------------------ model paths


@pytest.mark.parametrize("text, why", [
    (TYPO, "models/ exists here"),  # one "/" like owner/name, but models/ is a local folder
    ("./smollm2", "local path"), ("/no/such/model", "local path"), ("~/no-such-model-x1", "local path"),
    ("runs/a/model", "local path"), ("C:\\models\\x", "local path"), ("my model", "not a hub name"),
])
def test_a_missing_local_looking_path_is_no_such_folder_even_online(text, why, tmp_path, monkeypatch, online):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    problem = hf.model_path_problem(text)
    assert problem is not None and problem.startswith("no such folder") and why in problem
    with pytest.raises(hf.ModelPathError) as e:
        hf.check_model_path(text, "model_path")
    assert str(e.value).splitlines()[0] == f"model_path: no such folder: {text}"


def test_a_hub_name_is_left_to_transformers_only_when_it_can_be_downloaded(tmp_path, monkeypatch, online):
    monkeypatch.chdir(tmp_path)
    assert hf.model_path_problem("owner/name") is None and hf.model_path_problem("gpt2") is None
    assert hf.model_path_problem(TYPO) is None  # no models/ folder here: it may be a hub name

    monkeypatch.setattr(hf, "hub_reachable", lambda: False)
    assert "is not reachable" in hf.model_path_problem("owner/name")
    monkeypatch.setattr(hf, "hub_reachable", lambda: True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "offline" in hf.model_path_problem("owner/name")

    # a model in the hub cache loads offline: it passes
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "hub" / "models--owner--name" / "snapshots").mkdir(parents=True)
    assert hf.model_path_problem("owner/name") is None
    assert hf.model_path_problem("owner/other") is not None


def test_every_loader_uses_the_shared_check(tmp_path, monkeypatch, online):
    from saferlhf.models import ScoreModel, load_policy, load_tokenizer
    from saferlhf.models.embedding import Embedder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for load in (load_tokenizer, load_policy, ScoreModel.from_pretrained, Embedder):
        with pytest.raises(hf.ModelPathError, match=f"no such folder: {TYPO}"):
            load(TYPO)


def test_hub_reachable_probes_the_endpoint_with_a_short_timeout(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        monkeypatch.setattr(hf, "_HUB_REACHABLE", {})
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
        assert hf.hub_reachable() is True
    finally:
        server.close()
    monkeypatch.setattr(hf, "_HUB_REACHABLE", {})
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")  # closed now
    start = time.perf_counter()
    assert hf.hub_reachable(timeout=0.5) is False and time.perf_counter() - start < 1.5
    monkeypatch.setattr(hf, "_HUB_REACHABLE", {})
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hf.hub_reachable() is True  # behind a proxy a direct probe proves nothing: transformers decides


def test_sft_with_a_mistyped_local_model_path_fails_at_once(tmp_path, sft_file, capsys, monkeypatch):
    import saferlhf.recipes.sft  # noqa: F401  (imported: time the check, not Python's imports)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    start = time.perf_counter()
    rc = main(["sft", "--model_path", TYPO, "--train_file", str(sft_file), "--out", "run"])
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 2 and elapsed < 2.0, (rc, elapsed)
    assert err.splitlines()[0] == f"saferlhf sft: error: model_path: no such folder: {TYPO}"
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_the_saferlhf_command_exits_2_without_a_traceback(tmp_path, sft_file):
    (tmp_path / "models").mkdir()
    env = {**os.environ, "SAFERLHF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "saferlhf", "sft", "--model_path", TYPO, "--train_file",
                           str(sft_file), "--out", "run"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"model_path: no such folder: {TYPO}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------ unknown config keys


@pytest.mark.parametrize("command, key, nearest", [
    ("ppo", "rollout.max_new_token", "'sampling.max_new_tokens'"),  # a typo in another section's key
    ("ppo", "max_new_tokens", "'sampling.max_new_tokens'"),  # a bare last component
    ("ppo", "lagrange.treshold", "'lagrange.threshold'"),
    ("ppo", "sampling.temp", "'sampling.temperature'"),  # the start of a key
    ("ppo", "kl", "'kl_coef'"),
    ("sft", "learning_rate", "'optim.lr'"),  # the words of its help ("peak learning rate")
    ("sft", "runtime.devices", "'runtime.device'"),
    ("sft", "weight_decay", "'optim.weight_decay'"),
])
def test_an_unknown_key_suggests_the_nearest(command, key, nearest):
    with pytest.raises(ConfigError) as e:
        parse(config_of(command), [f"--{key}", "8"])
    text = str(e.value)
    assert text.startswith(f"unknown config key '{key}'; did you mean {nearest}")
    assert "--help" in text and text.count("'") <= 8  # at most 3 suggestions, not the ~80 keys


def test_no_near_key_lists_only_the_named_section_and_points_to_help():
    with pytest.raises(ConfigError) as e:
        parse(config_of("sft"), ["--optim.bogus", "1"])
    assert "the keys of optim: optim.lr, optim.weight_decay" in str(e.value) and "runtime.seed" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse(config_of("sft"), ["--zzzz", "1"])
    assert str(e.value) == "unknown config key 'zzzz' (--help lists every key)"


def test_yaml_keys_are_matched_against_the_whole_config(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("rollout:\n  max_new_token: 8\n")
    with pytest.raises(ConfigError, match=r"'rollout.max_new_token'; did you mean 'sampling.max_new_tokens'\?"):
        parse(config_of("ppo"), ["--config", str(y)])


def test_the_cli_prints_one_line_with_the_suggestion(capsys):
    assert main(["ppo", "--rollout.max_new_token", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("saferlhf ppo: config error: unknown config key 'rollout.max_new_token'; did you mean "
                   "'sampling.max_new_tokens'? (--help lists every key)")
    assert main(["ppo", "--help"]) == 0 and "--sampling.max_new_tokens" in capsys.readouterr().out
