"""Loaders: PKU-SafeRLHF, HH-RLHF, TRL preference, prompt sets, SFT corpora (incl. Alpaca-style instruction
files) and unlabelled response pairs, validated at load time. Per-response safety labels (``labelled-responses``)
and XSTest refusal labels (``refusal-labels``) are read by ``saferlhf.data.labelled``; their formats are
detected here (`label_format`, `instruction_format`) and their readers registered here by that module
(`register_format`), so that this module never imports it.

Files: ``.json`` / ``.jsonl`` (a list of records, or JSON lines), ``.csv``, ``.parquet``, each optionally
``.gz``. A string that is not an existing path and looks like ``owner/name`` (optionally
``owner/name:split``, default split ``train``) is loaded with ``datasets.load_dataset`` (needs internet).
JSON lines and CSV are read line by line, so every record's ``origin`` / problem is ``file:line`` with
the exact line where the record starts (the row number for parquet and hub datasets). Reading is in
``saferlhf.data.readers``: a file that holds no record at all raises one line (``DataFileError``, a
``UnknownFormatError``; ``FileNotFoundError``; ``IsADirectoryError``).

Every loader returns a ``Loaded`` list: a plain list of records with a ``.report`` (``LoadReport``:
records read, kept, and every problem). ``on_error="raise"`` (default) raises ``DataValidationError``
with ALL the errors of the file; ``on_error="drop"`` keeps the valid records and logs a one-line
summary of what was dropped and why (``records.report.summary()``), and raises if none is valid.
Warnings never drop a record. Duplicates are found after validation (``saferlhf.data.duplicates``):
an exact duplicate is a warning, a duplicate with contradicting labels an error on both lines.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from saferlhf.data import validate as V
from saferlhf.data.duplicates import find_duplicates
from saferlhf.data.readers import display_name, is_hub_name, iter_rows, suffix
from saferlhf.data.schema import (
    BEAVERTAILS_SLUGS, SOFT_TARGET_FIELDS, XSTEST_TYPES, PairKind, PreferencePair, PromptRecord, ResponsePair,
    SafetyPreference, SFTRecord, as_prompt, as_reply, parse_ended, split_hh_transcripts, to_beavertails,
)
from saferlhf.data.validate import (CheckReport, DataFileError, DataValidationError, Issue, LoadReport, Problem,
                                    UnknownFormatError)

log = logging.getLogger(__name__)
T = TypeVar("T")
OnError = Literal["raise", "drop"]

PREFERENCE_FORMATS = ("pku-saferlhf", "hh-rlhf", "trl-preference")
PROMPT_FORMATS = ("beavertails-evaluation", "safe-rlhf-eval-prompts", "xstest", "prompts-jsonl")
SFT_FORMATS = ("sft-jsonl", "sft-messages")
PAIR_FORMATS = ("response-pairs",)  # unlabelled: the input of `saferlhf world annotate`
INSTRUCTION_FORMATS = ("sft-alpaca",)  # instruction / input / output (Alpaca, safety-tuned-llamas): SFT records
LABEL_FORMATS = ("labelled-responses", "refusal-labels")  # read by saferlhf.data.labelled
FORMATS = PREFERENCE_FORMATS + PROMPT_FORMATS + SFT_FORMATS + PAIR_FORMATS + INSTRUCTION_FORMATS + LABEL_FORMATS
_PKU_LABELS = {"better_response_id", "safer_response_id", "is_response_0_safe", "is_response_1_safe"}


class Loaded(list[T], Generic[T]):
    """A list of records plus ``report``: what was read, kept, dropped (errors) and warned about."""

    report: LoadReport


def _loaded(items: Iterable[T], report: LoadReport) -> Loaded[T]:
    out: Loaded[T] = Loaded(items)
    out.report = report
    return out


# --------------------------------------------------------------------------- formats


def format_from_keys(keys: set[str], suffix: str = "") -> str | None:
    """The format of a record with these fields (``suffix``: file type, '.csv', '.json', ...)."""
    if keys & _PKU_LABELS:
        return "pku-saferlhf"
    if labelled := label_format(keys):  # prompt / response / a per-response label; XSTest completions
        return labelled
    if keys & {"response_0", "response_1"}:
        return "response-pairs"
    if {"chosen", "rejected"} <= keys:
        return "trl-preference" if "prompt" in keys else "hh-rlhf"
    if "prompt" not in keys:
        return "sft-messages" if "messages" in keys else None
    if "response" in keys:
        return "sft-jsonl"
    if "category_id" in keys:
        return "beavertails-evaluation"
    if suffix == ".csv" and {"type", "label"} <= keys:
        return "xstest"
    if suffix == ".json" and keys == {"prompt", "category"}:
        return "safe-rlhf-eval-prompts"
    return "prompts-jsonl"


def looks_like_xstest(record: dict[str, Any], name: str = "") -> bool:
    """A prompt record that is clearly XSTest's: a ``type`` field with an XSTest type, XSTest's ``focus`` and
    ``note`` fields, or a file named like XSTest (with a ``type`` field)."""
    keys = set(record)
    if not {"prompt", "type"} <= keys:
        return False
    xstest_type = isinstance(record["type"], str) and record["type"] in XSTEST_TYPES
    return xstest_type or {"focus", "note"} <= keys or "xstest" in Path(name).name.lower()


def detect_format(path: str | Path) -> str:
    """One of ``FORMATS``, from the first readable record's fields and the file type.

    Raises ``FileNotFoundError``, ``IsADirectoryError``, ``DataFileError`` (no record at all, or an XSTest
    file without its ``label`` column) or ``UnknownFormatError`` (fields of no known format).
    """
    name, first, n_bad = display_name(path), None, 0
    for line, row in iter_rows(path):
        if isinstance(row, dict):
            return _format_of(row, name, "" if is_hub_name(path) else suffix(Path(path)))
        first, n_bad = first or (line, row), n_bad + 1
    line, reason = first
    raise DataFileError(f"{name}: no readable record ({n_bad} unreadable); first: {name}:{line}: record: {reason}")


def _format_of(row: dict[str, Any], name: str, suffix: str) -> str:
    fmt = format_from_keys(set(row), suffix) or instruction_format(row)  # GuardReasoner, or Alpaca SFT
    if fmt is None:
        raise UnknownFormatError(f"{name}: cannot tell the format from the fields {sorted(row)} "
                                 f"(known formats: {', '.join(FORMATS)})")
    if fmt == "prompts-jsonl" and looks_like_xstest(row, name):
        fmt = "xstest"
    if fmt == "xstest" and "label" not in row:
        raise DataFileError(f"{name}: an XSTest file (fields {', '.join(row)}) without its 'label' field; "
                            "expected id, prompt, type, label (safe/unsafe), focus, note")
    return fmt


# --------------------------------------------------------------------------- per-response labels: detection

# A table is `labelled-responses` when it has one column of each (case-insensitive; the first match is used).
LABELLED_PROMPT_COLUMNS = ("prompt", "context", "question", "query")
RESPONSE_COLUMNS = ("response", "completion", "answer")
LABEL_COLUMNS = ("response_harm_label", "safety_gold", "unsafe", "is_unsafe", "is_harmful", "is_safe")
_GR_SPLIT = re.compile(r"^\s*Human user:\s*(.*?)\s*\n\s*AI assistant:[ \t]*\n?(.*)$", re.S)
_GR_LABEL = re.compile(r"Response:\s*(harmful|unharmful)\b", re.I)


def first_column(columns: Iterable[str], candidates: tuple[str, ...]) -> str | None:
    """The first of ``candidates`` among ``columns`` (compared case-insensitively), as the file spells it."""
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def label_format(keys: set[str]) -> str | None:
    """``refusal-labels`` (XSTest completions: prompt, completion, final_label) or ``labelled-responses`` (a prompt,
    a response and a label column of the known names) for a record with these fields, else None."""
    if {"prompt", "completion", "final_label"} <= keys:
        return "refusal-labels"
    found = [first_column(keys, c) for c in (LABELLED_PROMPT_COLUMNS, RESPONSE_COLUMNS, LABEL_COLUMNS)]
    return "labelled-responses" if all(found) else None


def guardreasoner_parts(text: Any) -> tuple[str, str] | None:
    """(prompt, response) of a GuardReasoner ``input`` "Human user:\\n<prompt>\\n\\nAI assistant:\\n<response>", both
    stripped; None when the text is not in that form."""
    match = _GR_SPLIT.match(text) if isinstance(text, str) else None
    return (match.group(1).strip(), match.group(2).strip()) if match else None


def guardreasoner_label(output: Any) -> str | None:
    """'harmful' / 'unharmful' of a GuardReasoner ``output``: its last "Response: x", or the whole output."""
    if not isinstance(output, str):
        return None
    found = _GR_LABEL.findall(output)
    if found:
        return found[-1].lower()
    text = output.strip().lower()
    return text if text in ("harmful", "unharmful") else None


def is_guardreasoner(row: dict[str, Any]) -> bool:
    """A GuardReasoner response-harm record: instruction / input / output with a (prompt, response) input."""
    return {"instruction", "input", "output"} <= set(row) and guardreasoner_parts(row["input"]) is not None


def instruction_format(row: dict[str, Any]) -> str | None:
    """The format of an ``instruction / input / output`` record: ``labelled-responses`` (GuardReasoner: a harm label
    in its output), ``sft-alpaca`` (an answer in its output); None for other fields."""
    if not {"instruction", "output"} <= set(row):
        return None
    labelled = is_guardreasoner(row) and guardreasoner_label(row["output"]) is not None
    return "labelled-responses" if labelled else "sft-alpaca"


class ExternalFormat(NamedTuple):
    """How `read_records`, `load_prompts` and `check_file` handle a format another module reads."""

    read: Callable[[str | Path, Any], "Loaded[Any]"]   # (path, options or None) -> valid records, problems in .report
    prompts: Callable[[str | Path], "Loaded[Any]"]     # records whose .prompt load_prompts takes (labels unchecked)
    counts: Callable[[list[Any]], dict[str, Any]]       # what `saferlhf data check` prints


_EXTERNAL: dict[str, ExternalFormat] = {}  # LABEL_FORMATS, registered by saferlhf.data.labelled when imported


def register_format(name: str, handlers: ExternalFormat) -> None:
    """Read format ``name`` (one of ``FORMATS``) with ``handlers`` (``saferlhf.data.labelled`` registers its two)."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r} (known formats: {', '.join(FORMATS)})")
    _EXTERNAL[name] = handlers


def _canonical_category(category: str | None) -> str | None:
    return BEAVERTAILS_SLUGS.get(category, category) if category else None


def _build_pku(r: dict, origin: str) -> SafetyPreference:
    names = ("prompt", "response_0", "response_1")
    sources = {k: r.get(f"{k}_source") for k in names} if any(f"{k}_source" in r for k in names) else None
    return SafetyPreference(
        as_prompt(r["prompt"]), r["response_0"], r["response_1"], r["better_response_id"], r["safer_response_id"],
        r["is_response_0_safe"], r["is_response_1_safe"], r.get("response_0_harm_category"),
        r.get("response_1_harm_category"), r.get("response_0_severity_level"),
        r.get("response_1_severity_level"), sources, origin, parse_ended(r.get("ended_0")),
        parse_ended(r.get("ended_1")), r.get("better_response_tie") is True, r.get("safer_response_tie") is True,
        *(None if r.get(k) is None else float(r[k]) for k in SOFT_TARGET_FIELDS))


def _build_hh(r: dict, origin: str) -> PreferencePair:
    prompt, chosen, rejected = split_hh_transcripts(r["chosen"], r["rejected"])
    return PreferencePair(prompt, chosen, rejected, None, None, origin)


def _build_trl(r: dict, origin: str) -> PreferencePair:
    return PreferencePair(as_prompt(r["prompt"]), as_reply(r["chosen"]), as_reply(r["rejected"]),
                          r.get("chosen_is_safe"), r.get("rejected_is_safe"), origin,
                          parse_ended(r.get("chosen_ended")), parse_ended(r.get("rejected_ended")))


def _build_pair(r: dict, origin: str) -> ResponsePair:
    return ResponsePair(as_prompt(r["prompt"]), r["response_0"], r["response_1"], r.get("response_0_source"),
                        r.get("response_1_source"), origin, parse_ended(r.get("ended_0")), parse_ended(r.get("ended_1")))


def instruction_prompt(r: dict) -> str:
    """The prompt of an Alpaca-style record: ``instruction``, then ``"\n\n" + input`` when input is not empty."""
    extra = r.get("input")
    return r["instruction"] + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")


def _alpaca_issues(rec: dict) -> list[Issue]:
    return V.require_text(rec, "instruction") + V.optional_str(rec, "input") + V.require_text(rec, "output")


def _build_prompt(r: dict, origin: str) -> PromptRecord:
    return PromptRecord(as_prompt(r["prompt"]), _canonical_category(r.get("category")), r.get("label"),
                        r.get("source") or "prompts-jsonl", origin, r.get("kind") or None)


# format -> (rule: raw record -> issues, builder: valid raw record + origin -> record object).
# BeaverTails-Evaluation and the paper's 83 prompts are all red-team prompts: label "unsafe".
_FORMATS: dict[str, tuple[Callable[[dict], list[Issue]], Callable[[dict, str], Any]]] = {
    "pku-saferlhf": (V.pku_issues, _build_pku),
    "hh-rlhf": (V.hh_issues, _build_hh),
    "trl-preference": (V.trl_issues, _build_trl),
    "beavertails-evaluation": (V.beavertails_issues, lambda r, o: PromptRecord(
        r["prompt"], _canonical_category(r["category"]), "unsafe", "beavertails-evaluation", o)),
    "safe-rlhf-eval-prompts": (V.eval_prompt_issues, lambda r, o: PromptRecord(
        r["prompt"], r["category"], "unsafe", "safe-rlhf-eval-prompts", o)),
    "xstest": (V.xstest_issues, lambda r, o: PromptRecord(r["prompt"], r["type"], r["label"], "xstest", o)),
    "prompts-jsonl": (V.prompt_issues, _build_prompt),
    "sft-jsonl": (V.sft_issues, lambda r, o: SFTRecord(as_prompt(r["prompt"]), as_reply(r["response"]), o,
                                                       parse_ended(r.get("ended")))),
    "sft-messages": (V.sft_messages_issues, lambda r, o: SFTRecord(as_prompt(r["messages"][:-1]),
                                                                   r["messages"][-1]["content"], o,
                                                                   parse_ended(r.get("ended")))),
    "response-pairs": (V.response_pair_issues, _build_pair),
    "sft-alpaca": (_alpaca_issues, lambda r, o: SFTRecord(instruction_prompt(r), r["output"], o)),
}


# --------------------------------------------------------------------------- loading


def read_records(path: str | Path, fmt: str, columns: Any = None) -> Loaded[Any]:
    """Every valid record of ``path`` read as format ``fmt``; problems in ``.report``, by line (never raises
    for bad records; raises for a file that holds none, see ``saferlhf.data.readers``). ``columns``: the
    ``labelled.LabelColumns`` of a ``labelled-responses`` file (None: auto)."""
    if fmt in _EXTERNAL:
        return _EXTERNAL[fmt].read(path, columns)
    rule, build = _FORMATS[fmt]
    name = display_name(path)
    report, kept = LoadReport(name, fmt), []
    for line, row in iter_rows(path):
        report.n_records += 1
        issues = [Issue("record", row)] if isinstance(row, str) else rule(row)
        report.problems += [Problem(name, line, i.field, i.reason, i.severity) for i in issues]
        if all(i.severity == "warning" for i in issues):
            kept.append(build(row, f"{name}:{line}"))
    duplicates = find_duplicates(kept)
    contradictory = {f"{p.file}:{p.line}" for p in duplicates if p.severity == "error"}
    kept = [r for r in kept if r.origin not in contradictory]
    report.problems = sorted(report.problems + duplicates, key=lambda p: p.line)
    report.n_kept, report.n_duplicates = len(kept), sum(p.severity == "warning" for p in duplicates)
    return _loaded(kept, report)


def _finish(records: Loaded[T], on_error: OnError) -> Loaded[T]:
    report = records.report
    if report.errors and (on_error == "raise" or not records):
        raise DataValidationError(report.errors, V.DROP_HINT if on_error == "raise" else "(no valid record left)")
    if report.n_dropped:
        log.warning(report.summary())
    return records


def _resolve_format(path: str | Path, format: str | None, allowed: tuple[str, ...], what: str) -> str:
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise UnknownFormatError(f"unknown format {fmt!r} (known formats: {', '.join(FORMATS)})")
    if fmt not in allowed:
        raise UnknownFormatError(f"{display_name(path)}: a {fmt!r} file, but {what} reads {', '.join(allowed)}")
    return fmt


def _check(on_error: str, kind: str = "reward") -> None:
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    if kind not in ("reward", "cost"):
        raise ValueError(f"kind must be 'reward' or 'cost', got {kind!r}")


def load_any(path: str | Path, format: str | None = None, columns: Any = None) -> tuple[Loaded[Any], LoadReport]:
    """Valid records of any format (its own record type) and the report; used by ``check_file``. ``columns``: the
    ``labelled.LabelColumns`` of a ``labelled-responses`` file."""
    records = read_records(path, _resolve_format(path, format, FORMATS, "load_any"), columns)
    return records, records.report


def load_safety_preferences(path: str | Path, on_error: OnError = "raise", *,
                            format: str | None = None) -> Loaded[SafetyPreference]:
    """PKU-SafeRLHF records (v0 or v1.0 fields) from json / jsonl / parquet / a hub name."""
    _check(on_error)
    fmt = _resolve_format(path, format, ("pku-saferlhf",), "load_safety_preferences")
    return _finish(read_records(path, fmt), on_error)


def load_preference_pairs(path: str | Path, kind: PairKind = "reward", on_error: OnError = "raise", *,
                          format: str | None = None) -> Loaded[PreferencePair]:
    """Preference pairs for a reward (``kind="reward"``) or cost (``kind="cost"``) model.

    PKU-SafeRLHF: reward pairs by ``better_response_id``; cost pairs by ``safer_response_id``
    (chosen = the SAFER response), with both pairs' safety labels. A record whose answer to that question is a
    tie (``better_response_tie`` / ``safer_response_tie``: `saferlhf annotate export --ties keep`) has no
    preference and gives no pair (counted in a logged line). HH-RLHF and TRL files: the file's
    chosen is the preferred response for either kind (for cost: the less harmful one, a ranking only;
    safety labels None unless a TRL file has ``chosen_is_safe`` / ``rejected_is_safe``).
    """
    _check(on_error, kind)
    fmt = _resolve_format(path, format, PREFERENCE_FORMATS, "load_preference_pairs")
    records = _finish(read_records(path, fmt), on_error)
    if fmt == "pku-saferlhf":
        ties = sum(r.is_tie(kind) for r in records)
        if ties:
            question = "helpfulness" if kind == "reward" else "harmlessness"
            log.warning(f"{display_name(path)}: {ties} records with a {question} tie give no {kind} pair")
        return _loaded((r.pair(kind) for r in records if not r.is_tie(kind)), records.report)
    return records


def load_hh_rlhf(path: str | Path, on_error: OnError = "raise") -> Loaded[PreferencePair]:
    """Anthropic HH-RLHF ``{chosen, rejected}`` transcripts (.jsonl / .jsonl.gz / hub) as pairs."""
    _check(on_error)
    return _finish(read_records(path, "hh-rlhf"), on_error)


def load_prompts(path: str | Path, on_error: OnError = "raise", *,
                 format: str | None = None) -> Loaded[PromptRecord]:
    """Prompts from BeaverTails-Evaluation, the paper's 83 prompts, XSTest, a prompts jsonl, or the
    prompts of a preference / SFT / labelled file (category and label None, source = its format; a labelled
    file's prompts whatever its labels say)."""
    _check(on_error)
    fmt = _resolve_format(path, format, FORMATS, "load_prompts")
    records = _finish(_EXTERNAL[fmt].prompts(path) if fmt in _EXTERNAL else read_records(path, fmt), on_error)
    if fmt in PROMPT_FORMATS:
        return records
    return _loaded((PromptRecord(r.prompt, source=fmt, origin=r.origin) for r in records), records.report)


# Column names tried, in order, when a prompt file's columns are not named (first match wins).
PROMPT_COLUMNS = ("prompt", "question", "instruction", "input", "query", "goal", "behavior", "text", "request")
CATEGORY_COLUMNS = ("category", "harm_category", "type", "category_name", "subcategory")


def load_prompt_table(path: str | Path, prompt_column: str | None = None, category_column: str | None = None,
                      *, on_duplicate: Literal["drop", "keep"] = "drop",
                      on_error: OnError = "raise") -> Loaded[PromptRecord]:
    """Prompts from ANY CSV / JSON / JSONL / parquet file with a prompt column (and optionally a category column).

    With no column given, a file of a known format loads as `load_prompts` does (a prompt file as it is; the
    prompts of a preference / SFT file, duplicates dropped); otherwise the prompt column is ``prompt_column``
    or the first of `PROMPT_COLUMNS` the file has, the category column ``category_column`` or the first of
    `CATEGORY_COLUMNS`. A named column the file lacks, or no prompt column at all, is a ``DataFileError``
    that lists the file's columns. An unreadable record (malformed JSON, a ragged or unbalanced CSV row, bytes
    that are not UTF-8) and a prompt that is not text (a number, a list) are errors naming ``file:line:
    field`` (``on_error="drop"``: dropped and counted). Empty prompts are dropped and duplicates (after
    stripping) dropped (``on_duplicate="keep"``: kept), each with a warning naming file and line in ``.report``;
    a logged summary says how many were dropped.
    """
    _check(on_error)
    fmt = None
    if prompt_column is None and category_column is None:
        with contextlib.suppress(UnknownFormatError):  # of no known format: read as a table
            fmt = detect_format(path)
    if fmt is not None:
        records = load_prompts(path, on_error, format=fmt)
        return records if fmt in PROMPT_FORMATS else _unique_prompts(records, on_duplicate)
    name = display_name(path)
    rows, report = _table_rows(path)
    columns = list(dict.fromkeys(k for _, r in rows[:1000] for k in r))
    pcol = _pick_column(name, columns, prompt_column, PROMPT_COLUMNS, "--prompt_column")
    if pcol is None:
        raise DataFileError(f"{name}: no prompt column found (tried {', '.join(PROMPT_COLUMNS)}); the file's "
                            f"columns: {', '.join(columns)}; name one with --prompt_column")
    ccol = _pick_column(name, columns, category_column, CATEGORY_COLUMNS, "--category_column")
    report.format = f"table:{pcol}" + (f"/{ccol}" if ccol else "")
    out = []
    for line, r in rows:
        issue = _table_prompt_issue(r.get(pcol))
        if issue:
            report.problems.append(Problem(name, line, pcol, issue.reason, issue.severity))
            continue
        category = r.get(ccol) if ccol else None
        category = (str(category).strip() or None) if category is not None else None
        out.append(PromptRecord(r[pcol].strip(), _canonical_category(category) if category else None, None,
                                report.format, f"{name}:{line}"))
    if not out and not report.errors:
        raise DataFileError(f"{name}: column {pcol!r} holds no non-empty prompt")
    return _unique_prompts(_finish_table(out, report, on_error), on_duplicate, pcol)


def _table_rows(path: str | Path) -> tuple[list[tuple[int, dict]], LoadReport]:
    """The readable rows of ``path`` and a report holding an error per unreadable one (raised at once when no
    row is readable: its columns could not be told)."""
    name = display_name(path)
    report, rows = LoadReport(name, "table"), []
    for line, row in iter_rows(path):
        report.n_records += 1
        if isinstance(row, str):
            report.problems.append(Problem(name, line, "record", row))
        else:
            rows.append((line, row))
    if not rows:
        raise DataValidationError(report.errors, "(no readable record)")
    return rows, report


def _pick_column(name: str, columns: list[str], given: str | None, candidates: tuple[str, ...],
                 what: str) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataFileError(f"{name}: no column {given!r} ({what}); the file's columns: "
                                f"{', '.join(columns) or 'none'}")
        return given
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


def _table_prompt_issue(value: Any) -> Issue | None:
    """Why a prompt cell is not used: empty (a warning: dropped) or not text (an error)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return Issue("", "empty prompt (dropped)", "warning")
    if not isinstance(value, str):
        return Issue("", f"expected text, got {V._short(value)} ({type(value).__name__})")
    reason = V.bad_text(value)
    return Issue("", reason) if reason else None


TABLE_NOTE = "(every line of a prompt file is read: fix these lines, or remove them)"


def _finish_table(out: list[PromptRecord], report: LoadReport, on_error: OnError) -> Loaded[PromptRecord]:
    report.n_kept = len(out)
    report.problems.sort(key=lambda p: p.line)
    if report.errors and (on_error == "raise" or not out):
        raise DataValidationError(report.errors, TABLE_NOTE if on_error == "raise" else "(no valid record left)")
    return _loaded(out, report)


def _unique_prompts(records: Loaded[PromptRecord], on_duplicate: Literal["drop", "keep"],
                    field: str = "prompt") -> Loaded[PromptRecord]:
    """``records`` with repeated prompts (after stripping) dropped (``on_duplicate="keep"``: kept), each a
    warning in the report; a one-line summary is logged when any record was left out."""
    report, seen, out = records.report, {}, []
    for r in records:
        text, (file, line) = r.prompt.strip(), V.origin_location(r.origin)
        if text in seen:
            report.n_duplicates += 1
            action = "dropped" if on_duplicate == "drop" else "kept"
            report.problems.append(Problem(file, line, field, f"duplicate of line {seen[text]} ({action})", "warning"))
            if on_duplicate == "drop":
                continue
        seen.setdefault(text, line)
        out.append(r)
    report.n_kept = len(out)
    report.problems.sort(key=lambda p: p.line)
    if report.n_dropped:
        log.warning(report.summary())
    return _loaded(out, report)


def sft_response(record: Any) -> str | None:
    """The response a preference record contributes to SFT: HH-RLHF / TRL: ``chosen``; PKU-SafeRLHF: the better
    response when it is safe, else the safer one when it is safe, else none (no unsafe answer is imitated)."""
    if isinstance(record, SafetyPreference):
        for i in (record.better_response_id, record.safer_response_id):
            if record.is_safe(i):
                return record.response(i)
        return None
    return record.chosen


def load_sft_records(path: str | Path, on_error: OnError = "raise", *,
                     format: str | None = None) -> Loaded[SFTRecord]:
    """(prompt, response) records for supervised fine-tuning: an SFT file, or a preference file (PKU-SafeRLHF,
    HH-RLHF, TRL) read through `sft_response`; its records without a usable response are left out and counted
    in the report's warnings."""
    _check(on_error)
    fmt = _resolve_format(path, format, SFT_FORMATS + PREFERENCE_FORMATS + INSTRUCTION_FORMATS, "load_sft_records")
    records = _finish(read_records(path, fmt), on_error)
    if fmt in SFT_FORMATS + INSTRUCTION_FORMATS:
        return records
    out = []
    for r in records:
        response = sft_response(r)
        if response is None:
            records.report.problems.append(V.Problem.at(r, "response", "both responses unsafe: nothing to imitate "
                                                        "(left out)", "warning"))
        else:
            out.append(SFTRecord(r.prompt, response, r.origin))
    records.report.n_kept = len(out)
    if not out:
        raise DataFileError(f"{path}: no record with a safe response to fine-tune on")
    return _loaded(out, records.report)


def load_response_pairs(path: str | Path, on_error: OnError = "raise", *,
                        format: str | None = None) -> Loaded[ResponsePair]:
    """Unlabelled (prompt, response_0, response_1) pairs: a ``saferlhf generate --sampling.n 2`` file, or the
    responses of a PKU-SafeRLHF file (its labels are not read). An empty or identical response is a
    warning (kept)."""
    _check(on_error)
    _resolve_format(path, format, PAIR_FORMATS + ("pku-saferlhf",), "load_response_pairs")
    return _finish(read_records(path, "response-pairs"), on_error)


# --------------------------------------------------------------------------- counts for `data check`


def count_records(fmt: str, records: list[Any]) -> dict[str, Any]:
    """What a file holds: pairs derivable, safety labels, categories (for ``saferlhf data check``)."""
    counts: dict[str, Any] = {}
    if fmt in PREFERENCE_FORMATS:
        counts["reward pairs"] = len(records)
        counts["cost pairs" + ("" if fmt == "pku-saferlhf" else " (ranking only)")] = len(records)
    if fmt == "pku-saferlhf":
        counts |= _pku_counts(records)
    if fmt == "response-pairs":
        counts["response pairs"] = len(records)
        counts["pairs with an empty response"] = sum(not (r.response_0.strip() and r.response_1.strip())
                                                     for r in records) or {}
    if fmt == "hh-rlhf":
        counts["multi-turn prompts"] = sum("\n\nAssistant:" in r.prompt for r in records)
    if fmt in PROMPT_FORMATS:
        counts["categories"] = _sorted_counts(r.category for r in records if r.category)
        counts["labels"] = _sorted_counts(r.label for r in records if r.label)
    if fmt in _EXTERNAL:
        counts |= _EXTERNAL[fmt].counts(records)
    if fmt in INSTRUCTION_FORMATS:
        counts["distinct prompts"] = len({str(r.prompt).strip() for r in records})
    return {k: v for k, v in counts.items() if v != {}}


def _pku_counts(records: list[SafetyPreference]) -> dict[str, Any]:
    safe = [r.is_safe(i) for r in records for i in (0, 1)]
    mix = Counter({2: "both safe", 1: "one safe", 0: "both unsafe"}[r.is_safe(0) + r.is_safe(1)] for r in records)
    cats = [c for r in records for c in (r.response_0_harm_category, r.response_1_harm_category) if c]
    severities = [s for r in records for s in (r.response_0_severity_level, r.response_1_severity_level)]
    return {
        "safe responses": sum(safe),
        "unsafe responses": len(safe) - sum(safe),
        "pairs by safety": dict(mix.most_common()),
        "harm categories (PKU v1)": _sorted_counts(k for c in cats for k, v in c.items() if v),
        "harm categories (BeaverTails)": _sorted_counts(k for c in cats for k, v in to_beavertails(c).items() if v),
        "severity levels": {str(k): v for k, v in sorted(Counter(s for s in severities if s is not None).items())},
    }


def _sorted_counts(items: Iterable[str]) -> dict[str, int]:
    return dict(Counter(items).most_common())


def check_file(path: str | Path, format: str | None = None, columns: Any = None) -> CheckReport:
    """Validate a data file: detect (or force) its format, load it keeping valid records, count. ``columns``: the
    ``labelled.LabelColumns`` of a ``labelled-responses`` file (None: auto)."""
    records, report = load_any(path, format=format, columns=columns)
    counts = count_records(report.format, records)
    if report.n_duplicates:
        counts["duplicate records (kept)"] = report.n_duplicates
    return CheckReport(report.path, report.format, report.n_records, report.n_kept, counts, report.problems)


__all__ = [
    "FORMATS", "INSTRUCTION_FORMATS", "LABEL_FORMATS", "PAIR_FORMATS", "PREFERENCE_FORMATS", "PROMPT_FORMATS",
    "SFT_FORMATS", "ExternalFormat", "Loaded", "check_file", "count_records", "detect_format", "display_name",
    "first_column", "format_from_keys", "guardreasoner_label", "guardreasoner_parts", "instruction_format",
    "instruction_prompt", "is_guardreasoner", "is_hub_name", "iter_rows", "label_format", "load_any", "load_hh_rlhf",
    "load_preference_pairs", "load_prompt_table", "load_prompts", "load_response_pairs", "load_safety_preferences",
    "load_sft_records", "looks_like_xstest", "read_records", "register_format",
]
