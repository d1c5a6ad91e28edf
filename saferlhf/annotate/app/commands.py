"""`saferlhf annotate serve | users add | users list | users disable | import | export`: run a labelling campaign.

    pip install -e ".[annotate]"                       # fastapi, uvicorn, sqlalchemy, ... (PostgreSQL: ".[postgres]")
    saferlhf annotate users add alice --role annotator # prints alice's login token once
    saferlhf annotate import pairs.jsonl --qualification qual.jsonl --gold gold.jsonl
    saferlhf annotate serve                            # http://127.0.0.1:8600 (JSON API under /api)
    saferlhf annotate export --out prefs.jsonl         # + prefs.labels.jsonl, prefs.stats.json

Every command takes ``--db URL``: ``sqlite:///annotate.db`` (default) or ``postgresql+psycopg://user@host/name``.
The protocol (qualification, overlap, hidden gold, audits) is in ``saferlhf.annotate.app.service``; docs/annotate.md
explains each number of the statistics.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from saferlhf.config import option
from saferlhf.errors import UserError

DB_HELP = "database URL: sqlite:///FILE (default sqlite:///annotate.db) or postgresql+psycopg://user@host/name"


@dataclass
class AnnotateServeConfig:
    db: str = option("sqlite:///annotate.db", DB_HELP)
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    port: int = option(8600, "TCP port", ge=1, le=65535)
    qualification_threshold: float = option(0.9, "share of qualification answers that must agree with the expected "
                                                 "labels to unlock real tasks (less locks the account)", ge=0, le=1)
    access_log: str | None = option(None, "append one line per request (no headers, bodies or tokens) to this file "
                                          "(default: stderr)")
    read_timeout: float = option(30.0, "seconds a client has to send a request's headers, then its body", gt=0)
    sqlite_synchronous: Literal["full", "normal"] = option(
        "full", "SQLite only: full (default) syncs every stored label to disk before answering, so it survives a "
                "killed server, an OS crash and a power cut; normal syncs at checkpoints only (about 0.5 ms less "
                "per write): still safe from a killed server, but an OS crash or a power cut can lose the last "
                "labels")
    https_only: bool | None = option(None, "mark the browser session cookie Secure (browsers then send it over "
                                           "https only): set it behind a TLS reverse proxy; default: on when "
                                           "--host is not loopback")


@dataclass
class UsersAddConfig:
    name: str = option("", "user name (letters, digits, _ . @ -)", positional=True)
    role: Literal["annotator", "admin"] = option("annotator", "annotator (labels pairs) or admin (stats, audits)")
    db: str = option("sqlite:///annotate.db", DB_HELP)


@dataclass
class UsersListConfig:
    db: str = option("sqlite:///annotate.db", DB_HELP)


@dataclass
class UsersEnableConfig:
    name: str = option("", "user to enable again (a disabled token works again; an account locked by the "
                           "qualification test is unlocked)", positional=True)
    db: str = option("sqlite:///annotate.db", DB_HELP)


@dataclass
class UsersDisableConfig:
    name: str = option("", "user to disable (their token stops working; their labels stay)", positional=True)
    db: str = option("sqlite:///annotate.db", DB_HELP)


@dataclass
class AnnotateImportConfig:
    file: str = option("", "pair file: `saferlhf generate --pairs` output, PKU-SafeRLHF, or any JSONL / CSV with "
                           "prompt, response_0, response_1 (may be empty with --gold / --qualification)",
                       positional=True)
    gold: str | None = option(None, "PKU-SafeRLHF-labelled file of hidden gold pairs (their labels are the expected "
                                    "answers)")
    qualification: str | None = option(None, "PKU-SafeRLHF-labelled file of qualification pairs (every new "
                                             "annotator labels them first)")
    overlap: int = option(2, "distinct annotators per real pair", ge=1, le=1000)
    gold_rate: float = option(0.05, "chance that an annotator's next task is a hidden gold pair", ge=0, le=1)
    audit_rate: float = option(0.1, "share of this batch's real pairs sent to the admin audit queue once complete",
                               ge=0, le=1)
    seed: int = option(0, "seed of the audit pick, the gold draws and the displayed A/B orders")
    db: str = option("sqlite:///annotate.db", DB_HELP)


@dataclass
class AnnotateExportConfig:
    out: str = option("", "output JSONL of PKU-SafeRLHF v1 records (raw labels: <stem>.labels.jsonl, statistics: "
                          "<stem>.stats.json)")
    ties: Literal["drop", "keep"] = option("drop", "a helpfulness / harmlessness majority still tied after the "
                                                   "tie-break toward unsafe: drop the record or keep it (id 0 and "
                                                   "better_response_tie / safer_response_tie)")
    include_incomplete: bool = option(False, "also export pairs with fewer labels than their overlap")
    aggregation: Literal["majority", "dawid_skene", "soft"] = option(
        "majority", "majority (ties toward unsafe), dawid_skene (per-annotator confusion matrices) or soft (majority "
                    "ids plus the vote shares better_response_prob, safer_response_prob, response_i_unsafe_prob)")
    exclude: list[str] = option(factory=list, help="annotators whose labels are left out of the records")
    exclude_below: float | None = option(None, "also leave out annotators (with >= 20 labelled pairs) whose "
                                               "Dawid-Skene accuracy is below this", ge=0, le=1)
    db: str = option("sqlite:///annotate.db", DB_HELP)


def _app(command: str) -> Any:
    """The service module, or a one-line error naming the extra when the app's dependencies are missing."""
    try:
        import sqlalchemy  # noqa: F401

        from saferlhf.annotate.app import service
    except ImportError as e:
        raise UserError(f"annotate {command}: {e.name} is not installed", hint='pip install -e ".[annotate]"') from e
    return service


def _connect(url: str, **options: Any) -> Any:
    from saferlhf.annotate.app.db import connect

    return connect(url, **options)


@contextmanager
def _database(url: str) -> Iterator[Any]:
    """The database at ``url`` for one command, closed when the command is done (also on an error)."""
    db = _connect(url)
    try:
        yield db
    finally:
        db.close()


def run_serve(cfg: AnnotateServeConfig) -> int:
    _app("serve")
    try:
        import uvicorn

        from saferlhf.annotate.app.api import AccessLog, create_app
    except ImportError as e:
        raise UserError(f"annotate serve: {e.name} is not installed", hint='pip install -e ".[annotate]"') from e
    from saferlhf.serve.guards import allowed_hosts_for, guarded, header_deadline_protocol, is_loopback

    write = _log_writer(cfg.access_log)
    db = _connect(cfg.db, sqlite_synchronous=cfg.sqlite_synchronous)
    app = create_app(database=db, qualification_threshold=cfg.qualification_threshold,
                     https_only=(not is_loopback(cfg.host)) if cfg.https_only is None else cfg.https_only)
    hosts = allowed_hosts_for(cfg.host, [])
    served = AccessLog(guarded(app, read_timeout=cfg.read_timeout, allowed_hosts=hosts), write)
    print(f"annotate serve: http://{_url_host(cfg.host)}:{cfg.port} (database {db.url})", flush=True)
    if not is_loopback(cfg.host):
        print(f"annotate serve: warning: {cfg.host} is not loopback: put TLS (a reverse proxy) in front, tokens and "
              "texts travel in clear otherwise", file=sys.stderr, flush=True)
    config = uvicorn.Config(served, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                            http=header_deadline_protocol(cfg.read_timeout), timeout_keep_alive=5)
    import gc

    gc.freeze()  # what was loaded so far lives as long as the server: spare it the collector's full passes (~80 ms)
    uvicorn.Server(config).run()
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _log_writer(path: str | None) -> Any:
    if path is None:
        return lambda line: print(line, file=sys.stderr, flush=True)
    try:
        out = open(path, "a", buffering=1, encoding="utf-8")
    except OSError as e:
        raise UserError(f"annotate serve: --access_log {path}: cannot open it for appending ({e.strerror})") from None
    return lambda line: out.write(line + "\n")


def run_users_add(cfg: UsersAddConfig) -> int:
    service = _app("users add")
    if not cfg.name:
        raise UserError("annotate users add: give the user's name: saferlhf annotate users add NAME --role annotator")
    with _database(cfg.db) as db, db.session() as s:
        token = service.add_user(s, cfg.name, cfg.role)
    print(f"annotate users add: {cfg.name} ({cfg.role}) added to {db.url}")
    print(f"token: {token}")
    print("(shown once: only its sha256 is stored; send it as 'Authorization: Bearer TOKEN' or sign in with it)")
    return 0


def run_users_list(cfg: UsersListConfig) -> int:
    service = _app("users list")
    with _database(cfg.db) as db, db.session() as s:
        users = service.list_users(s)
    if not users:
        print(f"annotate users list: no users in {db.url} (add one: saferlhf annotate users add NAME)")
    for u in users:
        state = "disabled" if u["disabled"] else u["status"]
        reason = f" ({u['lock_reason']})" if u["lock_reason"] and u["status"] == "locked" else ""
        print(f"{u['name']}\t{u['role']}\t{state}{reason}\t{u['labels']} labels")
    return 0


def run_users_disable(cfg: UsersDisableConfig) -> int:
    service = _app("users disable")
    if not cfg.name:
        raise UserError("annotate users disable: give the user's name: saferlhf annotate users disable NAME")
    with _database(cfg.db) as db, db.session() as s:
        service.disable_user(s, cfg.name)
    print(f"annotate users disable: {cfg.name} can no longer sign in (their labels stay)")
    return 0


def run_users_enable(cfg: UsersEnableConfig) -> int:
    service = _app("users enable")
    if not cfg.name:
        raise UserError("annotate users enable: give the user's name: saferlhf annotate users enable NAME")
    with _database(cfg.db) as db, db.session() as s:
        was = service.enable_user(s, cfg.name)
    done = [text for key, text in (("was_disabled", "enabled (their token works again)"),
                                   ("was_locked", "unlocked after a failed qualification (an admin's decision)"))
            if was[key]]
    print(f"annotate users enable: {cfg.name} {' and '.join(done) if done else 'was already enabled and unlocked'}")
    return 0


def run_import(cfg: AnnotateImportConfig) -> int:
    service = _app("import")
    if not (cfg.file or cfg.gold or cfg.qualification):
        raise UserError("annotate import: give a pair file (saferlhf annotate import FILE) or --gold / --qualification")
    with _database(cfg.db) as db, db.session() as s:
        summary = service.import_pairs(s, cfg.file or None, gold=cfg.gold, qualification=cfg.qualification,
                                       overlap=cfg.overlap, gold_rate=cfg.gold_rate, audit_rate=cfg.audit_rate,
                                       seed=cfg.seed)
    for kind in summary["added"]:
        left = [f"{summary[why][kind]} {text}" for why, text in (
            ("already", "already imported"), ("unusable", "with an empty or identical response skipped"),
            ("repeated", "repeats in the file skipped")) if summary[why][kind]]
        note = f" ({', '.join(left)})" if left else ""
        print(f"annotate import: {summary['added'][kind]} {kind} pairs added{note}")
    if summary["batch"] is None:
        print("annotate import: nothing new: every pair was already in the database")
    else:
        print(f"annotate import: batch {summary['batch']}: overlap {cfg.overlap}, gold rate {cfg.gold_rate:g}, "
              f"{summary['audit_picked']} pairs picked for audit -> {db.url}")
    return 0


def run_export(cfg: AnnotateExportConfig) -> int:
    service = _app("export")
    from saferlhf.files import check_output_file

    if not cfg.out:
        raise UserError("annotate export: give the output file: saferlhf annotate export --out prefs.jsonl")
    for path in service.export_paths(cfg.out):
        check_output_file(path, {}, "annotate export")
    with _database(cfg.db) as db, db.session() as s:
        summary = service.export(s, cfg.out, ties=cfg.ties, include_incomplete=cfg.include_incomplete,
                                 aggregation=cfg.aggregation, exclude=cfg.exclude, exclude_below=cfg.exclude_below)
    c = summary["counts"]
    print(f"annotate export: {summary['records']} records from {summary['pairs']} pairs "
          f"({summary['complete']} complete; {c.get('ties_dropped', 0)} dropped for a tie, "
          f"{c.get('safer_fixed', 0)} safer ids fixed) -> {summary['out']}")
    if excluded := summary.get("excluded"):
        print("annotate export: left out " + ", ".join(f"{n} ({why})" for n, why in excluded.items()))
    print(f"annotate export: {summary['labels']} raw labels and {summary['audits']} audit verdicts -> "
          f"{summary['labels_file']}; statistics -> {summary['stats_file']}")
    return 0
