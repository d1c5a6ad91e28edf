"""The pieces of `saferlhf eval`'s report.html: provenance, every table in a box that scrolls sideways, win / tie /
loss counted from the trained policy's side, n per category, real captions, and every policy's answer to the same
prompt side by side with each judge's verdict, identical answers flagged."""

from __future__ import annotations

import re

import pytest

POLICIES = {
    "sft": {"harmful_rate": 0.5, "harmful_rate_ci": [0.4, 0.6], "refusal_rate": 0.1,
            "harmful_rate_by_category": {"Violence": {"rate": 0.5, "ci": [0.2, 0.8], "n": 12},
                                         "Privacy": {"rate": 0.25, "ci": [0.0, 0.5], "n": 8}}},
    "ppo_lag": {"harmful_rate": 0.05, "harmful_rate_ci": [0.0, 0.1], "refusal_rate": 0.2,
                "harmful_rate_by_category": {"Violence": {"rate": 0.0, "ci": [0.0, 0.2], "n": 12},
                                             "Privacy": {"rate": 0.125, "ci": [0.0, 0.4], "n": 7}}}}


def results() -> dict:
    pairs = {"sft__vs__ppo_lag": {
        "a": "sft", "b": "ppo_lag",
        # counted from sft's side (A): sft wins 1, ties 1, loses 3 -> ppo_lag wins 3, ties 1, loses 1
        "helpfulness": {"wins": 1, "ties": 1, "losses": 3},
        "arena": {"A_unsafe__B_safe": {"count": 4, "win_rate_A": 0.75}},
        "win_rate_by_category": {"harmlessness": {"Violence": {"win_rate": 0.2, "n": 12}}}}}
    return {"judges": ["cost_model", "refusal"], "n_samples": 1, "cost_threshold": 0.25,
            "cost_threshold_source": "stored", "cost_threshold_judge": "cost_model",
            "provenance": {"policies": {"sft": "/runs/sft/model", "ppo_lag": "/runs/lag/actor"}, "responses": {},
                           "prompt_sets": ["world:test"], "judge_folders": {"cost_model": "/runs/cost/model"},
                           "device": "cpu", "dtype": "float32",
                           "versions": {"saferlhf": "0.1.0", "torch": "2.13.0", "transformers": "5.24.0"},
                           "config": {"cost_threshold": None, "seed": 7}},
            "prompt_sets": {"mine": {"n_prompts": 2, "judges": ["cost_model", "refusal"], "baseline": "sft",
                                     "policies": POLICIES, "pairwise": {"pairs": pairs}}}}


def rows() -> list[dict]:
    def row(policy, prompt, response, cost, unsafe):
        return {"prompt_set": "mine", "policy": policy, "prompt": prompt, "response": response, "harmful": unsafe,
                "unsafe_by": "cost_model", "unsafe_by_judge": {"cost_model": unsafe},
                "cost_by_judge": {"cost_model": cost}, "cost": cost, "reward": 1.5, "refusal": False}

    return [row("sft", "p one?", "same words", 0.9, True), row("sft", "p two?", "<b>bold</b> claim", 0.1, False),
            row("ppo_lag", "p one?", "same words", 0.9, True), row("ppo_lag", "p two?", "I cannot help.", -2.0, False)]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    from saferlhf.eval.report import write_eval_report

    return write_eval_report(tmp_path_factory.mktemp("report"), results(), rows()).read_text()


def test_provenance_names_folders_d_config_and_versions(page):
    prov = page[page.index("<h2>provenance</h2>"): page.index("<h2>mine")]
    for text in ("/runs/sft/model", "/runs/lag/actor", "cost_model: <code>/runs/cost/model</code>", "world:test",
                 "d = 0.25 (stored in the cost model&#x27;s config.json; judge cost_model)", "cpu / float32",
                 "saferlhf 0.1.0, torch 2.13.0, transformers 5.24.0", "resolved config", "&quot;seed&quot;: 7"):
        assert text in prov, text


def test_every_table_sits_in_a_scrolling_box(page):
    assert ".box{overflow-x:auto" in page
    assert page.count("<table") == page.count("<div class='box'><table")
    assert page.count("<table") >= 5


def test_win_tie_loss_is_counted_from_the_trained_policys_side(page):
    # baseline sft, policy ppo_lag: ppo_lag wins 3, ties 1, loses 1 (sft's record turned round); win rate 3.5 / 5
    assert "against the baseline sft: win / tie / loss from the policy's side" in page
    assert "<td>sft</td><td>ppo_lag</td><td>helpfulness</td><td>3</td><td>1</td><td>1</td><td>0.700</td>" in page
    # the arena too: A = sft unsafe, B = ppo_lag safe, sft's reward win rate 0.75 -> ppo_lag safe, sft unsafe, 0.25
    assert "<td>sft</td><td>ppo_lag</td><td>safe</td><td>unsafe</td><td>4</td><td>0.250</td>" in page
    assert "safe = cost ≤ d = 0.25" in page


def test_n_per_category(page):
    table = page[page.index("harmful rate per category (n = judged responses)"):]
    assert "<td>Privacy</td><td>0.250 [0.000, 0.500] (n=8)</td><td>0.125 [0.000, 0.400] (n=7)</td>" in table
    from saferlhf.eval.report import n_label

    assert n_label([12, 12]) == "n=12" and n_label([8, 7]) == "n=8/7" and n_label([3, None]) == "n=3/-"


def test_figures_have_real_captions_not_file_names(page):
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) >= 3
    assert not [c for c in captions if c.endswith(".png")]
    assert any("95 % bootstrap intervals" in c and "n = judged responses" in c for c in captions)
    assert any("cost &gt; d = 0.25" in c for c in captions)


def test_answers_side_by_side_with_verdicts_and_identical_flag(page):
    samples = page[page.index("every policy's answer to the same prompt"):]
    first, second = samples.split("<h4>")[1:3]
    # prompt 1: both policies said the same words: flagged, each naming the other
    assert "identical answers from every policy" in first
    assert "identical to ppo_lag" in first and "identical to sft" in first
    assert "<th>sft</th><th>ppo_lag</th>" in first and "class='side'" in first
    assert "cost_model: unsafe, cost 0.900" in first and "reward_model: reward 1.500" in first
    # prompt 2: different answers, no flag; each judge's verdict and score under its answer; text escaped
    assert "identical" not in second
    assert "&lt;b&gt;bold&lt;/b&gt; claim" in second and "<b>bold</b>" not in second
    assert "cost_model: safe, cost 0.100" in second and "cost_model: safe, cost -2.000" in second
    assert "refusal: no" in second


def test_demo_style_report_captions_and_box(tmp_path):
    """`write_html_report` (demo, iterate): known figures get their caption, the table its box."""
    from saferlhf.eval.report import plot_lagrange_rows, write_html_report

    png = tmp_path / "lagrange.png"
    assert plot_lagrange_rows([{"step": s, "lagrange/lambda": 1.0 + s, "lagrange/episode_cost": 0.1,
                                "lagrange/threshold": 0.0} for s in (1, 2)], png)
    write_html_report(tmp_path / "r.html", "t", [{"policy": "x", "harmful_rate": 0.5}], [png, (png, "my caption")])
    html = (tmp_path / "r.html").read_text()
    assert "<figcaption>PPO-Lagrangian: the multiplier λ" in html and "<figcaption>my caption</figcaption>" in html
    assert "<div class='box'><table>" in html and "lagrange.png" not in html
