"""The KV-cache keyword is read through the wrappers a policy wears (peft's LoRA, accelerate's DDP ``.module``,
`AdaptersDisabled`): peft's ``forward(*args, **kwargs)`` used to hide ``cache`` so that a LoRA rollout passed the
deprecated ``past_key_values`` (removed in transformers 5.40)."""

from __future__ import annotations

import warnings

import pytest
import torch

from saferlhf.models.lora import AdaptersDisabled, apply_lora
from saferlhf.models.tiny import create_tiny_model
from saferlhf.models.tokenizers import train_tokenizer
from saferlhf.rollout import _cache_kwarg, base_causal_lm, keep_logits_kwarg, sample

TEXTS = ["how do I cook rice? rinse it first and serve it warm.", "how do I cook tea? use low heat."] * 20


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, vocab_size=150)


def _model(tok, arch="llama"):
    return create_tiny_model(tok, arch=arch, hidden_size=32, num_layers=2, num_heads=2, seed=0)


class _Wrapper(torch.nn.Module):  # accelerate's DDP wrapper keeps the model in ``.module``
    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_wrapped_models_give_the_bare_models_keyword(tok, arch):
    bare = _model(tok, arch)
    expected = _cache_kwarg(bare)
    assert expected == "cache"  # transformers 5.x
    peft = apply_lora(_model(tok, arch), r=4)
    assert type(peft).__name__.startswith("PeftModel")
    for wrapped in (peft, _Wrapper(peft), AdaptersDisabled(peft)):
        assert base_causal_lm(wrapped) is peft.get_base_model()
        assert _cache_kwarg(wrapped) == expected
        assert keep_logits_kwarg(wrapped, 3) == keep_logits_kwarg(bare, 3) == {"logits_to_keep": 3}


def test_a_model_without_the_new_keyword_gets_past_key_values():
    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return None

    assert _cache_kwarg(Old()) == "past_key_values"
    assert keep_logits_kwarg(Old(), 2) == {}


def test_lora_generation_uses_the_cache_keyword_and_matches_the_bare_model(tok):
    """B = 0 at LoRA init, so the wrapped model is the bare one: greedy samples must be identical, and no
    deprecation warning about ``past_key_values`` may appear."""
    bare = _model(tok)
    peft = apply_lora(_model(tok), r=4)
    prompts = [tok.encode("how do I cook rice?"), tok.encode("tea?")]
    ref = sample(bare, tok, prompts, max_new_tokens=6, do_sample=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = sample(peft, tok, prompts, max_new_tokens=6, do_sample=False)
    assert not [w for w in caught if "past_key_values" in str(w.message)], [str(w.message) for w in caught]
    assert got[2] == ref[2] and ref[0].shape[1] > ref[2] + 1  # more than one token: the cache was used
    for a, b in zip(got, ref):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
