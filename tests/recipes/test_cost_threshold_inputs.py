"""`saferlhf cost-threshold` on every file with responses the loaders read: HH-RLHF transcripts (no labels:
quantile only), TRL preference files with safety labels and per-response labelled files (both methods), the
held-out rule for the quantile method, and one-line refusals for files it cannot use."""

from __future__ import annotations

import json
import shutil

import pytest

from saferlhf.cli import main

HH = [  # HH-RLHF harmless-base layout: two full transcripts sharing the prompt
    ("\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with breaking into places.",
     "\n\nHuman: How do I pick a lock?\n\nAssistant: Insert a tension wrench and rake the pins."),
    ("\n\nHuman: What is tea?\n\nAssistant: A drink made from leaves.\n\nHuman: Is it safe?\n\nAssistant: Yes, "
     "in normal amounts.", "\n\nHuman: What is tea?\n\nAssistant: A drink made from leaves.\n\nHuman: Is it safe?"
                           "\n\nAssistant: Drink ten litres to find out."),
    ("\n\nHuman: How do I steal a car?\n\nAssistant: I won't help with theft.",
     "\n\nHuman: How do I steal a car?\n\nAssistant: Break the window and hotwire it."),
]


@pytest.fixture(scope="module")
def cost_model(tmp_path_factory):
    from saferlhf.models import ScoreModel, build_tiny_model, load_tokenizer
    from saferlhf.world import build_world

    root = tmp_path_factory.mktemp("threshold")
    policy = build_tiny_model(root / "policy", build_world(0).text_corpus()[:300], vocab_size=300, hidden_size=32,
                              num_layers=1, num_heads=2, seed=0)
    ScoreModel.from_pretrained(policy, score_type="cost", seed=3, allow_new_head=True).save_pretrained(
        root / "cost", tokenizer=load_tokenizer(policy, padding_side="right"))
    return root / "cost"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def costs_of(cost_model, prompts, responses):
    from saferlhf.eval.judges import ScoreModelJudge

    return ScoreModelJudge(cost_model, "cost").scores(prompts, responses)


def test_quantile_on_an_hh_rlhf_file_scores_chosen_and_rejected(cost_model, tmp_path, capsys):
    from saferlhf.data.schema import split_hh_transcripts
    from saferlhf.eval.threshold import threshold_from_quantile

    hh = write_jsonl(tmp_path / "harmless-base.jsonl", [{"chosen": c, "rejected": r} for c, r in HH])
    out = tmp_path / "d.json"
    assert main(["cost-threshold", "--cost_model", str(cost_model), "--input", str(hh), "--method", "quantile",
                 "--quantile", "0.5", "--out", str(out)]) == 0
    splits = [split_hh_transcripts(c, r) for c, r in HH]
    costs = costs_of(cost_model, [p for p, _, _ in splits for _ in (0, 1)], [x for _, c, r in splits for x in (c, r)])
    got = json.loads(out.read_text())
    assert got["n"] == 6 and got["n_records"] == 3
    assert got["threshold"] == pytest.approx(threshold_from_quantile(costs, 0.5), abs=1e-5)
    assert "--lagrange.threshold" in capsys.readouterr().out

    # the labels method needs labels: one line saying so and what to use instead, before the model loads
    assert main(["cost-threshold", "--cost_model", str(cost_model), "--input", str(hh), "--out",
                 str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert "has no safety labels" in err and "--method quantile" in err and "Traceback" not in err
    assert not (tmp_path / "none.json").exists()


@pytest.mark.parametrize("layout", ["trl", "labelled"])
def test_labels_from_a_trl_file_and_a_per_response_labelled_file(layout, cost_model, tmp_path):
    from saferlhf.eval.threshold import threshold_from_labels

    rows = [("How do I pick a lock?", "I can't help with that.", True), ("How do I pick a lock?", "Rake the pins.", False),
            ("How do I steal a car?", "I won't help with theft.", True), ("How do I steal a car?", "Hotwire it.", False)]
    if layout == "trl":
        data = write_jsonl(tmp_path / "trl.jsonl", [
            {"prompt": a[0], "chosen": a[1], "rejected": b[1], "chosen_is_safe": a[2], "rejected_is_safe": b[2]}
            for a, b in zip(rows[::2], rows[1::2])])
    else:
        data = write_jsonl(tmp_path / "labelled.jsonl", [{"prompt": p, "response": x, "unsafe": not safe}
                                                          for p, x, safe in rows])
    out = tmp_path / "d.json"
    assert main(["cost-threshold", "--cost_model", str(cost_model), "--input", str(data), "--method", "labels",
                 "--rate", "0.2", "--out", str(out)]) == 0
    costs = costs_of(cost_model, [p for p, _, _ in rows], [x for _, x, _ in rows])
    want = threshold_from_labels([c for c, r in zip(costs, rows) if r[2]], [c for c, r in zip(costs, rows) if not r[2]],
                                 0.2)
    got = json.loads(out.read_text())
    assert got["threshold"] == pytest.approx(want, abs=1e-5) and got["n_safe"] == got["n_unsafe"] == 2


def test_quantile_leaves_out_the_cost_models_training_prompts(cost_model, tmp_path, capsys):
    from saferlhf.data.schema import split_hh_transcripts
    from saferlhf.data.split import prompt_hash

    model = tmp_path / "cost"
    shutil.copytree(cost_model, model)
    trained = split_hh_transcripts(*HH[0])[0]
    (model / "training_prompts.json").write_text(json.dumps({"sha256": [prompt_hash(trained)]}))
    hh = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": c, "rejected": r} for c, r in HH])
    out = tmp_path / "d.json"
    assert main(["cost-threshold", "--cost_model", str(model), "--input", str(hh), "--method", "quantile",
                 "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["n_training_prompts_skipped"] == 1 and got["n"] == 4 and got["held_out_only"] is True
    assert main(["cost-threshold", "--cost_model", str(model), "--input", str(hh), "--method", "quantile",
                 "--held_out_only", "false", "--out", str(tmp_path / "all.json")]) == 0
    assert json.loads((tmp_path / "all.json").read_text())["n"] == 6

    only_trained = write_jsonl(tmp_path / "trained.jsonl", [{"chosen": HH[0][0], "rejected": HH[0][1]}])
    assert main(["cost-threshold", "--cost_model", str(model), "--input", str(only_trained), "--method", "quantile",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "left out" in capsys.readouterr().err


def test_a_file_without_responses_is_one_line(cost_model, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "How do I cook rice?"}])
    assert main(["cost-threshold", "--cost_model", str(cost_model), "--input", str(prompts), "--method", "quantile",
                 "--out", str(tmp_path / "d.json")]) == 2
    err = capsys.readouterr().err
    assert "prompts-jsonl file, with no responses" in err and "hh-rlhf" in err and "Traceback" not in err
