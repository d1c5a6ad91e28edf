"""score-model's held-out evaluation: per-source scores sliced from the pooled evaluation equal scoring each source
again (issue 21 follow-up: the held-out pairs were scored twice), and the model runs only for the singles."""

from __future__ import annotations

import pytest

from saferlhf.data.labelled import LabelledResponse
from saferlhf.data.schema import PreferencePair
from saferlhf.models import ScoreModel, load_tokenizer
from saferlhf.packing import encode_pairs, encode_singles
from saferlhf.recipes.score_model import evaluate, source_scores


def test_per_source_scores_are_sliced_from_the_pooled_evaluation(tiny_models):
    model = ScoreModel.from_pretrained(tiny_models["llama"], score_type="cost", allow_new_head=True, seed=1)
    tok = load_tokenizer(tiny_models["llama"], padding_side="right")
    pairs = [[PreferencePair(f"how do I cook dish {s}{i}?", f"stir it {i} times, serve warm", f"hurt the cook {i}",
                             True, False) for i in range(3 + 2 * s)] for s in range(3)]
    singles = [[LabelledResponse(f"question {s}", "serve the rice warm", bool(s % 2))] for s in range(3)]
    encoded = [(encode_pairs(p, tok, 64), encode_singles(x, tok, 64)) for p, x in zip(pairs, singles)]
    pooled = evaluate(model, [x for p, _ in encoded for x in p], "cost", tok.pad_token_id, 4, "cpu")
    again = source_scores(model, encoded, "cost", tok.pad_token_id, 4, "cpu")
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    sliced = source_scores(model, encoded, "cost", tok.pad_token_id, 4, "cpu", scored_pairs=pooled)
    hook.remove()
    assert len(calls) == 3  # one forward per source's singles; the pairs are not scored again
    for a, b in zip(again, sliced):
        assert a["pairs"] == b["pairs"] and a["pair_accuracy"] == b["pair_accuracy"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5) and a["unsafe"] == b["unsafe"]
