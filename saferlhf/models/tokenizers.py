"""Tokenizers: the byte-level BPE that tiny models are built with, and loading any tokenizer with a pad token.

Tiny tokenizers ship the Safe RLHF prompt format as their chat template (`saferlhf.data.formatting`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from saferlhf.data.formatting import CHAT_TEMPLATE, PROMPT_INPUT
from saferlhf.errors import UserError
from saferlhf.models.hf import check_model_path, loading

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def _template_texts(copies: int = 32) -> list[str]:
    """Rendered template strings, repeated so BPE learns compact merges for them."""
    one = PROMPT_INPUT.format(input="Hello") + " Hi.</s>USER: Thanks ASSISTANT: You are welcome.</s>"
    return [one] * copies


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """Train a byte-level BPE tokenizer (round-trips any text) and wrap it for transformers.

    Special tokens ``<pad>`` (id 0), ``<s>``, ``</s>``, ``<unk>``; pad is distinct from eos (HF
    sequence-classification heads pool at the rightmost token != pad). No bos/eos are added
    automatically: the chat template and `encode_example` write the eos. ``chat_template`` is
    `CHAT_TEMPLATE`. Returns a ``PreTrainedTokenizerFast`` (``TokenizersBackend`` in transformers 5).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus() -> Iterator[str]:
        yield from _template_texts()
        yield from texts

    tok.train_from_iterator(corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


PAD_ADDED = "<|pad|>"  # the pad token added when a tokenizer has no usable one (embeddings are resized)
_ANNOUNCED: set[str] = set()


def _pad_candidate(tokenizer) -> str | None:
    """An existing special token that can serve as pad: not eos, not bos, not used inside chat text (unk first,
    then other special tokens such as GPT-style ``<|endoftext|>``)."""
    taken = {tokenizer.eos_token, tokenizer.bos_token}
    template = getattr(tokenizer, "chat_template", None) or ""
    names = [tokenizer.unk_token] + [t for t in tokenizer.all_special_tokens if t != tokenizer.unk_token]
    for name in names:
        if name and name not in taken and name not in template:
            return name
    return None


def load_tokenizer(path: str | Path, padding_side: str = "left"):
    """Load a tokenizer and make sure it has a pad token distinct from eos.

    A missing pad token, or one equal to eos (as SmolLM2 and many instruct releases ship it), is replaced by an
    existing special token that is neither eos nor bos nor part of the chat template (``unk``, ``<|endoftext|>``,
    ...), else by a new ``<|pad|>`` token (the models loaded with this tokenizer get their embeddings resized,
    `saferlhf.models.hf.fit_embeddings`). The choice is announced once per path on stderr and recorded in
    ``tokenizer.saferlhf_pad_source`` ("own" | "special" | "added"; "unk" when it is the unk token). Why:
    HF sequence-classification heads pool at the token before the first pad, so pad == eos would read a score
    model at the wrong token, and `ScoreModel.save_pretrained` refuses it.
    """
    import sys

    from transformers import AutoTokenizer

    check_model_path(path, "tokenizer", weights=False)
    with loading(path, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = padding_side
    source = "own"
    if tokenizer.eos_token is None and tokenizer.pad_token is None:
        raise UserError(f"tokenizer at {path} has neither a pad nor an eos token")
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        old = tokenizer.pad_token
        new = _pad_candidate(tokenizer)
        if new is not None:
            tokenizer.pad_token = new
            source = "unk" if new == tokenizer.unk_token else "special"
        else:
            tokenizer.add_special_tokens({"pad_token": PAD_ADDED})
            source = "added"
        if str(path) not in _ANNOUNCED:
            _ANNOUNCED.add(str(path))
            why = "has no pad token" if old is None else f"pads with its eos token {old!r}"
            print(f"saferlhf: tokenizer {path} {why}; padding with {tokenizer.pad_token!r} (id "
                  f"{tokenizer.pad_token_id}{', a new token' if source == 'added' else ''})", file=sys.stderr)
    tokenizer.saferlhf_pad_source = source
    return tokenizer
