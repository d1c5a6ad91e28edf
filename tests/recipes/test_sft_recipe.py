"""`saferlhf sft` end to end on tiny models: every parameter changes and the loss falls; the batching shared
with score-model training; the hardening (numerical stops, run folders, model paths, checkpointing)."""

from __future__ import annotations

import itertools
import json
import re
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from saferlhf.batching import batch_stream, rank_share
from saferlhf.cli import main
from saferlhf.recipes.sft import epoch_batches
from saferlhf.tracking import read_jsonl


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sft_trains_every_parameter_and_loss_falls(arch, tiny_models, sft_file, tmp_path):
    out = tmp_path / "sft"
    rc = main(["sft", "--model_path", str(tiny_models[arch]), "--train_file", str(sft_file), "--out", str(out),
               "--eval_file", str(sft_file), "--batch_size", "8", "--max_steps", "40", "--log_every", "1",
               "--optim.lr", "1e-2", "--optim.weight_decay", "0", "--max_length", "64", "--runtime.progress", "false"])
    assert rc == 0
    before = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "train/loss" in r]
    assert rows[-1]["train/loss"] < 0.5 * rows[0]["train/loss"]
    assert (out / "config.yaml").exists()
    ev = [r for r in read_jsonl(out / "metrics.jsonl") if "eval/loss" in r]
    assert ev and ev[-1]["eval/loss"] < rows[0]["train/loss"]


def test_sft_packing(tiny_models, sft_file, tmp_path):
    out = tmp_path / "sft_packed"
    assert main(["sft", "--model_path", str(tiny_models["llama"]), "--train_file", str(sft_file), "--out", str(out),
                 "--packing", "--max_length", "64", "--batch_size", "4", "--max_steps", "6",
                 "--runtime.progress", "false"]) == 0
    assert (out / "model" / "config.json").exists()


def test_sft_rejects_bad_data_before_training(tiny_models, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "response": "hello"}\n{"prompt": "x", "response": ""}\nnot json\n')
    rc = main(["sft", "--model_path", str(tiny_models["llama"]), "--train_file", str(bad), "--out", str(tmp_path / "o")])
    msg = capsys.readouterr().err
    assert rc == 2
    assert f"{bad}:2" in msg and "response" in msg and f"{bad}:3" in msg
    assert not (tmp_path / "o" / "model").exists()


def test_missing_model_path_is_a_clear_error(sft_file, tmp_path, capsys):
    rc = main(["sft", "--model_path", str(tmp_path / "nope"), "--train_file", str(sft_file), "--out", str(tmp_path / "o")])
    assert rc == 2 and "model path not found" in capsys.readouterr().err


# ---------------------------------------------------------------- batching shared with score-model (pure functions)
@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_rank_share_gives_every_rank_rows_and_counts_each_row_once(world, n):
    rows = [f"r{i}" for i in range(n)]
    shares = [rank_share(rows, rank, world) for rank in range(world)]
    assert all(len(mine) >= 1 for mine, _ in shares)  # every rank runs forward/backward (DDP)
    weighted = sorted(r for mine, w in shares if w > 0 for r in mine)
    assert weighted == sorted(rows)  # each row counted exactly once; a padding row has weight 0
    # the DDP average of the ranks' weighted losses is the mean over the ranks that hold rows
    assert sum(w for _, w in shares) / world == pytest.approx(1.0)
    assert [w for _, w in shares if w == 0] == [0.0] * max(0, world - n)


def test_rank_share_single_process_is_the_whole_batch():
    assert rank_share([1, 2, 3], 0, 1) == ([1, 2, 3], 1.0)


def test_batch_order_is_a_pure_function_of_seed_and_epoch():
    examples = [([i, i + 1], 1) for i in range(10)]
    a = epoch_batches(examples, 3, seed=0, epoch=1, packing=False, max_length=8)
    assert a == epoch_batches(examples, 3, seed=0, epoch=1, packing=False, max_length=8)
    assert a != epoch_batches(examples, 3, seed=0, epoch=2, packing=False, max_length=8)
    assert [len(b) for b in a] == [3, 3, 3, 1]

    def make(e):
        return epoch_batches(examples, 3, seed=0, epoch=e, packing=False, max_length=8)

    full = list(itertools.islice(batch_stream(make), 10))
    assert list(itertools.islice(batch_stream(make, start_step=6), 4)) == full[6:]  # the step locates the data


def test_batch_stream_refuses_an_empty_epoch():
    with pytest.raises(RuntimeError, match="no batches"):
        next(batch_stream(lambda epoch: []))


# ---------------------------------------------------------------- hardening
def _sft(model, data, out, *extra):
    return main(["sft", "--model_path", str(model), "--train_file", str(data), "--out", str(out), "--batch_size", "8",
                 "--max_length", "48", "--runtime.progress", "false", *extra])


def test_huge_learning_rate_stops_naming_step_and_tensor(tiny_models, sft_file, tmp_path, capsys):
    out = tmp_path / "o"
    assert _sft(tiny_models["llama"], sft_file, out, "--max_steps", "6", "--optim.lr", "1e30", "--save_every", "1") == 3
    err = capsys.readouterr().err
    assert re.search(r"stopped: step [1-6]: (loss|policy gradient norm|policy parameters|policy weights exploded)",
                     err), err
    assert not (out / "checkpoint" / "COMPLETE").exists()  # step 1's 1e30 weights are never saved
    assert not (out / "model").exists()
    assert json.loads((out / "status.json").read_text())["state"] == "failed"


def test_non_finite_loss_stops_at_the_first_step(tiny_models, sft_file, tmp_path, capsys):
    model = AutoModelForCausalLM.from_pretrained(tiny_models["llama"])
    with torch.no_grad():
        model.get_input_embeddings().weight.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nan")
    AutoTokenizer.from_pretrained(tiny_models["llama"]).save_pretrained(tmp_path / "nan")
    assert _sft(tmp_path / "nan", sft_file, tmp_path / "o", "--max_steps", "3") == 3
    assert "stopped: step 1: loss is not finite" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model").exists()


def test_gradient_checkpointing_recomputes_every_layer(tiny_models, sft_file, tmp_path, llama_mlp_calls):
    """With checkpointing each decoder layer runs twice per training step (forward, then again in backward)."""
    calls, counts = llama_mlp_calls, {}
    for on in ("false", "true"):
        calls.clear()
        assert _sft(tiny_models["llama"], sft_file, tmp_path / on, "--max_steps", "3",
                    "--runtime.gradient_checkpointing", on) == 0
        counts[on] = len(calls)
    layers = AutoModelForCausalLM.from_pretrained(tmp_path / "true" / "model").config.num_hidden_layers
    assert counts["true"] - counts["false"] == 3 * layers


def test_run_folder_rule(tiny_models, sft_file, tmp_path, capsys):
    out = tmp_path / "o"
    assert _sft(tiny_models["llama"], sft_file, out, "--max_steps", "2") == 0
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "complete" and status["command"] == "sft"
    capsys.readouterr()
    assert _sft(tiny_models["llama"], sft_file, out, "--max_steps", "2") == 2
    assert "already holds a run (complete)" in capsys.readouterr().err
    assert _sft(tiny_models["llama"], sft_file, out, "--max_steps", "2", "--overwrite", "true") == 0
    # resuming a finished run changes nothing: no step is trained or logged again
    rows = read_jsonl(out / "metrics.jsonl")
    weights = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert _sft(tiny_models["llama"], sft_file, out, "--max_steps", "2", "--resume", "true") == 0
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [r["step"] for r in rows]
    again = AutoModelForCausalLM.from_pretrained(out / "model").state_dict()
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_an_empty_train_file_is_an_error_naming_it(tiny_models, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert _sft(tiny_models["llama"], empty, tmp_path / "o", "--max_steps", "2") == 2
    assert str(empty) in capsys.readouterr().err


@pytest.mark.parametrize("make", ["text file", "empty folder", "no weights"])
def test_bad_model_path_is_one_clear_line(make, tiny_models, sft_file, tmp_path, capsys):
    p = tmp_path / "m"
    if make == "text file":
        p.write_text("hello")
    elif make == "empty folder":
        p.mkdir()
    else:
        shutil.copytree(tiny_models["llama"], p)
        (p / "model.safetensors").unlink()
    assert _sft(p, sft_file, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(p) in err and "expected a folder with config.json" in err
    assert not (tmp_path / "o").exists()
