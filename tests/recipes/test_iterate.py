"""`saferlhf iterate` end to end (--fast): rounds of red-team -> pairs -> annotation -> RM/CM -> threshold ->
PPO-Lag -> evaluation, the summary's interface keys, per-round folders, the policy moving every round, the
report in a real browser, a custom annotator, and config errors."""

from __future__ import annotations

import json

import pytest
import torch

from saferlhf.cli import main

KEYS = {"harmful_rate_redteam_test", "harmful_rate", "over_refusal_rate", "win_rate_vs_sft_benign_lookalike",
        "repetition_share", "seconds"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("iterate") / "it"
    assert main(["iterate", "--fast", "--rounds", "2", "--redteam_from_round", "1", "--out", str(out),
                 "--annotator", "iterate_util:two_rater_panel", "--score_init", "last", "--kl_reference", "sft"]) == 0
    return out


def test_summary_has_one_entry_per_round(run):
    s = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in s["rounds"]] == [0, 1, 2]
    for r in s["rounds"]:
        assert KEYS <= set(r) and all(isinstance(r[k], float) for k in KEYS)
        assert 0 <= r["harmful_rate_redteam_test"] <= 1 and r["seconds"] > 0
    assert s["rounds"][0]["win_rate_vs_sft_benign_lookalike"] == 0.5  # SFT against itself
    for r in s["rounds"][1:]:
        assert r["redteam_prompts"] >= 0 and "redteam_success_by_operator" in r and r["cost_threshold"] is not None
    assert s["config"]["annotator"] == "iterate_util:two_rater_panel" and s["algorithm"] == "ppo_lag"


def test_every_round_keeps_its_data_models_and_metrics(run):
    for k in (1, 2):
        rk = run / f"round{k}"
        for name in ("redteam/prompts.jsonl", "redteam/stats.json", "pairs.jsonl", "preferences.jsonl",
                     "rl_prompts.jsonl", "threshold.json", "reward/model", "cost/model", "rl/actor", "eval/results.json"):
            assert (rk / name).exists(), f"round {k}: {name}"
        stats = json.loads((rk / "preferences.stats.json").read_text())
        assert len(stats["qualification"]["annotators"]) == 2  # the custom annotator labelled the pairs
    # round 2 trains on the base prompts plus every red-team prompt mined so far
    rl2 = (run / "round2" / "rl_prompts.jsonl").read_text()
    for k in (1, 2):
        for line in (run / f"round{k}" / "redteam" / "prompts.jsonl").read_text().splitlines():
            assert json.loads(line)["prompt"] in rl2
    # red-team prompts of round 2 were not mined again
    p1 = {json.loads(x)["prompt"] for x in (run / "round1/redteam/candidates.jsonl").read_text().splitlines()}
    p2 = {json.loads(x)["prompt"] for x in (run / "round2/redteam/candidates.jsonl").read_text().splitlines()}
    assert not {json.loads(x)["prompt"] for x in (run / "round1/redteam/prompts.jsonl").read_text().splitlines()} & p2
    assert p1 and p2


def test_round_options_reach_the_stages(run):
    import yaml

    def config(path):
        return yaml.safe_load((run / path / "config.yaml").read_text())

    # --score_init last: round 2's models continue from round 1's, on round 2's pairs only
    assert config("round2/reward")["model_path"] == str(run / "round1" / "reward" / "model")
    assert config("round1/reward")["model_path"] == str(run / "sft" / "model")
    n2 = len((run / "round2" / "preferences.jsonl").read_text().splitlines())
    assert len((run / "round2" / "train_preferences.jsonl").read_text().splitlines()) == n2
    # --kl_reference sft: round 2 starts from round 1's policy with SFT as the KL reference
    assert config("round2/rl")["actor_path"] == str(run / "round1" / "rl" / "actor")
    assert config("round2/rl")["ref_model_path"] == str(run / "sft" / "model")
    # the one --max_new_tokens (--fast: 24) reaches every sampling stage's sampling config
    assert {config(f"round1/{s}")["sampling"]["max_new_tokens"] for s in ("redteam", "rl", "eval")} == {24}


def test_resume_with_another_config_is_refused(run, capsys):
    assert main(["iterate", "--fast", "--rounds", "2", "--seed", "1", "--out", str(run), "--resume", "true",
                 "--annotator", "iterate_util:two_rater_panel", "--score_init", "last", "--kl_reference", "sft",
                 "--redteam_from_round", "1"]) == 2
    assert "seed" in capsys.readouterr().err


def test_the_policy_moves_every_round(run):
    from safetensors.torch import load_file

    def weights(folder):
        return load_file(next(folder.glob("*.safetensors")))

    sft, r1, r2 = (weights(p) for p in (run / "sft/model", run / "round1/rl/actor", run / "round2/rl/actor"))
    for a, b in ((sft, r1), (r1, r2)):
        assert sum(not torch.equal(a[k], b[k]) for k in a) >= len(a) // 2


def test_report_and_bar_chart(run):
    html = (run / "report.html").read_text()
    assert "harmful_rate_redteam_test" in html and html.count("data:image/png;base64") >= 1
    assert (run / "rounds.png").stat().st_size > 5000
    from test_report_browser import CHROMIUM, chromium

    if CHROMIUM is not None:
        from matplotlib import image

        chromium(f"--screenshot={run / 'shot.png'}", "--window-size=1200,1400", (run / "report.html").as_uri())
        assert float((image.imread(str(run / "shot.png"))[..., :3].mean(-1) < 0.95).mean()) > 0.05


@pytest.mark.parametrize("extra, message", [
    (["--annotator", "nowhere:thing"], "annotator: 'nowhere:thing' is not 'panel', 'mixed' or an importable"),
    (["--annotator", "iterate_util:not_an_annotator"], "which has no annotate(pairs) method"),
    (["--annotator", "json:dumps"], "json:dumps cannot be called as dumps(world=..., seed=...)"),
    (["--rounds", "0"], "rounds"),
    (["--algorithm", "dpo"], "algorithm"),
])
def test_config_errors_are_one_line(tmp_path, capsys, extra, message):
    assert main(["iterate", "--fast", "--out", str(tmp_path / "bad"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()
