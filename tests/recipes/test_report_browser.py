"""The eval report and `saferlhf report`'s page in a real headless Chromium (the Debian package; `scripts/setup.sh`
installs it): the pages render (the screenshot is not blank), text injected through a response is shown as text,
never run, and a wide metrics table scrolls inside its box instead of widening a 1400 px page."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-file-access-from-files"]
INJECTED = "<script>document.body.setAttribute('data-pwned', '1')</script><img src=x onerror=\"document.title='pwned'\">"


def chromium(*args: str) -> str:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (CI installs the Debian package chromium)")
def test_eval_report_renders_and_escapes_injected_html(tmp_path):
    from matplotlib import image

    from saferlhf.eval.report import write_eval_report

    policies = {"sft": {"harmful_rate": 0.5, "harmful_rate_ci": [0.4, 0.6], "refusal_rate": 0.1,
                        "harmful_rate_by_category": {"Violence": {"rate": 0.5, "ci": [0.4, 0.6], "n": 10}}},
                "ppo_lag": {"harmful_rate": 0.05, "harmful_rate_ci": [0.0, 0.1], "refusal_rate": 0.2,
                            "harmful_rate_by_category": {"Violence": {"rate": 0.05, "ci": [0.0, 0.1], "n": 10}}}}
    elo = {"helpfulness": {"sft": {"elo": 1000.0, "low": 1000.0, "high": 1000.0},
                           "ppo_lag": {"elo": 1040.0, "low": 1020.0, "high": 1060.0}}}
    results = {"judges": ["refusal"], "n_samples": 1, "prompt_sets": {"mine": {
        "n_prompts": 1, "judges": ["refusal"], "policies": policies, "baseline": "sft",
        "pairwise": {"pairs": {"sft__vs__ppo_lag": {
            "helpfulness": {"wins": 1, "ties": 0, "losses": 2},
            "win_rate_by_category": {"harmlessness": {"Violence": {"win_rate": 0.2, "n": 10}}}}}, "elo": elo}}}}
    rows = [{"prompt_set": "mine", "policy": p, "prompt": "say <b>hi</b>", "response": INJECTED, "harmful": True,
             "refusal": False, "reward": r, "cost": c} for p, r, c in (("sft", 0.5, 1.0), ("ppo_lag", 0.7, -1.0))]
    report = write_eval_report(tmp_path, results, rows)
    for png in ("categories_0.png", "category_win_rates_0.png", "elo_0.png", "scatter_0.png", "scores_0.png"):
        assert (tmp_path / png).stat().st_size > 1000, png
    dom = chromium("--dump-dom", report.as_uri())
    body_tag = dom[dom.index("<body"): dom.index(">", dom.index("<body")) + 1]
    assert "data-pwned" not in body_tag and "<title>saferlhf eval</title>" in dom  # the script and handler never ran
    assert "&lt;script&gt;document.body.setAttribute" in dom  # ... and are shown as text
    assert dom.count("<img src=\"data:image/png;base64,") == 5  # every figure inline
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri())
    pixels = image.imread(str(shot))[..., :3]
    non_white = float((pixels.mean(-1) < 0.95).mean())
    assert non_white > 0.02, f"screenshot looks blank ({non_white:.3%} non-white pixels)"


MEASURE = ("<script>document.title = 'width=' + document.documentElement.scrollWidth + ' of '"
           " + document.documentElement.clientWidth</script></body>")


def page_width(page, tmp_path) -> tuple[int, int]:
    """(the page's scroll width, its viewport width) in a 1400 px window: a copy of the page measures itself."""
    probe = tmp_path / f"measure_{page.name}"
    probe.write_text(page.read_text().replace("</body>", MEASURE))
    dom = chromium("--window-size=1400,1000", "--dump-dom", probe.as_uri())
    title = dom[dom.index("<title>width=") + len("<title>width="): dom.index("</title>")]
    scroll, _, view = title.partition(" of ")
    return int(scroll), int(view)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (CI installs the Debian package chromium)")
def test_wide_metrics_table_scrolls_inside_its_box(tmp_path):
    from saferlhf.eval.report import write_eval_report

    metrics = {k: 0.123456 for k in ("harmful_rate", "over_refusal_rate", "refusal_rate", "helpfulness", "reward_mean",
                                     "cost_mean", "violation_rate", "win_rate_vs_a_policy_with_a_long_name",
                                     "harmlessness_win_rate_vs_a_policy_with_a_long_name", "mean_response_words",
                                     "distinct_1", "distinct_2", "pairwise_rouge_l", "embedding_distance",
                                     "embedding_distance_across_prompts")}
    metrics |= {f"{k}_ci": [0.1, 0.2] for k in metrics}
    results = {"judges": ["refusal"], "n_samples": 1, "prompt_sets": {"mine": {
        "n_prompts": 1, "judges": ["refusal"], "baseline": "a_policy_with_a_long_name", "pairwise": {},
        "policies": {"a_policy_with_a_long_name": metrics, "another_policy_with_a_long_name": dict(metrics)}}}}
    rows = [{"prompt_set": "mine", "policy": p, "prompt": "x", "response": "y" * 3000}  # one unbroken 3000-char word
            for p in ("a_policy_with_a_long_name", "another_policy_with_a_long_name")]
    report = write_eval_report(tmp_path, results, rows)
    scroll, view = page_width(report, tmp_path)
    assert scroll <= view, f"the page is {scroll} px wide in a {view} px window"
    unboxed = tmp_path / "unboxed.html"  # the same page without the boxes overflows: the measurement can fail
    unboxed.write_text(report.read_text().replace("overflow-x:auto", "overflow-x:visible"))
    assert page_width(unboxed, tmp_path)[0] > view


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (CI installs the Debian package chromium)")
def test_run_report_page_renders(tmp_path):
    """`saferlhf report RUN` on a PPO-Lag run folder (metrics written by hand as ppo writes them)."""
    from matplotlib import image

    from saferlhf.cli import main

    run = tmp_path / "ppo_lag"
    run.mkdir()
    rows = [{"step": s, "reward/mean": 0.1 * s, "reward/std": 0.5, "cost/mean": 0.4 - 0.1 * s,
             "cost/violation_rate": 0.5 - 0.05 * s, "lagrange/lambda": 1.0 + 0.1 * s,
             "lagrange/episode_cost": 0.4 - 0.1 * s,
             "lagrange/threshold": 0.0, "rollout/kl": 0.01 * s, "rollout/kl_per_token": 0.001 * s,
             "train/actor_loss": -0.01 * s, "train/reward_critic_loss": 1.0 / s} for s in range(1, 7)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.yaml").write_text("algorithm: ppo_lag\nthreshold: 0.0\nout: <script>alert(1)</script>\n")
    (run / "status.json").write_text(json.dumps({"state": "complete", "command": "ppo"}))
    assert main(["report", str(run)]) == 0
    report = run / "report.html"
    dom = chromium("--dump-dom", report.as_uri())
    assert "<title>saferlhf report: ppo_lag (ppo)</title>" in dom
    assert dom.count('<img src="data:image/png;base64,') == len(list((run / "plots").iterdir())) == 6
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom and "<script>alert" not in dom
    scroll, view = page_width(report, tmp_path)
    assert scroll <= view
    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1600", report.as_uri())
    pixels = image.imread(str(shot))[..., :3]
    assert float((pixels.mean(-1) < 0.95).mean()) > 0.02, "screenshot looks blank"
