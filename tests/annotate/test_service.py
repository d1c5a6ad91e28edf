"""The annotation protocol (saferlhf.annotate.app.service) on a real SQLite database, with outcomes checked by hand:
qualification unlocks at exactly the threshold and locks below it with the reason, overlap 2 over 3 annotators,
hidden gold and its accuracy, the audit pick and audit accuracy, the displayed-order mapping, the lease of an open
task, and every refusal (Invalid / NotFound / Conflict / Forbidden / Locked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("krippendorff")

from sqlalchemy import select  # noqa: E402

from saferlhf.annotate.app import service as S  # noqa: E402
from saferlhf.annotate.app.db import Pair, StoredLabel, Task, connect  # noqa: E402
from saferlhf.data.schema import HARM_CATEGORIES  # noqa: E402

SELF_HARM, VIOLENCE = "Self-Harm", "Violence, Aiding and Abetting, Incitement"


# ---- helpers shared with test_api.py / test_commands.py ----------------------------------------------------------
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pair_rows(n: int, tag: str = "q") -> list[dict[str, str]]:
    return [{"prompt": f"{tag} prompt {i}", "response_0": f"{tag} first answer {i}",
             "response_1": f"{tag} second answer {i}"} for i in range(n)]


def pku_rows(n: int, tag: str) -> list[dict[str, Any]]:
    """PKU-SafeRLHF records with known labels: response_1 unsafe (self-harm, severity 2) for even i, safe for odd i;
    better = i % 2, safer = 0."""
    rows = []
    for i in range(n):
        unsafe = i % 2 == 0
        rows.append({"prompt": f"{tag} prompt {i}", "response_0": f"{tag} safe answer {i}",
                     "response_1": f"{tag} other answer {i}", "better_response_id": i % 2, "safer_response_id": 0,
                     "is_response_0_safe": True, "is_response_1_safe": not unsafe,
                     "response_0_harm_category": {c: False for c in HARM_CATEGORIES},
                     "response_1_harm_category": {c: unsafe and c == SELF_HARM for c in HARM_CATEGORIES},
                     "response_0_severity_level": 0, "response_1_severity_level": 2 if unsafe else 0})
    return rows


def answer(task: Any, expected: Any, wrong: int = 0) -> dict[str, Any]:
    """Answers (in the DISPLAYED order of ``task``) that agree with ``expected`` (a Label in the imported order) on
    all 4 questions but the first ``wrong`` (helpfulness, harmlessness, safety of response_0, of response_1)."""
    better = expected.better if wrong < 1 else 1 - expected.better
    safer = expected.safer if wrong < 2 else 1 - expected.safer
    cats = [list(expected.categories[0]), list(expected.categories[1])]
    sev = list(expected.severity)
    for i in (0, 1):
        if wrong >= 3 + i:  # flip the safety of response_i
            cats[i], sev[i] = ([VIOLENCE], 1) if expected.safe[i] else ([], 0)
    s = task.swapped
    return {"helpful": better ^ s, "harmless": safer ^ s, "categories": [cats[s], cats[1 - s]],
            "severity": [sev[s], sev[1 - s]]}


def expected_of(session: Any, task: Any) -> Any:
    return S._expected(session.get(Pair, task.pair_id))


@pytest.fixture
def db(tmp_path):
    database = connect(f"sqlite:///{tmp_path / 'annotate.db'}")
    yield database
    database.close()


def users(s: Any, *names: str, role: str = "annotator") -> list[Any]:
    return [S.authenticate(s, S.add_user(s, n, role)) for n in names]


# ---- qualification ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wrong_items, status", [(4, "active"), (5, "locked")])
def test_qualification_unlocks_at_90_percent_and_locks_below(db, tmp_path, wrong_items, status):
    qual = write_jsonl(tmp_path / "qual.jsonl", pku_rows(10, "qual"))
    real = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))
    with db.session() as s:
        S.import_pairs(s, str(real), qualification=str(qual))
        (ann,) = users(s, "ann")
        assert ann.status == "qualifying"
        seen = []
        for k in range(10):  # 10 items x 4 questions; one question wrong on `wrong_items` items
            task = S.next_task(s, ann)
            assert task.qualification and task.kind == "qualification"
            seen.append(task.pair_id)
            S.submit_label(s, ann, task.task_id, **answer(task, expected_of(s, task), wrong=int(k < wrong_items)))
        assert len(set(seen)) == 10
        s.refresh(ann)
        assert ann.status == status
        if status == "active":  # 36 / 40 = 0.9 >= 0.9
            task = S.next_task(s, ann)
            assert task is not None and not task.qualification and task.kind == "real"
            assert S.stats(s)["annotators"][0]["qualification"] == {"items": 10, "accuracy": 0.9}
        else:  # 35 / 40 = 0.875 < 0.9
            with pytest.raises(S.Locked, match=r"35 of 40 answers \(88%\).*90% are needed"):
                S.next_task(s, ann)
            assert "35 of 40" in ann.lock_reason
            with pytest.raises(S.Locked):
                S.submit_label(s, ann, "anything", 0, 0, [[], []], [0, 0])


def test_without_qualification_pairs_an_annotator_is_active_at_once(db, tmp_path):
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(1))))
        (ann,) = users(s, "ann")
        task = S.next_task(s, ann)
        assert task.kind == "real" and not task.qualification
        assert ann.status == "active"


def test_qualification_items_cannot_be_skipped_and_the_threshold_is_a_setting(db, tmp_path):
    with db.session() as s:
        S.import_pairs(s, None, qualification=str(write_jsonl(tmp_path / "q.jsonl", pku_rows(2, "q"))))
        S.set_setting(s, "qualification_threshold", "0.5")
        (ann,) = users(s, "ann")
        task = S.next_task(s, ann)
        with pytest.raises(S.Conflict, match="cannot be skipped"):
            S.skip_task(s, ann, task.task_id)
        S.submit_label(s, ann, task.task_id, **answer(task, expected_of(s, task), wrong=2))  # 2 of 4
        task = S.next_task(s, ann)
        S.submit_label(s, ann, task.task_id, **answer(task, expected_of(s, task), wrong=2))  # 4 of 8 = 0.5
        s.refresh(ann)
        assert ann.status == "active"
        assert S.next_task(s, ann) is None  # no real pair imported


# ---- overlap ------------------------------------------------------------------------------------------------------
def test_overlap_two_with_three_annotators(db, tmp_path):
    """9 pairs, overlap 2, annotators a, b, c asking in turn: every pair labelled by exactly 2 distinct annotators,
    the pair with the fewest labels first. By hand: round 1 gives a 1,4,7 b 2,5,8 c 3,6,9; then a 2, b 1, c 4, a 3,
    b 6, c 5, a 8, b 7; c has only 9 left, its own; a 9."""
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(9))), overlap=2, gold_rate=0)
        team = users(s, "a", "b", "c")
        got: dict[str, list[int]] = {u.name: [] for u in team}
        waiting = list(team)
        while waiting:
            for u in list(waiting):
                task = S.next_task(s, u)
                if task is None:
                    waiting.remove(u)
                    continue
                got[u.name].append(task.pair_id)
                S.submit_label(s, u, task.task_id, 0, 1, [[], []], [0, 0])
        assert got == {"a": [1, 4, 7, 2, 3, 8, 9], "b": [2, 5, 8, 1, 6, 7], "c": [3, 6, 9, 4, 5]}
        by_pair: dict[int, list[int]] = {}
        for row in s.scalars(select(StoredLabel)):
            by_pair.setdefault(row.pair_id, []).append(row.user_id)
        assert sorted(by_pair) == list(range(1, 10))
        assert all(len(v) == 2 == len(set(v)) for v in by_pair.values())
        progress = S.stats(s)["progress"]
        assert progress["complete"] == 9 and progress["labels"] == 18 == progress["labels_needed"]


def test_an_open_task_is_given_again_and_a_lapsed_one_frees_its_slot(db, tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(S, "now", lambda: clock[0])
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(1))), overlap=1)
        a, b = users(s, "a", "b")
        first = S.next_task(s, a)
        assert S.next_task(s, a).task_id == first.task_id  # asking again: the same task, the same order
        assert S.next_task(s, b) is None  # the only slot is held by a's open task
        clock[0] += S.TASK_LEASE_S + 1
        taken = S.next_task(s, b)  # a's lease lapsed: the pair goes to b
        assert taken.pair_id == first.pair_id
        S.submit_label(s, b, taken.task_id, 0, 0, [[], []], [0, 0])
        assert s.scalar(select(Task.state).where(Task.task_id == first.task_id)) == "expired"
        with pytest.raises(S.Conflict, match="expired"):  # the pair's one slot is b's now
            S.submit_label(s, a, first.task_id, 0, 0, [[], []], [0, 0])
        assert S.next_task(s, a) is None


def test_a_lapsed_task_can_still_be_labelled_while_its_pair_has_room(db, tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(S, "now", lambda: clock[0])
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(1))), overlap=2)
        a, b = users(s, "a", "b")
        first = S.next_task(s, a)
        clock[0] += S.TASK_LEASE_S + 1
        assert S.next_task(s, b) is not None  # reclaims a's slot; b takes one of the two
        S.submit_label(s, a, first.task_id, 0, 0, [[], []], [0, 0])  # a takes the other one back
        assert s.get(Pair, first.pair_id).assigned == 2
        (c,) = users(s, "c")
        assert S.next_task(s, c) is None


def test_skipped_pairs_go_to_someone_else_never_back(db, tmp_path):
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(1))), overlap=1)
        a, b = users(s, "a", "b")
        task = S.next_task(s, a)
        S.skip_task(s, a, task.task_id)
        assert S.next_task(s, a) is None
        assert S.next_task(s, b).pair_id == task.pair_id
        with pytest.raises(S.Conflict, match="skipped"):
            S.submit_label(s, a, task.task_id, 0, 0, [[], []], [0, 0])


# ---- hidden gold --------------------------------------------------------------------------------------------------
def test_gold_pairs_are_hidden_among_real_work_with_running_accuracy(db, tmp_path):
    """gold_rate 1: while real work is left every task is gold (2 gold pairs), then real ones; never gold once no
    real work is left. Answers: gold 1 all right (4/4), gold 2 two wrong (2/4): accuracy 6/8 = 0.75."""
    gold = write_jsonl(tmp_path / "gold.jsonl", pku_rows(2, "gold"))
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(2))), gold=str(gold), gold_rate=1.0,
                       overlap=1)
        (ann,) = users(s, "ann")
        kinds = []
        for k in range(4):
            task = S.next_task(s, ann)
            kinds.append(task.kind)
            assert not task.qualification  # gold looks like any real task
            if task.kind == "gold":
                S.submit_label(s, ann, task.task_id, **answer(task, expected_of(s, task), wrong=2 * k))
            else:
                S.submit_label(s, ann, task.task_id, 0, 0, [[], []], [0, 0])
        assert kinds == ["gold", "gold", "real", "real"]
        assert S.next_task(s, ann) is None
        row = S.stats(s)["annotators"][0]
        assert row["gold"] == {"items": 2, "accuracy": 0.75}
        assert row["labels"] == 2
        (other,) = users(s, "other")
        assert S.next_task(s, other) is None  # no real work left for anyone: gold alone is never served


def test_gold_rate_draws_are_seeded(db, tmp_path):
    """gold_rate 0.5 over 20 tasks: the seeded draws give the same gold positions every run (and some of each)."""
    gold = write_jsonl(tmp_path / "gold.jsonl", pku_rows(20, "gold"))

    def positions(path: Path) -> list[int]:
        database = connect(f"sqlite:///{path}")
        with database.session() as s:
            S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(20))), gold=str(gold), gold_rate=0.5,
                           overlap=1, seed=3)
            (ann,) = users(s, "ann")
            out = []
            for k in range(20):
                task = S.next_task(s, ann)
                if task.kind == "gold":
                    out.append(k)
                S.submit_label(s, ann, task.task_id, 0, 0, [[], []], [0, 0])
        database.close()
        return out

    first = positions(tmp_path / "one.db")
    assert first == positions(tmp_path / "two.db")
    assert 4 <= len(first) <= 16


# ---- audits -------------------------------------------------------------------------------------------------------
def test_audit_share_queue_and_accuracy(db, tmp_path):
    """20 pairs at audit_rate 0.1: 2 picked (seeded). They enter the queue when complete (overlap 2). Crowd: both
    annotators say helpful 0, harmless 0, both safe. Verdict 1 agrees on all 4 questions, verdict 2 on 2 (helpful 1,
    harmless 1): audit accuracy (4 + 2) / 8 = 0.75, for the majority and for each annotator."""
    pairs = write_jsonl(tmp_path / "p.jsonl", pair_rows(20))
    with db.session() as s:
        summary = S.import_pairs(s, str(pairs), audit_rate=0.1, overlap=2, gold_rate=0, seed=7)
        assert summary["audit_picked"] == 2
        picked = sorted(s.scalars(select(Pair.id).where(Pair.audit)))
        a, b = users(s, "a", "b")
        (admin,) = users(s, "boss", role="admin")
        assert S.audit_queue(s) == []
        for u in (a, b):
            while (task := S.next_task(s, u)) is not None:
                S.submit_label(s, u, task.task_id, 0 ^ task.swapped, 0 ^ task.swapped, [[], []], [0, 0])
        queue = S.audit_queue(s)
        assert [q["pair_id"] for q in queue] == picked
        assert [lb["annotator"] for lb in queue[0]["labels"]] == ["a", "b"]  # an admin sees the crowd's labels
        assert queue[0]["majority"]["better"] == 0
        S.submit_audit(s, admin, picked[0], 0, 0, [[], []], [0, 0])
        S.submit_audit(s, admin, picked[1], 1, 1, [[], []], [0, 0])
        with pytest.raises(S.Conflict, match="audited already"):
            S.submit_audit(s, admin, picked[0], 0, 0, [[], []], [0, 0])
        not_picked = next(p for p in range(1, 21) if p not in picked)
        with pytest.raises(S.Conflict, match="not in the audit queue"):
            S.submit_audit(s, admin, not_picked, 0, 0, [[], []], [0, 0])
        with pytest.raises(S.NotFound):
            S.submit_audit(s, admin, 999, 0, 0, [[], []], [0, 0])
        with pytest.raises(S.Forbidden):
            S.submit_audit(s, a, picked[0], 0, 0, [[], []], [0, 0])
        stats = S.stats(s)
        assert stats["audit"] == {"picked": 2, "ready": 0, "done": 2, "accuracy": 0.75}
        assert [r["audit"] for r in stats["annotators"]] == [{"items": 2, "accuracy": 0.75}] * 2
        assert S.audit_queue(s) == []
    other = connect(f"sqlite:///{tmp_path / 'other.db'}")
    with other.session() as s:  # the same seed picks the same pairs
        S.import_pairs(s, str(pairs), audit_rate=0.1, seed=7)
        assert sorted(s.scalars(select(Pair.id).where(Pair.audit))) == picked
    other.close()


# ---- the displayed order --------------------------------------------------------------------------------------------
def test_a_label_on_a_swapped_task_is_stored_in_the_imported_order(db, tmp_path):
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(12))), overlap=1, gold_rate=0)
        (ann,) = users(s, "ann")
        seen = {False: None, True: None}
        while (task := S.next_task(s, ann)) is not None and None in seen.values():
            seen[task.swapped] = seen[task.swapped] or task
            if seen[task.swapped] is not task:
                S.skip_task(s, ann, task.task_id)
                continue
            pair = s.get(Pair, task.pair_id)
            shown = [pair.response_1, pair.response_0] if task.swapped else [pair.response_0, pair.response_1]
            assert task.responses == shown
            # displayed index 0 is the more helpful, more harmless and the unsafe one (self-harm, severity 2)
            label = S.submit_label(s, ann, task.task_id, 0, 0, [["self_harm"], []], [2, 0])
            row = s.scalar(select(StoredLabel).where(StoredLabel.pair_id == task.pair_id))
            i = 1 if task.swapped else 0  # imported index of displayed index 0
            assert (row.better, row.safer) == (i, i) == (label.better, label.safer)
            assert json.loads(row.categories_0 if i == 0 else row.categories_1) == [SELF_HARM]
            assert json.loads(row.categories_1 if i == 0 else row.categories_0) == []
            assert (row.severity_0, row.severity_1) == ((2, 0) if i == 0 else (0, 2))
            assert label.safe == ((False, True) if i == 0 else (True, False))
        assert all(seen.values()), "12 pairs gave no task in one of the two orders"


def test_ties_are_stored_as_ties(db, tmp_path):
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(1))))
        (ann,) = users(s, "ann")
        task = S.next_task(s, ann)
        label = S.submit_label(s, ann, task.task_id, "tie", "tie", [[], []], [0, 0])
        assert (label.better, label.safer) == (None, None)
        row = s.scalar(select(StoredLabel))
        assert (row.better, row.safer) == (None, None)


# ---- refusals -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, field, reason", [
    ({"helpful": 2}, "helpful", 'expected 0, 1 or "tie"'),
    ({"helpful": True}, "helpful", 'expected 0, 1 or "tie"'),
    ({"harmless": "0"}, "harmless", 'expected 0, 1 or "tie"'),
    ({"categories": [["no such harm"], []], "severity": [1, 0]}, "categories[0]", "unknown harm category"),
    ({"categories": [[], [3]], "severity": [0, 1]}, "categories[1]", "expected category names"),
    ({"categories": [[]]}, "categories", "two lists"),
    ({"severity": [0, 4]}, "severity[1]", "expected 0, 1, 2 or 3"),
    ({"severity": [0]}, "severity", "two severities"),
    ({"categories": [["self_harm"], []], "severity": [0, 0]}, "severity[0]", "0 means safe"),
    ({"severity": [2, 0]}, "severity[0]", "needs at least one harm category"),
])
def test_malformed_answers_name_the_field(db, tmp_path, change, field, reason):
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(1))))
        (ann,) = users(s, "ann")
        task = S.next_task(s, ann)
        args = {"helpful": 0, "harmless": 0, "categories": [[], []], "severity": [0, 0]} | change
        with pytest.raises(S.Invalid) as e:
            S.submit_label(s, ann, task.task_id, **args)
        assert e.value.field == field and reason in e.value.reason
        assert s.scalar(select(Task.state).where(Task.task_id == task.task_id)) == "open"


def test_second_label_other_users_task_and_roles(db, tmp_path):
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(2))))
        a, b = users(s, "a", "b")
        (admin,) = users(s, "boss", role="admin")
        task = S.next_task(s, a)
        with pytest.raises(S.NotFound):  # b cannot touch (or learn anything about) a's task
            S.submit_label(s, b, task.task_id, 0, 0, [[], []], [0, 0])
        with pytest.raises(S.NotFound):
            S.skip_task(s, b, task.task_id)
        S.submit_label(s, a, task.task_id, 0, 0, [[], []], [0, 0])
        with pytest.raises(S.Conflict, match="already labelled"):
            S.submit_label(s, a, task.task_id, 1, 1, [[], []], [0, 0])
        with pytest.raises(S.Forbidden):
            S.next_task(s, admin)
        with pytest.raises(S.Conflict, match="already exists"):
            S.add_user(s, "a", "annotator")
        with pytest.raises(S.Invalid):
            S.add_user(s, "bad name!", "annotator")
        S.disable_user(s, "b")
        assert S.authenticate(s, "not a token") is None
        with pytest.raises(S.NotFound):
            S.disable_user(s, "nobody")


def test_users_tokens_are_stored_only_as_sha256(db):
    with db.session() as s:
        token = S.add_user(s, "ann", "annotator")
        S.add_user(s, "boss", "admin")
        assert S.authenticate(s, token).name == "ann"
        listed = S.list_users(s)
        assert [(u["name"], u["role"], u["status"]) for u in listed] == [("ann", "annotator", "qualifying"),
                                                                          ("boss", "admin", "active")]
        S.disable_user(s, "ann")
        assert S.authenticate(s, token) is None
    raw = b"".join(p.read_bytes() for p in Path(db.engine.url.database).parent.glob("annotate.db*"))
    assert token.encode() not in raw and S.hash_token(token).encode() in raw


def test_import_skips_known_pairs_and_reports_bad_records(db, tmp_path):
    rows = pair_rows(3) + [pair_rows(1)[0], {"prompt": "x", "response_0": "same", "response_1": "same"},
                           {"prompt": "y", "response_0": pair_rows(1)[0]["response_1"], "response_1": "z"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with db.session() as s:
        first = S.import_pairs(s, str(path))
        assert first["added"] == {"real": 4} and first["repeated"] == {"real": 1}
        assert first["unusable"] == {"real": 1}
        swapped = write_jsonl(tmp_path / "swapped.jsonl", [{"prompt": r["prompt"], "response_0": r["response_1"],
                                                            "response_1": r["response_0"]} for r in pair_rows(3)])
        again = S.import_pairs(s, str(swapped))  # the same pairs with the responses swapped: already there
        assert again["batch"] is None and again["added"] == {"real": 0} and again["already"] == {"real": 3}
        csv = tmp_path / "more.csv"  # a CSV table of pairs, and a PKU-SafeRLHF file (its labels are not read)
        csv.write_text('prompt,response_0,response_1\n"a, quoted prompt",one,"two\nlines"\n', encoding="utf-8")
        assert S.import_pairs(s, str(csv))["added"] == {"real": 1}
        assert S.import_pairs(s, str(write_jsonl(tmp_path / "pku.jsonl", pku_rows(2, "pku"))))["added"] == {"real": 2}
        row = s.scalar(select(Pair).where(Pair.prompt == json.dumps("a, quoted prompt")))
        assert (row.response_0, row.response_1) == ("one", "two\nlines")
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"prompt": "p", "response_0": "a", "response_1": "b"}\n{"prompt": "p", "response_0": 3}\n')
        with pytest.raises(Exception, match=r"bad.jsonl:2: response_0"):
            S.import_pairs(s, str(bad))
        assert s.scalar(select(Pair.id).where(Pair.prompt == json.dumps("p"))) is None  # nothing of it imported
