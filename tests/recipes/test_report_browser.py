"""The eval report in a real headless Chromium (the Debian package; `scripts/setup.sh` installs it): the page
renders (the screenshot is not blank) and text injected through a response is shown as text, never run."""

from __future__ import annotations

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
