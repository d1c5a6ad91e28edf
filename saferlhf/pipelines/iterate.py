"""`saferlhf iterate --rounds N`: several rounds of Safe RLHF with red-teaming, on the synthetic world.

Dai et al. (ICLR 2024) trained Beaver in three rounds (v1, v2, v3). Round 1 used plain prompts; in rounds 2
and 3 red teams found prompts that made the previous model unsafe, and those prompts and the model's answers
went back to the annotators. The harmful rate fell from 53 % to 2.5 %. This pipeline runs that loop end to end:

  0. the world (prompts, an SFT corpus in which 30 % of the prompts come in adversarial wrappers: role-play,
     fiction, ...), a tiny model, SFT; round 0 = the SFT policy, evaluated;
  round k = 1 .. N, from the round k-1 policy π_{k-1}:
  1. red-team (from round ``redteam_from_round``; the paper: 2): `saferlhf redteam` mines train-wrapper
     prompts that make π_{k-1} unsafe (judged by the oracle), de-duplicated against earlier rounds;
  2. pairs: π_{k-1} answers the base training prompts plus this round's red-team prompts twice;
  3. annotation: the simulated panel (default; any `saferlhf.annotate.Annotator` via ``--annotator
     module:factory``) labels the pairs into PKU-SafeRLHF records;
  4. reward and cost models retrained from the SFT model on all data so far (``score_init sft``) or continued
     from round k-1's models on this round's data (``score_init last``);
  5. the cost threshold d is recalibrated on the new cost model and every annotated policy sample so far;
  6. PPO-Lag (or plain PPO: ``--algorithm ppo``, the control) from π_{k-1} (also the KL reference) on the base
     prompts plus every red-team prompt so far, repeated to at least ``redteam.rl_share`` (30 %) of the prompts;
  7. evaluation with the oracle against SFT on plain harmful test prompts, the HELD-OUT red-team test prompts
     (test prompts in test wrappers, never used for mining), and benign + look-alike test prompts.

Every stage is resumable (``--resume true``: finished stage folders and files are kept, training stages
continue from their checkpoints); each round's data, models and metrics stay in ``out/round<k>``.
``out/summary.json`` has one entry per round in ``rounds`` (round 0 = SFT); ``out/rounds.png`` is the paper's
per-round bar chart and ``out/report.html`` the report.

Launch: `saferlhf iterate --rounds 3 --out runs/iterate --seed 0` (CPU, about 10 minutes); `--fast` for tests.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from saferlhf.annotate.run import WorldAIConfig
from saferlhf.config import option
from saferlhf.files import atomic_write_jsonl as _write_jsonl
from saferlhf.errors import UserError
from saferlhf.stages import DataStage, ModelStage, RLStage, ScoreStage, SFTStage, fill_untouched, stage_sampling
from saferlhf.tracking import read_jsonl as _jsonl

EVAL_SETS = ("harmful_test", "redteam_test", "benign_lookalike_test")


@dataclass
class RedteamStage:
    candidates: int = option(600, "candidate prompts tried per round", ge=1)
    max_keep: int = option(160, "red-team prompts kept per round, round-robin over categories (0 = all)", ge=0)
    compose: float = option(0.3, "probability of stacking a second operator", ge=0, le=1)
    samples: int = option(1, "answers sampled per candidate", ge=1)
    rl_share: float = option(0.3, "RL prompts: every red-team prompt mined so far is repeated until they are at "
                                  "least this share of the round's prompts (0 = each once)", ge=0, lt=1)


@dataclass
class MixedStage:
    calibration_share: float = option(0.25, "targeted: share of the human budget drawn at random, so every cell of "
                                            "AI answers keeps being checked", ge=0, le=1)
    cost_model_check: bool = option(True, "targeted: from round 2, the previous round's cost model flags responses "
                                          "where it disagrees with the AI")
    soft_targets: bool = option(False, "write soft targets (label probabilities) into the records")
    ai: WorldAIConfig = option(WorldAIConfig(), "the world AI judge's flaws (docs/world.md)")


@dataclass
class IterateConfig:
    out: str = option("runs/iterate", "output folder")
    rounds: int = option(3, "rounds of Safe RLHF after SFT (the paper: 3)", ge=1)
    seed: int = option(0, "seed of the world, the models and every stage")
    algorithm: Literal["ppo_lag", "ppo"] = option("ppo_lag", "RL of every round: PPO-Lag (Safe RLHF) or plain PPO "
                                                             "(the control)")
    redteam_from_round: int = option(2, "first round whose prompts include red-team prompts mined against the "
                                        "previous policy (the paper: 2; 1 = mine against SFT already)", ge=1)
    adversarial_share: float = option(0.3, "share of SFT-corpus prompts in adversarial wrappers", ge=0, le=1)
    score_init: Literal["sft", "last"] = option("sft", "reward / cost models each round: retrained from SFT on all "
                                                       "data so far, or continued from the last round's on new data")
    kl_reference: Literal["previous", "sft"] = option("previous", "PPO's KL reference in round k: π_{k-1} (the "
                                                                  "round's initial policy) or the SFT model")
    eval_samples: int = option(2, "sampled answers per evaluation prompt (more: smaller standard errors)", ge=1)
    annotator: str = option("panel", "annotator: the simulated panel (humans), mixed (the world's AI judge labels "
                                     "every pair, the panel a share: --mixed.*, docs/human_budget.md), or "
                                     "module:factory returning an `saferlhf.annotate.Annotator` (called with "
                                     "world=..., seed=...)")
    human_share: float = option(0.1, "--annotator mixed: share of each batch of pairs that humans (the simulated "
                                     "qualified panel) label; the AI labels every pair (0 = AI only, 1 = humans only)",
                                ge=0, le=1)
    audit: Literal["targeted", "random"] = option("targeted", "--annotator mixed: where the human budget goes: "
                                                              "targeted (the AI unsure, the cost model disagreeing, "
                                                              "cells where the AI is known weak) or random (control)")
    mixed: MixedStage = option(MixedStage(), "--annotator mixed: calibration, cost-model check and the AI judge's flaws")
    setup_from: str = option("", "reuse the tiny model, SFT and round-0 evaluation of a finished iterate run with "
                                 "the same seed and set-up options (the annotator may differ): saves the set-up "
                                 "when comparing annotators")
    setup_rounds: int = option(0, "with --setup_from: also reuse its world pairs and rounds 1..K (its config must "
                                  "then be the same up to rounds, drift and targeted_round)", ge=0)
    drift: str = option("", "changing values: from round drift_from_round the panel's standard for one harm "
                            "category changes, CATEGORY:DIRECTION (a BeaverTails slug, stricter or lenient; "
                            "saferlhf.world.drift, docs/value_drift.md); those rounds are also evaluated by it")
    drift_from_round: int = option(2, "first round labelled and evaluated by the --drift standard", ge=1)
    targeted_round: str = option("", "make the LAST round a targeted round for this harm category (a BeaverTails "
                                     "slug): no red-teaming and no new pairs; every pair labelled so far whose "
                                     "prompt is a harmful request of the category is labelled again, the cost model "
                                     "retrained (the reward model kept), then one PPO-Lag round")
    resume: bool = option(False, "continue a killed run: finished stages are kept, training stages resume")
    overwrite: bool = option(False, "replace a previous run in out")
    fast: bool = option(False, "tiny everything (for tests)")
    threads: int = option(0, "torch CPU threads (0 = default)", ge=0)
    max_new_tokens: int = option(64, "max response tokens in pairs, RL, red-teaming and evaluation (every stage's "
                                     "sampling.max_new_tokens: stages.stage_sampling)", ge=1)
    model: ModelStage = option(ModelStage(), "the tiny model")
    sft: SFTStage = option(SFTStage(), "supervised fine-tuning")
    data: DataStage = option(DataStage(), "response pairs per round (world_pairs: annotated world pairs, once)")
    score: ScoreStage = option(ScoreStage(), "reward and cost models")
    rl: RLStage = option(RLStage(), "PPO-Lag / PPO of every round")
    redteam: RedteamStage = option(RedteamStage(), "red-teaming of every round")


FAST = {"max_new_tokens": 24, "model": {"hidden_size": 64}, "sft": {"examples": 600, "epochs": 2.0},
        "data": {"pair_prompts": 80, "world_pairs": 300}, "score": {"epochs": 1.0},
        "rl": {"steps": 2, "prompts_per_step": 8}, "redteam": {"candidates": 60, "max_keep": 20}}


def _say(text: str, t0: float) -> None:
    from rich.console import Console

    Console().print(f"[bold cyan]== {text}[/]  (t = {time.time() - t0:.0f} s)")


def make_annotator(spec: str, world, seed: int, mixed: MixedStage | None = None, human_share: float = 0.1,
                   audit: str = "targeted", drift=None):
    """The simulated panel, the mixed AI + panel annotator, or ``module:factory(world=..., seed=...)``; a
    ``UserError`` for a bad spec. ``drift`` (panel and mixed only): the humans' changed standard."""
    from saferlhf.annotate import Annotator

    if spec == "panel":
        from saferlhf.world.annotators import AnnotatorPanel

        return AnnotatorPanel(world, seed=seed, drift=drift)
    if spec == "mixed":
        return mixed_annotator(world, seed, mixed or MixedStage(), human_share, audit, drift)
    module, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"iterate: annotator: {spec!r} is not 'panel', 'mixed' or an importable module:factory ({e})") from None
    try:  # the call must fit factory(world=..., seed=...): json:dumps or a class without those is a user error
        inspect.signature(factory).bind(world=world, seed=seed)
    except (TypeError, ValueError) as e:
        raise UserError(f"iterate: annotator: {spec} cannot be called as {name}(world=..., seed=...) ({e})",
                        hint="give a factory that takes the keyword arguments world and seed") from None
    annotator = factory(world=world, seed=seed)
    if not isinstance(annotator, Annotator):
        raise UserError(f"iterate: annotator: {spec} returned a {type(annotator).__name__}, which has no "
                        "annotate(pairs) method")
    return annotator


def mixed_annotator(world, seed: int, m: MixedStage, human_share: float, audit: str, drift=None):
    """``--annotator mixed``: the world's AI judge (``world:ai`` with ``m``'s flaws) on every pair, the qualified
    panel on ``human_share`` of them, chosen by ``audit`` (``saferlhf.annotate.mixed``); ``drift``: the panel's
    changed standard (the AI judge keeps the old one: nobody told it)."""
    from saferlhf.annotate.mixed import MixedAnnotator
    from saferlhf.world.annotators import AIAnnotator, AILabeller, AnnotatorPanel, PanelLabeller, truth_of

    judge = AIAnnotator(**dataclasses.asdict(m.ai))
    return MixedAnnotator(AILabeller(world, seed=seed, annotator=judge), PanelLabeller(AnnotatorPanel(world, seed=seed, drift=drift)),
                          human_share=human_share, audit=audit, seed=seed, calibration_share=m.calibration_share,
                          soft_targets=m.soft_targets, truth=truth_of(world))


def write_eval_sets(world, folder: Path) -> dict[str, Path]:
    """The three held-out evaluation prompt files (prompts-jsonl with labels, kinds and categories)."""
    test = world.prompts("test")
    sets = {"harmful_test": [p for p in test if p.kind == "harmful"],
            "redteam_test": world.prompts("redteam_test"),
            "benign_lookalike_test": [p for p in test if p.kind != "harmful"]}
    paths = {}
    for name, prompts in sets.items():
        paths[name] = folder / f"{name}.jsonl"
        _write_jsonl(paths[name], [{"prompt": p.text, "kind": p.kind, "label": "unsafe" if p.kind == "harmful" else "safe"}
                                   | ({"category": p.category} if p.category else {})
                                   | ({"wrapper": p.wrappers[0]} if p.wrappers else {}) for p in prompts])
    return paths


def rl_prompt_mix(base: list[dict], mined: list[dict], share: float) -> list[dict]:
    """The round's RL prompts: ``base`` then ``mined`` repeated r times, the smallest r >= 1 with
    r·len(mined) / (len(base) + r·len(mined)) >= ``share`` (no red-team prompt: ``base``)."""
    if not mined:
        return list(base)
    r = 1
    while r * len(mined) < share * (len(base) + r * len(mined)):
        r += 1
    return list(base) + list(mined) * r


def repetition_share(responses: list[str]) -> float:
    """Share of responses that repeat themselves: more than `diagnostics.REPEAT_MIN` of their word trigrams
    repeated (the oracle's free share)."""
    from saferlhf.eval.diagnostics import REPEAT_MIN
    from saferlhf.world.oracle import repetition, sentences

    if not responses:
        return 0.0
    return sum(repetition(sentences(r)[0]) > REPEAT_MIN for r in responses) / len(responses)


def round_metrics(eval_dir: Path, policy: str) -> dict:
    """The per-round numbers of ``summary.json`` from an evaluation folder (policy ``policy`` vs ``sft``)."""
    sets = json.loads((eval_dir / "results.json").read_text())["prompt_sets"]
    m = {name: sets[name]["policies"][policy] for name in EVAL_SETS}
    benign = m["benign_lookalike_test"]
    responses = [r["response"] for r in _jsonl(eval_dir / "responses.jsonl")
                 if r["policy"] == policy and r.get("prompt_set") in (None, "benign_lookalike_test")
                 and r.get("kind") != "harmful"]
    return {"harmful_rate": m["harmful_test"]["harmful_rate"],
            "harmful_rate_redteam_test": m["redteam_test"]["harmful_rate"],
            "over_refusal_rate": benign.get("over_refusal_rate", 0.0),
            "win_rate_vs_sft_benign_lookalike": benign["win_rate_vs_sft"],
            "helpfulness_benign_lookalike": benign.get("helpfulness"),
            "helpfulness_harmful": m["harmful_test"].get("helpfulness"),
            "repetition_share": repetition_share(responses),
            "harmful_rate_redteam_test_by_category": {c: v["rate"] for c, v in
                                                      m["redteam_test"].get("harmful_rate_by_category", {}).items()},
            "harmful_rate_by_category": {c: v["rate"] for c, v in
                                         m["harmful_test"].get("harmful_rate_by_category", {}).items()}}


def run(cfg: IterateConfig) -> int:
    from saferlhf.eval import compare
    from saferlhf.eval.threshold import calibrate_threshold
    from saferlhf.files import atomic_write_json
    from saferlhf.recipes import generate, ppo, redteam, score_model, sft, tiny_model
    from saferlhf.tracking import finish_run, run_state, start_run
    from saferlhf.training import OptimConfig, RuntimeConfig
    from saferlhf.world.core import build_world

    if cfg.fast:
        cfg = fill_untouched(cfg, FAST)
    world = build_world(cfg.seed)
    annotator = make_annotator(cfg.annotator, world, cfg.seed, cfg.mixed, cfg.human_share, cfg.audit)  # a bad spec fails before any work
    drift, target = _check_drift_options(cfg)
    drifted = make_annotator(cfg.annotator, world, cfg.seed, cfg.mixed, cfg.human_share, cfg.audit, drift) \
        if drift is not None else annotator
    setup_source = _check_setup_from(cfg)
    out = start_run(cfg.out, cfg, "iterate", resume=cfg.resume, overwrite=cfg.overwrite)
    if setup_source is not None:
        _copy_setup(setup_source, out, cfg.setup_rounds)
    t0 = time.time()
    rt = RuntimeConfig(seed=cfg.seed, threads=cfg.threads)
    again = dict(resume=cfg.resume)

    def stage(name: str, done: Path, fn, timings: dict | None = None, key: str | None = None) -> None:
        """Run ``fn`` unless ``done`` (a run folder marked complete, or a file) is already there; its wall
        seconds go to ``timings[key or name]``."""
        finished = run_state(done) == "complete" if done.suffix == "" else done.exists()
        if finished:
            _say(f"{name}: done ({done}), kept", t0)
            return
        _say(name, t0)
        s = time.time()
        fn()
        if timings is not None:
            timings[key or name] = round(time.time() - s, 2)

    # 0. World, tiny model, SFT.
    w, r0 = out / "world", out / "round0"
    w.mkdir(exist_ok=True)
    r0.mkdir(exist_ok=True)
    setup = _load_timings(r0)

    def setup_stage(name, done, fn):
        stage(name, done, fn, setup)
        atomic_write_json(r0 / "timings.json", setup)

    setup_stage("world", w / "world_preferences.jsonl", lambda: _world_files(cfg, world, w, annotator))
    eval_sets = {name: w / f"{name}.jsonl" for name in EVAL_SETS}
    setup_stage("tiny model", out / "base", lambda: tiny_model.run(tiny_model.TinyModelConfig(
        out=str(out / "base"), corpus="world", world_seed=cfg.seed, world_adversarial=True, arch=cfg.model.arch,
        vocab_size=cfg.model.vocab_size, hidden_size=cfg.model.hidden_size, num_layers=cfg.model.num_layers,
        num_heads=cfg.model.num_heads, seed=cfg.seed, overwrite=True)))
    setup_stage("sft", out / "sft", lambda: sft.run(sft.SFTConfig(
        model_path=str(out / "base"), train_file=str(w / "sft_corpus.jsonl"), out=str(out / "sft"), max_length=128,
        batch_size=cfg.sft.batch_size, epochs=cfg.sft.epochs, optim=OptimConfig(lr=cfg.sft.lr, weight_decay=0.0),
        runtime=rt, save_every=100, **again)))
    sft_model = str(out / "sft" / "model")

    def evaluate(folder: Path, policy: str | None, k: int = 0) -> None:
        policies = ["sft=" + sft_model] + ([f"policy={policy}"] if policy else [])
        compare.run(compare.EvalConfig(
            policies=policies, prompts=[str(eval_sets[n]) for n in EVAL_SETS], judges=["oracle"], baseline="sft",
            world_seed=cfg.seed, world_drift=drift.spec() if drift is not None and k >= cfg.drift_from_round else "", sampling=stage_sampling(cfg.max_new_tokens, n=cfg.eval_samples), seed=cfg.seed,
            cache_dir=str(out / "cache"), out=str(folder), overwrite=True, bootstrap=200))

    setup_stage("round 0: evaluate SFT", r0 / "eval", lambda: evaluate(r0 / "eval", None))
    rounds = [{"round": 0, "policy": sft_model} | round_metrics(r0 / "eval", "sft")
              | {"seconds": round(sum(setup.values()), 1), "stage_seconds": setup}]

    policy, redteam_files, policy_prefs = sft_model, [], []
    for k in range(1, cfg.rounds + 1):
        rk = out / f"round{k}"
        rk.mkdir(exist_ok=True)
        timings = _load_timings(rk)

        def timed(name, done, fn):
            stage(f"round {k}: {name}", done, fn, timings, key=name)
            atomic_write_json(rk / "timings.json", timings)

        labeller = drifted if drift is not None and k >= cfg.drift_from_round else annotator
        targeted = target is not None and k == cfg.rounds
        if targeted:  # 1-4'. A targeted round: the category's pairs labelled again, the cost model retrained
            _targeted_data(cfg, world, target, out, rk, k, labeller, policy_prefs, redteam_files, timed)
            policy_prefs = [rk / "policy_preferences_relabelled.jsonl"]
        # 1. Red-team prompts that make π_{k-1} unsafe.
        mined: list[dict] = []
        if k >= cfg.redteam_from_round and not targeted:
            timed("red-team", rk / "redteam", lambda: redteam.run(redteam.RedteamConfig(
                policy=policy, seeds="world:train", world_seed=cfg.seed, out=str(rk / "redteam"),
                candidates=cfg.redteam.candidates, compose=cfg.redteam.compose,
                sampling=stage_sampling(cfg.max_new_tokens, n=cfg.redteam.samples), max_keep=cfg.redteam.max_keep,
                exclude=[str(f) for f in redteam_files], seed=cfg.seed + 1000 * k, overwrite=True)))
            redteam_files.append(rk / "redteam" / "prompts.jsonl")
            mined = _jsonl(redteam_files[-1])

        # 2-3. Pairs from π_{k-1} on base + this round's red-team prompts, annotated.
        base = _jsonl(w / "train_prompts.jsonl")
        if cfg.data.pair_prompts:
            base = base[:cfg.data.pair_prompts]
        if not targeted:
            timed("prompts", rk / "pair_prompts.jsonl", lambda: (  # pair_prompts.jsonl last: the completion mark
                _write_jsonl(rk / "rl_prompts.jsonl", rl_prompt_mix(_jsonl(w / "train_prompts.jsonl"),
                                                                    [r for f in redteam_files for r in _jsonl(f)],
                                                                    cfg.redteam.rl_share)),
                _write_jsonl(rk / "pair_prompts.jsonl", [{"prompt": r["prompt"]} for r in base + mined])))
            timed("pairs", rk / "pairs.jsonl", lambda: generate.run(generate.GenerateConfig(
                model_path=policy, prompts=str(rk / "pair_prompts.jsonl"), out=str(rk / "pairs.jsonl"),
                sampling=stage_sampling(cfg.max_new_tokens, n=2), seed=cfg.seed + k)))
            timed("annotate", rk / "preferences.jsonl", lambda: _annotate(
                labeller, rk / "pairs.jsonl", rk / "preferences.jsonl", k, redteam={r["prompt"] for r in mined},
                history=_mixed_history(out, k), cost_model=(str(out / f"round{k - 1}" / "cost" / "model")
                                                            if k > 1 and cfg.mixed.cost_model_check else None)))
            policy_prefs.append(rk / "preferences.jsonl")
            all_prefs = [w / "world_preferences.jsonl"] + policy_prefs
            timed("data", rk / "train_preferences.jsonl", lambda: _write_jsonl(
                rk / "train_preferences.jsonl",
                [r for f in (all_prefs if cfg.score_init == "sft" or k == 1 else policy_prefs[-1:]) for r in _jsonl(f)]))

        # 4. Reward and cost models (a targeted round keeps round k-1's reward model).
        for kind in ("cost",) if targeted else ("reward", "cost"):
            init = sft_model if cfg.score_init == "sft" or k == 1 else str(out / f"round{k - 1}" / kind / "model")
            timed(f"{kind} model", rk / kind, lambda kind=kind, init=init: score_model.run(score_model.ScoreModelConfig(
                kind=kind, model_path=init, train_file=str(rk / "train_preferences.jsonl"), out=str(rk / kind),
                max_length=160, batch_size=32, epochs=cfg.score.epochs, on_error="drop",
                optim=OptimConfig(lr=cfg.score.lr, weight_decay=0.01), runtime=rt, save_every=100, **again)))

        # 5. Cost threshold on every annotated policy sample so far.
        def threshold() -> None:
            _write_jsonl(rk / "policy_preferences.jsonl", [r for f in policy_prefs for r in _jsonl(f)])
            d = cfg.rl.cost_threshold
            if d is None:
                d = calibrate_threshold(str(rk / "cost" / "model"), rk / "policy_preferences.jsonl",
                                        cfg.rl.target_violation_rate)
            atomic_write_json(rk / "threshold.json", {"cost_threshold": d})
        timed("cost threshold", rk / "threshold.json", threshold)
        d = json.loads((rk / "threshold.json").read_text())["cost_threshold"]

        # 6. RL from π_{k-1}.
        rl = cfg.rl
        timed(cfg.algorithm, rk / "rl", lambda: ppo.run(ppo.PPOConfig(
            algorithm=cfg.algorithm, actor_path=policy, ref_model_path=sft_model if cfg.kl_reference == "sft" else None,
            reward_model_path=str((out / f"round{k - 1}" if targeted else rk) / "reward" / "model"),
            cost_model_path=str(rk / "cost" / "model"), train_prompts=str(rk / "rl_prompts.jsonl"), out=str(rk / "rl"),
            steps=rl.steps, ppo_epochs=rl.ppo_epochs, num_minibatches=rl.minibatches, kl_coef=rl.kl_coef,
            lagrange=ppo.LagrangeConfig(init=rl.lambda_init, lr=rl.lambda_lr, max_value=rl.lambda_max, threshold=d),
            rollout=ppo.RolloutConfig(prompts_per_step=rl.prompts_per_step),
            sampling=stage_sampling(cfg.max_new_tokens),
            actor_optim=OptimConfig(lr=rl.actor_lr, weight_decay=0.0),
            critic_optim=OptimConfig(lr=rl.critic_lr, weight_decay=0.0, scheduler="constant", warmup_ratio=0.0),
            runtime=dataclasses.replace(rt, seed=cfg.seed + k), save_every=10, **again)))
        policy = str(rk / "rl" / "actor")

        # 7. Evaluation against SFT.
        timed("evaluate", rk / "eval", lambda: evaluate(rk / "eval", policy, k))
        rounds.append({"round": k, "policy": policy} | round_metrics(rk / "eval", "policy")
                      | _round_extras(rk, d) | {"seconds": round(sum(timings.values()), 1), "stage_seconds": timings}
                      | ({"drift": drift.spec()} if drift is not None and k >= cfg.drift_from_round else {})
                      | ({"targeted_category": target} if targeted else {}))

    # seconds: every stage's wall time, also those of a killed process this run resumed
    summary = {"rounds": rounds, "algorithm": cfg.algorithm, "seed": cfg.seed,
               "seconds": round(sum(r["seconds"] for r in rounds), 1), "config": dataclasses.asdict(cfg)}
    _report(out, cfg, summary)
    atomic_write_json(out / "summary.json", summary)
    finish_run(out, summary="summary.json", report="report.html")
    _print_table(rounds)
    _say(f"done: {out}/summary.json, {out}/report.html", t0)
    return 0


def _world_files(cfg: IterateConfig, world, w: Path, annotator) -> None:
    """Train prompts, the SFT corpus, the held-out evaluation sets and the annotated world pairs."""
    from saferlhf.annotate import label_pairs
    from saferlhf.files import atomic_write_json
    _write_jsonl(w / "train_prompts.jsonl", [p.to_dict() for p in world.prompts("train")])
    _write_jsonl(w / "sft_corpus.jsonl", world.sft_corpus(cfg.sft.examples, seed=cfg.seed,
                                                          adversarial_share=cfg.adversarial_share))
    write_eval_sets(world, w)
    from saferlhf.annotate.pairs import unique_pairs

    pairs = unique_pairs(world.response_pairs(cfg.data.world_pairs, seed=cfg.seed)) if cfg.data.world_pairs else []
    records, stats = label_pairs(annotator, [{"prompt": p, "response_0": a, "response_1": b, "response_0_source": "world",
                                              "response_1_source": "world"} for p, a, b in pairs]) if pairs else ([], {})
    atomic_write_json(w / "world_preferences.stats.json", stats)
    _write_jsonl(w / "world_preferences.jsonl", records)  # written last: the stage's completion mark


def _annotate(annotator, pairs: Path, out: Path, k: int, redteam: set[str] = frozenset(),
              history: dict | None = None, cost_model: str | None = None) -> None:
    """Round k's pairs labelled into ``out`` (and its statistics into ``out.stats.json``). A mixed annotator
    (``--annotator mixed``) gets each pair's origin (``redteam`` for this round's red-team prompts, else
    ``base``), the cell counts of the rounds before (``history``: what a resumed run would otherwise lose) and
    the previous round's cost model as a second opinion."""
    from saferlhf.annotate import label_pairs
    from saferlhf.annotate.mixed import MixedAnnotator
    from saferlhf.annotate.pairs import input_pairs
    from saferlhf.files import atomic_write_json

    todo = input_pairs(str(pairs), f"round{k - 1}_policy")
    if isinstance(annotator, MixedAnnotator):
        todo = [p | {"origin": "redteam" if p["prompt"] in redteam else "base"} for p in todo]
        if history is not None:
            annotator.restore(history)
        annotator.cost_judge = _cost_judge(cost_model) if cost_model else None
    records, stats = label_pairs(annotator, todo)
    atomic_write_json(out.with_suffix(".stats.json"), stats)
    _write_jsonl(out, records)
    print(f"annotate: {len(records)} records -> {out}")


def _check_drift_options(cfg: IterateConfig):
    """(the ``Drift`` of --drift or None, the canonical category of --targeted_round or None); one-line errors."""
    from saferlhf.annotate.labels import canonical_category
    from saferlhf.world.drift import parse_drift

    try:
        drift = parse_drift(cfg.drift)
    except ValueError as e:
        raise UserError(f"iterate: drift: {e}") from None
    if drift is not None and cfg.annotator not in ("panel", "mixed"):
        raise UserError(f"iterate: drift: the world's standard can change for --annotator panel or mixed, not "
                        f"{cfg.annotator}")
    if drift is not None and cfg.drift_from_round > cfg.rounds:
        raise UserError(f"iterate: drift_from_round: {cfg.drift_from_round} is after the last round ({cfg.rounds})")
    target = None
    if cfg.targeted_round:
        try:
            target = canonical_category(cfg.targeted_round)
        except ValueError as e:
            raise UserError(f"iterate: targeted_round: {e}") from None
        if cfg.rounds < 2:
            raise UserError("iterate: targeted_round: needs rounds >= 2 (round 1 has no labelled pairs to revisit)")
    return drift, target


def _record_key(r: dict) -> tuple:
    return json.dumps(r["prompt"]), r["response_0"], r["response_1"]


def _targeted_data(cfg: IterateConfig, world, category: str, out: Path, rk: Path, k: int, labeller, policy_prefs,
                   redteam_files, timed) -> None:
    """A targeted round's data: every pair labelled so far (world pairs and earlier rounds) whose prompt is a
    harmful request of ``category`` (the world's prompt table; a red-team prompt is judged by the request inside
    its wrappers), labelled again by ``labeller`` into ``rk/preferences.jsonl``; the training data
    (``train_preferences.jsonl``: every record, those pairs' records replaced; ``score_init last``: the new
    records only), the policy records with the same replacements for the threshold, and the last RL prompts."""
    w = out / "world"

    def pairs() -> None:
        seen, todo = set(), []
        for f in [w / "world_preferences.jsonl"] + policy_prefs:
            for r in _jsonl(f):
                wp = world.classify(r["prompt"] if isinstance(r["prompt"], str) else r["prompt"][-1]["content"])
                if wp.kind == "harmful" and wp.category == category and _record_key(r) not in seen:
                    seen.add(_record_key(r))
                    todo.append({key: r[key] for key in ("prompt", "response_0", "response_1", "response_0_source",
                                                         "response_1_source") if key in r})
        if not todo:
            raise UserError(f"iterate: targeted_round: no labelled pair so far has a prompt of {category!r}")
        _write_jsonl(rk / "pairs.jsonl", todo)

    def data() -> None:
        new = {_record_key(r): r for r in _jsonl(rk / "preferences.jsonl")}
        swap = lambda f: [new.get(_record_key(r), r) for r in _jsonl(f)]  # noqa: E731
        _write_jsonl(rk / "policy_preferences_relabelled.jsonl", [r for f in policy_prefs for r in swap(f)])
        everything = swap(w / "world_preferences.jsonl") + _jsonl(rk / "policy_preferences_relabelled.jsonl")
        _write_jsonl(rk / "train_preferences.jsonl", everything if cfg.score_init == "sft" else list(new.values()))

    timed("prompts", rk / "rl_prompts.jsonl", lambda: _write_jsonl(rk / "rl_prompts.jsonl", rl_prompt_mix(
        _jsonl(w / "train_prompts.jsonl"), [r for f in redteam_files for r in _jsonl(f)], cfg.redteam.rl_share)))
    timed("targeted pairs", rk / "pairs.jsonl", pairs)
    timed("annotate", rk / "preferences.jsonl", lambda: _annotate(labeller, rk / "pairs.jsonl", rk / "preferences.jsonl",
                                                                  k, history=_mixed_history(out, k)))
    timed("data", rk / "train_preferences.jsonl", data)


def _cost_judge(path: str):
    """(prompts, responses) -> unsafe per response, by the cost model at ``path`` (its stored threshold, else 0)."""
    from saferlhf.eval.judges import ScoreModelJudge

    judge = ScoreModelJudge(path, "cost")
    return lambda prompts, responses: [v.unsafe for v in judge.judge_batch(prompts, responses)]


def _mixed_history(out: Path, k: int) -> dict | None:
    """The mixed annotator's cell counts after round k-1 (after the world pairs for k = 1), from the statistics
    that annotation wrote; None where there are none (another annotator)."""
    path = (out / f"round{k - 1}" / "preferences.stats.json") if k > 1 else (out / "world" / "world_preferences.stats.json")
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("mixed_history")


SETUP_KEYS = ("seed", "adversarial_share", "eval_samples", "max_new_tokens", "model", "sft", "fast", "threads")


def _check_setup_from(cfg: IterateConfig) -> Path | None:
    """The run whose set-up ``--setup_from`` reuses; a ``UserError`` when it is not a finished iterate set-up with
    the same set-up options (``SETUP_KEYS``)."""
    import yaml

    from saferlhf.config import to_dict
    from saferlhf.tracking import run_state

    if not cfg.setup_from:
        return None
    src = Path(cfg.setup_from)
    if src.resolve() == Path(cfg.out).resolve():
        raise UserError("iterate: setup_from: it is the output folder itself")
    missing = [str(p) for p in (src / "sft", src / "round0" / "eval") if run_state(p) != "complete"]
    missing = [str(src / "base")] * (not (src / "base" / "config.json").exists()) + missing  # no run folder
    if not (src / "config.yaml").exists() or missing:
        raise UserError(f"iterate: setup_from: {src} is not an iterate run with a finished set-up"
                        + (f" ({missing[0]} is not complete)" if missing else " (no config.yaml)"))
    saved, now = yaml.safe_load((src / "config.yaml").read_text()) or {}, to_dict(cfg)
    differ = [k for k in SETUP_KEYS if saved.get(k) != now.get(k)]
    if differ:
        raise UserError(f"iterate: setup_from: {src} was set up with other {', '.join(differ)}",
                        hint="give the same seed and set-up options, or leave setup_from empty")
    if cfg.setup_rounds:
        K = cfg.setup_rounds
        free = {"out", "rounds", "setup_from", "setup_rounds", "drift", "drift_from_round", "targeted_round", "resume",
                "overwrite", "threads"}
        differ = [k for k in sorted(set(saved) | set(now)) if k not in free and saved.get(k) != now.get(k)]
        if differ:
            raise UserError(f"iterate: setup_rounds: {src} ran with other {', '.join(differ)}",
                            hint="rounds are reused only from a run with the same config up to rounds, drift and "
                                 "targeted_round")
        if K >= cfg.rounds:
            raise UserError(f"iterate: setup_rounds: {K} leaves no round to run (rounds {cfg.rounds})")
        if run_state(src / f"round{K}" / "eval") != "complete":
            raise UserError(f"iterate: setup_rounds: {src} has no finished round {K}")
        for spec, first in ((cfg.drift, cfg.drift_from_round), (saved.get("drift"), saved.get("drift_from_round"))):
            if spec and first <= K:
                raise UserError(f"iterate: setup_rounds: a drift from round {first} <= {K} would change the reused "
                                "rounds")
    return src


def _copy_setup(src: Path, out: Path, rounds: int = 0) -> None:
    """Copy the tiny model, SFT and round-0 evaluation (and their timings) of ``src`` into ``out`` where ``out``
    does not have them yet (a resumed run keeps its own); with ``rounds`` K > 0 also the world folder (its
    annotated pairs) and rounds 1..K."""
    import shutil

    for rel in ("base", "sft", "round0/eval") + (("world",) + tuple(f"round{k}" for k in range(1, rounds + 1))
                                                  if rounds else ()):
        if not (out / rel).exists():
            shutil.copytree(src / rel, out / rel)
    if (src / "round0" / "timings.json").exists() and not (out / "round0" / "timings.json").exists():
        setup = {k: v for k, v in json.loads((src / "round0" / "timings.json").read_text()).items() if k != "world"}
        (out / "round0").mkdir(exist_ok=True)
        (out / "round0" / "timings.json").write_text(json.dumps(setup))


def _load_timings(folder: Path) -> dict:
    path = folder / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _round_extras(rk: Path, d: float) -> dict:
    """Red-team, score-model and RL numbers of a round."""
    out: dict = {"cost_threshold": d}
    stats = rk / "redteam" / "stats.json"
    if stats.exists():
        s = json.loads(stats.read_text())
        out |= {"redteam_prompts": s["n_kept"], "redteam_attack_success_rate": s["attack_success_rate"],
                "redteam_success_by_operator": {o: v["rate"] for o, v in s["by_operator"].items()}}
    stats = rk / "preferences.stats.json"
    counts = json.loads(stats.read_text()).get("counts", {}) if stats.exists() else {}
    if "records" in counts:  # the labelling cost of the round, in pairs
        out["labelled_pairs"] = counts["records"]
    if "human_pairs" in counts:  # --annotator mixed: the labelling cost of the round
        out |= {"human_pairs": counts["human_pairs"], "ai_pairs": counts["ai_pairs"]}
    for kind in ("reward", "cost"):
        ev = rk / kind / "eval.json"
        if ev.exists():
            e = json.loads(ev.read_text())
            out[f"{kind}_model_accuracy"] = e.get("accuracy")
    rows = _jsonl(rk / "rl" / "metrics.jsonl") if (rk / "rl" / "metrics.jsonl").exists() else []
    last = rows[-1] if rows else {}
    for key in ("lagrange/lambda", "cost/mean", "reward/mean", "train/kl"):
        if key in last:
            out["final_" + key.replace("/", "_")] = last[key]
    return out


def _print_table(rounds: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = ("harmful_rate_redteam_test", "harmful_rate", "over_refusal_rate", "win_rate_vs_sft_benign_lookalike",
            "repetition_share", "seconds")
    table = Table(title="Safe RLHF rounds (round 0 = SFT)")
    table.add_column("round")
    for c in cols:
        table.add_column(c.replace("_", " "))
    for r in rounds:
        table.add_row(str(r["round"]), *("-" if r.get(c) is None else f"{r[c]:.3f}" if c != "seconds" else f"{r[c]:.0f}"
                                         for c in cols))
    Console(width=160).print(table)


def _report(out: Path, cfg: IterateConfig, summary: dict) -> None:
    import html

    from saferlhf.eval.report import plot_rounds, write_html_report

    plot_rounds(summary["rounds"], out / "rounds.png")
    keys = ("round", "harmful_rate_redteam_test", "harmful_rate", "over_refusal_rate",
            "win_rate_vs_sft_benign_lookalike", "repetition_share", "redteam_prompts", "redteam_attack_success_rate",
            "cost_threshold", "final_lagrange_lambda", "seconds")
    rows = [{k: r.get(k) for k in keys} for r in summary["rounds"]]
    images = [out / "rounds.png"] + [p for p in (out / f"round{r['round']}" / "rl" / "training_curves.png"
                                                for r in summary["rounds"]) if p.exists()]
    write_html_report(out / "report.html", f"saferlhf iterate: {cfg.rounds} rounds of Safe RLHF with red-teaming "
                      f"({cfg.algorithm})", rows, images,
                      notes=f"seed {cfg.seed}; whole run {summary['seconds']:.0f} s on CPU; command: <code>"
                            + html.escape(f"saferlhf iterate --rounds {cfg.rounds} --out {cfg.out} --seed {cfg.seed} "
                                          f"--algorithm {cfg.algorithm}")
                            + "</code>; every round's evaluation: roundK/eval/report.html",
                      config=summary["config"])
