"""Run folders and output files: --overwrite of what saferlhf did not write, an output that is an input, a run
folder in use by another process, a resume after the training file changed (docs/reliability.md §3)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

GROUP = "runfolder"

# holds an flock on a folder until the fuzz process (its parent) is gone
HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
parent = os.getppid()
print("locked", flush=True)
while os.getppid() == parent:
    time.sleep(1)
"""


def _copy_run(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def _hold_lock(folder: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()


def cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    tmp = Path(tmp) / "runfolder"
    tmp.mkdir(parents=True, exist_ok=True)
    sft = ["sft", "--model_path", str(env["base"]), "--train_file", str(env["sft"]), "--max_steps", "1"]

    cfg_only = tmp / "config_yaml_only"
    cfg_only.mkdir(exist_ok=True)
    (cfg_only / "config.yaml").write_text("seed: 0\n")
    (cfg_only / "thesis.tex").write_text("precious")
    foreign = _copy_run(env["done_sft"], tmp / "run_with_foreign_file")
    (foreign / "thesis.tex").write_text("precious")
    reads_own = _copy_run(env["done_sft"], tmp / "run_reads_its_own_file")
    changed = _copy_run(env["done_sft"], tmp / "run_input_changed")
    saved = yaml.safe_load((changed / "config.yaml").read_text())
    (changed / "config.yaml").write_text(yaml.safe_dump(saved | {"out": str(changed)}, sort_keys=False))
    inputs = json.loads((changed / "inputs.json").read_text()) if (changed / "inputs.json").exists() else {}
    for rec in inputs.values():
        rec["sha256"] = "0" * 64  # as if train_file had changed since the run started
    (changed / "inputs.json").write_text(json.dumps(inputs))
    busy = _copy_run(env["done_sft"], tmp / "run_in_use")
    _hold_lock(busy)

    gguf_home = tmp / "gguf_home"
    gguf_home.mkdir(exist_ok=True)
    (gguf_home / "import.json").write_text("{}")
    (gguf_home / "model.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    gguf = tmp / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)

    gens = tmp / "gens.jsonl"
    gens.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?", "response": "stir it.",
                                        "response_0": "stir it.", "response_1": "rinse it."}) + "\n"
                            for t in ("rice", "tea")))
    other_spelling = str(tmp / "." / "gens.jsonl")
    return [
        ("sft overwrite a folder with config.yaml but no run signature",
         [*sft, "--out", str(cfg_only), "--overwrite", "true"]),
        ("sft overwrite a run folder holding a foreign file", [*sft, "--out", str(foreign), "--overwrite", "true"]),
        ("sft overwrite the run folder it reads its model from",
         ["sft", "--model_path", str(reads_own / "model"), "--train_file", str(env["sft"]), "--max_steps", "1",
          "--out", str(reads_own), "--overwrite", "true"]),
        ("sft resume after the training file changed", [*sft[:-1], "2", "--out", str(changed), "--resume", "true"]),
        ("sft resume a run folder in use by another process", [*sft, "--out", str(busy), "--resume", "true"]),
        ("sft overwrite a run folder in use by another process", [*sft, "--out", str(busy), "--overwrite", "true"]),
        ("import-gguf with the GGUF inside the output folder",
         ["model", "import-gguf", str(gguf_home / "model.gguf"), str(gguf_home), "--overwrite", "true"]),
        ("import-gguf overwrite a folder that is not an import",
         ["model", "import-gguf", str(gguf), str(env["notrun"]), "--overwrite", "true"]),
        ("tiny-model overwrite a folder that is not a model", ["tiny-model", "--out", str(env["notrun"]),
                                                               "--overwrite", "true"]),
        ("generate out is its prompts file", ["generate", "--model_path", str(env["base"]), "--prompts", str(gens),
                                              "--out", other_spelling]),
        ("cost-threshold out is its input", ["cost-threshold", "--cost_model", str(env["cm"]), "--input", str(gens),
                                             "--method", "quantile", "--out", other_spelling]),
        ("score out is its input", ["score", "--cost_model", str(env["cm"]), "--input", str(gens),
                                    "--out", other_spelling]),
        ("world annotate out is its input", ["world", "annotate", "--input", str(gens), "--out", other_spelling]),
    ]
