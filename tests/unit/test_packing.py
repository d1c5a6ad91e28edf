"""Padding-free (packed) score-model batches and length-grouped batches.

The packed path must give the padded path's end scores, per-pair losses and gradients (1e-5) on tiny
Llama, Qwen2 and GPT-2 models, fall back when a model does not support it, and train to the same
weights as padded batches in the recipe.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from saferlhf import models as M
from saferlhf import packing as S
from saferlhf.batching import length_grouped_batches
from saferlhf.data.formatting import encode_example
from saferlhf.packing import pack_pairs, shared_prefix_length
from saferlhf.recipes import score_model as R

ARCHS = ["llama", "qwen2", "gpt2"]
SIZE = dict(hidden_size=32, num_layers=2, num_heads=4, max_position_embeddings=128)
WORDS = "stir the rice often then serve it warm with salt and a little tea or soup for the guests".split()
TEXTS = [" ".join(random.Random(i).choices(WORDS, k=12)) + "." for i in range(120)]


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-pack")
    return {arch: M.build_tiny_model(root / arch, TEXTS, arch=arch, vocab_size=300, **SIZE) for arch in ARCHS}


def _pairs(tok, n: int = 6, seed: int = 0) -> list[S.EncodedPair]:
    """Pairs with different prompt and response lengths (one pair of identical responses, one with a
    response that extends the other), safety labels on all but the last pair."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(2, 9))) + "?"
        a = " ".join(rng.choices(WORDS, k=rng.randint(1, 14)))
        b = {0: a, 1: a + " and more"}.get(i, " ".join(rng.choices(WORDS, k=rng.randint(1, 14))))
        labels = (None, None) if i == n - 1 else (bool(i % 2), not i % 2)
        out.append(S.EncodedPair(encode_example(tok, prompt, a, 64)[0], encode_example(tok, prompt, b, 64)[0], *labels))
    return out


def _model(path: Path, kind: str = "cost") -> M.ScoreModel:
    model = M.ScoreModel.from_pretrained(path, score_type=kind, allow_new_head=True)
    for m in model.modules():  # dropout off: both paths must compute the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


# ---------------------------------------------------------------- layout
def test_pack_pairs_layout():
    chosen, rejected = [[5, 6, 7, 8], [9, 9]], [[5, 6, 1], [4]]
    b = pack_pairs(chosen, rejected, share_prefix=True)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 1, 9, 9, 4]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 2, 0, 1, 0]]
    assert b["ends"].tolist() == [3, 6, 4, 7]
    assert b["segments"] == ((((0, 4),), 0), (((0, 2), (4, 5)), 2), (((5, 7),), 0), (((7, 8),), 0))
    flat = pack_pairs(chosen, rejected, share_prefix=False)
    assert flat["input_ids"].tolist() == [[5, 6, 7, 8, 5, 6, 1, 9, 9, 4]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 0, 1, 0]]
    assert flat["ends"].tolist() == [3, 8, 6, 9]
    # every token of every sequence is where its positions say, and the kept outputs cover the row once
    for batch in (b, flat):
        kept = [i for ranges, keep in batch["segments"] for i in [j for s, e in ranges for j in range(s, e)][keep:]]
        assert kept == list(range(batch["input_ids"].shape[1]))
    assert shared_prefix_length([1, 2, 3], [1, 2, 3]) == 2  # each sequence keeps a token of its own
    assert shared_prefix_length([1], [1, 2]) == 0


def test_length_grouped_batches_cover_each_index_once_and_are_deterministic():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(203)]
    a = length_grouped_batches(lengths, 8, random.Random(3), mega_batches=5)
    assert a == length_grouped_batches(lengths, 8, random.Random(3), mega_batches=5)
    assert a != length_grouped_batches(lengths, 8, random.Random(4), mega_batches=5)
    assert sorted(i for b in a for i in b) == list(range(203))
    assert sorted(len(b) for b in a)[1:] == [8] * (len(a) - 1)  # only one short batch
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    order = list(range(203))
    random.Random(3).shuffle(order)
    shuffled = [order[i: i + 8] for i in range(0, 203, 8)]
    assert spread < 0.5 * sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in shuffled) / len(shuffled)


# ---------------------------------------------------------------- same scores, losses, gradients
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("share_prompt", [True, False])
def test_packed_batch_matches_padded_batch(tiny_paths, arch, share_prompt):
    tok = M.load_tokenizer(tiny_paths[arch], padding_side="right")
    pairs = _pairs(tok)
    model = _model(tiny_paths[arch]).train()
    assert S.packing_problem(model, pairs, tok.pad_token_id, share_prompt) is None
    assert model.config._attn_implementation == "sdpa"  # restored after the check

    padded = S.pair_batch(pairs, tok.pad_token_id)
    s_pad = model(padded["input_ids"], padded["attention_mask"]).end_scores
    packed = S.packed_pair_batch(pairs, share_prompt)
    with S.packed_attention_enabled(model):
        s_pack = S.packed_end_scores(model, packed)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(s_pack, s_pad, atol=1e-5, rtol=1e-5)
    for kind in ("reward", "cost"):
        model.zero_grad()
        l_pad, d_pad = R.pair_loss(kind, s_pad, padded, 1e-3)
        l_pack, d_pack = R.pair_loss(kind, s_pack, packed, 1e-3)
        torch.testing.assert_close(l_pack, l_pad, atol=1e-5, rtol=1e-5)
        assert d_pack["accuracy"] == d_pad["accuracy"]
    # gradients of the cost loss (both paths through the whole backbone)
    l_pad.backward(retain_graph=True)
    g_pad = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    l_pack.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_pad[n], atol=1e-5, rtol=1e-4, msg=n)


def test_packed_batch_with_activation_checkpointing(tiny_paths):
    tok = M.load_tokenizer(tiny_paths["llama"], padding_side="right")
    pairs = _pairs(tok, seed=1)
    model = _model(tiny_paths["llama"]).train()
    padded = S.pair_batch(pairs, tok.pad_token_id)
    l_pad, _ = R.pair_loss("cost", model(padded["input_ids"], padded["attention_mask"]).end_scores, padded, 1e-3)
    l_pad.backward()
    g_pad = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    packed = S.packed_pair_batch(pairs)
    with S.packed_attention_enabled(model):
        l_pack, _ = R.pair_loss("cost", S.packed_end_scores(model, packed), packed, 1e-3)
        l_pack.backward()  # recomputation happens here, with the same pieces
    torch.testing.assert_close(l_pack, l_pad, atol=1e-5, rtol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_pad[n], atol=1e-5, rtol=1e-4, msg=n)


# ---------------------------------------------------------------- fallback
def test_packing_problem_reports_unsupported_models(tiny_paths, monkeypatch):
    tok = M.load_tokenizer(tiny_paths["qwen2"], padding_side="right")
    pairs = _pairs(tok)
    model = _model(tiny_paths["qwen2"])
    model.config.use_sliding_window = True
    assert "sliding" in S.packing_problem(model, pairs, tok.pad_token_id)
    model.config.use_sliding_window = False

    def leaky(module, query, key, value, attention_mask, saferlhf_segments=None, **kw):
        """Ignores the pieces: causal attention over the whole row, across sequences."""
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, None, is_causal=True,
                                      dropout=kw.get("dropout", 0.0), scaling=kw.get("scaling"))

    monkeypatch.setattr(S, "packed_attention", leaky)
    assert "differ" in S.packing_problem(model, pairs, tok.pad_token_id)
    assert model.config._attn_implementation == "sdpa" and model.training


def test_packed_attention_refuses_calls_without_pieces(tiny_paths):
    tok = M.load_tokenizer(tiny_paths["llama"], padding_side="right")
    b = S.pair_batch(_pairs(tok), tok.pad_token_id)
    model = _model(tiny_paths["llama"])
    with S.packed_attention_enabled(model), pytest.raises(RuntimeError, match="saferlhf_segments"):
        model(b["input_ids"], b["attention_mask"])


# ---------------------------------------------------------------- recipe: packed run == padded run
def _run(tmp_path: Path, model_path: Path, data: Path, name: str, *extra: str) -> dict:
    from saferlhf.cli import main

    out = tmp_path / name
    assert main(["score-model", "--kind", "cost", "--model_path", str(model_path), "--train_file", str(data),
                 "--out", str(out), "--batch_size", "4", "--max_steps", "3", "--log_every", "1",
                 "--max_length", "64", "--optim.lr", "1e-3", "--eval_ratio", "0.25", "--runtime.progress", "false",
                 "--runtime.threads", "1", *extra]) == 0
    return {"eval": json.loads((out / "eval.json").read_text()),
            "state": M.ScoreModel.from_pretrained(out / "model").state_dict()}


def test_recipe_packed_and_padded_runs_agree(tiny_paths, tmp_path):
    rng = random.Random(5)
    rows = []
    for i in range(24):
        prompt = " ".join(rng.choices(WORDS, k=rng.randint(2, 8))) + "?"
        safe, unsafe = (" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) for _ in range(2))
        rows.append({"prompt": prompt, "response_0": safe, "response_1": unsafe + " poison",
                     "is_response_0_safe": True, "is_response_1_safe": False,
                     "better_response_id": i % 2, "safer_response_id": 0})
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tiny_paths["gpt2"]  # GPT-2 has dropout: the runs differ only if the paths draw it differently
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    nodrop = tmp_path / "gpt2-nodrop"
    nodrop.mkdir()
    for f in path.iterdir():
        (nodrop / f.name).write_bytes(f.read_bytes())
    (nodrop / "config.json").write_text(json.dumps(cfg))

    packed = _run(tmp_path, nodrop, data, "packed")
    padded = _run(tmp_path, nodrop, data, "padded", "--packing", "false", "--group_by_length", "off")
    assert packed["eval"]["train/packed"] is True and padded["eval"]["train/packed"] is False
    for k, v in padded["state"].items():
        torch.testing.assert_close(packed["state"][k], v, atol=2e-5, rtol=1e-4, msg=k)
    assert abs(packed["eval"]["eval/score_chosen_mean"] - padded["eval"]["eval/score_chosen_mean"]) < 1e-4
