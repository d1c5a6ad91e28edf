"""Reading a data file into rows: ``(line, record dict)``, or ``(line, reason)`` for an unreadable record.

File types: ``.json`` and ``.jsonl`` (a JSON list of records, or JSON lines, whatever the extension),
``.csv`` (a header row), ``.parquet``, each optionally ``.gz``; a UTF-8 byte-order mark is accepted. A
string that is not an existing path and looks like ``owner/name[:split]`` is a Hugging Face hub dataset.

A bad record is a row reason (the loader makes it a ``file:line: record: reason`` problem). A file that
cannot hold records at all raises one clear line before anything is parsed: ``FileNotFoundError``,
``IsADirectoryError``, or ``DataFileError`` naming the file, the real cause and what was expected (an
empty file, an unsupported extension, a ``.gz`` that is not gzip, a binary or UTF-16 file, text that is
not UTF-8 in a CSV or a JSON list, a single JSON object, a CSV with only a header, no record at all).
No parser's own exception (``UnicodeDecodeError``, ``json.JSONDecodeError``, gzip / zlib, pyarrow,
``csv.Error``) escapes.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from saferlhf.data import validate as V
from saferlhf.data.validate import DataFileError

Row = tuple[int, dict[str, Any] | str]
SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")
EXPECTED = ".json, .jsonl, .csv, .parquet (optionally .gz)"
_HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(:[\w.-]+)?")
_GZIP_MAGIC, _PARQUET_MAGIC, _UTF8_BOM = b"\x1f\x8b", b"PAR1", b"\xef\xbb\xbf"
_HEAD = 1 << 16  # bytes sniffed before parsing
# CSV cells are strings: these columns are read as JSON would have them ('' = missing; other text is kept
# as it is and reported by the rules, e.g. '1.0' is not an id).
_CSV_INTS = {"better_response_id", "safer_response_id", "response_0_severity_level", "response_1_severity_level"}
_CSV_BOOLS = {"is_response_0_safe", "is_response_1_safe", "chosen_is_safe", "rejected_is_safe"}


def is_hub_name(path: str | Path) -> bool:
    """``owner/name[:split]`` that is not a local path and has no data-file extension."""
    text = str(path)
    local_like = text.lower().endswith(SUFFIXES + (".gz",)) or text.startswith((".", "/", "~"))
    return not local_like and not Path(text).exists() and _HUB_NAME.fullmatch(text) is not None


def display_name(path: str | Path) -> str:
    """How a file is named in origins and problems (``owner/name[split]`` for hub datasets)."""
    if is_hub_name(path):
        name, _, split = str(path).partition(":")
        return f"{name}[{split or 'train'}]"
    return str(path)


def suffix(path: Path) -> str:
    """The data-file extension, lower case, without ``.gz``: '.jsonl' for ``x.JSONL.gz``."""
    return Path(path.name.lower().removesuffix(".gz")).suffix


def iter_rows(path: str | Path) -> Iterator[Row]:
    """Every record of a file (or hub dataset) with its line (row) number, malformed ones as reasons.

    Raises ``FileNotFoundError``, ``IsADirectoryError`` or ``DataFileError`` (see the module docstring).
    """
    if is_hub_name(path):
        rows = _hub_rows(str(path))
    else:
        p = data_file(path)
        rows = {".jsonl": _json_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}[suffix(p)](p)
    n = 0
    for n, row in enumerate(rows, 1):
        yield row
    if n == 0:
        raise DataFileError(f"{display_name(path)}: no records")


def data_file(path: str | Path) -> Path:
    """``path`` as a readable data file whose content is of its named type, or a one-line error."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a directory; expected a data file {EXPECTED}")
    if not p.exists():
        raise FileNotFoundError(f"data file not found: {p}")
    if not p.is_file():
        raise DataFileError(f"{p}: not a regular file; expected a data file {EXPECTED}")
    if suffix(p) not in SUFFIXES:
        kind = f"file type {suffix(p)!r}" if suffix(p) else "file type (no extension)"
        raise DataFileError(f"{p}: unsupported {kind}; expected {EXPECTED}")
    _check_content(p)
    return p


def _check_content(p: Path) -> None:
    """File-level checks on the first bytes: compressed as named, not empty, parquet or UTF-8 text."""
    gz = _is_gz(p)
    with _open(p, raw=True) as f:
        magic = f.read(4)
    if gz and not magic.startswith(_GZIP_MAGIC):
        raise DataFileError(f"{p}: not a gzip file (named .gz, but its content is not gzip-compressed)")
    if not gz and magic.startswith(_GZIP_MAGIC):
        raise DataFileError(f"{p}: a gzip-compressed file without the .gz extension; rename it {p.name}.gz")
    head = _read_bytes(p, _HEAD)
    if not head.removeprefix(_UTF8_BOM).strip() and len(head) < _HEAD:
        raise DataFileError(f"{p}: the file is empty")
    if suffix(p) == ".parquet":
        if not head.startswith(_PARQUET_MAGIC):
            raise DataFileError(f"{p}: not a parquet file (no PAR1 magic bytes at its start)")
        return
    if head.startswith(_PARQUET_MAGIC):
        raise DataFileError(f"{p}: a parquet file named {suffix(p)}; rename it with the .parquet extension")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataFileError(f"{p}: UTF-16 (or UTF-32) text; expected UTF-8 text (re-save the file as UTF-8)")
    if b"\x00" in head:
        raise DataFileError(f"{p}: a binary file (it contains NUL bytes); expected UTF-8 text ({suffix(p)})")


def _is_gz(p: Path) -> bool:
    return p.name.lower().endswith(".gz")


def _open(p: Path, raw: bool = False) -> IO[bytes]:
    """The file's bytes, decompressed when named ``.gz`` (unless ``raw``). Opening errors (permission, ...)
    are raised as they are; ``_gzip_errors(p)`` are the errors of reading a corrupt gzip file."""
    return gzip.open(p, "rb") if _is_gz(p) and not raw else open(p, "rb")


def _gzip_errors(p: Path) -> tuple[type[BaseException], ...]:
    return (OSError, EOFError, zlib.error) if _is_gz(p) else ()


def _corrupt_gzip(p: Path, e: BaseException, where: str = "") -> DataFileError:
    return DataFileError(f"{p}: corrupt or truncated gzip file{where} ({_one_line(e)})")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _read_bytes(p: Path, size: int = -1) -> bytes:
    """The first ``size`` (default: all) bytes of the file, decompressed."""
    with _open(p) as f:
        try:
            return f.read(size)
        except _gzip_errors(p) as e:
            raise _corrupt_gzip(p, e) from None


def _read_text(p: Path) -> str:
    """The whole file as text (a UTF-8 BOM dropped); not UTF-8 is a file-level error naming the line."""
    data = _read_bytes(p)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFileError(f"{p}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}: {e.reason}); "
                            "expected UTF-8 (re-save the file as UTF-8)") from None


# --------------------------------------------------------------------------- JSON


def _json_rows(p: Path) -> Iterator[Row]:
    """A JSON list of records (each at the line where its ``{`` is), else JSON lines; one JSON value that
    is not a list (e.g. a pretty-printed object) is a file-level error."""
    if _read_bytes(p, _HEAD).removeprefix(_UTF8_BOM).lstrip()[:1] == b"[":
        yield from _json_list_rows(p, _read_text(p))
        return
    for n, (line, row) in enumerate(_jsonl_rows(p)):
        if n == 0 and isinstance(row, str) and (error := _single_value_error(p)):
            raise error
        yield line, row


def _jsonl_rows(p: Path) -> Iterator[Row]:
    line = 0
    with _open(p) as f:  # binary: lines end at b"\n" only, so numbers match the file
        try:
            for line, raw in enumerate(f, 1):
                try:
                    row = _json_line(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    row = f"not UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1} ({e.reason})"
                if row is not None:
                    yield line, row
        except _gzip_errors(p) as e:
            raise _corrupt_gzip(p, e, f" after line {line}") from None


def _json_line(text: str) -> dict | str | None:
    """One JSON-lines line -> record, reason it is malformed, or None for a blank line."""
    text = text.lstrip("\ufeff")
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError; so is a 5000-digit int
        return f"malformed JSON: {_json_reason(e)}"
    return value if isinstance(value, dict) else V.not_a_record(value)


def _json_reason(e: BaseException) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} (column {e.colno})"
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return _one_line(e).split(":")[0]  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"


_JSON_TYPES = {dict: "object", list: "list", str: "string", int: "number", float: "number", bool: "boolean"}


def _single_value_error(p: Path) -> DataFileError | None:
    """The error for a file that is one JSON value other than a list of records; None if it is not one."""
    try:
        value = json.loads(_read_text(p))
    except (ValueError, RecursionError):
        return None
    kind = _JSON_TYPES.get(type(value), "null")
    lists = [k for k, v in value.items() if isinstance(v, list)] if isinstance(value, dict) else []
    hint = f" (its key {lists[0]!r} holds a list: save that list alone)" if lists else ""
    return DataFileError(f"{p}: a single JSON {kind}, expected a list of records or JSON Lines{hint}")


def _json_list_rows(p: Path, text: str) -> Iterator[Row]:
    decoder, ws = json.JSONDecoder(), re.compile(r"\s*")
    i = ws.match(text, text.index("[") + 1).end()
    if text[i:i + 1] == "]":
        raise DataFileError(f"{p}: an empty JSON list (no records)")
    line, seen = 1 + text.count("\n", 0, i), i
    while text[i:i + 1] != "]":
        line, seen = line + text.count("\n", seen, i), i
        try:
            value, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError) as e:
            at = e.lineno if isinstance(e, json.JSONDecodeError) else line
            yield at, f"malformed JSON: {_json_reason(e)}; the rest of the file was not read"
            return
        yield line, value if isinstance(value, dict) else V.not_a_record(value)
        i = ws.match(text, end).end()
        if text[i:i + 1] == ",":
            i = ws.match(text, i + 1).end()
        elif text[i:i + 1] != "]":
            yield 1 + text.count("\n", 0, i), "malformed JSON: expected ',' or ']' after a record"
            return
    if text[i + 1:].strip():
        yield 1 + text.count("\n", 0, i), "malformed JSON: extra data after the closing ']' (not read)"


# --------------------------------------------------------------------------- CSV, parquet, hub


def _csv_rows(p: Path) -> Iterator[Row]:
    """CSV with a header row; a record spanning several lines (quoted newlines) is at its first line. A record
    spanning more than ``CSV_MAX_RECORD_LINES`` lines, or a quote that never closes, is a row reason naming
    where the quoted field opened (a stray quote swallows the lines after it)."""
    text = _read_text(p)
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))  # a 10 MB cell is a cell, not an error
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    n, prev = 0, 0
    try:
        header = next((values for values in reader if values), [])
        header_line = reader.line_num
        dup = next((name for i, name in enumerate(header) if name and name in header[:i]), None)
        if dup is not None:
            raise DataFileError(f"{p}:{header_line}: CSV header: duplicate column {dup!r}")
        prev = reader.line_num
        for values in reader:
            line, prev = prev + 1, reader.line_num
            if not values:
                continue
            n += 1
            yield line, _csv_record(header, values, prev - line + 1)
    except csv.Error as e:
        yield prev + 1, f"malformed CSV: {e}{_unbalanced(prev + 1, reader.line_num)}; the rest of the file was not read"
        return
    if n == 0:
        raise DataFileError(f"{p}: only a CSV header row ({', '.join(header)}), no records")


CSV_MAX_RECORD_LINES = 100  # a longer quoted field is taken for an unbalanced quote


def _csv_record(header: list[str], values: list[str], span: int) -> dict[str, Any] | str:
    if span > CSV_MAX_RECORD_LINES:
        return (f"bad CSV row: a quoted field spans {span} lines (at most {CSV_MAX_RECORD_LINES}): an unbalanced "
                "quote? (quote a field whole, double quotes inside it (\"\"), or use JSONL for long texts)")
    if len(values) != len(header):
        return f"bad CSV row: {len(values)} fields, the header has {len(header)}"
    return {k: _csv_value(k, v) for k, v in zip(header, values)}


def _unbalanced(start: int, end: int) -> str:
    return f" (the quoted field opened here runs to line {end}: an unbalanced quote?)" if end > start else ""


def _csv_value(column: str, text: str) -> Any:
    if column in _CSV_INTS | _CSV_BOOLS and not text.strip():
        return None
    if column in _CSV_INTS and re.fullmatch(r"\s*-?\d{1,9}\s*", text):
        return int(text)
    if column in _CSV_BOOLS and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    return text


def _parquet_rows(p: Path) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = io.BytesIO(_read_bytes(p)) if _is_gz(p) else p
    errors = (pa.ArrowException, OSError, ValueError, TypeError)
    try:
        batches = pq.ParquetFile(source).iter_batches(batch_size=1024)
    except errors as e:
        raise DataFileError(f"{p}: not a readable parquet file ({_one_line(e)})") from None
    line = 0
    try:
        for batch in batches:
            for row in batch.to_pylist():
                line += 1
                yield line, row if isinstance(row, dict) else V.not_a_record(row)
    except errors as e:
        raise DataFileError(f"{p}: unreadable parquet data after row {line} ({_one_line(e)})") from None


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


__all__ = ["EXPECTED", "SUFFIXES", "Row", "data_file", "display_name", "is_hub_name", "iter_rows", "suffix"]
