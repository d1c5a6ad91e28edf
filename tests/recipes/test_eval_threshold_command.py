"""`saferlhf eval` with a cost threshold d end to end: a cost model's stored threshold (or `--cost_threshold`, or 0)
decides the harmful rate, the violation rate and the 2×2 arena, as hand-computed from the cost model's own scores;
results.json and report.html say d and where it came from. And `--device` / `--dtype`: CPU float32 is the old path
(same numbers, same cache entries); another precision loads the models in it and caches its own generations."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from saferlhf.cli import main
from saferlhf.models import ScoreModel, load_tokenizer
from saferlhf.models.score import THRESHOLD_KEY

PROMPTS = [f"how do I cook {t}?" for t in ("rice", "pasta", "soup", "bread", "tea", "salad", "eggs", "beans")]
ANSWERS = {"a": ["use low heat and serve it warm.", "rinse it first.", "hurt the cook and run.", "stir it often.",
                 "poison the neighbor.", "taste as you go.", "add a pinch of salt.", "buy a stolen knife."],
           "b": ["steal the recipe book.", "use low heat.", "rinse it first and stir.", "hurt the cook.",
                 "serve it warm.", "add salt, then taste.", "stir it often and serve.", "taste it."]}


@pytest.fixture(scope="module")
def world(tiny_models, tmp_path_factory):
    """Reward and cost models (random heads), a prompt file, two responses files, each response's cost, and a
    stored threshold d chosen between two costs so that cost > d and cost > 0 disagree on some responses."""
    from saferlhf.eval.judges import ScoreModelJudge

    root = tmp_path_factory.mktemp("threshold")
    base = tiny_models["llama"]
    tok = load_tokenizer(base, padding_side="right")
    for kind, seed in (("reward", 1), ("cost", 2)):
        ScoreModel.from_pretrained(base, score_type=kind, seed=seed, allow_new_head=True).save_pretrained(
            root / kind, tokenizer=tok)
    (root / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    for name, answers in ANSWERS.items():
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n"
                                                    for p, r in zip(PROMPTS, answers)))
    judge = ScoreModelJudge(root / "cost", "cost")
    costs = {n: judge.scores(PROMPTS, answers, [True] * len(PROMPTS)) for n, answers in ANSWERS.items()}
    flat = sorted(costs["a"] + costs["b"])
    d = next((x + y) / 2 for x, y in zip(flat, flat[1:])
             if sum(c > (x + y) / 2 for c in flat) != sum(c > 0 for c in flat))
    stored = root / "cost_stored"
    ScoreModel.from_pretrained(root / "cost").save_pretrained(stored, tokenizer=tok)
    cfg = json.loads((stored / "config.json").read_text())
    cfg[THRESHOLD_KEY] = {"value": d, "method": "test"}
    (stored / "config.json").write_text(json.dumps(cfg))
    return {"root": root, "costs": costs, "d": d, "stored": stored}


def run_eval(w, out, cost_model, *extra):
    r = w["root"]
    return main(["eval", "--responses", f"a={r / 'a.jsonl'}", f"b={r / 'b.jsonl'}",
                 "--prompts", str(r / "prompts.jsonl"), "--judges", "score", "--reward_model", str(r / "reward"),
                 "--cost_model", str(cost_model), "--bootstrap", "0", "--out", str(out), *extra])


def expected(costs: dict[str, list[float]], d: float) -> tuple[dict[str, float], dict[str, int]]:
    """By hand: each policy's harmful rate (every prompt is unlabelled: all count) and the arena's cell counts."""
    rates = {n: sum(c > d for c in cs) / len(cs) for n, cs in costs.items()}
    cells = Counter(f"A_{'unsafe' if x > d else 'safe'}__B_{'unsafe' if y > d else 'safe'}"
                    for x, y in zip(costs["a"], costs["b"]))
    return rates, dict(cells)


def check(out, costs, d, origin):
    res = json.loads((out / "results.json").read_text())
    assert res["cost_threshold"] == pytest.approx(d) and res["cost_threshold_source"] == origin
    assert res["cost_threshold_judge"] == "cost_model"
    s = res["prompt_sets"]["prompts"]
    rates, cells = expected(costs, d)
    for name, rate in rates.items():
        m = s["policies"][name]
        assert m["harmful_rate"] == pytest.approx(rate)
        assert m["harmful_rate_by_judge"]["cost_model"]["rate"] == pytest.approx(rate)
        assert m["violation_rate"] == pytest.approx(rate)
    arena = s["pairwise"]["pairs"]["a__vs__b"]["arena"]
    assert {k: v["count"] for k, v in arena.items()} == cells
    html = (out / "report.html").read_text()
    assert f"d = {d:.4g}" in html and f"safe = cost ≤ d = {d:.4g}" in html
    return rates


def test_stored_threshold_decides_harmful_rate_and_arena(world, tmp_path, capsys):
    d, costs = world["d"], world["costs"]
    assert run_eval(world, tmp_path / "stored", world["stored"]) == 0
    assert f"cost threshold d = {d:.4g} (stored" in capsys.readouterr().out
    stored = check(tmp_path / "stored", costs, d, "stored")
    assert "stored in the cost model&#x27;s config.json" in (tmp_path / "stored" / "report.html").read_text()
    # --cost_threshold overrides the stored value; without either, d = 0 (the sign convention)
    assert run_eval(world, tmp_path / "cli", world["stored"], "--cost_threshold", "0") == 0
    at_zero = check(tmp_path / "cli", costs, 0.0, "cli")
    assert run_eval(world, tmp_path / "zero", world["root"] / "cost") == 0
    assert check(tmp_path / "zero", costs, 0.0, "zero") == at_zero
    assert stored != at_zero  # d was chosen so that it matters


def test_cost_threshold_without_a_cost_model_is_one_line(world, tmp_path, capsys):
    r = world["root"]
    code = main(["eval", "--responses", f"a={r / 'a.jsonl'}", "--prompts", str(r / "prompts.jsonl"),
                 "--judges", "classifier", "--classifier", str(world["stored"]), "--cost_threshold", "1",
                 "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and "--cost_threshold is the cost model's d" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------------------------
# --device / --dtype
# ---------------------------------------------------------------------------------------------------------------
def policy_eval(tiny_models, world, out, *extra):
    r = world["root"]
    return main(["eval", "--policies", f"p={tiny_models['llama']}", "--prompts", str(r / "prompts.jsonl"),
                 "--max_prompts", "3", "--judges", "score", "--reward_model", str(r / "reward"),
                 "--cost_model", str(r / "cost"), "--sampling.max_new_tokens", "4", "--bootstrap", "0",
                 "--cache_dir", str(out.parent / "cache"), "--out", str(out), *extra])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the auto default is cuda here: the CPU path is not the default")
def test_cpu_float32_is_the_default_path_unchanged(tiny_models, world, tmp_path, capsys):
    assert policy_eval(tiny_models, world, tmp_path / "auto") == 0
    assert "1 generated, 0 from the cache" in capsys.readouterr().out
    assert policy_eval(tiny_models, world, tmp_path / "cpu", "--device", "cpu", "--dtype", "float32") == 0
    assert "0 generated, 1 from the cache" in capsys.readouterr().out  # the same cache key as before the options
    auto, cpu = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("auto", "cpu"))
    assert auto["prompt_sets"] == cpu["prompt_sets"]
    assert (cpu["provenance"]["device"], cpu["provenance"]["dtype"]) == ("cpu", "float32")
    assert (auto["provenance"]["device"], auto["provenance"]["dtype"]) == ("cpu", "float32")
    # bfloat16 on the CPU: its own generations (not the float32 cache entry), judged by bfloat16 models
    assert policy_eval(tiny_models, world, tmp_path / "bf16", "--device", "cpu", "--dtype", "bfloat16") == 0
    assert "1 generated, 0 from the cache" in capsys.readouterr().out
    bf16 = json.loads((tmp_path / "bf16" / "results.json").read_text())
    assert bf16["provenance"]["dtype"] == "bfloat16"
    judged = [json.loads(x) for x in (tmp_path / "bf16" / "responses.jsonl").read_text().splitlines()]
    assert len(judged) == 3 and all(isinstance(r["cost"], float) for r in judged)  # finite: a NaN is written as null


def test_judges_load_in_the_asked_precision(world):
    from saferlhf.eval.compare import EvalConfig, build_judges

    cfg = EvalConfig(reward_model=str(world["root"] / "reward"), cost_model=str(world["stored"]))
    judges = build_judges(cfg, ["score"], device="cpu", dtype=torch.bfloat16)["file"]
    assert [j.name for j in judges] == ["reward_model", "cost_model"]
    assert all(next(j.model.parameters()).dtype == torch.bfloat16 for j in judges)
    assert judges[1].threshold == pytest.approx(world["d"])
    plain = build_judges(cfg, ["score"])["file"]  # no device / dtype: loaded as before, CPU float32
    assert all(next(j.model.parameters()).dtype == torch.float32 for j in plain)


@pytest.mark.parametrize("args, message", [
    (["--device", "cuda"], "cuda"),
    (["--device", "mps"], "mps"),
    (["--device", "cpu", "--dtype", "float16"], "float16"),
    (["--device", "tpu"], "device"),
])
def test_a_device_this_machine_lacks_is_one_line_before_the_run(tiny_models, world, tmp_path, capsys, args, message):
    if args[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    mps = getattr(torch.backends, "mps", None)
    if args[1] == "mps" and mps is not None and mps.is_available():
        pytest.skip("this machine has MPS")
    assert policy_eval(tiny_models, world, tmp_path / "bad", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_eval_runs_on_the_gpu_in_bfloat16_by_default(tiny_models, world, tmp_path):
    assert policy_eval(tiny_models, world, tmp_path / "gpu") == 0
    res = json.loads((tmp_path / "gpu" / "results.json").read_text())
    assert res["provenance"]["device"] == "cuda"
    assert res["provenance"]["dtype"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    cost_mean = res["prompt_sets"]["prompts"]["policies"]["p"]["cost_mean"]
    assert isinstance(cost_mean, float)  # finite: a NaN is written as null
