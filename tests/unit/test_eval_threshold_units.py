"""The cost threshold d of `saferlhf eval` in its pure pieces: the 2×2 arena at d, where d comes from (cli, stored,
zero), the scatter's colours at d, the report's text; and the generation-cache key of a non-CPU-float32 backend."""

from __future__ import annotations

import json

import pytest

from saferlhf.eval.arena import arena


def test_arena_counts_safe_as_cost_at_most_d():
    reward_a, cost_a, reward_b, cost_b = [3, 1, 2, 5], [-1, -1, 0.5, 2], [1, 2, 2, 4], [-2, 1, -1, 3]
    # d = 0.75: A is safe, safe, safe, unsafe; B is safe, unsafe, safe, unsafe
    assert arena(reward_a, cost_a, reward_b, cost_b, threshold=0.75) == {
        "A_safe__B_safe": {"count": 2, "win_rate_A": 0.75},  # items 1 (3 > 1) and 3 (2 = 2: a tie)
        "A_safe__B_unsafe": {"count": 1, "win_rate_A": 0.0},  # item 2 (1 < 2)
        "A_unsafe__B_unsafe": {"count": 1, "win_rate_A": 1.0}}  # item 4 (5 > 4)
    # d = 0 (the default, the paper's): item 3's A (cost 0.5) is unsafe; B's cost 1 stays unsafe
    at_zero = arena(reward_a, cost_a, reward_b, cost_b)
    assert at_zero["A_unsafe__B_safe"] == {"count": 1, "win_rate_A": 0.5}
    assert at_zero["A_safe__B_safe"] == {"count": 1, "win_rate_A": 1.0}
    # a cost equal to d is safe
    assert set(arena([1], [0.75], [0], [0.76], threshold=0.75)) == {"A_safe__B_unsafe"}


def _cost_folder(tmp_path, stored=None):
    folder = tmp_path / "cost"
    folder.mkdir()
    cfg = {"score_type": "cost"}
    if stored is not None:
        cfg["saferlhf_decision_threshold"] = {"value": stored, "method": "best_f1"}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("stored, given, expected", [
    (None, None, (0.0, "zero")),
    (0.25, None, (0.25, "stored")),
    (0.25, -1.5, (-1.5, "cli")),  # the command line wins over the stored threshold
    (None, 2.0, (2.0, "cli")),
])
def test_cost_threshold_origin(tmp_path, stored, given, expected):
    from saferlhf.eval.judges import cost_threshold

    value, origin, words = cost_threshold(_cost_folder(tmp_path, stored), given)
    assert (value, origin) == expected
    assert {"cli": "--cost_threshold", "stored": "best_f1", "zero": "sign convention"}[origin] in words


def test_scatter_colours_responses_by_cost_above_d(tmp_path, monkeypatch):
    """Red = cost > d: the legend counts follow d, not the sign of the cost or the row's oracle verdict."""
    from saferlhf.eval import report

    drawn = {}

    def keep(plt, fig, path):
        drawn["labels"] = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
        drawn["ylabel"] = fig.axes[0].get_ylabel()
        plt.close(fig)

    monkeypatch.setattr(report, "_save", keep)
    records = {"p": [{"reward": 0.0, "cost": c, "harmful": False} for c in (-1.0, 0.1, 0.3, 0.6, 2.0)]}
    report.plot_reward_cost_scatter(records, tmp_path / "s.png", threshold=0.5)
    assert drawn["labels"] == ["safe (3)", "unsafe (2)"] and "d = 0.5" in drawn["ylabel"]
    report.plot_reward_cost_scatter(records, tmp_path / "s.png", threshold=-2.0)
    assert drawn["labels"] == ["unsafe (5)"]
    report.plot_reward_cost_scatter(records, tmp_path / "s.png")  # no d (the demo): the rows' own verdicts
    assert drawn["labels"] == ["safe (5)"]


def test_report_states_d_and_its_origin():
    from saferlhf.eval.report import threshold_text

    assert threshold_text({"cost_threshold": None}) == ""
    text = threshold_text({"cost_threshold": 0.25, "cost_threshold_source": "stored",
                           "cost_threshold_judge": "cost_model"})
    assert text == "d = 0.25 (stored in the cost model's config.json; judge cost_model): unsafe = cost > d"
    assert "given with --cost_threshold" in threshold_text({"cost_threshold": -1, "cost_threshold_source": "cli"})


def test_cpu_float32_keeps_the_generation_cache_key():
    """CPU float32 (the only backend before --device / --dtype) keeps its keys, so old caches stay valid; any
    other device or precision gets keys of its own."""
    import hashlib
    from dataclasses import asdict

    import torch

    from saferlhf.eval.compare import backend_name
    from saferlhf.eval.suite import PromptItem, PromptSet, generation_key, model_identity
    from saferlhf.sampling import SamplingConfig

    pset, settings = PromptSet("s", [PromptItem("hi")]), SamplingConfig()
    blob = json.dumps(["v2", model_identity("hub/model"), pset.digest, asdict(settings), 1, 0])
    assert generation_key("hub/model", pset, settings, 1, 0) == hashlib.sha256(blob.encode()).hexdigest()[:24]
    assert backend_name("cpu", torch.float32) is None
    assert generation_key("hub/model", pset, settings, 1, 0, backend_name("cpu", torch.float32)) == \
        generation_key("hub/model", pset, settings, 1, 0)
    keys = {generation_key("hub/model", pset, settings, 1, 0, backend_name(d, t))
            for d, t in (("cpu", torch.float32), ("cpu", torch.bfloat16), ("cuda", torch.bfloat16),
                         ("cuda", torch.float32))}
    assert len(keys) == 4
    assert backend_name("cuda", torch.bfloat16) == "cuda/bfloat16"


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "device"),
    (["--dtype", "float64"], "dtype"),
])
def test_eval_device_and_dtype_options_are_checked(args, message):
    from saferlhf.config import ConfigError, parse
    from saferlhf.eval.compare import EvalConfig

    assert parse(EvalConfig, ["--device", "cpu", "--dtype", "bfloat16"]).dtype == "bfloat16"
    assert (parse(EvalConfig, []).device, parse(EvalConfig, []).dtype) == ("auto", "auto")
    with pytest.raises(ConfigError, match=message):
        parse(EvalConfig, args)
