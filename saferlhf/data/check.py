"""`saferlhf data check PATH`: validate a data file before training on it.

Prints the detected format, what the file holds (records, valid records, reward / cost pairs, safe /
unsafe responses, categories, duplicates) and every problem as ``file:line: field: reason``. Exit status:
0 = no errors (warnings, e.g. exact duplicates, are printed but allowed unless ``--strict``), 1 = errors,
2 = a file that cannot be read as records at all (no such file, a directory, empty, not gzip, not UTF-8,
a single JSON object, ...) or of an unknown format. The report goes to stdout; a failure also prints one
line ``saferlhf data check: error: ...`` on stderr (the cause, or the counts and the first problem), never
a traceback.

Per-response labelled files (``labelled-responses``: GuardReasoner, WildGuardTest, DICES, ...) print where each
field was read from, unsafe / safe counts, distinct prompts and categories; the column options
(``--prompt_column``, ``--response_column``, ``--label_column``, ``--label safe|unsafe``, ``--category_column``)
read any file as labelled responses, and ``--unknown_labels skip`` turns empty or unknown labels into skipped
records (warnings) instead of errors (see ``saferlhf.data.labelled``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from saferlhf.config import option
from saferlhf.data.labelled import LABEL_REASONS, LabelColumns, column_options, names_columns
from saferlhf.data.loaders import FORMATS, check_file
from saferlhf.data.validate import CheckReport, Problem, UnknownFormatError


@dataclass
class DataCheckConfig(LabelColumns):
    path: str = option("", "data file (json, jsonl, jsonl.gz, csv, parquet) or hub dataset owner/name[:split]",
                    positional=True)
    format: str | None = option(None, "force a format instead of detecting it: " + ", ".join(FORMATS))
    max_problems: int = option(200, "print at most this many problems (0 = all)", ge=0)
    strict: bool = option(False, "exit 1 on warnings too (e.g. HH-RLHF empty replies)")


def run_data_check(cfg: DataCheckConfig) -> int:
    console = Console(highlight=False, soft_wrap=True)
    if not cfg.path:
        return _error("no data file given (saferlhf data check PATH)", 2)
    try:
        report = check_file(cfg.path, format=_format(cfg), columns=column_options(cfg))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, UnknownFormatError) as e:
        return _error(str(e), 2)
    console.print(_summary_table(report))
    _print_problems(console, "errors (records dropped by on_error='drop')", report.errors, "red", cfg.max_problems)
    _print_problems(console, "warnings (records kept unless marked skipped)", report.warnings, "yellow",
                    cfg.max_problems)
    if any(p.reason.startswith(LABEL_REASONS) for p in report.errors):
        console.print(Text("hint: --unknown_labels skip skips the records whose label is empty or unknown; "
                           "--unsafe_values / --safe_values name more label values"))
    failed = bool(report.errors) or (cfg.strict and bool(report.warnings))
    counts = f"{len(report.errors)} error(s), {len(report.warnings)} warning(s) in {report.path}"
    ok = f"OK: {report.n_valid} valid records, {len(report.warnings)} warning(s) in {report.path}"
    verdict = f"FAILED: {counts}" if failed else ok
    console.print(Text(verdict, style="bold red" if failed else "bold green"))
    if failed:
        first = (report.errors or report.warnings)[0]
        return _error(f"{counts}{'' if report.errors else ' (--strict)'}; first: {first}", 1)
    return 0


def _format(cfg: DataCheckConfig) -> str | None:
    """``--format``, or ``labelled-responses`` when a column option or ``--label`` is given."""
    if not names_columns(cfg):
        return cfg.format
    if cfg.format not in (None, "labelled-responses"):
        raise UnknownFormatError(f"{cfg.path}: the column options (--prompt_column, --response_column, --label_column, "
                                 f"--category_column, --label) read a labelled-responses file, not {cfg.format!r}")
    return "labelled-responses"


def _error(message: str, status: int) -> int:
    """Print ``saferlhf data check: error: <message>`` on stderr; return ``status``."""
    print(f"saferlhf data check: error: {message}", file=sys.stderr)
    return status


def _summary_table(report: CheckReport) -> Table:
    table = Table(title=f"{report.path} ({report.format})", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("count")
    rows: dict[str, Any] = {"format": report.format, "records": report.n_records, "valid records": report.n_valid}
    for key, value in (rows | report.counts).items():
        table.add_row(key, _cell(value))
    return table


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return "\n".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _print_problems(console: Console, title: str, problems: list[Problem], style: str, limit: int) -> None:
    if not problems:
        return
    console.print(Text(f"{len(problems)} {title}:", style=f"bold {style}"))
    shown = problems if limit <= 0 else problems[:limit]
    for p in shown:
        console.print(Text(str(p), style=style))
    if len(shown) < len(problems):
        console.print(Text(f"... and {len(problems) - len(shown)} more (--max_problems 0 shows all)"))
