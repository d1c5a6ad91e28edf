"""Loaders: PKU-SafeRLHF, HH-RLHF, TRL preference, prompt sets and SFT corpora, validated at load time.

Files: ``.json`` (a list of records, or JSON lines), ``.jsonl``, ``.csv``, ``.parquet``, each optionally
``.gz``. A string that is not an existing path and looks like ``owner/name`` (optionally
``owner/name:split``, default split ``train``) is loaded with ``datasets.load_dataset`` (needs internet).
JSON lines and CSV are read line by line, so every record's ``origin`` / problem is ``file:line`` with
the exact line where the record starts (the row number for parquet and hub datasets).

Every loader returns a ``Loaded`` list: a plain list of records with a ``.report`` (``LoadReport``:
records read, kept, and every problem). ``on_error="raise"`` (default) raises ``DataValidationError``
with ALL the errors of the file; ``on_error="drop"`` keeps the valid records and logs a one-line
summary of what was dropped and why (``records.report.summary()``). Warnings never drop a record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from saferlhf.data import validate as V
from saferlhf.data.schema import (
    BEAVERTAILS_SLUGS, PairKind, PreferencePair, PromptRecord, SafetyPreference, SFTRecord,
    split_hh_transcripts, to_beavertails,
)
from saferlhf.data.validate import DataValidationError, Issue, LoadReport, Problem, UnknownFormatError

log = logging.getLogger(__name__)
T = TypeVar("T")
OnError = Literal["raise", "drop"]

PREFERENCE_FORMATS = ("pku-saferlhf", "hh-rlhf", "trl-preference")
PROMPT_FORMATS = ("beavertails-evaluation", "safe-rlhf-eval-prompts", "xstest", "prompts-jsonl")
SFT_FORMATS = ("sft-jsonl",)
FORMATS = PREFERENCE_FORMATS + PROMPT_FORMATS + SFT_FORMATS
_READERS_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
_HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(:[\w.-]+)?")


class Loaded(list[T], Generic[T]):
    """A list of records plus ``report``: what was read, kept, dropped (errors) and warned about."""

    report: LoadReport


def _loaded(items: Iterable[T], report: LoadReport) -> Loaded[T]:
    out: Loaded[T] = Loaded(items)
    out.report = report
    return out


# --------------------------------------------------------------------------- reading rows
# A row is (line, record dict) or (line, reason str) when the line itself is unreadable.
Row = tuple[int, dict[str, Any] | str]


def is_hub_name(path: str | Path) -> bool:
    """``owner/name[:split]`` that is not a local path and has no data-file extension."""
    text = str(path)
    local_like = text.lower().endswith(_READERS_SUFFIXES + (".gz",)) or text.startswith((".", "/", "~"))
    return not local_like and not Path(text).exists() and _HUB_NAME.fullmatch(text) is not None


def display_name(path: str | Path) -> str:
    """How a file is named in origins and problems (``owner/name[split]`` for hub datasets)."""
    if is_hub_name(path):
        name, _, split = str(path).partition(":")
        return f"{name}[{split or 'train'}]"
    return str(path)


def _suffix(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return Path(name).suffix


def iter_rows(path: str | Path) -> Iterator[Row]:
    """Every record of a file (or hub dataset) with its line (row) number, malformed ones as reasons."""
    if is_hub_name(path):
        yield from _hub_rows(str(path))
        return
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    if _suffix(p) not in readers:
        raise UnknownFormatError(f"{p}: unsupported file type {_suffix(p)!r} "
                                 f"(expected {', '.join(_READERS_SUFFIXES)}, optionally .gz)")
    yield from readers[_suffix(p)](p)


def _read_bytes(p: Path) -> bytes:
    return gzip.decompress(p.read_bytes()) if p.name.lower().endswith(".gz") else p.read_bytes()


def _json_line(text: str) -> dict | str | None:
    """One JSON-lines line -> record, reason it is malformed, or None for a blank line."""
    text = text.lstrip("\ufeff")
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return f"malformed JSON: {e.msg} (column {e.colno})"
    return value if isinstance(value, dict) else V.not_a_record(value)


def _jsonl_rows(p: Path) -> Iterator[Row]:
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    line = 0
    try:
        with opener(p, "rb") as f:  # binary: lines end at b"\n" only, so numbers match the file
            for line, raw in enumerate(f, 1):
                try:
                    row = _json_line(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    row = f"not UTF-8: {e.reason} at byte {e.start}"
                if row is not None:
                    yield line, row
    except (OSError, EOFError) as e:
        yield line + 1, f"unreadable file: {e}"


def _json_rows(p: Path) -> Iterator[Row]:
    """A JSON list of records (each at the line where its ``{`` is), or JSON lines named ``.json``."""
    try:
        text = _read_bytes(p).decode("utf-8").lstrip("\ufeff")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        yield 1, f"unreadable file: {e}"
        return
    if text.lstrip().startswith("{"):  # e.g. datasets' Dataset.to_json writes JSON lines
        if _is_one_multiline_object(text):
            yield 1, "expected a JSON list of records (or JSON lines), got one JSON object"
            return
        rows = ((i, _json_line(t)) for i, t in enumerate(text.split("\n"), 1))
        yield from ((i, r) for i, r in rows if r is not None)
        return
    yield from _json_list_rows(text)


def _is_one_multiline_object(text: str) -> bool:
    if text.strip().count("\n") == 0:
        return False
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _json_list_rows(text: str) -> Iterator[Row]:
    decoder, ws = json.JSONDecoder(), re.compile(r"\s*")
    i = ws.match(text, 0).end()
    if text[i:i + 1] != "[":
        yield text.count("\n", 0, i) + 1, "expected a JSON list of records (or JSON lines)"
        return
    i = ws.match(text, i + 1).end()
    line, seen = 1 + text.count("\n", 0, i), i
    while text[i:i + 1] != "]":
        line, seen = line + text.count("\n", seen, i), i
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            yield e.lineno, f"malformed JSON: {e.msg} (column {e.colno}); the rest of the file was not read"
            return
        yield line, value if isinstance(value, dict) else V.not_a_record(value)
        i = ws.match(text, end).end()
        if text[i:i + 1] == ",":
            i = ws.match(text, i + 1).end()
        elif text[i:i + 1] != "]":
            yield 1 + text.count("\n", 0, i), "malformed JSON: expected ',' or ']' after a record"
            return


def _csv_rows(p: Path) -> Iterator[Row]:
    """CSV with a header row; a record spanning several lines (quoted newlines) is at its first line."""
    try:
        f = io.StringIO(_read_bytes(p).decode("utf-8-sig"), newline="")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        yield 1, f"unreadable file: {e}"
        return
    reader = csv.reader(f)
    try:
        header = next(reader, None)
        prev = reader.line_num
        for values in reader:
            line, prev = prev + 1, reader.line_num
            if not values:
                continue
            if len(values) != len(header):
                yield line, f"bad CSV row: {len(values)} fields, the header has {len(header)}"
            else:
                yield line, dict(zip(header, values))
    except csv.Error as e:
        yield reader.line_num, f"malformed CSV: {e}"


def _parquet_rows(p: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    line = 0
    try:
        for batch in pq.ParquetFile(p).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                line += 1
                yield line, row
    except (OSError, ValueError) as e:  # pyarrow.ArrowInvalid is a ValueError
        yield line + 1, f"unreadable parquet: {e}"


def _hub_rows(spec: str) -> Iterator[Row]:
    from datasets import load_dataset  # heavy, and needs internet: only here

    name, _, split = spec.partition(":")
    try:
        dataset = load_dataset(name, split=split or "train")
    except Exception as e:  # offline, no such dataset, ...: say both readings of the name
        raise FileNotFoundError(f"{spec}: no such local file, and loading it as a Hugging Face hub "
                                f"dataset failed: {type(e).__name__}: {e}") from e
    for i, row in enumerate(dataset, 1):
        yield i, dict(row)


# --------------------------------------------------------------------------- formats


def format_from_keys(keys: set[str], suffix: str = "") -> str | None:
    """The format of a record with these fields (``suffix``: file type, '.csv', '.json', ...)."""
    if keys & {"response_0", "response_1", "better_response_id", "safer_response_id"}:
        return "pku-saferlhf"
    if {"chosen", "rejected"} <= keys:
        return "trl-preference" if "prompt" in keys else "hh-rlhf"
    if "prompt" not in keys:
        return None
    if "response" in keys:
        return "sft-jsonl"
    if "category_id" in keys:
        return "beavertails-evaluation"
    if suffix == ".csv" and {"type", "label"} <= keys:
        return "xstest"
    if suffix == ".json" and keys == {"prompt", "category"}:
        return "safe-rlhf-eval-prompts"
    return "prompts-jsonl"


def detect_format(path: str | Path) -> str:
    """One of ``FORMATS``, from the first readable record's fields and the file type.

    Raises ``FileNotFoundError`` or ``UnknownFormatError``.
    """
    suffix = "" if is_hub_name(path) else _suffix(Path(path))
    for _, row in iter_rows(path):
        if isinstance(row, dict):
            fmt = format_from_keys(set(row), suffix)
            if fmt is None:
                raise UnknownFormatError(f"{path}: cannot tell the format from the fields {sorted(row)} "
                                         f"(known formats: {', '.join(FORMATS)})")
            return fmt
    raise UnknownFormatError(f"{path}: no readable record to detect the format from")


def _canonical_category(category: str | None) -> str | None:
    return BEAVERTAILS_SLUGS.get(category, category) if category else None


def _build_pku(r: dict, origin: str) -> SafetyPreference:
    names = ("prompt", "response_0", "response_1")
    sources = {k: r.get(f"{k}_source") for k in names} if any(f"{k}_source" in r for k in names) else None
    return SafetyPreference(
        r["prompt"], r["response_0"], r["response_1"], r["better_response_id"], r["safer_response_id"],
        r["is_response_0_safe"], r["is_response_1_safe"], r.get("response_0_harm_category"),
        r.get("response_1_harm_category"), r.get("response_0_severity_level"),
        r.get("response_1_severity_level"), sources, origin)


def _build_hh(r: dict, origin: str) -> PreferencePair:
    prompt, chosen, rejected = split_hh_transcripts(r["chosen"], r["rejected"])
    return PreferencePair(prompt, chosen, rejected, None, None, origin)


def _build_trl(r: dict, origin: str) -> PreferencePair:
    return PreferencePair(r["prompt"], r["chosen"], r["rejected"], r.get("chosen_is_safe"),
                          r.get("rejected_is_safe"), origin)


def _build_prompt(r: dict, origin: str) -> PromptRecord:
    return PromptRecord(r["prompt"], _canonical_category(r.get("category")), r.get("label"),
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
    "sft-jsonl": (V.sft_issues, lambda r, o: SFTRecord(r["prompt"], r["response"], o)),
}


# --------------------------------------------------------------------------- loading


def read_records(path: str | Path, fmt: str) -> Loaded[Any]:
    """Every valid record of ``path`` read as format ``fmt``; problems in ``.report`` (never raises
    for bad records)."""
    rule, build = _FORMATS[fmt]
    name = display_name(path)
    report, kept = LoadReport(name, fmt), []
    for line, row in iter_rows(path):
        report.n_records += 1
        issues = [Issue("record", row)] if isinstance(row, str) else rule(row)
        report.problems += [Problem(name, line, i.field, i.reason, i.severity) for i in issues]
        if all(i.severity == "warning" for i in issues):
            kept.append(build(row, f"{name}:{line}"))
    report.n_kept = len(kept)
    return _loaded(kept, report)


def _finish(records: Loaded[T], on_error: OnError) -> Loaded[T]:
    report = records.report
    if report.errors and on_error == "raise":
        raise DataValidationError(report.errors)
    if report.n_dropped:
        log.warning(report.summary())
    return records


def _resolve_format(path: str | Path, format: str | None, allowed: tuple[str, ...], what: str) -> str:
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise UnknownFormatError(f"unknown format {fmt!r} (known formats: {', '.join(FORMATS)})")
    if fmt not in allowed:
        raise ValueError(f"{path}: a {fmt!r} file, but {what} reads {', '.join(allowed)}")
    return fmt


def _check(on_error: str, kind: str = "reward") -> None:
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    if kind not in ("reward", "cost"):
        raise ValueError(f"kind must be 'reward' or 'cost', got {kind!r}")


def load_any(path: str | Path, format: str | None = None) -> tuple[Loaded[Any], LoadReport]:
    """Valid records of any format (its own record type) and the report; used by ``check_file``."""
    records = read_records(path, _resolve_format(path, format, FORMATS, "load_any"))
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
    (chosen = the SAFER response), with both pairs' safety labels. HH-RLHF and TRL files: the file's
    chosen is the preferred response for either kind (for cost: the less harmful one, a ranking only;
    safety labels None unless a TRL file has ``chosen_is_safe`` / ``rejected_is_safe``).
    """
    _check(on_error, kind)
    fmt = _resolve_format(path, format, PREFERENCE_FORMATS, "load_preference_pairs")
    records = _finish(read_records(path, fmt), on_error)
    if fmt == "pku-saferlhf":
        return _loaded((r.pair(kind) for r in records), records.report)
    return records


def load_hh_rlhf(path: str | Path, on_error: OnError = "raise") -> Loaded[PreferencePair]:
    """Anthropic HH-RLHF ``{chosen, rejected}`` transcripts (.jsonl / .jsonl.gz / hub) as pairs."""
    _check(on_error)
    return _finish(read_records(path, "hh-rlhf"), on_error)


def load_prompts(path: str | Path, on_error: OnError = "raise", *,
                 format: str | None = None) -> Loaded[PromptRecord]:
    """Prompts from BeaverTails-Evaluation, the paper's 83 prompts, XSTest, a prompts jsonl, or the
    prompts of a preference / SFT file (category and label None, source = its format)."""
    _check(on_error)
    fmt = _resolve_format(path, format, FORMATS, "load_prompts")
    records = _finish(read_records(path, fmt), on_error)
    if fmt in PROMPT_FORMATS:
        return records
    return _loaded((PromptRecord(r.prompt, source=fmt, origin=r.origin) for r in records), records.report)


def load_sft_records(path: str | Path, on_error: OnError = "raise", *,
                     format: str | None = None) -> Loaded[SFTRecord]:
    """(prompt, response) records for supervised fine-tuning."""
    _check(on_error)
    fmt = _resolve_format(path, format, SFT_FORMATS, "load_sft_records")
    return _finish(read_records(path, fmt), on_error)


# --------------------------------------------------------------------------- counts for `data check`


def count_records(fmt: str, records: list[Any]) -> dict[str, Any]:
    """What a file holds: pairs derivable, safety labels, categories (for ``saferlhf data check``)."""
    counts: dict[str, Any] = {}
    if fmt in PREFERENCE_FORMATS:
        counts["reward pairs"] = len(records)
        counts["cost pairs" + ("" if fmt == "pku-saferlhf" else " (ranking only)")] = len(records)
    if fmt == "pku-saferlhf":
        counts |= _pku_counts(records)
    if fmt == "hh-rlhf":
        counts["multi-turn prompts"] = sum("\n\nAssistant:" in r.prompt for r in records)
    if fmt in PROMPT_FORMATS:
        counts["categories"] = _sorted_counts(r.category for r in records if r.category)
        counts["labels"] = _sorted_counts(r.label for r in records if r.label)
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


__all__ = [
    "FORMATS", "PREFERENCE_FORMATS", "PROMPT_FORMATS", "SFT_FORMATS", "Loaded", "count_records",
    "detect_format", "display_name", "format_from_keys", "is_hub_name", "iter_rows", "load_any",
    "load_hh_rlhf", "load_preference_pairs", "load_prompts", "load_safety_preferences", "load_sft_records",
    "read_records",
]
