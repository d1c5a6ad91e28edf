"""The score-model role: reward models, cost models and critics, and THE text scorer.

Score models (algorithm reference §1): backbone + linear head (hidden -> 1) applied at every position;
the sequence score is the head output at the last non-padding token. **Cost > 0 means unsafe, cost <= 0
means safe.** Every saved cost model says so in ``config.cost_sign_convention``.

`score_texts` is the one function that scores (prompt, response) TEXTS: PPO with a reward / cost model
whose tokenizer differs from the policy's, evaluation, threshold calibration and tests all call it. It
encodes with `saferlhf.data.formatting.encode_example`, the encoding score models are trained on.

Deliberate deviations from the reference implementation:
1. The score head has no bias (HF ``*ForSequenceClassification`` heads for Llama, Qwen2 and GPT-2 are
   bias-free, and we keep checkpoints loadable by them). The reference zero-inits a bias, so at
   initialisation both heads compute the same function.
2. Position ids come from the attention mask (cumsum - 1), so left padding gives the same scores as no
   padding; the reference ignores left padding in position ids.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from saferlhf.batching import last_token_index, pad, position_ids_from_mask
from saferlhf.data.formatting import encode_example
from saferlhf.errors import NumericalError, UserError
from saferlhf.files import atomic_save_dir
from saferlhf.models.hf import (check_finite_weights, check_model_kind, check_model_path, enable_checkpointing,
                                fit_embeddings, loading, position_limit, quiet_hf)
from saferlhf.models.lora import merge_lora
from saferlhf.models.tokenizers import load_tokenizer

SCORE_TYPES = ("reward", "cost", "critic")
SCORE_LIMIT = 1e6  # |score| above this (finite but absurd) is a broken judge: `score_texts` stops (as PPO's score_limit)
COST_SIGN_CONVENTION = "cost > 0 means unsafe"
_HEAD_NAMES = ("score", "classifier", "v_head", "value_head")
# A cost model's decision threshold, stored in its config.json by `saferlhf score-model` (calibrated on its own
# validation split): {"value": t, "method": "best_f1" | "zero", ...}. unsafe = cost > value everywhere
# (`score`, the classifier judge of `eval`); a cost model without one uses the sign convention, value 0.
THRESHOLD_KEY = "saferlhf_decision_threshold"
# How to reproduce a score model's scores outside saferlhf, stored in its config.json by `save_pretrained`
# (`scoring_recipe`; docs/cost-model.md, "Reproducing scores outside saferlhf").
SCORING_KEY = "saferlhf_scoring"


@dataclass
class ScoreOutput:
    """Output of `ScoreModel.forward`.

    scores: [B, T] head output at every position (per-token values for critics).
    end_scores: [B] head output at the last position where attention_mask == 1 (the sequence score).
    """

    scores: torch.Tensor
    end_scores: torch.Tensor



class ScoreModel(nn.Module):
    """A reward, cost or critic model: an HF ``*ForSequenceClassification`` (num_labels=1).

    We call the backbone and the head ourselves so that positions come from the attention mask and
    the per-token scores are available. Cost models: **cost > 0 means unsafe**.
    """

    def __init__(self, model: Any, score_type: str | None = None):
        super().__init__()
        self.model = model
        if score_type is not None:
            self.score_type = score_type

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def score_type(self) -> str | None:
        return getattr(self.config, "score_type", None)

    @score_type.setter
    def score_type(self, value: str) -> None:
        if value not in SCORE_TYPES:
            raise ValueError(f"score_type must be one of {SCORE_TYPES}, got {value!r}")
        self.config.score_type = value
        if value == "cost":
            self.config.cost_sign_convention = COST_SIGN_CONVENTION
        elif hasattr(self.config, "cost_sign_convention"):
            del self.config.cost_sign_convention

    def _hf(self) -> Any:
        """The plain HF model (unwraps a peft wrapper; LoRA layers are injected in place)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def backbone(self) -> nn.Module:
        hf = self._hf()
        return getattr(hf, hf.base_model_prefix)

    @property
    def head(self) -> nn.Module:
        hf = self._hf()
        for name in _HEAD_NAMES:
            if hasattr(hf, name):
                return getattr(hf, name)
        raise AttributeError(f"{type(hf).__name__} has no score head (looked for {_HEAD_NAMES})")

    @property
    def is_encoder(self) -> bool:
        """A bidirectional encoder (BERT, MiniLM, RoBERTa, ...): scored by its own sequence-classification head
        (its pooling, e.g. the [CLS] token), not at the end token; no per-token scores, so never a critic."""
        return is_encoder_config(self.config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ScoreOutput:
        """input_ids, attention_mask: [B, T] -> ScoreOutput(scores [B, T], end_scores [B]).

        Decoders: the head at every position, the sequence score at the last real token. Encoders: the HF
        head's own pooled score (rows must be right-padded, as `score_texts` and training pad them);
        ``scores`` then repeats it at every position."""
        if self.is_encoder:
            end = self._hf()(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids_from_mask(attention_mask)).logits[:, 0]
            return ScoreOutput(scores=end[:, None].expand(-1, input_ids.shape[1]), end_scores=end)
        hidden = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state  # [B, T, H]
        scores = self.head(hidden).squeeze(-1)  # [B, T]
        end = last_token_index(attention_mask)
        if bool((end < 0).any()):
            raise ValueError("ScoreModel: a row of the batch has no tokens (attention_mask all 0): it has no score")
        end_scores = scores.gather(1, end.unsqueeze(1)).squeeze(1)  # [B]
        return ScoreOutput(scores=scores, end_scores=end_scores)

    def gradient_checkpointing_enable(self) -> None:
        enable_checkpointing(self._hf())

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        score_type: str | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        gradient_checkpointing: bool = False,
        seed: int = 0,
        allow_new_head: bool = False,
    ) -> "ScoreModel":
        """Load a score model, or (``allow_new_head``) initialise one from a causal LM (e.g. the SFT model).

        A sequence-classification checkpoint (num_labels=1) is loaded as is; ``score_type``, when
        given, overrides the stored one (e.g. "critic" initialised from a reward model). A folder that is
        not a score model (no ``*ForSequenceClassification`` architecture and no ``score_type``) is refused
        with a ``UserError`` unless ``allow_new_head``: then the backbone is reused and a new head is drawn
        from N(0, 1/(hidden+1)) with ``seed`` (reference init, bias-free: deviation 1). Training a reward /
        cost model or a critic passes ``allow_new_head=True``; loading a judge keeps the default.
        """
        from transformers import AutoConfig, AutoModelForSequenceClassification

        what = f"{score_type or 'score'} model"
        check_model_path(path, what)
        with loading(path, what):
            config = AutoConfig.from_pretrained(str(path))
        is_score = (any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
                    or getattr(config, "score_type", None) is not None)
        if not is_score and not allow_new_head:
            raise UserError(f"{what}: {path} is a causal LM, not a reward/cost model (it has no trained score "
                            "head: its score would be random)",
                            hint="give a folder written by `saferlhf score-model` (or another "
                                 "*ForSequenceClassification model with one label)")
        if is_score and config.num_labels != 1:
            raise UserError(f"{what}: {path}: sequence-classification checkpoint with {config.num_labels} "
                            "labels; a score model has 1")
        with loading(path, what):
            if is_score:
                with quiet_hf(progress_only=True):
                    hf = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype)
            else:
                with quiet_hf():  # the "score.weight MISSING" report is expected here
                    hf = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
        model = cls(hf)
        if model.is_encoder and (score_type or model.score_type) == "critic":
            raise UserError(f"critic: {path} is an encoder ({config.model_type}); a critic needs per-token values",
                            hint="initialise the critics from a decoder (the policy or a decoder score model) with "
                                 "--reward_critic_path / --cost_critic_path")
        if not is_score:
            model.reset_head(seed)
        if score_type is not None:
            model.score_type = score_type
        eos = _as_set(getattr(hf.config, "eos_token_id", None))
        if hf.config.pad_token_id is None or hf.config.pad_token_id in eos:
            with contextlib.suppress(UserError):  # no tokenizer there: forward works, save will ask
                tokenizer = load_tokenizer(path)
                fit_embeddings(hf, tokenizer)  # a pad token added by load_tokenizer
                hf.config.pad_token_id = tokenizer.pad_token_id
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if device is not None:
            model.to(device)
        return model

    def reset_head(self, seed: int = 0) -> None:
        """Reference head init: weight ~ N(0, std = 1/sqrt(hidden + 1)), bias (if any) = 0."""
        weight = self.head.weight
        generator = torch.Generator().manual_seed(seed)
        std = 1.0 / math.sqrt(weight.shape[-1] + 1)
        with torch.no_grad():
            weight.copy_(torch.randn(weight.shape, generator=generator) * std)
            if getattr(self.head, "bias", None) is not None:
                self.head.bias.zero_()

    def save_pretrained(self, path: str | Path, tokenizer: Any = None, max_length: int | None = None) -> Path:
        """Atomically write an HF folder loadable by ``AutoModelForSequenceClassification``.

        The config carries ``score_type``, for cost models ``cost_sign_convention`` and, with a tokenizer,
        ``saferlhf_scoring`` (`scoring_recipe`: how to reproduce the scores with plain transformers; with
        ``max_length``, the token budget the model was trained with, which `context_length` then reads so that
        texts are scored as they were trained). Raises if pad == eos (HF would pool at the token before the final
        eos; add a distinct pad token).
        """
        hf = merge_lora(self.model)
        if tokenizer is not None:
            hf.config.pad_token_id = tokenizer.pad_token_id
        eos = _as_set(hf.config.eos_token_id) | _as_set(getattr(tokenizer, "eos_token_id", None))
        if hf.config.pad_token_id is None or hf.config.pad_token_id in eos:
            raise ValueError(
                f"pad_token_id={hf.config.pad_token_id} is unset or equals eos {sorted(eos)}: HF "
                "sequence-classification pools at the rightmost non-pad token, so the saved model "
                "would not read the score at the final eos. Add a distinct pad token: "
                "tokenizer.add_special_tokens({'pad_token': '<pad>'}); "
                "model.resize_token_embeddings(len(tokenizer))."
            )
        if self.score_type is None:
            raise ValueError("set score_type ('reward' | 'cost' | 'critic') before saving")
        check_finite_weights(hf, f"the {self.score_type} model to {path}")
        if tokenizer is not None:
            setattr(hf.config, SCORING_KEY, scoring_recipe(tokenizer, encoder=is_encoder_config(hf.config),
                                                           max_length=max_length))

        def save(tmp: Path) -> None:
            with quiet_hf(progress_only=True):
                hf.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)

        return atomic_save_dir(save, path)


def scoring_recipe(tokenizer: Any, encoder: bool, max_length: int | None = None) -> dict[str, Any]:
    """What a score model reads and where its score is, in words a user outside saferlhf can follow with plain
    transformers (saved as ``config.json[SCORING_KEY]``; the ids are `encode_example`'s, the score `score_texts`'s).

    ``prompt_template``: the chat-formatted prompt (`format_prompt`) with the literal ``{prompt}`` where the user's
    text goes; the response follows it with no separator, then the end token. ``max_length``: the token budget of
    training, stored as ``max_length`` (what `context_length` reads)."""
    from saferlhf.data.formatting import end_token_id, format_prompt

    end = end_token_id(tokenizer)
    return {
        "prompt_template": format_prompt(tokenizer, "{prompt}"),
        "prompt_ids": "tokenizer(prompt_template.replace('{prompt}', prompt))['input_ids'] (special tokens added as "
                      "the tokenizer adds them)",
        "response_ids": "tokenizer(response, add_special_tokens=False)['input_ids'] + [end_token_id]; a response cut "
                        "off at a generation limit gets no end token",
        "input_ids": "prompt_ids + response_ids: prompt and response tokenised SEPARATELY (never as a text pair)",
        "end_token": tokenizer.convert_ids_to_tokens(end), "end_token_id": end,
        "token_type_ids": "none: pass input_ids and attention_mask only (no segment ids)",
        "truncation": "the prompt keeps the END of the user's text inside the chat frame, at most max_length // 2 "
                      "tokens; the response keeps its START and the end token, so that the whole fits max_length "
                      "(saferlhf.score: max_length = the max_length below, the budget it was trained with; else the "
                      "model's max_position_embeddings)",
        "score": ("logits[:, 0] of AutoModelForSequenceClassification: the model's own pooled output (BERT: [CLS])"
                  if encoder else "logits[:, 0] of AutoModelForSequenceClassification: the head at the last token "
                                  "(the end token); right-pad batches"),
        "reproduce": "saferlhf.score(model_dir, prompt, response); docs/cost-model.md",
    } | ({"max_length": int(max_length)} if max_length else {})


def is_encoder_config(config: Any) -> bool:
    """True for bidirectional encoder families (those with a masked-LM head in transformers and not configured
    as decoders)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


def _as_set(ids: Any) -> set[int]:
    if ids is None:
        return set()
    return set(ids) if isinstance(ids, (list, tuple)) else {ids}




@torch.no_grad()
def score_texts(model: ScoreModel, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], *,
                max_length: int = 512, max_prompt_length: int | None = None, ended: Sequence[bool] | None = None,
                batch_size: int = 64, limit: float = SCORE_LIMIT) -> torch.Tensor:
    """End scores [N] (float32, on the model's device) of (prompt, response) texts, encoded exactly as score
    models are trained (`encode_example`), right-padded, in batches of ``batch_size``.

    ``max_length`` / ``max_prompt_length``: the token budget and the prompt's share of it (training: the
    recipe's max_length and half of it; PPO with a foreign tokenizer: the score model's `context_length`
    and the actor's max_prompt_length).
    ``ended[i]`` False: response i was cut off at the generation limit, so it gets no eos (default: all
    ended). The model is run in eval mode and its mode restored.
    A finite score with |score| > ``limit`` is a broken judge: ``NumericalError`` (every consumer, from eval to
    best-of-k, stops on it; NaN / inf are left to the callers, which name their context).
    """
    if len(prompts) != len(responses) or (ended is not None and len(ended) != len(prompts)):
        raise ValueError(f"score_texts: {len(prompts)} prompts, {len(responses)} responses"
                         + (f", {len(ended)} ended flags" if ended is not None else ""))
    device = next(model.parameters()).device
    flags = [True] * len(prompts) if ended is None else [bool(e) for e in ended]
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            seqs = [encode_example(tokenizer, p, r, max_length, max_prompt_length, e)[0]
                    for p, r, e in zip(prompts[i: i + batch_size], responses[i: i + batch_size],
                                       flags[i: i + batch_size])]
            ids, mask = pad(seqs, tokenizer.pad_token_id)
            out.append(model(ids.to(device), mask.to(device)).end_scores.float())
    finally:
        model.train(was_training)
    scores = torch.cat(out) if out else torch.zeros(0, device=device)
    check_score_limit(scores, limit, getattr(model.config, "name_or_path", "") or "?")
    return scores


def check_score_limit(scores: torch.Tensor, limit: float, path: str) -> None:
    """``NumericalError`` when a finite score exceeds ``limit`` in magnitude (a broken or wrong model)."""
    absurd = torch.isfinite(scores) & (scores.abs() > limit)
    if bool(absurd.any()):
        first = int(absurd.nonzero()[0, 0])
        raise NumericalError(f"the score model {path} gave {float(scores[first]):.3g} for {int(absurd.sum())} of "
                             f"{scores.numel()} responses (first: response {first}); |score| must be <= {limit:g}: "
                             "the model is broken or the wrong model", tensor="scores")


def context_length(model: ScoreModel, default: int = 512) -> int:
    """The number of tokens a score model reads: the ``max_length`` it was trained with (``saferlhf_scoring``;
    texts are then scored as in training), at most its position limit (`position_limit`); without a stored one the
    position limit, ``default`` where its config has none."""
    found = position_limit(model)
    limit = default if found is None else found[1]
    recipe = getattr(getattr(model, "config", None), SCORING_KEY, None)
    trained = recipe.get("max_length") if isinstance(recipe, dict) else None
    return min(limit, trained) if isinstance(trained, int) and trained > 0 else limit


def load_judge(path: str | Path, kind: str | None = None) -> tuple[ScoreModel, Any]:
    """A trained reward / cost model and its tokenizer (right padding), in eval mode, for scoring texts;
    ``kind`` ("reward" / "cost"): a model of another kind is a ``UserError`` (`check_model_kind`)."""
    if kind is not None:
        check_model_path(path, f"{kind} model")
        check_model_kind(path, kind, f"{kind} model")
    model = ScoreModel.from_pretrained(path).eval()
    return model, load_tokenizer(path, padding_side="right")


def stored_threshold(model_or_path: Any) -> dict | None:
    """The decision threshold a cost model stores in its config (``THRESHOLD_KEY``: value, method, ...), or None.
    ``model_or_path``: a model folder, a `ScoreModel` or an HF config."""
    import json

    if isinstance(model_or_path, (str, Path)):
        cfg_file = Path(model_or_path) / "config.json"
        try:
            found = json.loads(cfg_file.read_text()).get(THRESHOLD_KEY)
        except (OSError, ValueError, AttributeError):
            return None
    else:
        config = getattr(model_or_path, "config", model_or_path)
        found = getattr(config, THRESHOLD_KEY, None)
    if not isinstance(found, dict) or not isinstance(found.get("value"), (int, float)) \
            or not math.isfinite(found["value"]):
        return None
    return dict(found)


def unsafe_threshold(model_or_path: Any) -> float:
    """The cost above which a response is unsafe: the stored threshold, else 0 (the sign convention)."""
    found = stored_threshold(model_or_path)
    return 0.0 if found is None else float(found["value"])
