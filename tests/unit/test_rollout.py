"""Rollout sampling: our KV-cache loop equals HF `generate` (greedy), masks and top-p are exact."""

from __future__ import annotations

import pytest
import torch

from saferlhf.batching import label_positions, position_ids_from_mask, sft_batch
from saferlhf.losses import sft_loss
from saferlhf.models import build_tiny_model, load_policy
from saferlhf.rollout import action_logits, gather_logprobs, labelled_logits, next_token, response_mask_from, sample

TEXTS = [f"question {i} about cooking rice and answer {j}" for i in range(20) for j in range(5)]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def policy(request, tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp(request.param) / "m", TEXTS, arch=request.param, vocab_size=300,
                            hidden_size=32, num_layers=2, num_heads=2)
    return load_policy(path)


def test_response_mask_stops_after_first_eos():
    r = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 2, 2, 2]])
    assert response_mask_from(r, 2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_top_p_keeps_the_nucleus_only():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    picks = next_token(logits, 1.0, 0.75, True)
    assert set(picks.tolist()) == {0, 1}  # 0.5 + 0.3 reaches 0.75; tokens 2, 3 are cut
    share0 = (picks == 0).float().mean().item()
    assert abs(share0 - 0.5 / 0.8) < 0.03
    assert next_token(logits[:1], 1.0, 1.0, False).item() == 0


def test_greedy_loop_matches_hf_generate_with_left_padding(policy):
    model, tok = policy
    prompts = [tok("question 1 about", add_special_tokens=False)["input_ids"],
               tok("question 12 about cooking rice and", add_special_tokens=False)["input_ids"]]
    ids, mask, P, rmask = sample(model, tok, prompts, 10, do_sample=False)
    ref = model.generate(input_ids=ids[:, :P], attention_mask=mask[:, :P], do_sample=False, max_new_tokens=10,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    n = min(ref.shape[1] - P, ids.shape[1] - P)
    ours, theirs = ids[:, P:P + n], ref[:, P:P + n]
    valid = rmask[:, :n].bool()
    assert torch.equal(ours[valid], theirs[valid])


def test_logprobs_do_not_depend_on_padding(policy):
    """Position ids from the mask: a left-padded row scores its tokens like the unpadded row."""
    model, tok = policy
    torch.manual_seed(0)
    prompts = [tok("question 3", add_special_tokens=False)["input_ids"],
               tok("question 4 about cooking rice and answer", add_special_tokens=False)["input_ids"]]
    ids, mask, P, rmask = sample(model, tok, prompts, 6)
    lp = gather_logprobs(action_logits(model, ids, mask, P), ids[:, P:])
    row = ids[0][mask[0].bool()].unsqueeze(0)
    p0 = int(mask[0, :P].sum())
    single = gather_logprobs(action_logits(model, row, torch.ones_like(row), p0), row[:, p0:])
    k = single.shape[1]
    torch.testing.assert_close(lp[0, :k][rmask[0, :k].bool()], single[0][rmask[0, :k].bool()], atol=1e-4, rtol=1e-4)
    assert position_ids_from_mask(mask)[0, P - 1].item() == p0 - 1


def test_action_logits_compute_the_lm_head_on_response_positions_only(policy):
    """`logits_to_keep` = N + 1: same logits as the full forward sliced at P-1 .. P+N-2."""
    model, tok = policy
    torch.manual_seed(1)
    prompts = [tok("question 5", add_special_tokens=False)["input_ids"],
               tok("question 6 about cooking", add_special_tokens=False)["input_ids"]]
    ids, mask, P, _ = sample(model, tok, prompts, 5)
    full = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
    ours = action_logits(model, ids, mask, P)
    assert ours.shape == (2, ids.shape[1] - P, full.shape[-1])
    torch.testing.assert_close(ours, full[:, P - 1: -1], atol=1e-5, rtol=1e-5)
    calls = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: calls.append(o.shape[1]))
    action_logits(model, ids, mask, P)
    hook.remove()
    assert calls == [ids.shape[1] - P + 1]


def test_labelled_logits_give_the_full_forward_loss_with_the_head_on_labelled_positions_only(policy):
    """SFT batches: the LM head runs on the positions that predict a label (the union over rows), and
    sft_loss over them equals the loss of the full forward, value and gradient."""
    model, tok = policy
    examples = [(tok("question 1 about cooking rice", add_special_tokens=False)["input_ids"], 3),
                (tok("question 12 about cooking rice and answer 3", add_special_tokens=False)["input_ids"], 5)]
    b = sft_batch(examples, tok.pad_token_id)
    positions = label_positions(b["labels"])
    B, T = b["input_ids"].shape
    assert positions.tolist() == [[t < T - 1 and b["labels"][r, t + 1].item() != -100 for t in range(T)]
                                  for r in range(B)]
    n = int(positions.sum())
    assert n == sum(len(i) - k for i, k in examples)  # one position per response token (prompt, padding skipped)
    calls = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: calls.append(o.shape[:-1]))
    logits, pos = labelled_logits(model, b)
    hook.remove()
    assert calls == [(n,)] and torch.equal(pos, positions) and logits.shape[0] == n
    loss, d = sft_loss(logits, b["labels"], pos)
    model.zero_grad()
    loss.backward()
    ours = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    full = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    ref, d_ref = sft_loss(full, b["labels"])
    ref.backward()
    theirs = [p.grad for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    assert d["n_tokens"] == d_ref["n_tokens"] == sum(len(i) - n for i, n in examples)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    for g, h in zip(ours, theirs, strict=True):
        torch.testing.assert_close(g, h, atol=1e-5, rtol=1e-4)


def test_hf_generator_is_a_generator_and_batches_prompt_major(policy):
    from saferlhf.data.formatting import encode_prompt
    from saferlhf.rollout import Generator, HFGenerator, SamplingSettings

    model, tok = policy
    prompts = ["how do I cook rice", "tea?", "soup please"]
    gen = HFGenerator(model, tok, SamplingSettings(max_new_tokens=6, greedy=True), batch_size=2)
    assert isinstance(gen, Generator)
    out = gen.generate(prompts, n_samples=2)
    assert [len(x) for x in out] == [2, 2, 2] and all(a == b for a, b in out)  # greedy: both samples agree
    # the same as one greedy `sample` call on the encoded prompts, whatever the batch size
    ids, _, P, rmask = sample(model, tok, [encode_prompt(tok, p, 256) for p in prompts], 6, do_sample=False)
    want = [tok.decode(r[m.bool()], skip_special_tokens=True).strip() for r, m in zip(ids[:, P:], rmask)]
    assert [x[0] for x in out] == want
    s = gen.sample(prompts)
    assert s.responses == want and len(s.ended) == 3 and s.input_ids.shape[1] == s.prompt_length + s.response_mask.shape[1]
