"""Padding-free pair batches and per-sequence attention: score models (end scores) and DPO (summed response
log-probs, `packed_response_logprobs`).

A batch of B (chosen, rejected) pairs becomes ONE row of tokens with no padding (`pack_pairs`): position
ids restart at 0 for every sequence, the prefix both sequences share (the prompt) is computed once, and
attention is restricted to each sequence by a registered transformers attention function
(`packed_attention`: one causal SDPA call per sequence). `packing_problem` checks, on a model and a few
pairs, that packed batches give the scores of padded ones, so that callers can fall back to padded,
length-grouped batches (`pair_batch`) where they do not.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import torch

from saferlhf.batching import pad
from saferlhf.data.formatting import encode_example, end_token_id


@dataclass
class EncodedPair:
    chosen: list[int]
    rejected: list[int]
    chosen_is_safe: bool | None
    rejected_is_safe: bool | None
    n_prompt: int = 0  # prompt tokens, the same for both (one prompt, one budget): response tokens follow
    # soft targets (`PreferencePair.target`, ``*_safe_conf``; None = hard labels): score models' soft losses
    target: float | None = None
    chosen_conf: float | None = None
    rejected_conf: float | None = None


@dataclass
class EncodedSingle:
    """One response with a per-response safety label (a cost model's classification example)."""

    ids: list[int]
    unsafe: bool
    n_prompt: int = 0


def encode_singles(records, tokenizer, max_length: int) -> list[EncodedSingle]:
    """Token ids of labelled responses (``prompt``, ``response``, ``unsafe``; ``ended`` when the record has it),
    encoded as score models read them (`encode_example`)."""
    out = []
    for r in records:
        ids, n_prompt = encode_example(tokenizer, r.prompt, r.response, max_length, ended=getattr(r, "ended", True))
        out.append(EncodedSingle(ids, bool(r.unsafe), n_prompt))
    return out


def encode_pairs(pairs, tokenizer, max_length: int, end_after_cut: bool = True) -> list[EncodedPair]:
    """Token ids of each pair's two sequences; a response cut off at the generation limit
    (``chosen_ended`` / ``rejected_ended`` False) gets no end token, as the policy's own answer had none.
    ``end_after_cut``: a response cut at ``max_length`` here still finishes with the end token (score models
    read their score there); False for log-probs (DPO): it did not end, so it gets none (`encode_unless_cut`)."""
    encode = encode_example if end_after_cut else encode_unless_cut
    out = []
    for p in pairs:
        chosen, n_prompt = encode(tokenizer, p.prompt, p.chosen, max_length, ended=getattr(p, "chosen_ended", True))
        rejected = encode(tokenizer, p.prompt, p.rejected, max_length, ended=getattr(p, "rejected_ended", True))
        out.append(EncodedPair(chosen, rejected[0], p.chosen_is_safe, p.rejected_is_safe, n_prompt,
                               getattr(p, "target", None), getattr(p, "chosen_safe_conf", None),
                               getattr(p, "rejected_safe_conf", None)))
    return out


def encode_unless_cut(tokenizer, prompt: str, response: str, max_length: int,
                      ended: bool = True) -> tuple[list[int], int]:
    """`encode_example` for log-probs: the end token only when the response ``ended`` and all of it plus the end
    token fit ``max_length``; a response cut here keeps ``max_length - n_prompt`` tokens and no end token (it
    is not an ended answer)."""
    ids, n_prompt = encode_example(tokenizer, prompt, response, max_length, ended=False)
    whole = len(ids) - n_prompt == len(tokenizer(response, add_special_tokens=False)["input_ids"])
    return (ids + [end_token_id(tokenizer)] if ended and whole and len(ids) < max_length else ids), n_prompt


def pair_batch(pairs: list[EncodedPair], pad_id: int, singles: Sequence[EncodedSingle] = ()) -> dict[str, torch.Tensor]:
    """One right-padded [2B + S, T] batch: rows 0..B-1 chosen, B..2B-1 rejected, then the S ``singles``, plus
    safety labels (``single_unsafe`` [S] for the singles)."""
    ids, mask = pad([p.chosen for p in pairs] + [p.rejected for p in pairs] + [s.ids for s in singles], pad_id)
    return {"input_ids": ids, "attention_mask": mask} | pair_labels(pairs) | single_labels(singles)


def single_labels(singles: Sequence[EncodedSingle]) -> dict[str, torch.Tensor]:
    return {"single_unsafe": torch.tensor([s.unsafe for s in singles], dtype=torch.bool)}


def pair_labels(pairs: list[EncodedPair]) -> dict[str, torch.Tensor]:
    has = [p.chosen_is_safe is not None and p.rejected_is_safe is not None for p in pairs]
    return {"has_labels": torch.tensor(has),
            "chosen_is_safe": torch.tensor([bool(p.chosen_is_safe) for p in pairs]),
            "rejected_is_safe": torch.tensor([bool(p.rejected_is_safe) for p in pairs])}


def packed_pair_batch(pairs: list[EncodedPair], share_prompt: bool = True,
                      singles: Sequence[EncodedSingle] = ()) -> dict:
    """Padding-free batch (`pack_pairs`: input_ids, position_ids, ends, segments) plus
    safety labels; its end scores come out in `pair_batch` order (chosen 0..B-1, rejected 0..B-1, singles)."""
    return (pack_pairs([p.chosen for p in pairs], [p.rejected for p in pairs], share_prompt,
                       singles=[s.ids for s in singles]) | pair_labels(pairs) | single_labels(singles))



def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token lists, leaving each at least one token of its own."""
    k, stop = 0, min(len(a), len(b)) - 1
    while k < stop and a[k] == b[k]:
        k += 1
    return k


def pack_pairs(chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]],
               share_prefix: bool = True, singles: Sequence[Sequence[int]] = ()) -> dict:
    """Padding-free batch of B pairs: every token of the batch in ONE row, no padding.

    Layout per pair: ``[common prefix | rest of chosen | rest of rejected]`` when ``share_prefix``
    (the prompt, and anything else both sequences start with, is computed once), else
    ``[chosen | rejected]``. Position ids restart at 0 for every sequence; the rejected part continues
    from the end of the prefix, so every token sees exactly the positions it has in its own sequence.

    ``singles`` (S sequences without a partner: labelled responses) follow the pairs, one piece each.

    Returns ``input_ids`` and ``position_ids`` [1, N], ``ends`` [2B + S] (the index of the last token of
    chosen 0..B-1, then rejected 0..B-1, then the singles: where the score is read) and ``segments``: the attention
    pieces, a tuple of ``(ranges, keep)``. Each piece is causal self-attention over the concatenation
    of its token ``ranges`` (``(start, end)`` pairs); its outputs from position ``keep`` on, taken
    piece after piece, are the outputs of positions 0..N-1 in order. A chosen sequence is one piece;
    a rejected sequence after a shared prefix is the piece ``((prefix), (rest))`` keeping the rest.
    """
    if len(chosen) != len(rejected):
        raise ValueError(f"pack_pairs: {len(chosen)} chosen but {len(rejected)} rejected sequences")
    B = len(chosen)
    ids: list[int] = []
    pos: list[int] = []
    segments = []
    ends = [0] * (2 * B)
    for i, (a, b) in enumerate(zip(chosen, rejected)):
        if not len(a) or not len(b):
            raise ValueError("pack_pairs: empty sequence")
        s, k = len(ids), shared_prefix_length(a, b) if share_prefix else 0
        ids += list(a)
        pos += range(len(a))
        segments.append((((s, s + len(a)),), 0))
        ends[i] = s + len(a) - 1
        r = s + len(a)  # start of the rejected part
        ids += list(b[k:])
        pos += range(k, len(b))
        segments.append((((s, s + k), (r, r + len(b) - k)), k) if k else (((r, r + len(b)),), 0))
        ends[B + i] = r + len(b) - k - 1
    for a in singles:
        if not len(a):
            raise ValueError("pack_pairs: empty sequence")
        s = len(ids)
        ids += list(a)
        pos += range(len(a))
        segments.append((((s, s + len(a)),), 0))
        ends.append(s + len(a) - 1)
    return {"input_ids": torch.tensor([ids], dtype=torch.long), "position_ids": torch.tensor([pos], dtype=torch.long),
            "ends": torch.tensor(ends, dtype=torch.long), "segments": tuple(segments)}


def response_token_index(pairs: Sequence[EncodedPair], share_prefix: bool = True) -> dict[str, torch.Tensor]:
    """Where the response tokens of a `pack_pairs` row are predicted: ``positions`` [M] (the row position whose
    logits predict the token), ``targets`` [M] (the token) and ``sequence`` [M] (0..B-1 chosen, B..2B-1
    rejected), for every response token of every sequence (the first response token and the end token
    included). A token of the rejected sequence is predicted where its previous token sits in the row: inside
    the prefix both sequences share (laid out once, in the chosen part) or in the rejected part."""
    B = len(pairs)
    positions: list[int] = []
    targets: list[int] = []
    sequence: list[int] = []
    s = 0
    for i, p in enumerate(pairs):
        a, b = p.chosen, p.rejected
        k = shared_prefix_length(a, b) if share_prefix else 0
        r = s + len(a)
        for q in range(max(p.n_prompt, 1), len(a)):
            positions.append(s + q - 1)
            targets.append(a[q])
            sequence.append(i)
        for q in range(max(p.n_prompt, 1), len(b)):
            j = q - 1  # the position (in b) of the token that predicts b[q]
            positions.append(s + j if j < k else r + j - k)
            targets.append(b[q])
            sequence.append(B + i)
        s = r + len(b) - k
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return {"positions": as_long(positions), "targets": as_long(targets), "sequence": as_long(sequence)}


def packed_dpo_batch(pairs: list[EncodedPair], share_prompt: bool = True) -> dict:
    """`packed_pair_batch` plus `response_token_index`: what `packed_response_logprobs` reads."""
    return packed_pair_batch(pairs, share_prompt) | {"tokens": response_token_index(pairs, share_prompt)}


def summed_logprobs_at(logits: torch.Tensor, tokens: dict[str, torch.Tensor], n_sequences: int) -> torch.Tensor:
    """[M, V] logits at ``tokens["positions"]`` -> [n_sequences] Σ log π(target) per sequence (float32)."""
    z = logits.float()
    logp = z.gather(-1, tokens["targets"].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)
    return torch.zeros(n_sequences, dtype=logp.dtype, device=logp.device).index_add(0, tokens["sequence"], logp)


def packed_response_logprobs(model, batch: dict) -> torch.Tensor:
    """[2B] log π(response | prompt) of a `packed_dpo_batch` (chosen 0..B-1, then rejected), inside
    `packed_attention_enabled(model)`: one forward over the padding-free row; the LM head runs on the
    response-predicting positions only (``logits_to_keep``)."""
    from saferlhf.rollout import keep_logits_kwarg

    tokens = batch["tokens"]
    out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                saferlhf_segments=batch["segments"], **keep_logits_kwarg(model, tokens["positions"]))
    logits = out.logits[0]
    logits = logits if logits.shape[0] == tokens["positions"].numel() else logits[tokens["positions"]]
    return summed_logprobs_at(logits, tokens, len(batch["ends"]))


def pair_response_logprobs(model, pairs: list[EncodedPair], packed: bool, pad_id: int,
                           share_prompt: bool = True) -> torch.Tensor:
    """[2B] summed response log-probs (chosen 0..B-1, then rejected) on the model's device: from a
    `packed_dpo_batch` (inside `packed_attention_enabled`) or a padded batch."""
    if not packed:
        return padded_response_logprobs(model, pairs, pad_id)
    device = next(model.parameters()).device
    b = packed_dpo_batch(pairs, share_prompt)
    b = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
    b["tokens"] = {k: v.to(device) for k, v in b["tokens"].items()}
    return packed_response_logprobs(model, b)


def padded_sequence_logprobs(model, examples: Sequence[tuple[list[int], int]], pad_id: int) -> torch.Tensor:
    """[N] Σ log π(response | prompt) of (ids, n_prompt) examples from one right-padded batch: the SFT batch
    (`batching.sft_batch`) through `rollout.labelled_logits`, so the LM head runs on the response-predicting
    positions only."""
    from saferlhf.batching import sft_batch
    from saferlhf.rollout import labelled_logits

    device = next(model.parameters()).device
    b = {k: v.to(device) for k, v in sft_batch(examples, pad_id).items()}
    logits, positions = labelled_logits(model, b)
    predicts = positions[:, :-1]
    rows = torch.arange(len(examples), device=device)[:, None].expand_as(predicts)[predicts]
    return summed_logprobs_at(logits, {"targets": b["labels"][:, 1:][predicts], "sequence": rows}, len(examples))


def padded_response_logprobs(model, pairs: list[EncodedPair], pad_id: int) -> torch.Tensor:
    """[2B] the same log-probs as `packed_response_logprobs` from a right-padded [2B, T] batch (models where
    packing does not hold): chosen 0..B-1, then rejected."""
    return padded_sequence_logprobs(model, [(p.chosen, p.n_prompt) for p in pairs] +
                                    [(p.rejected, p.n_prompt) for p in pairs], pad_id)


# --- Packed attention -------------------------------------------------------------------------------
# transformers 5 builds a block-diagonal causal mask itself when attention_mask is None and position ids
# restart at 0 (masking_utils.find_packed_sequence_indices), but that mask is dense over a row: every
# row must be padded to the longest one and attention costs O(row length) per token. We keep ONE row
# with no padding and restrict attention with our own attention function instead: one causal SDPA call
# per sequence (transformers' own `sdpa_attention_forward`, so GQA, scaling and dropout are as for
# "sdpa"). The model's attention layers reach it through transformers' AttentionInterface and receive
# the pieces through the forward kwargs (`saferlhf_segments`), so activation checkpointing recomputes
# with the same pieces.
PACKED_ATTENTION = "saferlhf_packed"
_UNSUPPORTED_ATTENTION_KWARGS = ("sliding_window", "softcap", "s_aux", "sinks", "position_bias")


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     saferlhf_segments=None, **kwargs):
    """transformers attention function for `pack_pairs` rows: query [1, H, N, d], key/value
    [1, H_kv, N, d] -> ([1, N, H, d], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if saferlhf_segments is None:
        raise RuntimeError(f"attention {PACKED_ATTENTION!r} needs saferlhf_segments (use packed_end_scores)")
    bad = [k for k in _UNSUPPORTED_ATTENTION_KWARGS if kwargs.get(k) is not None]
    if bad or kwargs.get("is_causal") is False or not getattr(module, "is_causal", True) or query.shape[0] != 1:
        raise NotImplementedError(f"packed attention: unsupported attention layer ({bad or 'not causal / batch > 1'})")
    outs = []
    for ranges, keep in saferlhf_segments:
        if len(ranges) == 1:
            (s, e), = ranges
            q, k, v = query[:, :, s:e], key[:, :, s:e], value[:, :, s:e]
        else:
            q, k, v = (torch.cat([t[:, :, s:e] for s, e in ranges], 2) for t in (query, key, value))
        o, _ = sdpa_attention_forward(module, q, k, v, None, dropout=dropout, scaling=scaling, is_causal=True)
        outs.append(o[:, keep:] if keep else o)
    out = torch.cat(outs, 1)
    if out.shape[1] != query.shape[2]:
        raise RuntimeError(f"packed attention: pieces cover {out.shape[1]} of {query.shape[2]} positions")
    return out, None


@contextlib.contextmanager
def packed_attention_enabled(model):
    """Switch the attention layers of a `ScoreModel`, an HF model or a peft model to `packed_attention` for
    the block (restored after)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    hf = model._hf() if hasattr(model, "_hf") else model
    hf = getattr(hf, "module", hf)  # DDP / DeepSpeed wrapper
    hf = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
    old = hf.config._attn_implementation
    hf.set_attn_implementation(PACKED_ATTENTION)
    try:
        if hf.config._attn_implementation != PACKED_ATTENTION:
            raise NotImplementedError(f"{type(hf).__name__} does not take a custom attention implementation")
        yield model
    finally:
        if hf.config._attn_implementation != old:
            hf.set_attn_implementation(old)


def packed_end_scores(model, batch: dict) -> torch.Tensor:
    """[2B] end scores of a `packed_pair_batch` (inside `packed_attention_enabled`)."""
    hidden = model.backbone(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                            saferlhf_segments=batch["segments"]).last_hidden_state  # [1, N, H]
    return model.head(hidden[0, batch["ends"]]).squeeze(-1)


def packing_problem(model, pairs: list[EncodedPair], pad_id: int, share_prompt: bool = True) -> str | None:
    """None when packed batches give this model the padded end scores on ``pairs``, else why not."""
    hf = model._hf()
    config = hf.config
    if getattr(config, "use_sliding_window", False) or any(
            t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        return "sliding-window attention layers"
    if not getattr(config, "is_causal", True) or getattr(model, "is_encoder", False):
        return "not a causal model (an encoder attends both ways)"
    if hasattr(hf, "_can_set_attn_implementation") and not hf._can_set_attn_implementation():
        return f"{type(hf).__name__} does not use transformers' AttentionInterface"
    pairs = pairs[:4]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            b = pair_batch(pairs, pad_id)
            ref = model(b["input_ids"].to(device), b["attention_mask"].to(device)).end_scores.float()
            p = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in packed_pair_batch(pairs, share_prompt).items()}
            with packed_attention_enabled(model):
                got = packed_end_scores(model, p).float()
    except Exception as e:  # noqa: BLE001 - any failure means "use padded batches"
        return f"{type(e).__name__}: {e}"
    finally:
        model.train(was_training)
    tol = 1e-4 if next(model.parameters()).dtype == torch.float32 else 3e-2
    err = float((got - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    return None if err <= tol else f"packed end scores differ from padded ones by {err:.2g} (> {tol})"


def logprob_packing_problem(model, pairs: list[EncodedPair], pad_id: int, share_prompt: bool = True) -> str | None:
    """None when packed rows give this causal LM the padded response log-probs on ``pairs`` (DPO), else why."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = hf.config
    if getattr(config, "use_sliding_window", False) or any(
            t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        return "sliding-window attention layers"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = pair_response_logprobs(model, pairs[:4], False, pad_id)
            with packed_attention_enabled(model):
                got = pair_response_logprobs(model, pairs[:4], True, pad_id, share_prompt)
    except Exception as e:  # noqa: BLE001 - any failure means "use padded batches"
        return f"{type(e).__name__}: {e}"
    finally:
        model.train(was_training)
    err = float((got - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    return None if err <= 1e-4 else f"packed log-probs differ from padded ones by {err:.2g} (> 1e-4)"


class PairScorer(torch.nn.Module):
    """What the training loop calls (and accelerate wraps): [2B] end scores of a padded `pair_batch`
    or of a `packed_pair_batch` (batch with "segments")."""

    def __init__(self, score_model):
        super().__init__()
        self.score_model = score_model

    def forward(self, batch: dict) -> torch.Tensor:
        if "segments" in batch:
            return packed_end_scores(self.score_model, batch)
        return self.score_model(batch["input_ids"], batch["attention_mask"]).end_scores


