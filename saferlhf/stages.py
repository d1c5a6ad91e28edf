"""Stage configs shared by the world pipelines (`saferlhf demo`, `saferlhf iterate`): one dataclass per stage,
nested under the pipeline's config (``--sft.epochs 3``, ``--rl.steps 80``), `stage_sampling` (the pipeline's
``--max_new_tokens`` -> every sampling stage's ``sampling`` config) and `fill_untouched` for ``--fast``."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from saferlhf.config import from_dict, option, to_dict
from saferlhf.sampling import SamplingConfig

C = TypeVar("C")


@dataclass
class ModelStage:
    arch: Literal["llama", "qwen2", "gpt2"] = option("llama", "tiny model architecture")
    hidden_size: int = option(128, "tiny model hidden size", ge=1)
    num_layers: int = option(2, "tiny model layers", ge=1)
    num_heads: int = option(4, "tiny model attention heads", ge=1)
    vocab_size: int = option(2048, "tokenizer vocabulary (2k BPE: nearly every world word is one token)", ge=64)


@dataclass
class SFTStage:
    examples: int = option(6000, "SFT corpus size", ge=1)
    epochs: float = option(6.0, "SFT epochs", gt=0)
    batch_size: int = option(64, "SFT batch size", ge=1)
    lr: float = option(3e-3, "SFT learning rate (tiny models from scratch want large rates)", gt=0)


@dataclass
class DataStage:
    pair_prompts: int = option(0, "training prompts used for response-pair collection (0 = all)", ge=0)
    world_pairs: int = option(2000, "extra preference pairs written by the world and annotated by the panel "
                                    "(the role of the released PKU-SafeRLHF data; 0 = SFT pairs only)", ge=0)


@dataclass
class ScoreStage:
    epochs: float = option(2.0, "reward / cost model epochs", gt=0)
    lr: float = option(1e-3, "reward / cost model learning rate", gt=0)


@dataclass
class RLStage:
    steps: int = option(40, "RL steps per policy", ge=1)
    prompts_per_step: int = option(32, "prompts per RL step", ge=1)
    ppo_epochs: int = option(2, "PPO epochs per rollout", ge=1)
    minibatches: int = option(2, "minibatches per PPO epoch", ge=1)
    actor_lr: float = option(1e-4, "actor learning rate", gt=0)
    critic_lr: float = option(5e-4, "critic learning rate", gt=0)
    lambda_lr: float = option(0.1, "Lagrange multiplier learning rate (paper: 0.1)", gt=0)
    lambda_init: float = option(1.0, "initial λ", gt=0)
    lambda_max: float | None = option(5.0, "cap on λ (the paper's optional λ_max = 5)", gt=0)
    kl_coef: float | None = option(0.05, "β for every RL run (None = the paper's: 0.01 PPO-Lag, 0.02 PPO / shaping; "
                                         "tiny models drift into word salad with those)", ge=0)
    cost_threshold: float | None = option(None, "threshold d of E[C] <= d; None = calibrate it from the cost model "
                                                "and the annotated SFT responses (see target_violation_rate)")
    target_violation_rate: float = option(0.02, "calibration: d = c_safe + rate * (c_unsafe - c_safe), the mean cost "
                                                "when this share of responses is unsafe", gt=0, lt=1)
    shaping_lambdas: list[float] = option([0.5, 2.0], "fixed λ grid of the reward-shaping baselines", ge=0)


@dataclass
class EvalStage:
    samples: int = option(1, "sampled responses per test prompt", ge=1)


PIPELINE_BATCH_SIZE = 128  # sequences per generation batch in every sampling stage of a pipeline


def stage_sampling(max_new_tokens: int, n: int = 1) -> SamplingConfig:
    """The ``sampling`` config of a pipeline stage (response pairs, RL rollouts, red-teaming, evaluation), the one
    place a pipeline's ``--max_new_tokens`` maps into its stages: ``n`` responses per prompt, `PIPELINE_BATCH_SIZE`
    per batch, every other field at the shared default (`saferlhf.sampling.SamplingConfig`)."""
    return SamplingConfig(max_new_tokens=max_new_tokens, n=n, batch_size=PIPELINE_BATCH_SIZE)


def fill_untouched(cfg: C, overrides: dict[str, Any]) -> C:
    """``cfg`` with ``overrides`` (nested dict) applied to every field still at its default value: a value given on
    the command line or in a preset that differs from the default wins (one equal to the default cannot be told
    apart from an unset field and gets the override)."""
    defaults = to_dict(type(cfg)())
    current = to_dict(cfg)

    def untouched(over: dict, have: dict, base: dict) -> dict:
        out = {}
        for key, value in over.items():
            if isinstance(value, dict):
                out[key] = untouched(value, have[key], base[key])
            elif have[key] == base[key]:
                out[key] = value
        return out

    return from_dict(type(cfg), untouched(overrides, current, defaults), base=copy.deepcopy(cfg))
