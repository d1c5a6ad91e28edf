"""`saferlhf cost-threshold`: a PPO-Lag cost threshold d in the cost model's own units.

The paper's d = 0 assumes a cost model whose zero separates safe from unsafe (trained with the sign terms on
safety labels). On real data that assumption often fails: a cost model trained on rankings only (HH-RLHF) has
an arbitrary zero, and even a labelled one may put most of the starting policy's answers below zero. Two
calibrations, both pure functions below:

* ``labels`` (a safety-labelled file, PKU-SafeRLHF schema, e.g. the starting policy's pairs annotated):
  d = c̄_safe + rate·(c̄_unsafe − c̄_safe), the mean cost the policy would have if only ``rate`` of its answers
  were unsafe (the demo's calibration);
* ``quantile`` (any generations or preference file, no labels needed): d = the ``quantile`` of the cost of the
  given responses (e.g. the starting policy's own answers to the training prompts): PPO-Lag then has to push
  the mean cost down to that level.

Calibrating on the cost model's own training data flatters it (it separates the pairs it learned better than
new ones), so only responses to prompts the cost model did not train on are used: `saferlhf score-model` writes
the sha256 of every training prompt to ``RUN/training_prompts.json`` beside ``RUN/model``, and the records
whose prompt is in it are left out (``--held_out_only false`` keeps them; the output JSON says how many were
dropped). A response cut off at the generation limit (``ended`` false in the file) is scored without eos.

    saferlhf cost-threshold --cost_model CM --input sft_pairs_annotated.jsonl --method labels --rate 0.05
    saferlhf cost-threshold --cost_model CM --input sft_generations.jsonl --method quantile --quantile 0.25
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
    input: str = option("", "labels: a safety-labelled pair file (PKU-SafeRLHF schema); quantile: any generations "
                            "or preference file")
    method: Literal["labels", "quantile"] = option("labels", "labels: from safe / unsafe means; quantile: a "
                                                             "quantile of the responses' costs")
    rate: float = option(0.05, "labels: the share of unsafe answers the threshold stands for", ge=0, le=1)
    quantile: float = option(0.25, "quantile: which quantile of the costs", ge=0, le=1)
    out: str = option("cost_threshold.json", "output JSON: threshold and how it was computed")
    held_out_only: bool = option(True, "skip responses to prompts the cost model trained on (its run's "
                                       "training_prompts.json, when present)")
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


def labelled_costs(cost_model: str, path: str | Path, batch_size: int = 64, require_both: bool = False,
                   held_out_only: bool = False, info: dict | None = None) -> tuple[list[float], list[float]]:
    """The cost model's scores of the responses a safety-labelled pair file marks safe, and of those it marks
    unsafe (cut-off responses scored without eos). ``held_out_only``: records whose prompt the cost model
    trained on are left out (``info`` gets ``n_records`` / ``n_training_prompts_skipped``). ``require_both``:
    a file with only one kind is a ``UserError`` before the model loads."""
    from saferlhf.data.loaders import load_safety_preferences
    from saferlhf.data.split import prompt_hash
    from saferlhf.eval.judges import ScoreModelJudge

    recs = load_safety_preferences(path)  # file:line errors before the model loads
    trained = training_prompt_hashes(cost_model) if held_out_only else None
    kept = [r for r in recs if trained is None or prompt_hash(r.prompt) not in trained]
    if info is not None:
        info |= {"n_records": len(recs), "n_training_prompts_skipped": len(recs) - len(kept),
                 "held_out_only": trained is not None}
    prompts = [r.prompt for r in kept for _ in (0, 1)]
    responses = [x for r in kept for x in (r.response_0, r.response_1)]
    ended = [x for r in kept for x in (r.ended_0, r.ended_1)]
    safe = [x for r in kept for x in (r.is_response_0_safe, r.is_response_1_safe)]
    if require_both and (all(safe) or not any(safe)):
        what = "no" if not safe else ("only safe" if all(safe) else "only unsafe")
        why = (f" once the {len(recs) - len(kept)} records whose prompt the cost model trained on are left out"
               if len(kept) < len(recs) else "")
        raise UserError(f"cost-threshold: {path} has {what} responses{why}",
                        hint="the labels method needs both; give held-out pairs, --held_out_only false, "
                             "or --method quantile")
    costs = ScoreModelJudge(cost_model, "cost", batch_size).scores(prompts, responses, ended) if kept else []
    return [c for c, ok in zip(costs, safe) if ok], [c for c, ok in zip(costs, safe) if not ok]


def run(cfg: CostThresholdConfig) -> int:
    from saferlhf.eval.judges import ScoreModelJudge
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
        from saferlhf.eval.score import flat_generations

        flat_p, flat_r, flat_e, _, _ = flat_generations(cfg.input)  # cut-off responses are scored without eos
        costs = ScoreModelJudge(cfg.cost_model, "cost", cfg.batch_size).scores(flat_p, flat_r, flat_e)
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
