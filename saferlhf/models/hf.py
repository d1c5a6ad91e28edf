"""Shared Hugging Face plumbing for every model role: path checks, load errors, quiet logging, saving guards."""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    """What is wrong with a model path, or None. A path that does not exist is "no such folder (why)" unless it
    may be a hub name to download (`missing_path_reason`). ``weights=False`` for a tokenizer: a folder with
    tokenizer files and no config.json, or a model folder without weights, passes."""
    text = str(path)
    if not text:
        return "is empty"
    p = Path(text).expanduser()
    if not p.exists():
        why = missing_path_reason(text)
        return None if why is None else f"no such folder ({why})"
    if not p.is_dir():
        return "is a file, not a model folder"
    names = [q.name for q in p.iterdir()]
    if not names:
        return "is an empty folder"
    if "config.json" not in names:
        if not weights and any(n in _TOKENIZER_FILES for n in names):
            return None
        if "adapter_config.json" in names:  # a LoRA adapter folder over its base (`saferlhf.models.lora`)
            from saferlhf.models.lora import adapter_folder_problem

            return adapter_folder_problem(p)
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


_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")  # "gpt2", "owner/name"
_HUB_REACHABLE: dict[str, bool] = {}  # endpoint -> answer of the first probe in this process


def missing_path_reason(text: str) -> str | None:
    """Why a model path that does not exist cannot be a hub name to download, or None when it may be one.

    Local: it starts with ``/``, ``.`` or ``~``, has a backslash or more than one ``/``, or its first component
    exists here (``models/typo`` when ``models/`` exists). A hub name (``gpt2``, ``owner/name``) is only worth
    trying when it is in the hub cache, or the hub is online (not ``HF_HUB_OFFLINE``) and reachable
    (`hub_reachable`, a connection with a short timeout): otherwise transformers retries for about a minute and
    ends with "couldn't connect to huggingface.co"."""
    first = text.split("/", 1)[0]
    if text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1:
        return "read as a local path"
    if "/" in text and Path(first).exists():
        return f"{first}/ exists here: read as a local path"
    if not _HUB_NAME.match(text):
        return "not a hub name owner/name either"
    if in_hub_cache(text):
        return None
    if hub_offline():
        return "the hub is offline (HF_HUB_OFFLINE) and it is not in the hub cache"
    if not hub_reachable():
        from huggingface_hub import constants

        return f"{constants.ENDPOINT} is not reachable and it is not in the hub cache"
    return None


def in_hub_cache(repo_id: str) -> bool:
    """True when the hub cache (``HF_HUB_CACHE``) holds a download of the model ``repo_id``."""
    from huggingface_hub import constants

    return (Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "snapshots").is_dir()


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    on = ("1", "on", "yes", "true")
    return bool(constants.HF_HUB_OFFLINE) or any(os.environ.get(v, "").strip().lower() in on
                                                 for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether a TCP connection to the hub endpoint opens within ``timeout`` seconds (name lookup included; asked
    once per process). Behind a proxy (``HTTPS_PROXY`` ...) the direct probe says nothing: True."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    if endpoint in _HUB_REACHABLE:
        return _HUB_REACHABLE[endpoint]
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    answer: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
                                     timeout=timeout).close()
            answer.append(True)
        except (OSError, ValueError):
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a name lookup ignores the socket timeout
    thread.start()
    thread.join(timeout + 0.5)
    _HUB_REACHABLE[endpoint] = bool(answer and answer[0])
    return _HUB_REACHABLE[endpoint]


def check_model_path(path: str | Path, what: str = "model path", weights: bool = True) -> None:
    """Fail early with one clear ``UserError`` (a ``FileNotFoundError`` too) when ``path`` is not a usable model:
    ``<what>: no such folder: <path>`` for a missing local path (or a hub name that cannot be downloaded now),
    else a file, empty, no / unreadable config.json, no weights (``model_path_problem``). The one check every
    loader (policy, score models, tokenizers, embedders) and every command runs before loading."""
    problem = model_path_problem(path, weights)
    if problem is None:
        return
    if problem.startswith("no such folder"):
        why = problem[len("no such folder ("):-1]
        raise ModelPathError(f"{what}: no such folder: {path}",
                             hint=f"model path not found ({why}); {MODEL_PATH_EXPECTED}")
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
