"""How responses are sampled: the one ``--sampling.*`` config every sampling command takes.

``generate``, ``eval``, ``best-of-k``, ``redteam`` (the policy's answers; the attacker has its own settings),
``rs-finetune`` and ``ppo`` (its rollouts) each have a ``sampling: SamplingConfig`` field, so the same flag
means the same thing everywhere (``--sampling.max_new_tokens 256``) and has ONE default: the values below.
The world pipelines (``demo``, ``iterate``) keep their own ``--max_new_tokens`` (64: their published numbers
were made with it) and map it into every stage's sampling config in one place (`saferlhf.stages.stage_sampling`).
`saferlhf.rollout.HFGenerator` takes this config directly (``SamplingSettings`` there is the same class).
Changed in this release: ``eval`` and ``redteam`` used to default to 64 new tokens, ``redteam`` to
batches of 128; the old flag names are accepted for one release (``__renamed__``, `saferlhf.config`).

Where a command fixes a field itself, the field must stay at its default (the command says so otherwise):
``n`` is 1 in ``ppo`` (one response per prompt), ``best-of-k`` and ``rs-finetune`` (``--k`` candidates per
prompt); ``ppo`` samples each step's ``rollout.prompts_per_step`` prompts as one batch (``batch_size`` unused).
"""

from __future__ import annotations

from dataclasses import dataclass

from saferlhf.config import ConfigError, option

MAX_NEW_TOKENS = 128  # the one default of every standalone command (demo / iterate: 64, set in their configs)


@dataclass
class SamplingConfig:
    """``--sampling.*``: the response budget, the decoding rule and the batching of one sampling command."""

    max_new_tokens: int = option(MAX_NEW_TOKENS, "max response tokens (a response cut off here has ended=false)",
                                 ge=1)
    temperature: float = option(1.0, "sampling temperature (reference: 1.0)", gt=0)
    top_p: float = option(1.0, "nucleus sampling threshold (reference: 1.0; 1 = off)", gt=0, le=1)
    greedy: bool = option(False, "greedy decoding (argmax) instead of sampling; temperature and top_p are unused")
    n: int = option(1, "responses per prompt (generate: 2 writes response pairs; must be 1 in ppo, best-of-k and "
                       "rs-finetune, which take --k)", ge=1)
    max_prompt_length: int = option(256, "prompts are cut to their last N tokens (chat frame kept)", ge=1)
    batch_size: int = option(64, "sequences per generation batch (ppo: unused, a rollout is one batch of "
                                 "rollout.prompts_per_step prompts)", ge=1)


# old flag -> new key, for the configs whose sampling fields moved under ``sampling.`` (one release of notice)
RENAMED = {name: f"sampling.{name}" for name in ("max_new_tokens", "max_prompt_length", "temperature", "top_p",
                                                  "greedy")}


def require_one_per_prompt(sampling: SamplingConfig, command: str, instead: str) -> None:
    """A ConfigError when a command that fixes the responses per prompt itself is given ``sampling.n`` != 1."""
    if sampling.n != 1:
        raise ConfigError(f"sampling.n: {command} does not use it ({instead}); leave it at 1")
