"""The relatives of PPO-Lag on the synthetic world, on top of finished demo runs (one per seed).

For each `DEMO_ROOT/seed<N>` made by `python bench/bench_demo.py --seeds ...` (SFT model, reward and cost
models, the panel-annotated preferences, the calibrated cost threshold d and the demo's PPO-Lag / PPO /
shaping policies), this trains or runs, each with its own `saferlhf` command in a fresh process:
  dpo_*          `saferlhf dpo --variant dpo|harmless|safe_filtered|safedpo|sacpo` from the SFT model on the
                 demo's PKU-schema preferences (world/preferences.jsonl)
  best_of_4/16   `saferlhf best-of-k --k 4|16` with the demo's reward and cost models, threshold d
  cm_classifier  `saferlhf best-of-k --mode cm_classifier --max_tries 4`, threshold d
  rs_finetune    `saferlhf rs-finetune --rounds 2 --k 4` on the world's train prompts
  pairwise_ppo*  `saferlhf ppo --algorithm pairwise_ppo|pairwise_ppo_lag` with the demo's PPO-Lag settings
then one `saferlhf eval` of every policy and response file on world:test (oracle + refusal judges, baseline
SFT, the demo's sampling settings). Per method: harmful rate, helpfulness, win rate vs SFT, harmlessness win
rate vs SFT, over-refusal, KL to SFT (Monte-Carlo on the policy's own evaluation samples, `kl_to_sft`; for
best-of-k the bound log k − (k − 1)/k; none for the CM classifier), wall time; the mean ± std over seeds; a
helpfulness-vs-harmlessness scatter.

    python bench/bench_relatives.py --demo_root /tmp/bench_demo2 --seeds 0 1 2   -> bench/results/relatives.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

METRICS = ("harmful_rate", "helpfulness", "win_rate_vs_sft", "harmlessness_win_rate_vs_sft", "over_refusal_rate",
           "kl_to_sft")
DEMO_POLICIES = ("sft", "ppo_lag", "ppo", "shaping_0.5", "shaping_2")
DPO_VARIANTS = ("dpo", "harmless", "safe_filtered", "safedpo", "sacpo")


def saferlhf(args: list[str], log: Path) -> float:
    return common.run_saferlhf(args, log)["seconds"]


def one_seed(demo: Path, out: Path, a) -> dict:
    if a.reuse and (out / "seed_result.json").exists():  # a finished seed of an earlier invocation
        return json.loads((out / "seed_result.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    summary = json.loads((demo / "summary.json").read_text())
    d = summary["cost_threshold"]
    sft, rm, cm = demo / "sft" / "model", demo / "reward" / "model", demo / "cost" / "model"
    prefs, train = demo / "world" / "preferences.jsonl", demo / "world" / "train_prompts.jsonl"
    seconds = {k: summary["stage_seconds"].get(k) for k in ("ppo_lag", "ppo")}
    policies = {n: demo / n / "actor" for n in DEMO_POLICIES if n != "sft"} | {"sft": sft}
    responses = {}
    for v in DPO_VARIANTS:
        seconds[f"dpo_{v}"] = saferlhf(["dpo", "--variant", v, "--model_path", str(sft), "--train_file", str(prefs),
                                        "--out", str(out / f"dpo_{v}"), "--overwrite", "true", "--epochs",
                                        str(a.dpo_epochs), "--batch_size", "32", "--max_length", "160",
                                        "--optim.lr", str(a.dpo_lr), "--eval_ratio", "0.05",
                                        "--runtime.progress", "false"], log)
        policies[f"dpo_{v}"] = out / f"dpo_{v}" / "model"
    for k in (4, 16):
        seconds[f"best_of_{k}"] = saferlhf(["best-of-k", "--model_path", str(sft), "--reward_model", str(rm),
                                            "--cost_model", str(cm), "--prompts", "world:test", "--k", str(k),
                                            "--threshold", str(d), "--sampling.max_new_tokens", "64", "--out",
                                            str(out / f"best_of_{k}"), "--overwrite", "true"], log)
        responses[f"best_of_{k}"] = out / f"best_of_{k}" / "responses.jsonl"
    seconds["cm_classifier"] = saferlhf(["best-of-k", "--mode", "cm_classifier", "--model_path", str(sft),
                                         "--cost_model", str(cm), "--prompts", "world:test", "--max_tries", "4",
                                         "--threshold", str(d), "--sampling.max_new_tokens", "64", "--out",
                                         str(out / "cm_classifier"), "--overwrite", "true"], log)
    responses["cm_classifier"] = out / "cm_classifier" / "responses.jsonl"
    seconds["rs_finetune"] = saferlhf(["rs-finetune", "--model_path", str(sft), "--reward_model", str(rm),
                                       "--cost_model", str(cm), "--prompts", str(train), "--rounds", "2", "--k", "4",
                                       "--threshold", str(d), "--sampling.max_new_tokens", "64", "--sft_batch_size", "32",
                                       "--sft_max_length", "160", "--optim.lr", str(a.rs_lr), "--out",
                                       str(out / "rs_finetune"), "--overwrite", "true"], log)
    policies["rs_finetune"] = out / "rs_finetune" / "round_2" / "sft" / "model"
    for algo in ("pairwise_ppo", "pairwise_ppo_lag"):
        seconds[algo] = saferlhf(["ppo", "--config", str(demo / "ppo_lag" / "config.yaml"), "--algorithm", algo,
                                  "--out", str(out / algo), "--overwrite", "true", "--resume", "false",
                                  "--runtime.progress", "false"], log)
        policies[algo] = out / algo / "actor"
    ev = out / "eval"
    saferlhf(["eval", "--policies", *[f"{n}={p}" for n, p in policies.items()],
              "--responses", *[f"{n}={p}" for n, p in responses.items()], "--prompts", "world:test",
              "--judges", "oracle,refusal", "--baseline", "sft", "--sampling.max_new_tokens", "64", "--sampling.batch_size", "128",
              "--bootstrap", "200", "--cache_dir", str(out / "cache"), "--out", str(ev), "--overwrite", "true"], log)
    m = json.loads((ev / "results.json").read_text())["prompt_sets"]["world_test"]["policies"]
    result = {n: {k: m[n].get(k) for k in METRICS} | {"seconds": seconds.get(n)} for n in m}
    (out / "seed_result.json").write_text(json.dumps(result, indent=1))
    return result


def kl_to_sft(policy: str, sft: str, rows: list[dict]) -> float:
    """Monte-Carlo KL(π ‖ π_SFT) in nats per response: the mean over π's own evaluation samples (temperature 1)
    of log π(y|x) − log π_SFT(y|x), summed over the response tokens (eos included where the response ended)."""
    import torch

    from saferlhf.data.formatting import encode_example
    from saferlhf.models.policy import load_policy
    from saferlhf.packing import padded_sequence_logprobs

    total = []
    for path in (policy, sft):
        model, tok = load_policy(path)
        model.eval()
        enc = [encode_example(tok, r["prompt"], r["response"], 512, ended=r.get("ended", True)) for r in rows]
        with torch.no_grad():
            lp = torch.cat([padded_sequence_logprobs(model, enc[i: i + 64], tok.pad_token_id)
                            for i in range(0, len(enc), 64)])
        total.append(lp)
    return float((total[0] - total[1]).mean())


def add_kl(out: Path, result: dict) -> None:
    """kl_to_sft for every trained policy of a seed's evaluation (best-of-k: the analytic bound; CM: none)."""
    import yaml

    cfg = yaml.safe_load((out / "eval" / "config.yaml").read_text())
    paths = dict(p.split("=", 1) for p in cfg["policies"])
    rows = [json.loads(x) for x in (out / "eval" / "responses.jsonl").read_text().splitlines()]
    from saferlhf.rl import best_of_k_bounds

    for name in result:
        if name in paths:
            mine = [r for r in rows if r["policy"] == name]
            result[name]["kl_to_sft"] = 0.0 if name == "sft" else kl_to_sft(paths[name], paths["sft"], mine)
        elif name.startswith("best_of_"):
            result[name]["kl_to_sft"] = best_of_k_bounds(int(name.rsplit("_", 1)[1]))["kl_upper_bound"]
        else:
            result[name]["kl_to_sft"] = None
    (out / "seed_result.json").write_text(json.dumps(result, indent=1))


def scatter(table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, row in table.items():
        x, y = row["harmlessness_win_rate_vs_sft"]["mean"], row["win_rate_vs_sft"]["mean"]
        if x is None or y is None:
            continue
        ax.scatter(x, y, s=40, color="tab:red" if name == "ppo_lag" else "tab:blue")
        ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.axvline(0.5, color="grey", lw=0.6)
    ax.set_xlabel("harmlessness win rate vs SFT (oracle)")
    ax.set_ylabel("helpfulness win rate vs SFT (oracle)")
    ax.set_title("PPO-Lag and its relatives on the synthetic world")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo_root", required=True, help="folder of seed<N> demo runs (bench/bench_demo.py --out)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="runs/bench_relatives")
    ap.add_argument("--dpo_lr", type=float, default=2e-4)
    ap.add_argument("--dpo_epochs", type=float, default=1.0)
    ap.add_argument("--rs_lr", type=float, default=1e-3)
    ap.add_argument("--reuse", action="store_true", help="read the seeds already finished in --out")
    a = ap.parse_args()
    t0 = time.time()
    runs = {s: one_seed(Path(a.demo_root) / f"seed{s}", Path(a.out) / f"seed{s}", a) for s in a.seeds}
    for s in a.seeds:
        add_kl(Path(a.out) / f"seed{s}", runs[s])
    table: dict = {}
    for name in runs[a.seeds[0]]:
        table[name] = {}
        for k in (*METRICS, "seconds"):
            vals = [runs[s][name][k] for s in a.seeds if runs[s].get(name, {}).get(k) is not None]
            table[name][k] = {"mean": statistics.fmean(vals) if vals else None,
                              "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0 if vals else None}
    result = {"benchmark": "relatives", "seeds": a.seeds, "table": table, "per_seed": runs,
              "settings": {"dpo_lr": a.dpo_lr, "dpo_epochs": a.dpo_epochs, "rs_lr": a.rs_lr,
                           "eval": "world:test, oracle + refusal judges, 1 sample per prompt, max_new_tokens 64"},
              "seconds": round(time.time() - t0, 1), "versions": common.versions(), "machine": common.machine(),
              "command": "python bench/bench_relatives.py " + " ".join(sys.argv[1:])}
    scatter(table, Path(a.out) / "relatives_scatter.png")
    common.write_result("relatives", result)
    print(json.dumps(result["table"], indent=1))


if __name__ == "__main__":
    main()
