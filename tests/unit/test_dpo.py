"""DPO pieces: SafeDPO's loss by hand, the variants' pair selection, and the packed / padded response log-probs
against a naive per-token loop (the first response token and the end token included)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from saferlhf.data.schema import PreferencePair
from saferlhf.data.validate import DataValidationError
from saferlhf.losses import dpo_loss, safedpo_loss
from saferlhf.models import build_tiny_model, load_policy
from saferlhf.packing import (EncodedPair, packed_attention_enabled, packed_dpo_batch, packed_response_logprobs,
                              padded_response_logprobs, response_token_index)
from saferlhf.recipes.dpo import check_pairs, implicit_reward_metrics, needs_labels, safe_filtered, safedpo_order

TEXTS = [f"question {i} about cooking rice and answer {j}" for i in range(20) for j in range(5)]


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_safedpo_loss_by_hand():
    pc, pr = torch.tensor([-3.0, -2.0]), torch.tensor([-4.0, -1.0])
    rc, rr = torch.tensor([-3.5, -2.0]), torch.tensor([-3.0, -1.5])
    unsafe_w, unsafe_l = torch.tensor([False, False]), torch.tensor([True, False])
    beta, delta = 0.5, 2.0
    loss, d = safedpo_loss(pc, pr, rc, rr, unsafe_w, unsafe_l, beta=beta, delta=delta)
    m0 = beta * ((-3.0 + 3.5) - (-4.0 + 3.0))  # 0.75; safe winner over an unsafe loser: offset Δ
    m1 = beta * ((-2.0 + 2.0) - (-1.0 + 1.5))  # -0.25; no offset
    assert loss.item() == pytest.approx(-(math.log(sig(m0 - delta)) + math.log(sig(m1))) / 2, rel=1e-6)
    assert d["offset_share"] == 0.5 and d["accuracy"] == 0.5 and d["margin"] == pytest.approx((m0 + m1) / 2)
    # Δ = 0 is DPO
    assert safedpo_loss(pc, pr, rc, rr, unsafe_w, unsafe_l, beta=beta, delta=0.0)[0].item() == pytest.approx(
        dpo_loss(pc, pr, rc, rr, beta=beta)[0].item(), rel=1e-6)


def test_soft_targets_by_hand_and_hard_at_one():
    """Soft labels (issue 24 §2): -mean[p·log σ(m) + (1 - p)·log σ(-m)]; p = 1 is the hard loss exactly."""
    pc, pr = torch.tensor([-3.0, -2.0]), torch.tensor([-4.0, -1.0])
    rc, rr = torch.tensor([-3.5, -2.0]), torch.tensor([-3.0, -1.5])
    beta = 0.5
    m = [beta * ((-3.0 + 3.5) - (-4.0 + 3.0)), beta * ((-2.0 + 2.0) - (-1.0 + 1.5))]
    p = torch.tensor([0.75, 0.6])
    loss, d = dpo_loss(pc, pr, rc, rr, beta=beta, target=p)
    want = -sum(q * math.log(sig(x)) + (1 - q) * math.log(sig(-x)) for q, x in zip((0.75, 0.6), m)) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6) and d["target_mean"] == pytest.approx(0.675)
    assert torch.equal(dpo_loss(pc, pr, rc, rr, beta=beta, target=torch.ones(2))[0], dpo_loss(pc, pr, rc, rr, beta=beta)[0])
    uw, ul = torch.tensor([False, False]), torch.tensor([True, False])
    loss, _ = safedpo_loss(pc, pr, rc, rr, uw, ul, beta=beta, delta=2.0, target=p)
    shifted = [m[0] - 2.0, m[1]]
    want = -sum(q * math.log(sig(x)) + (1 - q) * math.log(sig(-x)) for q, x in zip((0.75, 0.6), shifted)) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_the_recipe_objective_takes_soft_targets_where_the_batch_has_them():
    from saferlhf.recipes.dpo import VARIANTS, DPOConfig, objective

    policy, ref = torch.tensor([[-3.0, -4.0], [-2.0, -1.0]]), torch.tensor([[-3.5, -3.0], [-2.0, -1.5]])
    hard = [EncodedPair([1], [2], True, True), EncodedPair([3], [4], True, True)]
    soft = [dataclasses.replace(hard[0], target=0.75), hard[1]]  # no target: p = 1
    spec = VARIANTS["dpo"]
    cfg = DPOConfig(beta=0.5)
    assert objective(cfg, spec, policy, ref, hard)[0].item() == pytest.approx(
        dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], 0.5)[0].item())
    assert objective(cfg, spec, policy, ref, soft)[0].item() == pytest.approx(
        dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], 0.5, target=torch.tensor([0.75, 1.0]))[0].item())
    swapped = safedpo_order([dataclasses.replace(_pair("u", "s", False, True), target=0.8)])[0]
    assert swapped.chosen == "s" and swapped.target is None  # the helpfulness share does not survive the swap


def _pair(chosen, rejected, cs, rs, line=1):
    return PreferencePair("p", chosen, rejected, cs, rs, f"f.jsonl:{line}")


def test_variant_pair_selection_and_checks():
    pairs = [_pair("helpful unsafe", "safe", False, True, 1), _pair("a", "b", True, False, 2),
             _pair("c", "d", False, False, 3), _pair("e", "f", True, True, 4)]
    ordered = safedpo_order(pairs)
    assert (ordered[0].chosen, ordered[0].rejected, ordered[0].chosen_is_safe, ordered[0].rejected_is_safe) == (
        "safe", "helpful unsafe", True, False)
    assert ordered[1:] == pairs[1:]  # every other pair keeps its helpfulness order
    assert [p.chosen for p in safe_filtered(pairs)] == ["a", "e"]
    with pytest.raises(DataValidationError, match="f.jsonl:7: chosen_is_safe: variant safedpo needs per-response"):
        needs_labels(pairs + [_pair("x", "y", None, None, 7)], "safedpo")
    with pytest.raises(DataValidationError) as e:
        check_pairs([_pair("same", "same", None, None, 3), _pair("", "y", None, None, 5)])
    assert "f.jsonl:3: rejected: identical to chosen" in str(e.value) and "f.jsonl:5: chosen: empty response" in str(
        e.value)


def test_implicit_reward_metrics():
    pol = torch.tensor([[-1.0, -3.0], [-2.0, -1.0]])
    ref = torch.tensor([[-2.0, -2.0], [-2.0, -2.0]])
    m = implicit_reward_metrics(pol, ref, beta=0.1)
    assert m["eval/accuracy"] == 0.5 and m["eval/margin"] == pytest.approx((0.2 - 0.1) / 2)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def policy(request, tmp_path_factory):
    path = build_tiny_model(tmp_path_factory.mktemp(request.param) / "m", TEXTS, arch=request.param, vocab_size=300,
                            hidden_size=32, num_layers=2, num_heads=2)
    return load_policy(path)


def naive_logprob(model, ids: list[int], n_prompt: int) -> float:
    """Σ over response positions q = n_prompt .. len-1 of log softmax(logits[q - 1])[ids[q]], one sequence alone."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    total = 0.0
    for q in range(n_prompt, len(ids)):
        total += torch.log_softmax(logits[q - 1].double(), -1)[ids[q]].item()
    return total


def test_packed_and_padded_logprobs_equal_a_naive_per_token_loop(policy):
    model, tok = policy
    model.eval()
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt = enc("question 3 about cooking")
    other = enc("question 14 about")
    pairs = [
        EncodedPair(prompt + enc(" rice and answer 2") + [tok.eos_token_id], prompt + enc(" answer 4"), None, None,
                    len(prompt)),
        # the two responses share their first tokens: the shared prefix reaches past the prompt
        EncodedPair(other + enc(" cooking rice and answer 1"), other + enc(" cooking rice") + [tok.eos_token_id],
                    None, None, len(other)),
    ]
    naive = [naive_logprob(model, p.chosen, p.n_prompt) for p in pairs] + [
        naive_logprob(model, p.rejected, p.n_prompt) for p in pairs]
    with torch.no_grad():
        padded = padded_response_logprobs(model, pairs, tok.pad_token_id)
        for share in (True, False):
            with packed_attention_enabled(model):
                packed = packed_response_logprobs(model, packed_dpo_batch(pairs, share))
            torch.testing.assert_close(packed.double(), torch.tensor(naive, dtype=torch.float64), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(padded.double(), torch.tensor(naive, dtype=torch.float64), atol=1e-4, rtol=1e-5)
    # the boundary: the first response token counts (dropping it, as the reference's slicing does, differs)
    dropped = naive_logprob(model, pairs[0].chosen, pairs[0].n_prompt + 1)
    assert abs(dropped - naive[0]) > 1e-3
    # the LM head runs once per response token of every sequence
    idx = response_token_index(pairs)
    assert idx["positions"].numel() == sum(len(p.chosen) + len(p.rejected) - 2 * p.n_prompt for p in pairs)


# --------------------------------------------------------------------------- truncation, dropout, sharding


def test_a_response_cut_at_max_length_gets_no_end_token(policy):
    """DPO scores a cut response as cut: no end token after it (it is not an ended answer); a response that fits
    with its end token is encoded exactly as `encode_example` does; score models keep the end token."""
    from saferlhf.data.formatting import encode_example
    from saferlhf.recipes.dpo import encode_for_dpo

    _, tok = policy
    long, short = "cooking rice and answer 1 " * 8, "answer 2"
    pair = PreferencePair("question 3", long, short, None, None, "f.jsonl:1")
    (e,) = encode_for_dpo([pair], tok, 24, "train", main=True)
    assert len(e.chosen) == 24 and tok.eos_token_id not in e.chosen[e.n_prompt:]
    assert e.chosen[e.n_prompt:] == tok(long, add_special_tokens=False)["input_ids"][: 24 - e.n_prompt]
    assert e.rejected == encode_example(tok, "question 3", short, 24)[0] and e.rejected[-1] == tok.eos_token_id
    # the boundary (a prompt within its half of the budget): a response that fills max_length exactly leaves no
    # room for its end token, so it counts as cut; one more token of budget and it ends
    full = encode_example(tok, "question 3", long, 512)[0]
    assert len(full) >= 2 * e.n_prompt + 1
    assert encode_for_dpo([pair], tok, len(full), "train", main=True)[0].chosen == full
    assert encode_for_dpo([pair], tok, len(full) - 1, "train", main=True)[0].chosen == full[:-1]
    # an answer flagged as cut off at generation gets none either; score-model encoding is unchanged
    from saferlhf.packing import encode_pairs

    flagged = dataclasses.replace(pair, rejected_ended=False)
    assert encode_for_dpo([flagged], tok, 24, "train", main=True)[0].rejected == e.rejected[:-1]
    assert encode_pairs([pair], tok, 24)[0].chosen[-1] == tok.eos_token_id


def test_pairs_identical_after_truncation_are_left_out_and_none_left_is_a_user_error(policy, capsys):
    from saferlhf.errors import UserError
    from saferlhf.recipes.dpo import encode_for_dpo

    _, tok = policy
    same_start = PreferencePair("question 3", "cooking rice and answer 1 " * 4 + "yes", "cooking rice and answer 1 "
                                * 4 + "no", None, None, "f.jsonl:1")
    differ = PreferencePair("question 4", "answer 1", "answer 2", None, None, "f.jsonl:2")
    kept = encode_for_dpo([same_start, differ], tok, 12, "train", main=True)
    assert len(kept) == 1 and kept[0].chosen != kept[0].rejected
    assert "1 of 2 pairs have identical chosen and rejected tokens after truncation to max_length 12" in (
        capsys.readouterr().err)
    with pytest.raises(UserError, match="2 of 2 pairs have identical"):
        encode_for_dpo([same_start, same_start], tok, 12, "train", main=True)
    assert len(encode_for_dpo([same_start, differ], tok, 512, "train", main=True)) == 2


def test_disable_dropout_makes_training_mode_compute_the_eval_function(tmp_path):
    """gpt2 carries dropout 0.1 (residual, embedding, attention): with it off, train mode gives eval mode's
    logits, so the policy's log-probs at step 1 are the reference's."""
    from saferlhf.training import disable_dropout

    path = build_tiny_model(tmp_path / "gpt2", TEXTS, arch="gpt2", vocab_size=300, hidden_size=32, num_layers=2,
                            num_heads=2)
    model, _ = load_policy(path)
    ids = torch.arange(5, 25)[None]
    with torch.no_grad():
        ref = model.eval()(input_ids=ids).logits
        assert not torch.allclose(model.train()(input_ids=ids).logits, ref)  # dropout on: another function
        disable_dropout(model)
        torch.testing.assert_close(model.train()(input_ids=ids).logits, ref, rtol=0, atol=0)
    assert model.config.resid_pdrop == 0.1  # the saved config keeps its rates


class FakeRank:
    """The parts of an `accelerate.Accelerator` `all_logprobs` uses, for one of ``world`` ranks; ``gather``
    returns this rank's rows (the test concatenates the ranks itself)."""

    def __init__(self, rank: int, world: int):
        self.process_index, self.num_processes = rank, world

    def gather(self, t):
        return t


@pytest.mark.parametrize("n,world", [(0, 2), (1, 3), (5, 1), (5, 2), (7, 3), (8, 4)])
def test_rank_blocks_cover_every_row_once_in_order(n, world):
    from saferlhf.recipes.dpo import rank_block

    blocks = [rank_block(n, r, world) for r in range(world)]
    assert len({len(b) for b in blocks}) == 1  # every rank runs the same batches
    assert [i for b in blocks for i in b][:n] == list(range(n))


def test_precomputed_reference_split_across_ranks_equals_one_process(policy):
    from saferlhf.recipes.dpo import all_logprobs, rank_block

    model, tok = policy
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    pairs = [EncodedPair(enc(f"question {i}") + enc(f" answer {i}"), enc(f"question {i}") + enc(" rice"), None,
                         None, len(enc(f"question {i}"))) for i in range(7)]
    for packed in (True, False):
        whole = all_logprobs(model, pairs, packed, tok.pad_token_id, 2, FakeRank(0, 1))
        assert whole.shape == (7, 2) and whole.device.type == "cpu"
        shards = [all_logprobs(model, pairs, packed, tok.pad_token_id, 2, FakeRank(r, 3)) for r in range(3)]
        assert [len(s) for s in shards] == [len(rank_block(7, r, 3)) for r in range(3)]
        torch.testing.assert_close(torch.cat(shards)[:7], whole, atol=1e-5, rtol=1e-5)
