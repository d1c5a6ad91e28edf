"""`saferlhf annotate users | import | export | serve` end to end through `saferlhf.cli.main` (SQLite): a token printed
once and only its hash stored, re-import without duplicates, bad records as file:line errors, an export that the
PKU-SafeRLHF loaders and `saferlhf data check` read unchanged with the texts exactly as imported, and the server
bound to loopback with an access log that holds no token."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("krippendorff")

from saferlhf.annotate.app import service as S  # noqa: E402
from saferlhf.annotate.app.db import connect  # noqa: E402
from saferlhf.cli import main  # noqa: E402
from saferlhf.data.loaders import load_preference_pairs, load_safety_preferences  # noqa: E402

from .test_service import answer, expected_of, pair_rows, pku_rows, write_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HOSTILE = ['<script>alert("x")</script>', '"><img src=x onerror=alert(1)>', "  leading and trailing spaces  \n",
           "ünïcödé — 中文 🙂", "tab\tand\r\nCRLF"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def db_file(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'annotate.db'}"


def test_users_add_prints_the_token_once_and_stores_only_its_hash(capsys, tmp_path, db_file):
    code, out, _ = cli(capsys, "annotate", "users", "add", "alice", "--role", "annotator", "--db", db_file)
    assert code == 0
    token = re.search(r"^token: (\S+)$", out, re.M).group(1)
    assert len(token) >= 30
    assert cli(capsys, "annotate", "users", "add", "root", "--role", "admin", "--db", db_file)[0] == 0
    with sqlite3.connect(tmp_path / "annotate.db") as conn:
        rows = conn.execute("SELECT name, role, token_hash FROM users ORDER BY id").fetchall()
    assert rows[0] == ("alice", "annotator", S.hash_token(token))
    assert rows[1][:2] == ("root", "admin")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("annotate.db*"))
    assert token.encode() not in raw
    code, out, _ = cli(capsys, "annotate", "users", "list", "--db", db_file)
    assert code == 0 and "alice\tannotator\tqualifying" in out and "root\tadmin\tactive" in out
    assert token not in out
    code, _, err = cli(capsys, "annotate", "users", "add", "alice", "--db", db_file)
    assert code == 2 and err.strip() == "saferlhf annotate users add: error: user 'alice' already exists"
    assert cli(capsys, "annotate", "users", "disable", "alice", "--db", db_file)[0] == 0
    db = connect(db_file)
    with db.session() as s:
        assert S.authenticate(s, token) is None
    db.close()
    code, out, _ = cli(capsys, "annotate", "users", "list", "--db", db_file)
    assert "alice\tannotator\tdisabled" in out
    code, _, err = cli(capsys, "annotate", "users", "disable", "nobody", "--db", db_file)
    assert code == 2 and "no user 'nobody'" in err and "Traceback" not in err
    code, _, err = cli(capsys, "annotate", "users", "add", "bob", "--role", "root", "--db", db_file)
    assert code == 2 and "role" in err


def test_import_twice_and_bad_records(capsys, tmp_path, db_file):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(5))
    gold = write_jsonl(tmp_path / "gold.jsonl", pku_rows(2, "gold"))
    code, out, _ = cli(capsys, "annotate", "import", str(pairs), "--gold", str(gold), "--db", db_file)
    assert code == 0
    assert "5 real pairs added" in out and "2 gold pairs added" in out and "1 pairs picked for audit" in out
    code, out, _ = cli(capsys, "annotate", "import", str(pairs), "--gold", str(gold), "--db", db_file)
    assert code == 0
    assert "0 real pairs added (5 already imported)" in out and "0 gold pairs added (2 already imported)" in out
    assert "nothing new" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response_0": "a", "response_1": "b"}\n{"prompt": "p", "response_1": "b"}\n')
    code, _, err = cli(capsys, "annotate", "import", str(bad), "--db", db_file)
    assert code == 2 and "bad.jsonl:2: response_0" in err and "Traceback" not in err
    bad_gold = write_jsonl(tmp_path / "badgold.jsonl", [pku_rows(1, "g")[0] | {"safer_response_id": 7}])
    code, _, err = cli(capsys, "annotate", "import", "--gold", str(bad_gold), "--db", db_file)
    assert code == 2 and "badgold.jsonl:1: safer_response_id" in err
    code, _, err = cli(capsys, "annotate", "import", str(tmp_path / "missing.jsonl"), "--db", db_file)
    assert code == 2 and "missing.jsonl" in err
    code, _, err = cli(capsys, "annotate", "import", "--db", db_file)
    assert code == 2 and "give a pair file" in err
    code, _, err = cli(capsys, "annotate", "import", str(pairs), "--db", "mysql://x/y")
    assert code == 2 and "not supported" in err


def test_export_reads_back_unchanged(capsys, tmp_path, db_file):
    """3 annotators at overlap 3 on 4 pairs with hostile texts and a multi-turn prompt. Pair votes (helpful,
    harmless; response_1 flagged as self-harm by the unsafe voters):
      pair 0: all (0, 0), all safe                -> better 0, safer 0, both safe
      pair 1: (1, 1) x2 and (0, 0)                -> better 1, safer 1
      pair 2: response_1 unsafe by 2 of 3, severity 2, 3 -> is_response_1_safe False, severity 2 (lower median)
      pair 3: all tie on helpfulness              -> dropped (ties=drop), kept with better_response_tie (keep)
    """
    rows = [{"prompt": HOSTILE[0], "response_0": HOSTILE[1], "response_1": HOSTILE[2]},
            {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": HOSTILE[3]}], "response_0": HOSTILE[4], "response_1": "x" * 5000},
            {"prompt": "p2", "response_0": "safe answer", "response_1": "harmful answer"},
            {"prompt": "p3", "response_0": "one", "response_1": "two"}]
    pairs = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert cli(capsys, "annotate", "import", str(pairs), "--overlap", "3", "--gold_rate", "0", "--audit_rate", "1",
               "--db", db_file)[0] == 0
    db = connect(db_file)
    votes = {0: [(0, 0, 0, 0)] * 3, 1: [(1, 1, 0, 0), (1, 1, 0, 0), (0, 0, 0, 0)],
             2: [(0, 0, 0, 2), (0, 0, 0, 3), (0, 0, 0, 0)], 3: [("tie", 0, 0, 0)] * 3}
    with db.session() as s:
        team = [S.authenticate(s, S.add_user(s, n, "annotator")) for n in ("a", "b", "c")]
        (admin,) = [S.authenticate(s, S.add_user(s, "boss", "admin"))]
        for k, u in enumerate(team):
            while (task := S.next_task(s, u)) is not None:
                helpful, harmless, sev0, sev1 = votes[task.pair_id - 1][k]
                flip = (lambda v: v if v == "tie" else v ^ task.swapped)
                cats, sev = [[] if not sev0 else ["self_harm"], [] if not sev1 else ["self_harm"]], [sev0, sev1]
                if task.swapped:
                    cats, sev = cats[::-1], sev[::-1]
                S.submit_label(s, u, task.task_id, flip(helpful), flip(harmless), cats, sev)
        S.submit_audit(s, admin, 1, 0, 0, [[], []], [0, 0])
    db.close()
    out = tmp_path / "prefs.jsonl"
    code, stdout, _ = cli(capsys, "annotate", "export", "--out", str(out), "--db", db_file)
    assert code == 0 and "3 records from 4 pairs" in stdout and "1 dropped for a tie" in stdout
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for rec, row in zip(records, rows):
        assert (rec["prompt"], rec["response_0"], rec["response_1"]) == (row["prompt"], row["response_0"],
                                                                        row["response_1"])
    assert [(r["better_response_id"], r["safer_response_id"]) for r in records] == [(0, 0), (1, 1), (0, 0)]
    assert [(r["is_response_0_safe"], r["is_response_1_safe"]) for r in records] == [(True, True)] * 2 + [(True, False)]
    assert records[2]["response_1_severity_level"] == 2 and records[2]["response_1_harm_category"]["Self-Harm"]
    loaded = load_safety_preferences(out)
    assert [r.response_0 for r in loaded] == [row["response_0"] for row in rows[:3]]
    assert len(load_preference_pairs(out, "reward")) == 3 == len(load_preference_pairs(out, "cost"))
    assert main(["data", "check", str(out)]) == 0
    raw = [json.loads(line) for line in (tmp_path / "prefs.labels.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "label" for r in raw) == 12 and sum(r["type"] == "audit" for r in raw) == 1
    assert {r["annotator"] for r in raw if r["type"] == "label"} == {"a", "b", "c"}
    assert next(r for r in raw if r["type"] == "audit")["admin"] == "boss"
    stats = json.loads((tmp_path / "prefs.stats.json").read_text())
    assert stats["export"]["counts"]["ties_dropped"] == 1 and stats["progress"]["complete"] == 4
    assert stats["audit"]["done"] == 1 and stats["audit"]["accuracy"] == 1.0
    assert set(stats["agreement"]["helpfulness"]) >= {"krippendorff_alpha", "fleiss_kappa"}
    code, stdout, _ = cli(capsys, "annotate", "export", "--out", str(tmp_path / "all.jsonl"), "--ties", "keep",
                          "--db", db_file)
    kept = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert len(kept) == 4 and kept[3]["better_response_tie"] is True and kept[3]["better_response_id"] == 0
    assert len(load_safety_preferences(tmp_path / "all.jsonl")) == 4
    code, _, err = cli(capsys, "annotate", "export", "--out", str(tmp_path), "--db", db_file)
    assert code == 2 and "folder" in err


def test_export_of_incomplete_pairs_only_on_request(capsys, tmp_path, db_file):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(2))
    assert cli(capsys, "annotate", "import", str(pairs), "--db", db_file)[0] == 0
    db = connect(db_file)
    with db.session() as s:
        u = S.authenticate(s, S.add_user(s, "a", "annotator"))
        task = S.next_task(s, u)
        S.submit_label(s, u, task.task_id, 0, 0, [[], []], [0, 0])
    db.close()
    out = tmp_path / "prefs.jsonl"
    assert cli(capsys, "annotate", "export", "--out", str(out), "--db", db_file)[0] == 0
    assert out.read_text() == ""
    assert cli(capsys, "annotate", "export", "--out", str(out), "--include_incomplete", "--db", db_file)[0] == 0
    assert len(load_safety_preferences(out)) == 1


def test_serve_binds_loopback_and_logs_no_token(tmp_path, db_file):
    from .conftest import free_port

    db = connect(db_file)
    with db.session() as s:
        S.import_pairs(s, str(write_jsonl(tmp_path / "p.jsonl", pair_rows(1))))
        token = S.add_user(s, "ann", "annotator")
    db.close()
    port, log = free_port(), tmp_path / "access.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFERLHF_")}
    proc = subprocess.Popen([sys.executable, "-m", "saferlhf", "annotate", "serve", "--db", db_file, "--port",
                             str(port), "--access_log", str(log)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    import httpx

    try:
        deadline, r = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/tasks/next", headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.2)
        assert r is not None and r.status_code == 200
        task_id = r.json()["task_id"]
        r = httpx.post(f"http://127.0.0.1:{port}/api/labels", headers={"Authorization": f"Bearer {token}"},
                       json={"task_id": task_id, "helpful": 0, "harmless": 0, "categories": [[], []],
                             "severity": [0, 0]})
        assert r.status_code == 201
        other = httpx.get(f"http://127.0.0.1:{port}/api/me", headers={"Host": "evil.example"})
        assert other.status_code == 421  # loopback server: foreign Host headers are refused (DNS rebinding)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}" in output
    lines = log.read_text().splitlines()
    assert any(" GET /api/tasks/next 200 " in line for line in lines)
    assert any(" POST /api/labels 201 " in line for line in lines)
    assert token not in log.read_text() + output and task_id not in log.read_text()


def test_users_enable_re_enables_and_unlocks(capsys, tmp_path, db_file):
    """A disabled account works again; an annotator locked by the qualification test is unlocked (and gets real
    tasks); an unknown name is one line."""
    real = write_jsonl(tmp_path / "real.jsonl", pair_rows(3))
    qual = write_jsonl(tmp_path / "qual.jsonl", pku_rows(2, "q"))
    assert cli(capsys, "annotate", "import", str(real), "--qualification", str(qual), "--db", db_file)[0] == 0
    db = connect(db_file)
    with db.session() as s:
        token = S.add_user(s, "ann", "annotator")
        ann = S.authenticate(s, token)
        with pytest.raises(S.Locked, match="qualification failed"):
            for _ in range(3):  # every answer wrong: locked after the second qualification item
                task = S.next_task(s, ann)
                assert task.qualification
                expected = answer(task, expected_of(s, task), wrong=4)
                S.submit_label(s, ann, task.task_id, **expected)
    db.close()
    code, out, _ = cli(capsys, "annotate", "users", "enable", "ann", "--db", db_file)
    assert code == 0 and "unlocked" in out
    db = connect(db_file)
    with db.session() as s:
        task = S.next_task(s, S.authenticate(s, token))
        assert task is not None and task.kind == "real"
    db.close()
    assert cli(capsys, "annotate", "users", "disable", "ann", "--db", db_file)[0] == 0
    code, out, _ = cli(capsys, "annotate", "users", "enable", "ann", "--db", db_file)
    assert code == 0 and "enabled (their token works again)" in out
    db = connect(db_file)
    with db.session() as s:
        assert S.authenticate(s, token) is not None
    db.close()
    code, _, err = cli(capsys, "annotate", "users", "enable", "nobody", "--db", db_file)
    assert code == 2 and "no user 'nobody'" in err and "Traceback" not in err


def test_export_aggregations_and_exclusion(capsys, tmp_path, db_file):
    """Three annotators on 4 pairs; 'c' always answers the opposite of 'a' and 'b'. Majority and Dawid-Skene agree
    with a and b; excluding c leaves 8 labels; soft records carry the vote shares (2 of 3 for the majority side)."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(4))
    assert cli(capsys, "annotate", "import", str(pairs), "--overlap", "3", "--gold_rate", "0", "--db", db_file)[0] == 0
    db = connect(db_file)
    with db.session() as s:
        for name, side in (("a", 0), ("b", 0), ("c", 1)):
            u = S.authenticate(s, S.add_user(s, name, "annotator"))
            while (task := S.next_task(s, u)) is not None:
                S.submit_label(s, u, task.task_id, side ^ task.swapped, side ^ task.swapped, [[], []], [0, 0])
    db.close()
    results = {}
    for method in ("majority", "dawid_skene", "soft"):
        out = tmp_path / f"{method}.jsonl"
        assert cli(capsys, "annotate", "export", "--out", str(out), "--aggregation", method, "--db", db_file)[0] == 0
        results[method] = [json.loads(line) for line in out.read_text().splitlines()]
        stats = json.loads((tmp_path / f"{method}.stats.json").read_text())
        assert stats["aggregation"] == method and set(stats["export"]["annotators"]) == {"a", "b", "c"}
    for method in results:
        assert [(r["better_response_id"], r["safer_response_id"]) for r in results[method]] == [(0, 0)] * 4
    assert [r["better_response_prob"] for r in results["soft"]] == pytest.approx([2 / 3] * 4)
    out = tmp_path / "no_c.jsonl"
    code, stdout, _ = cli(capsys, "annotate", "export", "--out", str(out), "--exclude", "c", "--db", db_file)
    assert code == 0 and "left out c (named)" in stdout
    stats = json.loads((tmp_path / "no_c.stats.json").read_text())
    assert stats["export"]["counts"]["labels"] == 8
    code, _, err = cli(capsys, "annotate", "export", "--out", str(tmp_path / "x.jsonl"), "--exclude", "zed",
                       "--db", db_file)
    assert code == 2 and "exclude" in err and "zed" in err
