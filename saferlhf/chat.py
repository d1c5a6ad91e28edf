"""`saferlhf chat MODEL`: talk to a policy in the terminal, with its reward and cost after every answer.

    saferlhf chat runs/demo/ppo_lag/actor --reward_model runs/demo/reward/model --cost_model runs/demo/cost/model

Every turn renders the whole conversation with the model's chat template (`saferlhf.data.formatting`; the
Safe RLHF format for tokenizers without one), the oldest exchanges dropped first when it is longer than
``sampling.max_prompt_length`` (`encode_prompt`). The answer is sampled with the project's sampling rule
(`saferlhf.rollout.next_token`: temperature, top-p, greedy) and printed token by token as it is generated;
it ends at an eos id or after ``sampling.max_new_tokens`` (then marked "[cut off]").

With ``--reward_model`` / ``--cost_model`` each answer is followed by its scores, computed as training and
evaluation compute them (`saferlhf.models.score.score_texts`, the conversation so far as the prompt; a cut-off
answer gets no eos): ``[reward +0.412 | cost -0.873 safe]``; "unsafe" when the cost is above the cost model's
stored decision threshold (`saferlhf.models.score.unsafe_threshold`; 0, the sign convention, when it has none).

Commands at the prompt: ``/reset`` forgets the conversation (the system prompt stays), ``/exit`` (or ``/quit``,
Ctrl-D) ends the chat. Ctrl-C stops an answer being written (the question is then forgotten). Input is read line
by line, so the chat also runs on piped stdin. ``--device`` / ``--dtype`` place the policy
(`saferlhf.models.placement`); the reward and cost models score in float32 on the same device.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

from saferlhf.config import option
from saferlhf.errors import UserError
from saferlhf.models.placement import DEVICE_HELP, DTYPE_HELP, Device, DType
from saferlhf.sampling import SamplingConfig, require_one_per_prompt

COMMANDS_HELP = "/reset clears the conversation, /exit quits"


@dataclass
class ChatConfig:
    model: str = option("", "the policy: HF causal LM folder or hub name", positional=True)
    system: str | None = option(None, "system prompt (rendered by the chat template; kept by /reset)")
    reward_model: str | None = option(None, "reward model folder: print each answer's reward")
    cost_model: str | None = option(None, "cost model folder: print each answer's cost, and 'unsafe' when it is above "
                                          "the model's stored threshold (else 0)")
    sampling: SamplingConfig = option(SamplingConfig(max_prompt_length=1024), "how answers are sampled (n and "
                                      "batch_size unused; max_prompt_length: the conversation's token budget, "
                                      "lowered to fit the model's context)")
    seed: int = option(0, "seed of the sampling RNG at start")
    device: Device = option("auto", DEVICE_HELP)
    dtype: DType = option("auto", DTYPE_HELP + " (the policy's; reward and cost models score in float32)")


@dataclass
class Judge:
    """A reward or cost model scoring answers (``threshold``: cost models, unsafe = cost > it)."""

    kind: str
    model: Any
    tokenizer: Any
    threshold: float | None = None

    def __call__(self, prompt: str, answer: str, ended: bool) -> float:
        from saferlhf.models.score import context_length, score_texts

        return float(score_texts(self.model, self.tokenizer, [prompt], [answer], ended=[ended],
                                 max_length=context_length(self.model))[0])


def load_judges(cfg: ChatConfig, device: str) -> list[Judge]:
    from saferlhf.models.hf import check_model_path
    from saferlhf.models.score import load_judge, unsafe_threshold

    judges = []
    for kind, path in (("reward", cfg.reward_model), ("cost", cfg.cost_model)):
        if path:
            check_model_path(path, f"chat: {kind}_model")
            model, tok = load_judge(path, kind)
            judges.append(Judge(kind, model.to(device), tok, unsafe_threshold(path) if kind == "cost" else None))
    return judges


def prompt_budget(model: Any, sampling: SamplingConfig) -> int:
    """``sampling.max_prompt_length``, lowered so that prompt + ``max_new_tokens`` fits the model's positions."""
    from saferlhf.models.hf import position_limit

    found = position_limit(model)
    if found is None:
        return sampling.max_prompt_length
    field, limit = found
    if limit - sampling.max_new_tokens < 1:
        raise UserError(f"chat: sampling.max_new_tokens ({sampling.max_new_tokens}) leaves no room for a prompt in "
                        f"the model's {field} ({limit})", hint="lower --sampling.max_new_tokens")
    return min(sampling.max_prompt_length, limit - sampling.max_new_tokens)


def stream_tokens(model: Any, tokenizer: Any, prompt_ids: list[int], sampling: SamplingConfig) -> Iterator[int]:
    """The answer's token ids one at a time as they are sampled (one sequence, KV cache, `rollout.next_token`);
    stops after an eos id (which is not yielded) or ``max_new_tokens`` tokens."""
    import torch

    from saferlhf.models.hf import eos_token_ids
    from saferlhf.rollout import _cache_kwarg, keep_logits_kwarg, next_token

    device = next(model.parameters()).device
    eos = set(eos_token_ids(model, tokenizer))
    key = _cache_kwarg(model)
    ids = torch.tensor([prompt_ids], device=device)
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **keep_logits_kwarg(model, 1))
        for n in range(sampling.max_new_tokens):
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            tok = next_token(out.logits[:, -1], sampling.temperature, sampling.top_p, not sampling.greedy)
            if int(tok) in eos:
                return
            yield int(tok)
            if n + 1 < sampling.max_new_tokens:
                out = model(input_ids=tok[:, None], use_cache=True, **{key: cache})


class Chat:
    """One conversation with a policy: `answer` streams a reply to ``write`` and keeps the history."""

    def __init__(self, model: Any, tokenizer: Any, sampling: SamplingConfig, system: str | None = None,
                 judges: list[Judge] | None = None):
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self.system, self.judges = system, judges or []
        self.messages: list[dict[str, str]] = []
        self.reset()

    def reset(self) -> None:
        self.messages = [{"role": "system", "content": self.system}] if self.system else []

    def answer(self, text: str, write: Callable[[str], Any]) -> tuple[str, bool, dict[str, float]]:
        """Reply to the user's ``text``, writing the answer as it is generated; returns (answer, ended, scores)."""
        from saferlhf.data.formatting import encode_prompt
        from saferlhf.data.schema import as_prompt

        asked = [*self.messages, {"role": "user", "content": text}]  # kept only once the answer is complete
        prompt = as_prompt(asked)  # one user message: exactly the single-turn prompt
        ids = encode_prompt(self.tokenizer, prompt, self.sampling.max_prompt_length)
        tokens: list[int] = []
        shown = ""
        for tok in stream_tokens(self.model, self.tokenizer, ids, self.sampling):
            tokens.append(tok)
            text_so_far = self.tokenizer.decode(tokens, skip_special_tokens=True).lstrip()
            if text_so_far.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                continue
            if text_so_far.startswith(shown):
                write(text_so_far[len(shown):])
                shown = text_so_far
        reply = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        if reply.startswith(shown) and len(reply) > len(shown):
            write(reply[len(shown):])
        ended = len(tokens) < self.sampling.max_new_tokens
        self.messages = [*asked, {"role": "assistant", "content": reply}]
        return reply, ended, {j.kind: j(prompt, reply, ended) for j in self.judges}


def score_line(scores: dict[str, float], judges: list[Judge]) -> str:
    """``[reward +0.412 | cost -0.873 safe]`` ("unsafe" when cost > the cost model's threshold)."""
    parts = []
    for j in judges:
        value = scores[j.kind]
        part = f"{j.kind} {value:+.3f}"
        if j.threshold is not None:
            part += " unsafe" if value > j.threshold else " safe"
        parts.append(part)
    return "[" + " | ".join(parts) + "]"


def chat_loop(chat: Chat, read: Callable[[str], str], out: TextIO) -> None:
    """Read user lines with ``read(prompt)`` until /exit or end of input; answer each with ``chat``."""
    def write(text: str) -> None:
        out.write(text)
        out.flush()

    while True:
        try:
            line = read("you> ").strip()
        except (EOFError, KeyboardInterrupt):  # Ctrl-D / Ctrl-C at the prompt: the end of the chat
            write("\n")
            return
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            chat.reset()
            write("(conversation cleared)\n")
            continue
        if line.startswith("/"):
            write(f"unknown command {line.split()[0]}: {COMMANDS_HELP}\n")
            continue
        write("assistant> ")
        try:
            _, ended, scores = chat.answer(line, write)
        except KeyboardInterrupt:  # Ctrl-C while answering stops the answer, not the chat
            write(" [stopped]\n")
            continue
        write("\n" if ended else " [cut off]\n")
        if scores:
            write(f"  {score_line(scores, chat.judges)}\n")


def run(cfg: ChatConfig) -> int:
    from saferlhf.models.hf import check_model_path
    from saferlhf.models.placement import resolve_placement
    from saferlhf.models.policy import load_policy
    from saferlhf.training import set_seed

    if not cfg.model:
        raise UserError("chat: give the model: saferlhf chat PATH")
    require_one_per_prompt(cfg.sampling, "chat", "one answer per turn")
    device, dtype = resolve_placement(cfg.device, cfg.dtype, "chat: ")
    check_model_path(cfg.model, "chat: model")
    model, tokenizer = load_policy(cfg.model, dtype=dtype, device=device)
    model.eval()
    sampling = dataclasses.replace(cfg.sampling, max_prompt_length=prompt_budget(model, cfg.sampling))
    judges = load_judges(cfg, device)
    set_seed(cfg.seed)
    try:
        import readline  # noqa: F401  line editing and history for input() in a terminal
    except ImportError:
        pass
    scored = ", ".join(f"{j.kind} model" + (f" (unsafe when cost > {j.threshold:g})" if j.threshold is not None
                                            else "") for j in judges)
    print(f"chat with {cfg.model}" + (f"; scored by the {scored}" if scored else "") + f". {COMMANDS_HELP}.",
          flush=True)
    chat_loop(Chat(model, tokenizer, sampling, cfg.system, judges), read_line, sys.stdout)
    return 0


def read_line(prompt: str) -> str:
    """``input(prompt)``; on piped input the line is echoed, so the transcript reads as it would in a terminal."""
    line = input(prompt)
    if not sys.stdin.isatty():
        print(line, flush=True)
    return line
