"""The whole Safe RLHF pipeline on the synthetic world, on a laptop CPU.

  1. world: prompts (harmful / benign / look-alike; disjoint train and test), the Alpaca-like SFT corpus
  2. tiny model: a tokenizer trained on the world's text + a small Llama created from a config
  3. SFT on the corpus (about half of the answers to harmful prompts comply, as Alpaca-7B did)
  4. collect two responses per training prompt from the SFT model
  5. simulated annotation: qualified annotator panel -> PKU-SafeRLHF-schema dual preferences
  6. reward model (helpfulness) and cost model (harmlessness; cost > 0 = unsafe) from the SFT model
  7. PPO-Lagrangian (Safe RLHF), PPO (reward only) and reward shaping with fixed λ values
  8. `saferlhf eval` of every policy on held-out test prompts (oracle + reward and cost models): eval/results.json,
     eval/report.html; summary.json + report.html with plots

Every stage runs the same code as its CLI command (`saferlhf sft`, `saferlhf score-model`, ...). The config is
nested by stage (`--sft.epochs 3`, `--rl.steps 80`, `--model.hidden_size 64`); `configs/demo.yaml` holds the
defaults.

Launch: `saferlhf demo --out runs/demo` (add `--seed N`; `--config configs/demo.yaml` is the default
preset; `--fast` shrinks every stage for tests; `--resume true` continues a killed demo: stages whose
folder is complete are skipped, SFT, score models and PPO resume from their checkpoints).
"""

from __future__ import annotations

import dataclasses
import html
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from saferlhf.config import option
from saferlhf.stages import (DataStage, EvalStage, ModelStage, RLStage, ScoreStage, SFTStage, fill_untouched,
                             stage_sampling)


@dataclass
class DemoConfig:
    out: str = option("runs/demo", "output folder")
    resume: bool = option(False, "continue a killed demo in out: finished stages are kept, training stages resume "
                                 "from their checkpoints, the rest runs again")
    overwrite: bool = option(False, "replace a previous demo in out (otherwise an existing run is refused)")
    seed: int = option(0, "seed of the world, the models and every stage")
    fast: bool = option(False, "tiny everything (for tests): fewer prompts, steps and tokens (the FAST overrides)")
    threads: int = option(0, "torch CPU threads (0 = default)", ge=0)
    max_new_tokens: int = option(64, "max response tokens in pair collection, RL and evaluation (every stage's "
                                     "sampling.max_new_tokens: stages.stage_sampling; 64, not the standalone "
                                     "commands' 128, keeps the published numbers)", ge=1)
    model: ModelStage = option(ModelStage(), "2. the tiny model")
    sft: SFTStage = option(SFTStage(), "3. supervised fine-tuning")
    data: DataStage = option(DataStage(), "4-5. response pairs and annotation")
    score: ScoreStage = option(ScoreStage(), "6. reward and cost models")
    rl: RLStage = option(RLStage(), "7. PPO-Lag, PPO and reward shaping")
    eval: EvalStage = option(EvalStage(), "8. evaluation")


FAST = {"max_new_tokens": 24, "model": {"hidden_size": 64}, "sft": {"examples": 600, "epochs": 2.0},
        "data": {"pair_prompts": 120}, "score": {"epochs": 1.0},
        "rl": {"steps": 3, "prompts_per_step": 8, "shaping_lambdas": [1.0]}}


def fast_config(cfg: DemoConfig) -> DemoConfig:
    """``cfg`` with the `FAST` values for every field still at its default value (`stages.fill_untouched`)."""
    return fill_untouched(cfg, FAST)


def _stage(name: str, t0: float) -> None:
    from rich.console import Console

    Console().print(f"[bold cyan]== {name}[/]  (t = {time.time() - t0:.0f} s)")


def run(cfg: DemoConfig) -> int:
    from saferlhf.eval import compare
    from saferlhf.eval.report import (plot_lagrange, plot_policy_bars, plot_reward_cost_scatter,
                                      plot_training_curves, write_html_report)
    from saferlhf.recipes import generate, ppo, score_model, sft, tiny_model
    from saferlhf.files import atomic_write_json, atomic_write_text
    from saferlhf.tracking import finish_run, run_state, start_run
    from saferlhf.training import OptimConfig, RuntimeConfig
    from saferlhf.eval.threshold import calibrate_threshold
    from saferlhf.world.commands import (WorldAnnotateConfig, WorldCorpusConfig, WorldPromptsConfig,
                                         run_world_annotate, run_world_corpus, run_world_prompts)

    if cfg.fast:
        cfg = fast_config(cfg)
    out = start_run(cfg.out, cfg, "demo", resume=cfg.resume, overwrite=cfg.overwrite)
    t0, timings = time.time(), {}
    rt = RuntimeConfig(seed=cfg.seed, threads=cfg.threads)
    again = dict(resume=cfg.resume)  # training stages: resumable from their checkpoints

    def timed(name: str, fn, folder: Path | None = None) -> None:
        if cfg.resume and folder is not None and run_state(folder) == "complete":
            _stage(f"{name}: complete in {folder}, kept", t0)
            return
        _stage(name, t0)
        s = time.time()
        fn()
        timings[name] = round(time.time() - s, 2)

    # 1. The world.
    w = out / "world"
    timed("world", lambda: (
        run_world_prompts(WorldPromptsConfig(out=str(w / "train_prompts.jsonl"), seed=cfg.seed, split="train")),
        run_world_prompts(WorldPromptsConfig(out=str(w / "test_prompts.jsonl"), seed=cfg.seed, split="test")),
        run_world_corpus(WorldCorpusConfig(out=str(w / "sft_corpus.jsonl"), n=cfg.sft.examples, seed=cfg.seed))))

    # 2-3. Tiny model and SFT.
    timed("tiny model", lambda: tiny_model.run(tiny_model.TinyModelConfig(
        out=str(out / "base"), corpus="world", world_seed=cfg.seed, arch=cfg.model.arch, vocab_size=cfg.model.vocab_size,
        hidden_size=cfg.model.hidden_size, num_layers=cfg.model.num_layers, num_heads=cfg.model.num_heads, seed=cfg.seed,
        overwrite=True)))  # deterministic for a seed: rebuilt identically on resume
    timed("sft", lambda: sft.run(sft.SFTConfig(
        model_path=str(out / "base"), train_file=str(w / "sft_corpus.jsonl"), out=str(out / "sft"), max_length=128,
        batch_size=cfg.sft.batch_size, epochs=cfg.sft.epochs, optim=OptimConfig(lr=cfg.sft.lr, weight_decay=0.0),
        runtime=rt, save_every=100, **again)), out / "sft")
    sft_model = str(out / "sft" / "model")

    # 4-5. Response pairs from the SFT model, annotated by the simulated panel.
    timed("collect pairs", lambda: generate.run(generate.GenerateConfig(
        model_path=sft_model, prompts=str(w / "train_prompts.jsonl"), out=str(w / "sft_pairs.jsonl"),
        sampling=stage_sampling(cfg.max_new_tokens, n=2), max_prompts=cfg.data.pair_prompts, seed=cfg.seed)))
    timed("annotate", lambda: run_world_annotate(WorldAnnotateConfig(
        input=str(w / "sft_pairs.jsonl"), out=str(w / "sft_preferences.jsonl"), seed=cfg.seed)))
    if cfg.data.world_pairs:
        timed("world pairs", lambda: run_world_annotate(WorldAnnotateConfig(
            out=str(w / "world_preferences.jsonl"), n=cfg.data.world_pairs, seed=cfg.seed)))
    parts = [w / "sft_preferences.jsonl"] + ([w / "world_preferences.jsonl"] if cfg.data.world_pairs else [])
    atomic_write_text(w / "preferences.jsonl", "".join(p.read_text() for p in parts))

    # 6. Reward and cost models, both initialised from the SFT model.
    for kind in ("reward", "cost"):
        timed(f"{kind} model", lambda kind=kind: score_model.run(score_model.ScoreModelConfig(
            kind=kind, model_path=sft_model, train_file=str(w / "preferences.jsonl"), out=str(out / kind),
            max_length=160, batch_size=32, epochs=cfg.score.epochs, on_error="drop",
            optim=OptimConfig(lr=cfg.score.lr, weight_decay=0.01), runtime=rt, save_every=100, **again)), out / kind)

    # 7. RL: PPO-Lag, PPO, reward shaping (same loop, three settings).
    rl = cfg.rl
    threshold = rl.cost_threshold
    if threshold is None:
        threshold = calibrate_threshold(str(out / "cost" / "model"), w / "sft_preferences.jsonl",
                                        rl.target_violation_rate)

    def rl_config(algorithm: str, run_dir: str, **kw) -> ppo.PPOConfig:
        return ppo.PPOConfig(
            algorithm=algorithm, actor_path=sft_model, reward_model_path=str(out / "reward" / "model"),
            cost_model_path=str(out / "cost" / "model"), train_prompts=str(w / "train_prompts.jsonl"),
            out=str(out / run_dir), steps=rl.steps, ppo_epochs=rl.ppo_epochs, num_minibatches=rl.minibatches,
            lagrange=ppo.LagrangeConfig(init=rl.lambda_init, lr=rl.lambda_lr, max_value=rl.lambda_max,
                                        threshold=threshold), kl_coef=rl.kl_coef,
            rollout=ppo.RolloutConfig(prompts_per_step=rl.prompts_per_step),
            sampling=stage_sampling(cfg.max_new_tokens),
            actor_optim=OptimConfig(lr=rl.actor_lr, weight_decay=0.0),
            critic_optim=OptimConfig(lr=rl.critic_lr, weight_decay=0.0, scheduler="constant", warmup_ratio=0.0),
            runtime=rt, save_every=10, **again, **kw)

    rl_runs = {"ppo_lag": rl_config("ppo_lag", "ppo_lag"), "ppo": rl_config("ppo", "ppo")}
    for lam in rl.shaping_lambdas:
        rl_runs[f"shaping_{lam:g}"] = rl_config("reward_shaping", f"shaping_{lam:g}", shaping_lambda=lam)
    for name, rc in rl_runs.items():
        timed(name, lambda rc=rc: ppo.run(rc), Path(rc.out))

    # 8. Evaluation with the oracle on held-out prompts, plots and report.
    policies = {"sft": sft_model} | {n: str(out / n / "actor") for n in rl_runs}
    ecfg = compare.EvalConfig(
        policies=[f"{n}={p}" for n, p in policies.items()], prompts=["world:test"], judges=["oracle", "score"],
        baseline="sft", reward_model=str(out / "reward" / "model"), cost_model=str(out / "cost" / "model"),
        world_seed=cfg.seed, sampling=stage_sampling(cfg.max_new_tokens, n=cfg.eval.samples),
        seed=cfg.seed, cache_dir=str(out / "cache"), out=str(out / "eval"), overwrite=True)
    timed("evaluate", lambda: compare.run(ecfg), out / "eval")
    results = json.loads((out / "eval" / "results.json").read_text())["prompt_sets"]["world_test"]
    eval_rows = [json.loads(line) for line in (out / "eval" / "responses.jsonl").read_text().splitlines()]
    records = {n: [r for r in eval_rows if r["policy"] == n] for n in policies}
    images = [out / "policies.png", out / "lagrange.png", out / "training_curves.png", out / "reward_cost_scatter.png",
              out / "reward" / "score_distribution.png", out / "cost" / "score_distribution.png"]
    plot_policy_bars(results, images[0])
    plot_lagrange(out / "ppo_lag" / "metrics.jsonl", images[1])
    plot_training_curves({n: out / n / "metrics.jsonl" for n in rl_runs}, images[2])
    plot_reward_cost_scatter(records, images[3])

    summary = _summary(cfg, out, results, rl_runs, timings, time.time() - t0) | {"cost_threshold": threshold}
    atomic_write_json(out / "summary.json", summary)
    rows = [{"policy": n} | {k: v for k, v in m.items() if isinstance(v, float)} for n, m in summary["policies"].items()]
    write_html_report(out / "report.html", "saferlhf demo: Safe RLHF on the synthetic world", rows, images,
                      notes=f"seed {cfg.seed}; whole run {summary['seconds']:.0f} s on CPU; command: "
                            f"<code>{html.escape(f'saferlhf demo --out {cfg.out} --seed {cfg.seed}')}</code>; the "
                            "full evaluation (Elo, "
                            f"win / tie / loss, arena, samples): <a href='eval/report.html'>eval/report.html</a>",
                      config=summary["config"])
    finish_run(out, summary="summary.json", report="report.html")
    _stage(f"done: {out}/summary.json, {out}/report.html", t0)
    return 0


def _summary(cfg: DemoConfig, out: Path, results: dict, rl_runs: dict, timings: dict, seconds: float) -> dict:
    def last(path: Path, key: str):
        rows = [json.loads(x) for x in path.read_text().splitlines() if key in x] if path.exists() else []
        return rows[-1][key] if rows else None

    policies = {}
    for name, m in results["policies"].items():
        policies[name] = {k: v for k, v in m.items() if not k.startswith("arena")}
        if name in rl_runs:
            mp = out / name / "metrics.jsonl"
            policies[name] |= {"final_lambda": last(mp, "lagrange/lambda"),
                               "final_episode_cost": last(mp, "lagrange/episode_cost"),
                               "final_train_cost": last(mp, "cost/mean"),
                               "final_train_reward": last(mp, "reward/mean")}
    scores = {k: json.loads((out / k / "eval.json").read_text()) for k in ("reward", "cost") if (out / k / "eval.json").exists()}
    return {"policies": policies, "score_models": scores, "seconds": round(seconds, 1), "stage_seconds": timings,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "config": dataclasses.asdict(cfg)}
