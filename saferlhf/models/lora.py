"""LoRA adapters (optional, peft imported lazily): applying them, merging them back for saving, and adapter
folders (``adapter_model.safetensors`` + ``adapter_config.json`` + the tokenizer) as policy folders.

An adapter folder names its base in ``adapter_config.json`` (``base_model_name_or_path``, an absolute path for a
local base); `saferlhf.models.policy.load_policy` loads the base, then the adapter, and merges them. A policy
loaded that way is named after the adapter folder, so an adapter trained on top of it (PPO from a LoRA SFT saved
with ``--lora.merge_on_save false``) names that folder as its base and loads through it in turn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
MAX_ADAPTER_DEPTH = 8  # adapter folders over adapter folders, at most


def apply_lora(model: Any, r: int = 8, alpha: int = 16, dropout: float = 0.0,
               target_modules: list[str] | None = None) -> Any:
    """Wrap a causal LM (-> ``PeftModel``) or a `ScoreModel` (inner model wrapped, head kept fully
    trainable; returns the same ScoreModel) with LoRA adapters. ``target_modules=None`` lets peft
    pick its per-architecture default (q_proj/v_proj for Llama and Qwen2, c_attn for GPT-2)."""
    from peft import LoraConfig, get_peft_model

    is_score = hasattr(model, "score_type") and hasattr(model, "model")  # a ScoreModel
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        task_type="SEQ_CLS" if is_score else "CAUSAL_LM",
                        fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2 uses Conv1D
    if is_score:
        model.model = get_peft_model(model.model, config)
        return model
    return get_peft_model(model, config)


def is_adapter_folder(path: str | Path) -> bool:
    """A folder holding a peft adapter (``adapter_config.json``) rather than a full HF model (no config.json)."""
    p = Path(str(path)).expanduser()
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").exists()


def adapter_base(path: str | Path) -> str:
    """The base model an adapter folder names (``base_model_name_or_path``); a ``ValueError`` when it names none."""
    try:
        config = json.loads((Path(str(path)).expanduser() / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{ADAPTER_CONFIG} is not readable JSON ({e})") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or not isinstance(base, str):
        raise ValueError(f"{ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    return base


def adapter_folder_problem(path: str | Path) -> str | None:
    """What is wrong with an adapter folder as a model path, or None: the adapter weights and a base that exists
    (a local folder, or a hub name) are needed."""
    p = Path(str(path)).expanduser()
    if not any((p / name).is_file() for name in (ADAPTER_WEIGHTS, "adapter_model.bin")):
        return f"holds {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS} (a LoRA adapter folder without its weights)"
    try:
        base = adapter_base(p)
    except ValueError as e:
        return f"is a LoRA adapter folder whose {e}"
    if Path(base).is_absolute() and not Path(base).exists():
        return f"is a LoRA adapter folder over the base {base}, which does not exist (any more)"
    return None


def save_adapter(model: Any, path: Path) -> None:
    """Write a peft model's adapter into the folder ``path`` (``save_pretrained``), its base as an absolute path
    when the base is a local folder, so that the adapter loads from any working directory."""
    import warnings

    with warnings.catch_warnings():  # a base that is itself an adapter folder has no config.json for peft to read
        warnings.filterwarnings("ignore", message="Could not find a config file")
        model.save_pretrained(path)
    config_file = Path(path) / ADAPTER_CONFIG
    config = json.loads(config_file.read_text())
    base = config.get("base_model_name_or_path")
    if base and Path(base).expanduser().exists():
        config["base_model_name_or_path"] = str(Path(base).expanduser().resolve())
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_adapter(base: Any, path: str | Path) -> Any:
    """``base`` with the adapter of the folder ``path`` merged in: a plain HF model named after ``path``."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    name = str(Path(str(path)).expanduser().resolve())
    merged.name_or_path = name  # what peft records as the base of an adapter trained on top of this model
    merged.config._name_or_path = name
    return merged


def merge_lora(model: Any) -> Any:
    """A plain HF model to save: a merged copy of a peft model, the model itself otherwise."""
    if hasattr(model, "merge_and_unload"):
        import copy

        return copy.deepcopy(model).merge_and_unload()
    return model



def apply_lora_settings(model: Any, settings: Any) -> Any:
    """``apply_lora`` with a `saferlhf.training.LoraSettings` when it is enabled (the model unchanged
    otherwise); prints how many parameters are trained."""
    if not getattr(settings, "enabled", False):
        return model
    out = apply_lora(model, r=settings.r, alpha=settings.alpha, dropout=settings.dropout,
                     target_modules=list(settings.target_modules) or None)
    trained = sum(p.numel() for p in out.parameters() if p.requires_grad)
    total = sum(p.numel() for p in out.parameters())
    print(f"LoRA r={settings.r}: training {trained:,} of {total:,} parameters ({100 * trained / total:.2f} %)")
    return out


class AdaptersDisabled(torch.nn.Module):
    """The base model under a peft causal LM: the same module with its adapters switched off for the call.
    PPO's reference policy with a LoRA actor: one base in memory instead of two. The peft model is held but not
    registered, so freezing or moving this wrapper leaves the actor alone."""

    def __init__(self, peft_model: Any) -> None:
        super().__init__()
        object.__setattr__(self, "peft", peft_model)

    def get_base_model(self) -> Any:  # what `saferlhf.rollout` inspects for ``logits_to_keep``
        return self.peft.get_base_model()

    def forward(self, **kwargs: Any) -> Any:
        with torch.no_grad(), self.peft.disable_adapter():
            return self.peft(**kwargs)

    def parameters(self, recurse: bool = True):  # the device of the base (rollout code asks for it)
        return self.peft.parameters(recurse)
