"""Reports survive any policy name (``__vs__`` inside it, matplotlib mathtext ``$...$``, a lone ``$``) and put
user text into HTML escaped, run folder names included (issue 20)."""

from __future__ import annotations

from saferlhf.eval.suite import PromptItem, baseline_win_rates, pairwise_metrics, policy_metrics

NAMES = ["a__vs__b", "$\\frac{x$", "cost $5"]


def _results():
    items = [PromptItem(f"p{k}", label="unsafe", category="Violence" if k % 2 else "$Crime$") for k in range(6)]
    records = {n: [{"prompt": i.text, "category": i.category, "response": f"r{j}{k}", "harmful": (j + k) % 2 == 0,
                    "helpfulness": (j * 3 + k) % 4 / 4, "reward": float(j + k), "cost": float(k - j),
                    "unsafe_by": "oracle"} for k, i in enumerate(items)] for j, n in enumerate(NAMES)}
    metrics = {n: policy_metrics(items, rs, 1, bootstrap=20) for n, rs in records.items()}
    for n, extra in baseline_win_rates(records, NAMES[0], bootstrap=20).items():
        metrics[n] |= extra
    sets = {"world_$test": {"n_prompts": 6, "judges": ["oracle"], "baseline": NAMES[0], "policies": metrics,
                            "pairwise": pairwise_metrics(records, bootstrap=20)}}
    rows = [{"prompt_set": "world_$test", "policy": n, **r} for n, rs in records.items() for r in rs]
    return {"judges": ["oracle"], "n_samples": 1, "prompt_sets": sets}, rows


def test_eval_report_with_hostile_policy_names(tmp_path):
    from saferlhf.eval.report import pair_names, write_eval_report

    results, rows = _results()
    pairs = results["prompt_sets"]["world_$test"]["pairwise"]["pairs"]
    assert sorted(pair_names(k, v) for k, v in pairs.items()) == sorted(
        [(NAMES[0], NAMES[1]), (NAMES[0], NAMES[2]), (NAMES[1], NAMES[2])])
    html = write_eval_report(tmp_path, results, rows).read_text()
    assert "a__vs__b" in html and "cost $5" in html
    for png in ("categories_0.png", "category_win_rates_0.png", "elo_0.png", "scores_0.png"):
        assert (tmp_path / png).stat().st_size > 0
    assert "<td>a__vs__b</td><td>$\\frac{x$</td>" in html  # the win / tie / loss table names both sides whole


def test_iterate_report_escapes_the_run_folder(tmp_path):
    from saferlhf.pipelines.iterate import IterateConfig, _report

    hostile = "runs/<img src=x onerror=alert(1)>"
    cfg = IterateConfig(out=hostile, rounds=1)
    _report(tmp_path, cfg, {"rounds": [{"round": 0, "harmful_rate": 0.5}], "seconds": 1.0,
                            "config": {"out": hostile}})
    html = (tmp_path / "report.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_elo_plot_with_an_interval_that_misses_the_point(tmp_path):
    """A bootstrap interval need not contain the point estimate (float rounding, skewed resamples): the plot
    draws a zero-length bar instead of failing the whole eval."""
    from saferlhf.eval.report import plot_elo

    elo = {"helpfulness": {"a": {"elo": 2041.2577, "low": 2030.0, "high": 2041.2495},
                           "b": {"elo": 1958.7, "low": 1960.1, "high": 1970.0}}}
    assert plot_elo("set", elo, tmp_path / "elo.png")
    assert (tmp_path / "elo.png").stat().st_size > 1000
