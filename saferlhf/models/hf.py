"""Shared Hugging Face plumbing for every model role: path checks, load errors, quiet logging, saving guards."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from saferlhf.errors import NumericalError, UserError

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


def position_limit(model: Any) -> tuple[str, int] | None:
    """(config field, value) of the model's position limit (``max_position_embeddings`` / ``n_positions``), or
    None where its config defines none."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        limit = getattr(config, name, None)
        if isinstance(limit, int) and limit > 0:
            return name, limit
    return None


# What each role accepts (`check_model_kind`): kinds of `model_kind`; None (unknown) is always accepted.
ROLE_KINDS = {"reward": ("reward", "score"), "cost": ("cost", "score"), "policy": ("causal LM",),
              "embedding": ("encoder", "score")}
_ROLE_NAMES = {"reward": "a reward model", "cost": "a cost model", "policy": "a causal LM (a policy)",
               "embedding": "an encoder (e.g. all-MiniLM-L6-v2)"}
_KIND_NAMES = {"reward": "a reward model", "cost": "a cost model", "critic": "a critic",
               "score": "a sequence-classification (score) model", "causal LM": "a causal LM", "encoder": "an encoder"}


def model_kind(path: str | Path) -> tuple[str | None, str]:
    """(kind, why) of a local model folder from its config.json: kind "reward" / "cost" / "critic" (a saferlhf
    score model: ``score_type``), "score" (another sequence-classification model), "causal LM", "encoder", or
    None (a hub name, no readable config.json, or an architecture of none of these kinds)."""
    try:
        config = json.loads((Path(path).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None, ""
    if not isinstance(config, dict):
        return None, ""
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    score_type = config.get("score_type")
    if score_type in ("reward", "cost", "critic"):
        return score_type, f"config.json score_type={score_type}"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "score", f"config.json architectures={','.join(archs)}"
    if _is_encoder_type(config):
        return "encoder", f"config.json model_type={config.get('model_type')}"
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal LM", f"config.json architectures={','.join(archs)}"
    return None, ""


def _is_encoder_type(config: dict) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.get("model_type") in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not config.get("is_decoder", False)


def check_model_kind(path: str | Path, expected: str, flag: str) -> None:
    """A ``UserError`` when the folder at ``path`` is a model of another kind than the role ``expected`` ("reward",
    "cost", "policy", "embedding") takes, e.g. ``--reward_model_path X is a cost model (config.json
    score_type=cost); expected a reward model``. Unknown kinds and hub names pass."""
    kind, why = model_kind(path)
    if kind is None or kind in ROLE_KINDS[expected]:
        return
    raise UserError(f"{flag} {path} is {_KIND_NAMES[kind]} ({why}); expected {_ROLE_NAMES[expected]}")


def check_model_roles(cfg: Any, roles: dict[str, str | None]) -> None:
    """For every config field of ``roles`` that is set: `check_model_path`, then (a role given) `check_model_kind`
    of its folder, named ``--FIELD`` in the error."""
    for name, role in roles.items():
        path = getattr(cfg, name)
        if path:
            check_model_path(path, name)
            if role is not None:
                check_model_kind(path, role, f"--{name}")


@contextlib.contextmanager
def loading(path: str | Path, what: str) -> Iterator[None]:
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


def enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing; transformers 5 renamed the method."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable()
    else:  # transformers < 5
        model.gradient_checkpointing_enable()
    model.config.use_cache = False


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a turn: the tokenizer's eos first, then the generation config's eos list (models
    such as Llama 3 end turns with a token other than ``tokenizer.eos_token``)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    for i in extra if isinstance(extra, (list, tuple)) else [extra]:
        if i is not None and i not in ids:
            ids.append(int(i))
    return ids


def set_generation_ids(model: Any, tokenizer: Any) -> None:
    """The tokenizer's pad, bos and eos in the model's configs; the generation config keeps its other eos ids."""
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        eos = eos_token_ids(model, tokenizer)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = eos[0] if len(eos) == 1 else eos
        model.generation_config.bos_token_id = tokenizer.bos_token_id


def fit_embeddings(model: Any, tokenizer: Any) -> None:
    """Grow the input (and tied output) embeddings when the tokenizer has more tokens than the model (a pad token
    added by `load_tokenizer`); new rows are the mean of the old ones (transformers' mean resizing)."""
    emb = model.get_input_embeddings()
    if emb is not None and len(tokenizer) > emb.weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)


def check_finite_weights(model: nn.Module, what: str) -> None:
    """Refuse to save non-finite weights: ``NumericalError`` naming the first bad tensor."""
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p.detach()).all()):
            raise NumericalError(f"refusing to save {what}: parameter {name} holds NaN or inf", tensor=name)


@contextlib.contextmanager
def quiet_hf(progress_only: bool = False) -> Iterator[None]:
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
