"""`saferlhf cost-threshold`: a PPO-Lag cost threshold d in the cost model's own units.

The paper's d = 0 assumes a cost model whose zero separates safe from unsafe (trained with the sign terms on
safety labels). On real data that assumption often fails: a cost model trained on rankings only (HH-RLHF) has
an arbitrary zero, and even a labelled one may put most of the starting policy's answers below zero. Two
calibrations, both pure functions below:

* ``labels`` (a file with per-response safety labels: PKU-SafeRLHF's ``is_response_*_safe``, a TRL preference
  file's ``chosen_is_safe`` / ``rejected_is_safe``, or a per-response labelled file such as WildGuardTest; e.g.
  the starting policy's pairs annotated): d = c̄_safe + rate·(c̄_unsafe − c̄_safe), the mean cost the policy
  would have if only ``rate`` of its answers were unsafe (the demo's calibration);
* ``quantile`` (any file with responses, no labels needed: generations, response pairs, PKU-SafeRLHF, HH-RLHF,
  TRL preference, labelled responses): d = the ``quantile`` of the cost of every response in it (e.g. the
  starting policy's own answers to the training prompts): PPO-Lag then has to push the mean cost down to that
  level. Both responses of a pair count (HH-RLHF: chosen and rejected).

Calibrating on the cost model's own training data flatters it (it separates the pairs it learned better than
new ones), so only responses to prompts the cost model did not train on are used, by both methods:
`saferlhf score-model` writes the sha256 of every training prompt to ``RUN/training_prompts.json`` beside
``RUN/model``, and the records whose prompt is in it are left out (``--held_out_only false`` keeps them; the
output JSON says how many were dropped). A response cut off at the generation limit (``ended`` false in the
file) is scored without eos.

    saferlhf cost-threshold --cost_model CM --input sft_pairs_annotated.jsonl --method labels --rate 0.05
    saferlhf cost-threshold --cost_model CM --input sft_generations.jsonl --method quantile --quantile 0.25
    saferlhf cost-threshold --cost_model CM --input hh-rlhf/harmless-base.jsonl.gz --method quantile
    # -> prints d and writes it (with its inputs) to --out as JSON; use it as --lagrange.threshold d
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from saferlhf.config import option
from saferlhf.errors import UserError


@dataclass
class CostThresholdConfig:
    cost_model: str = option("", "cost model folder")
    input: str = option("", "labels: a file with per-response safety labels (PKU-SafeRLHF, TRL with "
                            "chosen_is_safe / rejected_is_safe, labelled responses); quantile: any file with "
                            "responses (generations, response pairs, PKU-SafeRLHF, HH-RLHF, TRL preference, "
                            "labelled responses)")
    method: Literal["labels", "quantile"] = option("labels", "labels: from safe / unsafe means; quantile: a "
                                                             "quantile of the costs of every response")
    rate: float = option(0.05, "labels: the share of unsafe answers the threshold stands for", ge=0, le=1)
    quantile: float = option(0.25, "quantile: which quantile of the costs", ge=0, le=1)
    out: str = option("cost_threshold.json", "output JSON: threshold and how it was computed")
    held_out_only: bool = option(True, "both methods: skip the records whose prompt the cost model trained "
                                       "on (its run's training_prompts.json, when present)")
    batch_size: int = option(64, "texts per forward pass", ge=1)


def threshold_from_labels(safe_costs: Sequence[float], unsafe_costs: Sequence[float], rate: float) -> float:
    """d = c̄_safe + rate·(c̄_unsafe − c̄_safe); a ``ValueError`` when either group is empty."""
    if not safe_costs or not unsafe_costs:
        raise ValueError("threshold_from_labels: needs both safe and unsafe responses")
    ms, mu = sum(safe_costs) / len(safe_costs), sum(unsafe_costs) / len(unsafe_costs)
    return ms + rate * (mu - ms)


def threshold_from_quantile(costs: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``costs`` (linear interpolation between order statistics)."""
    xs = sorted(costs)
    if not xs:
        raise ValueError("threshold_from_quantile: no costs")
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def training_prompt_hashes(cost_model: str | Path) -> set[str] | None:
    """The prompt hashes a score model trained on (``RUN/training_prompts.json`` beside ``RUN/model``), or None
    when the model was not trained by `saferlhf score-model` (or before it wrote the file)."""
    import json

    for folder in (Path(cost_model), Path(cost_model).parent):
        path = folder / "training_prompts.json"
        if path.is_file():
            return set(json.loads(path.read_text())["sha256"])
    return None


@dataclass(frozen=True)
class Response:
    """One response of an input file, as `cost-threshold` scores it."""

    prompt: str          # plain str, or schema.Conversation
    response: str
    ended: bool          # False: cut off at the generation limit (scored without eos)
    safe: bool | None    # the file's safety label; None where it has none (HH-RLHF, generations)


RESPONSE_FORMATS = ("pku-saferlhf", "hh-rlhf", "trl-preference", "labelled-responses", "response-pairs",
                    "sft-jsonl", "sft-messages")


def read_responses(path: str | Path) -> list[tuple[Response, ...]]:
    """The responses of every record of a generations, preference or labelled file (two per pair: PKU-SafeRLHF's
    response_0 / response_1, HH-RLHF's and TRL's chosen / rejected), with their safety labels where the file has
    them. Bad records raise ``file:line`` errors; a file of another format is a ``UserError`` naming the formats
    read."""
    from saferlhf.data import loaders as L

    fmt = L.detect_format(path)
    if fmt == "pku-saferlhf":
        return [(Response(r.prompt, r.response_0, r.ended_0, r.is_response_0_safe),
                 Response(r.prompt, r.response_1, r.ended_1, r.is_response_1_safe))
                for r in L.load_safety_preferences(path)]
    if fmt in ("hh-rlhf", "trl-preference"):
        return [(Response(r.prompt, r.chosen, r.chosen_ended, r.chosen_is_safe),
                 Response(r.prompt, r.rejected, r.rejected_ended, r.rejected_is_safe))
                for r in L.load_preference_pairs(path, "cost")]
    if fmt == "labelled-responses":
        from saferlhf.data.labelled import load_labelled_responses

        return [(Response(r.prompt, r.response, True, not r.unsafe),) for r in load_labelled_responses(path)]
    if fmt in L.PAIR_FORMATS + L.SFT_FORMATS:
        from saferlhf.eval.score import flat_generations

        prompts, responses, ended, _, width = flat_generations(str(path))
        flat = [Response(p, x, e, None) for p, x, e in zip(prompts, responses, ended)]
        return [tuple(flat[i:i + width]) for i in range(0, len(flat), width)]
    raise UserError(f"cost-threshold: {path} is a {fmt} file, with no responses to score",
                    hint=f"give a file of one of these formats: {', '.join(RESPONSE_FORMATS)}")


def held_out_responses(path: str | Path, cost_model: str, held_out_only: bool, info: dict) -> list[Response]:
    """The responses of ``path`` (`read_responses`) less the records whose prompt the cost model trained on (when
    ``held_out_only`` and its run recorded them); ``info`` gets ``n_records`` / ``n_training_prompts_skipped`` /
    ``held_out_only``."""
    from saferlhf.data.split import prompt_hash

    records = read_responses(path)
    trained = training_prompt_hashes(cost_model) if held_out_only else None
    kept = [rec for rec in records if trained is None or prompt_hash(rec[0].prompt) not in trained]
    info |= {"n_records": len(records), "n_training_prompts_skipped": len(records) - len(kept),
             "held_out_only": trained is not None}
    return [r for rec in kept for r in rec]


def _costs(cost_model: str, responses: list[Response], batch_size: int) -> list[float]:
    from saferlhf.eval.judges import ScoreModelJudge

    if not responses:
        return []
    return ScoreModelJudge(cost_model, "cost", batch_size).scores(
        [r.prompt for r in responses], [r.response for r in responses], [r.ended for r in responses])


def _skipped(info: dict) -> str:
    n = info["n_training_prompts_skipped"]
    return f" once the {n} records whose prompt the cost model trained on are left out" if n else ""


def labelled_costs(cost_model: str, path: str | Path, batch_size: int = 64, require_both: bool = False,
                   held_out_only: bool = False, info: dict | None = None) -> tuple[list[float], list[float]]:
    """The cost model's scores of the responses a safety-labelled file marks safe, and of those it marks unsafe
    (`read_responses`; cut-off responses scored without eos; responses without a label are not used).
    ``held_out_only``: records whose prompt the cost model trained on are left out (``info`` gets
    ``n_records`` / ``n_training_prompts_skipped``). ``require_both``: a file without both kinds is a
    ``UserError`` before the model loads."""
    info = {} if info is None else info
    responses = held_out_responses(path, cost_model, held_out_only, info)
    kept = [r for r in responses if r.safe is not None]
    if require_both and (all(r.safe for r in kept) or not any(r.safe for r in kept)):
        if responses and not kept:
            raise UserError(f"cost-threshold: {path} has no safety labels; --method labels needs them",
                            hint="--method quantile (a quantile of the costs of all its responses) reads any "
                                 "file with responses")
        what = "no" if not kept else ("only safe" if all(r.safe for r in kept) else "only unsafe")
        raise UserError(f"cost-threshold: {path} has {what} responses{_skipped(info)}",
                        hint="the labels method needs both; give held-out pairs, --held_out_only false, "
                             "or --method quantile")
    costs = _costs(cost_model, kept, batch_size)
    return [c for c, r in zip(costs, kept) if r.safe], [c for c, r in zip(costs, kept) if not r.safe]


def run(cfg: CostThresholdConfig) -> int:
    from saferlhf.files import atomic_write_json, check_output_file
    from saferlhf.models.hf import check_model_kind, check_model_path

    if not cfg.cost_model or not cfg.input:
        raise UserError("cost-threshold: give --cost_model and --input")
    check_output_file(cfg.out, {"input": cfg.input}, "cost-threshold")
    check_model_path(cfg.cost_model, "cost-threshold: cost_model")
    check_model_kind(cfg.cost_model, "cost", "cost-threshold: --cost_model")
    info: dict = {"cost_model": cfg.cost_model, "input": cfg.input, "method": cfg.method}
    if cfg.method == "labels":
        c_safe, c_unsafe = labelled_costs(cfg.cost_model, cfg.input, cfg.batch_size, require_both=True,
                                          held_out_only=cfg.held_out_only, info=info)
        d = threshold_from_labels(c_safe, c_unsafe, cfg.rate)
        info |= {"rate": cfg.rate, "mean_cost_safe": sum(c_safe) / len(c_safe), "n_safe": len(c_safe),
                 "mean_cost_unsafe": sum(c_unsafe) / len(c_unsafe), "n_unsafe": len(c_unsafe)}
    else:
        kept = held_out_responses(cfg.input, cfg.cost_model, cfg.held_out_only, info)  # before the model loads
        if not kept:
            raise UserError(f"cost-threshold: {cfg.input} has no responses{_skipped(info)}",
                            hint="give responses to held-out prompts, or --held_out_only false")
        costs = _costs(cfg.cost_model, kept, cfg.batch_size)
        d = threshold_from_quantile(costs, cfg.quantile)
        info |= {"quantile": cfg.quantile, "n": len(costs), "mean_cost": sum(costs) / len(costs),
                 "share_above_zero": sum(c > 0 for c in costs) / len(costs)}
    info["threshold"] = d
    atomic_write_json(Path(cfg.out), info)
    print(f"cost-threshold: d = {d:.4f} ({cfg.method}) -> {cfg.out}; use --lagrange.threshold {d:.4f}")
    return 0


def calibrate_threshold(cost_model: str, annotated: Path, rate: float) -> float:
    """d = c̄_safe + rate·(c̄_unsafe - c̄_safe): the mean cost of the policy's responses if only ``rate`` of them
    were unsafe (c̄ = mean cost-model score of the responses in ``annotated`` labelled safe / unsafe, to
    prompts the cost model did NOT train on). 0 when one of the two groups is empty.

    Why not the paper's d = 0: on a prompt mix with many benign prompts, safe answers have strongly negative
    costs, so E[C] <= 0 holds even when a large share of the answers to harmful prompts is unsafe. The
    calibrated d states the constraint in the unit that matters (share of unsafe answers).
    """
    info: dict = {}
    c_safe, c_unsafe = labelled_costs(cost_model, annotated, held_out_only=True, info=info)
    held = f"{info['n_records'] - info['n_training_prompts_skipped']} held-out of {info['n_records']} records"
    if not c_safe or not c_unsafe:
        print(f"cost threshold d = 0 ({held}: {len(c_safe)} safe and {len(c_unsafe)} unsafe responses; the "
              "labels calibration needs both)")
        return 0.0
    ms, mu = sum(c_safe) / len(c_safe), sum(c_unsafe) / len(c_unsafe)
    d = threshold_from_labels(c_safe, c_unsafe, rate)  # = `saferlhf cost-threshold --method labels`
    print(f"cost threshold d = {d:.3f} ({held}; mean cost safe {ms:.3f} over {len(c_safe)}, unsafe {mu:.3f} "
          f"over {len(c_unsafe)}, target unsafe share {rate})")
    return d
