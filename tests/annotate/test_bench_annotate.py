"""bench/bench_annotate.py: its checker finds a lost, duplicated or altered label, and a small run (3 annotators x 4
labels, the server SIGKILLed and restarted midway) loses and duplicates nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_annotate
    finally:
        while str(BENCH) in sys.path:  # the bench puts itself on the path too
            sys.path.remove(str(BENCH))
    return bench_annotate


class FakeClient:
    def __init__(self, name: str, acked: dict):
        self.name, self.acked = name, acked


def test_check_counts_lost_duplicated_and_altered_labels(bench):
    body = {"task_id": "t1", "helpful": 0, "harmless": "tie", "severity": [2, 0],
            "categories": [["violence,aiding_and_abetting,incitement"], []]}
    client = FakeClient("ann1", {"t1": body, "t2": dict(body, task_id="t2")})
    # t1 was shown swapped: stored in the imported order, the categories canonical
    row = {"type": "label", "pair": 1, "task_id": "t1", "swapped": True, "annotator": "ann1", "better": 1,
           "safer": "tie", "categories": [[], ["Violence, Aiding and Abetting, Incitement"]], "severity": [0, 2]}
    row2 = dict(row, pair=2, task_id="t2", swapped=False, better=0,
                categories=[["Violence, Aiding and Abetting, Incitement"], []], severity=[2, 0])
    ok = bench.check([row, row2], [client], overlap=2)
    assert (ok["lost"], ok["duplicates"], ok["duplicate_tasks"], ok["mismatched"]) == (0, 0, 0, 0)
    assert bench.check([row], [client], overlap=2)["lost"] == 1
    twice = bench.check([row, row2, dict(row2, task_id="t3")], [client], overlap=2)
    assert twice["duplicates"] == 1 and twice["stored_not_acknowledged"] == 1
    assert bench.check([row, row2, row2], [client], overlap=2)["duplicate_tasks"] == 1
    assert bench.check([dict(row, better=0), row2], [client], overlap=2)["mismatched"] == 1
    other = FakeClient("ann2", {"t4": dict(body, task_id="t4")})
    crowded = bench.check([row, row2, dict(row, task_id="t4", annotator="ann2")], [client, other], overlap=1)
    assert crowded["pairs_over_overlap"] == 1 and crowded["mismatched"] == 0


def test_small_run_with_a_killed_server(tmp_path):
    pytest.importorskip("fastapi", reason="the annotate extra is not installed")
    pytest.importorskip("httpx", reason="the annotate extra is not installed")
    out = tmp_path / "annotate.json"
    proc = subprocess.run([sys.executable, str(BENCH / "bench_annotate.py"), "--annotators", "3", "--labels", "4",
                           "--kill_after", "0.5", "--time_limit_s", "60", "--out", str(out)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["complete"] and not r["errors"] and not r["timed_out"], {k: r.get(k) for k in (
        "complete", "errors", "starved", "timed_out", "server_log_tail")}
    assert r["labels_acknowledged"] == r["labels_stored"] == 12
    assert (r["lost"], r["duplicates"], r["duplicate_tasks"], r["mismatched"], r["pairs_over_overlap"]) == (0,) * 5
    assert r["targets"]["no_label_lost"] and r["targets"]["no_duplicate"]
    assert r["kill_at_s"] is not None and r["restart_s"] is not None and r["open_tasks_left"] == 0
    assert r["in_flight_at_kill"] and r["connections_refused"] > 0  # killed under load, and the clients felt it
    assert r["latency_ms"]["all"]["n"] == r["requests"] >= 24
    assert r["admin_stats"]["status"] == 200 and r["admin_stats"]["labels"] == 12
    assert json.loads(proc.stdout) == r
