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


def load_tokenizer(path: str | Path, padding_side: str = "left"):
    """Load a tokenizer and make sure it has a pad token.

    When the tokenizer has no pad token we reuse ``unk`` if it exists and differs from eos, else eos
    (no new token, so no embedding resize), and record the choice in ``tokenizer.saferlhf_pad_source``
    ("own" | "unk" | "eos"). pad == eos is fine for generation and for `ScoreModel` (which uses the
    attention mask) but `ScoreModel.save_pretrained` refuses it, because HF sequence-classification
    heads would then pool at the token before the final eos.
    """
    from transformers import AutoTokenizer

    check_model_path(path, "tokenizer", weights=False)
    with loading(path, "tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    tokenizer.padding_side = padding_side
    source = "own"
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is not None and tokenizer.unk_token != tokenizer.eos_token:
            tokenizer.pad_token, source = tokenizer.unk_token, "unk"
        elif tokenizer.eos_token is not None:
            tokenizer.pad_token, source = tokenizer.eos_token, "eos"
        else:
            raise UserError(f"tokenizer at {path} has neither a pad, unk nor eos token")
    tokenizer.saferlhf_pad_source = source
    return tokenizer

