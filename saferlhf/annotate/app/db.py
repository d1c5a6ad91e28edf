"""The annotation app's database: tables (SQLAlchemy 2.x ORM) and ``connect(url)``.

    db = connect("sqlite:///annotate.db")            # or "postgresql+psycopg://user@host/name"
    with db.session() as session:
        user = session.scalar(select(User).where(User.name == "ann"))

Tables: ``users`` (name, role annotator | admin, sha256 of the login token, disabled, status qualifying | active |
locked and the lock reason), ``batches`` (one per ``saferlhf annotate import``: files, overlap, gold and audit rates,
seed), ``pairs`` (kind real | gold | qualification, the prompt as JSON text, both responses exactly as imported, the
sources, the ended flags, the expected label of a gold / qualification pair, whether it is picked for audit; for a
real pair its ``overlap`` and ``assigned``, the slots its open and done tasks take), ``tasks`` (one pair given to
one annotator: a random url-safe ``task_id``, ``swapped`` = shown in reversed order, state open | done | skipped |
expired; UNIQUE(pair, user): nobody is given a pair twice), ``labels`` (one per task, in the IMPORTED order;
``better`` / ``safer`` NULL = tie), ``audits`` (an admin's verdict on a pair, one per pair) and
``settings`` (key -> text, e.g. the session secret and the qualification threshold, so restarts keep them).

Writes go through ``transact(session, work)``: one transaction that is committed before it returns. SQLite: WAL
journal, ``synchronous=FULL`` by default (a committed label survives a killed server; ``normal``: see ``connect``), a
30 s busy timeout, every write transaction ``BEGIN IMMEDIATE`` and, inside one process, serialised by a lock (so a
read-then-insert such as task assignment is atomic, also against a second process like ``annotate import``); a
session marked ``info["nowait"]`` waits for neither lock (``WouldWait``; the API's event loop uses it). PostgreSQL:
READ COMMITTED with row locks (``SELECT ... FOR UPDATE [SKIP LOCKED]``) taken by the service, and a retry on a
deadlock or serialisation failure.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import (Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, create_engine,
                        event)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.pool import StaticPool

from saferlhf.errors import UserError

T = TypeVar("T")
DEFAULT_URL = "sqlite:///annotate.db"
SQLITE_SYNCHRONOUS = ("full", "normal")  # PRAGMA synchronous in WAL mode: see connect()
RETRIES = 5  # attempts of a write transaction that hit a deadlock / serialisation failure (PostgreSQL)
BUSY_TIMEOUT_MS = 30000  # SQLite: how long a write waits for another process's write to end


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # annotator | admin
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the token; never the token
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="qualifying")  # qualifying | active | locked
    lock_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created: Mapped[float] = mapped_column(Float, default=now)


class Batch(Base):
    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    file: Mapped[str | None] = mapped_column(Text)
    gold_file: Mapped[str | None] = mapped_column(Text)
    qualification_file: Mapped[str | None] = mapped_column(Text)
    overlap: Mapped[int] = mapped_column(Integer)
    gold_rate: Mapped[float] = mapped_column(Float)
    audit_rate: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    created: Mapped[float] = mapped_column(Float, default=now)


class Pair(Base):
    __tablename__ = "pairs"
    __table_args__ = (UniqueConstraint("kind", "key"), Index("ix_pairs_kind_batch", "kind", "batch_id"),
                      Index("ix_pairs_queue", "kind", "assigned", "id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    kind: Mapped[str] = mapped_column(String(16))  # real | gold | qualification
    key: Mapped[str] = mapped_column(String(64))  # sha256 of the prompt and the two responses (either order)
    # the texts are loaded when first read (one query for the three), not with every Pair or Task
    prompt: Mapped[str] = mapped_column(Text, deferred=True, deferred_group="texts")  # JSON: a string or messages
    response_0: Mapped[str] = mapped_column(Text, deferred=True, deferred_group="texts")
    response_1: Mapped[str] = mapped_column(Text, deferred=True, deferred_group="texts")
    prompt_source: Mapped[str] = mapped_column(Text, default="")
    response_0_source: Mapped[str] = mapped_column(Text, default="")
    response_1_source: Mapped[str] = mapped_column(Text, default="")
    ended_0: Mapped[bool] = mapped_column(Boolean, default=True)
    ended_1: Mapped[bool] = mapped_column(Boolean, default=True)
    expected: Mapped[str | None] = mapped_column(Text, default=None)  # JSON label_to_dict (gold / qualification)
    audit: Mapped[bool] = mapped_column(Boolean, default=False)  # picked for the admin audit queue
    overlap: Mapped[int] = mapped_column(Integer, default=0)  # labels wanted (real pairs; the batch's overlap)
    assigned: Mapped[int] = mapped_column(Integer, default=0)  # slots taken: open and done tasks (real pairs)
    batch: Mapped[Batch] = relationship()  # loaded when read (rarely): not joined to every pair and task


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("pair_id", "user_id"), Index("ix_tasks_user_state", "user_id", "state"),
                      Index("ix_tasks_state_created", "state", "created"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(String(32), unique=True)  # random, url-safe: what clients see
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    swapped: Mapped[bool] = mapped_column(Boolean)  # displayed order = (response_1, response_0)
    state: Mapped[str] = mapped_column(String(16), default="open")  # open | done | skipped | expired
    created: Mapped[float] = mapped_column(Float, default=now)
    finished: Mapped[float | None] = mapped_column(Float, default=None)
    pair: Mapped[Pair] = relationship(lazy="joined", innerjoin=True)

    @property
    def kind(self) -> str:
        return self.pair.kind

    @property
    def qualification(self) -> bool:
        return self.pair.kind == "qualification"

    @property
    def prompt(self) -> str:
        """The prompt as text (a multi-turn prompt as its Human: / Assistant: transcript)."""
        from saferlhf.data.schema import as_prompt

        return str(as_prompt(json.loads(self.pair.prompt)))

    @property
    def responses(self) -> list[str]:
        """The two responses in the DISPLAYED order (what the annotator's indices 0 / 1 refer to)."""
        pair = [self.pair.response_0, self.pair.response_1]
        return pair[::-1] if self.swapped else pair


class StoredLabel(Base):
    __tablename__ = "labels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), unique=True)  # one label per task
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    better: Mapped[int | None] = mapped_column(Integer)  # IMPORTED order; NULL = tie
    safer: Mapped[int | None] = mapped_column(Integer)
    categories_0: Mapped[str] = mapped_column(Text)  # JSON list of canonical HARM_CATEGORIES names
    categories_1: Mapped[str] = mapped_column(Text)
    severity_0: Mapped[int] = mapped_column(Integer)
    severity_1: Mapped[int] = mapped_column(Integer)
    created: Mapped[float] = mapped_column(Float, default=now)
    user: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class Audit(Base):
    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pair_id: Mapped[int] = mapped_column(ForeignKey("pairs.id"), unique=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    verdict: Mapped[str] = mapped_column(Text)  # JSON label_to_dict, IMPORTED order
    created: Mapped[float] = mapped_column(Float, default=now)
    admin: Mapped[User] = relationship(lazy="joined", innerjoin=True)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Database:
    """An engine, its session factory and (SQLite) the lock that serialises write transactions."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect.name
        self.write_lock: Any = threading.Lock() if self.dialect == "sqlite" else nullcontext()
        self.sessions = sessionmaker(engine, expire_on_commit=False, info={"database": self})
        self.reclaim_after = 0.0  # when this process next looks for open tasks whose lease lapsed
        self.cache: dict[str, Any] = {}  # the service's small per-process caches (batch seeds, the latest batch)

    def session(self) -> Session:
        """A new session (use as ``with db.session() as s:``); service functions commit their own writes."""
        return self.sessions()

    @property
    def url(self) -> str:
        """The URL without its password (safe to print)."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()


def normalise_url(url: str) -> Any:
    """``url`` as a SQLAlchemy URL; ``postgresql://`` / ``postgres://`` use psycopg 3 (installed with the extra)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"--db {url!r}: not a database URL",
                        hint="sqlite:///annotate.db or postgresql+psycopg://user@host/name") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UserError(f"--db: {parsed.get_backend_name()} is not supported (sqlite or postgresql)")
    return parsed


def connect(url: str = DEFAULT_URL, *, create: bool = True, sqlite_synchronous: str = "full") -> Database:
    """The database at ``url``, its tables created when missing (``create``). A URL that cannot be parsed or
    reached is a ``UserError`` (one line, without the password).

    ``sqlite_synchronous`` (SQLite's WAL journal): ``full`` syncs the log to disk at every commit, so a committed
    label survives a killed server, an OS crash and a power cut; ``normal`` syncs it only at checkpoints: a commit
    still survives a killed (even SIGKILLed) server, since it is in the OS's file cache, but an OS crash or a power
    cut can lose the last commits; it saves one fsync per write (about 0.5 ms here)."""
    if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
        raise UserError(f"sqlite_synchronous {sqlite_synchronous!r}: expected one of {', '.join(SQLITE_SYNCHRONOUS)}")
    parsed = normalise_url(url)
    shown = parsed.render_as_string(hide_password=True)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = _sqlite_engine(parsed, sqlite_synchronous)
        else:
            engine = create_engine(parsed, pool_size=20, max_overflow=20, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as e:
        raise UserError(f"--db {shown}: the database driver is missing ({e})",
                        hint='pip install -e ".[annotate]"') from None
    try:
        if create:
            Base.metadata.create_all(engine)
        else:
            engine.connect().close()
    except (OperationalError, DBAPIError) as e:
        engine.dispose()
        reason = str(getattr(e, "orig", e)).strip().splitlines()[0] if str(getattr(e, "orig", e)).strip() else ""
        raise UserError(f"--db {shown}: cannot open the database ({reason})") from None
    return Database(engine)


def _sqlite_engine(parsed: Any, synchronous: str) -> Engine:
    memory = parsed.database in (None, "", ":memory:")
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30},
                           **({"poolclass": StaticPool} if memory else {}))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver begins nothing itself: the "begin" hook below does
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", f"synchronous={synchronous.upper()}", "foreign_keys=ON",
                       f"busy_timeout={BUSY_TIMEOUT_MS}"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if not options.get("nowait"):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("immediate") else "BEGIN")
            return
        raw = conn.connection.dbapi_connection
        raw.execute("PRAGMA busy_timeout=0")  # another process writing: fail at once (WouldWait), do not wait
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    return engine


def database_of(session: Session) -> Database:
    return session.info["database"]


class WouldWait(Exception):
    """A write transaction of a session marked ``session.info["nowait"] = True`` (SQLite) found the write lock taken,
    by another thread of this process or by another process: nothing was done; run the work where it may wait."""


@contextmanager
def _lock_now(lock: Any) -> Iterator[None]:
    if not lock.acquire(blocking=False):
        raise WouldWait("another thread of this process is writing")
    try:
        yield
    finally:
        lock.release()


def _retryable(e: DBAPIError) -> bool:
    code = getattr(getattr(e, "orig", None), "sqlstate", None)
    return code in ("40001", "40P01")  # serialization_failure, deadlock_detected


@contextmanager
def _write(session: Session) -> Iterator[None]:
    db = database_of(session)
    if session.info.get("writing"):
        raise RuntimeError("transact() inside transact(): one write transaction at a time per session")
    if session.in_transaction():
        session.commit()  # end a read (its snapshot could be stale for the write below)
    nowait = db.dialect == "sqlite" and bool(session.info.get("nowait"))
    with _lock_now(db.write_lock) if nowait else db.write_lock:
        session.info["writing"] = True
        try:
            try:
                session.connection(execution_options={"immediate": True, "nowait": nowait})
            except OperationalError as e:
                if not (nowait and getattr(e.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY):
                    raise
                session.rollback()
                raise WouldWait("another process is writing") from None
            yield
        finally:
            session.info["writing"] = False


def transact(session: Session, work: Callable[[], T]) -> T:
    """Run ``work()`` in one write transaction and commit it before returning its result (roll back on an error).
    Serialised on SQLite; retried on a PostgreSQL deadlock or serialisation failure."""
    for attempt in range(RETRIES):
        try:
            with _write(session):
                try:
                    result = work()
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
            return result
        except DBAPIError as e:
            if not _retryable(e) or attempt == RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")
