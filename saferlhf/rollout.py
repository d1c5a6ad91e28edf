"""Batched sampling with a KV cache and the ``Rollout`` record (reward and cost fields side by side).

Layout of one rollout batch (B sequences, prompt block of P tokens, response block of N tokens):

    input_ids      [B, P + N]  prompts LEFT-padded to P, responses RIGHT-padded to N
    attention_mask [B, P + N]  1 on real prompt tokens and on response tokens up to and including eos
    response_mask  [B, N]      1 on generated tokens up to and including the first eos (the actions a_t)

Per-action tensors are [B, N]: entry t belongs to action a_t = input_ids[:, P + t], whose log-prob is
read from the logits at position P + t - 1 and whose value is the critic output at the same position
(the state s_t = the prefix before a_t). Position ids always come from the attention mask, so left
padding does not shift positions (the reference implementation ignored this).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from saferlhf.batching import pad, position_ids_from_mask


@dataclass
class Rollout:
    """One batch of experience. Shapes: B sequences, N response positions. Maths symbols in brackets."""

    input_ids: torch.Tensor            # [B, P+N] prompt + response tokens
    attention_mask: torch.Tensor       # [B, P+N]
    prompt_length: int                 # P
    response_mask: torch.Tensor        # [B, N] 1 on actions a_t (t <= T)
    logprobs: torch.Tensor             # [B, N] log π_old(a_t | s_t)
    ref_logprobs: torch.Tensor         # [B, N] log π_ref(a_t | s_t)
    reward: torch.Tensor               # [B]    R(x, y)
    reward_values: torch.Tensor        # [B, N] V^r(s_t)
    cost: torch.Tensor | None = None   # [B]    C(x, y); > 0 means unsafe
    cost_values: torch.Tensor | None = None  # [B, N] V^c(s_t)
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    # filled by the RL step
    reward_advantages: torch.Tensor | None = None  # [B, N] A^r_t
    reward_returns: torch.Tensor | None = None     # [B, N] G^r_t
    cost_advantages: torch.Tensor | None = None    # [B, N] A^c_t
    cost_returns: torch.Tensor | None = None       # [B, N] G^c_t

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length:]

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(-1)

    def select(self, idx: torch.Tensor) -> "Rollout":
        """A minibatch (rows ``idx``) of this rollout; list fields follow."""
        out = {}
        for name, value in self.__dict__.items():
            if isinstance(value, torch.Tensor):
                out[name] = value[idx]
            elif isinstance(value, list):
                out[name] = [value[i] for i in idx.tolist()]
            else:
                out[name] = value
        return Rollout(**out)


def response_mask_from(response_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """[B, N] mask: 1 up to and including the first eos of each row, 0 after it."""
    is_eos = (response_ids == eos_id).long()
    after_eos = (is_eos.cumsum(-1) - is_eos) > 0  # strictly after the first eos
    return (~after_eos).long()


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: Sequence[list[int]], max_new_tokens: int, temperature: float = 1.0,
           top_p: float = 1.0, do_sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Generate one response per prompt with the model's KV cache.

    Returns (input_ids [B, P+N], attention_mask [B, P+N], P, response_mask [B, N]); tokens after eos are
    replaced by pad so that score models see clean sequences.
    """
    device = next(model.parameters()).device
    ids, mask = pad(prompt_ids, tokenizer.pad_token_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    was_training = model.training
    model.eval()
    kwargs = dict(do_sample=do_sample, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id, use_cache=True)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    model.train(was_training)
    P = ids.shape[1]
    resp = out[:, P:]
    if resp.shape[1] == 0:  # degenerate: nothing generated
        resp = torch.full((ids.shape[0], 1), tokenizer.eos_token_id, device=device, dtype=out.dtype)
    rmask = response_mask_from(resp, tokenizer.eos_token_id)
    resp = resp.masked_fill(rmask == 0, tokenizer.pad_token_id)
    return torch.cat([ids, resp], 1), torch.cat([mask, rmask], 1), P, rmask


def action_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, P: int) -> torch.Tensor:
    """[B, N, V] logits predicting the response tokens a_t (positions P-1 .. P+N-2)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    return out.logits[:, P - 1: -1].float()


def gather_logprobs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[a]: [B, N, V], [B, N] -> [B, N]."""
    return torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def critic_values(critic, input_ids: torch.Tensor, attention_mask: torch.Tensor, P: int) -> torch.Tensor:
    """[B, N] values V(s_t) of the states before each action (critic output at position P + t - 1)."""
    return critic(input_ids, attention_mask).scores[:, P - 1: -1].float()


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    return [tokenizer.decode(r[m.bool()], skip_special_tokens=True).strip()
            for r, m in zip(response_ids.cpu(), response_mask.cpu())]
