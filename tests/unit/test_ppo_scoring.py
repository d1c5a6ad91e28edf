"""PPO's frozen scorers: a reward / cost model whose tokenizer differs from the policy's sees what the actor saw.

Regression (issue 9, fix 2): the foreign-tokenizer path cut the prompt to (max_prompt_length +
max_new_tokens + 2) // 2 = 193 tokens although the actor saw 256, and appended eos to responses that the
sampler had cut off at max_new_tokens.
"""

from __future__ import annotations

import random

import pytest
import torch

from saferlhf import models as M
from saferlhf.data.formatting import encode_prompt
from saferlhf.recipes import ppo
from saferlhf.rollout import HFGenerator, SamplingSettings

WORDS = "stir the rice often then serve it warm with salt and a little tea or soup for the guests".split()
OTHER = "bake bread slowly until golden brown crust forms and cool it on a rack before slicing".split()
SIZE = dict(hidden_size=32, num_layers=1, num_heads=4, max_position_embeddings=1024)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo-scoring")
    policy = M.build_tiny_model(root / "policy", [" ".join(random.Random(i).choices(WORDS, k=12)) for i in range(80)],
                                vocab_size=300, **SIZE)
    judge = M.build_tiny_model(root / "judge", [" ".join(random.Random(i).choices(OTHER, k=12)) for i in range(80)],
                               vocab_size=280, **SIZE)
    tok = M.load_tokenizer(judge, padding_side="right")
    M.ScoreModel.from_pretrained(judge, score_type="reward", allow_new_head=True).save_pretrained(root / "rm", tok)
    return policy, root / "rm"


def test_foreign_tokenizer_sees_the_actors_prompt_budget_and_no_eos_after_a_cut_response(models):
    policy_path, rm_path = models
    actor, ptok = M.load_policy(policy_path)
    stok = M.load_tokenizer(rm_path, padding_side="right")
    assert stok.get_vocab() != ptok.get_vocab()
    scorer = ppo.FrozenScorer(M.ScoreModel.from_pretrained(rm_path).eval(), stok, same_tokenizer=False)
    long_prompt = " ".join(random.Random(0).choices(WORDS + OTHER, k=400))  # > 256 tokens in both tokenizers
    prompts = [long_prompt, "stir the rice?"]
    torch.manual_seed(0)
    settings = SamplingSettings(max_new_tokens=6, max_prompt_length=256)
    samples = HFGenerator(actor, ptok, settings).sample(prompts)
    samples.ended = [False, True]  # row 0 cut off at max_new_tokens, row 1 finished with eos
    samples.responses = ["serve it warm with salt", "a little tea"]
    seen = []
    forward = scorer.model.forward
    scorer.model.forward = lambda ids, mask: seen.extend(i[m.bool()].tolist() for i, m in zip(ids, mask)) or forward(ids, mask)
    scores = scorer.end_scores(samples, prompts, max_prompt_length=256)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    p0 = encode_prompt(stok, long_prompt, 256)
    assert len(p0) == 256  # the actor's budget, not 193
    r0 = stok("serve it warm with salt", add_special_tokens=False)["input_ids"]
    assert seen[0] == p0 + r0  # cut off: no eos
    p1 = encode_prompt(stok, "stir the rice?", 256)
    assert seen[1] == p1 + stok("a little tea", add_special_tokens=False)["input_ids"] + [stok.eos_token_id]


def test_same_tokenizer_scores_the_actors_own_ids(models):
    policy_path, _ = models
    actor, ptok = M.load_policy(policy_path)
    rm = M.ScoreModel.from_pretrained(policy_path, score_type="reward", allow_new_head=True).eval()
    torch.manual_seed(0)
    samples = HFGenerator(actor, ptok, SamplingSettings(max_new_tokens=5)).sample(["stir the rice?", "tea?"])
    got = ppo.FrozenScorer(rm, ptok, same_tokenizer=True).end_scores(samples, ["stir the rice?", "tea?"], 256)
    with torch.no_grad():
        want = rm(samples.input_ids, samples.attention_mask).end_scores
    torch.testing.assert_close(got, want)
    # the generator's ended flags say which rows produced eos
    eos_rows = ((samples.input_ids[:, samples.prompt_length:] == ptok.eos_token_id)
                & samples.response_mask.bool()).any(-1).tolist()
    assert samples.ended == eos_rows
