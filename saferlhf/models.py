"""Tokenizers, tiny Hugging Face models, policy loading and score models (reward, cost, critics).

Everything here works on plain Hugging Face objects so that every checkpoint `saferlhf` writes loads
with `AutoModelForCausalLM` / `AutoModelForSequenceClassification` / `AutoTokenizer`.

Prompt format (algorithm reference §5): Safe RLHF's
``"BEGINNING OF CONVERSATION: USER: {input} ASSISTANT:"``, shipped as a jinja chat template
(`CHAT_TEMPLATE`). `format_example` is the one place where (prompt, response) becomes text, shared by
SFT, score models and PPO.

Score models (algorithm reference §1): backbone + linear head (hidden -> 1) applied at every position;
the sequence score is the head output at the last non-padding token. **Cost > 0 means unsafe, cost <= 0
means safe.** Every saved cost model says so in ``config.cost_sign_convention``.

Deliberate deviations from the reference implementation:
1. The assistant turn is joined with one space, ``"... ASSISTANT: {response}</s>"``; the reference
   concatenates ``"ASSISTANT:" + response`` with no space. The generation prompt itself is identical.
2. The score head has no bias (HF ``*ForSequenceClassification`` heads for Llama, Qwen2 and GPT-2 are
   bias-free, and we keep checkpoints loadable by them). The reference zero-inits a bias, so at
   initialisation both heads compute the same function.
3. Position ids come from the attention mask (cumsum - 1), so left padding gives the same scores as no
   padding; the reference ignores left padding in position ids.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import torch
from torch import nn

from saferlhf.errors import UserError
from saferlhf.tracking import atomic_save_dir  # the folder-level atomic write (also re-exported here)

PROMPT_BEGIN = "BEGINNING OF CONVERSATION: "
PROMPT_USER = "USER: {input} "
PROMPT_ASSISTANT = "ASSISTANT:"
PROMPT_INPUT = PROMPT_BEGIN + PROMPT_USER + PROMPT_ASSISTANT  # the reference template string

# User turn "USER: {content}", assistant turn " ASSISTANT: {content}{eos}", generation prompt " ASSISTANT:".
# One user turn + generation prompt == PROMPT_INPUT.format(input=...). A system message, if any, is
# placed after "BEGINNING OF CONVERSATION: " (the reference has no system messages).
CHAT_TEMPLATE = (
    "{{ 'BEGINNING OF CONVERSATION: ' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + ' ' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ASSISTANT: ' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %}"
)

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
SCORE_TYPES = ("reward", "cost", "critic")
COST_SIGN_CONVENTION = "cost > 0 means unsafe"
_HEAD_NAMES = ("score", "classifier", "v_head", "value_head")

Arch = Literal["llama", "qwen2", "gpt2"]


# --------------------------------------------------------------------------------------------------
# Prompt formatting
# --------------------------------------------------------------------------------------------------
def format_prompt(tokenizer: Any, prompt: str) -> str:
    """Prompt text ending with the generation prompt ("... ASSISTANT:").

    Uses the tokenizer's chat template when it has one, else the reference string `PROMPT_INPUT`.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return PROMPT_INPUT.format(input=prompt)


def format_example(tokenizer: Any, prompt: str, response: str) -> tuple[str, str]:
    """(prompt_text, response_text) with ``prompt_text + response_text`` the full training text.

    ``response_text = " " + response.lstrip() + eos`` (deviation 1 in the module docstring); for our
    template ``prompt_text + response_text`` equals the chat template rendered on the whole
    conversation. SFT masks the prompt part; score models read the score at the final eos.
    """
    eos = tokenizer.eos_token or ""
    return format_prompt(tokenizer, prompt), " " + response.lstrip() + eos


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------
def _template_texts(copies: int = 32) -> list[str]:
    """Rendered template strings, repeated so BPE learns compact merges for them."""
    one = PROMPT_INPUT.format(input="Hello") + " Hi.</s>USER: Thanks ASSISTANT: You are welcome.</s>"
    return [one] * copies


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048):
    """Train a byte-level BPE tokenizer (round-trips any text) and wrap it for transformers.

    Special tokens ``<pad>`` (id 0), ``<s>``, ``</s>``, ``<unk>``; pad is distinct from eos (HF
    sequence-classification heads pool at the rightmost token != pad). No bos/eos are added
    automatically: the chat template and `format_example` write the eos. ``chat_template`` is
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
    with _loading(path, "tokenizer"):
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


# --------------------------------------------------------------------------------------------------
# Tiny models and policies
# --------------------------------------------------------------------------------------------------
def create_tiny_model(
    tokenizer: Any,
    arch: Arch = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    seed: int = 0,
):
    """A randomly initialised causal LM (fp32, tied embeddings), deterministic for a seed.

    Vocabulary size and pad/bos/eos ids come from the tokenizer. ``intermediate_size`` defaults to
    ``4 * hidden_size``. The global torch RNG is left untouched.
    """
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    inter = intermediate_size or 4 * hidden_size
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    if arch in ("llama", "qwen2"):
        cls = LlamaConfig if arch == "llama" else Qwen2Config
        config = cls(hidden_size=hidden_size, intermediate_size=inter, num_hidden_layers=num_layers,
                     num_attention_heads=num_heads, num_key_value_heads=num_heads,
                     max_position_embeddings=max_position_embeddings, **ids)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden_size, n_inner=inter, n_layer=num_layers, n_head=num_heads,
                            n_positions=max_position_embeddings, **ids)
    else:
        raise ValueError(f"unknown arch {arch!r}; expected 'llama', 'qwen2' or 'gpt2'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _set_generation_ids(model, tokenizer)
    return model


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    arch: Arch = "llama",
    vocab_size: int = 2048,
    seed: int = 0,
    **size: Any,
) -> Path:
    """Train a tokenizer on ``texts``, create a tiny model (``**size``: see `create_tiny_model`) and
    save both to ``out_dir`` atomically. Returns ``out_dir``."""
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.model_max_length = size.get("max_position_embeddings", 512)
    model = create_tiny_model(tokenizer, arch=arch, seed=seed, **size)

    def save(tmp: Path) -> None:
        with _quiet_hf(progress_only=True):
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_save_dir(save, out_dir)


class ModelPathError(UserError, FileNotFoundError):
    """A model path that is not a usable model: a ``UserError`` (and a ``FileNotFoundError``, as before)."""


MODEL_PATH_EXPECTED = "expected a folder with config.json (an HF model) or a hub name owner/name"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


def model_path_problem(path: str | Path, weights: bool = True) -> str | None:
    """What is wrong with a model path, or None. Hub names (``gpt2``, ``owner/name``: not an existing path and
    not path-like) are left to transformers. ``weights=False`` for a tokenizer: a folder with tokenizer
    files and no config.json, or a model folder without weights, passes."""
    text = str(path)
    if not text:
        return "is empty"
    p = Path(text).expanduser()
    if not p.exists():
        looks_local = text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text
        return "model path not found" if looks_local else None
    if not p.is_dir():
        return "is a file, not a model folder"
    names = [q.name for q in p.iterdir()]
    if not names:
        return "is an empty folder"
    if "config.json" not in names:
        if not weights and any(n in _TOKENIZER_FILES for n in names):
            return None
        return "is a folder without config.json, not an HF model"
    try:
        config = json.loads((p / "config.json").read_text())
    except (OSError, ValueError) as e:
        return f"has a config.json that is not valid JSON ({e})"
    if not isinstance(config, dict):
        return "has a config.json that is not a JSON object"
    if weights and not any(n.endswith(_WEIGHT_SUFFIXES) or n.endswith(".index.json") for n in names):
        return "has config.json but no weight file (*.safetensors or *.bin)"
    return None


def check_model_path(path: str | Path, what: str = "model path", weights: bool = True) -> None:
    """Fail early with one clear ``UserError`` (a ``FileNotFoundError`` too) when ``path`` is not a usable
    LOCAL model folder: missing, a file, empty, no / unreadable config.json, no weights (``model_path_problem``)."""
    problem = model_path_problem(path, weights)
    if problem is not None:
        raise ModelPathError(f"{what}: {path}: {problem}" if str(path) else f"{what} {problem}",
                             hint=MODEL_PATH_EXPECTED)


@contextlib.contextmanager
def _loading(path: str | Path, what: str) -> Iterator[None]:
    """Turn what transformers raises for a broken folder or an unreachable hub name (OSError, ValueError,
    a corrupt safetensors file) into a ``UserError`` naming ``path``."""
    from safetensors import SafetensorError

    try:
        yield
    except UserError:
        raise
    except (OSError, ValueError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what}: cannot load {path}: {type(e).__name__}: {first}", hint=MODEL_PATH_EXPECTED) from e


def load_policy(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    gradient_checkpointing: bool = False,
    padding_side: str = "left",
):
    """Load a causal LM and its tokenizer -> (model, tokenizer).

    ``model.generation_config`` gets the tokenizer's pad and eos ids; the tokenizer pads on the left
    (for generation) unless told otherwise.
    """
    from transformers import AutoModelForCausalLM

    check_model_path(path, "policy")
    tokenizer = load_tokenizer(path, padding_side=padding_side)
    with _quiet_hf(progress_only=True), _loading(path, "policy"):
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    _set_generation_ids(model, tokenizer)
    if gradient_checkpointing:
        _enable_checkpointing(model)
    if device is not None:
        model.to(device)
    return model, tokenizer


def _enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing; transformers 5 renamed the method."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable()
    else:  # transformers < 5
        model.gradient_checkpointing_enable()
    model.config.use_cache = False


def _set_generation_ids(model: Any, tokenizer: Any) -> None:
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id


# --------------------------------------------------------------------------------------------------
# Score models
# --------------------------------------------------------------------------------------------------
@dataclass
class ScoreOutput:
    """Output of `ScoreModel.forward`.

    scores: [B, T] head output at every position (per-token values for critics).
    end_scores: [B] head output at the last position where attention_mask == 1 (the sequence score).
    """

    scores: torch.Tensor
    end_scores: torch.Tensor


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B, T] position ids: cumsum(mask) - 1, clamped at 0 (correct for left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B, T] -> [B] index of the last position with mask 1 (any padding side; 0 for an empty row)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)


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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> ScoreOutput:
        """input_ids, attention_mask: [B, T] -> ScoreOutput(scores [B, T], end_scores [B])."""
        hidden = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state  # [B, T, H]
        scores = self.head(hidden).squeeze(-1)  # [B, T]
        end = last_token_index(attention_mask)
        end_scores = scores.gather(1, end.unsqueeze(1)).squeeze(1)  # [B]
        return ScoreOutput(scores=scores, end_scores=end_scores)

    def gradient_checkpointing_enable(self) -> None:
        _enable_checkpointing(self._hf())

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
        from N(0, 1/(hidden+1)) with ``seed`` (reference init, bias-free: deviation 2). Training a reward /
        cost model or a critic passes ``allow_new_head=True``; loading a judge keeps the default.
        """
        from transformers import AutoConfig, AutoModelForSequenceClassification

        what = f"{score_type or 'score'} model"
        check_model_path(path, what)
        with _loading(path, what):
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
        with _loading(path, what):
            if is_score:
                with _quiet_hf(progress_only=True):
                    hf = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=dtype)
            else:
                with _quiet_hf():  # the "score.weight MISSING" report is expected here
                    hf = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=dtype)
        model = cls(hf)
        if not is_score:
            model.reset_head(seed)
        if score_type is not None:
            model.score_type = score_type
        if hf.config.pad_token_id is None:
            with contextlib.suppress(Exception):  # no tokenizer there: forward works, save will ask
                hf.config.pad_token_id = load_tokenizer(path).pad_token_id
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

    def save_pretrained(self, path: str | Path, tokenizer: Any = None) -> Path:
        """Atomically write an HF folder loadable by ``AutoModelForSequenceClassification``.

        The config carries ``score_type`` and, for cost models, ``cost_sign_convention``. Raises if
        pad == eos (HF would pool at the token before the final eos; add a distinct pad token).
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

        def save(tmp: Path) -> None:
            with _quiet_hf(progress_only=True):
                hf.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)

        return atomic_save_dir(save, path)


def _as_set(ids: Any) -> set[int]:
    if ids is None:
        return set()
    return set(ids) if isinstance(ids, (list, tuple)) else {ids}


@torch.no_grad()
def score_texts(
    model: ScoreModel,
    tokenizer: Any,
    prompts: list[str],
    responses: list[str],
    batch_size: int = 32,
    max_length: int = 512,
) -> torch.Tensor:
    """End scores [N] of (prompt, response) pairs, formatted by `format_example`, right-padded.

    Texts longer than ``max_length`` tokens are cut on the right (as the reference does), so their
    score is then not read at eos.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    device = next(model.parameters()).device
    texts = ["".join(format_example(tokenizer, p, r)) for p, r in zip(prompts, responses)]
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(texts), batch_size):
        encoded = [tokenizer(t)["input_ids"][:max_length]
                   for t in texts[i:i + batch_size]]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
        out.append(model(input_ids.to(device), attention_mask.to(device)).end_scores.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)


# --------------------------------------------------------------------------------------------------
# LoRA (optional, peft imported lazily)
# --------------------------------------------------------------------------------------------------
def apply_lora(model: Any, r: int = 8, alpha: int = 16, dropout: float = 0.0,
               target_modules: list[str] | None = None) -> Any:
    """Wrap a causal LM (-> ``PeftModel``) or a `ScoreModel` (inner model wrapped, head kept fully
    trainable; returns the same ScoreModel) with LoRA adapters. ``target_modules=None`` lets peft
    pick its per-architecture default (q_proj/v_proj for Llama and Qwen2, c_attn for GPT-2)."""
    from peft import LoraConfig, get_peft_model

    is_score = isinstance(model, ScoreModel)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="SEQ_CLS" if is_score else "CAUSAL_LM",
                        fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2 uses Conv1D
    if is_score:
        model.model = get_peft_model(model.model, config)
        return model
    return get_peft_model(model, config)


def merge_lora(model: Any) -> Any:
    """A plain HF model to save: a merged copy of a peft model, the model itself otherwise."""
    if hasattr(model, "merge_and_unload"):
        import copy

        return copy.deepcopy(model).merge_and_unload()
    return model


# --------------------------------------------------------------------------------------------------
# Saving helpers
# --------------------------------------------------------------------------------------------------
def check_finite_weights(model: nn.Module, what: str) -> None:
    """Refuse to save non-finite weights: ``NumericalError`` naming the first bad tensor."""
    from saferlhf.errors import NumericalError

    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise NumericalError(f"refusing to save {what}: parameter {name} holds NaN or inf", tensor=name)


def save_policy(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """Save a causal LM and its tokenizer as one HF folder, atomically (never with non-finite weights)."""
    check_finite_weights(model, f"the policy to {path}")

    def write(tmp: Path) -> None:
        with _quiet_hf(progress_only=True):
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_save_dir(write, path)


@contextlib.contextmanager
def _quiet_hf(progress_only: bool = False) -> Iterator[None]:
    """Silence transformers' progress bars (and, unless ``progress_only``, its warnings)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if not progress_only:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
