"""The annotation protocol, the one place it lives: the JSON API (``api.py``), the browser UI (``web.py``) and the
commands (``commands.py``) all call these functions with a session of ``db.connect(url)``.

    db = connect("sqlite:///annotate.db")
    with db.session() as s:
        token = add_user(s, "ann", "annotator")                  # printed once; only its sha256 is stored
        user = authenticate(s, token)
        task = next_task(s, user)                                # None: nothing left for this annotator
        submit_label(s, user, task.task_id, helpful=0, harmless="tie", categories=[[], ["self_harm"]],
                     severity=[0, 2])                            # indices in the DISPLAYED order

The protocol (Dai et al. 2024, Sec. 3 and App. A, as the paper's crowdworkers were run):

1. Qualification: a new annotator first labels every qualification pair. Accuracy = the share of questions
   (more helpful, more harmless, and safe or not per response: 4 per pair) that agree with the pair's expected
   label; ``>= qualification_threshold`` (setting, default 0.9) makes the account active, less locks it with the
   reason (``Locked``). Without qualification pairs an annotator is active at once.
2. Overlap: each real pair goes to ``overlap`` (per import batch) different annotators; nobody is given a pair twice
   (UNIQUE(pair, user)); the pair with the fewest labels and open tasks goes first (then import order), so work is
   spread evenly over the pairs. An annotator asking again gets their open task back (same order), not a new one.
   An open task holds its slot for ``TASK_LEASE_S`` from the last time it was shown; then it is closed (expired) and
   its slot given back, and its annotator may still label it while the pair has room.
3. Gold: while real work is left, a hidden gold pair is given instead with probability ``gold_rate`` (of the latest
   batch; a seeded draw per annotator and task count); running accuracy per annotator as for qualification.
4. Audit: ``ceil(audit_rate * n)`` of each batch's n real pairs are picked at import (``random.Random(seed)``); a
   picked pair enters the admin audit queue once it has its ``overlap`` labels. The admin's verdict is stored beside
   the crowd labels; audit accuracy = agreement of the crowd majority (and of each annotator) with the verdicts.
5. Export: the majority of each complete pair's labels, ties toward unsafe (``aggregate.aggregate_labels``), as
   PKU-SafeRLHF v1 JSONL, with every raw label and audit verdict in ``<stem>.labels.jsonl`` and the statistics in
   ``<stem>.stats.json``.

Labels are given in the DISPLAYED order (``Task.responses``) and stored in the IMPORTED order (``response_0`` /
``response_1``). Errors are ``ServiceError`` subclasses (each a ``UserError`` with an HTTP ``status``): ``NotFound``
(404), ``Conflict`` (409), ``Invalid(field, reason)`` (422), ``Locked(reason)`` and ``Forbidden`` (403).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import secrets
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, make_transient_to_detached, undefer_group
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from saferlhf.annotate.app.db import (Audit, Batch, Pair, Setting, StoredLabel, Task, User, database_of, now,
                                      transact)
from saferlhf.errors import UserError

ROLES = ("annotator", "admin")
KINDS = ("real", "gold", "qualification")  # pairs.kind
TASK_LEASE_S = 3600.0  # an open task keeps its pair's slot this long
DEFAULT_THRESHOLD = 0.9
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

# ---- the statements of the labelling requests, built once ------------------------------------------------------------
# Every annotator request runs a few of these (authenticate, next_task, submit_label). Building a statement (and its
# cache key) costs more than SQLite running it, and an ORM flush costs a millisecond: so they are built here once,
# with bind parameters, and rows are written with Core INSERT / UPDATE, whose values are then set on any object of
# the session as loaded (``_set_loaded``), so that the session never holds a stale row it wrote itself.
_tasks, _pairs, _labels = Task.__table__, Pair.__table__, StoredLabel.__table__
_USER_BY_TOKEN = select(User).where(User.token_hash == bindparam("token_hash"))
# the annotator's row, locked (PostgreSQL; SQLite writes are serialised) and read afresh: one request per user at once
_ME = select(User).where(User.id == bindparam("user_id")).with_for_update().execution_options(populate_existing=True)
_OPEN_TASK = select(Task).where(Task.user_id == bindparam("user_id"), Task.state == "open").order_by(Task.id).limit(1)
_OPEN_TASK_TEXTS = _OPEN_TASK.options(joinedload(Task.pair).undefer_group("texts"))
_MINE = select(Task.pair_id).where(Task.user_id == bindparam("user_id"))
_UNTASKED = {kind: select(Pair).where(Pair.kind == kind, Pair.id.not_in(_MINE)).order_by(Pair.id).limit(1)
             .options(undefer_group("texts")) for kind in ("gold", "qualification")}
# a real pair with a free slot, fewest slots taken first, then import order (the index ix_pairs_queue, no scan)
_FREE_REAL = (select(Pair).where(Pair.kind == "real", Pair.assigned < Pair.overlap, Pair.id.not_in(_MINE))
              .order_by(Pair.assigned, Pair.id).limit(1).options(undefer_group("texts"))
              .with_for_update(of=Pair, skip_locked=True))
_SERVED = select(func.count()).select_from(Task).where(Task.user_id == bindparam("user_id"))
_MY_TASK = (select(Task).where(Task.task_id == bindparam("task_id"), Task.user_id == bindparam("user_id"))
            .with_for_update(of=Task))
_TAKE_SLOT = (update(_pairs).where(_pairs.c.id == bindparam("pair_id"), _pairs.c.assigned < _pairs.c.overlap)
              .values(assigned=_pairs.c.assigned + 1))
_GIVE_BACK_SLOT = (update(_pairs).where(_pairs.c.id == bindparam("pair_id"), _pairs.c.kind == "real")
                   .values(assigned=_pairs.c.assigned - 1))
_INSERT_TASK, _INSERT_LABEL = insert(_tasks), insert(_labels)
_USER_STATUS = (update(User.__table__).where(User.__table__.c.id == bindparam("user_row"))
                .values(status=bindparam("new_status"), lock_reason=bindparam("new_reason")))
_QUALIFICATION_LABELS = (select(StoredLabel).join(Pair, StoredLabel.pair_id == Pair.id)
                         .where(StoredLabel.user_id == bindparam("user_id"), Pair.kind == "qualification"))
_SETTING = select(Setting.value).where(Setting.key == bindparam("key"))
_TASK_SHOWN = update(_tasks).where(_tasks.c.id == bindparam("task_row")).values(created=bindparam("shown_at"))
_TASK_DONE = update(_tasks).where(_tasks.c.id == bindparam("task_row")).values(state="done",
                                                                                finished=bindparam("finished_at"))


def warm_up(session: Session) -> None:
    """Run the reads of the labelling requests once, for a user and a task that do not exist, and roll back
    (SQLAlchemy compiles a statement the first time it runs it: ~30 ms for these). A server calls this before it
    listens, so that the first annotators after a (re)start do not wait for it. Writes nothing."""
    user, task = {"user_id": 0}, {"user_id": 0, "task_id": ""}
    for statement, params in ((_USER_BY_TOKEN, {"token_hash": ""}), (_ME, user), (_OPEN_TASK, user),
                              (_OPEN_TASK_TEXTS, user), (_FREE_REAL, user), (_SERVED, user), (_MY_TASK, task),
                              (_SETTING, {"key": ""}), (_QUALIFICATION_LABELS, user),
                              *((q, user) for q in _UNTASKED.values())):
        session.execute(statement, params).all()
    session.rollback()


def _set_loaded(obj: Any, **values: Any) -> None:
    """Set ``values`` on a session's object as if loaded from its row (the row was written with a Core statement)."""
    for key, value in values.items():
        set_committed_value(obj, key, value)


class ServiceError(UserError):
    status = 400


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Forbidden(ServiceError):
    status = 403


class Locked(Forbidden):
    """The annotator's account is locked (``reason``: why, e.g. the qualification accuracy)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Invalid(ServiceError):
    """A malformed value: ``field`` names it (``categories``, ``severity``, ...), ``reason`` says what is wrong."""

    status = 422

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


# ---- users ------------------------------------------------------------------------------------------------------
def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_user(session: Session, name: str, role: str) -> str:
    """Create user ``name`` with ``role`` (annotator | admin) and return their login token (only its sha256 is
    stored: show it once). Admins are active at once; annotators start qualifying."""
    if not _NAME.match(name or ""):
        raise Invalid("name", f"{name!r}: use 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter "
                              "or digit")
    if role not in ROLES:
        raise Invalid("role", f"{role!r}: expected one of {', '.join(ROLES)}")
    token = secrets.token_urlsafe(24)

    def work() -> None:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise Conflict(f"user {name!r} already exists")
        session.add(User(name=name, role=role, token_hash=hash_token(token),
                         status="active" if role == "admin" else "qualifying"))

    try:
        transact(session, work)
    except IntegrityError:
        raise Conflict(f"user {name!r} already exists") from None
    return token


def list_users(session: Session) -> list[dict[str, Any]]:
    """Every user: name, role, status, lock_reason, disabled, labels (done tasks), in creation order."""
    done = dict(session.execute(select(Task.user_id, func.count()).where(Task.state == "done")
                                .group_by(Task.user_id)).all())
    return [{"name": u.name, "role": u.role, "status": u.status, "lock_reason": u.lock_reason,
             "disabled": u.disabled, "labels": done.get(u.id, 0)}
            for u in session.scalars(select(User).order_by(User.id))]


def disable_user(session: Session, name: str) -> None:
    """Disable ``name``: their token stops working (401); their labels stay."""
    def work() -> None:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user {name!r}")
        user.disabled = True

    transact(session, work)


def enable_user(session: Session, name: str) -> dict[str, bool]:
    """Let ``name`` work again: a disabled account is enabled (its token works again) and an account locked by the
    qualification test is unlocked (an admin's decision; the qualification answers stay in the statistics).
    Returns ``{"was_disabled", "was_locked"}``."""
    def work() -> dict[str, bool]:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user {name!r}")
        was = {"was_disabled": bool(user.disabled), "was_locked": user.status == "locked"}
        user.disabled = False
        if user.status == "locked":
            user.status, user.lock_reason = "active", None
        return was

    return transact(session, work)


def authenticate(session: Session, token: str | None) -> User | None:
    """The enabled user whose token this is, else None."""
    if not token:
        return None
    user = session.scalar(_USER_BY_TOKEN, {"token_hash": hash_token(token)})
    return user if user is not None and not user.disabled else None


def require_role(user: User, role: str) -> None:
    if user.role != role:
        raise Forbidden(f"this needs the {role} role ({user.name} is an {user.role})")


# ---- settings ---------------------------------------------------------------------------------------------------
def get_setting(session: Session, key: str, default: str | None = None) -> str | None:
    value = session.scalar(_SETTING, {"key": key})
    return default if value is None else value


def set_setting(session: Session, key: str, value: str) -> None:
    def work() -> None:
        row = session.get(Setting, key)
        if row is None:
            session.add(Setting(key=key, value=value))
        else:
            row.value = value

    transact(session, work)


def secret(session: Session, key: str = "session_secret") -> str:
    """A random secret kept in the settings table (created on first use), e.g. to sign session cookies, so that a
    restarted server keeps its sessions."""
    value = get_setting(session, key)
    if value is None:
        candidate = secrets.token_urlsafe(32)

        def work() -> str:
            row = session.get(Setting, key)
            if row is None:
                session.add(Setting(key=key, value=candidate))
                return candidate
            return row.value

        try:
            value = transact(session, work)
        except IntegrityError:  # another process created it first
            value = get_setting(session, key)
    assert value is not None
    return value


def qualification_threshold(session: Session) -> float:
    return float(get_setting(session, "qualification_threshold", str(DEFAULT_THRESHOLD)))


# ---- label values -----------------------------------------------------------------------------------------------
def parse_choice(value: Any, field: str) -> int | None:
    """0, 1 or "tie" (-> None); anything else is ``Invalid(field)``."""
    if value == "tie" and isinstance(value, str):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    raise Invalid(field, f'expected 0, 1 or "tie", got {json.dumps(value)[:40]}')


def parse_categories(value: Any, field: str = "categories") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Two lists of harm categories (canonical names or BeaverTails slugs) -> canonical names in
    ``HARM_CATEGORIES`` order, without repeats."""
    from saferlhf.annotate.labels import canonical_category
    from saferlhf.data.schema import HARM_CATEGORIES

    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, list) for v in value):
        raise Invalid(field, "expected two lists of harm categories, one per response ([] = safe)")
    out = []
    for i, names in enumerate(value):
        flagged = set()
        for name in names:
            if not isinstance(name, str):
                raise Invalid(f"{field}[{i}]", f"expected category names, got {json.dumps(name)[:40]}")
            try:
                flagged.add(canonical_category(name))
            except ValueError:
                raise Invalid(f"{field}[{i}]", f"unknown harm category {name[:80]!r}") from None
        out.append(tuple(c for c in HARM_CATEGORIES if c in flagged))
    return out[0], out[1]


def parse_severity(value: Any, categories: Sequence[Sequence[str]], field: str = "severity") -> tuple[int, int]:
    """Two severities: 0 for a safe response (no category), 1 (minor) - 3 (severe) for an unsafe one."""
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(field, "expected two severities [s0, s1] (0 = safe, 1-3 = minor to severe)")
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 3:
            raise Invalid(f"{field}[{i}]", f"expected 0, 1, 2 or 3, got {json.dumps(s)[:40]}")
        if s == 0 and categories[i]:
            raise Invalid(f"{field}[{i}]", "0 means safe, but harm categories are flagged: give 1-3")
        if s > 0 and not categories[i]:
            raise Invalid(f"{field}[{i}]", f"{s} needs at least one harm category (no category = safe, severity 0)")
    return value[0], value[1]


def make_label(annotator: str, helpful: Any, harmless: Any, categories: Any, severity: Any, *,
               swapped: bool = False) -> Any:
    """A ``labels.Label`` in the IMPORTED order from answers in the displayed order (``swapped``: the display
    showed response_1 first). Raises ``Invalid`` naming the first bad field."""
    from saferlhf.annotate.labels import Label

    better, safer = parse_choice(helpful, "helpful"), parse_choice(harmless, "harmless")
    cats = parse_categories(categories)
    sev = parse_severity(severity, cats)
    if swapped:
        better, safer = (None if better is None else 1 - better), (None if safer is None else 1 - safer)
        cats, sev = (cats[1], cats[0]), (sev[1], sev[0])
    return Label(annotator, better, safer, (not cats[0], not cats[1]), cats, sev)


def _stored_label(row: StoredLabel) -> Any:
    from saferlhf.annotate.labels import Label

    cats = (tuple(json.loads(row.categories_0)), tuple(json.loads(row.categories_1)))
    return Label(row.user.name, row.better, row.safer, (not cats[0], not cats[1]), cats,
                 (row.severity_0, row.severity_1))


def agreement_counts(label: Any, expected: Any) -> tuple[int, int]:
    """(questions agreeing, questions): more helpful, more harmless, safe per response (a tie agrees with a tie)."""
    answers = [(label.better, expected.better), (label.safer, expected.safer),
               (label.safe[0], expected.safe[0]), (label.safe[1], expected.safe[1])]
    return sum(a == b for a, b in answers), len(answers)


def _expected(pair: Pair) -> Any:
    from saferlhf.annotate.labels import label_from_dict

    return label_from_dict(json.loads(pair.expected)) if pair.expected else None


# ---- tasks ------------------------------------------------------------------------------------------------------
# A real pair's ``assigned`` counts its open and done tasks: a task takes a slot when it is given, gives it back when
# it is skipped or its lease lapses (state expired), and a pair is given while ``assigned < overlap``. Every change of
# ``assigned`` happens in the transaction that changes the task, under the pair's row lock (PostgreSQL) or the
# serialised write transaction (SQLite).
def _open_task(session: Session, user: User, texts: bool = False) -> Task | None:
    return session.scalar(_OPEN_TASK_TEXTS if texts else _OPEN_TASK, {"user_id": user.id})


def _slots_changed(session: Session, pair_id: int, change: int) -> None:
    """Keep the session's copy of pair ``pair_id`` (if it holds one) in step with a Core UPDATE of its slots."""
    pair = session.identity_map.get(identity_key(Pair, pair_id))
    if pair is not None and "assigned" in pair.__dict__:
        _set_loaded(pair, assigned=pair.assigned + change)


def _take_slot(session: Session, pair_id: int) -> bool:
    """Take a slot of real pair ``pair_id`` if it has one free (an atomic conditional UPDATE)."""
    taken = session.execute(_TAKE_SLOT, {"pair_id": pair_id}).rowcount == 1
    if taken:
        _slots_changed(session, pair_id, +1)
    return taken


def _give_back_slot(session: Session, task: Task) -> None:
    if session.execute(_GIVE_BACK_SLOT, {"pair_id": task.pair_id}).rowcount == 1:
        _slots_changed(session, task.pair_id, -1)


def _reclaim_lapsed(session: Session) -> None:
    """Close open tasks whose lease lapsed (state expired) and give their slots back; at most once a minute per
    process (a lapsed task keeps its slot until then)."""
    db = database_of(session)
    if now() < db.reclaim_after:
        return
    db.reclaim_after = now() + 60.0
    lapsed = session.scalars(select(Task).where(Task.state == "open", Task.created <= now() - TASK_LEASE_S)
                             .with_for_update(of=Task, skip_locked=True)).all()
    for task in lapsed:
        task.state, task.finished = "expired", now()
        _give_back_slot(session, task)


def _free_real(session: Session, user: User) -> Pair | None:
    """A real pair with a free slot that ``user`` never had, fewest slots taken first, then import order, its row
    locked (PostgreSQL: rows a concurrent assignment holds are skipped; SQLite: writes are serialised)."""
    return session.scalar(_FREE_REAL, {"user_id": user.id})


def _draw_gold(session: Session, user: User) -> Pair | None:
    """A gold pair this user never had, with probability ``gold_rate`` of the latest batch (seeded per user and
    number of tasks), else None."""
    gold_rate, seed = _latest_batch(session)
    if gold_rate <= 0:
        return None
    served = session.scalar(_SERVED, {"user_id": user.id}) or 0
    if random.Random(f"gold:{seed}:{user.id}:{served}").random() >= gold_rate:
        return None
    return _untasked(session, user, "gold")


def _untasked(session: Session, user: User, kind: str) -> Pair | None:
    """The first pair of ``kind`` (gold | qualification) this user has no task for."""
    return session.scalar(_UNTASKED[kind], {"user_id": user.id})


def _latest_batch(session: Session) -> tuple[float, int]:
    """(gold_rate, seed) of the latest batch ((0, 0) without one), read at most every 5 s per process."""
    db = database_of(session)
    cached = db.cache.get("latest_batch")
    if cached is None or cached[0] < now():
        batch = session.scalar(select(Batch).order_by(Batch.id.desc()).limit(1))
        cached = (now() + 5.0, (batch.gold_rate, batch.seed) if batch else (0.0, 0))
        db.cache["latest_batch"] = cached
    return cached[1]


def _batch_seed(session: Session, batch_id: int) -> int:
    seeds = database_of(session).cache.setdefault("seeds", {})  # a batch never changes
    if batch_id not in seeds:
        seeds[batch_id] = session.get(Batch, batch_id).seed
    return seeds[batch_id]


def _assign(session: Session, user: User, pair: Pair) -> Task:
    seed = _batch_seed(session, pair.batch_id)
    swapped = random.Random(f"order:{seed}:{pair.id}:{user.id}").random() < 0.5
    row = {"task_id": secrets.token_urlsafe(12), "pair_id": pair.id, "user_id": user.id, "swapped": swapped,
           "state": "open", "created": now(), "finished": None}
    task = Task(id=session.execute(_INSERT_TASK, row).inserted_primary_key[0], **row)
    make_transient_to_detached(task)  # the row is written: the session holds it as loaded, nothing to flush
    session.add(task)
    _set_loaded(task, pair=pair)
    return task


def _finish_qualification(session: Session, user: User, threshold: float) -> None:
    """Score a qualifying user who has no qualification pair left: active at >= threshold, else locked."""
    agree = total = 0
    for row in session.scalars(_QUALIFICATION_LABELS, {"user_id": user.id}).all():
        a, n = agreement_counts(_stored_label(row), _expected(session.get(Pair, row.pair_id)))
        agree, total = agree + a, total + n
    status, reason = "active", None
    if total and agree / total < threshold:
        status, reason = "locked", (f"qualification failed: {agree} of {total} answers ({agree / total:.0%}) agree "
                                    f"with the expected labels; {threshold:.0%} are needed")
    session.execute(_USER_STATUS, {"user_row": user.id, "new_status": status, "new_reason": reason})
    _set_loaded(user, status=status, lock_reason=reason)


def next_task(session: Session, user: User) -> Task | None:
    """The annotator's next task (their open one if any), or None when nothing is left for them. Raises ``Locked``
    for a locked account and ``Forbidden`` for an admin. Committed before it returns."""
    require_role(user, "annotator")

    def work() -> Task | str | None:
        me = session.scalar(_ME, {"user_id": user.id})
        if me.status == "locked":
            return "locked"
        _reclaim_lapsed(session)
        task = _open_task(session, me, texts=True)
        if task is not None:
            shown = now()  # the lease runs from the last time it was shown
            session.execute(_TASK_SHOWN, {"task_row": task.id, "shown_at": shown})
            _set_loaded(task, created=shown)
            return task
        if me.status == "qualifying":
            pair = _untasked(session, me, "qualification")
            if pair is not None:
                return _assign(session, me, pair)
            _finish_qualification(session, me, qualification_threshold(session))
            if me.status == "locked":
                return "locked"
        real = _free_real(session, me)
        if real is None:  # no real work left: no gold either (it would stand out)
            return None
        gold = _draw_gold(session, me)
        if gold is not None:
            return _assign(session, me, gold)
        _take_slot(session, real.id)
        return _assign(session, me, real)

    result = transact(session, work)
    if result == "locked":
        session.refresh(user)
        raise Locked(user.lock_reason or "this account is locked")
    return result if isinstance(result, Task) else None


def _my_task(session: Session, user: User, task_id: str) -> Task:
    task = session.scalar(_MY_TASK, {"task_id": task_id, "user_id": user.id})
    if task is None:
        raise NotFound(f"no task {task_id[:40]!r} of yours")
    if task.state == "done":
        raise Conflict(f"task {task_id} is already labelled")
    if task.state == "skipped":
        raise Conflict(f"task {task_id} was skipped")
    return task


def submit_label(session: Session, user: User, task_id: str, helpful: Any, harmless: Any, categories: Any,
                 severity: Any) -> Any:
    """Store the annotator's label of ``task_id`` (answers in the DISPLAYED order) and return it as a
    ``labels.Label`` in the IMPORTED order; committed before it returns. Raises ``Invalid`` (a bad answer),
    ``NotFound`` (no such task of this user), ``Conflict`` (labelled or skipped already, or its lease lapsed and its
    pair went to someone else), ``Forbidden`` (an admin), ``Locked`` (a locked annotator)."""
    require_role(user, "annotator")
    if not isinstance(task_id, str) or not task_id:
        raise Invalid("task_id", "expected the task_id of GET /api/tasks/next")
    make_label(user.name, helpful, harmless, categories, severity)  # validate before taking the lock

    def work() -> Any:
        me = session.get(User, user.id)
        if me.status == "locked":
            raise Locked(me.lock_reason or "this account is locked")
        task = _my_task(session, me, task_id)
        if task.state == "expired" and task.kind == "real" and not _take_slot(session, task.pair_id):
            raise Conflict(f"task {task_id} expired and its pair went to other annotators")
        label = make_label(me.name, helpful, harmless, categories, severity, swapped=task.swapped)
        finished = now()
        session.execute(_INSERT_LABEL, {
            "task_id": task.id, "pair_id": task.pair_id, "user_id": me.id, "better": label.better,
            "safer": label.safer, "categories_0": json.dumps(list(label.categories[0])),
            "categories_1": json.dumps(list(label.categories[1])), "severity_0": label.severity[0],
            "severity_1": label.severity[1], "created": finished})
        session.execute(_TASK_DONE, {"task_row": task.id, "finished_at": finished})
        _set_loaded(task, state="done", finished=finished)
        if task.kind == "qualification" and me.status == "qualifying" and \
                _untasked(session, me, "qualification") is None and _open_task(session, me) is None:
            _finish_qualification(session, me, qualification_threshold(session))
        return label

    try:
        return transact(session, work)
    except IntegrityError:
        raise Conflict(f"task {task_id} is already labelled") from None


def skip_task(session: Session, user: User, task_id: str) -> Task:
    """Skip an open task: its slot goes to another annotator and this one never gets the pair again. Qualification
    pairs cannot be skipped (``Conflict``)."""
    require_role(user, "annotator")

    def work() -> Task:
        task = _my_task(session, session.get(User, user.id), task_id)
        if task.kind == "qualification":
            raise Conflict("qualification items cannot be skipped")
        if task.state == "open":
            _give_back_slot(session, task)
        task.state, task.finished = "skipped", now()
        return task

    return transact(session, work)


# ---- import -----------------------------------------------------------------------------------------------------
def pair_key(prompt: Any, response_0: str, response_1: str) -> str:
    """The identity of a pair for de-duplication: its prompt and its two responses, in either order."""
    from saferlhf.data.schema import prompt_json

    return hashlib.sha256(json.dumps([prompt_json(prompt), sorted([response_0, response_1])]).encode()).hexdigest()


def _pair_row(rec: Any, kind: str, source: str, expected: Any = None) -> dict[str, Any]:
    from saferlhf.data.schema import prompt_json

    sources = getattr(rec, "sources", None) or {}
    return {"kind": kind, "key": pair_key(rec.prompt, rec.response_0, rec.response_1),
            "prompt": json.dumps(prompt_json(rec.prompt)), "response_0": rec.response_0,
            "response_1": rec.response_1, "prompt_source": sources.get("prompt") or source,
            "response_0_source": getattr(rec, "response_0_source", None) or sources.get("response_0") or source,
            "response_1_source": getattr(rec, "response_1_source", None) or sources.get("response_1") or source,
            "ended_0": rec.ended_0, "ended_1": rec.ended_1, "expected": expected}


def _expected_label(rec: Any) -> str:
    """The expected label of a PKU-SafeRLHF record (its harm categories mapped to the 14 BeaverTails names; an
    unsafe response without a severity counts as 1, minor) as ``label_to_dict`` JSON."""
    from saferlhf.annotate.labels import Label, label_to_dict
    from saferlhf.data.schema import HARM_CATEGORIES, to_beavertails

    safe, cats, sev = [], [], []
    for i in (0, 1):
        is_safe = rec.is_safe(i)
        given = getattr(rec, f"response_{i}_harm_category") or {}
        flagged = to_beavertails(given) if given else {}
        cats.append(() if is_safe else tuple(c for c in HARM_CATEGORIES if flagged.get(c)))
        level = getattr(rec, f"response_{i}_severity_level")
        sev.append(0 if is_safe else max(1, min(3, int(level or 1))))
        safe.append(is_safe)
    label = Label("expected", rec.better_response_id, rec.safer_response_id, (safe[0], safe[1]),
                  (cats[0], cats[1]), (sev[0], sev[1]))
    return json.dumps(label_to_dict(label))


def read_pair_file(path: str, kind: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The pairs of ``path`` as rows of the pairs table, and how many were left out and why. ``kind="real"``:
    unlabelled pairs (``load_response_pairs``: ``generate --pairs`` output, PKU-SafeRLHF, any JSONL / CSV with
    prompt, response_0, response_1); gold / qualification: PKU-SafeRLHF records whose labels are the expected ones.
    A bad record raises the loader's error listing every ``file:line: field: reason``."""
    from saferlhf.data.loaders import load_response_pairs, load_safety_preferences

    source = Path(path).name.split(".")[0]
    if kind == "real":
        records = load_response_pairs(path)
        rows = [_pair_row(r, kind, source) for r in records if r.response_0.strip() and r.response_1.strip()
                and r.response_0.strip() != r.response_1.strip()]
    else:
        records = load_safety_preferences(path)
        rows = [_pair_row(r, kind, source, _expected_label(r)) for r in records
                if r.response_0.strip() != r.response_1.strip()]
    unusable = len(records) - len(rows)
    seen, unique = set(), []
    for row in rows:
        if row["key"] not in seen:
            seen.add(row["key"])
            unique.append(row)
    return unique, {"unusable": unusable, "repeated": len(rows) - len(unique)}


def import_pairs(session: Session, path: str | None, *, gold: str | None = None, qualification: str | None = None,
                 overlap: int = 2, gold_rate: float = 0.05, audit_rate: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """Import pair files as one batch: ``path`` (real pairs), ``gold`` and ``qualification`` (PKU-SafeRLHF records
    carrying the expected labels). Pairs already in the database (same kind, prompt and responses in either order)
    are not added again. ``ceil(audit_rate * n)`` of the batch's n new real pairs are picked for audit with
    ``random.Random(seed)``. Returns ``{"batch": id | None, "added" | "already" | "unusable" | "repeated": {kind:
    n}, "audit_picked": n}``; all the files are read (and checked) before anything is written."""
    for name, value, lo, hi in (("overlap", overlap, 1, 1000), ("gold_rate", gold_rate, 0, 1),
                                ("audit_rate", audit_rate, 0, 1)):
        if not lo <= value <= hi:
            raise Invalid(name, f"{value} is outside [{lo}, {hi}]")
    files = {"real": path, "gold": gold, "qualification": qualification}
    if not any(files.values()):
        raise Invalid("file", "give a pair file, --gold or --qualification")
    loaded = {kind: read_pair_file(f, kind) for kind, f in files.items() if f}
    summary: dict[str, Any] = {"batch": None, "added": {}, "already": {}, "unusable": {}, "repeated": {},
                               "audit_picked": 0}

    def work() -> None:
        batch = Batch(file=path, gold_file=gold, qualification_file=qualification, overlap=overlap,
                      gold_rate=gold_rate, audit_rate=audit_rate, seed=seed, created=now())
        session.add(batch)
        session.flush()
        for kind, (rows, left_out) in loaded.items():
            keys = [r["key"] for r in rows]
            there: set[str] = set()
            for i in range(0, len(keys), 500):
                there |= set(session.scalars(select(Pair.key).where(Pair.kind == kind,
                                                                    Pair.key.in_(keys[i:i + 500]))))
            new = [r for r in rows if r["key"] not in there]
            if kind == "real" and new and audit_rate > 0:
                picked = set(random.Random(seed).sample(range(len(new)), math.ceil(audit_rate * len(new) - 1e-9)))
                new = [r | {"audit": i in picked} for i, r in enumerate(new)]
                summary["audit_picked"] = len(picked)
            session.add_all([Pair(batch_id=batch.id, overlap=overlap if kind == "real" else 0, **r) for r in new])
            summary["added"][kind], summary["already"][kind] = len(new), len(rows) - len(new)
            summary["unusable"][kind], summary["repeated"][kind] = left_out["unusable"], left_out["repeated"]
        if not any(summary["added"].values()):
            session.delete(batch)  # nothing new: no batch
        else:
            summary["batch"] = batch.id

    transact(session, work)
    database_of(session).cache.pop("latest_batch", None)
    return summary


# ---- statistics -------------------------------------------------------------------------------------------------
def _labels_by_pair(session: Session, kinds: Sequence[str] = ("real",)) -> dict[int, list[Any]]:
    """Labels (``labels.Label``, IMPORTED order) of pairs of ``kinds``, per pair id, in the order they came in."""
    rows = session.scalars(select(StoredLabel).join(Pair, StoredLabel.pair_id == Pair.id)
                           .where(Pair.kind.in_(kinds)).order_by(StoredLabel.id))
    out: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        out[row.pair_id].append(_stored_label(row))
    return out


def _share(agree: int, total: int) -> float | None:
    return agree / total if total else None


def _complete_ids(session: Session) -> tuple[dict[int, int], set[int]]:
    """(done labels per real pair, ids of real pairs with their batch's overlap of labels)."""
    done = dict(session.execute(select(Task.pair_id, func.count()).join(Pair).where(
        Task.state == "done", Pair.kind == "real").group_by(Task.pair_id)).all())
    overlap = dict(session.execute(select(Pair.id, Batch.overlap).join(Batch, Pair.batch_id == Batch.id)
                                   .where(Pair.kind == "real")).all())
    return done, {p for p, k in overlap.items() if done.get(p, 0) >= k}


def stats(session: Session) -> dict[str, Any]:
    """Progress, agreement per question (Krippendorff's alpha, Fleiss' kappa, pairwise agreement over real pairs
    with 2+ labels), per annotator (labels, skips, qualification and gold accuracy, agreement with the other
    annotators of the same pairs, audit accuracy) and the audits (majority vs the admins' verdicts). Accuracies
    are shares of questions (4 per pair); None where there is nothing to measure."""
    from saferlhf.annotate.labels import agreement

    real = _labels_by_pair(session, ("real",))
    checked = _labels_by_pair(session, ("gold", "qualification"))
    kinds = dict(session.execute(select(Pair.id, Pair.kind)).all())
    expected = {p: _expected(pair) for p, pair in
                ((pid, session.get(Pair, pid)) for pid in checked)}
    done, complete = _complete_ids(session)
    states = dict(session.execute(select(Task.state, func.count()).join(Pair).where(Pair.kind == "real")
                                  .group_by(Task.state)).all())
    needed = sum(k for (k,) in session.execute(select(Batch.overlap).join(Pair, Pair.batch_id == Batch.id)
                                                .where(Pair.kind == "real")))
    n_real = sum(kind == "real" for kind in kinds.values())
    progress = {"pairs": n_real, "complete": len(complete), "labels": sum(done.values()),
                "labels_needed": needed, "open_tasks": states.get("open", 0), "skipped": states.get("skipped", 0),
                "expired": states.get("expired", 0),
                "gold_pairs": sum(k == "gold" for k in kinds.values()),
                "qualification_pairs": sum(k == "qualification" for k in kinds.values())}
    audits = _audit_summary(session, real)
    # per annotator: [agreeing answers, answers, items] against the expected labels / the other annotators
    checks: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for pid, labels in checked.items():
        for lb in labels:
            _tally(checks[lb.annotator, kinds[pid]], lb, expected[pid])
    for labels in real.values():
        for lb in labels:
            checks[lb.annotator, "real"][2] += 1
            for other in labels:
                if other.annotator != lb.annotator:
                    _tally(checks[lb.annotator, "rest"], lb, other)
    annotators = []
    for user in session.scalars(select(User).where(User.role == "annotator").order_by(User.id)):
        rest = checks[user.name, "rest"]
        annotators.append({
            "name": user.name, "status": user.status, "lock_reason": user.lock_reason, "disabled": user.disabled,
            "labels": checks[user.name, "real"][2],
            **{kind: {"items": checks[user.name, kind][2], "accuracy": _share(*checks[user.name, kind][:2])}
               for kind in ("qualification", "gold")},
            "agreement_with_rest": {"comparisons": rest[2], "agreement": _share(rest[0], rest[1])},
            "audit": audits["annotators"].get(user.name, {"items": 0, "accuracy": None})})
    multi = [labels for labels in real.values() if len(labels) >= 2]
    return {"progress": progress, "agreement": agreement(multi, alpha=True), "annotators": annotators,
            "audit": {k: v for k, v in audits.items() if k != "annotators"}}


def _tally(counts: list[int], label: Any, reference: Any) -> None:
    a, n = agreement_counts(label, reference)
    counts[0], counts[1], counts[2] = counts[0] + a, counts[1] + n, counts[2] + 1


def _audit_summary(session: Session, real: dict[int, list[Any]]) -> dict[str, Any]:
    from saferlhf.annotate.labels import label_from_dict

    done, complete = _complete_ids(session)
    picked = set(session.scalars(select(Pair.id).where(Pair.kind == "real", Pair.audit)))
    verdicts = {a.pair_id: label_from_dict(json.loads(a.verdict)) for a in session.scalars(select(Audit))}
    majority_agree = majority_total = 0
    per_user: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for pid, verdict in verdicts.items():
        labels = real.get(pid, [])
        if labels:
            a, n = agreement_counts(_majority_label(session, pid, labels), verdict)
            majority_agree, majority_total = majority_agree + a, majority_total + n
        for lb in labels:
            a, n = agreement_counts(lb, verdict)
            per_user[lb.annotator][0] += a
            per_user[lb.annotator][1] += n
            per_user[lb.annotator][2] += 1
    return {"picked": len(picked), "ready": len((picked & complete) - set(verdicts)), "done": len(verdicts),
            "accuracy": _share(majority_agree, majority_total),
            "annotators": {name: {"items": c[2], "accuracy": _share(c[0], c[1])} for name, c in per_user.items()}}


def _pair_dict(pair: Pair) -> dict[str, Any]:
    """A pair as ``aggregate_labels`` reads it (prompt as loaded: a string or a conversation)."""
    from saferlhf.data.schema import as_prompt

    return {"pair_id": pair.id, "prompt": as_prompt(json.loads(pair.prompt)), "response_0": pair.response_0,
            "response_1": pair.response_1, "prompt_source": pair.prompt_source,
            "response_0_source": pair.response_0_source, "response_1_source": pair.response_1_source,
            "ended_0": pair.ended_0, "ended_1": pair.ended_1}


def _majority_label(session: Session, pair_id: int, labels: list[Any]) -> Any:
    """The crowd's majority label of a pair (as exported: ties toward unsafe)."""
    from saferlhf.annotate.aggregate import aggregate_labels
    from saferlhf.annotate.labels import record_label

    records, _ = aggregate_labels([_pair_dict(session.get(Pair, pair_id))], {pair_id: labels}, ties="keep")
    return record_label(records[0])


# ---- audits -----------------------------------------------------------------------------------------------------
def audit_queue(session: Session) -> list[dict[str, Any]]:
    """Real pairs picked for audit that have their ``overlap`` labels and no verdict yet, oldest first: pair_id,
    prompt (text), response_0, response_1 (IMPORTED order), the crowd's labels (``label_to_dict``) and their
    majority."""
    from saferlhf.annotate.labels import label_to_dict

    _, complete = _complete_ids(session)
    audited = select(Audit.pair_id)
    pairs = session.scalars(select(Pair).where(Pair.kind == "real", Pair.audit, Pair.id.not_in(audited))
                            .order_by(Pair.id)).all()
    out = []
    for pair in pairs:
        if pair.id not in complete:
            continue
        labels = _labels_by_pair_ids(session, [pair.id]).get(pair.id, [])
        out.append({"pair_id": pair.id, "prompt": str(_pair_dict(pair)["prompt"]), "response_0": pair.response_0,
                    "response_1": pair.response_1, "labels": [label_to_dict(lb) for lb in labels],
                    "majority": label_to_dict(_majority_label(session, pair.id, labels))})
    return out


def _labels_by_pair_ids(session: Session, pair_ids: list[int]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = defaultdict(list)
    for row in session.scalars(select(StoredLabel).where(StoredLabel.pair_id.in_(pair_ids)).order_by(StoredLabel.id)):
        out[row.pair_id].append(_stored_label(row))
    return out


def submit_audit(session: Session, admin: User, pair_id: int, helpful: Any, harmless: Any, categories: Any,
                 severity: Any) -> Any:
    """Store an admin's verdict on a pair of the audit queue (answers in the IMPORTED order) and return it as a
    ``labels.Label``. Raises ``Invalid``, ``NotFound`` (no such real pair), ``Conflict`` (not in the queue, or
    audited already), ``Forbidden`` (not an admin)."""
    from saferlhf.annotate.labels import label_to_dict

    require_role(admin, "admin")
    verdict = make_label(admin.name, helpful, harmless, categories, severity)

    def work() -> Any:
        pair = session.scalar(select(Pair).where(Pair.id == pair_id, Pair.kind == "real").with_for_update(of=Pair))
        if pair is None:
            raise NotFound(f"no pair {pair_id}")
        if session.scalar(select(Audit.id).where(Audit.pair_id == pair_id)) is not None:
            raise Conflict(f"pair {pair_id} is audited already")
        if not pair.audit or _active_done(session, pair_id) < pair.batch.overlap:
            raise Conflict(f"pair {pair_id} is not in the audit queue (not picked for audit, or not fully labelled)")
        session.add(Audit(pair_id=pair_id, admin_id=admin.id, verdict=json.dumps(label_to_dict(verdict)),
                          created=now()))
        return verdict

    try:
        return transact(session, work)
    except IntegrityError:
        raise Conflict(f"pair {pair_id} is audited already") from None


def _active_done(session: Session, pair_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Task).where(Task.pair_id == pair_id,
                                                                       Task.state == "done")) or 0


# ---- export -----------------------------------------------------------------------------------------------------
def export_paths(out: str | Path) -> tuple[Path, Path, Path]:
    """(records, raw labels, statistics): ``prefs.jsonl`` -> ``prefs.labels.jsonl``, ``prefs.stats.json``."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix else out
    return out, Path(f"{stem}.labels.jsonl"), Path(f"{stem}.stats.json")


def export(session: Session, out: str | Path, *, ties: str = "drop", include_incomplete: bool = False,
           aggregation: str = "majority", exclude: Sequence[str] = (),
           exclude_below: float | None = None) -> dict[str, Any]:
    """Write the aggregated PKU-SafeRLHF v1 JSONL of the real pairs with their ``overlap`` labels (any labelled
    pair with ``include_incomplete``) to ``out``, every raw label and audit verdict to ``<stem>.labels.jsonl`` and
    the statistics (aggregation counts and agreement, and ``stats(session)``) to ``<stem>.stats.json``. ``ties``:
    drop (default) or keep records whose helpfulness / harmlessness majority is still a tie (kept: id 0 and
    ``better_response_tie`` / ``safer_response_tie``). ``aggregation``: majority (ties toward unsafe), dawid_skene
    or soft (``aggregate.aggregate_labels``); ``exclude`` / ``exclude_below``: annotators left out by name, or by a
    Dawid-Skene accuracy below the value (the statistics say who and why). Returns the counts and the three paths."""
    from saferlhf.annotate.aggregate import AGGREGATIONS, aggregate_labels
    from saferlhf.files import atomic_write_json, atomic_write_jsonl

    if ties not in ("drop", "keep"):
        raise Invalid("ties", f"{ties!r}: expected drop or keep")
    if aggregation not in AGGREGATIONS:
        raise Invalid("aggregation", f"{aggregation!r}: expected one of {', '.join(AGGREGATIONS)}")
    if exclude_below is not None and not 0 <= exclude_below <= 1:
        raise Invalid("exclude_below", f"{exclude_below} is outside [0, 1]")
    known = set(session.scalars(select(User.name)).all())
    if unknown := [n for n in exclude if n not in known]:
        raise Invalid("exclude", f"no user {unknown[0]!r}")
    out_path, labels_path, stats_path = export_paths(out)
    done, complete = _complete_ids(session)
    labels = _labels_by_pair(session, ("real",))
    wanted = [p for p in labels if include_incomplete or p in complete]
    pairs = session.scalars(select(Pair).where(Pair.id.in_(wanted)).order_by(Pair.id)).all() if wanted else []
    records, agg = aggregate_labels([_pair_dict(p) for p in pairs], {p.id: labels[p.id] for p in pairs}, ties=ties,
                                    method=aggregation, exclude=tuple(exclude), exclude_below=exclude_below,
                                    reliability=True)
    raw = _raw_rows(session)
    app_stats = stats(session)
    atomic_write_jsonl(out_path, records)
    atomic_write_jsonl(labels_path, raw)
    atomic_write_json(stats_path, {"export": agg, "ties": ties, "include_incomplete": include_incomplete,
                                   "aggregation": aggregation, **app_stats})
    return {"records": len(records), "pairs": len(pairs), "complete": len(complete),
            "labels": sum(r["type"] == "label" for r in raw), "audits": sum(r["type"] == "audit" for r in raw),
            "counts": agg.get("counts", {}), "excluded": agg.get("exclusion", {}).get("excluded", {}),
            "out": str(out_path), "labels_file": str(labels_path),
            "stats_file": str(stats_path)}


def _raw_rows(session: Session) -> list[dict[str, Any]]:
    """Every stored label (with its pair, kind, task and displayed order) and every audit verdict, as JSON rows."""
    from saferlhf.annotate.labels import label_to_dict
    from saferlhf.annotate.pairs import pair_id as stable_pair_id
    from saferlhf.data.schema import as_prompt

    pairs = {p.id: p for p in session.scalars(select(Pair))}
    ids = {pid: stable_pair_id(as_prompt(json.loads(p.prompt)), p.response_0, p.response_1) for pid, p in pairs.items()}
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.state == "done"))}
    rows = []
    for row in session.scalars(select(StoredLabel).order_by(StoredLabel.id)):
        task = tasks[row.task_id]
        rows.append({"type": "label", "pair": row.pair_id, "pair_id": ids[row.pair_id],
                     "kind": pairs[row.pair_id].kind, "task_id": task.task_id, "swapped": task.swapped,
                     "created": row.created, **label_to_dict(_stored_label(row))})
    for audit in session.scalars(select(Audit).order_by(Audit.id)):
        rows.append({"type": "audit", "pair": audit.pair_id, "pair_id": ids[audit.pair_id], "kind": "real",
                     "created": audit.created, "admin": audit.admin.name, "verdict": json.loads(audit.verdict)})
    return rows
