"""Shared fixtures (built once per session, CPU, seconds): tiny models per architecture and small data files
for the recipe and fault tests. Real public data lives in ../shared/data (next to the repository), never in it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _generation_cache(tmp_path_factory):
    """`saferlhf eval`'s generation cache goes to a temporary folder, never the user's ~/.cache."""
    import os

    old = os.environ.get("SAFERLHF_CACHE")
    os.environ["SAFERLHF_CACHE"] = str(tmp_path_factory.mktemp("generation-cache"))
    yield
    if old is None:
        os.environ.pop("SAFERLHF_CACHE", None)
    else:
        os.environ["SAFERLHF_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-data folder; tests that need it skip with a clear reason where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not found: real-data tests need the shared data folder")
    return SHARED_DATA


TOPICS = ["rice", "pasta", "soup", "bread", "tea", "salad", "eggs", "beans"]
GOOD = ["rinse it first", "use low heat", "add a pinch of salt", "stir it often", "taste as you go"]
BAD = ["buy a stolen knife", "hurt the cook", "poison the neighbor", "steal the recipe book"]


def _texts() -> list[str]:
    out = []
    for t in TOPICS:
        for g in GOOD + BAD:
            out.append(f"how do I cook {t}? {g} and serve the {t} warm.")
    return out * 3


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny causal LM per architecture (trained tokenizer + model from a config)."""
    from saferlhf.models import build_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_model(root / arch, _texts(), arch=arch, vocab_size=400, hidden_size=32,
                                   num_layers=2, num_heads=2, seed=0)
            for arch in ("llama", "qwen2", "gpt2")}


@pytest.fixture(scope="session")
def sft_file(tmp_path_factory) -> Path:
    rng = random.Random(0)
    rows = [{"prompt": f"how do I cook {t}?", "response": f"{rng.choice(GOOD)} and serve the {t} warm."}
            for t in TOPICS for _ in range(8)]
    return write_jsonl(tmp_path_factory.mktemp("sft") / "sft.jsonl", rows)


@pytest.fixture(scope="session")
def pku_file(tmp_path_factory) -> Path:
    """PKU-SafeRLHF-schema dual preferences. Helpfulness = number of cooking tips (2 beats 1); safety =
    no harmful phrase. In half the pairs the harmful answer is the more helpful one, so the reward and
    cost rankings disagree there, as in the paper's data."""
    rng = random.Random(1)
    rows = []
    for i in range(96):
        t = TOPICS[i % len(TOPICS)]
        tips = rng.sample(GOOD, 3)
        unsafe_more_helpful = i % 2 == 0
        n_safe, n_unsafe = (1, 2) if unsafe_more_helpful else (2, 1)
        safe = f"{' and '.join(tips[:n_safe])}, then serve the {t} warm."
        unsafe = f"{rng.choice(BAD)} and {' and '.join(tips[1:1 + n_unsafe])}, then serve the {t} warm."
        unsafe_id = int(rng.random() < 0.5)
        r = {unsafe_id: unsafe, 1 - unsafe_id: safe}
        rows.append({"prompt": f"how do I cook {t}?", "response_0": r[0], "response_1": r[1],
                     "is_response_0_safe": unsafe_id != 0, "is_response_1_safe": unsafe_id != 1,
                     "better_response_id": unsafe_id if unsafe_more_helpful else 1 - unsafe_id,
                     "safer_response_id": 1 - unsafe_id})
    return write_jsonl(tmp_path_factory.mktemp("pku") / "prefs.jsonl", rows)


@pytest.fixture
def llama_mlp_calls(monkeypatch) -> list:
    """A list that grows by one at every LlamaMLP forward (one per decoder layer per forward; gradient
    checkpointing runs each layer again in backward). Clear it between runs."""
    from transformers.models.llama import modeling_llama

    calls: list = []
    forward = modeling_llama.LlamaMLP.forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(modeling_llama.LlamaMLP, "forward", counted)
    return calls
