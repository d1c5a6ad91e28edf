"""Validation of data records at load time, before any training.

Each format has one rule function ``<format>_issues(record) -> list[Issue]`` that checks a raw record
(a dict read from JSON/CSV/parquet). Loaders turn issues into ``Problem(file, line, field, reason)``.

Two severities:
* ``error``: the record is malformed or contradicts itself (bad JSON/CSV, a missing or mistyped field,
  an empty prompt, identical responses, a "safer" response labelled unsafe while the other is labelled
  safe, ...). ``on_error="raise"`` raises ``DataValidationError`` listing every error of the file;
  ``on_error="drop"`` drops those records and reports what was dropped.
* ``warning``: the record is well formed but carries a weak signal, and public data has it on
  purpose or by accident (HH-RLHF: an empty assistant reply, identical chosen and rejected; an exact
  duplicate of an earlier record). Warned records are kept; ``saferlhf data check`` prints them and
  exits 0 unless ``--strict``.

Text fields must be valid text (``bad_text``: no unpaired surrogate), ids the ints 0 / 1.
Duplicates are found across records after these rules (``saferlhf.data.duplicates``). A file that holds
no record at all raises ``DataFileError`` (a ``UnknownFormatError``) with one line naming the file and
the cause (``saferlhf.data.readers``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from saferlhf.data.schema import (
    BEAVERTAILS_SLUGS, HARM_CATEGORIES, HH_HUMAN, PKU_V1_TO_BEAVERTAILS, ROLES, SOFT_TARGET_FIELDS, as_reply,
    split_hh_transcripts,
)

Severity = Literal["error", "warning"]
MAX_LISTED = 20  # problems spelled out in a DataValidationError message


@dataclass(frozen=True)
class Problem:
    """One problem of a data file; ``str()`` gives ``file:line: field: reason``."""

    file: str
    line: int
    field: str
    reason: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"

    @classmethod
    def at(cls, record: Any, field: str, reason: str, severity: Severity = "error") -> "Problem":
        """A problem of a loaded record, located by its ``origin`` ("file:line"; line 0 when it has none)."""
        return cls(*origin_location(record.origin), field, reason, severity)


def origin_location(origin: str) -> tuple[str, int]:
    """("file", line) of a record's ``origin`` "file:line"; (origin, 0) when it names no line."""
    file, _, line = origin.rpartition(":")
    return (file, int(line)) if line.isdigit() else (origin, 0)


class Issue(NamedTuple):
    """A problem of one record, before the loader knows its file and line."""

    field: str
    reason: str
    severity: Severity = "error"


def list_problems(problems: list[Problem], limit: int = MAX_LISTED) -> str:
    """One problem per line, at most ``limit`` of them, then ``... and N more``."""
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n".join(lines)


DROP_HINT = "(run `saferlhf data check FILE` for the full list; load with on_error='drop' to skip them)"


class DataValidationError(ValueError):
    """Raised at load time with ALL the errors of a file (``.problems``); ``note`` ends the message."""

    def __init__(self, problems: list[Problem], note: str = DROP_HINT):
        self.problems = list(problems)
        files = sorted({p.file for p in self.problems})
        where = files[0] if len(files) == 1 else f"{len(files)} files"
        super().__init__(f"{len(self.problems)} problem(s) in {where}:\n{list_problems(self.problems)}\n{note}")


class UnknownFormatError(ValueError):
    """The format of a data file could not be detected (or a forced format name is unknown), or the file is
    of another kind than the loader reads."""


class DataFileError(UnknownFormatError):
    """A data file that holds no usable record as a whole, with the real cause in one line: empty, not gzip
    though named .gz, binary, not UTF-8, a single JSON value, a CSV header only, a missing column, ..."""


class _ProblemList:
    """``errors`` and ``warnings`` views of a report's ``problems``."""

    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


@dataclass
class LoadReport(_ProblemList):
    """What a loader read: ``problems`` holds errors (dropped records) and warnings (kept records)."""

    path: str
    format: str
    n_records: int = 0
    n_kept: int = 0
    problems: list[Problem] = field(default_factory=list)
    n_duplicates: int = 0  # records repeating an earlier one with the same labels (kept, warned about)

    @property
    def n_dropped(self) -> int:
        return self.n_records - self.n_kept

    def dropped_by_field(self) -> dict[str, int]:
        """Errors counted by field name (a record can have several)."""
        return dict(Counter(p.field for p in self.errors).most_common())

    def summary(self) -> str:
        why = ", ".join(f"{k}: {v}" for k, v in self.dropped_by_field().items())
        text = f"{self.path}: kept {self.n_kept} of {self.n_records} records ({self.format})"
        if self.n_dropped:  # errors, or warnings that drop (empty / duplicate prompts)
            first = (self.errors or self.warnings or ["?"])[0]
            text += f"; dropped {self.n_dropped}" + (f" ({why})" if why else "") + f"; first: {first}"
        if self.warnings:
            text += f"; {len(self.warnings)} warning(s)"
        return text


@dataclass
class CheckReport(_ProblemList):
    """The result of ``check_file``: counts of what the file holds and every problem found."""

    path: str
    format: str
    n_records: int
    n_valid: int
    counts: dict[str, Any]
    problems: list[Problem]



# --------------------------------------------------------------------------- field checks


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def bad_text(text: str) -> str | None:
    """Why ``text`` is not valid Unicode text a tokenizer can take (an unpaired UTF-16 surrogate such as
    JSON's ``"\\ud800"``), or None. Control characters, NUL included, are valid text (tiny models even
    generate them) and pass."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"invalid text: an unpaired surrogate {text[e.start]!r} at position {e.start} (not valid Unicode)"
    return None


def require_text(rec: dict, name: str, empty: Severity = "error") -> list[Issue]:
    """A valid (``bad_text``), non-empty, not whitespace-only string; ``empty``: the severity of an empty one."""
    value = rec.get(name)
    if value is None:
        return [Issue(name, "missing")]
    if not isinstance(value, str):
        return [Issue(name, f"expected a string, got {_short(value)}")]
    if reason := bad_text(value):
        return [Issue(name, reason)]
    return [] if value.strip() else [Issue(name, "empty or whitespace-only", empty)]


def message_issues(value: Any, name: str, last: str) -> list[Issue]:
    """A chat message list (TRL's conversational format): ``{"role", "content"}`` dicts, roles system / user /
    assistant, valid non-empty text contents, the last message's role ``last``."""
    if not isinstance(value, list) or not value:
        return [Issue(name, f"expected a string or a non-empty list of messages, got {_short(value)}")]
    issues = []
    for i, m in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(m, dict) or not {"role", "content"} <= set(m):
            issues.append(Issue(where, f"expected a message {{'role': ..., 'content': ...}}, got {_short(m)}"))
        elif m["role"] not in ROLES:
            issues.append(Issue(f"{where}.role", f"expected one of {', '.join(ROLES)}, got {_short(m['role'])}"))
        else:
            issues += [Issue(f"{where}.content", i.reason, i.severity) for i in require_text(m, "content")]
    if not issues and value[-1]["role"] != last:
        issues.append(Issue(name, f"the last message must be the {last}'s, got a {value[-1]['role']} message"))
    return issues


def require_prompt(rec: dict, name: str = "prompt") -> list[Issue]:
    """A prompt: text (`require_text`) or a message list ending with the user's turn (a multi-turn prompt)."""
    value = rec.get(name)
    return message_issues(value, name, "user") if isinstance(value, list) else require_text(rec, name)


def require_reply(rec: dict, name: str, empty: Severity = "error") -> list[Issue]:
    """A response: text, or TRL's conversational form, a list of exactly one assistant message."""
    value = rec.get(name)
    if not isinstance(value, list):
        return require_text(rec, name, empty)
    if len(value) != 1:
        return [Issue(name, f"expected one assistant message, got a list of {len(value)}")]
    return message_issues(value, name, "assistant")


def require_binary_id(rec: dict, name: str) -> list[Issue]:
    """The int 0 or 1: not a bool (JSON ``true`` is not an id), a float (``1.0``) or a string (``"1"``)."""
    value = rec.get(name)
    if value is None:
        return [Issue(name, "missing")]
    if type(value) is not int or value not in (0, 1):
        return [Issue(name, f"expected 0 or 1, got {_short(value)}")]
    return []


def require_bool(rec: dict, name: str, optional: bool = False) -> list[Issue]:
    value = rec.get(name)
    if value is None:
        return [] if optional else [Issue(name, "missing")]
    return [] if isinstance(value, bool) else [Issue(name, f"expected true or false, got {_short(value)}")]


def optional_ended(rec: dict, *names: str) -> list[Issue]:
    """Ended flags (``schema.parse_ended``): absent, a bool, 0/1 or true/false/yes/no."""
    from saferlhf.data.schema import parse_ended

    issues = []
    for name in names:
        try:
            parse_ended(rec.get(name))
        except ValueError as e:
            issues.append(Issue(name, str(e)))
    return issues


def optional_str(rec: dict, name: str) -> list[Issue]:
    """None, or a valid (``bad_text``) string."""
    value = rec.get(name)
    if value is None:
        return []
    if not isinstance(value, str):
        return [Issue(name, f"expected a string, got {_short(value)}")]
    return [Issue(name, reason)] if (reason := bad_text(value)) else []


def optional_harm_category(rec: dict, name: str) -> list[Issue]:
    """None, or a dict of known category name -> bool (PKU v1 or BeaverTails names)."""
    value = rec.get(name)
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Issue(name, f"expected a dict of category -> bool, got {type(value).__name__}")]
    known = set(PKU_V1_TO_BEAVERTAILS) | set(HARM_CATEGORIES) | set(BEAVERTAILS_SLUGS)
    issues = [Issue(name, f"unknown harm category {_short(k)}") for k in value if k not in known]
    issues += [Issue(name, f"category {k!r}: expected true or false, got {_short(v)}")
               for k, v in value.items() if not isinstance(v, bool)]
    return issues


def optional_severity(rec: dict, name: str) -> list[Issue]:
    value = rec.get(name)
    if value is None:
        return []
    if type(value) is not int or not 0 <= value <= 3:
        return [Issue(name, f"expected an int 0-3, got {_short(value)}")]
    return []


def optional_probability(rec: dict, name: str) -> list[Issue]:
    """Absent (or null), or a number in [0, 1] (an int or float, not a bool; NaN is not one)."""
    value = rec.get(name)
    if value is None:
        return []
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        return [Issue(name, f"expected a probability in [0, 1], got {_short(value)}")]
    return []


def not_a_record(value: Any) -> str:
    return f"expected a JSON object, got {type(value).__name__}"


# --------------------------------------------------------------------------- rules per format


def pku_issues(rec: dict) -> list[Issue]:
    """PKU-SafeRLHF v0/v1: types first, then consistency (identical responses, contradictory labels). The prompt
    may be a message list (files the project annotates from conversations)."""
    issues = require_prompt(rec)
    for k in (0, 1):
        issues += require_text(rec, f"response_{k}")
    issues += require_binary_id(rec, "better_response_id") + require_binary_id(rec, "safer_response_id")
    for k in (0, 1):
        issues += require_bool(rec, f"is_response_{k}_safe")
        issues += optional_harm_category(rec, f"response_{k}_harm_category")
        issues += optional_severity(rec, f"response_{k}_severity_level")
    for name in ("prompt_source", "response_0_source", "response_1_source"):
        issues += optional_str(rec, name)
    issues += optional_ended(rec, "ended_0", "ended_1")
    for name in SOFT_TARGET_FIELDS:  # `annotate export --aggregation soft`
        issues += optional_probability(rec, name)
    return issues or _pku_consistency(rec)


def _pku_consistency(rec: dict) -> list[Issue]:
    if rec["response_0"] == rec["response_1"]:
        return [Issue("response_1", "identical to response_0")]
    safer = rec["safer_response_id"]
    if not rec[f"is_response_{safer}_safe"] and rec[f"is_response_{1 - safer}_safe"]:
        return [Issue("safer_response_id", f"response_{safer} is marked safer but labelled unsafe "
                                           f"while response_{1 - safer} is labelled safe")]
    return []


def hh_issues(rec: dict) -> list[Issue]:
    """HH-RLHF: two transcripts sharing a prompt, differing in the last assistant turn."""
    issues = require_text(rec, "chosen") + require_text(rec, "rejected")
    if issues:
        return issues
    for name in ("chosen", "rejected"):
        if "\n\nAssistant:" not in rec[name]:
            issues.append(Issue(name, "no '\\n\\nAssistant:' turn"))
    return issues or _hh_pair_issues(rec["chosen"], rec["rejected"])


def _hh_pair_issues(chosen: str, rejected: str) -> list[Issue]:
    parts = split_hh_transcripts(chosen, rejected)
    mismatch = Issue("rejected", "prefix does not match chosen: the transcripts differ before their last "
                                 "assistant turn")
    if parts is None or any(HH_HUMAN in reply for reply in parts[1:]):
        return [mismatch]
    prompt, chosen_reply, rejected_reply = parts
    issues = [] if prompt else [Issue("chosen", "empty human turn (no prompt)")]
    if chosen == rejected:
        return issues + [Issue("rejected", "identical to chosen (no preference signal; kept)", "warning")]
    for name, reply in (("chosen", chosen_reply), ("rejected", rejected_reply)):
        if not reply:
            issues.append(Issue(name, "empty assistant reply (kept: in HH-RLHF an empty reply is a real, "
                                      "often the harmless, choice)", "warning"))
    return issues


def trl_issues(rec: dict) -> list[Issue]:
    """TRL preference records: prompt / chosen / rejected strings (or TRL's conversational form: the prompt a
    message list, each response one assistant message), optional safety labels."""
    issues = require_prompt(rec) + require_reply(rec, "chosen") + require_reply(rec, "rejected")
    issues += require_bool(rec, "chosen_is_safe", optional=True) + require_bool(rec, "rejected_is_safe", True)
    issues += optional_ended(rec, "chosen_ended", "rejected_ended")
    if not issues and as_reply(rec["chosen"]) == as_reply(rec["rejected"]):
        issues.append(Issue("rejected", "identical to chosen"))
    # chosen unsafe + rejected safe is NOT checked: a TRL file does not say whether "chosen" means more
    # helpful (where an unsafe response may well win) or safer.
    return issues


def beavertails_issues(rec: dict) -> list[Issue]:
    issues = require_text(rec, "prompt") + require_text(rec, "category")
    if not issues and rec["category"] not in BEAVERTAILS_SLUGS and rec["category"] not in HARM_CATEGORIES:
        issues.append(Issue("category", f"unknown BeaverTails category {_short(rec['category'])}"))
    return issues


def eval_prompt_issues(rec: dict) -> list[Issue]:
    return require_text(rec, "prompt") + require_text(rec, "category")


def xstest_issues(rec: dict) -> list[Issue]:
    issues = require_text(rec, "prompt") + require_text(rec, "type")
    if rec.get("label") is None:
        issues.append(Issue("label", "missing (expected 'safe' or 'unsafe')"))
    elif rec.get("label") not in ("safe", "unsafe"):
        issues.append(Issue("label", f"expected 'safe' or 'unsafe', got {_short(rec.get('label'))}"))
    return issues


def prompt_issues(rec: dict) -> list[Issue]:
    """A ``prompts-jsonl`` record: ``prompt`` (text or a message list) plus optional category / label / kind /
    source."""
    issues = require_prompt(rec)
    for name in ("category", "kind", "source"):
        issues += optional_str(rec, name)
    if rec.get("label") not in (None, "safe", "unsafe"):
        issues.append(Issue("label", f"expected 'safe', 'unsafe' or null, got {_short(rec.get('label'))}"))
    return issues


def sft_issues(rec: dict) -> list[Issue]:
    return require_prompt(rec) + require_reply(rec, "response") + optional_ended(rec, "ended")


def sft_messages_issues(rec: dict) -> list[Issue]:
    """A chat SFT record ``{"messages": [...]}``: the conversation up to a user turn, then the assistant's reply
    (the only message the loss is taken on)."""
    issues = message_issues(rec.get("messages"), "messages", "assistant")
    if not issues and (len(rec["messages"]) < 2 or rec["messages"][-2]["role"] != "user"):
        issues.append(Issue("messages", "expected a user message before the last (assistant) message"))
    return issues + optional_ended(rec, "ended")


def response_pair_issues(rec: dict) -> list[Issue]:
    """Unlabelled response pairs (``saferlhf generate --sampling.n 2``, or a PKU-SafeRLHF record whose labels
    are not read): prompt, response_0, response_1, optional sources. An empty response and two identical
    responses are warnings: a model may well generate them, and an annotator skips such a pair."""
    issues = require_prompt(rec)
    for k in (0, 1):
        issues += require_text(rec, f"response_{k}", empty="warning") + optional_str(rec, f"response_{k}_source")
    issues += optional_ended(rec, "ended_0", "ended_1")
    if not issues and rec["response_0"] == rec["response_1"]:
        issues.append(Issue("response_1", "identical to response_0 (kept; an annotator skips it)", "warning"))
    return issues
