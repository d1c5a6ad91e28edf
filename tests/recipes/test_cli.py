"""Every CLI command: --help documents every config field; each runs end to end on tiny models."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM

from saferlhf.cli import COMMANDS, main
from saferlhf.config import valid_keys


def test_top_level_help_lists_commands():
    res = subprocess.run([sys.executable, "-m", "saferlhf", "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    for c in COMMANDS:
        assert c.name in res.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_command_help_documents_every_field(command, capsys):
    assert main([*command.name.split(), "--help"]) == 0
    text = capsys.readouterr().out
    import importlib

    cls = getattr(importlib.import_module(command.module), command.config)
    missing = [k for k in valid_keys(cls) if f"--{k} " not in text]
    assert not missing
    assert "(default:" in text


def test_help_shows_the_defaults_a_recipe_sets_for_nested_configs(capsys):
    """ppo's optimisers are OptimConfig instances with their own values: --help shows those, not OptimConfig's."""
    assert main(["ppo", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--actor_optim.lr float (default: 1e-05" in text and "--actor_optim.weight_decay float (default: 0.01" in text
    assert "--critic_optim.lr float (default: 5e-06" in text and '--critic_optim.scheduler' in text
    assert '(default: "constant")' in text.split("--critic_optim.scheduler")[1].splitlines()[0]
    assert main(["sft", "--help"]) == 0
    assert "--optim.weight_decay float (default: 0.0" in capsys.readouterr().out


@pytest.mark.parametrize("group", ["data", "world", "model"])
def test_a_command_group_has_help(group, capsys):
    assert main([group, "--help"]) == 0
    out = capsys.readouterr().out
    assert all(c.name in out for c in COMMANDS if c.name.split()[0] == group)


def test_unknown_key_and_unknown_command(capsys):
    assert main(["sft", "--learning_rate", "1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'learning_rate'" in err and "optim.lr" in err
    assert main(["frobnicate"]) == 2


def test_tiny_model_command(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"prompt": f"question {i}", "response": f"answer number {i}"}) + "\n"
                              for i in range(50)))
    assert main(["tiny-model", "--out", str(tmp_path / "m"), "--corpus", str(corpus), "--arch", "qwen2",
                 "--vocab_size", "300", "--hidden_size", "32", "--num_heads", "2"]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert model.config.model_type == "qwen2" and model.config.hidden_size == 32


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("worldmodel")
    assert main(["tiny-model", "--out", str(root / "m"), "--vocab_size", "600", "--hidden_size", "32",
                 "--num_heads", "2"]) == 0
    return root / "m"


def test_world_generate_annotate_check_evaluate(world_model, tmp_path, capsys):
    """world prompts/corpus -> generate pairs -> world annotate -> data check -> evaluate."""
    w = tmp_path / "w"
    assert main(["world", "prompts", "--out", str(w / "p.jsonl"), "--split", "test"]) == 0
    assert main(["world", "corpus", "--out", str(w / "c.jsonl"), "--n", "50"]) == 0
    assert main(["data", "check", str(w / "c.jsonl")]) == 0
    assert main(["data", "check", str(w / "p.jsonl")]) == 0
    assert main(["generate", "--model_path", str(world_model), "--prompts", str(w / "p.jsonl"), "--sampling.n", "2",
                 "--max_prompts", "12", "--sampling.max_new_tokens", "12", "--out", str(w / "pairs.jsonl")]) == 0
    pairs = [json.loads(x) for x in (w / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 12 and set(pairs[0]) == {"prompt", "response_0", "response_1", "ended_0", "ended_1"}
    # --pairs is the annotation name of --sampling.n 2; with another n it is one clear line
    assert main(["generate", "--model_path", str(world_model), "--prompts", str(w / "p.jsonl"), "--pairs",
                 "--max_prompts", "3", "--sampling.max_new_tokens", "4", "--out", str(w / "pairs2.jsonl")]) == 0
    assert all(set(json.loads(x)) >= {"response_0", "response_1"} for x in (w / "pairs2.jsonl").read_text().splitlines())
    capsys.readouterr()
    assert main(["generate", "--model_path", str(world_model), "--prompts", str(w / "p.jsonl"), "--pairs",
                 "--sampling.n", "3", "--out", str(w / "pairs3.jsonl")]) == 2
    assert "pairs: --pairs writes two responses per prompt" in capsys.readouterr().err
    assert main(["world", "annotate", "--input", str(w / "pairs.jsonl"), "--out", str(w / "prefs.jsonl")]) == 0
    capsys.readouterr()
    rc = main(["data", "check", str(w / "prefs.jsonl")])
    assert "pku-saferlhf" in capsys.readouterr().out
    assert rc in (0, 1)  # a random tiny model may emit empty responses: reported, never silently kept
    # `evaluate` is the old name of `eval` (same options, same outputs)
    assert main(["evaluate", "--policies", f"a={world_model},b={world_model}", "--baseline", "b",
                 "--max_prompts", "16", "--sampling.max_new_tokens", "8", "--out", str(tmp_path / "ev")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["judges"] == ["oracle", "refusal"]  # the judges that apply without score models
    for name in ("a", "b"):
        m = res["prompt_sets"]["world_test"]["policies"][name]
        assert {"harmful_rate", "helpfulness", "over_refusal_rate", "win_rate_vs_b"} <= set(m)
    assert res["prompt_sets"]["world_test"]["policies"]["b"]["win_rate_vs_b"] == 0.5
    assert (tmp_path / "ev" / "report.html").exists()


def test_demo_fast_end_to_end(tmp_path):
    out = tmp_path / "demo"
    preset = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    assert main(["demo", "--config", str(preset), "--fast", "--rl.steps", "2", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["rl"]["steps"] == 2 and s["config"]["sft"]["examples"] == 600  # CLI > preset; --fast
    assert set(s["policies"]) == {"sft", "ppo_lag", "ppo", "shaping_1"}
    for m in s["policies"].values():
        assert {"harmful_rate", "helpfulness", "over_refusal_rate", "win_rate_vs_sft"} <= set(m)
    assert s["seconds"] > 0 and s["config"]["fast"] is True
    assert s["policies"]["ppo_lag"]["final_lambda"] is not None
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 4
    for png in ("policies.png", "lagrange.png", "training_curves.png", "reward_cost_scatter.png"):
        assert (out / png).stat().st_size > 1000
    from test_report_browser import CHROMIUM, chromium  # tests/recipes is on sys.path (pytest prepend mode)

    if CHROMIUM is not None:  # the demo's report in a real browser: not blank
        from matplotlib import image

        chromium(f"--screenshot={out / 'shot.png'}", "--window-size=1200,1600", (out / "report.html").as_uri())
        assert float((image.imread(str(out / "shot.png"))[..., :3].mean(-1) < 0.95).mean()) > 0.05


def test_help_piped_into_a_reader_that_stops_early_is_quiet():
    """`saferlhf eval --help | head -2`: no BrokenPipeError traceback, SIGPIPE's status."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "saferlhf", "eval", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the help is written: every write hits a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait() in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err
