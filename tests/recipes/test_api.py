"""The Python API (`saferlhf.api`, docs/api.md): the walk-through of docs/api.md run as written on a tiny model
(world data -> SFT -> reward and cost models -> PPO-Lag -> DPO -> evaluate), its result objects checked; configs
given as objects, presets, mappings and dotted keys; the CLI's one-line errors; `import saferlhf` stays light."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import saferlhf
from saferlhf.config import ConfigError
from saferlhf.errors import UserError

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def walkthrough_cells() -> list[str]:
    """The python cells of docs/api.md's walk-through section, in order."""
    section = DOC.read_text().split("## A walk-through on a tiny model", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> dict:
    """Run the documented cells in a fresh folder (their `runs/api/...` paths are relative) and keep their names."""
    import os

    root = tmp_path_factory.mktemp("api")
    cwd = os.getcwd()
    os.chdir(root)
    scope: dict = {}
    try:
        for cell in walkthrough_cells():
            exec(compile(cell, str(DOC), "exec"), scope)
    finally:
        os.chdir(cwd)
    scope["root"] = root
    return scope


def finite(result, *keys: str) -> None:
    for key in keys:
        assert key in result.metrics, f"{result.command}: no {key} in {sorted(result.metrics)[:20]}"
        assert math.isfinite(result.metrics[key]), (key, result.metrics[key])


def test_the_walkthrough_has_every_stage():
    text = "\n".join(walkthrough_cells())
    for call in ("saferlhf.run(", "saferlhf.sft(", "saferlhf.score_model(", "saferlhf.ppo(", "saferlhf.dpo(",
                 "saferlhf.evaluate(", "saferlhf.score("):
        assert call in text, call


def test_training_results_name_their_folders_and_final_metrics(walkthrough):
    root = walkthrough["root"]
    base, sft, rm, cm = (walkthrough[k] for k in ("base", "sft", "rm", "cm"))
    assert base.model_dir == root / "runs/api/base" and (base.model_dir / "config.json").is_file()
    assert sft.command == "sft" and sft.model_dir == root / "runs/api/sft/model"  # absolute: valid from anywhere
    assert (sft.model_dir / "model.safetensors").is_file()
    assert sft.status["state"] == "complete" and sft.config.max_steps == 40 and sft.config.optim.lr == 3e-3
    finite(sft, "train/loss", "train/grad_norm", "train/lr")
    assert sft.metrics["train/loss"] == sft.history()[-2]["train/loss"]  # the last logged value (then the summary row)
    for result, kind in ((rm, "reward"), (cm, "cost")):
        assert result.config.kind == kind and result.config.max_steps == 12  # the shared config object, overridden
        assert json.loads((result.model_dir / "config.json").read_text())["score_type"] == kind
        finite(result, "train/loss", "eval/accuracy")
        assert result.results is not None and result.metrics["eval/accuracy"] == result.results["eval/accuracy"]
    finite(cm, "eval/threshold")
    assert walkthrough["common"].kind == "reward" and walkthrough["common"].out == "runs/score_model"  # not changed


def test_rl_dpo_and_eval_results(walkthrough):
    root = walkthrough["root"]
    lag, sdpo, ev = walkthrough["lag"], walkthrough["sdpo"], walkthrough["ev"]
    assert lag.model_dir == root / "runs/api/ppo_lag/actor" and (lag.model_dir / "config.json").is_file()
    finite(lag, "lagrange/lambda", "lagrange/episode_cost", "cost/mean", "reward/mean", "rollout/kl")
    assert len([r for r in lag.history() if "lagrange/lambda" in r]) == 2 and lag.status["steps"] == 2
    assert sdpo.config.variant == "safedpo" and (sdpo.model_dir / "config.json").is_file()
    finite(sdpo, "eval/accuracy", "train/loss")
    assert ev.model_dir is None and (ev.run_dir / "report.html").is_file()
    for policy in ("sft", "ppo_lag", "safedpo"):
        finite(ev, f"world_test/{policy}/harmful_rate", f"world_test/{policy}/reward_mean",
               f"world_test/{policy}/cost_mean")
    assert ev.results["prompt_sets"]["world_test"]["policies"]["sft"]["harmful_rate"] == \
        ev.metrics["world_test/sft/harmful_rate"]
    assert ev.config.policies == [f"sft={root / 'runs/api/sft/model'}", f"ppo_lag={root / 'runs/api/ppo_lag/actor'}",
                                  f"safedpo={root / 'runs/api/safedpo/model'}"]


def test_score_returns_the_cost_model_score(walkthrough):
    from saferlhf.models import load_judge, score_texts

    cm = walkthrough["cm"].model_dir
    model, tok = load_judge(cm)
    want = score_texts(model, tok, ["How do I pick a lock?"], ["I can't help with that."]).item()
    assert saferlhf.score(cm, "How do I pick a lock?", "I can't help with that.") == pytest.approx(want, abs=1e-6)


def test_configs_merge_like_the_cli(tmp_path):
    from saferlhf.api import build_config

    base = saferlhf.SFTConfig(model_path="m", train_file="t", max_steps=5)
    cfg = build_config("sft", base, out=tmp_path, optim={"lr": 1e-3}, **{"optim.weight_decay": 0.1,
                                                                        "runtime.seed": 7})
    assert (cfg.max_steps, cfg.out, cfg.optim.lr, cfg.optim.weight_decay, cfg.runtime.seed) == (
        5, str(tmp_path), 1e-3, 0.1, 7)
    assert base.out == "runs/sft" and base.optim.lr == 2e-5  # the given object is not changed
    preset = tmp_path / "sft.yaml"
    preset.write_text("max_steps: 9\noptim:\n  lr: 0.01\n")
    assert build_config("sft", preset, batch_size=3).optim.lr == 0.01
    assert build_config("sft", {"max_steps": 2, "optim.lr": 0.5}).optim.lr == 0.5
    ppo = build_config("ppo", **{"rollout.max_new_tokens": 7})  # an old name: renamed as on the command line
    assert ppo.sampling.max_new_tokens == 7
    ev = build_config("eval", policies=["a=x"], prompts=("world:test",))
    assert ev.policies == ["a=x"] and ev.prompts == ["world:test"]
    with pytest.raises(ConfigError, match=r"^sft: config error: unknown config key 'learning_rate'"):
        build_config("sft", learning_rate=1e-3)
    with pytest.raises(ConfigError, match=r"sft: config error: optim.lr: -1.0 is out of range"):
        build_config("sft", **{"optim.lr": -1})
    with pytest.raises(ConfigError, match="must be a SFTConfig, a YAML path or a mapping, not PPOConfig"):
        build_config("sft", saferlhf.PPOConfig())


def test_user_errors_are_the_clis_one_line(tiny_models, sft_file, tmp_path):
    with pytest.raises(UserError, match=r"^sft: model_path: no such folder") as err:
        saferlhf.sft(model_path=tmp_path / "nope", train_file=sft_file, out=tmp_path / "a")
    assert "Traceback" not in str(err.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi"}\n')
    with pytest.raises(UserError, match=r"^sft: .*bad.jsonl"):  # a data error (DataValidationError in the CLI)
        saferlhf.sft(model_path=tiny_models["llama"], train_file=bad, out=tmp_path / "b")
    out = tmp_path / "c"
    assert saferlhf.sft(model_path=tiny_models["llama"], train_file=sft_file, out=out, max_steps=1, batch_size=4,
                        max_length=32).status["state"] == "complete"
    with pytest.raises(UserError, match="already holds a run"):
        saferlhf.sft(model_path=tiny_models["llama"], train_file=sft_file, out=out, max_steps=1)
    with pytest.raises(UserError, match="unknown command 'frobnicate'"):
        saferlhf.run("frobnicate")


def test_a_run_stopped_by_a_non_finite_loss_is_marked_failed(tiny_models, pku_file, tmp_path):
    """NumericalError reaches the caller; the folder says failed, as after the CLI; `overwrite=True` replaces it."""
    from saferlhf.errors import NumericalError

    out = tmp_path / "rm"
    kw = dict(kind="reward", model_path=tiny_models["llama"], train_file=pku_file, out=out, max_steps=3,
              batch_size=8, max_length=48)
    with pytest.raises(NumericalError, match="step [1-3]"):
        saferlhf.score_model(**kw, optim={"lr": 1e30})
    assert json.loads((out / "status.json").read_text())["state"] == "failed"
    result = saferlhf.score_model(**kw, overwrite=True)
    assert result.status["state"] == "complete" and math.isfinite(result.metrics["train/loss"])


def test_import_saferlhf_stays_light():
    code = ("import sys, saferlhf; print('saferlhf.api' in sys.modules, 'torch' in sys.modules); "
            "from saferlhf import sft, score, SFTConfig; print(sft.__module__, 'transformers' in sys.modules); "
            "print(sorted(set(dir(saferlhf)) & {'sft', 'score_model', 'ppo', 'dpo', 'evaluate', 'score'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "False False"
    assert out[1] == "saferlhf.api False"
    assert out[2] == "['dpo', 'evaluate', 'ppo', 'score', 'score_model', 'sft']"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        saferlhf.nothing  # noqa: B018
