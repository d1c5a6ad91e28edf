"""The JSON API as a client meets it, on SQLite and on PostgreSQL (``db_url``): every status code of the issue
(200 / 201 / 204 / 401 / 403 / 404 / 409 / 422), the displayed order mapped back, an annotator never reaching
another's labels or an admin page, and 20 concurrent annotators over a live server: every acknowledged label stored
exactly once, every pair labelled by exactly `overlap` distinct annotators."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("krippendorff")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from saferlhf.annotate.app import service as S  # noqa: E402
from saferlhf.annotate.app.api import create_app  # noqa: E402
from saferlhf.annotate.app.db import Pair, StoredLabel, Task  # noqa: E402

from .test_service import SELF_HARM, answer, pair_rows, pku_rows, write_jsonl  # noqa: E402

SAFE = {"categories": [[], []], "severity": [0, 0]}


class Campaign:
    """An app over ``db_url`` with users and pairs, and a TestClient."""

    def __init__(self, db_url: str, tmp_path, n_pairs: int = 4, qualification: int = 0, **import_args: Any):
        self.app = create_app(db_url)
        self.db = self.app.state.db
        self.client = TestClient(self.app)
        with self.db.session() as s:
            qual = str(write_jsonl(tmp_path / "qual.jsonl", pku_rows(qualification, "qual"))) if qualification else None
            S.import_pairs(s, str(write_jsonl(tmp_path / "pairs.jsonl", pair_rows(n_pairs))), qualification=qual,
                           **({"gold_rate": 0} | import_args))
            self.tokens = {name: S.add_user(s, name, role) for name, role in
                           (("ann", "annotator"), ("bob", "annotator"), ("boss", "admin"))}

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def get(self, path: str, who: str | None = None) -> httpx.Response:
        return self.client.get(path, headers=self.auth(who) if who else {})

    def post(self, path: str, who: str | None = None, body: Any = None, raw: bytes | None = None) -> httpx.Response:
        headers = (self.auth(who) if who else {}) | {"content-type": "application/json"}
        return self.client.post(path, headers=headers, content=raw if raw is not None else json.dumps(body or {}))

    def label(self, who: str, task_id: str, **answers: Any) -> httpx.Response:
        return self.post("/api/labels", who, {"task_id": task_id, "helpful": 0, "harmless": 0, **SAFE} | answers)

    def close(self) -> None:
        self.client.close()
        self.db.close()


@pytest.fixture
def campaign(db_url, tmp_path):
    c = Campaign(db_url, tmp_path)
    yield c
    c.close()


def error_of(r: httpx.Response) -> dict[str, Any]:
    return r.json()["error"]


def test_next_task_label_and_204(campaign):
    c = campaign
    r = c.get("/api/tasks/next", "ann")
    assert r.status_code == 200
    task = r.json()
    assert set(task) == {"task_id", "prompt", "responses", "qualification"}
    assert task["qualification"] is False and task["prompt"].startswith("q prompt ")
    i = int(task["prompt"].rsplit(" ", 1)[1])
    assert sorted(task["responses"]) == [f"q first answer {i}", f"q second answer {i}"]
    assert c.get("/api/tasks/next", "ann").json() == task  # the open task again, in the same order
    r = c.label("ann", task["task_id"], helpful=1, harmless="tie",
                categories=[["self_harm"], []], severity=[3, 0])
    assert r.status_code == 201 and r.json() == {"task_id": task["task_id"], "stored": True}
    with c.db.session() as s:  # displayed index 1 stored as its imported index
        row = s.scalar(select(StoredLabel))
        shown_first_is_0 = task["responses"][0] == f"q first answer {i}"
        assert row.better == (1 if shown_first_is_0 else 0) and row.safer is None
        unsafe = row.categories_0 if shown_first_is_0 else row.categories_1
        assert json.loads(unsafe) == [SELF_HARM]
    assert c.label("ann", task["task_id"]).status_code == 409  # a second label on the same task
    assert "already labelled" in error_of(c.label("ann", task["task_id"]))["message"]
    for _ in range(3):
        t = c.get("/api/tasks/next", "ann").json()
        assert c.label("ann", t["task_id"]).status_code == 201
    assert c.get("/api/tasks/next", "ann").status_code == 204  # all 4 pairs labelled by ann
    me = c.get("/api/me", "ann").json()
    assert me == {"name": "ann", "role": "annotator", "status": "active", "lock_reason": None}


def test_401_without_a_valid_token_or_for_a_disabled_user(campaign):
    c = campaign
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": c.tokens["ann"]},
                    {"Authorization": f"Basic {c.tokens['ann']}"}):
        r = c.client.get("/api/tasks/next", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert error_of(r)["type"] == "authentication_error"
    assert c.post("/api/labels", None, raw=b"{not json").status_code == 401  # the token is checked first
    assert c.get("/api/admin/stats").status_code == 401
    with c.db.session() as s:
        S.disable_user(s, "ann")
    assert c.get("/api/tasks/next", "ann").status_code == 401


def test_403_for_the_wrong_role(campaign):
    c = campaign
    for path in ("/api/admin/stats", "/api/admin/audits"):
        r = c.get(path, "ann")
        assert r.status_code == 403 and "admin" in error_of(r)["message"]
    assert c.post("/api/admin/audits/1", "ann", {"helpful": 0, "harmless": 0, **SAFE}).status_code == 403
    assert c.get("/api/tasks/next", "boss").status_code == 403
    assert c.post("/api/labels", "boss", {"task_id": "x", "helpful": 0, "harmless": 0, **SAFE}).status_code == 403


def test_403_with_the_reason_for_a_locked_annotator(db_url, tmp_path):
    c = Campaign(db_url, tmp_path, qualification=2)
    try:
        for _ in range(2):  # wrong on helpfulness and harmlessness of both items: 4 of 8 < 0.9
            t = c.get("/api/tasks/next", "ann").json()
            assert t["qualification"] is True
            with c.db.session() as s:
                task = s.scalar(select(Task).where(Task.task_id == t["task_id"]))
                body = answer(task, S._expected(s.get(Pair, task.pair_id)), wrong=2)
            assert c.label("ann", t["task_id"], **body).status_code == 201
        r = c.get("/api/tasks/next", "ann")
        assert r.status_code == 403
        assert "qualification failed: 4 of 8 answers (50%)" in error_of(r)["message"]
        assert c.get("/api/me", "ann").json()["status"] == "locked"
        assert c.label("ann", "whatever").status_code == 403
    finally:
        c.close()


@pytest.mark.parametrize("body, field", [
    ({"helpful": 2}, "helpful"),
    ({"harmless": None}, "harmless"),
    ({"categories": [["not a harm"], []], "severity": [1, 0]}, "categories[0]"),
    ({"categories": [[], ["self_harm"]], "severity": [0, 0]}, "severity[1]"),
    ({"severity": [0, 7]}, "severity[1]"),
    ({"severity": [2, 0]}, "severity[0]"),
    ({"categories": "none"}, "categories"),
    ({"task_id": 5}, "task_id"),
    ({"extra": 1}, "extra"),
])
def test_422_names_the_field(campaign, body, field):
    c = campaign
    t = c.get("/api/tasks/next", "ann").json()
    r = c.post("/api/labels", "ann", {"task_id": t["task_id"], "helpful": 0, "harmless": 0, **SAFE} | body)
    assert r.status_code == 422, r.text
    assert error_of(r)["field"] == field and error_of(r)["message"].startswith(f"{field}: ")
    assert c.get("/api/tasks/next", "ann").json()["task_id"] == t["task_id"]  # nothing stored


def test_422_for_a_malformed_body(campaign):
    c = campaign
    assert error_of(c.post("/api/labels", "ann", raw=b"{broken"))["field"] == "body"
    assert error_of(c.post("/api/labels", "ann", raw=b"[1, 2]"))["field"] == "body"
    r = c.post("/api/labels", "ann", {"task_id": "x", "helpful": 0})
    assert r.status_code == 422 and error_of(r)["field"] == "harmless"
    r = c.post("/api/admin/audits/notanumber", "boss", {"helpful": 0, "harmless": 0, **SAFE})
    assert r.status_code == 422 and error_of(r)["field"] == "pair_id"


def test_404_and_an_annotator_never_reaches_another_annotators_task(campaign):
    c = campaign
    t = c.get("/api/tasks/next", "ann").json()
    assert c.label("bob", t["task_id"]).status_code == 404  # bob cannot label, skip or see ann's task
    assert c.post(f"/api/tasks/{t['task_id']}/skip", "bob").status_code == 404
    assert c.label("ann", "no-such-task").status_code == 404
    assert c.label("ann", t["task_id"]).status_code == 201
    bob_task = c.get("/api/tasks/next", "bob").json()
    assert set(bob_task) == {"task_id", "prompt", "responses", "qualification"}  # no label of anyone in it
    assert c.get(f"/api/labels/{t['task_id']}", "bob").status_code in (404, 405)


def test_skip(campaign):
    c = campaign
    t = c.get("/api/tasks/next", "ann").json()
    r = c.post(f"/api/tasks/{t['task_id']}/skip", "ann")
    assert r.status_code == 200 and r.json() == {"task_id": t["task_id"], "state": "skipped"}
    assert c.post(f"/api/tasks/{t['task_id']}/skip", "ann").status_code == 409
    assert c.label("ann", t["task_id"]).status_code == 409
    nxt = c.get("/api/tasks/next", "ann").json()
    assert nxt["task_id"] != t["task_id"] and nxt["prompt"] != t["prompt"]
    assert c.post("/api/tasks/unknown/skip", "ann").status_code == 404


def test_admin_stats_and_audits(db_url, tmp_path):
    c = Campaign(db_url, tmp_path, n_pairs=10, audit_rate=0.1, overlap=2, seed=1)
    try:
        assert c.get("/api/admin/audits", "boss").json() == {"audits": []}
        for who in ("ann", "bob"):
            while (r := c.get("/api/tasks/next", who)).status_code == 200:
                assert c.label(who, r.json()["task_id"]).status_code == 201
        stats = c.get("/api/admin/stats", "boss").json()
        assert stats["progress"]["pairs"] == 10 and stats["progress"]["complete"] == 10
        assert stats["progress"]["labels"] == 20
        for q in ("helpfulness", "harmlessness", "safety"):
            assert set(stats["agreement"][q]) >= {"krippendorff_alpha", "fleiss_kappa", "pairwise_agreement", "items"}
        names = [a["name"] for a in stats["annotators"]]
        assert names == ["ann", "bob"]
        for a in stats["annotators"]:
            assert a["agreement_with_rest"]["comparisons"] == 10
            assert set(a) >= {"gold", "qualification", "audit", "status"}
        queue = c.get("/api/admin/audits", "boss").json()["audits"]
        assert len(queue) == 1 and len(queue[0]["labels"]) == 2  # ceil(0.1 * 10)
        pair_id = queue[0]["pair_id"]
        verdict = {"helpful": 0, "harmless": 0, **SAFE}
        assert c.post(f"/api/admin/audits/{pair_id}", "boss", verdict | {"severity": [1, 0]}).status_code == 422
        assert c.post(f"/api/admin/audits/{pair_id}", "boss", verdict).status_code == 201
        assert c.post(f"/api/admin/audits/{pair_id}", "boss", verdict).status_code == 409
        assert c.post("/api/admin/audits/99999", "boss", verdict).status_code == 404
        stats = c.get("/api/admin/stats", "boss").json()
        assert stats["audit"]["done"] == 1 and stats["audit"]["accuracy"] is not None
        assert c.get("/api/admin/audits", "boss").json() == {"audits": []}
    finally:
        c.close()


def test_twenty_concurrent_annotators_store_every_label_exactly_once(db_url, tmp_path, live_server):
    """20 annotators at once over a real server, 30 pairs at overlap 2: 60 labels acknowledged (201), 60 stored,
    each pair by 2 distinct annotators, nobody twice; no request failed."""
    n_users, n_pairs = 20, 30
    app = create_app(db_url)
    db = app.state.db
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(n_pairs))), overlap=2, gold_rate=0)
        tokens = [S.add_user(s, f"u{i}", "annotator") for i in range(n_users)]
    base = live_server(app)
    acked: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(n_users)

    def annotate(token: str) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            start.wait()
            while True:
                r = client.get("/api/tasks/next")
                if r.status_code == 204:
                    return
                if r.status_code != 200:
                    failures.append(f"next {r.status_code} {r.text}")
                    return
                task_id = r.json()["task_id"]
                r = client.post("/api/labels", json={"task_id": task_id, "helpful": 0, "harmless": 1, **SAFE})
                if r.status_code != 201:
                    failures.append(f"label {r.status_code} {r.text}")
                    return
                with lock:
                    acked.append(task_id)

    threads = [threading.Thread(target=annotate, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:3]
    assert len(acked) == len(set(acked)) == 2 * n_pairs
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(StoredLabel)) == 2 * n_pairs
        per_pair = s.execute(select(StoredLabel.pair_id, func.count(), func.count(StoredLabel.user_id.distinct()))
                             .group_by(StoredLabel.pair_id)).all()
        assert len(per_pair) == n_pairs and all(n == 2 == d for _, n, d in per_pair)
        done = set(s.scalars(select(Task.task_id).where(Task.state == "done")))
        assert done == set(acked)
    db.close()
