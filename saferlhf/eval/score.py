"""`saferlhf score`: reward and cost scores of an existing generations file, without generating.

    saferlhf score --input generations.jsonl --reward_model RM --cost_model CM --out scored.jsonl

Input: what `saferlhf generate` writes, one response per record (prompt, response) or response pairs
(prompt, response_0, response_1), or any file of those formats (`saferlhf data check` lists them). Each output
record is the input record plus ``reward`` / ``cost`` (pairs: ``reward_0``, ``reward_1``, ``cost_0``,
``cost_1``). ``<out>.summary.json`` holds the means, the violation rate (cost > 0) and, for pairs, how often
each response scores higher. Scoring uses the training encoding (`saferlhf.models.score.score_texts`); a
response whose record says it was cut off at the generation limit (``ended`` / ``ended_0`` / ``ended_1`` false,
as `saferlhf generate` writes) is scored without eos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from saferlhf.config import option
from saferlhf.errors import UserError


@dataclass
class ScoreConfig:
    input: str = option("", "generations file: (prompt, response) or (prompt, response_0, response_1) records")
    reward_model: str | None = option(None, "reward model folder")
    cost_model: str | None = option(None, "cost model folder (cost > 0 = unsafe)")
    out: str = option("scored.jsonl", "output JSONL (the input records with their scores) + <out>.summary.json")
    batch_size: int = option(64, "texts per forward pass", ge=1)


def ended_flags(records: list, width: int) -> list[list[bool]]:
    """Per record and response, whether it ended (eos): the ``ended`` / ``ended_<k>`` flags the loaders parsed
    from the record (``schema.parse_ended``; True where the file does not say)."""
    if width == 1:
        return [[getattr(r, "ended", True)] for r in records]
    return [[getattr(r, f"ended_{k}", True) for k in range(width)] for r in records]


def load_generations(path: str) -> tuple[list[str], list[list[str]], list[dict]]:
    """(prompts, responses per record (1 or 2), the input records as dicts) of a generations file."""
    from saferlhf.data.loaders import PAIR_FORMATS, detect_format, load_response_pairs, load_sft_records
    from saferlhf.data.schema import prompt_json

    fmt = detect_format(path)
    if fmt in PAIR_FORMATS or fmt == "pku-saferlhf":
        recs = load_response_pairs(path)
        flags = ended_flags(recs, 2)
        return ([r.prompt for r in recs], [[r.response_0, r.response_1] for r in recs],
                [{"prompt": prompt_json(r.prompt), "response_0": r.response_0, "response_1": r.response_1,
                  "ended_0": e[0], "ended_1": e[1]} for r, e in zip(recs, flags)])
    if fmt in ("sft-jsonl", "sft-messages"):
        recs = load_sft_records(path)
        flags = ended_flags(recs, 1)
        return ([r.prompt for r in recs], [[r.response] for r in recs],
                [r.to_dict() | {"ended": e[0]} for r, e in zip(recs, flags)])
    raise UserError(f"score: {path} is a {fmt} file, not generations",
                    hint="give the output of `saferlhf generate`: (prompt, response) or (prompt, response_0, "
                         "response_1) records")


def flat_generations(path: str) -> tuple[list[str], list[str], list[bool], list[dict], int]:
    """`load_generations` flattened: (prompt per response, responses, ended flags, records, responses per
    record), prompt-major, for the scorers."""
    prompts, responses, records = load_generations(path)
    width = len(responses[0]) if responses else 1
    flat_p = [p for p, rs in zip(prompts, responses) for _ in rs]
    flat_r = [r for rs in responses for r in rs]
    flat_e = [rec["ended"] if width == 1 else rec[f"ended_{i}"] for rec in records for i in range(width)]
    return flat_p, flat_r, flat_e, records, width


def run(cfg: ScoreConfig) -> int:
    from saferlhf.eval.judges import ScoreModelJudge
    from saferlhf.files import atomic_write_json, atomic_write_text, dumps
    from saferlhf.models.hf import check_model_kind, check_model_path

    if not cfg.input:
        raise UserError("score: give --input (a generations file)")
    if not (cfg.reward_model or cfg.cost_model):
        raise UserError("score: give --reward_model and / or --cost_model")
    for what, path in (("reward_model", cfg.reward_model), ("cost_model", cfg.cost_model)):
        if path:
            check_model_path(path, f"score: {what}")
            check_model_kind(path, what.removesuffix("_model"), f"--{what}")
    from saferlhf.files import check_output_file

    check_output_file(cfg.out, {"input": cfg.input}, "score")  # never over its own input
    flat_p, flat_r, flat_e, records, width = flat_generations(cfg.input)  # validated before any model loads
    summary: dict = {"input": cfg.input, "records": len(records), "responses_per_record": width}
    for kind, path in (("reward", cfg.reward_model), ("cost", cfg.cost_model)):
        if not path:
            continue
        scores = ScoreModelJudge(path, kind, cfg.batch_size).scores(flat_p, flat_r, flat_e)
        for k, rec in enumerate(records):
            mine = scores[k * width: (k + 1) * width]
            rec |= {kind: mine[0]} if width == 1 else {f"{kind}_{i}": v for i, v in enumerate(mine)}
        summary[f"{kind}_mean"] = sum(scores) / len(scores)
        if kind == "cost":
            summary["violation_rate"] = sum(s > 0 for s in scores) / len(scores)
        if width == 2:
            pairs = [(scores[2 * k], scores[2 * k + 1]) for k in range(len(records))]
            summary[f"{kind}_response_0_higher"] = sum(a > b for a, b in pairs) / len(pairs)
    out = Path(cfg.out)
    atomic_write_text(out, "".join(dumps(r) + "\n" for r in records))
    atomic_write_json(out.with_name(out.name + ".summary.json"), summary)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float))
    print(f"score: {len(flat_r)} responses of {cfg.input}: {shown} -> {out}")
    return 0
