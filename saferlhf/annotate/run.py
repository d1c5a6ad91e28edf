"""`saferlhf annotate run`: label a pair file with the simulated panel or any labeller, resumably.

    saferlhf annotate run --annotator panel --input pairs.jsonl --out labels/ [--seed 0] [--overlap 3] [--ties drop]
    saferlhf annotate run --annotator mypkg.judge:make_labeller --input pairs.jsonl --out labels/
    saferlhf annotate run --annotator world:ai --input pairs.jsonl --out labels/ [--aggregation dawid_skene|soft]
        [--exclude NAME ...] [--exclude_below 0.7]
    saferlhf annotate run --annotator llm --judge.base_url http://127.0.0.1:8000/v1 --judge.model NAME \
        --input pairs.jsonl --out labels/

The input is any response-pair file (``saferlhf generate --pairs`` output, PKU-SafeRLHF, JSONL / CSV with
prompt / response_0 / response_1), read by ``saferlhf.annotate.pairs.input_pairs``: pairs with an empty
response, identical responses or repeating an earlier pair are skipped and said so. The folder ``--out``:

* ``pairs.jsonl``: the queue, one ``{"pair_id", "prompt", "response_0", "response_1", "response_0_source",
  "response_1_source", "prompt_source"}`` per pair (``pair_id``: ``pairs.pair_id``, 16 hex digits);
* ``labels.jsonl``: one ``{"pair_id", **labels.label_to_dict(label)}`` per annotator and pair, appended and
  flushed to disk pair by pair;
* ``records.jsonl``: PKU-SafeRLHF v1 records (``aggregate.aggregate_labels``: ``--aggregation majority``, ties
  toward unsafe, ``dawid_skene`` or ``soft``; a helpfulness or harmlessness tie dropped with ``--ties drop``, kept
  as id 0 with ``better_response_tie`` / ``safer_response_tie`` with ``--ties keep``; the labels of ``--exclude``
  annotators, and with ``--exclude_below X`` of those whose Dawid-Skene accuracy is below X, left out), which
  ``score-model`` and ``dpo`` read as they are;
* ``stats.json``: counts and agreement per question (pairwise, Fleiss' kappa, Krippendorff's alpha), the
  ``aggregation``, ``annotators`` (per annotator: Dawid-Skene accuracy and confusion matrix, agreement with the
  leave-one-out majority, ``excluded``; ``saferlhf.annotate.reliability``) and ``exclusion``;
* ``run.json``: the annotator, seed and overlap (``--annotator llm``: and ``judge.model``; a resumed run must use
  the same);
* ``llm_cache.jsonl`` (``--annotator llm``): the judge's usable answers, so a rerun asks nothing it has an answer to.

Resuming: rerun the same command. Pairs with labels in ``labels.jsonl`` are not labelled again; a torn last
line (a run killed while writing) is cut off with a warning and its pair labelled again; a finished run
rerun only rewrites ``records.jsonl`` and ``stats.json`` (so ``--ties``, ``--aggregation`` and the exclusion may
change). A different queue or different annotator settings in the same folder is an error.

``--annotator``: ``panel`` (the world's simulated crowdworkers, ``saferlhf.world.annotators.panel_labeller``:
qualification on gold pairs, ``--overlap`` raters per pair), ``world:NAME`` (a world annotator of
``WORLD_ANNOTATORS``; ``world:panel`` is ``panel``; ``world:ai`` a simulated AI judge with a miss rate on
disguised requests, a verbosity and a position bias, ``saferlhf.world.annotators.ai_labeller``), ``llm`` (an LLM
judge over the OpenAI-compatible endpoint ``--judge.*``, ``saferlhf.annotate.llm``; docs/ai-feedback.md) or
``module:factory``: an importable callable returning a labeller, an object with
``label(pair: dict) -> list[Label]`` (or one ``Label``; the ``saferlhf.annotate.base.Labeller`` protocol). The
factory is called with those of the keyword arguments ``seed`` and ``overlap`` it accepts (none, one or both).

A labeller may also have (all optional): ``concurrency`` (an int: that many pairs are labelled at once, in
threads; labels are still written in queue order), ``stats(queue, labels_by_pair) -> dict`` (merged into
``stats.json``) and ``finish()`` (called after ``stats.json`` is written; may raise a ``UserError``, e.g. a
judge's failure rate over its limit). ``stats.json`` also holds ``seconds``: the labelling time of this run.
"""

from __future__ import annotations

import dataclasses

import importlib
import inspect
import itertools
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from saferlhf.annotate.labels import Label, label_from_dict, label_to_dict
from saferlhf.config import option
from saferlhf.endpoint import EndpointConfig
from saferlhf.errors import UserError

COMMAND = "annotate run"
PANEL = "saferlhf.world.annotators:panel_labeller"  # what --annotator panel names
# --annotator world:NAME -> the factory of that world annotator
WORLD_ANNOTATORS: dict[str, str] = {"panel": PANEL, "ai": "saferlhf.world.annotators:ai_labeller"}
OUTPUTS = ("pairs.jsonl", "labels.jsonl", "records.jsonl", "stats.json", "run.json", "llm_cache.jsonl")


@dataclass
class WorldAIConfig:
    """The flaws of the world's AI judge (``world:ai``; ``saferlhf.world.annotators.AIAnnotator``, docs/world.md)."""

    miss_disguised: float = option(0.5, "probability of taking a disguised request's framing at face value", ge=0,
                                   le=1)
    verbosity_bias: float = option(0.2, "probability of calling the longer response more helpful", ge=0, le=1)
    position_bias: float = option(0.5, "probability of answering A (response_0) when unsure", ge=0, le=1)
    unsure_margin: float = option(0.1, "helpfulness gap below which the judge is unsure", ge=0, le=1)
    noise: float = option(0.02, "probability of flipping each answer", ge=0, le=1)


@dataclass
class AnnotateRunConfig:
    input: str = option("", "pair file: {prompt, response_0, response_1} records (`saferlhf generate --pairs` "
                            "output, PKU-SafeRLHF, JSONL / CSV / parquet)")
    out: str = option("", "output folder: pairs.jsonl (queue), labels.jsonl, records.jsonl, stats.json")
    annotator: str = option("panel", "panel (the simulated crowdworkers), world:NAME (a world annotator), llm (an LLM "
                                     "judge at --judge.*) or module:factory returning a labeller with label(pair) "
                                     "-> list[Label] (called with seed / overlap if it takes them)")
    seed: int = option(0, "seed of the labeller (the panel: world and panel seed)")
    overlap: int = option(3, "raters per pair (the panel; a module factory gets it as overlap=)", ge=1)
    ties: Literal["drop", "keep"] = option("drop", "a helpfulness / harmlessness tie left after breaking ties "
                                                   "toward unsafe: drop the record or keep it as id 0 with "
                                                   "better_response_tie / safer_response_tie")
    aggregation: Literal["majority", "dawid_skene", "soft"] = option(
        "majority", "how labels become records: majority (ties toward unsafe), dawid_skene (per-annotator "
                    "confusion matrices by EM) or soft (the majority's records plus the vote shares "
                    "better_response_prob, safer_response_prob, response_{0,1}_unsafe_prob)")
    exclude: list[str] = option(factory=list, help="annotators whose labels are left out of the records")
    exclude_below: float | None = option(None, "also leave out annotators (with >= 20 labelled pairs) whose "
                                               "Dawid-Skene accuracy is below this", ge=0, le=1)
    source: str = option("", "response and prompt source written when an input record has none (default: the "
                             "input file's name)")
    ai: WorldAIConfig = option(WorldAIConfig(), "--annotator world:ai: the simulated AI judge's flaws")
    judge: EndpointConfig = option(EndpointConfig(parse_retries=2), "--annotator llm: the judge's OpenAI-compatible "
                                                                    "endpoint (--judge.base_url, --judge.model, "
                                                                    "--judge.concurrency, ...; saferlhf.endpoint)")


def run(cfg: AnnotateRunConfig) -> int:
    from saferlhf.annotate.aggregate import aggregate_labels
    from saferlhf.files import atomic_write_json, atomic_write_jsonl, check_writable, same_path

    for name in ("input", "out"):
        if not getattr(cfg, name):
            raise UserError(f"{COMMAND}: --{name} is required")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{COMMAND}: out: {out} is a file; expected a folder")
    for name in OUTPUTS:
        if same_path(out / name, cfg.input):
            raise UserError(f"{COMMAND}: out: {out / name} is the input file; writing it would replace the input",
                            hint="choose another --out")
    labeller = make_labeller(cfg.annotator, seed=cfg.seed, overlap=cfg.overlap, judge=cfg.judge, out=out,
                             flaws=dataclasses.asdict(cfg.ai) if cfg.annotator == "world:ai" else None)
    queue = read_queue(cfg.input, cfg.source or Path(cfg.input).name.split(".")[0])
    settings = {"annotator": cfg.annotator, "seed": cfg.seed, "overlap": cfg.overlap}
    if cfg.annotator == "world:ai":  # another judge's labels in the same folder would be another annotator's
        settings["ai"] = dataclasses.asdict(cfg.ai)
    if cfg.annotator == "llm":  # labels of two judge models in one folder would be two annotators
        settings["judge.model"] = cfg.judge.model
    check_writable(out, COMMAND)
    fd = _open_locked(out / "labels.jsonl")
    started = time.monotonic()
    try:
        _check_or_start(out, queue, settings)
        labels = _labels_so_far(out / "labels.jsonl", fd, {p["pair_id"] for p in queue})
        todo = [p for p in queue if p["pair_id"] not in labels]
        if len(todo) < len(queue):
            print(f"{COMMAND}: resuming: {len(queue) - len(todo)} of {len(queue)} pairs already labelled, "
                  f"{len(todo)} to label")
        labels |= label_queue(labeller, todo, fd, cfg.annotator)
    finally:
        os.close(fd)
    seconds = round(time.monotonic() - started, 3)
    records, stats = aggregate_labels(queue, labels, ties=cfg.ties, method=cfg.aggregation, exclude=cfg.exclude,
                                      exclude_below=cfg.exclude_below, reliability=True)
    atomic_write_jsonl(out / "records.jsonl", records)
    extra = labeller.stats(queue, labels) if callable(getattr(labeller, "stats", None)) else {}
    stats = {"annotator": cfg.annotator, "seed": cfg.seed, "overlap": cfg.overlap, **stats, **extra,
             "seconds": seconds}
    atomic_write_json(out / "stats.json", stats)
    _print_summary(stats, len(todo), out)
    if callable(getattr(labeller, "finish", None)):
        labeller.finish()
    return 0


# ---- the labeller --------------------------------------------------------------------------------
def make_labeller(spec: str, *, seed: int, overlap: int, judge: EndpointConfig | None = None,
                  out: Path | None = None, flaws: dict[str, float] | None = None) -> Any:
    """The labeller ``spec`` names (``panel``, ``world:NAME``, ``llm`` or ``module:factory``), built with those of
    ``seed`` and ``overlap`` its factory accepts (``llm``: from ``judge``, caching its answers in ``out``;
    ``world:ai``: with the ``flaws`` given); a ``UserError`` (one line) for a spec that names no labeller."""
    if spec == "llm":
        from saferlhf.annotate.llm import CACHE_FILE, llm_labeller

        return llm_labeller(judge or EndpointConfig(), None if out is None else out / CACHE_FILE, who=COMMAND)
    target = PANEL if spec == "panel" else spec
    if spec.startswith("world:"):
        if (world_name := spec.removeprefix("world:")) not in WORLD_ANNOTATORS:
            raise UserError(f"{COMMAND}: annotator: {spec!r} is not a world annotator",
                            hint="one of " + ", ".join(f"world:{n}" for n in WORLD_ANNOTATORS))
        target = WORLD_ANNOTATORS[world_name]
    module, sep, name = target.partition(":")
    if not (sep and module and name):
        raise UserError(f"{COMMAND}: annotator: {spec!r} is not 'panel' or module:factory (nor llm or world:NAME)",
                        hint="e.g. --annotator mypkg.judges:make_labeller")
    try:
        factory = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise UserError(f"{COMMAND}: annotator: cannot import {module} ({e})") from None
    except AttributeError:
        raise UserError(f"{COMMAND}: annotator: {module} has no {name}") from None
    if not callable(factory):
        raise UserError(f"{COMMAND}: annotator: {spec} is a {type(factory).__name__}, not a callable factory")
    kwargs = _accepted(factory, {"seed": seed, "overlap": overlap}) | (flaws or {})
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:
        raise UserError(f"{COMMAND}: annotator: {spec} cannot be called with {sorted(kwargs) or 'no arguments'} ({e})",
                        hint="a factory takes no arguments, or seed and / or overlap") from None
    except ValueError:  # no signature to check
        pass
    labeller = factory(**kwargs)
    if not callable(getattr(labeller, "label", None)):
        raise UserError(f"{COMMAND}: annotator: {spec} returned a {type(labeller).__name__}, which has no "
                        "label(pair) method", hint="see the labeller protocol in saferlhf.annotate.base")
    return labeller


def _accepted(factory: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The items of ``kwargs`` that ``factory`` takes as keyword arguments."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): call it without arguments
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}


def labels_of(labeller: Any, pair: dict[str, Any], spec: str) -> list[Label]:
    """``labeller.label(pair)`` as a list of checked ``Label``s (categories canonical); a ``UserError``
    naming the pair for anything else."""
    where = f"{COMMAND}: annotator: {spec}: pair {pair['pair_id']}"
    got = labeller.label(dict(pair))  # a copy: the labeller cannot change the queue
    got = [got] if isinstance(got, Label) else got
    if not isinstance(got, (list, tuple)) or not all(isinstance(lb, Label) for lb in got):
        raise UserError(f"{where}: label() returned a {type(got).__name__}, not a Label or a list of Labels")
    if len({lb.annotator for lb in got}) < len(got):
        raise UserError(f"{where}: two labels by the same annotator")
    try:
        return [label_from_dict(label_to_dict(lb)) for lb in got]
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: a bad label: {e}") from None


def label_queue(labeller: Any, todo: list[dict[str, Any]], fd: int, spec: str) -> dict[str, list[Label]]:
    """Label each pair of ``todo``, appending its labels to the open ``labels.jsonl`` (one write and one
    fsync per pair); returns the labels by pair id (a pair without labels is left out)."""
    from saferlhf.files import fault_point
    from saferlhf.tracking import progress

    done: dict[str, list[Label]] = {}
    workers = getattr(labeller, "concurrency", 1)
    workers = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers > 1 else 1
    for pair, labels in progress(_labelled(labeller, todo, spec, workers), total=len(todo), desc=COMMAND):
        if labels:
            _write_all(fd, "".join(json.dumps({"pair_id": pair["pair_id"], **label_to_dict(lb)}) + "\n"
                                   for lb in labels).encode())
            os.fsync(fd)
            done[pair["pair_id"]] = labels
        fault_point("label")
    return done


def _labelled(labeller: Any, todo: list[dict[str, Any]], spec: str, workers: int):
    """``(pair, labels_of(labeller, pair))`` for each pair of ``todo``, in order; with ``workers`` > 1 up to that many
    pairs are labelled at once (threads, at most ``2 * workers`` pairs ahead of the one written). An error stops
    the rest: pairs not started are cancelled, those running are waited for."""
    if workers <= 1:
        for pair in todo:
            yield pair, labels_of(labeller, pair, spec)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pending = iter(todo)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="annotate")
    try:
        window = deque((p, pool.submit(labels_of, labeller, p, spec)) for p in itertools.islice(pending, 2 * workers))
        while window:
            pair, future = window.popleft()
            labels = future.result()
            if (nxt := next(pending, None)) is not None:
                window.append((nxt, pool.submit(labels_of, labeller, nxt, spec)))
            yield pair, labels
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ---- the queue and the folder -------------------------------------------------------------------
def read_queue(path: str, source: str) -> list[dict[str, Any]]:
    """The pairs of ``path`` as queue rows (``pairs.jsonl``), without identical responses (said so)."""
    from saferlhf.annotate.pairs import input_pairs, pair_id
    from saferlhf.data.schema import ended_fields, prompt_json

    pairs = input_pairs(path, source, command=COMMAND)
    kept = [p for p in pairs if p["response_0"].strip() != p["response_1"].strip()]
    if len(kept) < len(pairs):
        print(f"{COMMAND}: skipped {len(pairs) - len(kept)} pairs with identical responses in {path}")
    return [{"pair_id": pair_id(p["prompt"], p["response_0"], p["response_1"]), "prompt": prompt_json(p["prompt"]),
             "response_0": p["response_0"], "response_1": p["response_1"],
             "response_0_source": p["response_0_source"], "response_1_source": p["response_1_source"],
             "prompt_source": source, **ended_fields({"ended_0": p["ended_0"], "ended_1": p["ended_1"]})}
            for p in kept]


def _open_locked(path: Path) -> int:
    """``labels.jsonl`` opened for appending, locked against a second run in the same folder."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UserError(f"{COMMAND}: {path.parent} is in use by another `saferlhf annotate run`") from None
    return fd


def _check_or_start(out: Path, queue: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """A new folder gets ``run.json`` and ``pairs.jsonl``; a resumed one must hold the same settings and queue."""
    from saferlhf.files import atomic_write_json, atomic_write_jsonl
    from saferlhf.tracking import read_jsonl

    run_file, pairs_file = out / "run.json", out / "pairs.jsonl"
    if run_file.exists():
        saved = json.loads(run_file.read_text())
        changed = [f"--{k} {saved.get(k)} (now {v})" for k, v in settings.items() if saved.get(k) != v]
        if changed:
            raise UserError(f"{COMMAND}: {out} was labelled with " + ", ".join(changed),
                            hint="rerun with the same settings, or choose another --out")
    if pairs_file.exists():
        old = [p["pair_id"] for p in read_jsonl(pairs_file)]
        if old != [p["pair_id"] for p in queue]:
            raise UserError(f"{COMMAND}: {pairs_file} holds another queue ({len(old)} pairs; the input gives "
                            f"{len(queue)}, {len(set(old) ^ {p['pair_id'] for p in queue})} different)",
                            hint="resume with the same --input, or choose another --out")
    else:
        atomic_write_jsonl(pairs_file, queue)
    if not run_file.exists():
        atomic_write_json(run_file, settings)


def _labels_so_far(path: Path, fd: int, queued: set[str]) -> dict[str, list[Label]]:
    """The labels in ``labels.jsonl`` by pair id, after cutting off a torn last line and the other labels of
    its pair (the pair is labelled again)."""
    from saferlhf.annotate.aggregate import load_labels

    _cut_torn_tail(path, fd)
    labels: dict[str, list[Label]] = {}
    for pid, label in load_labels(path):
        labels.setdefault(pid, []).append(label)
    if stray := set(labels) - queued:
        raise UserError(f"{COMMAND}: {path} has labels of {len(stray)} pairs that are not in the queue "
                        f"(e.g. {min(stray)})", hint="choose another --out")
    return labels


def _cut_torn_tail(path: Path, fd: int) -> None:
    """A file that does not end in a newline was cut by a killed write: drop that last line and the complete
    lines before it of the same pair (named in the torn line, else the pair of the last complete line)."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    lines = data.split(b"\n")
    torn = lines.pop()
    named = re.match(rb'\{"pair_id": "([0-9a-f]{16})"', torn)
    pid = named.group(1).decode() if named else (_pair_of(lines[-1]) if lines else None)
    keep = len(lines)
    while keep and _pair_of(lines[keep - 1]) == pid:
        keep -= 1
    os.ftruncate(fd, sum(len(line) + 1 for line in lines[:keep]))
    print(f"{COMMAND}: warning: {path} ended in a torn line (a killed run): cut it and {len(lines) - keep} other "
          f"labels of pair {pid}, which is labelled again")


def _pair_of(line: bytes) -> str | None:
    try:
        return json.loads(line).get("pair_id")
    except (ValueError, AttributeError):
        return None


def _print_summary(stats: dict[str, Any], labelled_now: int, out: Path) -> None:
    c = stats["counts"]
    for question, a in stats["agreement"].items():
        print(f"{COMMAND}: agreement on {question} ({a['items']} items): pairwise {_num(a['pairwise_agreement'])}, "
              f"Fleiss' kappa {_num(a['fleiss_kappa'])}, Krippendorff's alpha {_num(a['krippendorff_alpha'])}")
    for name, r in stats.get("annotators", {}).items():
        print(f"{COMMAND}: annotator {name}: {r['labels']} pairs, Dawid-Skene accuracy {_num(r['ds_accuracy'])}, "
              f"agreement with the others' majority {_num(r['loo_agreement'])}"
              + (f"; EXCLUDED ({stats['exclusion']['excluded'][name]})" if r.get("excluded") else ""))
    if missing := stats.get("exclusion", {}).get("not_found"):
        print(f"{COMMAND}: warning: --exclude names no annotator of these labels: {', '.join(missing)}")
    print(f"{COMMAND}: {stats['aggregation']}: {c['records']} records from {c['labelled']} labelled pairs of "
          f"{c['pairs']} ({labelled_now} "
          f"labelled now, {c['labels']} labels, {c['ties_dropped']} dropped for a tie, {c['safer_fixed']} safer ids "
          f"fixed) -> {out / 'records.jsonl'}; labels -> {out / 'labels.jsonl'}; statistics -> {out / 'stats.json'}")


def _num(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.3f}"
