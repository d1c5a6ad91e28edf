"""Reward-model training throughput: saferlhf vs TRL 1.16 RewardTrainer, same model, data and settings.

    bash bench/setup_peers.sh && python bench/bench_reward_model.py

saferlhf runs with its defaults: padding-free packed batches with the prompt computed once per pair
(`--packing`, `--share_prompt`, `--group_by_length` select the ablations; `--result_name` keeps them
apart). TRL 1.16's RewardTrainer has no packing option: its batches are padded to the longest sequence.

Builds a tiny Llama (vocab 2048, hidden 256, 4 layers, 4 heads; fp32) and a synthetic preference set
(prompt/chosen/rejected, responses 30-120 tokens) in a temporary folder, then trains a reward model on
it with (a) `saferlhf.recipes.score_model.run` in this process and (b) TRL's `RewardTrainer` in
`bench/.venv-trl116` (subprocess, `bench/peers/trl_reward.py`). Both: same model folder, same pairs
(TRL gets them as conversational messages, so its chat template yields the same token sequences),
same per-device batch, max length, number of steps, fp32, no gradient checkpointing, no eval, no
saving inside the timed window, same torch thread count.

Timing (both sides): the end of every optimiser step is stamped (saferlhf: metrics.jsonl `time`,
log_every=1; TRL: an `on_step_end` callback); the `warmup` first steps are untimed. Headline pairs/s =
batch / median step time over the timed steps (robust to other processes on a shared machine);
`window_pairs_per_s` = timed pairs / wall time from the end of step `warmup` to the end of step
`warmup + steps`. Model loading, tokenisation, warm-up steps and the final save are excluded on both
sides. Prints one JSON object and writes bench/results/reward_model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

THREADS_DEFAULT = 1  # see bench/README.md: 2 OpenMP threads on a shared 2-core box are erratic

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _quiet_run(run, cfg):
    """The recipe's own prints go to stderr: stdout carries only the result JSON."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        return run(cfg)


def run_saferlhf(model_dir: Path, data: Path, out: Path, a) -> dict:
    from saferlhf.packing import encode_pairs
    from saferlhf.recipes.score_model import ScoreModelConfig, run
    from saferlhf.training import OptimConfig, RuntimeConfig

    cfg = ScoreModelConfig(
        kind="reward", model_path=str(model_dir), train_file=str(data), out=str(out),
        batch_size=a.batch_size, max_length=a.max_length, max_steps=a.warmup + a.steps, eval_ratio=0.0,
        log_every=1, optim=OptimConfig(lr=2e-5, weight_decay=0.1),
        packing=a.packing == "true", share_prompt=a.share_prompt == "true", group_by_length=a.group_by_length,
        runtime=RuntimeConfig(device="cpu", threads=a.threads, progress=False, seed=a.seed),
    )
    status = _quiet_run(run, cfg)
    assert status == 0, status
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    t = {r["step"]: r["time"] for r in rows if "time" in r and "train/loss" in r}
    timed = t[a.warmup + a.steps] - t[a.warmup]

    # token statistics of exactly the sequences run() trains on (same functions)
    from saferlhf.data.loaders import load_preference_pairs
    from saferlhf.models import load_tokenizer

    tok = load_tokenizer(model_dir, padding_side="right")
    enc = encode_pairs(load_preference_pairs(str(data), kind="reward"), tok, a.max_length)
    lengths = [len(e.chosen) for e in enc] + [len(e.rejected) for e in enc]
    steps = sorted(t)
    timed_steps = [t[s] - t[s - 1] for s in range(a.warmup + 1, a.warmup + a.steps + 1)]
    packed = json.loads((out / "eval.json").read_text()).get("train/packed")
    return {"pairs_per_s_median": a.batch_size / statistics.median(timed_steps),
            "pairs_per_s": a.steps * a.batch_size / timed, "timed_seconds": timed, "timed_steps": a.steps,
            "step_seconds": [round(t[s] - t[p], 4) for p, s in zip(steps, steps[1:])],
            "mean_tokens_per_sequence": sum(lengths) / len(lengths), "pairs": len(enc),
            "optim": "torch.optim.AdamW (foreach)", "torch_threads": __import__("torch").get_num_threads(),
            "batches": _batching(packed, a),
            "computed_tokens_per_real_token": _computed_per_real(enc, a)}


def _batching(packed: bool, a) -> str:
    if packed:
        return "packed: one padding-free row per batch" + (
            ", prompt computed once per pair" if a.share_prompt == "true" else "")
    return "padded" + (", length-grouped" if a.group_by_length != "off" else ", shuffled")


def _computed_per_real(enc, a) -> dict:
    """Token positions each side's forward computes per real (chosen + rejected) token, over one epoch
    of batches of ``a.batch_size`` pairs in file order: padded to the batch's longest sequence (TRL and
    saferlhf --packing false), or packed with the shared prompt once per pair (saferlhf default)."""
    from saferlhf.packing import shared_prefix_length

    real = padded = packed = 0
    for i in range(0, len(enc), a.batch_size):
        chunk = enc[i: i + a.batch_size]
        seqs = [p.chosen for p in chunk] + [p.rejected for p in chunk]
        real += sum(map(len, seqs))
        padded += len(seqs) * max(map(len, seqs))
        packed += sum(map(len, seqs)) - sum(shared_prefix_length(p.chosen, p.rejected) for p in chunk)
    return {"padded": round(padded / real, 3), "packed_shared_prompt": round(packed / real, 3)}


def run_trl(model_dir: Path, conv_data: Path, a) -> dict:
    return common.run_peer("trl116", "trl_reward.py", [
        "--model", str(model_dir), "--data", str(conv_data), "--batch_size", str(a.batch_size),
        "--max_length", str(a.max_length), "--steps", str(a.steps), "--warmup", str(a.warmup),
        "--threads", str(a.threads), "--seed", str(a.seed)], threads=a.threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch_size", type=int, default=8, help="pairs per optimiser step")
    ap.add_argument("--max_length", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30, help="timed optimiser steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed optimiser steps first")
    ap.add_argument("--pairs", type=int, default=320)
    ap.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    ap.add_argument("--repeats", type=int, default=2, help="alternate saferlhf / TRL runs this many times")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip_trl", action="store_true", help="measure saferlhf only (no peer venv needed)")
    # saferlhf batching (ablations; the defaults are the recipe's defaults)
    ap.add_argument("--packing", choices=["true", "false"], default="true")
    ap.add_argument("--share_prompt", choices=["true", "false"], default="true")
    ap.add_argument("--group_by_length", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--result_name", default="reward_model", help="writes bench/results/<name>.json")
    a = ap.parse_args()
    common.set_threads(a.threads)
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="saferlhf-bench-rm-") as tmp:
        tmp = Path(tmp)
        model_dir = common.build_tiny_llama(tmp / "tiny-llama", seed=a.seed)
        from saferlhf.models import load_tokenizer

        data_info = common.make_preference_file(tmp / "prefs.jsonl", load_tokenizer(model_dir), a.pairs, a.seed)
        ours, theirs = [], []
        for r in range(a.repeats):
            ours.append(run_saferlhf(model_dir, tmp / "prefs.jsonl", tmp / f"out-{r}", a))
            if not a.skip_trl:
                theirs.append(run_trl(model_dir, Path(data_info["conversational_file"]), a))

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
        "model": "tiny Llama from saferlhf.models.build_tiny_model: vocab 2048, hidden 256, 4 layers, "
                 "4 heads, intermediate 1024, fp32",
        "batch_size_pairs": a.batch_size, "max_length": a.max_length, "timed_steps": a.steps,
        "warmup_steps": a.warmup, "pairs_in_file": a.pairs, "response_tokens": data_info["response_tokens"],
        "torch_threads": a.threads, "repeats": a.repeats, "reported": "best of repeats per side",
        "timing": "per optimiser step, steps warmup+1..warmup+steps (end-of-step stamps); headline = batch / "
                  "median step time (robust to other processes on a shared machine), window_* = total pairs / "
                  "total seconds of the same steps; model loading, tokenisation, warm-up and saving excluded "
                  "on both sides",
        "gradient_checkpointing": False, "dtype": "float32", "eval": False, "dataloader_workers": 0,
        "saferlhf_batching": {"packing": a.packing, "share_prompt": a.share_prompt,
                              "group_by_length": a.group_by_length},
        "trl_batching": "RewardTrainer defaults: chosen and rejected of a batch padded to the longest sequence",
    }
    result["saferlhf"] = {k: v for k, v in s.items() if k != "step_seconds"} | {
        "all_pairs_per_s": [round(x["pairs_per_s_median"], 3) for x in ours], "step_seconds": s["step_seconds"]}
    if theirs:
        result["trl"] = {k: v for k, v in t.items() if k not in ("versions", "step_seconds")} | {
            "all_pairs_per_s": [round(x["pairs_per_s_median"], 3) for x in theirs], "step_seconds": t["step_seconds"]}
    result["versions"] = {"saferlhf_side": common.versions()} | (
        {"trl_side": theirs[0]["versions"]} if theirs else {})
    result["machine"] = common.machine() | {"loadavg_1_5_15_before": [round(x, 2) for x in load_before],
                                            "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()]}
    result["command"] = "python bench/bench_reward_model.py " + " ".join(sys.argv[1:])
    common.write_result(a.result_name, result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
