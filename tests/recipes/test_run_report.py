"""`saferlhf report RUN` end to end on tiny runs: a PPO-Lag run folder gets λ / J_c vs d, rewards and KL figures, a
score-model run its loss and accuracy; report.html holds the provenance, captions and the last value of every
metric; the finished run's status claims the new files (so `--overwrite` may still replace the run); a run still
being written, `--out` elsewhere and a folder that is no run."""

from __future__ import annotations

import json
import shutil

import pytest

from saferlhf.cli import main
from saferlhf.tracking import foreign_entries, read_jsonl


@pytest.fixture(scope="module")
def runs(tiny_models, pku_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base = tiny_models["llama"]
    for kind in ("reward", "cost"):
        assert main(["score-model", "--kind", kind, "--model_path", str(base), "--train_file", str(pku_file),
                     "--out", str(root / kind), "--max_steps", "6", "--batch_size", "16", "--max_length", "64",
                     "--log_every", "1", "--eval_ratio", "0.25", "--runtime.progress", "false"]) == 0
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?"}) + "\n" for t in ("rice", "tea", "soup")))
    assert main(["ppo", "--algorithm", "ppo_lag", "--actor_path", str(base), "--reward_model_path",
                 str(root / "reward" / "model"), "--cost_model_path", str(root / "cost" / "model"),
                 "--train_prompts", str(prompts), "--out", str(root / "ppo"), "--steps", "3",
                 "--rollout.prompts_per_step", "3", "--sampling.max_new_tokens", "6", "--ppo_epochs", "1",
                 "--num_minibatches", "1", "--runtime.progress", "false"]) == 0
    return root


def copy_run(runs, name, tmp_path):
    return shutil.copytree(runs / name, tmp_path / name)


def test_report_of_a_ppo_lag_run(runs, tmp_path, capsys):
    run = copy_run(runs, "ppo", tmp_path)
    assert main(["report", str(run)]) == 0
    assert f"-> {run / 'report.html'}" in capsys.readouterr().out
    for name in ("lagrange", "rewards", "kl", "violations", "actor", "critics"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 1000, name
    assert not (run / "plots" / "loss.png").exists()  # PPO logs no train/loss: no empty figure
    html = (run / "report.html").read_text()
    assert "saferlhf ppo" in html and "<dd>complete</dd>" in html and "<dd>ppo_lag</dd>" in html
    assert "<dt>threshold d</dt><dd>0.0</dd>" in html and f"<dt>cost model</dt><dd>{runs / 'cost' / 'model'}</dd>" in html
    assert "torch" in html and "transformers" in html and "resolved config (config.yaml)" in html
    assert "λ rises while J_c &gt; d" in html and "KL(π_θ ‖ π_ref)" in html
    assert html.count('<img src="data:image/png;base64,') == len(list((run / "plots").iterdir()))
    last = read_jsonl(run / "metrics.jsonl")[-1]
    assert f"<td>lagrange/lambda</td><td>{last['lagrange/lambda']:.4g}</td><td>3</td>" in html
    # the report's files count as the run's: --overwrite may still replace the folder
    status = json.loads((run / "status.json").read_text())
    assert {"report.html", "plots"} <= set(status["entries"]) and status["state"] == "complete"
    assert foreign_entries(run) == []


def test_report_of_a_score_model_run(runs, tmp_path):
    run = copy_run(runs, "cost", tmp_path)
    assert main(["report", str(run)]) == 0
    drawn = sorted(p.stem for p in (run / "plots").iterdir())
    assert {"loss", "accuracy", "scores", "optimisation"} <= set(drawn) and "lagrange" not in drawn
    html = (run / "report.html").read_text()
    assert "saferlhf score-model" in html and "<dd>cost</dd>" in html
    assert "Held-out scores of the chosen and rejected responses" in html  # the run's own score_distribution.png
    assert "<td>eval/sign_accuracy</td>" in html and "<td>train/loss</td>" in html


def test_a_run_being_written_and_out_elsewhere(runs, tmp_path, capsys):
    run = copy_run(runs, "ppo", tmp_path)
    status = json.loads((run / "status.json").read_text()) | {"state": "running"}
    (run / "status.json").write_text(json.dumps(status))
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "reward/me')  # a line the run is still writing
    out = tmp_path / "elsewhere"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert (out / "report.html").exists() and (out / "plots" / "lagrange.png").exists()
    assert not (run / "report.html").exists() and not (run / "plots").exists()
    assert "1 unreadable line(s) skipped" in (out / "report.html").read_text()
    from saferlhf.eval.run_report import claim_entries

    claim_entries(run, ["report.html", "plots"])  # a running run lists its folder itself when it ends
    assert json.loads((run / "status.json").read_text()) == status


def test_a_folder_that_is_no_run_is_one_line(runs, tmp_path, capsys):
    assert main(["report", str(runs)]) == 2  # a folder of runs: name them
    err = capsys.readouterr().err
    assert "has no metrics.jsonl; the runs inside it: cost, ppo, reward" in err and "Traceback" not in err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "has no logged step yet" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "  report " in capsys.readouterr().out
