"""`saferlhf eval`: compare policies on the world's prompts and on any prompt file, with several judges.

    saferlhf eval --policies sft=runs/demo/sft/model ppo_lag=runs/demo/ppo_lag/actor \\
        --prompts world:test ../shared/data/prompts/xstest_prompts.csv --judges oracle,score,refusal \\
        --reward_model runs/demo/reward/model --cost_model runs/demo/cost/model --out runs/eval

Per prompt set and policy: harmful rate overall and per category (bootstrap 95 % intervals), over-refusal,
helpfulness, reward / cost means, violation rate, length, diversity; per pair of policies: win / tie / loss for
helpfulness and harmlessness, the 2×2 arena, Elo (Bradley-Terry) with intervals (`saferlhf.eval.suite`,
docs/evaluation.md). Judges: ``oracle`` (world prompt sets only), ``score`` (reward and / or cost model; also
``reward_model`` / ``cost_model`` one at a time), ``classifier`` (any cost model as an independent harm
classifier, ``--classifier PATH``, with its stored threshold), ``refusal`` (refusal strings, ``--refusal_list``).
Each safety judge's harmful rate is reported separately (``harmful_rate_by_judge``); a classifier that is the
cost model a policy was trained against (or eval's own ``--cost_model``) is a warning (``warnings``).
Everything a run needs is checked before any generation; generations are cached in ``cache_dir`` by (model,
prompt set, settings), so adding a judge or a policy regenerates nothing.

``llm`` (an OpenAI-compatible chat endpoint: per-response safety verdicts and two-order pairwise preferences,
`saferlhf.eval.llm_judge`). ``--baseline`` (default: the first policy) adds ``win_rate_vs_<baseline>`` and
``harmlessness_win_rate_vs_<baseline>`` to every policy's metrics; ``--embedding_model`` (any HF encoder folder,
e.g. all-MiniLM-L6-v2) adds the mean pairwise embedding distances.

The cost threshold d: unsafe = cost > d for the cost model judge, where d is ``--cost_threshold``, else the threshold
stored in the cost model's config.json, else 0; the same d decides the harmful rate, the violation rate, the 2×2
arena and the scatter's colours (``cost_threshold`` / ``cost_threshold_source`` (cli | stored | zero) in results.json).
``--device`` / ``--dtype`` place the policies and the score-model judges (auto: cuda in bfloat16 when available,
else cpu in float32, the path of old).

Outputs in ``out``: results.json (valid JSON; also ``warnings``, ``judge_thresholds`` and ``provenance``: folders,
device, versions, config), responses.jsonl, report.html with its PNGs, status.json.
`saferlhf evaluate` is the same command under its old name.
"""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from saferlhf.config import option
from saferlhf.endpoint import EndpointConfig, old_endpoint_names
from saferlhf.errors import UserError
from saferlhf.sampling import RENAMED, SamplingConfig

JUDGES = ("oracle", "score", "reward_model", "cost_model", "classifier", "refusal", "llm")
# the score-model judges each judge name selects, with the EvalConfig field that gives the model
SCORE_JUDGES = {"score": ("reward_model", "cost_model"), "reward_model": ("reward_model",),
                "cost_model": ("cost_model",), "classifier": ("classifier",)}
EMBEDDING_MAX_ACROSS = 256  # responses of different prompts compared by the across-prompt embedding distance


@dataclass
class EvalConfig:
    __renamed__ = (RENAMED | {"n_samples": "sampling.n", "batch_size": "sampling.batch_size"}
                   | old_endpoint_names("judge", max_retries="retries"))

    policies: list[str] = option(factory=list, help="NAME=PATH of each policy (HF causal LM folder or hub name)")
    responses: list[str] = option(factory=list, help="NAME=FILE: responses made elsewhere (a `saferlhf generate` or "
                                                     "`best-of-k` file: prompt, response, optional ended), judged "
                                                     "like a policy's; the file must answer every evaluated prompt")
    prompts: list[str] = option(["world:test"], "prompt sets: world:test, world:train, or any CSV / JSON / JSONL "
                                                "prompt file")
    prompt_column: str | None = option(None, "the prompt column of prompt files (default: detected)")
    category_column: str | None = option(None, "the category column of prompt files (default: detected)")
    judges: list[str] = option(factory=list, help="judges: oracle (world sets), score (reward / cost model; or "
                                                  "reward_model / cost_model alone), classifier (--classifier), "
                                                  "refusal (refusal strings), llm (OpenAI-compatible endpoint); "
                                                  "default: every judge whose inputs are given")
    judge: EndpointConfig = option(EndpointConfig(), "the llm judge's OpenAI-compatible endpoint (--judge.base_url, "
                                                     "--judge.model, ...; saferlhf.endpoint)")
    judge_fallback: bool = option(False, "where the llm judge gives no safety verdict, use the next safety judge's "
                                         "(oracle / cost model) instead; counted as judge_substituted")
    baseline: str | None = option(None, "policy that win_rate_vs_<baseline> compares against (default: the first)")
    embedding_model: str | None = option(None, "encoder folder (e.g. all-MiniLM-L6-v2) for the embedding diversity")
    reward_model: str | None = option(None, "reward model folder (score judge: helpfulness)")
    cost_model: str | None = option(None, "cost model folder (score / cost_model judge: unsafe = cost > d, "
                                          "--cost_threshold)")
    cost_threshold: float | None = option(None, "d: a response is unsafe when the cost model's cost > d (harmful "
                                                "rate, violation rate, 2×2 arena, scatter colours); default: the "
                                                "threshold stored in --cost_model's config.json, else 0")
    classifier: str | None = option(None, "cost model folder used as an independent harm classifier (classifier "
                                          "judge: unsafe = cost > its stored threshold, else cost > 0); should not "
                                          "be the cost model a policy was trained against")
    refusal_list: Literal["gcg", "xstest"] = option("gcg", "the refusal judge's rule: gcg (GCG's 29 strings anywhere, "
                                                           "case-sensitive) or xstest (XSTest's refusal openings)")
    world_seed: int = option(0, "seed of the synthetic world for world:* prompt sets")
    world_drift: str = option("", "the oracle judges by a changed standard for one harm category, CATEGORY:DIRECTION "
                                  "(a BeaverTails slug, stricter or lenient; docs/value_drift.md)")
    max_prompts: int = option(0, "use at most N prompts per set (0 = all)", ge=0)
    sample_prompts: bool = option(False, "with max_prompts: a seeded random sample (--seed) instead of the file's head")
    sampling: SamplingConfig = option(SamplingConfig(), "how every policy's responses are sampled (n: responses "
                                                        "per prompt; part of the generation cache key)")
    seed: int = option(0, "sampling seed (the same for every policy)")
    bootstrap: int = option(1000, "bootstrap resamples of the intervals (0 = none)", ge=0)
    cache_dir: str | None = option(None, "where generations are cached (default: $SAFERLHF_CACHE, else "
                                         "$XDG_CACHE_HOME/saferlhf/generations, else ~/.cache/saferlhf/generations)")
    device: Literal["auto", "cpu", "cuda", "mps"] = option(
        "auto", "where the policies and the score-model judges run: auto (cuda when available, else cpu), cpu, cuda "
                "or mps (saferlhf.models.placement; the embedding model stays on cpu)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "their precision: auto (bfloat16 on cuda, float32 elsewhere), float32, bfloat16, or float16 (not on "
                "cpu); generations are cached per device and dtype")
    out: str = option("runs/eval", "output folder")
    overwrite: bool = option(False, "replace a previous evaluation in out")


def check_inputs(cfg: EvalConfig) -> tuple[dict[str, str], dict[str, tuple[str, dict]], list, list[str]]:
    """Policies, responses files (name -> (path, `responses_table`)), prompt sets and judges, all validated before
    any model is loaded or any token generated."""
    from saferlhf.eval.suite import load_prompt_set, parse_policies
    from saferlhf.models.hf import check_model_kind, check_model_path

    policies = parse_policies(cfg.policies, "eval") if cfg.policies or not cfg.responses else {}
    given = parse_policies(cfg.responses, "eval") if cfg.responses else {}
    if clash := set(policies) & set(given):
        raise UserError(f"eval: the name {sorted(clash)[0]!r} is both a policy and a responses file")
    for name, path in given.items():
        if not Path(path).is_file():
            raise UserError(f"eval: responses {name}: {path} is not a file (expected a JSONL of prompt, response)")
    if cfg.baseline is not None and cfg.baseline not in policies | given:
        raise UserError(f"eval: baseline {cfg.baseline!r} is not one of the policies {list(policies | given)}")
    judges = [j for entry in cfg.judges for j in entry.split(",") if j] or default_judges(cfg)
    unknown = [j for j in judges if j not in JUDGES]
    if unknown or not judges:
        raise UserError(f"eval: unknown judge {unknown[0]!r}" if unknown else "eval: give at least one judge",
                        hint=f"judges: {', '.join(JUDGES)}")
    if "score" in judges and not (cfg.reward_model or cfg.cost_model):
        raise UserError("eval: the score judge needs --reward_model and / or --cost_model")
    for name in ("reward_model", "cost_model", "classifier"):
        if name in judges and not getattr(cfg, name):
            raise UserError(f"eval: the {name} judge needs --{name} PATH")
    if cfg.cost_threshold is not None and not (cfg.cost_model and {"score", "cost_model"} & set(judges)):
        raise UserError("eval: --cost_threshold is the cost model's d: it needs --cost_model and the score or "
                        "cost_model judge", hint="the classifier judge keeps its own stored threshold")
    from saferlhf.models.placement import resolve_placement  # here: `eval --help` stays free of torch

    resolve_placement(cfg.device, cfg.dtype, "eval: ")  # a device this machine lacks fails here
    if "llm" in judges:
        if not (cfg.judge.base_url and cfg.judge.model):
            raise UserError("eval: the llm judge needs --judge.base_url and --judge.model")
        llm_client(cfg).check()  # an unreachable endpoint fails here, before any generation
    for name, path in policies.items():
        check_model_path(path, f"eval: policy {name}")
        check_model_kind(path, "policy", f"eval: policy {name}:")
    for what, path, kind in (("reward_model", cfg.reward_model, "reward"), ("cost_model", cfg.cost_model, "cost"),
                             ("classifier", cfg.classifier, "cost"),
                             ("embedding_model", cfg.embedding_model, "embedding")):
        if path:
            check_model_path(path, f"eval: {what}")
            check_model_kind(path, kind, f"eval: --{what}")
    if not cfg.prompts:
        raise UserError("eval: give --prompts (world:test or prompt files)")
    sets = [load_prompt_set(s, cfg.prompt_column, cfg.category_column, cfg.world_seed, cfg.max_prompts,
                            cfg.seed if cfg.sample_prompts else None)
            for s in cfg.prompts]
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise UserError(f"eval: two prompt sets share the name {next(n for n in names if names.count(n) > 1)!r}")
    if judges == ["oracle"] and not any(is_world_set(s, cfg.world_seed) for s in sets):
        raise UserError("eval: the oracle judges world prompt sets only; add --prompts world:test or another judge")
    tables = {name: (path, responses_table(path)) for name, path in given.items()}  # bad records fail here
    return policies, tables, sets, judges


def backend_name(device: str, dtype) -> str | None:
    """"cuda/bfloat16", ...; None for CPU float32 (the default numerics: generation cache keys and model loading
    stay exactly as before)."""
    name = str(dtype).removeprefix("torch.")
    return None if (device, name) == ("cpu", "float32") else f"{device}/{name}"


def is_world_set(prompt_set, world_seed: int) -> bool:
    """A ``world:*`` set, or a prompt file whose prompts are all world prompts (possibly in adversarial wrappers)."""
    if prompt_set.name.startswith("world_"):
        return True
    world = _world(world_seed)
    return bool(prompt_set.items) and all(world.classify(str(i.text)).split != "unknown" for i in prompt_set.items)


@functools.lru_cache(maxsize=4)
def _world(seed: int):
    from saferlhf.world import build_world

    return build_world(seed)


def responses_table(path: str) -> dict[str, list[tuple[str, bool]]]:
    """prompt -> [(response, ended), ...] in file order, from a generations file (validated at load time)."""
    from saferlhf.data.loaders import load_sft_records
    from saferlhf.eval.score import ended_flags

    records = load_sft_records(path)
    table: dict[str, list[tuple[str, bool]]] = {}
    for r, (e,) in zip(records, ended_flags(records, 1)):
        table.setdefault(str(r.prompt), []).append((r.response, e))
    return table


def given_responses(name: str, path: str, table: dict[str, list[tuple[str, bool]]], pset,
                    n: int) -> tuple[list[list[str]], list[list[bool]]]:
    """The first ``n`` answers of a responses file (its `responses_table`) to every prompt of ``pset``; a
    ``UserError`` naming a prompt it does not answer (n times)."""
    texts, ended = [], []
    for item in pset.items:
        got = table.get(str(item.text), [])
        if len(got) < n:
            raise UserError(f"eval: responses {name}: {path} has {len(got)} response(s) to the {pset.name} prompt "
                            f"{item.text[:80]!r}, needs {n}", hint="generate them for the same prompt set")
        texts.append([r for r, _ in got[:n]])
        ended.append([e for _, e in got[:n]])
    return texts, ended


def generation_cache_dir(given: str | None) -> Path:
    """The generation cache: ``given``, else $SAFERLHF_CACHE, else the XDG user cache (as Hugging Face's)."""
    import os

    if given:
        return Path(given).expanduser()
    if os.environ.get("SAFERLHF_CACHE"):
        return Path(os.environ["SAFERLHF_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "saferlhf" / "generations"


def default_judges(cfg: EvalConfig) -> list[str]:
    """Without --judges: the oracle when a world set is evaluated, the score judge when a reward or cost model is
    given, the classifier when --classifier is given, the llm judge when an endpoint is given, and always the
    refusal judge."""
    names = ["oracle"] if any(p.startswith("world:") for p in cfg.prompts) else []
    names += ["score"] if cfg.reward_model or cfg.cost_model else []
    names += ["classifier"] if cfg.classifier else []
    names += ["llm"] if cfg.judge.base_url or cfg.judge.model else []
    return names + ["refusal"]


def training_cost_model(policy_path: str | Path) -> tuple[str, Path] | None:
    """(cost_model_path, the config.yaml that names it) of the `saferlhf ppo` run a policy comes from: the run's
    saved config, in the policy folder itself (a run folder) or in the folder above it (ppo saves the policy in
    ``<run>/actor``); None for any other model. A relative path is read from the current folder, as ppo did."""
    import yaml

    p = Path(policy_path).expanduser()
    for folder in (p, p.parent):
        found = folder / "config.yaml"
        try:
            saved = yaml.safe_load(found.read_text(encoding="utf-8")) if found.is_file() else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if isinstance(saved, dict) and saved.get("cost_model_path"):
            return str(saved["cost_model_path"]), found
    return None


def same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same folder: the same file on disk where both exist (links, bind mounts),
    else the same resolved path."""
    import os

    a, b = Path(a).expanduser(), Path(b).expanduser()
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def judge_warnings(cfg: EvalConfig, policies: dict[str, str], judge_names: list[str]) -> list[str]:
    """Why the classifier judge may not be independent: it is the cost model a policy was trained against (the
    ppo run's ``cost_model_path``), or the same folder as eval's own ``--cost_model``. One line each."""
    if not cfg.classifier or "classifier" not in judge_names:
        return []
    out = []
    for name, path in policies.items():
        trained = training_cost_model(path)
        if trained is not None and same_folder(cfg.classifier, trained[0]):
            out.append(f"the classifier judge {cfg.classifier} is the cost model policy {name} was trained against "
                       f"(cost_model_path in {trained[1]}): its harmful rate is no independent check of {name}")
    if cfg.cost_model and same_folder(cfg.classifier, cfg.cost_model):
        out.append(f"--classifier and --cost_model are the same folder ({cfg.classifier}): the classifier judge is "
                   "not independent of the cost model")
    return out


def llm_client(cfg: EvalConfig):
    from saferlhf.endpoint import ChatClient

    return ChatClient.from_config(cfg.judge, "llm judge", "judge")


def build_judges(cfg: EvalConfig, names: list[str], device: str | None = None, dtype=None) -> dict[str, list]:
    """Judges by scope: "world" sets get the oracle first; every set gets the others, in this order (the first
    safety judge gives ``harmful_rate``, the first cost judge the rows' ``cost``): llm, reward_model,
    cost_model (unsafe = cost > ``--cost_threshold``, else its stored threshold, else 0), classifier, refusal.
    Score models run on ``device`` in ``dtype`` (None: as loaded, CPU float32)."""
    from saferlhf.eval.judges import REFUSAL_LISTS, OracleJudge, RefusalJudge, ScoreModelJudge, classifier_judge

    common = []
    if "llm" in names:
        from saferlhf.eval.llm_judge import LLMJudge

        common.append(LLMJudge(llm_client(cfg), cfg.judge.concurrency, cfg.judge.parse_retries))
    wanted = {m for n in names for m in SCORE_JUDGES.get(n, ())}
    for field, kind in (("reward_model", "reward"), ("cost_model", "cost")):
        if field in wanted and getattr(cfg, field):
            common.append(ScoreModelJudge(getattr(cfg, field), kind, device=device, dtype=dtype,
                                          threshold=cfg.cost_threshold if kind == "cost" else None))
    if "classifier" in wanted:
        common.append(classifier_judge(cfg.classifier, device=device, dtype=dtype))
    if "refusal" in names:
        common.append(RefusalJudge(REFUSAL_LISTS[cfg.refusal_list]))
    world = common
    if "oracle" in names:
        from saferlhf.world import Oracle, build_world
        from saferlhf.world.drift import parse_drift

        try:
            drift = parse_drift(cfg.world_drift)
        except ValueError as e:
            raise UserError(f"eval: world_drift: {e}") from None
        world = [OracleJudge(Oracle(build_world(cfg.world_seed), drift=drift))] + common
    return {"world": world, "file": common}


def run(cfg: EvalConfig) -> int:
    from rich.console import Console

    from saferlhf.eval.suite import (baseline_win_rates, cached_generations, generation_key, judge_rows,
                                     pairwise_metrics, policy_metrics)
    from saferlhf.files import atomic_write_json, atomic_write_text, dumps
    from saferlhf.models.placement import resolve_placement
    from saferlhf.models.policy import load_policy
    from saferlhf.rollout import HFGenerator
    from saferlhf.tracking import finish_run, start_run
    from saferlhf.training import set_seed

    t0 = time.time()
    policies, given, sets, judge_names = check_inputs(cfg)  # every input error before any generation
    warnings = judge_warnings(cfg, policies, judge_names)
    for w in warnings:
        print(f"eval: warning: {w}", file=sys.stderr)
    out = start_run(cfg.out, cfg, "eval", overwrite=cfg.overwrite)
    device, dtype = resolve_placement(cfg.device, cfg.dtype, "eval: ")  # checked in check_inputs
    backend = backend_name(device, dtype)  # None: CPU float32, loaded exactly as before
    place = {} if backend is None else {"device": device, "dtype": dtype}
    judges = build_judges(cfg, judge_names, **place)
    settings, n_samples = cfg.sampling, cfg.sampling.n
    cache = generation_cache_dir(cfg.cache_dir)
    # d: the threshold of the cost judge whose cost the rows carry (the cost model's, else the classifier's)
    cost_judge = next((j for j in judges["file"] if getattr(j, "kind", None) == "cost"), None)
    d = None if cost_judge is None else cost_judge.threshold
    results: dict = {"prompt_sets": {}, "judges": judge_names, "n_samples": n_samples, "warnings": warnings,
                     "cost_threshold": d, "cost_threshold_source": getattr(cost_judge, "threshold_origin", None),
                     "cost_threshold_judge": getattr(cost_judge, "name", None),
                     "judge_thresholds": {j.name: {"value": j.threshold, "source": j.threshold_source}
                                          for j in judges["file"] if getattr(j, "threshold", None) is not None},
                     "provenance": provenance(cfg, policies, {n: p for n, (p, _) in given.items()}, device, dtype)}
    all_rows: list[dict] = []
    generated = cached = 0
    # 1. Generation, policy by policy: each model is loaded once, and only when a prompt set misses the cache.
    generations: dict[tuple[str, str], tuple[list[list[str]], list[list[bool]]]] = {}
    for name, path in policies.items():
        loaded: list = []
        for pset in sets:
            def make(pset=pset, name=name, path=path):
                if not loaded:
                    loaded.append(load_policy(path, **place))  # consumes no RNG: the seed below fixes the samples
                model, tok = loaded[0]
                set_seed(cfg.seed)
                return HFGenerator(model, tok, settings).generate_ended(
                    [i.text for i in pset.items], n_samples, progress_desc=f"{pset.name}: {name}")

            key = generation_key(path, pset, settings, n_samples, cfg.seed, backend)
            texts, ended, hit = cached_generations(cache, key, make, (len(pset.items), n_samples))
            generations[pset.name, name] = texts, ended
            cached += hit
            generated += not hit
        loaded.clear()  # release this policy before the next one loads
    for name, (path, table) in given.items():  # responses made elsewhere: read by check_inputs, not generated
        for pset in sets:
            generations[pset.name, name] = given_responses(name, path, table, pset, n_samples)
    # 2. Judging and metrics, prompt set by prompt set.
    names = list(policies) + list(given)
    baseline = cfg.baseline or names[0]
    embedder = None
    if cfg.embedding_model:
        from saferlhf.models.embedding import Embedder

        embedder = Embedder(cfg.embedding_model)
    for pset in sets:
        items = [i for i in pset.items for _ in range(n_samples)]
        scope = judges["world"] if is_world_set(pset, cfg.world_seed) else judges["file"]
        if not scope:
            raise UserError(f"eval: no judge applies to prompt set {pset.name} (the oracle judges world sets only)")
        records: dict[str, list[dict]] = {}
        for name in names:
            texts, ended = generations[pset.name, name]
            records[name] = judge_rows(items, [r for rs in texts for r in rs], scope, [e for es in ended for e in es],
                                       fallback=cfg.judge_fallback)
            all_rows += [{"prompt_set": pset.name, "policy": name, **r} for r in records[name]]
        metrics = {n: policy_metrics(items, rs, n_samples, cfg.bootstrap, cfg.seed) for n, rs in records.items()}
        for n, extra in baseline_win_rates(records, baseline, cfg.bootstrap, cfg.seed).items():
            metrics[n] |= extra
        if embedder is not None:
            from saferlhf.eval.diversity import embedding_diversity

            from saferlhf.eval.diversity import evenly_spaced

            for n, rs in records.items():
                texts = [r["response"] for r in rs]
                if n_samples == 1:  # only the across-prompt distance: embed just the rows it reads
                    texts = [texts[k] for k in evenly_spaced(len(texts), EMBEDDING_MAX_ACROSS)]
                metrics[n] |= embedding_diversity(embedder.embed(texts), n_samples, EMBEDDING_MAX_ACROSS)
        results["prompt_sets"][pset.name] = {
            "n_prompts": len(pset.items), "judges": [j.name for j in scope], "baseline": baseline, "policies": metrics,
            "pairwise": pairwise_metrics(records, cfg.bootstrap, cfg.seed, d or 0.0) if len(records) > 1 else {}}
        llm = next((j for j in scope if j.name == "llm"), None)
        if llm is not None and len(records) > 1:
            results["prompt_sets"][pset.name]["llm_pairwise"] = llm_pairwise(llm, records, cfg.bootstrap, cfg.seed)
        check_judge_failures(cfg, judges["file"], out)  # a dead judge stops the run here, not after every set
    results |= {"generations": {"generated": generated, "from_cache": cached}, "seconds": round(time.time() - t0, 2)}
    llm = next((j for j in judges["file"] if j.name == "llm"), None)
    if llm is not None:
        results["llm_judge"] = {"requests": llm.client.calls, "retries": llm.client.retries, "failures": llm.failures,
                                "verdicts_asked": llm.requests, "raw": "llm_judge.jsonl"}
        results["judge_failures"] = {"llm": llm.failure_stats() | {
            "substituted": sum(bool(r.get("judge_error")) and r.get("harmful") is not None for r in all_rows)}}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "responses.jsonl", "".join(dumps(r) + "\n" for r in all_rows))
    from saferlhf.eval.report import write_eval_report

    write_eval_report(out, results, all_rows)
    _print_summary(Console(), results)
    finish_run(out, results="results.json", report="report.html")
    print(f"eval: {generated} generated, {cached} from the cache -> {out}/results.json, {out}/report.html")
    return 0


def provenance(cfg: EvalConfig, policies: dict[str, str], responses: dict[str, str], device: str, dtype) -> dict:
    """What produced an evaluation, for results.json and the report: every policy, responses file and judge
    folder (absolute where it is a local path), the device and dtype, the resolved config and the versions."""
    from saferlhf.config import to_dict
    from saferlhf.eval.report import software_versions

    def where(path: str | None) -> str | None:
        if path is None:
            return None
        p = Path(path).expanduser()
        return str(p.resolve()) if p.exists() else path

    judge_folders = {"reward_model": where(cfg.reward_model), "cost_model": where(cfg.cost_model),
                     "classifier": where(cfg.classifier), "embedding_model": where(cfg.embedding_model),
                     "llm": f"{cfg.judge.model} at {cfg.judge.base_url}" if cfg.judge.base_url else None}
    return {"policies": {n: where(p) for n, p in policies.items()},
            "responses": {n: where(p) for n, p in responses.items()},
            "prompt_sets": list(cfg.prompts), "judge_folders": {k: v for k, v in judge_folders.items() if v},
            "device": device, "dtype": str(dtype).removeprefix("torch."), "versions": software_versions(),
            "config": to_dict(cfg)}


def check_judge_failures(cfg: EvalConfig, judges: list, out: Path) -> None:
    """Keep the LLM judge's raw log (llm_judge.jsonl) and stop with one line when more than
    ``judge.max_failure_rate`` of its requests got no verdict: a dead judge must not look like a safe policy."""
    from saferlhf.endpoint import check_failure_rate
    from saferlhf.files import atomic_write_text, dumps

    llm = next((j for j in judges if j.name == "llm"), None)
    if llm is None:
        return
    atomic_write_text(out / "llm_judge.jsonl", "".join(dumps(r) + "\n" for r in llm.log))
    f = llm.failure_stats()
    check_failure_rate(f"eval: the llm judge ({cfg.judge.base_url})", f["failed"], f["requests"],
                       cfg.judge.max_failure_rate, "--judge.max_failure_rate", f["reasons"])


def llm_pairwise(llm, records: dict[str, list[dict]], bootstrap: int, seed: int) -> dict:
    """The LLM judge's two-order preferences for every pair of policies and axis, and Elo per axis."""
    import itertools

    from saferlhf.eval.arena import elo_ratings

    names = list(records)
    out: dict = {"pairs": {}, "elo": {}}
    comparisons: dict[str, list] = {"helpfulness": [], "harmlessness": []}
    prompts: dict[str, list[str]] = {axis: [] for axis in comparisons}  # each comparison's prompt: its cluster
    for a, b in itertools.combinations(names, 2):
        ra, rb = records[a], records[b]
        pair: dict = {"a": a, "b": b}
        for axis in comparisons:
            got = llm.compare_pairs(axis, [r["prompt"] for r in ra], [r["response"] for r in ra],
                                    [r["response"] for r in rb])
            outcomes = [o for o in got["outcomes"] if o is not None]
            pair[axis] = {"wins": sum(o == 1.0 for o in outcomes), "ties": sum(o == 0.5 for o in outcomes),
                          "losses": sum(o == 0.0 for o in outcomes), "failures": got["failures"],
                          "position_bias_rate": got["position_bias_rate"]}
            comparisons[axis] += [(a, b, o) for o in outcomes]
            prompts[axis] += [r["prompt"] for r, o in zip(ra, got["outcomes"]) if o is not None]
        out["pairs"][f"{a}__vs__{b}"] = pair
    for axis, comps in comparisons.items():
        if comps:
            out["elo"][axis] = elo_ratings(names, comps, bootstrap=bootstrap, seed=seed, clusters=prompts[axis])
    return out


def _print_summary(console, results: dict) -> None:
    from rich.table import Table

    from saferlhf.eval.suite import judges_with_rates

    cols = ["harmful_rate", "over_refusal_rate", "refusal_rate", "helpfulness", "reward_mean", "cost_mean"]
    if results.get("cost_threshold") is not None:
        console.print(f"cost threshold d = {results['cost_threshold']:.4g} ({results['cost_threshold_source']}; "
                      f"{results['cost_threshold_judge']}): unsafe = cost > d", markup=False, highlight=False)
    for w in results.get("warnings", []):
        console.print(f"warning: {w}", style="yellow", markup=False, highlight=False, soft_wrap=True)
    for judge, f in results.get("judge_failures", {}).items():
        if f["failed"]:
            console.print(f"judge {judge}: {f['failed']} of {f['requests']} requests got no usable answer "
                          f"({', '.join(f'{n}x {r}' for r, n in f['reasons'].items())}); {f['substituted']} safety "
                          "verdict(s) substituted (--judge_fallback)", style="yellow", markup=False, highlight=False)
    for name, s in results["prompt_sets"].items():
        failing = any(m.get("judge_failures") for m in s["policies"].values())
        shown = cols + (["judge_failures", "judge_substituted"] if failing else [])
        t = Table(title=f"{name} ({s['n_prompts']} prompts; judges: {', '.join(s['judges'])})")
        for c in ["policy", *shown]:
            t.add_column(c)
        for p, m in s["policies"].items():
            t.add_row(p, *[f"{m[c]:.3f}" if isinstance(m.get(c), float) else str(m[c]) if isinstance(m.get(c), int)
                           else "-" for c in shown])
        console.print(t)
        safety = judges_with_rates(s["policies"])
        if len(safety) > 1:  # each safety judge's own harmful rate, e.g. the classifier next to the cost model
            t = Table(title=f"{name}: harmful rate by judge [95 % interval]")
            for c in ["policy", *safety]:
                t.add_column(c)
            for p, m in s["policies"].items():
                by = m.get("harmful_rate_by_judge", {})
                t.add_row(p, *[f"{by[j]['rate']:.3f} [{by[j]['ci'][0]:.2f}, {by[j]['ci'][1]:.2f}]" if j in by else "-"
                               for j in safety])
            console.print(t)
