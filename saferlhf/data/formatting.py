"""Prompt formatting and THE encoding of (prompt, response) shared by SFT, score models, PPO and scoring.

Prompt format (algorithm reference §5): Safe RLHF's
``"BEGINNING OF CONVERSATION: USER: {input} ASSISTANT:"``, shipped as a jinja chat template
(`CHAT_TEMPLATE`) with every tiny tokenizer; a tokenizer with its own chat template uses that one.

Encoding (`encode_example`): ``ids(format_prompt(prompt)) + ids(response) + [eos]``. The prompt and the
response are tokenised separately, so the prompt tokens are exactly the tokens a policy is conditioned on
at generation time, and the response is appended with no separator, as the reference concatenates
``"ASSISTANT:" + response``. The rendered chat template of a whole conversation is the same text.
Every consumer (SFT labels, score-model training, PPO scoring with a foreign tokenizer, evaluation,
`saferlhf.models.score.score_texts`) calls `encode_example`; nothing else turns a pair into tokens.
"""

from __future__ import annotations

from typing import Any

from saferlhf.data.schema import Conversation, user_text

PROMPT_BEGIN = "BEGINNING OF CONVERSATION: "
PROMPT_USER = "USER: {input} "
PROMPT_ASSISTANT = "ASSISTANT:"
PROMPT_INPUT = PROMPT_BEGIN + PROMPT_USER + PROMPT_ASSISTANT  # the reference template string

# User turn "USER: {content}", assistant turn " ASSISTANT:{content}{eos}", generation prompt " ASSISTANT:".
# One user turn + generation prompt == PROMPT_INPUT.format(input=...); a conversation rendered with one
# assistant turn is the text `encode_example` tokenises. A system message, if any, is placed after
# "BEGINNING OF CONVERSATION: " (the reference has no system messages).
CHAT_TEMPLATE = (
    "{{ 'BEGINNING OF CONVERSATION: ' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + ' ' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ASSISTANT:' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %}"
)


def format_prompt(tokenizer: Any, prompt: str) -> str:
    """Prompt text ending with the generation prompt ("... ASSISTANT:").

    Uses the tokenizer's chat template when it has one, else the reference string `PROMPT_INPUT`. A multi-turn
    prompt (`saferlhf.data.schema.Conversation`) is rendered from its messages (`format_messages`).
    """
    if isinstance(prompt, Conversation):
        return format_messages(tokenizer, list(prompt.messages))
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return PROMPT_INPUT.format(input=prompt)


def format_messages(tokenizer: Any, messages: list[dict]) -> str:
    """A whole conversation (OpenAI-style ``{"role", "content"}`` messages) ending with the generation prompt:
    the tokenizer's chat template when it has one, else the reference format (system text after the
    conversation opener, then "USER: ..." and " ASSISTANT:..." turns)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text, end = PROMPT_BEGIN, tokenizer.eos_token or getattr(tokenizer, "sep_token", None) or ""
    for m in messages:
        if m["role"] == "system":
            text += m["content"] + " "
        elif m["role"] == "user":
            text += "USER: " + m["content"]
        else:
            text += " ASSISTANT:" + m["content"] + end
    return text + " ASSISTANT:"


def end_token_id(tokenizer: Any) -> int:
    """The token that ends a complete response: eos, or for encoder tokenizers without one (BERT, MiniLM) the
    separator, so that prompt + response reads "[CLS] prompt [SEP] response [SEP]", BERT's pair encoding."""
    for tid in (tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)):
        if tid is not None:
            return tid
    raise ValueError(f"{type(tokenizer).__name__} has neither an eos nor a sep token to end a response")


def encode_prompt(tokenizer: Any, prompt: str, max_prompt_length: int | None = None) -> list[int]:
    """Token ids of the chat-formatted prompt. An over-long prompt keeps the chat frame (system prompt, turn
    header, generation prompt, special tokens) and the END of the user's text: the text is cut, then formatted.
    An over-long conversation first loses its oldest turns (whole exchanges, so that it still starts with a
    user turn after any system message); its last user message is cut only when it alone is too long."""
    ids = _prompt_ids(tokenizer, prompt)
    if max_prompt_length is None or len(ids) <= max_prompt_length:
        return ids
    if isinstance(prompt, Conversation):
        system = [m for m in prompt.messages[:1] if m["role"] == "system"]
        turns = prompt.messages[len(system):]
        starts = [i for i in range(1, len(turns)) if turns[i]["role"] == "user"]
        for i in starts:
            ids = _prompt_ids(tokenizer, Conversation(system + list(turns[i:])))
            if len(ids) <= max_prompt_length:
                return ids
        prompt = Conversation(system + [turns[-1]])
        ids = _prompt_ids(tokenizer, prompt)
    text_ids = tokenizer(user_text(prompt), add_special_tokens=False)["input_ids"]
    keep = max_prompt_length - (len(ids) - len(text_ids))
    while keep > 0:  # re-tokenising the cut text can merge differently: shrink until it fits
        cut = tokenizer.decode(text_ids[-keep:], skip_special_tokens=True)
        ids = _prompt_ids(tokenizer, prompt.with_last_user(cut) if isinstance(prompt, Conversation) else cut)
        if len(ids) <= max_prompt_length:
            return ids
        keep -= max(1, len(ids) - max_prompt_length)
    return ids[-max_prompt_length:]  # the frame alone is longer than the budget


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    return tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=True)["input_ids"]


def encode_example(tokenizer: Any, prompt: str, response: str, max_length: int,
                   max_prompt_length: int | None = None, ended: bool = True) -> tuple[list[int], int]:
    """(ids, n_prompt_tokens) of prompt + response (+ eos), at most ``max_length`` tokens.

    The prompt keeps at most ``max_prompt_length`` tokens (its end; default ``max_length // 2``, the
    training rule). ``ended``: the response is complete and finishes with eos (training data, and
    sampled responses that produced eos); a response cut off at the generation limit (``ended=False``)
    gets no eos, exactly as the policy's own tokens have none. The response is cut at the end so that
    the whole fits ``max_length``; an ended response keeps its eos, so score models read it there.
    """
    limit = max(max_length // 2, 1) if max_prompt_length is None else max_prompt_length
    p = encode_prompt(tokenizer, prompt, max_prompt_length=limit)
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    room = max(max_length - len(p) - int(ended), 0)
    r = r[:room] + ([end_token_id(tokenizer)] if ended else [])
    return p + r, len(p)


def scoring_text(tokenizer: Any, prompt: str, response: str, ended: bool = True) -> str:
    """The text a score model reads for (prompt, response), for users outside the project:
    ``format_prompt(prompt) + response + end token`` (eos, or [SEP] for encoders; none when ``ended`` is False).
    The ids are `encode_example`'s: the prompt and the response are tokenised SEPARATELY (so tokenising this
    whole string can merge differently at the seam); `saferlhf.models.score.score_texts` reproduces the scores."""
    end = tokenizer.convert_ids_to_tokens(end_token_id(tokenizer)) if ended else ""
    return format_prompt(tokenizer, prompt) + response + end
