"""Generation behind one interface (`Generator`), the KV-cache sampler, and the ``Rollout`` record.

A generator turns prompt texts into `Samples` (token ids, masks and decoded responses): `HFGenerator`, a
lean KV-cache loop over any HF causal LM, is the implementation today; vLLM will be another. PPO, `generate`
and evaluation all sample through it. The ``Rollout`` record holds one PPO batch (reward and cost fields
side by side).

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
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from saferlhf.batching import label_positions, pad, position_ids_from_mask
from saferlhf.data.formatting import encode_prompt
from saferlhf.errors import NumericalError, UserError
from saferlhf.models.hf import eos_token_ids, position_limit
from saferlhf.sampling import SamplingConfig


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
    # the scores the RL maths reads when PPO normalises them (--normalize.*): (R - μ_R)/σ_R and C/σ_C; None: raw
    norm_reward: torch.Tensor | None = None  # [B]
    norm_cost: torch.Tensor | None = None    # [B]
    # filled by the RL step
    reward_advantages: torch.Tensor | None = None  # [B, N] A^r_t
    reward_returns: torch.Tensor | None = None     # [B, N] G^r_t
    cost_advantages: torch.Tensor | None = None    # [B, N] A^c_t
    cost_returns: torch.Tensor | None = None       # [B, N] G^c_t
    # graph-carrying actor logits / log-probs and critic values of the rollout forwards, when the
    # update reuses them (ppo.fused_update); ppo_update consumes and clears it
    live: dict[str, torch.Tensor] | None = None

    @property
    def response_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length:]

    @property
    def rl_reward(self) -> torch.Tensor:
        """[B] the reward the streams and trajectory scores use: ``norm_reward``, else R."""
        return self.reward if self.norm_reward is None else self.norm_reward

    @property
    def rl_cost(self) -> torch.Tensor | None:
        """[B] the cost the streams and trajectory scores use: ``norm_cost``, else C."""
        return self.cost if self.norm_cost is None else self.norm_cost

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


def is_eos(ids: torch.Tensor, eos_id: int | Sequence[int]) -> torch.Tensor:
    """Boolean mask of the positions holding any of the eos ids."""
    ids_list = [eos_id] if isinstance(eos_id, int) else list(eos_id)
    return torch.isin(ids, torch.tensor(ids_list, device=ids.device))


def response_mask_from(response_ids: torch.Tensor, eos_id: int | Sequence[int]) -> torch.Tensor:
    """[B, N] mask: 1 up to and including the first eos (any of ``eos_id``) of each row, 0 after it."""
    hits = is_eos(response_ids, eos_id).long()
    after_eos = (hits.cumsum(-1) - hits) > 0  # strictly after the first eos
    return (~after_eos).long()


def base_causal_lm(model: Any) -> Any:
    """The HF causal LM under the wrappers a policy can wear: accelerate's DDP / DeepSpeed ``.module`` and peft's
    ``PeftModel`` (or `saferlhf.models.lora.AdaptersDisabled`), whose ``forward(*args, **kwargs)`` hides the
    keywords the model takes. Their forwards pass every keyword on to this model."""
    inner = getattr(model, "module", model)  # DDP / DeepSpeed wrapper
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # peft


def forward_params(model: Any) -> frozenset[str]:
    """The keyword names of `base_causal_lm`'s ``forward`` (cached per class)."""
    import inspect

    cls = type(base_causal_lm(model))
    if cls not in _FORWARD_PARAMS:
        _FORWARD_PARAMS[cls] = frozenset(inspect.signature(cls.forward).parameters)
    return _FORWARD_PARAMS[cls]


_FORWARD_PARAMS: dict[type, frozenset[str]] = {}


def _cache_kwarg(model) -> str:
    """The KV-cache keyword of the model's forward: ``cache`` (transformers 5) or ``past_key_values`` (older;
    deprecated in 5, then removed), read from the base model so that a peft or DDP wrapper does not hide it."""
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def next_token(logits: torch.Tensor, temperature: float, top_p: float, do_sample: bool) -> torch.Tensor:
    """Pick one token per row from [B, V] logits: greedy, or temperature + nucleus (top-p) sampling.

    Raises ``NumericalError`` when sampling from non-finite logits."""
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / max(temperature, 1e-6), -1)
    if not bool(torch.isfinite(probs).all()):  # else torch.multinomial fails with an opaque message
        raise NumericalError("sampling: the policy's next-token logits are not finite (NaN or inf): its weights "
                             "or inputs are broken; nothing was trained on this batch", tensor="actor logits")
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p  # keep the smallest set whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1).squeeze(-1)


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: Sequence[list[int]], max_new_tokens: int, temperature: float = 1.0,
           top_p: float = 1.0, do_sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Generate one response per prompt with the model's KV cache (a lean loop with the maths of `generate`:
    as fast as `generate` on a 4.7 M-parameter Llama in `bench/bench_eval.py`; an earlier measurement on
    smaller models found it about 10x faster; stops when every row has produced eos).

    Returns (input_ids [B, P+N], attention_mask [B, P+N], P, response_mask [B, N]); tokens after eos are
    pad so that score models see clean sequences.
    """
    device = next(model.parameters()).device
    ids, mask = pad(prompt_ids, tokenizer.pad_token_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    eos, pad_id = eos_token_ids(model, tokenizer), tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    key = _cache_kwarg(model)
    pos = position_ids_from_mask(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **keep_logits_kwarg(model, 1))
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    next_pos = pos[:, -1:] + 1
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
    tokens, full_mask = [], mask
    for _ in range(max(max_new_tokens, 1)):
        tok = next_token(out.logits[:, -1], temperature, top_p, do_sample)
        tok = tok.masked_fill(done, pad_id)
        tokens.append(tok)
        done = done | is_eos(tok, eos)
        if bool(done.all()) or len(tokens) == max_new_tokens:
            break
        full_mask = torch.cat([full_mask, torch.ones_like(full_mask[:, :1])], 1)
        out = model(input_ids=tok[:, None], attention_mask=full_mask, position_ids=next_pos, use_cache=True,
                    **{key: cache})
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        next_pos = next_pos + 1
    model.train(was_training)
    P = ids.shape[1]
    resp = torch.stack(tokens, 1)
    rmask = response_mask_from(resp, eos)
    resp = resp.masked_fill(rmask == 0, pad_id)
    return torch.cat([ids, resp], 1), torch.cat([mask, rmask], 1), P, rmask


def keep_logits_kwarg(model, n: int | torch.Tensor) -> dict:
    """``{"logits_to_keep": n}`` when the causal LM takes it (transformers >= 4.50): the LM head then
    runs on the last ``n`` positions only, or on the True positions of a [B, T] bool tensor ``n`` (same
    values, flattened to [K, V]); ``{}`` otherwise."""
    return {"logits_to_keep": n} if "logits_to_keep" in forward_params(model) else {}


def action_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, P: int) -> torch.Tensor:
    """[B, N, V] logits predicting the response tokens a_t (positions P-1 .. P+N-2).

    The LM head runs on the last N + 1 positions only where the model allows it (``logits_to_keep``).
    """
    N = input_ids.shape[1] - P
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask), use_cache=False, **keep_logits_kwarg(model, N + 1))
    logits = out.logits  # [B, P + N, V], or [B, N + 1, V] with logits_to_keep
    return logits[:, logits.shape[1] - N - 1: -1].float()


def labelled_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [K, V], positions [B, T] bool) of an SFT-style batch (input_ids, attention_mask, labels): the LM
    head runs only on the K positions that predict a label (`label_positions`; every prompt and padding
    position is skipped). Feed both to ``sft_loss(logits, labels, positions)``."""
    positions = label_positions(batch["labels"]).to(batch["input_ids"].device)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False,
                **keep_logits_kwarg(model, positions))
    logits = out.logits
    return (logits if logits.dim() == 2 else logits[positions]), positions


def gather_logprobs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[a]: [B, N, V], [B, N] -> [B, N]."""
    return torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def critic_values(critic, input_ids: torch.Tensor, attention_mask: torch.Tensor, P: int) -> torch.Tensor:
    """[B, N] values V(s_t) of the states before each action (critic output at position P + t - 1)."""
    return critic(input_ids, attention_mask).scores[:, P - 1: -1].float()


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
    return [tokenizer.decode(r[m.bool()], skip_special_tokens=True).strip()
            for r, m in zip(response_ids.cpu(), response_mask.cpu())]



# --------------------------------------------------------------------------------------------------
# The generator interface
# --------------------------------------------------------------------------------------------------
SamplingSettings = SamplingConfig  # how responses are drawn: the one ``--sampling.*`` config (saferlhf.sampling)


@dataclass
class Samples:
    """One sampled response per prompt. B prompts, prompt block of P tokens, response block of N tokens."""

    input_ids: torch.Tensor        # [B, P + N] prompts left-padded, responses right-padded (pad after eos)
    attention_mask: torch.Tensor   # [B, P + N]
    prompt_length: int             # P
    response_mask: torch.Tensor    # [B, N] 1 up to and including the first eos
    responses: list[str]           # decoded responses (special tokens removed, stripped)
    ended: list[bool]              # response i produced eos (False: cut off at max_new_tokens)


@runtime_checkable
class Generator(Protocol):
    """Anything that turns prompts into responses: `sample` (token-level, for RL) and `generate` (texts)."""

    settings: SamplingSettings

    def sample(self, prompts: Sequence[str]) -> Samples:
        """One response per prompt, as one batch (token ids in the policy's own tokenizer)."""
        ...

    def generate(self, prompts: Sequence[str], n_samples: int | None = None,
                 progress_desc: str | None = None) -> list[list[str]]:
        """``n_samples`` (default: ``settings.n``) decoded responses for each prompt (batched), prompt-major."""
        ...


def check_context_length(model: Any, settings: SamplingSettings, longest_prompt: int = 1) -> None:
    """A ``UserError`` when the longest prompt (``longest_prompt`` tokens, after the ``max_prompt_length`` cut)
    plus ``max_new_tokens`` does not fit the model's positions: past them a learned position table is indexed
    out of range (GPT-2) and RoPE models run outside what they were trained on. Checked with 1 prompt token
    when the generator is built, and with the real prompts before every sampling call."""
    found = position_limit(model)
    if found is None:
        return
    field, limit = found
    need = longest_prompt + settings.max_new_tokens
    if need > limit:
        prompt = f"a prompt of {longest_prompt} tokens" if longest_prompt > 1 else "at least 1 prompt token"
        raise UserError(f"sampling: max_new_tokens ({settings.max_new_tokens}) + {prompt} = {need} exceeds the "
                        f"model's {field} ({limit}); lower sampling.max_new_tokens or sampling.max_prompt_length")


class HFGenerator:
    """`Generator` over an HF causal LM with the KV-cache loop `sample` (the model is used as it is at each
    call, so PPO's actor samples with its current weights). ``batch_size`` (default: ``settings.batch_size``)
    bounds a `generate` call's batches."""

    def __init__(self, model: Any, tokenizer: Any, settings: SamplingSettings | None = None,
                 batch_size: int | None = None) -> None:
        settings = SamplingSettings() if settings is None else settings
        check_context_length(model, settings)
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.batch_size = settings.batch_size if batch_size is None else batch_size

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        return [encode_prompt(self.tokenizer, p, self.settings.max_prompt_length) for p in prompts]

    def sample_ids(self, prompt_ids: Sequence[list[int]]) -> Samples:
        s, tok = self.settings, self.tokenizer
        check_context_length(self.model, s, max((len(p) for p in prompt_ids), default=1))
        ids, mask, P, rmask = sample(self.model, tok, prompt_ids, s.max_new_tokens, s.temperature, s.top_p,
                                     do_sample=not s.greedy)
        ended = (is_eos(ids[:, P:], eos_token_ids(self.model, tok)) & rmask.bool()).any(-1)
        return Samples(ids, mask, P, rmask, decode_responses(tok, ids[:, P:], rmask), ended.tolist())

    def sample(self, prompts: Sequence[str]) -> Samples:
        return self.sample_ids(self.encode(prompts))

    def generate(self, prompts: Sequence[str], n_samples: int | None = None,
                 progress_desc: str | None = None) -> list[list[str]]:
        return self.generate_ended(prompts, n_samples, progress_desc)[0]

    @torch.no_grad()
    def generate_ended(self, prompts: Sequence[str], n_samples: int | None = None,
                       progress_desc: str | None = None) -> tuple[list[list[str]], list[list[bool]]]:
        """`generate`'s responses and, aligned with them, whether each ended with eos (False: cut off at
        ``max_new_tokens``; score models then score it without an eos, as in training and RL)."""
        from saferlhf.tracking import progress

        n_samples = self.settings.n if n_samples is None else n_samples
        encoded = self.encode(prompts)
        out: list[list[str]] = [[] for _ in prompts]
        ended: list[list[bool]] = [[] for _ in prompts]
        jobs = [(i, k) for k in range(n_samples) for i in range(len(prompts))]
        bar = progress(total=len(jobs), desc=progress_desc or "generate", disable=progress_desc is None)
        for start in range(0, len(jobs), self.batch_size):
            chunk = jobs[start: start + self.batch_size]
            samples = self.sample_ids([encoded[i] for i, _ in chunk])
            for (i, _), text, done in zip(chunk, samples.responses, samples.ended):
                out[i].append(text)
                ended[i].append(bool(done))
            bar.update(len(chunk))
        bar.close()
        return out, ended
