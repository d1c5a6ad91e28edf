"""DPO training throughput: saferlhf vs TRL 1.16 DPOTrainer, same model, data and settings.

    bash bench/setup_peers.sh && python bench/bench_dpo.py            -> bench/results/dpo.json

Builds the tiny Llama of bench_reward_model.py (vocab 2048, hidden 256, 4 layers, 4 heads; fp32) and the same
kind of synthetic preference set (responses 30-120 tokens), then trains DPO (β = 0.1) with (a)
`saferlhf.recipes.dpo.run` in this process and (b) TRL's `DPOTrainer` in `bench/.venv-trl116` (subprocess,
`bench/peers/trl_dpo.py`). Both: the same model folder, the same pairs (TRL gets them as conversational messages,
so the chat template yields the same token sequences), per-device batch, max length, number of steps, fp32,
no gradient checkpointing, no eval, no saving inside the timed window, the same torch thread count, and the
same reference handling (`--precompute_ref`: default false on both sides, TRL's default: the reference model
runs a forward every step; true: both precompute the reference log-probs before training, outside the window).

saferlhf's batches are padding-free (the 2B sequences in one row, the prompt computed once per pair, the LM
head on response positions only); TRL 1.16's DPOTrainer pads chosen and rejected to the longest sequence (its
`padding_free` is disabled since its refactor) and runs the LM head at every position.

Timing as in bench_reward_model.py: end-of-step stamps, `warmup` untimed steps, headline pairs/s = batch /
median step time; `window_pairs_per_s` = pairs / wall time of the timed steps. Prints one JSON object with a
top-level `ratio` (saferlhf / TRL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

THREADS_DEFAULT = 1  # as bench_reward_model.py: 2 OpenMP threads on a shared 2-core box are erratic


def run_saferlhf(model_dir: Path, data: Path, out: Path, a) -> dict:
    from saferlhf.recipes.dpo import DPOConfig, run
    from saferlhf.training import OptimConfig, RuntimeConfig

    cfg = DPOConfig(model_path=str(model_dir), train_file=str(data), out=str(out), variant="dpo", beta=0.1,
                    batch_size=a.batch_size, max_length=a.max_length, max_steps=a.warmup + a.steps, eval_ratio=0.0,
                    log_every=1, precompute_ref=a.precompute_ref == "true",
                    optim=OptimConfig(lr=1e-6, weight_decay=0.05),
                    runtime=RuntimeConfig(device="cpu", threads=a.threads, progress=False, seed=a.seed))
    with contextlib.redirect_stdout(sys.stderr):
        assert run(cfg) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    t = {r["step"]: r["time"] for r in rows if "time" in r and "train/loss" in r}
    timed = t[a.warmup + a.steps] - t[a.warmup]
    steps = [t[s] - t[s - 1] for s in range(a.warmup + 1, a.warmup + a.steps + 1)]
    packed = json.loads((out / "eval.json").read_text()).get("train/packed")
    import torch

    from saferlhf.data.loaders import load_preference_pairs
    from saferlhf.models import load_tokenizer
    from saferlhf.packing import encode_pairs

    enc = encode_pairs(load_preference_pairs(str(data)), load_tokenizer(model_dir, padding_side="right"), a.max_length)
    lengths = [len(e.chosen) for e in enc] + [len(e.rejected) for e in enc]
    return {"mean_tokens_per_sequence": sum(lengths) / len(lengths),"pairs_per_s_median": a.batch_size / statistics.median(steps), "pairs_per_s": a.steps * a.batch_size / timed,
            "timed_seconds": timed, "timed_steps": a.steps, "step_seconds": [round(x, 4) for x in steps],
            "packed": packed, "torch_threads": torch.get_num_threads()}


def run_trl(model_dir: Path, conv_data: Path, a) -> dict:
    return common.run_peer("trl116", "trl_dpo.py", [
        "--model", str(model_dir), "--data", str(conv_data), "--batch_size", str(a.batch_size),
        "--max_length", str(a.max_length), "--steps", str(a.steps), "--warmup", str(a.warmup),
        "--threads", str(a.threads), "--seed", str(a.seed), "--precompute_ref", a.precompute_ref], threads=a.threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch_size", type=int, default=8, help="pairs per optimiser step")
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed optimiser steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed optimiser steps first")
    ap.add_argument("--pairs", type=int, default=240)
    ap.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    ap.add_argument("--repeats", type=int, default=2, help="alternate saferlhf / TRL runs this many times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precompute_ref", choices=["true", "false"], default="false")
    ap.add_argument("--skip_trl", action="store_true", help="measure saferlhf only (no peer venv needed)")
    ap.add_argument("--result_name", default="dpo", help="writes bench/results/<name>.json")
    a = ap.parse_args()
    common.set_threads(a.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="saferlhf-bench-dpo-") as tmp:
        tmp = Path(tmp)
        model_dir = common.build_tiny_llama(tmp / "tiny-llama", seed=a.seed)
        from saferlhf.models import load_tokenizer

        info = common.make_preference_file(tmp / "prefs.jsonl", load_tokenizer(model_dir), a.pairs, a.seed)
        ours, theirs = [], []
        for r in range(a.repeats):
            ours.append(run_saferlhf(model_dir, tmp / "prefs.jsonl", tmp / f"out-{r}", a))
            if not a.skip_trl:
                theirs.append(run_trl(model_dir, Path(info["conversational_file"]), a))
    best = lambda runs: max(runs, key=lambda x: x["pairs_per_s_median"])  # noqa: E731
    s = best(ours)
    result: dict = {"saferlhf_pairs_per_s": round(s["pairs_per_s_median"], 3)}
    if theirs:
        t = best(theirs)
        result |= {"trl_pairs_per_s": round(t["pairs_per_s_median"], 3),
                   "ratio": round(s["pairs_per_s_median"] / t["pairs_per_s_median"], 3),
                   "window_pairs_per_s": {"saferlhf": round(s["pairs_per_s"], 3), "trl": round(t["pairs_per_s"], 3),
                                          "ratio": round(s["pairs_per_s"] / t["pairs_per_s"], 3)}}
    result["settings"] = {
        "model": "tiny Llama (common.build_tiny_llama): vocab 2048, hidden 256, 4 layers, 4 heads, fp32",
        "beta": 0.1, "batch_size_pairs": a.batch_size, "max_length": a.max_length, "timed_steps": a.steps,
        "warmup_steps": a.warmup, "pairs_in_file": a.pairs, "response_tokens": info["response_tokens"],
        "torch_threads": a.threads, "repeats": a.repeats, "reported": "best of repeats per side",
        "reference": "precomputed before training on both sides" if a.precompute_ref == "true" else
                     "a frozen reference model's forward every step on both sides",
        "gradient_checkpointing": False, "dtype": "float32", "eval": False,
        "saferlhf_batching": "packed: one padding-free row per batch, prompt once per pair, LM head on response "
                             "positions only",
        "trl_batching": "DPOTrainer 1.16 defaults: chosen and rejected padded to the longest sequence",
    }
    result["saferlhf"] = s | {"all_pairs_per_s": [round(x["pairs_per_s_median"], 3) for x in ours]}
    if theirs:
        result["trl"] = {k: v for k, v in t.items() if k != "versions"} | {
            "all_pairs_per_s": [round(x["pairs_per_s_median"], 3) for x in theirs]}
    result["versions"] = {"saferlhf_side": common.versions()} | ({"trl_side": theirs[0]["versions"]} if theirs else {})
    result["machine"] = common.machine() | {"loadavg_1_5_15_before": [round(x, 2) for x in load_before],
                                            "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()]}
    result["command"] = "python bench/bench_dpo.py " + " ".join(sys.argv[1:])
    common.write_result(a.result_name, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
