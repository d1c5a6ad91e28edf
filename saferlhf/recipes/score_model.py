"""Reward model (kind=reward) and cost model (kind=cost) — Safe RLHF §1 (algorithm-reference §1).

Reward: L_R = -mean log σ(r_w - r_l) + μ·mean(r_w² + r_l²)/2 on helpfulness pairs (better_response_id).
Cost:   L_C = -mean[log σ(c_u - c_s) + log σ(ξ_s c_s) + log σ(ξ_u c_u)] + μ·mean(c²) on harmlessness
        pairs (safer_response_id), ξ = +1 for a response labelled unsafe, -1 for safe.
        **Convention: cost > 0 means unsafe, cost <= 0 means safe.** Files without per-response safety
        labels (HH-RLHF) train the ranking term only.
Soft records (`annotate export --aggregation soft`: vote shares p, label confidences w) train with the Bradley-Terry
target p and w-weighted sign terms (`losses.soft_reward_loss` / `soft_cost_loss`); hard batches are unchanged.
μ = 0.001. The score is the head output at the last non-padding token (eos). Reference defaults: 2
epochs, lr 2e-5 cosine, warm-up 3 %, weight decay 0.1, max length 512 — ours too.

Deviations:
1. Contradictory pairs (safer response labelled unsafe while the other is safe) are rejected at load
   time, not discovered mid-training.
2. The head is bias-free (HF *ForSequenceClassification layout) so that
   `AutoModelForSequenceClassification.from_pretrained(out/model)` gives the same scores.
3. The held-out split (`eval_ratio`, when no `eval_file` is given) is grouped by prompt
   (`saferlhf.data.split_pairs`): no prompt, hence no duplicate of a pair, is on both sides.
4. Exact resume: `--save_every N` writes a checkpoint (model, optimiser, schedule, RNG states, step) every
   N optimiser steps and one at the end; `--resume true` continues from it and gives the weights and
   metrics rows of an uninterrupted run (the batch order is a pure function of (seed, epoch)).
5. Weight decay exempts biases and normalisation weights (`saferlhf.training.decay_groups`).
6. A non-finite loss, score, gradient norm or parameter stops the run (`NumericalError`, exit 3) before
   anything is saved; the last checkpoint stays.

Training batches are padding-free by default (`packing`): the 2B sequences of a batch are laid out
in one row with no padding, position ids restart at 0 for every sequence, attention is restricted to
each sequence (a registered transformers attention function, `packed_attention`, one causal SDPA call
per sequence), the prompt shared by chosen and rejected is computed once (`share_prompt`), and each
score is read at the sequence's last token. Same per-pair loss as padded batches (tested for Llama,
Qwen2, GPT-2); models where it does not hold fall back to padded, length-grouped batches.

Outputs in `out/`: `model/` (HF sequence-classification folder + tokenizer; config.score_type),
`metrics.jsonl`, `eval.json` (accuracy, sign accuracy, score statistics), `score_distribution.png`,
`checkpoint/`, `config.yaml` and `status.json` (`complete` only once every other output is written; a
folder that holds a run is refused unless `--resume true` or `--overwrite true`).

Launch: `saferlhf score-model --kind cost --model_path SFT --train_file F --out DIR`;
`accelerate launch -m saferlhf score-model ...` for several processes.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import torch

from saferlhf.batching import batch_stream, epoch_rng, length_grouped_batches, rank_share
from saferlhf.packing import (EncodedPair, EncodedSingle, PairScorer, encode_pairs, encode_singles, pair_batch,
                              packed_attention_enabled, packed_pair_batch, packing_problem)
from saferlhf.config import option
from saferlhf.data.labelled import LabelColumns
from saferlhf.errors import UserError
from saferlhf.training import (LoraSettings, OptimConfig, RuntimeConfig, assert_finite, build_optimizer, make_accelerator,
                               optimizer_step)


@dataclass
class DataSource(LabelColumns):
    """One source of a training mix (``sources`` in a YAML preset): a file of ranked pairs or of per-response
    safety labels, its weight in the loss and its held-out shares (`split_in_range`: by a hash of the prompt,
    the same in every file and every run)."""

    path: str = option("", "data file: preference pairs (PKU-SafeRLHF, HH-RLHF, TRL) or per-response labels (any "
                           "CSV / JSON / JSONL with prompt / response / label columns; GuardReasoner layout)")
    name: str = option("", "name in metrics and eval.json (default: the file name)")
    type: Literal["auto", "labels", "pairs"] = option("auto", "labels: one (prompt, response, unsafe?) per record; "
                                                             "pairs: ranked pairs; auto: labels when the file's "
                                                             "layout or the given columns say so")
    weight: float = option(1.0, "weight of each of this source's examples in the loss", gt=0)
    eval_ratio: float = option(0.1, "share of prompts for validation (eval.json, the decision threshold)", ge=0, lt=1)
    test_ratio: float = option(0.0, "share of prompts never used (held out for benchmarks; `split_in_range`)",
                               ge=0, lt=1)
    max_records: int = option(0, "use at most this many training records (a seeded sample; 0 = all)", ge=0)
    prompt_range: list[float] = option([0.0, 1.0], "the part of the file this model may use: records whose "
                                                   "prompt_bucket is in [lo, hi); two models given disjoint ranges "
                                                   "never share a prompt (test_ratio / eval_ratio split this part)",
                                       ge=0, le=1)


@dataclass
class ScoreModelConfig(LabelColumns):
    kind: Literal["reward", "cost"] = option("reward", "reward (helpfulness) or cost (harmfulness, > 0 = unsafe)")
    model_path: str = option("", "initial backbone: an HF causal LM (e.g. the SFT model) or a score model")
    train_file: str = option("", "preference file: PKU-SafeRLHF json/jsonl/parquet, HH-RLHF jsonl(.gz), TRL jsonl; or "
                                 "(cost) a per-response safety-label file (--prompt_column / --response_column / "
                                 "--label_column; optional when `sources` is given)")
    sources: list[DataSource] = option(factory=list, help="the training mix (YAML preset): files of ranked pairs and of "
                                       "per-response labels, each with its weight and held-out shares")
    threshold_method: Literal["best_f1", "equal_error", "zero"] = option(
        "best_f1", "cost: the decision threshold stored with the model (unsafe = cost > it), calibrated on the "
                   "validation responses with safety labels: best F1, the equal-error point, or 0 (the sign)")
    eval_file: str | None = option(None, "held-out preference file (default: eval_ratio of train_file)")
    eval_ratio: float = option(0.1, "share of train_file held out for evaluation when eval_file is unset", ge=0, lt=1)
    out: str = option("runs/score_model", "output folder")
    max_length: int = option(512, "max tokens of prompt + response", ge=2)
    batch_size: int = option(16, "pairs per optimiser step per process", ge=1)
    epochs: float = option(2.0, "passes over the training pairs", gt=0)
    max_steps: int = option(0, "stop after this many optimiser steps (0 = use epochs)", ge=0)
    l2_coef: float = option(0.001, "μ: coefficient of the score L2 regulariser", ge=0)
    on_error: Literal["raise", "drop"] = option("raise", "bad records: raise (file:line errors) or drop with a report")
    max_pairs: int = option(0, "use at most this many training pairs (0 = all)", ge=0)
    log_every: int = option(10, "log train metrics every N steps", ge=1)
    packing: bool = option(True, "padding-free training batches: all sequences of a batch in one row, attention "
                              "restricted to each sequence, same loss; padded batches when the model does not "
                              "support it (checked at start)")
    share_prompt: bool = option(True, "with packing: compute the prompt (the common prefix of chosen and rejected) "
                                   "once per pair")
    group_by_length: Literal["auto", "on", "off"] = option(
        "auto", "batches of similar lengths (sorted within mega-batches of 50 batches, batch order shuffled) to "
                "cut padding; auto = on for padded batches, off for packed ones (which have no padding)")
    save_every: int = option(0, "write a resumable checkpoint every N optimiser steps (0 = only at the end)", ge=0)
    resume: bool = option(False, "continue from out/checkpoint")
    overwrite: bool = option(False, "replace a previous run in out")
    allow_config_change: bool = option(False, "resume even though the config differs from the saved run")
    optim: OptimConfig = option(OptimConfig(lr=2e-5, weight_decay=0.1), "optimiser")
    lora: LoraSettings = option(LoraSettings(), "LoRA adapters + a fully trained head (merged on save)")
    runtime: RuntimeConfig = option(RuntimeConfig(), "runtime")


@dataclass
class Example:
    """One training example of the mix: a ranked pair (`EncodedPair`) or a labelled response (`EncodedSingle`),
    with its source's weight and index."""

    item: EncodedPair | EncodedSingle
    weight: float = 1.0
    source: int = 0

    @property
    def length(self) -> int:
        if isinstance(self.item, EncodedSingle):
            return len(self.item.ids)
        return max(len(self.item.chosen), len(self.item.rejected))


def epoch_batches(train: list[Example], global_bs: int, seed: int, epoch: int, grouped: bool) -> list[list]:
    """The global batches of one epoch, shuffled or length-grouped (`length_grouped_batches`): a pure
    function of (seed, epoch), so that the step alone locates the data position on resume."""
    rng = epoch_rng(seed, epoch)
    if grouped:
        lengths = [e.length for e in train]
        return [[train[i] for i in b] for b in length_grouped_batches(lengths, global_bs, rng)]
    order = list(train)
    rng.shuffle(order)
    return [order[i: i + global_bs] for i in range(0, len(order), global_bs)]


def training_batch(rows: list[Example], packed: bool, share_prompt: bool, pad_id: int) -> dict:
    """The model input of a batch of examples: pairs first (chosen, rejected), then the singles, packed or padded,
    with the safety labels and each example's weight (``pair_weight`` [B], ``single_weight`` [S])."""
    pairs = [e for e in rows if isinstance(e.item, EncodedPair)]
    singles = [e for e in rows if isinstance(e.item, EncodedSingle)]
    items, single_items = [e.item for e in pairs], [e.item for e in singles]
    b = (packed_pair_batch(items, share_prompt, singles=single_items) if packed
         else pair_batch(items, pad_id, singles=single_items))
    return b | soft_targets(items) | {"pair_weight": torch.tensor([e.weight for e in pairs], dtype=torch.float32),
                                      "single_weight": torch.tensor([e.weight for e in singles], dtype=torch.float32)}


def soft_targets(pairs: list[EncodedPair]) -> dict[str, torch.Tensor]:
    """``target`` [B] (P(chosen ≻ rejected)) and ``chosen_conf`` / ``rejected_conf`` [B] (the safety labels'
    confidences) when some pair of the batch has soft targets (a pair without them: 1); {} otherwise, so that
    hard data takes the plain losses unchanged."""
    if all(p.target is None and p.chosen_conf is None and p.rejected_conf is None for p in pairs):
        return {}
    return {name: torch.tensor([1.0 if getattr(p, name) is None else getattr(p, name) for p in pairs],
                               dtype=torch.float32) for name in ("target", "chosen_conf", "rejected_conf")}


def pair_loss(kind: str, end_scores: torch.Tensor, batch: dict[str, torch.Tensor], l2_coef: float):
    """The reward or cost objective of a batch: [2B + S] end scores (chosen, rejected, singles). Pairs alone with
    unit weights: `reward_loss` / `cost_loss` (`soft_reward_loss` / `soft_cost_loss` when the batch has soft
    targets, `soft_targets`); a mix or weighted sources: `mixed_score_loss` (the same maths when S = 0 and every
    weight is 1)."""
    from saferlhf.losses import cost_loss, mixed_score_loss, reward_loss, soft_cost_loss, soft_reward_loss

    n_pairs = int(batch["has_labels"].numel())
    pair_w = batch.get("pair_weight")
    single_w = batch.get("single_weight")
    plain = (single_w is None or single_w.numel() == 0) and (pair_w is None or bool((pair_w == 1).all()))
    s_w, s_l = end_scores[: 2 * n_pairs].chunk(2) if n_pairs else (end_scores[:0], end_scores[:0])
    soft = "target" in batch
    if plain and n_pairs and soft:
        if kind == "reward":
            return soft_reward_loss(s_w, s_l, batch["target"], l2_coef=l2_coef)
        return soft_cost_loss(s_w, s_l, batch["chosen_is_safe"], batch["rejected_is_safe"], batch["target"],
                              batch["chosen_conf"], batch["rejected_conf"], l2_coef=l2_coef,
                              has_labels=batch["has_labels"])
    if plain and n_pairs:
        if kind == "reward":
            return reward_loss(s_w, s_l, l2_coef=l2_coef)
        return cost_loss(s_w, s_l, batch["chosen_is_safe"], batch["rejected_is_safe"], l2_coef=l2_coef,
                         has_labels=batch["has_labels"])
    labels = ({"chosen_is_safe": batch["chosen_is_safe"], "rejected_is_safe": batch["rejected_is_safe"],
               "has_labels": batch["has_labels"]} if kind == "cost" else {})
    if soft:
        labels |= {"target": batch["target"]} | ({"chosen_conf": batch["chosen_conf"],
                                                    "rejected_conf": batch["rejected_conf"]} if kind == "cost" else {})
    return mixed_score_loss(kind, s_w, s_l, pair_w, end_scores[2 * n_pairs:], batch["single_unsafe"], single_w,
                            l2_coef=l2_coef, **labels)


@torch.no_grad()
def evaluate(model, pairs: list[EncodedPair], kind: str, pad_id: int, batch_size: int, device) -> dict:
    """Accuracy (+ sign accuracy for cost) and every score, for the report and the histogram."""
    model.eval()
    chosen, rejected = [], []
    for i in range(0, len(pairs), batch_size):
        b = pair_batch(pairs[i: i + batch_size], pad_id)
        s = model(b["input_ids"].to(device), b["attention_mask"].to(device)).end_scores.float().cpu()
        w, l = s.chunk(2)
        chosen += w.tolist()
        rejected += l.tolist()
    model.train()
    return pair_metrics(pairs, chosen, rejected, kind)


def pair_metrics(pairs: list[EncodedPair], chosen: list[float], rejected: list[float], kind: str) -> dict:
    """`evaluate`'s result from the pairs' scores (chosen, rejected: one per pair, in order)."""
    n = len(chosen)
    res = {"eval/pairs": n,
           # reward: P(r_w > r_l); cost: chosen is the SAFER response, so P(c_u > c_s)
           "eval/accuracy": sum((w > l) if kind == "reward" else (l > w) for w, l in zip(chosen, rejected)) / max(n, 1),
           "eval/score_chosen_mean": sum(chosen) / max(n, 1),
           "eval/score_rejected_mean": sum(rejected) / max(n, 1)}
    labelled = [(s, safe) for p, w, l in zip(pairs, chosen, rejected) if p.chosen_is_safe is not None
                for s, safe in ((w, p.chosen_is_safe), (l, p.rejected_is_safe))]
    if kind == "cost" and labelled:
        res["eval/sign_accuracy"] = sum((s > 0) == (not safe) for s, safe in labelled) / len(labelled)
        # pairs whose responses have different safety labels: between two equally (un)safe responses the
        # "safer" label can be a coin flip, so this is the ranking accuracy that a cost model can reach
        decisive = [(w, l) for p, w, l in zip(pairs, chosen, rejected)
                    if p.chosen_is_safe is not None and p.chosen_is_safe != p.rejected_is_safe]
        if decisive:
            res["eval/accuracy_decisive"] = sum(l > w for w, l in decisive) / len(decisive)
            res["eval/decisive_pairs"] = len(decisive)
    return {"metrics": res, "chosen": chosen, "rejected": rejected, "labelled": labelled}


def plot_distribution(kind: str, ev: dict, path: Path, threshold: float = 0.0) -> None:
    """Histogram of scores: safe vs unsafe responses (cost, when labelled) or chosen vs rejected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if ev["labelled"]:
        safe = [s for s, ok in ev["labelled"] if ok]
        unsafe = [s for s, ok in ev["labelled"] if not ok]
        groups = [("safe responses", safe, "tab:green"), ("unsafe responses", unsafe, "tab:red")]
    else:
        groups = [("chosen", ev["chosen"], "tab:blue"), ("rejected", ev["rejected"], "tab:orange")]
    for label, vals, color in groups:
        if vals:
            ax.hist(vals, bins=30, alpha=0.6, label=f"{label} (n={len(vals)})", color=color)
    if kind == "cost":
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1,
                   label=f"decision threshold {threshold:.3g} (safe | unsafe)")
    ax.set_xlabel(f"{kind} score")
    ax.set_ylabel("responses")
    ax.set_title(f"{kind} model: held-out score distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_pairs(cfg: ScoreModelConfig) -> tuple[list, list]:
    """(train, held-out) preference pairs: ``eval_file``, or a split of ``train_file`` grouped by prompt.
    No training pair (or an ``eval_file`` without pairs) is a ``UserError`` naming the file."""
    from saferlhf.data.loaders import load_preference_pairs
    from saferlhf.data.split import split_for_training

    def load(path: str, what: str) -> list:
        pairs = load_preference_pairs(path, kind=cfg.kind, on_error=cfg.on_error)
        if not pairs:
            why = "every record was dropped (--on_error drop)" if cfg.on_error == "drop" else "it holds no pairs"
            raise UserError(f"score-model: {what}: {path}: no {cfg.kind} preference pairs: {why}",
                            hint="check the file with `saferlhf data check`")
        return pairs

    pairs = load(cfg.train_file, "train_file")
    if cfg.eval_file:
        train, held_out = pairs, load(cfg.eval_file, "eval_file")
    else:
        train, held_out = split_for_training(pairs, cfg.eval_ratio, cfg.runtime.seed, "score-model", cfg.train_file)
    return (train[: cfg.max_pairs] if cfg.max_pairs else train), held_out


@dataclass
class SourceData:
    """One source of the mix after loading and splitting: training / validation pairs and labelled responses."""

    name: str
    path: str
    weight: float
    train_pairs: list
    eval_pairs: list
    train_singles: list
    eval_singles: list
    test_records: int = 0


def label_columns(cfg: LabelColumns) -> dict:
    """The `LabelColumns` fields of a config (the top-level ones, applied to train_file / eval_file)."""
    return {f.name: getattr(cfg, f.name) for f in fields(LabelColumns)}


def _source_type(src: DataSource, kind: str) -> str:
    from saferlhf.data.labelled import is_labelled_file

    if src.type != "auto":
        return src.type
    given = src.label_column or src.label or src.response_column
    return "labels" if given or (kind == "cost" and is_labelled_file(src.path)) else "pairs"


def load_source(src: DataSource, kind: str, on_error: str, seed: int, index: int) -> SourceData:
    """Load one source and split it by prompt (`split_in_range`: test, validation, train); the held-out test
    part is dropped here (never trained on, never calibrated on)."""
    import random

    from saferlhf.data.labelled import load_labelled_responses
    from saferlhf.data.loaders import load_preference_pairs
    from saferlhf.data.split import split_in_range

    name = src.name or Path(src.path).name
    what = f"score-model: sources[{index}] ({name})"
    if not src.path:
        raise UserError(f"{what}: give its path")
    typ = _source_type(src, kind)
    if typ == "labels" and kind != "cost":
        raise UserError(f"{what}: per-response safety labels train cost models only (--kind cost)")
    if typ == "labels":
        records = load_labelled_responses(src.path, src, on_error=on_error)
    else:
        records = load_preference_pairs(src.path, kind=kind, on_error=on_error)
    if not records:
        raise UserError(f"{what}: {src.path}: no records", hint="check the file with `saferlhf data check`")
    if len(src.prompt_range) != 2 or not src.prompt_range[0] < src.prompt_range[1]:
        raise UserError(f"{what}: prompt_range must be [lo, hi] with 0 <= lo < hi <= 1, got {src.prompt_range}")
    train, held_out, test, _ = split_in_range(list(records), src.prompt_range, src.test_ratio, src.eval_ratio)
    if not train:
        raise UserError(f"{what}: test_ratio {src.test_ratio} + eval_ratio {src.eval_ratio} leave no record to "
                        "train on", hint="lower them")
    if src.max_records and len(train) > src.max_records:
        train = random.Random(f"{seed}:{name}").sample(train, src.max_records)
    singles = typ == "labels"
    return SourceData(name, src.path, src.weight, [] if singles else train, [] if singles else held_out,
                      train if singles else [], held_out if singles else [], len(test))


def load_mix(cfg: ScoreModelConfig) -> list[SourceData]:
    """Every source of the run: ``sources`` (the YAML mix), plus ``train_file`` as one more source when it holds
    per-response labels (a pair ``train_file`` without sources keeps the seeded `split_for_training` split)."""
    sources = list(cfg.sources)
    if cfg.train_file:
        own = DataSource(path=cfg.train_file, eval_ratio=cfg.eval_ratio if not cfg.eval_file else 0.0,
                         **label_columns(cfg))
        sources.insert(0, own)
    names = [s.name or Path(s.path).name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"score-model: sources: the name {dup[0]!r} is used twice", hint="give each source a `name`")
    loaded = [load_source(src, cfg.kind, cfg.on_error, cfg.runtime.seed, i) for i, src in enumerate(sources)]
    if cfg.eval_file and cfg.train_file:  # the held-out part of train_file's source comes from eval_file
        extra = DataSource(path=cfg.eval_file, eval_ratio=0.0, **label_columns(cfg))
        ev = load_source(extra, cfg.kind, cfg.on_error, cfg.runtime.seed, 0)
        loaded[0].eval_pairs, loaded[0].eval_singles = ev.train_pairs, ev.train_singles
    return loaded


def uses_mix(cfg: ScoreModelConfig) -> bool:
    """True when the run trains on `load_mix` sources (a `sources` list or a per-response label train_file)."""
    return bool(cfg.sources) or (bool(cfg.train_file) and _source_type(
        DataSource(path=cfg.train_file, **label_columns(cfg)),
        cfg.kind) == "labels")


@torch.no_grad()
def single_scores(model, singles: list[EncodedSingle], pad_id: int, batch_size: int, device) -> list[float]:
    """End scores of encoded labelled responses (padded batches, eval mode)."""
    model.eval()
    out: list[float] = []
    for i in range(0, len(singles), batch_size):
        b = pair_batch([], pad_id, singles=singles[i: i + batch_size])
        out += model(b["input_ids"].to(device), b["attention_mask"].to(device)).end_scores.float().cpu().tolist()
    model.train()
    return out


def calibrate(scores: list[float], unsafe: list[bool], method: str) -> dict:
    """The decision threshold stored with a cost model (`THRESHOLD_KEY`): calibrated on validation responses
    with safety labels; 0 (the sign convention) when asked or when either class is missing."""
    from saferlhf.eval.classification import best_f1_threshold, equal_error_threshold

    both = any(unsafe) and not all(unsafe)
    if method == "zero" or not both:
        why = "asked" if method == "zero" else "the validation split lacks safe or unsafe responses"
        return {"value": 0.0, "method": "zero", "why": why, "validation_responses": len(scores)}
    fn = best_f1_threshold if method == "best_f1" else equal_error_threshold
    value, stat = fn(scores, unsafe)
    return {"value": float(value), "method": method, ("f1" if method == "best_f1" else "equal_error_rate"): stat,
            "validation_responses": len(scores), "validation_unsafe": sum(unsafe)}


def source_scores(model, encoded: list[tuple[list, list]], kind: str, pad_id: int, batch_size: int,
                  device, scored_pairs: dict | None = None) -> list[dict]:
    """Per source, the validation scores: pair accuracy (``pair_accuracy``, ``pairs``) and the labelled responses'
    (score, unsafe) (``scores``, ``unsafe``: of single responses and of labelled pairs' responses).
    ``scored_pairs``: `evaluate`'s result on every source's pairs in order (the pooled held-out evaluation), whose
    scores are then sliced per source instead of scoring the pairs a second time."""
    out, offset = [], 0
    for pairs, singles in encoded:
        got: dict = {"scores": [], "unsafe": [], "singles": len(singles)}
        if pairs:
            if scored_pairs is not None:
                cut = slice(offset, offset + len(pairs))
                ev = pair_metrics(pairs, scored_pairs["chosen"][cut], scored_pairs["rejected"][cut], kind)
            else:
                ev = evaluate(model, pairs, kind, pad_id, batch_size, device)
            offset += len(pairs)
            got |= {"pair_accuracy": ev["metrics"]["eval/accuracy"], "pairs": len(pairs)}
            got["scores"] += [score for score, _ in ev["labelled"]]
            got["unsafe"] += [not safe for _, safe in ev["labelled"]]
        if singles:
            got["scores"] += single_scores(model, singles, pad_id, batch_size, device)
            got["unsafe"] += [x.unsafe for x in singles]
        out.append(got)
    return out


def source_metrics(names: list[str], scored: list[dict], threshold: float) -> dict:
    """``eval/<source>/...``: pair accuracy, and accuracy, precision, recall, F1, FPR, flagged share and AUROC of
    the labelled validation responses at the decision ``threshold``."""
    from saferlhf.eval.classification import binary_metrics

    res: dict = {}
    for name, got in zip(names, scored):
        key = f"eval/{name}"
        if "pairs" in got:
            res |= {f"{key}/pair_accuracy": got["pair_accuracy"], f"{key}/pairs": got["pairs"]}
        if got["scores"]:
            m = binary_metrics(got["scores"], got["unsafe"], threshold)
            res |= {f"{key}/responses": m.pop("n")} | {f"{key}/{k}": v for k, v in m.items()}
    return res


def run(cfg: ScoreModelConfig) -> int:
    from saferlhf.models.hf import check_model_path
    from saferlhf.models.lora import apply_lora_settings
    from saferlhf.models.score import ScoreModel
    from saferlhf.models.tokenizers import load_tokenizer
    from saferlhf.training import restore_loop, start_run_on_every_rank
    from saferlhf.data.split import prompt_hash
    from saferlhf.rl import global_means
    from saferlhf.files import atomic_write_json, fault_point
    from saferlhf.tracking import MetricsLogger, finish_run, progress

    check_model_path(cfg.model_path, "model_path")
    acc = make_accelerator(cfg.runtime, step_scheduler_with_optimizer=False)  # one schedule step per step
    main = acc.is_main_process
    # 1. Data: validated at load time (file:line errors) before any model is built or the run folder touched.
    #    A mix (`sources`, or a per-response label file) is split by prompt hash; a pair file alone as before.
    sources = load_mix(cfg) if uses_mix(cfg) else None
    if sources is None:
        train_pairs, eval_pairs = load_pairs(cfg)
        train_singles: list = []
    else:
        train_pairs = [x for src in sources for x in src.train_pairs]
        eval_pairs = [x for src in sources for x in src.eval_pairs]
        train_singles = [x for src in sources for x in src.train_singles]
    if cfg.kind == "cost" and main and not train_singles and not any(p.chosen_is_safe is not None for p in train_pairs):
        print("score-model: warning: no training pair has safety labels (a ranking-only file such as HH-RLHF): the "
              "cost model learns 'which is safer', not where safe ends, so 'cost > 0 = unsafe' and the PPO-Lag "
              "threshold d = 0 have no meaning for it; calibrate d with `saferlhf cost-threshold` "
              "(docs/real-models.md)", file=sys.stderr)
    tokenizer = load_tokenizer(cfg.model_path, padding_side="right")
    if sources is None:
        train = [Example(x) for x in encode_pairs(train_pairs, tokenizer, cfg.max_length)]
        evals = encode_pairs(eval_pairs, tokenizer, cfg.max_length)
        encoded_eval = [(evals, [])]
    else:
        train, encoded_eval = [], []
        for i, src in enumerate(sources):
            train += [Example(x, src.weight, i) for x in encode_pairs(src.train_pairs, tokenizer, cfg.max_length)]
            train += [Example(x, src.weight, i) for x in encode_singles(src.train_singles, tokenizer, cfg.max_length)]
            encoded_eval.append((encode_pairs(src.eval_pairs, tokenizer, cfg.max_length),
                                 encode_singles(src.eval_singles, tokenizer, cfg.max_length)))
        evals = [x for pairs, _ in encoded_eval for x in pairs]
    out = start_run_on_every_rank(acc, cfg, "score-model")
    logger = MetricsLogger(out, enabled=main, report_to=cfg.runtime.report_to)

    # 2. Model: backbone + scalar head read at the last non-padding token (a new head on a causal LM).
    score_model = ScoreModel.from_pretrained(cfg.model_path, score_type=cfg.kind, allow_new_head=True,
                                             gradient_checkpointing=cfg.runtime.gradient_checkpointing)
    score_model = apply_lora_settings(score_model, cfg.lora)  # the head stays fully trainable
    global_bs = cfg.batch_size * acc.num_processes
    steps_per_epoch = math.ceil(len(train) / global_bs)
    total = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    opt, sched = build_optimizer(score_model, cfg.optim, total)
    model, opt, sched = acc.prepare(PairScorer(score_model), opt, sched)
    model.train()
    # Packed (padding-free) batches when this model gives the padded scores with them, else padded ones.
    probe = ([e.item for e in train if isinstance(e.item, EncodedPair)][:4]
             or [EncodedPair(e.item.ids, e.item.ids, None, None, e.item.n_prompt) for e in train[:4]])
    problem = packing_problem(score_model, probe, tokenizer.pad_token_id, cfg.share_prompt) if cfg.packing else "off"
    packed = problem is None
    if cfg.packing and not packed and main:
        print(f"score-model: packing not used ({problem}); training on padded batches", file=sys.stderr)
    grouped = cfg.group_by_length == "on" or (cfg.group_by_length == "auto" and not packed)
    state, ckpt, _ = restore_loop(acc, out, logger, cfg.resume, "score-model")
    start = state.step

    # 3. Loop: every global batch is dealt out to the processes (rank_share).
    stream = batch_stream(lambda epoch: epoch_batches(train, global_bs, cfg.runtime.seed, epoch, grouped), start)
    t0 = time.time()
    bar = progress(total=total, desc=f"{cfg.kind} model", disable=not (cfg.runtime.progress and main))
    bar.update(start)
    attention = packed_attention_enabled(score_model) if packed else contextlib.nullcontext()
    with attention:
        while state.step < total:
            _, batch = next(stream)
            rows, weight = rank_share(batch, acc.process_index, acc.num_processes)
            b = training_batch(rows, packed, cfg.share_prompt, tokenizer.pad_token_id)
            b = {k: v.to(acc.device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
            step = state.step + 1
            scores = model(b)
            loss, diag = pair_loss(cfg.kind, scores, b, cfg.l2_coef)
            assert_finite(step, scores=scores, loss=loss)
            acc.backward(loss * weight)
            gnorm = optimizer_step(acc, model.parameters(), opt, sched, cfg.optim.grad_clip, step=step,
                                   what=f"{cfg.kind} model")
            state.step = step
            bar.update(1)
            bar.set_postfix(loss=f"{diag['loss']:.3f}", acc=f"{diag['accuracy']:.2f}")
            if step % cfg.log_every == 0 or step == total:
                logger.log(step, global_means({f"train/{k}": v for k, v in diag.items()} |
                                              {"train/lr": sched.get_last_lr()[0], "train/grad_norm": gnorm,
                                               "time/pairs_per_s": (step - start) * global_bs / (time.time() - t0)},
                                              acc))  # averaged over the ranks' shares (a collective)
            fault_point("step")
            if cfg.save_every and step % cfg.save_every == 0 and step < total:
                ckpt.save()
    bar.close()

    # 4. Held-out evaluation; the summary row, then the end checkpoint (a run resumed from it has logged
    #    the row already); eval.json, the plot and the model; the run is complete (status written last).
    unwrapped = acc.unwrap_model(model).score_model
    ev = evaluate(unwrapped, evals, cfg.kind, tokenizer.pad_token_id, cfg.batch_size, acc.device) if evals else None
    metrics = (ev["metrics"] if ev else {}) | {"train/steps": state.step, "train/pairs": len(train),
                                               "train/packed": packed}
    threshold = None
    if cfg.kind == "cost":  # the decision threshold, calibrated on the labelled validation responses
        scored = source_scores(unwrapped, encoded_eval, cfg.kind, tokenizer.pad_token_id, cfg.batch_size, acc.device,
                               scored_pairs=ev)  # ev: the same pairs, in order (evals), scored once
        pooled_s = [x for got in scored for x in got["scores"]]
        pooled_u = [x for got in scored for x in got["unsafe"]]
        threshold = calibrate(pooled_s, pooled_u, cfg.threshold_method)
        metrics["eval/threshold"] = threshold["value"]
        if pooled_s:
            from saferlhf.eval.classification import binary_metrics

            metrics |= {f"eval/labelled_{k}": v for k, v in binary_metrics(pooled_s, pooled_u,
                                                                           threshold["value"]).items()}
        if sources is not None:
            metrics |= source_metrics([src.name for src in sources], scored, threshold["value"])
        if ev is not None:
            ev["labelled"] = [(sc, not u) for sc, u in zip(pooled_s, pooled_u)]
        elif pooled_s:
            ev = {"labelled": [(sc, not u) for sc, u in zip(pooled_s, pooled_u)], "chosen": [], "rejected": []}
    if sources is not None:
        metrics["train/responses"] = len(train_singles)
    seconds = time.time() - t0
    if start < total:
        logger.log(state.step, metrics | {"time/seconds": seconds})
        ckpt.save()
    acc.wait_for_everyone()
    if main:
        atomic_write_json(Path(out) / "eval.json", metrics | {"train/seconds": seconds})
        # Which prompts the model learned (sha256), so that calibration (`cost-threshold`) uses held-out ones.
        atomic_write_json(Path(out) / "training_prompts.json",
                          {"sha256": sorted({prompt_hash(p.prompt) for p in [*train_pairs, *train_singles]})})
        if sources is not None:
            atomic_write_json(Path(out) / "sources.json", [
                {"name": src.name, "path": src.path, "weight": src.weight, "train_pairs": len(src.train_pairs),
                 "train_responses": len(src.train_singles), "eval_pairs": len(src.eval_pairs),
                 "eval_responses": len(src.eval_singles), "test_records_held_out": src.test_records}
                for src in sources])
        if ev:
            plot_distribution(cfg.kind, ev, Path(out) / "score_distribution.png",
                              threshold["value"] if threshold else 0.0)
        if threshold is not None:
            from saferlhf.models.score import THRESHOLD_KEY

            setattr(unwrapped._hf().config, THRESHOLD_KEY, threshold)  # saved in config.json
        unwrapped.save_pretrained(Path(out) / "model", tokenizer=tokenizer, max_length=cfg.max_length)  # atomic swap
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                          if ("accuracy" in k or k == "eval/labelled_f1") and k.count("/") == 1)
        replay = batch_stream(lambda epoch: epoch_batches(train, global_bs, cfg.runtime.seed, epoch, grouped), 0)
        seen = sum(len(next(replay)[1]) for _ in range(state.step))  # pairs presented over the whole run
        epochs = seen / max(len(train), 1)
        print(f"{cfg.kind} model: {state.step} steps, {seen} examples seen ({epochs:.2f} epochs of {len(train)} "
              f"training examples); held-out {shown}"
              + (f"; decision threshold {threshold['value']:.4g} ({threshold['method']})" if threshold else "")
              + f" -> {out}/model")
    finish_run(out, is_main=main, **{k: v for k, v in metrics.items() if k.startswith("train/")})
    return 0
