"""Fixtures shared by the fault-injection tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """`--runtime.threads 1` sets torch's thread count in this process: put it back after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A tiny causal LM (1 layer) for the fault tests."""
    from saferlhf.models import build_tiny_model

    texts = [f"how do I cook {t}? {g} and serve it." for t in ("rice", "tea", "soup") for g in ("stir", "rinse")] * 4
    return build_tiny_model(tmp_path_factory.mktemp("lm") / "m", texts, vocab_size=300, hidden_size=32,
                            num_layers=1, num_heads=2)
