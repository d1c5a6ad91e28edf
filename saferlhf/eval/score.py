"""`saferlhf score`: reward and cost scores of an existing file of responses, without generating.

    saferlhf score --input generations.jsonl --reward_model RM --cost_model CM --out scored.jsonl
    saferlhf score --input any.csv --prompt_column C --response_column R [--label_column L] --cost_model CM \
        --out scored.jsonl

Any file with prompt and response columns (CSV / JSON / JSONL / parquet; the columns named, or a per-response
label layout that `saferlhf data check` recognises): each output record is the input row (every column) plus
``cost`` and ``unsafe`` (cost > the cost model's stored decision threshold, `unsafe_threshold`; 0 for a model
without one) and ``reward`` with a reward model. With labels (``--label_column``, or a known labelled layout) the
summary adds accuracy, precision, recall, F1, false-positive rate and AUROC against them
(`saferlhf.eval.classification.binary_metrics`).

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
from saferlhf.data.labelled import LabelColumns
from saferlhf.errors import UserError

_COLUMN_FIELDS = ("prompt_column", "response_column", "label_column", "label", "category_column")


@dataclass
class ScoreConfig(LabelColumns):
    input: str = option("", "generations file: (prompt, response) or (prompt, response_0, response_1) records; or "
                            "any file with prompt / response columns (--prompt_column / --response_column)")
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


def is_table_input(cfg: ScoreConfig, labelled: bool | None = None) -> bool:
    """True when ``input`` is read as a table of (prompt, response[, label]) rows rather than generations: a
    column is named, or the file is a per-response label layout (``labelled``: `is_labelled_file` of it, when the
    caller has it already), or of no generations format."""
    from saferlhf.data.labelled import is_labelled_file
    from saferlhf.data.loaders import PAIR_FORMATS, detect_format
    from saferlhf.data.validate import UnknownFormatError

    if labelled is None:
        labelled = is_labelled_file(cfg.input)
    if any(getattr(cfg, f) for f in _COLUMN_FIELDS) or labelled:
        return True
    try:
        fmt = detect_format(cfg.input)
    except UnknownFormatError:
        return True
    return fmt not in PAIR_FORMATS + ("pku-saferlhf", "sft-jsonl", "sft-messages")


def load_table(cfg: ScoreConfig, labelled: bool | None = None
               ) -> tuple[list[str], list[str], list[dict], list[bool] | None, dict]:
    """(prompts, responses, output records, unsafe labels or None, counts) of a table input. Labelled (a label
    column named or found, or ``--label``): `load_labelled_responses` (file:line errors, or skipped rows counted
    with ``--unknown_labels skip``), each output record the input row plus ``label_unsafe``; unlabelled: every
    row with a non-empty prompt and response. ``labelled``: `is_labelled_file` of the input, when known."""
    from saferlhf.data.labelled import is_labelled_file, load_labelled_responses
    from saferlhf.data.loaders import _pick_column, _table_rows
    from saferlhf.data.readers import display_name
    from saferlhf.data.schema import as_prompt

    name = display_name(cfg.input)
    rows, report = _table_rows(cfg.input)
    if report.errors:
        from saferlhf.data.validate import DataValidationError

        raise DataValidationError(report.errors, f"({len(report.errors)} unreadable records)")
    by_line = dict(rows)
    if cfg.label_column or cfg.label or (is_labelled_file(cfg.input) if labelled is None else labelled):
        records = load_labelled_responses(cfg.input, cfg)
        lines = [int(r.origin.rsplit(":", 1)[1]) if ":" in r.origin else None for r in records]
        out = [dict(by_line.get(line, {})) | {"label_unsafe": r.unsafe} for r, line in zip(records, lines)]
        return ([r.prompt for r in records], [r.response for r in records], out, [r.unsafe for r in records],
                {"rows": report.n_records, "skipped": report.n_records - len(records)})
    columns = list(dict.fromkeys(k for _, r in rows[:1000] for k in r))
    pcol = _pick_column(name, columns, cfg.prompt_column, ("prompt", "instruction", "question", "context"),
                        "--prompt_column")
    rcol = _pick_column(name, columns, cfg.response_column, ("response", "completion", "output", "answer"),
                        "--response_column")
    if pcol is None or rcol is None:
        raise UserError(f"score: {name}: no {'prompt' if pcol is None else 'response'} column found; the file's "
                        f"columns: {', '.join(columns)}", hint="name them with --prompt_column / --response_column")
    prompts, responses, out = [], [], []
    for line, r in rows:
        p, resp = r.get(pcol), r.get(rcol)
        if not isinstance(resp, str) or not resp.strip() or not p:
            continue
        prompts.append(as_prompt(p) if isinstance(p, (str, list)) else str(p))
        responses.append(resp)
        out.append(dict(r))
    if not out:
        raise UserError(f"score: {name}: no row has both a prompt ({pcol!r}) and a response ({rcol!r})")
    return prompts, responses, out, None, {"rows": report.n_records, "skipped": report.n_records - len(out)}


def run_table(cfg: ScoreConfig, labelled: bool | None = None) -> int:
    """`score` of a table input: per row cost, unsafe (and reward), the summary with metrics against labels."""
    import math

    from saferlhf.eval.classification import binary_metrics
    from saferlhf.eval.judges import ScoreModelJudge
    from saferlhf.files import atomic_write_json, atomic_write_text, dumps
    from saferlhf.models.score import stored_threshold, unsafe_threshold

    prompts, responses, records, labels, counts = load_table(cfg, labelled)
    summary: dict = {"input": cfg.input, "records": len(records)} | counts
    for kind, path in (("reward", cfg.reward_model), ("cost", cfg.cost_model)):
        if not path:
            continue
        scores = ScoreModelJudge(path, kind, cfg.batch_size).scores(prompts, responses)
        summary[f"{kind}_mean"] = sum(scores) / len(scores)
        if kind == "reward":
            for rec, v in zip(records, scores):
                rec["reward"] = v
            continue
        t = unsafe_threshold(path)
        for rec, v in zip(records, scores):
            rec |= {"cost": v, "unsafe": v > t}
        summary |= {"threshold": t, "threshold_source": (stored_threshold(path) or {"method": "zero (sign)"})["method"],
                    "unsafe_rate": sum(v > t for v in scores) / len(scores)}
        if labels is not None:
            summary["labelled_unsafe_rate"] = sum(labels) / len(labels)
            summary["metrics"] = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                  for k, v in binary_metrics(scores, labels, t).items()}
    out = Path(cfg.out)
    atomic_write_text(out, "".join(dumps(r) + "\n" for r in records))
    atomic_write_json(out.with_name(out.name + ".summary.json"), summary)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float))
    if "metrics" in summary:
        m = summary["metrics"]
        shown += ", " + ", ".join(f"{k} {m[k]:.3f}" for k in ("precision", "recall", "f1", "fpr", "auroc")
                                  if m.get(k) is not None)
    print(f"score: {len(records)} responses of {cfg.input}: {shown} -> {out}")
    return 0


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
    from saferlhf.data.labelled import is_labelled_file

    labelled = is_labelled_file(cfg.input)  # sniffed once: the file is read again only to load it
    if is_table_input(cfg, labelled):
        return run_table(cfg, labelled)
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
            from saferlhf.models.score import unsafe_threshold

            t = unsafe_threshold(path)
            summary["violation_rate"] = sum(s > 0 for s in scores) / len(scores)
            summary["unsafe_rate"] = sum(s > t for s in scores) / len(scores)
            summary["threshold"] = t
            for k, rec in enumerate(records):
                mine = scores[k * width: (k + 1) * width]
                rec |= {"unsafe": mine[0] > t} if width == 1 else {f"unsafe_{i}": v > t for i, v in enumerate(mine)}
        if width == 2:
            pairs = [(scores[2 * k], scores[2 * k + 1]) for k in range(len(records))]
            summary[f"{kind}_response_0_higher"] = sum(a > b for a, b in pairs) / len(pairs)
    out = Path(cfg.out)
    atomic_write_text(out, "".join(dumps(r) + "\n" for r in records))
    atomic_write_json(out.with_name(out.name + ".summary.json"), summary)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if isinstance(v, float))
    print(f"score: {len(flat_r)} responses of {cfg.input}: {shown} -> {out}")
    return 0
