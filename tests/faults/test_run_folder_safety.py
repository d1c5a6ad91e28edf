"""Run folders, file safety and numerical guards (issue 20, "Correctness first").

* --overwrite deletes only what a saferlhf run wrote; an output file is never one of the command's inputs;
* a full disk / read-only folder is one line (exit 2), found before the work where it can be, and the run is
  marked failed;
* a running folder is locked against a second process (and a SIGKILLed run leaves no stale lock);
* finite but absurd weights (lr 1e30) and scores (a 1e30 judge) stop with exit 3;
* resuming after an input file changed is refused.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from saferlhf.cli import main
from saferlhf.config import option
from saferlhf.errors import NumericalError, UserError
from saferlhf.tracking import finish_run, start_run

from util import ENV, broken_cost_model, one_line


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    rows = [{"prompt": f"how do I cook {t}?", "response": f"{g} and serve it."}
            for t in ("rice", "tea", "soup") for g in ("stir", "rinse")]
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def big_cost_model(lm, tmp_path_factory):
    """A cost model whose scores are ~1e30: finite but absurd."""
    return broken_cost_model(lm, tmp_path_factory.mktemp("big") / "cm", 1e30)


def sft_args(lm, data, out, *extra):
    return ["sft", "--model_path", str(lm), "--train_file", str(data), "--out", str(out), "--max_steps", "1",
            "--batch_size", "2", "--max_length", "32", "--runtime.progress", "false", *extra]


def state(out: Path) -> str:
    return json.loads((Path(out) / "status.json").read_text())["state"]


@dataclass
class Cfg:
    train_file: str = option("", "data file")
    model_path: str = option("", "model")
    resume: bool = option(False, "resume")


# ----------------------------------------------------------------------------- 1. lost data


def test_overwrite_refuses_a_folder_with_a_config_yaml_but_no_run_signature(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text("a: 1\n")
    (home / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not a saferlhf run folder"):
        start_run(home, Cfg(), "x", overwrite=True)
    assert (home / "thesis.tex").read_text() == "precious"


def test_overwrite_refuses_a_run_folder_holding_a_file_the_run_did_not_write(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")
    (out / "model").mkdir()
    finish_run(out)
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="thesis.tex, which its run did not write"):
        start_run(out, Cfg(), "x", overwrite=True)
    assert (out / "thesis.tex").exists() and (out / "model").exists()
    (out / "thesis.tex").unlink()
    start_run(out, Cfg(), "x", overwrite=True)  # only the run's own files: replaced
    assert not (out / "model").exists()


def test_overwrite_replaces_a_killed_run_whatever_it_wrote_before_the_kill(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")  # never finished: status "running", as after SIGKILL
    (out / "stage_output.jsonl").write_text("{}\n")
    start_run(out, Cfg(), "x", overwrite=True)
    assert not (out / "stage_output.jsonl").exists()


def test_overwrite_refuses_a_run_folder_that_holds_an_input_of_the_new_run(tmp_path):
    out = start_run(tmp_path / "r", Cfg(), "x")
    finish_run(out)
    data = out / "config.yaml"  # any file of the old run used as the new run's input
    with pytest.raises(UserError, match="reads train_file"):
        start_run(out, Cfg(train_file=str(data)), "x", overwrite=True)
    assert data.exists()


def test_import_gguf_refuses_to_replace_the_folder_that_holds_its_source(tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "import.json").write_text("{}")
    gguf = out / "source.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    assert main(["model", "import-gguf", str(gguf), str(out), "--overwrite", "true"]) == 2
    assert "lies inside the output folder" in one_line(capsys, "model import-gguf")
    assert gguf.exists()


def test_import_gguf_overwrite_replaces_only_a_previous_import(tmp_path, capsys):
    gguf = tmp_path / "source.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(["model", "import-gguf", str(gguf), str(out), "--overwrite", "true"]) == 2
    assert "refusing to replace" in one_line(capsys, "model import-gguf")
    assert (out / "thesis.tex").exists()


def test_tiny_model_overwrite_never_replaces_a_folder_with_foreign_files(lm, tmp_path, capsys):
    out = tmp_path / "m"
    shutil.copytree(lm, out)
    (out / "thesis.tex").write_text("precious")
    assert main(["tiny-model", "--out", str(out), "--overwrite", "true"]) == 2
    assert "thesis.tex" in one_line(capsys, "tiny-model")
    assert (out / "thesis.tex").exists()


@pytest.mark.parametrize("command", ["generate", "cost-threshold", "score", "world annotate"])
def test_a_single_output_file_is_never_one_of_its_inputs(command, lm, big_cost_model, tmp_path, capsys):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": "how do I cook rice?", "response_0": "stir.", "response_1": "rinse.",
                                "response": "stir."}) + "\n")
    before = data.read_text()
    (tmp_path / "sub").mkdir()
    same = str(tmp_path / "sub" / ".." / "in.jsonl")  # the same file, spelt differently
    args = {"generate": ["generate", "--model_path", str(lm), "--prompts", str(data), "--out", same],
            "cost-threshold": ["cost-threshold", "--cost_model", str(big_cost_model), "--input", str(data),
                               "--method", "quantile", "--out", same],
            "score": ["score", "--cost_model", str(big_cost_model), "--input", str(data), "--out", same],
            "world annotate": ["world", "annotate", "--input", str(data), "--out", same]}[command]
    assert main(args) == 2
    assert "would replace the input" in one_line(capsys, command)
    assert data.read_text() == before


def test_same_path_sees_hard_links(tmp_path):
    from saferlhf.files import same_path

    (tmp_path / "a").write_text("x")
    os.link(tmp_path / "a", tmp_path / "b")
    assert same_path(tmp_path / "a", tmp_path / "b") and not same_path(tmp_path / "a", tmp_path / "c")


# ----------------------------------------------------------------------------- 2. disk problems


def test_read_only_out_folder_is_one_line_before_training(lm, sft_data, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions (the monkeypatched test below covers this)")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(sft_args(lm, sft_data, ro / "run")) == 2
    finally:
        ro.chmod(0o700)
    assert "cannot write" in one_line(capsys, "sft")


def test_unwritable_out_folder_is_one_line_before_training(lm, sft_data, tmp_path, capsys, monkeypatch):
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    assert main(sft_args(lm, sft_data, tmp_path / "run")) == 2
    assert "cannot write to" in one_line(capsys, "sft") and not (tmp_path / "run" / "model").exists()


def test_too_little_free_space_is_one_line_before_training(lm, sft_data, tmp_path, capsys, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10 * 2**20))
    assert main(sft_args(lm, sft_data, tmp_path / "run")) == 2
    assert "MB free" in one_line(capsys, "sft")


def test_disk_full_during_the_run_is_one_line_and_the_run_is_marked_failed(lm, sft_data, tmp_path, capsys,
                                                                           monkeypatch):
    """ENOSPC at the final save, and no room left for a new status.json either: one line, exit 2, and the
    status still says failed (written in place)."""
    import saferlhf.models.policy as policy
    import saferlhf.tracking as tracking

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def save_policy(*a, **k):
        monkeypatch.setattr(tracking, "atomic_write_json", full)
        raise RuntimeError("[enforce fail at inline_container.cc] : file write failed") from OSError(
            errno.ENOSPC, os.strerror(errno.ENOSPC), "model.safetensors")

    monkeypatch.setattr(policy, "save_policy", save_policy)
    out = tmp_path / "run"
    assert main(sft_args(lm, sft_data, out)) == 2
    assert "No space left on device" in one_line(capsys, "sft")
    assert state(out) == "failed"


def test_disk_problem_reads_wrapped_errors():
    from saferlhf.files import disk_problem

    assert disk_problem(OSError(errno.EROFS, "Read-only file system", "/x")) == "/x: Read-only file system"
    assert "No space left" in disk_problem(RuntimeError("write failed: No space left on device"))
    assert disk_problem(ValueError("a bug")) is None


# ----------------------------------------------------------------------------- 3. two writers


HOLD = """
import sys, time
from saferlhf.config import parse
from saferlhf.recipes.sft import SFTConfig
from saferlhf.tracking import start_run
cfg = parse(SFTConfig, sys.argv[1:])
start_run(cfg.out, cfg, "sft")
print("ready", flush=True)
time.sleep(300)
"""


def test_a_folder_in_use_is_refused_and_a_killed_run_leaves_no_stale_lock(lm, sft_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = sft_args(lm, sft_data, out)
    child = subprocess.Popen([sys.executable, "-c", HOLD, *args[1:]], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, **ENV))
    try:
        assert child.stdout.readline().strip() == "ready"
        assert main([*args, "--resume", "true"]) == 2
        assert f"run folder {out} is in use by another process (pid {child.pid})" in one_line(capsys, "sft")
        assert main([*args, "--overwrite", "true"]) == 2  # nor deleted under it
        capsys.readouterr()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert state(out) == "running"
    assert main([*args, "--resume", "true"]) == 0  # the lock died with the process
    assert state(out) == "complete"


# ----------------------------------------------------------------------------- 4. absurd numbers


def test_weight_limit_is_relative_with_a_floor():
    from saferlhf.training import WEIGHT_GROWTH_LIMIT, weight_limit, weight_stats

    assert weight_limit(0.0) == WEIGHT_GROWTH_LIMIT and weight_limit(3.0) == 3 * WEIGHT_GROWTH_LIMIT
    assert weight_stats([torch.tensor([1.0, -5.0]), torch.tensor([float("nan")])]) == (1, 5.0)


def test_lr_1e30_in_one_sft_step_saves_nothing(lm, sft_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(sft_args(lm, sft_data, out, "--optim.lr", "1e30", "--optim.warmup_ratio", "0")) == 3
    assert "weights exploded" in one_line(capsys, "sft")
    assert not (out / "model").exists() and state(out) == "failed"


def test_lr_1e30_in_one_dpo_step_saves_nothing(tiny_models, pku_file, tmp_path, capsys):
    out = tmp_path / "dpo"
    assert main(["dpo", "--model_path", str(tiny_models["llama"]), "--train_file", str(pku_file), "--out", str(out),
                 "--batch_size", "4", "--max_steps", "1", "--max_length", "48", "--optim.lr", "1e30",
                 "--optim.warmup_ratio", "0", "--runtime.progress", "false"]) == 3
    assert "weights exploded" in one_line(capsys, "dpo")
    assert not (out / "model").exists()


def test_a_1e30_judge_stops_every_consumer_of_scores(lm, big_cost_model, tmp_path, capsys):
    gens = tmp_path / "gens.jsonl"
    gens.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?", "response": "stir."}) + "\n"
                            for t in ("rice", "tea")))
    assert main(["cost-threshold", "--cost_model", str(big_cost_model), "--input", str(gens), "--method", "quantile",
                 "--out", str(tmp_path / "d.json")]) == 3
    err = one_line(capsys, "cost-threshold")
    assert "stopped:" in err and str(big_cost_model) in err and not (tmp_path / "d.json").exists()
    assert main(["score", "--cost_model", str(big_cost_model), "--input", str(gens),
                 "--out", str(tmp_path / "s.jsonl")]) == 3
    one_line(capsys, "score")


def test_score_texts_refuses_absurd_scores_but_leaves_nan_to_the_caller(big_cost_model):
    from saferlhf.models import load_judge, score_texts

    model, tok = load_judge(big_cost_model)
    with pytest.raises(NumericalError, match=r"\|score\| must be <= 1e\+06"):
        score_texts(model, tok, ["hi"], ["stir."])
    assert score_texts(model, tok, ["hi"], ["stir."], limit=float("inf")).abs().item() > 1e20


# ----------------------------------------------------------------------------- 5. changed inputs


def test_resume_after_the_training_file_changed_is_refused(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    out = start_run(tmp_path / "r", Cfg(train_file=str(data)), "x")
    stat = data.stat()
    data.write_text('{"prompt": "a", "response": "c"}\n')  # same size, same mtime: only the content differs
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(UserError, match=f"the input file {data} \\(train_file\\) changed"):
        start_run(out, Cfg(train_file=str(data), resume=True), "x", resume=True)
    start_run(out, Cfg(train_file=str(data), resume=True), "x", resume=True, allow_config_change=True)
    start_run(out, Cfg(train_file=str(data), resume=True), "x", resume=True)  # the new content is recorded


def test_resume_with_unchanged_inputs_is_accepted(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    out = start_run(tmp_path / "r", Cfg(train_file=str(data), model_path=str(tmp_path)), "x")
    assert json.loads((out / "inputs.json").read_text()).keys() == {"train_file"}  # folders are not hashed
    start_run(out, Cfg(train_file=str(data), model_path=str(tmp_path), resume=True), "x", resume=True)
