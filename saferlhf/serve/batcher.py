"""`saferlhf serve`'s generation: concurrent requests batched into one KV-cache loop, token by token.

A request is a `Job` (one prompt, ``n`` responses, its own sampling settings and stop strings). The `Batcher`'s
one worker thread (the only user of the model) takes the first waiting job, collects the jobs that arrive within
``wait_ms`` milliseconds up to ``max_batch_size`` responses, and runs them together (`run_batch`): prompts
left-padded, position ids from the attention mask (as `saferlhf.rollout.sample`, so a row's tokens do not
depend on its neighbours' lengths), one forward per step for the whole batch.

Why a loop of its own and not `rollout.sample`: a server must hand each token to a streaming client as it comes,
end each row at its own ``max_tokens`` and stop strings, and sample each row with its own settings. Every row
keeps its request's temperature, top_p, greedy rule (temperature 0) and seed, so requests with different
settings share a batch (`pick_tokens`); a seeded request draws from its own generator, so it gives the same
answer alone or batched. Limitation: a batch runs until its last row ends; requests arriving meanwhile wait for
the next batch (no continuous batching).

Text: a response is decoded without special tokens and stripped (as `rollout.decode_responses`); a stop string
ends it at its first occurrence and is not returned. A stream releases text only once it is final: the tail
that could still become a stop string, trailing whitespace and a half-decoded character wait for the next
token, so the streamed pieces add up to the non-streamed text.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from saferlhf.batching import pad, position_ids_from_mask
from saferlhf.errors import NumericalError
from saferlhf.models.hf import eos_token_ids
from saferlhf.rollout import _cache_kwarg, keep_logits_kwarg


# ---- events a job receives (its ``emit``), in order: Delta / Finish per response (streams only), then Done
@dataclass
class Delta:
    index: int   # which of the request's n responses
    text: str    # the next piece of its text


@dataclass
class Finish:
    index: int
    reason: str  # "stop" (eos or a stop string) or "length" (max_tokens)


@dataclass
class Choice:
    text: str
    finish_reason: str
    tokens: int  # generated tokens, eos included


@dataclass
class Done:
    choices: list[Choice]

    @property
    def completion_tokens(self) -> int:
        return sum(c.tokens for c in self.choices)


@dataclass
class Failed:
    error: BaseException


@dataclass
class Job:
    """One chat request: ``n`` responses to ``prompt_ids``. ``emit`` receives the events (a queue's ``put`` by
    default: read them from ``events``); ``cancelled`` (a client that went away) ends its rows at the next step."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0   # 0: greedy
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False       # emit Delta / Finish events as the text grows
    emit: Callable[[Any], None] | None = None
    events: queue.Queue = field(default_factory=queue.Queue)
    cancelled: bool = False

    def __post_init__(self) -> None:
        if self.emit is None:
            self.emit = self.events.put

    def send(self, event: Any) -> None:
        try:
            self.emit(event)
        except RuntimeError:  # the client's event loop is gone (server shutting down)
            self.cancelled = True

    def wait(self) -> Done:
        """Block until the job is done (default ``emit`` only); re-raises the batch's failure."""
        while True:
            event = self.events.get()
            if isinstance(event, Done):
                return event
            if isinstance(event, Failed):
                raise event.error


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop string in ``text``, None when there is none."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` a stream must not show yet: the longest tail that is the start
    of a stop string, trailing whitespace (stripped if the response ends there) and U+FFFD (a character whose
    bytes are not all decoded yet)."""
    hold = max((k for s in stops for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])),
               default=0)
    return max(hold, len(text) - len(text.rstrip()), len(text) - len(text.rstrip("\ufffd")))


class Row:
    """One response being generated: its tokens, its text so far and what a stream has been sent."""

    def __init__(self, job: Job, index: int, generator: torch.Generator, tokenizer: Any):
        self.job, self.index, self.generator, self.tokenizer = job, index, generator, tokenizer
        self.tokens: list[int] = []  # generated ids, eos excluded
        self.count = 0                 # generated ids, eos included
        self.text: str | None = None   # decoded (stop-cut) text, when stop strings or a stream need it each step
        self.sent = ""
        self.finish: str | None = None

    def decode(self) -> str:
        raw = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = first_stop(raw, self.job.stop)
        return raw.lstrip() if cut is None else raw[:cut].lstrip()

    def add(self, token: int, eos: bool) -> None:
        """Take the next generated token; ends the row at eos, a stop string or ``max_tokens``."""
        self.count += 1
        if eos:
            return self.end("stop")
        self.tokens.append(token)
        if self.job.stop or self.job.stream:
            raw = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
            cut = first_stop(raw, self.job.stop)
            if cut is not None:
                self.text = raw[:cut].lstrip()
                return self.end("stop")
            self.text = raw.lstrip()
            if self.count < self.job.max_tokens and self.job.stream:
                # hold back on the raw text: a stop string may begin in the whitespace lstrip removed
                keep = len(self.text) - held_back(raw, self.job.stop)
                return self.release(self.text[:max(keep, 0)])
        if self.count >= self.job.max_tokens:
            self.end("length")

    def release(self, stable: str) -> None:
        if self.job.stream and len(stable) > len(self.sent) and stable.startswith(self.sent):
            self.job.send(Delta(self.index, stable[len(self.sent):]))
            self.sent = stable

    def end(self, reason: str) -> None:
        self.text = (self.decode() if self.text is None else self.text).strip()
        self.finish = reason
        if self.job.stream:
            self.release(self.text)
            self.job.send(Finish(self.index, reason))


def pick_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, greedy: torch.Tensor,
                uniform: torch.Tensor) -> torch.Tensor:
    """One token per row from [B, V] logits, each row with its own rule: greedy (argmax) where ``greedy`` [B],
    else temperature [B] + nucleus top_p [B] sampling by inverse CDF at ``uniform`` [B] (draws in [0, 1)).

    A row with top_p = 1 walks the CDF in vocabulary order; a row with top_p < 1 keeps its nucleus, the smallest
    set of most likely tokens whose mass reaches top_p (as `rollout.next_token`), and walks it most likely first.
    Either way a token is picked with probability p_i / (mass kept), and a row's pick does not depend on the other
    rows. Raises ``NumericalError`` when a sampled row's logits are not finite."""
    probs = torch.softmax(logits.float() / temperature.float().clamp_min(1e-6)[:, None], -1)
    if not bool(torch.isfinite(probs[~greedy]).all()):
        raise NumericalError("sampling: the policy's next-token logits are not finite (NaN or inf)",
                             tensor="serve logits")
    picked = _inverse_cdf(probs, uniform)
    nucleus = top_p < 1
    if bool(nucleus.any()):
        ranked, order = probs.sort(-1, descending=True)
        ranked = ranked.masked_fill(ranked.cumsum(-1) - ranked > top_p.to(ranked)[:, None], 0.0)
        in_nucleus = order.gather(-1, _inverse_cdf(ranked, uniform)[:, None]).squeeze(-1)
        picked = torch.where(nucleus, in_nucleus, picked)
    return torch.where(greedy, logits.argmax(-1), picked)


def _inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """[B] index of the first entry whose running sum reaches ``uniform`` [B] times the row's total."""
    cdf = probs.cumsum(-1)
    at = (uniform.to(cdf) * cdf[:, -1]).unsqueeze(-1)
    return torch.searchsorted(cdf, at).squeeze(-1).clamp(max=probs.shape[-1] - 1)


@torch.no_grad()
def run_batch(model: Any, tokenizer: Any, jobs: Sequence[Job], shared: torch.Generator) -> None:
    """Generate every job's responses in one batch; each job gets its events and finally `Done`. ``shared``
    draws for jobs without a seed."""
    device = next(model.parameters()).device
    generators = [torch.Generator().manual_seed(j.seed) if j.seed is not None else shared for j in jobs]
    rows = [Row(j, i, g, tokenizer) for j, g in zip(jobs, generators) for i in range(j.n)]
    ids, mask = pad([r.job.prompt_ids for r in rows], tokenizer.pad_token_id, side="left")
    ids, mask = ids.to(device), mask.to(device)
    temperature = torch.tensor([r.job.temperature for r in rows], device=device)
    top_p = torch.tensor([r.job.top_p for r in rows], device=device)
    greedy = temperature == 0
    eos, pad_id = set(eos_token_ids(model, tokenizer)), tokenizer.pad_token_id
    pos = position_ids_from_mask(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, **keep_logits_kwarg(model, 1))
    key, next_pos = _cache_kwarg(model), pos[:, -1:] + 1
    while True:
        uniform = torch.tensor([float(torch.rand((), generator=r.generator))
                                if r.finish is None and r.job.temperature > 0 else 0.0 for r in rows])
        tokens = pick_tokens(out.logits[:, -1], temperature, top_p, greedy, uniform)
        for r, t in zip(rows, tokens.tolist()):
            if r.finish is None:
                r.end("length") if r.job.cancelled else r.add(t, t in eos)
        if all(r.finish is not None for r in rows):
            break
        done = torch.tensor([r.finish is not None for r in rows], device=device)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        out = model(input_ids=tokens.masked_fill(done, pad_id)[:, None], attention_mask=mask, position_ids=next_pos,
                    use_cache=True, **{key: cache})
        next_pos = next_pos + 1
    for job in jobs:
        job.send(Done([Choice(r.text or "", r.finish or "length", r.count) for r in rows if r.job is job]))


class Batcher:
    """One worker thread over one model: `submit` jobs from any thread; ``stats`` counts requests and batches."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_size: int = 8, wait_ms: float = 5.0, seed: int = 0):
        self.model, self.tokenizer = model, tokenizer
        self.max_batch_size, self.wait_s = max_batch_size, wait_ms / 1000
        self.shared = torch.Generator().manual_seed(seed)
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.held: deque[Job] = deque()  # taken from the queue but not fitting the last batch
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0}
        self.thread = threading.Thread(target=self._loop, name="saferlhf-serve-batcher", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> Job:
        self.queue.put(job)
        return job

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(30)

    def _next(self, timeout: float | None) -> Job | None:
        if self.held:
            return self.held.popleft()
        return self.queue.get(timeout=timeout) if timeout is None or timeout > 0 else self.queue.get_nowait()

    def collect(self) -> list[Job] | None:
        """The next batch: the first waiting job, and those arriving within ``wait_ms`` while they fit
        ``max_batch_size`` responses (a job with more responses than that runs alone). None: closed."""
        first = self._next(None)
        if first is None:
            return None
        jobs, rows, deadline = [first], first.n, time.monotonic() + self.wait_s
        while rows < self.max_batch_size:
            try:
                job = self._next(deadline - time.monotonic())
            except queue.Empty:
                break
            if job is None:
                self.queue.put(None)  # close after this batch
                break
            if rows + job.n > self.max_batch_size:
                self.held.append(job)
                break
            jobs.append(job)
            rows += job.n
        return jobs

    def _loop(self) -> None:
        while (jobs := self.collect()) is not None:
            jobs = [j for j in jobs if not j.cancelled]
            if not jobs:
                continue
            self.stats["batches"] += 1
            self.stats["requests"] += len(jobs)
            self.stats["largest_batch"] = max(self.stats["largest_batch"], sum(j.n for j in jobs))
            try:
                run_batch(self.model, self.tokenizer, jobs, self.shared)
            except Exception as e:  # each request answers 500; the traceback goes to the server's log
                traceback.print_exc(file=sys.stderr)
                for job in jobs:
                    job.send(Failed(e))
