"""The score-model loss over a mix of ranked pairs and single labelled responses, with per-source weights:
against the plain losses, a naive per-example loop, and packed vs padded batches with singles."""

from __future__ import annotations

import math

import pytest
import torch

from saferlhf import packing as S
from saferlhf.losses import cost_loss, mixed_score_loss, reward_loss
from saferlhf.recipes import score_model as R


def _logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_reduces_to_plain_losses_without_singles_and_unit_weights():
    g = torch.Generator().manual_seed(0)
    cs, cu = torch.randn(6, generator=g), torch.randn(6, generator=g)
    safe_s = torch.tensor([True, True, False, True, False, True])
    safe_u = torch.tensor([False, True, False, False, False, True])
    has = torch.tensor([True, True, True, False, True, True])
    ones, empty = torch.ones(6), torch.zeros(0)
    plain, _ = cost_loss(cs, cu, safe_s, safe_u, l2_coef=0.01, has_labels=has)
    mixed, d = mixed_score_loss("cost", cs, cu, ones, empty, torch.zeros(0, dtype=torch.bool), empty, 0.01,
                                chosen_is_safe=safe_s, rejected_is_safe=safe_u, has_labels=has)
    torch.testing.assert_close(mixed, plain)
    assert d["singles"] == 0 and d["pairs"] == 6
    plain, _ = reward_loss(cs, cu, l2_coef=0.01)
    mixed, _ = mixed_score_loss("reward", cs, cu, ones, empty, torch.zeros(0, dtype=torch.bool), empty, 0.01)
    torch.testing.assert_close(mixed, plain)


def test_weighted_mix_matches_a_naive_loop():
    cs, cu = [0.3, -1.2], [0.8, 0.1]
    safe_s, safe_u, has = [True, True], [False, True], [True, False]
    wp = [2.0, 0.5]
    c1, u1, w1 = [1.5, -0.4, 0.2], [True, False, False], [1.0, 3.0, 1.0]
    mu = 0.05
    num = den = 0.0
    for c_s, c_u, s_s, s_u, h, w in zip(cs, cu, safe_s, safe_u, has, wp):
        ell = _logsig(c_u - c_s)
        if h:
            ell += _logsig((-1 if s_s else 1) * c_s) + _logsig((-1 if s_u else 1) * c_u)
        num += w * -ell
        den += w
    for c, u, w in zip(c1, u1, w1):
        num += w * -_logsig((1 if u else -1) * c)
        den += w
    scores = cs + cu + c1
    expected = num / den + mu * sum(x * x for x in scores) / len(scores)
    loss, d = mixed_score_loss("cost", torch.tensor(cs), torch.tensor(cu), torch.tensor(wp), torch.tensor(c1),
                               torch.tensor(u1), torch.tensor(w1), mu, chosen_is_safe=torch.tensor(safe_s),
                               rejected_is_safe=torch.tensor(safe_u), has_labels=torch.tensor(has))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # sign accuracy: labelled pair 0 (c_s 0.3 safe: wrong, c_u 0.8 unsafe: right) + singles (right, right, wrong)
    assert d["sign_accuracy"] == pytest.approx(3 / 5)
    assert d["accuracy"] == pytest.approx(1.0)  # c_u > c_s in both pairs


def test_singles_alone_and_reward_refuses_them():
    loss, d = mixed_score_loss("cost", torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.tensor([2.0]),
                               torch.tensor([True]), torch.tensor([1.0]), 0.0)
    assert float(loss) == pytest.approx(-_logsig(2.0)) and math.isnan(d["accuracy"])
    with pytest.raises(ValueError):
        mixed_score_loss("reward", torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.tensor([2.0]),
                         torch.tensor([True]), torch.tensor([1.0]), 0.0)


def test_pack_pairs_with_singles_layout():
    b = S.pack_pairs([[5, 6, 7]], [[5, 6, 1]], True, singles=[[9, 8], [4]])
    assert b["input_ids"].tolist() == [[5, 6, 7, 1, 9, 8, 4]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 2, 0, 1, 0]]
    assert b["ends"].tolist() == [2, 3, 5, 6]  # chosen, rejected, then each single's last token
    assert b["segments"][-2:] == ((((4, 6),), 0), (((6, 7),), 0))


def test_training_batch_packed_and_padded_scores_and_loss_agree(tmp_path):
    from saferlhf import models as M
    from saferlhf.data.formatting import encode_example

    words = "stir the rice often then serve it warm with salt and a little tea".split()
    texts = [" ".join(words[i % 7:]) + "." for i in range(60)]
    path = M.build_tiny_model(tmp_path / "m", texts, arch="llama", vocab_size=200, hidden_size=32, num_layers=2,
                              num_heads=4, max_position_embeddings=128)
    tok = M.load_tokenizer(path, padding_side="right")
    model = M.ScoreModel.from_pretrained(path, score_type="cost", allow_new_head=True).eval()
    enc = lambda p, r: encode_example(tok, p, r, 48)[0]  # noqa: E731
    rows = [R.Example(S.EncodedPair(enc("serve it?", "the rice"), enc("serve it?", "salt and tea"), True, False), 2.0),
            R.Example(S.EncodedSingle(enc("stir?", "often then serve"), True), 1.0, 1),
            R.Example(S.EncodedSingle(enc("tea?", "warm"), False), 0.5, 1)]
    padded = R.training_batch(rows, False, True, tok.pad_token_id)
    packed = R.training_batch(rows, True, True, tok.pad_token_id)
    with torch.no_grad():
        s_pad = model(padded["input_ids"], padded["attention_mask"]).end_scores
        with S.packed_attention_enabled(model):
            s_pack = S.packed_end_scores(model, packed)
    assert s_pad.shape == (4,)
    torch.testing.assert_close(s_pack, s_pad, atol=1e-5, rtol=1e-5)
    l_pad, _ = R.pair_loss("cost", s_pad, padded, 1e-3)
    l_pack, d = R.pair_loss("cost", s_pack, packed, 1e-3)
    torch.testing.assert_close(l_pack, l_pad, atol=1e-5, rtol=1e-5)
    assert d["pairs"] == 1 and d["singles"] == 2
    assert padded["pair_weight"].tolist() == [2.0] and padded["single_weight"].tolist() == [1.0, 0.5]
