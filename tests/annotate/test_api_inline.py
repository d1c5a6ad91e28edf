"""SQLite: the labelling requests run on the event loop (api.in_session) but never wait there. While the write lock is
held (by another process, like `annotate import`, or by another thread of the server) a labelling request goes to
the database thread and waits there: the server keeps answering meanwhile, and the request completes once the lock
is released. Also ``connect(sqlite_synchronous=...)`` and the statement warm-up."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("krippendorff")

import httpx  # noqa: E402

from saferlhf.annotate.app import service as S  # noqa: E402
from saferlhf.annotate.app.api import create_app  # noqa: E402
from saferlhf.annotate.app.db import connect  # noqa: E402
from saferlhf.errors import UserError  # noqa: E402

from .test_service import pair_rows, write_jsonl  # noqa: E402


def hold_lock_then_request(base: str, token: str, hold: Any, release: Any) -> tuple[dict[str, Any], float]:
    """While ``hold()``..``release()`` keeps the write lock, ask for a task in a thread (it has to wait) and for
    /api/me here (it must not): (the task request's outcome, seconds /api/me took)."""
    auth = {"Authorization": f"Bearer {token}"}
    outcome: dict[str, Any] = {}

    def ask_task() -> None:
        with httpx.Client(base_url=base, headers=auth, timeout=30) as c:
            outcome["response"] = c.get("/api/tasks/next")
            outcome["at"] = time.monotonic()

    hold()
    try:
        waiting = threading.Thread(target=ask_task)
        waiting.start()
        time.sleep(0.5)  # the task request is in: it found the lock taken
        assert "response" not in outcome, "a labelling request went through while the write lock was held"
        t = time.monotonic()
        me = httpx.get(f"{base}/api/me", headers=auth, timeout=10)
        me_s = time.monotonic() - t
        assert me.status_code == 200 and me.json()["name"] == "ann"
        released = time.monotonic()
    finally:
        release()
    waiting.join(30)
    assert outcome["response"].status_code == 200 and outcome["at"] >= released
    return outcome, me_s


@pytest.fixture
def served(tmp_path, live_server):
    url = f"sqlite:///{tmp_path / 'annotate.db'}"
    app = create_app(url)
    db = app.state.db
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(3))), gold_rate=0)
        token = S.add_user(s, "ann", "annotator")
    yield live_server(app), token, db, tmp_path / "annotate.db"
    db.close()


def test_a_write_by_another_process_does_not_stall_the_server(served):
    base, token, _db, path = served
    other = sqlite3.connect(path, isolation_level=None, timeout=30)  # another process, e.g. `annotate import`
    outcome, me_s = hold_lock_then_request(base, token, lambda: other.execute("BEGIN IMMEDIATE"),
                                           lambda: other.execute("COMMIT"))
    other.close()
    assert me_s < 2.0, f"/api/me took {me_s:.1f} s while another process held the write lock"
    assert outcome["response"].json()["task_id"]


def test_a_write_by_another_thread_does_not_stall_the_server(served):
    base, token, db, _path = served
    outcome, me_s = hold_lock_then_request(base, token, db.write_lock.acquire, db.write_lock.release)
    assert me_s < 2.0, f"/api/me took {me_s:.1f} s while another thread held the write lock"


@pytest.mark.parametrize("mode, pragma", [("full", 2), ("normal", 1)])
def test_sqlite_synchronous(tmp_path, mode, pragma):
    db = connect(f"sqlite:///{tmp_path / 'a.db'}", sqlite_synchronous=mode)
    with db.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == pragma
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    db.close()
    with pytest.raises(UserError, match="sqlite_synchronous 'off'"):
        connect(f"sqlite:///{tmp_path / 'b.db'}", sqlite_synchronous="off")


def test_warm_up_writes_nothing(db_url, tmp_path):
    db = connect(db_url)
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(2))), gold_rate=0)
        (ann,) = [S.authenticate(s, S.add_user(s, "ann", "annotator"))]
        before = S.stats(s)["progress"]
        S.warm_up(s)
        assert S.stats(s)["progress"] == before
        task = S.next_task(s, ann)  # the warmed statements still do their work
        S.submit_label(s, ann, task.task_id, 0, 1, [[], []], [0, 0])
        assert S.stats(s)["progress"]["labels"] == 1
    db.close()
