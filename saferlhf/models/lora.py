"""LoRA adapters (optional, peft imported lazily) and merging them back for saving."""

from __future__ import annotations

from typing import Any

import torch


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
