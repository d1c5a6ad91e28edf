"""Fixtures shared by the fault-injection tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """`--runtime.threads 1` sets torch's thread count in this process: put it back after each test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
