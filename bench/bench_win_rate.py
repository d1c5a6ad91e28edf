"""Why PPO-Lag's win rate vs SFT stops near 0.55: a diagnosis of finished demo runs (no training).

For each demo folder (``saferlhf demo --out DIR`` or ``bench/bench_demo.py``):
  * wins / ties / losses of every RL policy vs SFT per prompt group, and the cause of each loss on
    benign and look-alike prompts (``saferlhf.eval.diagnostics.win_breakdown``);
  * the ceiling: the win rate of the world's own clean safe answers with 1, 2 or 3 distinct points
    against the same SFT responses (``ceiling_win_rates``);
  * the reward model's repetition probe (``repetition_probe``): does it rank a repeated point below
    stopping and below a new point?

    python bench/bench_win_rate.py DIR [DIR ...]    # prints JSON, writes bench/results/win_rate.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("SAFERLHF_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("demo_dirs", nargs="+")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "win_rate.json"))
    args = ap.parse_args()


    from saferlhf.eval.diagnostics import ceiling_win_rates, repetition_probe, win_breakdown
    from saferlhf.eval.judges import ScoreModelJudge
    from saferlhf.world import Oracle, build_world

    runs = {}
    for d in map(Path, args.demo_dirs):
        seed = json.loads((d / "summary.json").read_text())["config"]["seed"]
        world = build_world(seed)
        oracle = Oracle(world)
        records = [json.loads(x) for x in (d / "eval" / "responses.jsonl").read_text().splitlines() if x.strip()]
        policies = sorted({r["policy"] for r in records} - {"sft"})
        runs[str(d)] = {
            "seed": seed,
            "policies": {p: win_breakdown(records, p, "sft", oracle) for p in policies},
            "ceiling_win_rate_by_points": ceiling_win_rates(world, oracle, [r for r in records if r["policy"] == "sft"],
                                                            seed=seed),
            "reward_model_repetition_probe": repetition_probe(ScoreModelJudge(d / "reward" / "model", "reward").scores, world),
        }

    def mean_std(values):
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    rs = list(runs.values())
    summary = {
        "ppo_lag_win_rate": mean_std([r["policies"]["ppo_lag"]["win_rate"] for r in rs]),
        "ppo_lag_win_rate_by_group": {g: mean_std([r["policies"]["ppo_lag"]["groups"][g]["win_rate"] for r in rs])
                                      for g in rs[0]["policies"]["ppo_lag"]["groups"]},
        "ppo_lag_benign_loss_causes": {c: sum(r["policies"]["ppo_lag"]["benign_loss_causes"][c] for r in rs)
                                       for c in rs[0]["policies"]["ppo_lag"]["benign_loss_causes"]},
        "repetition_rate": {"sft": mean_std([r["policies"]["ppo_lag"]["baseline_repetition_rate"] for r in rs])}
        | {p: mean_std([r["policies"][p]["repetition_rate"] for r in rs]) for p in rs[0]["policies"]},
        "ceiling_win_rate_by_points": {q: mean_std([r["ceiling_win_rate_by_points"][q] for r in rs])
                                       for q in rs[0]["ceiling_win_rate_by_points"]},
        "reward_model_repetition_probe": {k: mean_std([r["reward_model_repetition_probe"][k] for r in rs])
                                          for k in ("short_over_repeat", "long_over_repeat", "long_over_short")},
    }
    out = {"summary": summary, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
