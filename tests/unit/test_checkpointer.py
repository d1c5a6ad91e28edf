"""Checkpointer: atomic save / load with per-rank state; a checkpoint of another process count is refused."""

import shutil

import pytest
import torch

from saferlhf.errors import UserError
from saferlhf.training import Checkpointer


@pytest.fixture
def acc_and_model():
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model, opt = acc.prepare(model, opt)
    return acc, model


def test_save_then_load_restores_weights_and_rank_state(acc_and_model, tmp_path):
    acc, model = acc_and_model
    ckpt = Checkpointer(acc, tmp_path)
    ckpt.save({"window": [1.0, 2.0]})
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert ckpt.exists() and ckpt.load() == {"window": [1.0, 2.0]}
    assert torch.equal(model.weight, saved)
    assert not (tmp_path / ".checkpoint.tmp").exists()


def test_a_checkpoint_of_another_process_count_is_refused(acc_and_model, tmp_path):
    acc, _ = acc_and_model
    ckpt = Checkpointer(acc, tmp_path)
    ckpt.save()
    shutil.copy(ckpt.dir / "random_states_0.pkl", ckpt.dir / "random_states_1.pkl")  # as 2 processes write it
    with pytest.raises(UserError, match="written by 2 processes; resume it with 2, not 1"):
        ckpt.load()


def test_bad_values_counts_and_locates_the_first():
    from saferlhf.training import bad_values

    assert bad_values(torch.tensor([1.0, 2.0])) is None
    assert bad_values(torch.tensor([[1.0, float("nan")], [float("inf"), 3.0]])) == (2, 1, pytest.approx(float("nan"),
                                                                                                      nan_ok=True))
    assert bad_values(torch.tensor([1.0, -5.0, 7.0]), limit=4.0) == (2, 1, -5.0)
