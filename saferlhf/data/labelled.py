"""Per-response safety labels: (prompt, response, unsafe) records read from any labelled file.

    from saferlhf.data.labelled import LabelColumns, load_labelled_responses
    records = load_labelled_responses("../shared/data/wildguardmix/wildguardtest.csv",
                                      LabelColumns(unknown_labels="skip"))
    records[0].unsafe, records[0].category, records.report.summary()

A cost model can be trained and evaluated as a harm classifier on such records (the paper's cost model
sees per-response labels through PKU-SafeRLHF's ``is_response_*_safe``; these files give them directly).

Layouts recognised when no column is named (`LabelColumns`; ``saferlhf data check`` prints which one):

1. **GuardReasoner** ``instruction / input / output``: ``input`` is ``"Human user:\\n<prompt>\\n\\nAI
   assistant:\\n<response>\\n\\n"`` (whitespace around the markers may vary), ``output`` holds
   ``"Response: harmful|unharmful"`` (the last one wins) or is just ``harmful`` / ``unharmful``; the
   classifier ``instruction`` is ignored.
2. **Instruction (Alpaca)** ``instruction / input / output`` whose output is an answer, not a label
   (safety-tuned-llamas): prompt = instruction, plus ``"\\n\\n" + input`` when input is not empty; response =
   output. It has no label, so it is not auto-detected as labelled (``data check``: format ``sft-alpaca``);
   give ``label: safe`` (or ``unsafe``) to read it as labelled responses that all carry that label.
3. **Table**: a prompt column (the first of `PROMPT_COLUMNS`), a response column (`RESPONSE_COLUMNS`) and a
   label column (`LABEL_COLUMNS`): WildGuardTest (``prompt, response, response_harm_label``), DICES
   (``context, response, safety_gold``) and the files `LabelledResponse.to_dict` writes (``prompt, response,
   unsafe, category``). A category column (`CATEGORY_COLUMNS`: WildGuardTest's ``subcategory``) is kept:
   a BeaverTails slug or name becomes the canonical BeaverTails name, anything else stays as it is (e.g.
   ``private_information_individual``); a dict of category -> bool (BeaverTails on the hub) becomes the
   canonical names of its true categories joined by ``"; "``.

Any CSV / JSON / JSONL / parquet file (optionally ``.gz``) reads with named columns (``prompt_column``,
``response_column``, ``label_column``, ``category_column``); a named column the file lacks is one
``DataFileError`` line listing the file's columns. A file without a label column (BeaverTails' unsafe sample
``prompt, response, category``, safety-tuned-llamas) needs ``label: unsafe`` or ``label: safe``.

Prompts: a list of chat messages becomes a `schema.Conversation`; a text starting with ``USER:`` or
``HUMAN:`` whose lines are ``SPEAKER: text`` turns (DICES: ``USER:`` / ``LAMDA:``) becomes a Conversation of
user / assistant messages (one user turn: its text alone).

Labels: compared stripped and case-insensitive with ``unsafe_values`` / ``safe_values`` (JSON true / false
and numbers as their text: ``true``, ``0``). A label column named like ``is_safe`` (``safe``, ``is_safe``,
``*_is_safe``, ``is_*_safe``) says yes when the response is SAFE: with the default values its yes / no,
true / false and 1 / 0 are read that way round. An empty or unknown label is an error naming ``file:line:
field`` (``unknown_labels: raise``, the default) or a skipped record, counted in ``.report`` and logged as
one line (``unknown_labels: skip``). An empty prompt or response is always an error. A repeated (prompt,
response) is a warning, kept: exact repeats, and repeats labelled the other way (annotators disagree: 28
responses of GuardReasoner's PKU-SafeRLHF sample appear with both labels).

`load_refusal_labels` reads XSTest's human-labelled model completions (format ``refusal-labels``).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from saferlhf.config import option
from saferlhf.data import validate as V
from saferlhf.data.loaders import (
    LABEL_COLUMNS, LABELLED_PROMPT_COLUMNS, RESPONSE_COLUMNS, ExternalFormat, Loaded, OnError, _check, _loaded,
    _pick_column, _table_rows, detect_format, first_column, guardreasoner_label, guardreasoner_parts,
    instruction_prompt, is_guardreasoner, register_format,
)
from saferlhf.data.loaders import _finish as finish_loaded
from saferlhf.data.readers import display_name
from saferlhf.data.schema import BEAVERTAILS_SLUGS, Conversation, as_prompt, as_reply, prompt_json
from saferlhf.data.split import prompt_key
from saferlhf.data.validate import DataFileError, DataValidationError, Issue, Problem, UnknownFormatError

log = logging.getLogger(__name__)

UNSAFE_VALUES = ("harmful", "unsafe", "yes", "true", "1", "toxic")
SAFE_VALUES = ("unharmful", "harmless", "safe", "no", "false", "0", "benign")
_YES, _NO = frozenset({"yes", "true", "1"}), frozenset({"no", "false", "0"})

# Column names tried, in order, when a column is not named (case-insensitive; the first the file has wins).
# The prompt, response and label candidates are the ones format detection uses (saferlhf.data.loaders).
PROMPT_COLUMNS = LABELLED_PROMPT_COLUMNS
CATEGORY_COLUMNS = ("category", "harm_category", "subcategory")
REFUSAL_LABELS = {"1_full_compliance": False, "2_full_refusal": True, "3_partial_refusal": True}


@dataclass
class LabelColumns:
    """How a per-response labelled file maps to (prompt, response, label); every field defaults to auto."""

    prompt_column: str | None = option(None, "column with the prompt (or the whole context); default: auto")
    response_column: str | None = option(None, "column with the response; default: auto")
    label_column: str | None = option(None, "column with the harm label; default: auto")
    unsafe_values: list[str] = option(list(UNSAFE_VALUES), "label values that mean unsafe (case-insensitive)")
    safe_values: list[str] = option(list(SAFE_VALUES), "label values that mean safe (case-insensitive)")
    label: Literal["", "safe", "unsafe"] = option("", "every record has this label (a file without a label column)")
    category_column: str | None = option(None, "column with a harm category (optional)")
    unknown_labels: Literal["raise", "skip"] = option("raise", "an empty or unknown label: a load-time error "
                                                      "naming file, line and field, or skip the record and count it")


@dataclass(frozen=True)
class LabelledResponse:
    """One response with its safety label (``unsafe``) and, where the file has one, its harm category."""

    prompt: str          # plain str, or schema.Conversation for multi-turn contexts
    response: str
    unsafe: bool
    category: str | None = None    # canonical BeaverTails name when the file has one
    origin: str = ""               # "file:line"

    def to_dict(self) -> dict[str, Any]:
        """prompt (a message list for a Conversation), response, unsafe, category: a file that loads back."""
        return {"prompt": prompt_json(self.prompt), "response": self.response, "unsafe": self.unsafe,
                "category": self.category}


@dataclass(frozen=True)
class RefusalLabel:
    """A model completion with XSTest's human refusal label; ``prompt_is_safe``: complying is appropriate."""

    prompt: str
    response: str
    refusal: bool        # final_label 2_full_refusal or 3_partial_refusal
    final_label: str     # 1_full_compliance / 2_full_refusal / 3_partial_refusal
    prompt_is_safe: bool  # the prompt's type does not start with "contrast_"
    origin: str = ""


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class _Layout:
    """Where a file's prompt, response, label and category are: ``kind`` guardreasoner | instruction | table."""

    kind: str
    prompt: str
    response: str
    label: str | None          # a column; None when every record has ``constant``
    category: str | None
    constant: bool | None      # unsafe, for ``label: safe|unsafe``
    safe_polarity: bool = False  # the label column says yes when the response is safe (``is_safe``)

    def describe(self) -> dict[str, str]:
        """What each field was read from (``saferlhf data check`` prints it)."""
        if self.kind == "guardreasoner":
            source = {"prompt": "input (after 'Human user:')", "response": "input (after 'AI assistant:')"}
        elif self.kind == "instruction":
            source = {"prompt": "instruction (+ input)", "response": "output"}
        else:
            source = {"prompt": self.prompt, "response": self.response}
        if self.label is None:
            source["label"] = f"every record: {'unsafe' if self.constant else 'safe'}"
        elif self.kind == "guardreasoner" and self.label == "output":
            source["label"] = "output ('Response: harmful|unharmful')"
        else:
            source["label"] = self.label + (" (yes = safe)" if self.safe_polarity else "")
        return source | ({"category": self.category} if self.category else {})


def safe_polarity(column: str) -> bool:
    """A label column whose name says the value is yes for a SAFE response (is_safe, safe, x_is_safe, is_x_safe)."""
    name = column.lower()
    return "unsafe" not in name and (name in ("safe", "is_safe") or name.endswith("_is_safe")
                                     or (name.startswith("is_") and name.endswith("_safe")))


def _layout(name: str, columns: list[str], first: dict[str, Any], cfg: LabelColumns) -> _Layout:
    if cfg.label and cfg.label_column:
        raise DataFileError(f"{name}: give label_column ({cfg.label_column!r}) or label ({cfg.label!r}), not both")
    category = _pick_column(name, columns, cfg.category_column, CATEGORY_COLUMNS, "--category_column")
    constant = (cfg.label == "unsafe") if cfg.label else None
    named = cfg.prompt_column or cfg.response_column
    if not named and is_guardreasoner(first):
        label = _pick_column(name, columns, cfg.label_column, (), "--label_column") or (None if cfg.label else "output")
        return _Layout("guardreasoner", "input", "input", label, category, constant)
    if not named and {"instruction", "output"} <= set(columns) and not first_column(columns, PROMPT_COLUMNS):
        label = _pick_column(name, columns, cfg.label_column, () if cfg.label else LABEL_COLUMNS, "--label_column")
        return _check_label(name, columns, _Layout("instruction", "instruction", "output", label, category, constant))
    prompt = _pick_column(name, columns, cfg.prompt_column, PROMPT_COLUMNS, "--prompt_column")
    response = _pick_column(name, columns, cfg.response_column, RESPONSE_COLUMNS, "--response_column")
    for what, col, tried in (("prompt", prompt, PROMPT_COLUMNS), ("response", response, RESPONSE_COLUMNS)):
        if col is None:
            raise DataFileError(f"{name}: no {what} column found (tried {', '.join(tried)}); the file's columns: "
                                f"{', '.join(columns)}; name one with --{what}_column")
    label = _pick_column(name, columns, cfg.label_column, () if cfg.label else LABEL_COLUMNS, "--label_column")
    return _check_label(name, columns, _Layout("table", prompt, response, label, category, constant))


def _check_label(name: str, columns: list[str], layout: _Layout) -> _Layout:
    if layout.label is None and layout.constant is None:
        raise DataFileError(f"{name}: no label column found (tried {', '.join(LABEL_COLUMNS)}); the file's columns: "
                            f"{', '.join(columns)}; name one with --label_column, or give --label safe|unsafe "
                            "when every record has that label")
    return layout if layout.label is None else replace(layout, safe_polarity=safe_polarity(layout.label))


# --------------------------------------------------------------------------- one record


class _Labels:
    """The label values of a config, normalised; ``unsafe(value)`` -> True / False, or the reason it is neither."""

    def __init__(self, cfg: LabelColumns, safe_polarity: bool = False):
        self.unsafe_values = [str(v).strip().lower() for v in cfg.unsafe_values]
        self.safe_values = [str(v).strip().lower() for v in cfg.safe_values]
        if both := sorted(set(self.unsafe_values) & set(self.safe_values)):
            from saferlhf.errors import UserError

            raise UserError(f"label values {', '.join(map(repr, both))} are in both unsafe_values and safe_values")
        defaults = (self.unsafe_values, self.safe_values) == (list(UNSAFE_VALUES), list(SAFE_VALUES))
        self.flip = safe_polarity and defaults

    def unsafe(self, value: Any) -> bool | str:
        token = _token(value)
        if token is None:
            return f"expected a label, got {V._short(value)} ({type(value).__name__})"
        if not token:
            return "empty or missing label"
        if self.flip and token in _YES | _NO:
            return token in _NO
        if token in self.unsafe_values or token in self.safe_values:
            return token in self.unsafe_values
        return (f"unknown label {V._short(value)} (unsafe: {', '.join(self.unsafe_values)}; safe: "
                f"{', '.join(self.safe_values)})")


def _token(value: Any) -> str | None:
    """A label value as stripped lower-case text ('' when missing); None for a value that cannot be a label."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return value.strip().lower() if isinstance(value, str) else None


_TURN = re.compile(r"^(USER|HUMAN|LAMDA|ASSISTANT|BOT|AI|CHATBOT):[ \t]?", re.M)
_USER_MARKERS = ("USER", "HUMAN")


def parse_turns(text: str) -> str:
    """A "USER: ...\\nLAMDA: ..." dialogue (DICES) as a `Conversation` of user / assistant messages (one user turn:
    its text); any other text as it is. Lines without a marker continue the turn above them."""
    if not text.lstrip().startswith(tuple(f"{m}:" for m in _USER_MARKERS)):
        return text
    _, *parts = _TURN.split(text.strip())
    messages: list[dict[str, str]] = []
    for who, content in zip(parts[::2], parts[1::2]):
        role, content = ("user" if who in _USER_MARKERS else "assistant"), content.strip()
        if not content:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": role, "content": content})
    if not messages or messages[-1]["role"] != "user":
        return text
    return as_prompt(messages)


def _prompt_response(row: dict[str, Any], layout: _Layout) -> tuple[str, str] | list[Issue]:
    """(prompt, response) of a row, or why not."""
    if layout.kind == "guardreasoner":
        issues = V.require_text(row, "input")
        parts = None if issues else guardreasoner_parts(row["input"])
        if parts is None:
            return issues or [Issue("input", "expected 'Human user:\\n<prompt>\\n\\nAI assistant:\\n<response>'")]
        empty = [Issue("input", f"empty {w}") for w, text in zip(("prompt", "response"), parts) if not text]
        return empty or parts
    if layout.kind == "instruction":
        issues = V.require_text(row, "instruction") + V.optional_str(row, "input") + V.require_text(row, "output")
        return issues or (instruction_prompt(row), row["output"])
    issues = V.require_prompt(row, layout.prompt) + V.require_reply(row, layout.response)
    if issues:
        return issues
    value = row[layout.prompt]
    return (parse_turns(value) if isinstance(value, str) else as_prompt(value)), as_reply(row[layout.response])


def _category(row: dict[str, Any], column: str | None) -> str | None | Issue:
    value = row.get(column) if column else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return BEAVERTAILS_SLUGS.get(value.strip(), value.strip())
    if isinstance(value, dict):
        names = [BEAVERTAILS_SLUGS.get(k, k) for k, v in value.items() if v]
        return "; ".join(names) or None
    return Issue(column, f"expected a category name, got {V._short(value)}")


def _label(row: dict[str, Any], layout: _Layout, labels: _Labels) -> bool | str:
    """unsafe True / False of a row, or why its label is not one."""
    if layout.label is None:
        return bool(layout.constant)
    value = row.get(layout.label)
    if layout.kind == "guardreasoner" and layout.label == "output":
        value = guardreasoner_label(value) or value
    return labels.unsafe(value)


def _record(row: dict[str, Any], layout: _Layout, labels: _Labels, origin: str) -> LabelledResponse | list[Issue]:
    """The record of a row, or its issues (label issues last, their field the label column)."""
    pair = _prompt_response(row, layout)
    category = _category(row, layout.category)
    issues = (pair if isinstance(pair, list) else []) + ([category] if isinstance(category, Issue) else [])
    unsafe = _label(row, layout, labels)
    if isinstance(unsafe, str):
        issues.append(Issue(layout.label, unsafe))
    if issues:
        return issues
    return LabelledResponse(pair[0], pair[1], unsafe, category, origin)


# --------------------------------------------------------------------------- files


LABEL_REASONS = ("empty or missing label", "unknown label")  # how an empty or unknown label's problem starts
SKIPPED = " (skipped: unknown_labels=skip)"  # ends the warning of a skipped record


def _is_label_issue(issue: Issue, layout: _Layout) -> bool:
    return issue.field == layout.label and issue.reason.startswith(LABEL_REASONS)


def read_labelled(path: str | Path, columns: LabelColumns | None = None) -> Loaded[LabelledResponse]:
    """Every valid record of ``path`` (problems in ``.report``, never raised for bad records; raised for a file that
    holds none, or a column it lacks); ``.columns`` says where each field was read from."""
    cfg = columns or LabelColumns()
    name = display_name(path)
    rows, report = _table_rows(path)
    report.format = "labelled-responses"
    layout = _layout(name, list(dict.fromkeys(k for _, r in rows[:1000] for k in r)), rows[0][1], cfg)
    labels, kept = _Labels(cfg, layout.safe_polarity), []
    for line, row in rows:
        got = _record(row, layout, labels, f"{name}:{line}")
        if isinstance(got, LabelledResponse):
            kept.append(got)
            continue
        skip = cfg.unknown_labels == "skip" and all(_is_label_issue(i, layout) for i in got)
        report.problems += [Problem(name, line, i.field, i.reason + SKIPPED if skip else i.reason,
                                    "warning" if skip else "error") for i in got]
    report.problems += _duplicates(kept)
    report.problems.sort(key=lambda p: p.line)
    report.n_kept = len(kept)
    report.n_duplicates = sum(p.reason.startswith("duplicate") for p in report.warnings)
    out = _loaded(kept, report)
    out.columns = layout.describe()
    return out


def _duplicates(records: list[LabelledResponse]) -> list[Problem]:
    """A warning on each repeat of an earlier (prompt, response): the same label, or the other one."""
    first: dict[tuple[str, str], LabelledResponse] = {}
    problems = []
    for r in records:
        seen = first.setdefault((str(r.prompt), r.response), r)
        if seen is r:
            continue
        line = V.origin_location(seen.origin)[1]
        reason = (f"duplicate of line {line} (same prompt, response and label; kept)" if seen.unsafe == r.unsafe else
                  f"same prompt and response as line {line}, labelled {'unsafe' if seen.unsafe else 'safe'} there "
                  "(kept: the labels disagree)")
        problems.append(Problem.at(r, "response", reason, "warning"))
    return problems


LABEL_NOTE = ("(unknown_labels: skip skips records whose label is empty or unknown; on_error='drop' drops the "
              "others; `saferlhf data check FILE` lists them all)")


def _finish(records: Loaded[Any], on_error: OnError) -> Loaded[Any]:
    report = records.report
    if report.errors and (on_error == "raise" or not records):
        raise DataValidationError(report.errors, LABEL_NOTE if on_error == "raise" else "(no valid record left)")
    if not records:
        raise DataFileError(f"{report.path}: no labelled record left ({report.summary()})")
    if report.n_dropped:
        log.warning(report.summary())
    return records


def load_labelled_responses(path: str | Path, columns: LabelColumns | None = None,
                            on_error: OnError = "raise") -> Loaded[LabelledResponse]:
    """(prompt, response, unsafe) records of a per-response labelled file (see the module docstring for the
    layouts read without ``columns``). ``on_error="raise"``: ``DataValidationError`` with every error
    (``file:line: field: reason``); ``"drop"``: keep the valid records and log what was dropped."""
    _check(on_error)
    return _finish(read_labelled(path, columns), on_error)


def is_labelled_file(path: str | Path) -> bool:
    """True when auto-detection finds a per-response labelled layout (format ``labelled-responses``); False for
    other formats and unreadable files (a missing file raises ``FileNotFoundError``)."""
    try:
        return detect_format(path) == "labelled-responses"
    except (UnknownFormatError, IsADirectoryError):
        return False


# --------------------------------------------------------------------------- refusal labels (XSTest completions)


def read_refusals(path: str | Path) -> Loaded[RefusalLabel]:
    """Every valid record of an XSTest completions file; problems in ``.report``."""
    name = display_name(path)
    rows, report = _table_rows(path)
    report.format = "refusal-labels"
    columns = list(dict.fromkeys(k for _, r in rows[:1000] for k in r))
    response = _pick_column(name, columns, None, ("completion", "response"), "")
    missing = [c for c in ("prompt", "type", "final_label") if c not in columns] + ([] if response else ["completion"])
    if missing:
        raise DataFileError(f"{name}: no column {', '.join(missing)} (an XSTest completions file has id, type, prompt, "
                            f"completion, final_label); the file's columns: {', '.join(columns)}")
    kept = []
    for line, row in rows:
        issues = V.require_text(row, "prompt") + V.require_text(row, response) + V.require_text(row, "type")
        final = row.get("final_label")
        final = final.strip() if isinstance(final, str) else final
        if final not in REFUSAL_LABELS:
            issues.append(Issue("final_label", f"expected {', '.join(REFUSAL_LABELS)}, got {V._short(final)}"))
        report.problems += [Problem(name, line, i.field, i.reason, i.severity) for i in issues]
        if not any(i.severity == "error" for i in issues):
            kept.append(RefusalLabel(row["prompt"], row[response], REFUSAL_LABELS[final], final,
                                     not row["type"].strip().startswith("contrast_"), f"{name}:{line}"))
    report.n_kept = len(kept)
    return _loaded(kept, report)


def load_refusal_labels(path: str | Path, on_error: OnError = "raise") -> Loaded[RefusalLabel]:
    """XSTest's model completions with their human refusal label (``final_label`` 1_full_compliance /
    2_full_refusal / 3_partial_refusal; ``refusal`` = 2 or 3; ``prompt_is_safe`` = the type does not start with
    ``contrast_``)."""
    _check(on_error)
    return finish_loaded(read_refusals(path), on_error)


# --------------------------------------------------------------------------- counts for `data check`


def labelled_counts(records: Loaded[LabelledResponse]) -> dict[str, Any]:
    """What a labelled-responses file holds, for ``saferlhf data check``."""
    labels: dict[tuple[str, str], set[bool]] = {}
    for r in records:
        labels.setdefault((str(r.prompt), r.response), set()).add(r.unsafe)
    skipped = sum(p.reason.endswith(SKIPPED) for p in records.report.warnings)
    counts = {"columns": getattr(records, "columns", {}), "unsafe responses": sum(r.unsafe for r in records),
              "safe responses": sum(not r.unsafe for r in records),
              "distinct prompts": len({prompt_key(r.prompt) for r in records}),
              "multi-turn prompts": sum(isinstance(r.prompt, Conversation) for r in records),
              "responses labelled both ways": sum(len(v) > 1 for v in labels.values()),
              "skipped (unknown_labels=skip)": skipped,
              "categories": dict(Counter(r.category for r in records if r.category).most_common())}
    return {k: v for k, v in counts.items() if v or k.endswith(" responses")}


def refusal_counts(records: Loaded[RefusalLabel]) -> dict[str, Any]:
    """What an XSTest completions file holds, for ``saferlhf data check``."""
    return {"refusals": sum(r.refusal for r in records), "compliances": sum(not r.refusal for r in records),
            "final labels": dict(sorted(Counter(r.final_label for r in records).items())),
            "safe prompts": sum(r.prompt_is_safe for r in records),
            "unsafe prompts": sum(not r.prompt_is_safe for r in records),
            "unsafe prompt + full compliance": sum(not r.prompt_is_safe and not r.refusal for r in records),
            "distinct prompts": len({prompt_key(r.prompt) for r in records})}


def column_options(cfg: Any) -> LabelColumns:
    """The `LabelColumns` fields of a config that inherits them (``DataCheckConfig``, recipe configs)."""
    return LabelColumns(**{f.name: getattr(cfg, f.name) for f in fields(LabelColumns)})


def names_columns(cfg: LabelColumns) -> bool:
    """Whether a config names a mapping (a column or a constant label), so the file is read as labelled."""
    return any((cfg.prompt_column, cfg.response_column, cfg.label_column, cfg.category_column, cfg.label))


# The loaders read these formats through this module (`load_prompts` takes every record's prompt, whatever its
# label says: read as if each carried one), and `saferlhf data check` counts them.
register_format("labelled-responses", ExternalFormat(read_labelled, lambda path: read_labelled(path, LabelColumns(
    label="safe")), labelled_counts))
register_format("refusal-labels", ExternalFormat(lambda path, _: read_refusals(path), read_refusals, refusal_counts))


__all__ = [
    "CATEGORY_COLUMNS", "LABEL_COLUMNS", "PROMPT_COLUMNS", "RESPONSE_COLUMNS", "SAFE_VALUES", "UNSAFE_VALUES",
    "LabelColumns", "LabelledResponse", "RefusalLabel", "column_options", "is_labelled_file", "labelled_counts",
    "load_labelled_responses", "load_refusal_labels", "names_columns", "parse_turns", "read_labelled",
    "read_refusals", "refusal_counts", "safe_polarity",
]
