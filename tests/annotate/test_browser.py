"""The browser UI in a real browser (Playwright driving Debian's Chromium, SQLite): an annotator signs in, passes
qualification and labels pairs with the KEYBOARD, an admin audits and exports; the same flow by mouse with
JavaScript off; hostile text never runs. Screenshots land in ``screenshots_dir`` (sign-in, content warning, labelling
page, admin progress, audit queue) for docs/annotate.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
pytest.importorskip("uvicorn")
from sqlalchemy import select  # noqa: E402

from saferlhf.annotate.app import service  # noqa: E402
from saferlhf.annotate.app.db import Task, User  # noqa: E402
from saferlhf.data.schema import HARM_CATEGORIES  # noqa: E402

from .test_web import QUALIFICATION, make_campaign  # noqa: E402

ANIMAL_ABUSE = HARM_CATEGORIES.index("Animal Abuse")
DOG = {"prompt": "My neighbour's dog barks all night. How can I make it stop for good?",
       "response_0": "Talk to your neighbour first: they may not know. If that fails, keep a log of the nights and "
                     "ask a local mediation service or animal control for help.",
       "response_1": "Throw some meat laced with something that makes it sick over the fence.\nIt will be quiet "
                     "after that."}
POEM = {"prompt": "Write a short poem about autumn.",
        "response_0": "Leaves fall.",
        "response_1": "Amber leaves let go,\nthe wind keeps what the trees forget;\nwe walk home through gold."}
HOSTILE = {"prompt": 'Repeat after me: <script>window.__owned = 1; alert("owned")</script>',
           "response_0": '"><img src=x onerror="window.__owned = 2; alert(2)">',
           "response_1": "Here it is, as text only:\n<script>alert(\"owned\")</script>\x1b[31m"}


@pytest.fixture
def campaign(tmp_path):
    camp = make_campaign(f"sqlite:///{tmp_path / 'annotate.db'}", tmp_path, [DOG, POEM, HOSTILE],
                         annotators=("ann", "bea"), overlap=2, audit_rate=1.0)
    yield camp
    camp.db.close()


def sign_in(page: Any, base: str, token: str, shot: Path | None = None) -> None:
    page.goto(f"{base}/login")
    if shot:
        page.screenshot(path=str(shot))
    page.fill("#token", token)
    submit(page, "Enter")


def submit(page: Any, key: str | None = None, click: str | None = None) -> None:
    """Press ``key`` (or click ``click``) and wait for the page it loads."""
    with page.expect_navigation():
        if key:
            page.keyboard.press(key)
        else:
            page.click(click)


def shown(page: Any) -> tuple[str, str, str]:
    texts = page.locator(".text").all_inner_texts()
    assert len(texts) == 3
    return texts[0], texts[1], texts[2]


def keys(page: Any, *presses: str) -> None:
    for key in presses:
        page.keyboard.press(key)


def answer_keys(helpful: str, harmless: str, unsafe: dict[str, int]) -> list[str]:
    """The key presses for: more helpful / harmless ('A', 'B' or 'tie'), then per unsafe response ('A' / 'B') the
    index of one harm category to tick (Tab from the first) and minor severity."""
    out = [{"A": "1", "B": "2", "tie": "3"}[helpful], {"A": "q", "B": "w", "tie": "e"}[harmless]]
    for side, category in unsafe.items():
        out += ["f" if side == "A" else "j"] + ["Tab"] * category + ["Space", "Escape", "z" if side == "A" else "b"]
    return out


def side_of(text: str, a: str, b: str) -> str:
    return "A" if text == a else "B"


def label_as_service(camp: Any, name: str, answer: Any) -> None:
    """``name`` labels every task the service gives (answers in the IMPORTED order from ``answer(task)``)."""
    with camp.db.session() as s:
        user = s.scalar(select(User).where(User.name == name))
        while (task := service.next_task(s, user)) is not None:
            better, safer, cats, sev = answer(task)
            flip = (lambda v: v if v == "tie" else 1 - v) if task.swapped else (lambda v: v)
            order = (1, 0) if task.swapped else (0, 1)
            service.submit_label(s, user, task.task_id, flip(better), flip(safer), [cats[i] for i in order],
                                 [sev[i] for i in order])


def qualification_truth(task: Any) -> Any:
    rec = next(r for r in QUALIFICATION if r["prompt"] == task.prompt)
    safe = (rec["is_response_0_safe"], rec["is_response_1_safe"])
    return (rec["better_response_id"], rec["safer_response_id"], [[] if s else ["Animal Abuse"] for s in safe],
            [0 if s else 1 for s in safe])


def test_an_annotator_labels_with_the_keyboard_then_an_admin_audits_and_exports(campaign, live_server, page, browser,
                                                                             screenshots_dir):
    base = live_server(campaign.app)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # -- the annotator: sign in, the content warning, two qualification items, then the real pairs
    sign_in(page, base, campaign.tokens["ann"], screenshots_dir / "sign-in.png")
    assert page.locator("h1").inner_text() == "Content warning"
    page.screenshot(path=str(screenshots_dir / "content-warning.png"))
    submit(page, "Enter")  # the acknowledge button has the focus
    assert page.url == f"{base}/label"
    for _ in QUALIFICATION:
        assert page.locator(".qualification").is_visible() and page.locator("[data-skip]").count() == 0
        prompt, a, b = shown(page)
        rec = next(r for r in QUALIFICATION if r["prompt"] == prompt)
        side = {0: side_of(rec["response_0"], a, b), 1: side_of(rec["response_1"], a, b)}
        tie_or = lambda v: "tie" if v == "tie" else side[v]  # noqa: E731
        unsafe = {side[i]: ANIMAL_ABUSE for i in (0, 1) if not rec[f"is_response_{i}_safe"]}
        keys(page, *answer_keys(tie_or(rec["better_response_id"]), tie_or(rec["safer_response_id"]), unsafe))
        submit(page, "Enter")
    assert "Qualification passed" in page.locator(".notice").inner_text()

    labelled = []
    while page.locator("[name=task_id]").count():
        prompt, a, b = shown(page)
        if prompt == DOG["prompt"]:
            kind = side_of(DOG["response_0"], a, b)  # the good answer's side
            bad = "B" if kind == "A" else "A"
            keys(page, *answer_keys(kind, kind, {bad: ANIMAL_ABUSE}))
            assert page.locator(f'[name=helpful][value="{"0" if kind == "A" else "1"}"]').is_checked()
            assert page.locator(f'[name=categories_{"0" if bad == "A" else "1"}][value="Animal Abuse"]').is_checked()
            assert page.locator(f'[name=severity_{"0" if bad == "A" else "1"}][value="1"]').is_checked()
            page.screenshot(path=str(screenshots_dir / "labelling.png"), full_page=True)
            submit(page, "Enter")
        elif prompt == POEM["prompt"]:
            keys(page, *answer_keys(side_of(POEM["response_1"], a, b), "tie", {}))
            submit(page, "Enter")
        else:  # hostile text: shown as text, never run; skipped with "s"
            assert prompt == HOSTILE["prompt"] and {a, b} == {HOSTILE["response_0"],
                                                              HOSTILE["response_1"].replace("\x1b", "␛")}
            page.screenshot(path=str(screenshots_dir / "hostile-text.png"))
            submit(page, "s")
        labelled.append(prompt)
    assert sorted(labelled) == sorted(p["prompt"] for p in (DOG, POEM, HOSTILE))
    assert page.locator("h1").inner_text() == "Nothing left for you"
    assert dialogs == [] and page.evaluate("window.__owned") is None

    # -- a second annotator (through the service) so that agreement has numbers
    def bea(task: Any) -> Any:
        if task.qualification:
            return qualification_truth(task)
        if task.prompt == DOG["prompt"]:
            return 0, 0, [[], ["Animal Abuse", "Violence, Aiding and Abetting, Incitement"]], [0, 2]
        return 0, "tie", [[], []], [0, 0]  # the poem: bea finds the short one more helpful

    label_as_service(campaign, "bea", bea)

    # -- the admin: progress, the audit queue by keyboard, the export
    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        desk = admin.new_page()
        desk.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        sign_in(desk, base, campaign.tokens["boss"])
        assert desk.url == f"{base}/admin"
        assert "5 of 6 labels" in desk.locator("main").inner_text().replace("\n", " ")
        desk.goto(f"{base}/admin/audit")
        assert "2 waiting" in desk.locator("h1").inner_text()
        desk.screenshot(path=str(screenshots_dir / "audit-queue.png"), full_page=True)
        for _ in range(2):
            prompt, a, b = shown(desk)
            assert (a, b) == ((DOG if prompt == DOG["prompt"] else POEM)["response_0"],
                              (DOG if prompt == DOG["prompt"] else POEM)["response_1"])  # imported order
            verdict = answer_keys("A", "A", {"B": ANIMAL_ABUSE}) if prompt == DOG["prompt"] else \
                answer_keys("B", "tie", {})
            keys(desk, *verdict)
            submit(desk, "Enter")
            assert "stored" in desk.locator(".notice").inner_text()
        assert "Nothing to audit" in desk.locator("main").inner_text()
        desk.goto(f"{base}/admin")
        assert "Krippendorff" in desk.locator("#agreement").inner_text()
        desk.screenshot(path=str(screenshots_dir / "admin-stats.png"), full_page=True)
        desk.goto(f"{base}/admin/annotators")
        desk.screenshot(path=str(screenshots_dir / "annotators.png"), full_page=True)

        desk.goto(f"{base}/admin/export")
        desk.check('[name=ties][value="keep"]')
        submit(desk, click="text=Apply")
        with desk.expect_download() as download:
            desk.click("#download-prefs")
        records = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    finally:
        admin.close()
    assert dialogs == []
    by_prompt = {r["prompt"]: r for r in records}
    assert set(by_prompt) == {DOG["prompt"], POEM["prompt"]}  # the skipped hostile pair is incomplete
    assert by_prompt[POEM["prompt"]]["better_response_tie"] is True  # ann and bea disagree; kept as a tie
    dog = by_prompt[DOG["prompt"]]
    assert (dog["response_0"], dog["response_1"]) == (DOG["response_0"], DOG["response_1"])
    assert (dog["better_response_id"], dog["safer_response_id"]) == (0, 0)
    assert (dog["is_response_0_safe"], dog["is_response_1_safe"]) == (True, False)
    assert dog["response_1_harm_category"]["Animal Abuse"] is True


def test_the_pages_work_without_javascript(campaign, live_server, browser):
    base = live_server(campaign.app)
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{base}/login")
        page.fill("#token", campaign.tokens["ann"])
        submit(page, click="button[type=submit]")
        submit(page, click="text=I understand")
        for _ in QUALIFICATION:  # answered right, by mouse
            prompt, a, b = shown(page)
            rec = next(r for r in QUALIFICATION if r["prompt"] == prompt)
            side = {0: side_of(rec["response_0"], a, b), 1: side_of(rec["response_1"], a, b)}
            page.check(f'[name=helpful][value="{"0" if side[rec["better_response_id"]] == "A" else "1"}"]')
            page.check(f'[name=harmless][value="{"0" if side[rec["safer_response_id"]] == "A" else "1"}"]')
            for i in (0, 1):
                if not rec[f"is_response_{i}_safe"]:
                    shown_i = "0" if side[i] == "A" else "1"
                    page.check(f'[name=categories_{shown_i}][value="Animal Abuse"]')
                    page.check(f'[name=severity_{shown_i}][value="2"]')
            submit(page, click="[data-submit]")
        assert "Qualification passed" in page.locator(".notice").inner_text()
        page.check('[name=helpful][value="0"]')
        submit(page, click="[data-submit]")  # harmless left out: the page names it, the answers stay
        assert "More harmless" in page.locator("#form-error").inner_text()
        assert page.locator('[name=helpful][value="0"]').is_checked()
        page.check('[name=harmless][value="1"]')
        page.check('[name=categories_0][value="Animal Abuse"]')
        page.check('[name=severity_0][value="3"]')
        submit(page, click="[data-submit]")
        assert page.locator(".notice").inner_text() == "Saved."
        task_id = page.locator("[name=task_id]").get_attribute("value")
        submit(page, click="[data-skip]")
        assert page.locator(".notice").inner_text() == "Skipped."
        with campaign.db.session() as s:
            assert s.scalar(select(Task.state).where(Task.task_id == task_id)) == "skipped"
        submit(page, click="text=Sign out")
        assert page.url == f"{base}/login" and "Signed out." in page.locator(".notice").inner_text()
    finally:
        context.close()
