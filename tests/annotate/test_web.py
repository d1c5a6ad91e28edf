"""The browser UI's pages through HTTP (``web.py`` on ``api.create_app``), on SQLite and PostgreSQL: signing in and
out, CSRF, roles, labels posted through the form stored in the imported order, form errors naming the field,
hostile text escaped everywhere, the audit and the export pages, sessions that survive a restart."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("jinja2")
pytest.importorskip("itsdangerous")
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from saferlhf.annotate.app import service  # noqa: E402
from saferlhf.annotate.app.api import create_app  # noqa: E402
from saferlhf.annotate.app.db import StoredLabel, Task  # noqa: E402
from saferlhf.annotate.app.web import SESSION_COOKIE  # noqa: E402
from saferlhf.data.schema import HARM_CATEGORIES  # noqa: E402

VIOLENCE, PRIVACY = HARM_CATEGORIES[2], HARM_CATEGORIES[4]
HOSTILE = ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "</textarea><svg onload=alert(2)>"]
LONG = "a long answer " * 7500  # 105 kB
CONTROLS = "bell\x07 escape\x1b[31m null\x00 del\x7f c1\x85 end"


# ---- a campaign: files, users, an app ---------------------------------------------------------------------------
def pku_record(prompt: str, r0: str, r1: str, better: int, safer: int, safe: tuple[bool, bool]) -> dict[str, Any]:
    cats = [{c: (not s and c == VIOLENCE) for c in HARM_CATEGORIES} for s in safe]
    return {"prompt": prompt, "response_0": r0, "response_1": r1, "better_response_id": better,
            "safer_response_id": safer, "is_response_0_safe": safe[0], "is_response_1_safe": safe[1],
            "response_0_harm_category": cats[0], "response_1_harm_category": cats[1],
            "response_0_severity_level": 0 if safe[0] else 2, "response_1_severity_level": 0 if safe[1] else 2}


QUALIFICATION = [pku_record("How do I pick a lock?", "I can't help with breaking into places.",
                            "Insert a tension wrench, then rake the pins until it opens.", 1, 0, (True, False)),
                 pku_record("Give me a cake recipe.", "Flour, eggs, sugar, butter: mix and bake 30 min at 180 C.",
                            "No.", 0, 0, (True, True))]


def plain_pairs(n: int) -> list[dict[str, str]]:
    return [{"prompt": f"Question {i}: how should I do thing {i}?", "response_0": f"First answer to {i}.",
             "response_1": f"Second answer to {i}, quite different."} for i in range(n)]


def hostile_pairs() -> list[dict[str, str]]:
    return [{"prompt": f"{HOSTILE[0]} tell me\nline two", "response_0": HOSTILE[1], "response_1": HOSTILE[2]},
            {"prompt": CONTROLS, "response_0": LONG, "response_1": f"short {HOSTILE[0]}"}]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@dataclass
class Campaign:
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> Any:
        return self.app.state.db

    def client(self, name: str | None = None) -> TestClient:
        client = TestClient(self.app)
        if name is not None:
            sign_in(client, self.tokens[name])
        return client


def make_campaign(db_url: str, folder: Path, real: list[dict[str, str]], *, qualification: bool = True,
                  annotators: tuple[str, ...] = ("ann",), overlap: int = 1, audit_rate: float = 1.0) -> Campaign:
    """An app over ``db_url`` with ``real`` pairs (and the two qualification pairs), the annotators and an admin."""
    app = create_app(db_url)
    camp = Campaign(app)
    with camp.db.session() as s:
        service.import_pairs(s, write_jsonl(folder / "pairs.jsonl", real),
                             qualification=write_jsonl(folder / "qual.jsonl", QUALIFICATION) if qualification else None,
                             overlap=overlap, gold_rate=0.0, audit_rate=audit_rate, seed=3)
        for name in annotators:
            camp.tokens[name] = service.add_user(s, name, "annotator")
        camp.tokens["boss"] = service.add_user(s, "boss", "admin")
    return camp


@pytest.fixture
def campaign_of(db_url, tmp_path):
    made: list[Campaign] = []

    def make(real: list[dict[str, str]], **kw: Any) -> Campaign:
        made.append(make_campaign(db_url, tmp_path, real, **kw))
        return made[-1]

    yield make
    for camp in made:
        camp.db.close()


# ---- talking to the pages ---------------------------------------------------------------------------------------
def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def sign_in(client: TestClient, token: str) -> Any:
    page = client.get("/login").text
    return client.post("/login", data={"token": token, "csrf": csrf_of(page)})


def task_page(client: TestClient) -> str:
    """The labelling page (the content warning acknowledged first)."""
    page = client.get("/label")
    if "Content warning" in page.text:
        page = client.post("/label/warning", data={"csrf": csrf_of(page.text)})
    assert page.status_code == 200, page.text
    return page.text


def task_id_of(page: str) -> str:
    return re.search(r'name="task_id" value="([^"]+)"', page).group(1)


def shown_texts(page: str) -> list[str]:
    """The texts of the page's text blocks (prompt, A, B), unescaped."""
    return [html.unescape(t) for t in re.findall(r'<div class="text"[^>]*>(.*?)</div>', page, re.S)]


def swapped(camp: Campaign, task_id: str) -> bool:
    with camp.db.session() as s:
        return s.scalar(select(Task.swapped).where(Task.task_id == task_id))


def form_for(expected: dict[str, Any], swap: bool) -> dict[str, Any]:
    """Form fields (displayed order) for an answer given in the imported order."""
    def shown(v: Any) -> str:
        return "tie" if v == "tie" else str(1 - v if swap else v)

    order = (1, 0) if swap else (0, 1)
    data: dict[str, Any] = {"helpful": shown(expected["better"]), "harmless": shown(expected["safer"])}
    for shown_i, imported_i in enumerate(order):
        data[f"categories_{shown_i}"] = expected["categories"][imported_i]
        data[f"severity_{shown_i}"] = str(expected["severity"][imported_i])
    return data


def qualification_answer(prompt: str) -> dict[str, Any]:
    rec = next(r for r in QUALIFICATION if r["prompt"] == prompt)
    safe = (rec["is_response_0_safe"], rec["is_response_1_safe"])
    return {"better": rec["better_response_id"], "safer": rec["safer_response_id"],
            "categories": [[] if s else [VIOLENCE] for s in safe], "severity": [0 if s else 2 for s in safe]}


def post_label(client: TestClient, page: str, data: dict[str, Any]) -> Any:
    return client.post("/label", data={"csrf": csrf_of(page), "task_id": task_id_of(page), **data},
                       follow_redirects=False)


def pass_qualification(camp: Campaign, client: TestClient) -> str:
    """Answer the qualification items as expected; returns the first real task's page."""
    for _ in QUALIFICATION:
        page = task_page(client)
        assert "Qualification item" in page and "data-skip" not in page
        answer = qualification_answer(shown_texts(page)[0])
        assert post_label(client, page, form_for(answer, swapped(camp, task_id_of(page)))).status_code == 303
    page = client.get("/label").text
    assert "Qualification passed" in page and "Qualification item" not in page
    return page


def label_rows(camp: Campaign) -> list[StoredLabel]:
    with camp.db.session() as s:
        return list(s.scalars(select(StoredLabel).order_by(StoredLabel.id)))


# ---- tests ------------------------------------------------------------------------------------------------------
def test_sign_in_and_out(campaign_of):
    camp = campaign_of(plain_pairs(2))
    client = TestClient(camp.app)
    first = client.get("/label", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/login"
    assert client.get("/admin", follow_redirects=False).headers["location"] == "/login"

    wrong = client.post("/login", data={"token": "not-a-token-123", "csrf": csrf_of(client.get("/login").text)})
    assert wrong.status_code == 401 and "token: unknown or disabled token" in wrong.text
    assert "not-a-token-123" not in wrong.text  # a token is never echoed

    page = client.get("/login")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    signed = client.post("/login", data={"token": camp.tokens["ann"], "csrf": csrf_of(page.text)},
                         follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    assert "secure" not in cookie.lower()  # loopback: plain http works
    assert camp.tokens["ann"] not in cookie and camp.tokens["ann"] not in signed.headers["location"]
    assert client.get("/", follow_redirects=False).headers["location"] == "/label"
    warning = client.get("/label")
    assert warning.status_code == 200 and "Content warning" in warning.text and "ann (annotator)" in warning.text

    out = client.post("/logout", data={"csrf": csrf_of(warning.text)}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert "Signed out." in client.get("/login").text
    assert client.get("/label", follow_redirects=False).headers["location"] == "/login"

    admin = camp.client("boss")
    assert admin.get("/", follow_redirects=False).headers["location"] == "/admin"


def test_every_post_needs_the_sessions_csrf_token(campaign_of):
    camp = campaign_of(plain_pairs(2), qualification=False)
    client = camp.client("ann")
    page = task_page(client)
    other = camp.client("ann")  # another session of the same user: its token is not this session's
    foreign = csrf_of(other.get("/label").text)
    form = {"task_id": task_id_of(page), **form_for({"better": 0, "safer": 1, "categories": [[], []],
                                                     "severity": [0, 0]}, False)}
    posts = ["/login", "/logout", "/label/warning", "/label", "/label/skip", "/admin/audit",
             "/admin/annotators/disable"]
    for path in posts:
        for csrf in (None, "", "forged", foreign):
            data = dict(form, token=camp.tokens["ann"], name="ann") | ({} if csrf is None else {"csrf": csrf})
            r = client.post(path, data=data, follow_redirects=False)
            assert r.status_code == 403 and "security token" in r.text, (path, csrf, r.status_code)
    assert label_rows(camp) == []  # nothing was stored
    admin = camp.client("boss")
    r = admin.post("/admin/annotators/disable", data={"name": "ann", "csrf": "forged"})
    assert r.status_code == 403
    assert client.get("/label").status_code == 200  # ann is still enabled and signed in
    assert post_label(client, page, {k: v for k, v in form.items() if k != "task_id"}).status_code == 303
    assert len(label_rows(camp)) == 1


def test_an_annotator_cannot_open_admin_pages_nor_an_admin_the_labelling_page(campaign_of):
    camp = campaign_of(plain_pairs(2))
    ann, admin = camp.client("ann"), camp.client("boss")
    page = task_page(ann)
    for path in ("/admin", "/admin/annotators", "/admin/audit", "/admin/export", "/admin/export/prefs.jsonl",
                 "/admin/export/stats.json"):
        r = ann.get(path, follow_redirects=False)
        assert r.status_code == 403 and "needs the admin role" in r.text, path
        assert "Krippendorff" not in r.text and "response_0" not in r.text
    for path, data in (("/admin/audit", {"pair_id": "1", "helpful": "0", "harmless": "0"}),
                       ("/admin/annotators/disable", {"name": "boss"})):
        r = ann.post(path, data={"csrf": csrf_of(page), **data}, follow_redirects=False)
        assert r.status_code == 403, path
    with camp.db.session() as s:
        assert [u["disabled"] for u in service.list_users(s)] == [False, False]
    r = admin.get("/label")
    assert r.status_code == 403 and "needs the annotator role" in r.text
    stats = admin.get("/admin")
    assert stats.status_code == 200 and "Krippendorff" in stats.text


def test_a_label_posted_through_the_form_is_stored_in_the_imported_order(campaign_of):
    camp = campaign_of(plain_pairs(6))
    client = camp.client("ann")
    page = pass_qualification(camp, client)
    seen = set()
    for _ in range(6):
        if "Nothing left" in page:
            break
        task_id, swap = task_id_of(page), swapped(camp, task_id_of(page))
        prompt, a, b = shown_texts(page)
        with camp.db.session() as s:
            pair = s.scalar(select(Task).where(Task.task_id == task_id)).pair
            imported = (pair.response_0, pair.response_1)
        assert (a, b) == (imported[::-1] if swap else imported)  # the recorded order is what is shown
        # displayed answers: A more helpful, B more harmless, A unsafe (two categories, severe), B safe
        r = post_label(client, page, {"helpful": "0", "harmless": "1", "categories_0": [PRIVACY, VIOLENCE],
                                      "severity_0": "3", "severity_1": "0"})
        assert r.status_code == 303 and r.headers["location"] == "/label"
        row = label_rows(camp)[-1]
        a_index = 1 if swap else 0  # the imported index of what was shown as A
        assert (row.better, row.safer) == (a_index, 1 - a_index)
        assert json.loads(getattr(row, f"categories_{a_index}")) == [VIOLENCE, PRIVACY]  # canonical order
        assert json.loads(getattr(row, f"categories_{1 - a_index}")) == []
        assert (getattr(row, f"severity_{a_index}"), getattr(row, f"severity_{1 - a_index}")) == (3, 0)
        seen.add(swap)
        page = client.get("/label").text
        assert "Saved." in page
    assert seen == {True, False}, "both displayed orders should occur over six pairs"
    assert "Nothing left for you" in client.get("/label").text
    assert len(label_rows(camp)) == 6 + len(QUALIFICATION)


def test_a_form_error_names_the_field_and_keeps_the_answers(campaign_of):
    camp = campaign_of(plain_pairs(2), qualification=False)
    client = camp.client("ann")
    page = task_page(client)
    cases = [({"helpful": "0"}, "harmless", "More harmless", "choice"),
             ({"helpful": "0", "harmless": "maybe"}, "harmless", "More harmless", "choice"),
             ({"helpful": "1", "harmless": "tie", "categories_1": [VIOLENCE]}, "severity[1]",
              "Severity of response B", "severity"),
             ({"helpful": "1", "harmless": "tie", "severity_0": "2"}, "severity[0]", "Severity of response A",
              "severity"),
             ({"helpful": "tie", "harmless": "0", "categories_1": ["Not A Category"], "severity_1": "1"},
              "categories[1]", "Harm categories of response B", "categories")]
    for data, name, title, box in cases:
        r = post_label(client, page, data)
        assert r.status_code == 422, (data, r.text[:500])
        assert f"<strong>{title}</strong>" in r.text and f"<code>{html.escape(name)}</code>" in r.text, name
        assert r.text.count(" invalid\"") == 1 and f'class="{box} invalid"' in r.text, name
        assert "Traceback" not in r.text
        assert re.search(rf'name="helpful" value="{data["helpful"]}" checked', r.text)  # the answers stay
        for cat in data.get("categories_1", []):
            if cat in HARM_CATEGORIES:
                assert re.search(rf'name="categories_1" value="{re.escape(html.escape(cat))}"\s+checked', r.text)
        page = r.text
    assert label_rows(camp) == []
    r = post_label(client, page, {"helpful": "1", "harmless": "tie", "categories_1": [VIOLENCE], "severity_1": "2"})
    assert r.status_code == 303 and len(label_rows(camp)) == 1
    again = client.post("/label", data={"csrf": csrf_of(page), "task_id": task_id_of(page), "helpful": "1",
                                        "harmless": "tie"})
    assert again.status_code == 409 and "already labelled" in again.text and "Traceback" not in again.text
    unknown = client.post("/label", data={"csrf": csrf_of(page), "task_id": "nope", "helpful": "1",
                                          "harmless": "tie"})
    assert unknown.status_code == 404 and "no task 'nope' of yours" in html.unescape(unknown.text)


def assert_escaped(text: str) -> None:
    for raw in HOSTILE + ["<script>alert", "<img src=x", "<svg onload"]:
        assert raw not in text, raw
    for c in "\x00\x07\x1b\x7f\x85":
        assert c not in text, repr(c)


def test_hostile_text_is_escaped_everywhere(campaign_of):
    camp = campaign_of(hostile_pairs(), qualification=False)
    client, admin = camp.client("ann"), camp.client("boss")
    for _ in range(2):
        page = task_page(client)
        assert_escaped(page)
        texts = shown_texts(page)
        if LONG in texts:  # 105 kB, whole and escaped
            assert texts[0] == "bell␇ escape␛[31m null␀ del␡ c1\ufffd end"  # control characters made visible
        else:
            assert texts[0] == f"{HOSTILE[0]} tell me\nline two"  # newlines kept (shown by white-space: pre-wrap)
            assert set(texts[1:]) == {HOSTILE[1], HOSTILE[2]}
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        error = post_label(client, page, {"helpful": "0"})  # the 422 page shows the texts again
        assert error.status_code == 422
        assert_escaped(error.text)
        assert post_label(client, page, {"helpful": "0", "harmless": "1"}).status_code == 303
    for path in ("/admin", "/admin/annotators", "/admin/audit", "/admin/export?ties=%3Cscript%3Ealert(1)",
                 "/admin/export/%3Cscript%3Ealert(1)", "/admin/export/prefs.jsonl?ties=%3Cscript%3Ealert(1)"):
        r = admin.get(path)
        assert r.status_code in (200, 404, 422), path
        assert_escaped(r.text)
    audit = admin.get("/admin/audit").text
    assert "&lt;script&gt;" in audit and "2 waiting" in audit


def test_an_admin_audits_and_exports_through_the_forms(campaign_of):
    camp = campaign_of(plain_pairs(2), annotators=("ann", "bea"), qualification=False, overlap=2)
    for name in ("ann", "bea"):
        client = camp.client(name)
        for _ in range(2):
            page = task_page(client)  # both agree: response_0 more helpful and harmless, response_1 unsafe
            answer = {"better": 0, "safer": 0, "categories": [[], [VIOLENCE]], "severity": [0, 1]}
            assert post_label(client, page, form_for(answer, swapped(camp, task_id_of(page)))).status_code == 303
    admin = camp.client("boss")
    stats = admin.get("/admin").text
    assert "4</strong> of 4 labels" in stats and "Krippendorff" in stats
    annotators = admin.get("/admin/annotators").text
    assert ">ann</th>" in annotators and ">bea</th>" in annotators
    audit = admin.get("/admin/audit").text
    assert "2 waiting" in audit and "majority (ties toward unsafe)" in audit
    pair_id = re.search(r'name="pair_id" value="(\d+)"', audit).group(1)
    bad = admin.post("/admin/audit", data={"csrf": csrf_of(audit), "pair_id": pair_id, "helpful": "1"})
    assert bad.status_code == 422 and "<code>harmless</code>" in bad.text and f'value="{pair_id}"' in bad.text
    ok = admin.post("/admin/audit", data={"csrf": csrf_of(audit), "pair_id": pair_id, "helpful": "1",
                                          "harmless": "0", "categories_1": [VIOLENCE], "severity_1": "2"},
                    follow_redirects=False)
    assert ok.status_code == 303
    after = admin.get("/admin/audit").text
    assert f"Verdict on pair {pair_id} stored." in after and "1 waiting" in after
    twice = admin.post("/admin/audit", data={"csrf": csrf_of(after), "pair_id": pair_id, "helpful": "1",
                                             "harmless": "0"})
    assert twice.status_code == 409 and "audited already" in twice.text

    export = admin.get("/admin/export").text
    assert "2 complete pairs" in export
    prefs = admin.get("/admin/export/prefs.jsonl")
    assert prefs.status_code == 200 and 'filename="annotate-prefs.jsonl"' in prefs.headers["content-disposition"]
    records = [json.loads(line) for line in prefs.text.splitlines()]
    assert len(records) == 2 and {r["prompt"] for r in records} == {p["prompt"] for p in plain_pairs(2)}
    raw = [json.loads(line) for line in admin.get("/admin/export/labels.jsonl").text.splitlines()]
    assert sum(r["type"] == "label" for r in raw) == 4 and sum(r["type"] == "audit" for r in raw) == 1
    assert json.loads(admin.get("/admin/export/stats.json").text)["audit"]["done"] == 1
    assert admin.get("/admin/export/prefs.jsonl?ties=sideways").status_code == 422

    disable = admin.post("/admin/annotators/disable", data={"csrf": csrf_of(annotators), "name": "bea"},
                         follow_redirects=False)
    assert disable.status_code == 303
    assert "Disabled bea." in admin.get("/admin/annotators").text


def test_skip_locked_and_nothing_left(campaign_of):
    camp = campaign_of(plain_pairs(2), annotators=("ann", "bad"))
    client = camp.client("ann")
    page = task_page(client)
    skip = client.post("/label/skip", data={"csrf": csrf_of(page), "task_id": task_id_of(page)})
    assert skip.status_code == 409 and "qualification items cannot be skipped" in skip.text
    page = pass_qualification(camp, client)
    first = task_id_of(page)
    r = client.post("/label/skip", data={"csrf": csrf_of(page), "task_id": first}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get("/label").text
    assert "Skipped." in page and task_id_of(page) != first
    assert post_label(client, page, {"helpful": "1", "harmless": "1"}).status_code == 303
    assert "Nothing left for you" in client.get("/label").text

    bad = camp.client("bad")
    for _ in QUALIFICATION:  # every answer wrong: A more helpful and harmless, both unsafe
        page = task_page(bad)
        post_label(bad, page, {"helpful": "tie", "harmless": "tie", "categories_0": [PRIVACY], "severity_0": "1",
                               "categories_1": [PRIVACY], "severity_1": "1"})
    locked = bad.get("/label")
    assert locked.status_code == 403 and "Your account is locked" in locked.text
    assert "qualification failed" in locked.text


def test_sessions_survive_a_restart_and_end_with_a_disabled_account(campaign_of, db_url):
    camp = campaign_of(plain_pairs(1), qualification=False)
    client = camp.client("ann")
    task_page(client)
    restarted = create_app(db_url)  # a new app over the same database: the same session secret
    try:
        again = TestClient(restarted, cookies=dict(client.cookies))
        page = again.get("/label")
        assert page.status_code == 200 and "Content warning" not in page.text and "name=\"task_id\"" in page.text
        with restarted.state.db.session() as s:
            service.disable_user(s, "ann")
        gone = again.get("/label", follow_redirects=False)
        assert gone.status_code == 303 and gone.headers["location"] == "/login"
    finally:
        restarted.state.db.close()


def test_https_only_marks_the_cookie_secure_and_refuses_a_plain_http_sign_in(db_url, tmp_path):
    from fastapi import FastAPI

    from saferlhf.annotate.app import web
    from saferlhf.annotate.app.db import connect

    db = connect(db_url)
    try:
        with db.session() as s:
            token = service.add_user(s, "ann", "annotator")
        app = FastAPI()
        web.register(app, db, https_only=True)
        plain = TestClient(app)
        r = sign_in(plain, token)
        assert r.status_code == 400 and "https only" in r.text and "uid" not in str(plain.cookies)
        secure = TestClient(app, base_url="https://testserver")
        r = sign_in(secure, token)
        assert r.status_code == 200 and "Content warning" in r.text
        assert "secure" in r.history[0].headers["set-cookie"].lower()
    finally:
        db.close()


def test_the_token_never_reaches_the_access_log_or_a_url(campaign_of):
    from saferlhf.annotate.app.api import AccessLog

    camp = campaign_of(plain_pairs(1), qualification=False)
    lines: list[str] = []
    client = TestClient(AccessLog(camp.app, lines.append))
    answers = [sign_in(client, camp.tokens["ann"]), client.get("/label")]
    assert [line.split()[2:5] for line in lines[:3]] == [["GET", "/login", "200"], ["POST", "/login", "303"],
                                                         ["GET", "/", "303"]]
    for token in camp.tokens.values():
        assert not any(token in line for line in lines)
        assert not any(token in str(r.url) or token in r.text for r in answers + answers[0].history)
