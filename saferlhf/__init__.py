"""saferlhf: Safe RLHF (Dai et al., ICLR 2024) on Hugging Face models.

Reward model (helpfulness) + cost model (harmfulness, cost > 0 means unsafe) + PPO-Lagrangian.
`import saferlhf` stays light: heavy modules are imported by the code that needs them.

The Python API (`saferlhf.api`, docs/api.md), imported on first use:

    from saferlhf import sft, score_model, ppo, dpo, evaluate, score
"""

from typing import Any

__version__ = "0.1.0"

# names served by `saferlhf.api`, imported on first access (PEP 562), so that `import saferlhf` imports nothing
_API = ("sft", "score_model", "ppo", "dpo", "evaluate", "score", "run", "RunResult",
        "SFTConfig", "ScoreModelConfig", "PPOConfig", "DPOConfig", "EvalConfig")


def __getattr__(name: str) -> Any:
    if name in _API:  # by name, the usual lazy-module idiom: the package imports nothing at import time
        import importlib

        return getattr(importlib.import_module("saferlhf.api"), name)
    raise AttributeError(f"module 'saferlhf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
