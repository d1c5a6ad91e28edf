"""Load and fault benchmark of the annotation app (issue 23): concurrent annotators over HTTP, the server SIGKILLed
mid-run and restarted on the same database, then every label checked in the database.

    python bench/bench_annotate.py                                  # 20 x 50 labels, ~1 min -> results/annotate.json
    python bench/bench_annotate.py --annotators 3 --labels 4 --out /tmp/a.json    # a smoke run (seconds)

Localhost only and bounded in time (``--time_limit_s``). Steps:
1. A fresh SQLite database in a temporary folder; the admin is added with `saferlhf annotate users add` (its token
   read from the command's output), the annotators with ``service.add_user`` (a process per user would take longer
   than the run itself).
2. Response pairs of the synthetic world (``World.response_pairs``), enough for ``annotators x labels`` labels at
   ``--overlap`` (plus 5 % slack), through `saferlhf annotate import` (no qualification, no hidden gold: every label
   counts; 10 % picked for audit, as by default).
3. `saferlhf annotate serve --port FREE [--sqlite_synchronous full|normal]` as a subprocess. One thread per
   annotator, each with its own ``httpx.Client`` (built before the clock starts) and token, loops ``GET
   /api/tasks/next`` -> ``POST /api/labels`` (a random valid label, some categories given as BeaverTails slugs, some
   ties) without think time (``--think_ms``) until it holds ``--labels`` acknowledged labels: a closed loop at full
   speed, far heavier than 20 people. Every answered request's latency is recorded (client side; the server's own
   time per request comes from its access log), and the CPU time per request of the server (start-ups left out)
   and of this process (the clients, which share the machine's cores with the server).
4. Once ``--kill_after`` of all the labels are acknowledged, and as soon as half the annotators have a label POST
   in flight (at most 2 s later), the server gets SIGKILL and is started again on the same port and database.
   Clients retry a request that got no answer (connection refused or dropped); a label POST whose answer was lost
   is sent again, and a 409 then means "stored before the kill" (acknowledged), not a loss.
5. The server is stopped, `saferlhf annotate export --include_incomplete true` writes the raw labels, and they are
   checked against what the clients were told: every acknowledged label stored exactly once with the answers sent
   (mapped back from the displayed order), none lost, no (pair, annotator) twice, no pair above its overlap.

Targets (issue 23): p99 request latency <= 200 ms on SQLite here (client side, every answered request, the restart
included); no acknowledged label lost; no duplicate. Prints one JSON object and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import common  # noqa: E402

NEXT, LABEL = "GET /api/tasks/next", "POST /api/labels"
RETRY_SLEEP_S = 0.02


# ---- set-up -----------------------------------------------------------------------------------------------------
def saferlhf(args: list[str], log: Path) -> str:
    """``python -m saferlhf *args``: its stdout; a failure stops the benchmark with the command's output."""
    proc = subprocess.run([sys.executable, "-m", "saferlhf", *args], capture_output=True, text=True, timeout=300,
                          env=common.thread_env(1))
    with log.open("a") as f:
        f.write(f"\n== saferlhf {' '.join(args)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise SystemExit(f"saferlhf {' '.join(args[:3])} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def write_pairs(path: Path, n: int, seed: int) -> int:
    """``n`` distinct world response pairs as {prompt, response_0, response_1} JSONL."""
    from saferlhf.world import World

    pairs = list(dict.fromkeys(World(seed).response_pairs(n, seed=seed)))
    path.write_text("".join(json.dumps({"prompt": p, "response_0": a, "response_1": b}) + "\n" for p, a, b in pairs))
    return len(pairs)


def add_users(url: str, n: int, log: Path) -> tuple[str, dict[str, str]]:
    """(the admin's token, {annotator: token})."""
    out = saferlhf(["annotate", "users", "add", "admin", "--role", "admin", "--db", url], log)
    admin = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("token:"))
    from saferlhf.annotate.app.db import connect
    from saferlhf.annotate.app.service import add_user

    db = connect(url)
    with db.session() as s:
        tokens = {f"ann{i:02d}": add_user(s, f"ann{i:02d}", "annotator") for i in range(n)}
    db.close()
    return admin, tokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`saferlhf annotate serve` as a subprocess (output and access log in files), startable again after a kill."""

    def __init__(self, url: str, port: int, folder: Path, synchronous: str = "full"):
        self.url, self.port, self.folder, self.synchronous = url, port, folder, synchronous
        self.base = f"http://127.0.0.1:{port}"
        self.log, self.access_log = folder / "server.log", folder / "access.log"
        self.proc: subprocess.Popen | None = None
        self.cpu_s = 0.0  # CPU seconds (user + system) the server processes spent answering, start-ups left out
        self.cpu_at_start = 0.0

    def process_cpu(self) -> float:
        """The running server's CPU seconds so far (Linux /proc; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (AttributeError, OSError, ValueError, IndexError):
            return 0.0

    def add_cpu(self) -> None:
        """Add the CPU seconds the running server spent since it first answered to ``cpu_s``."""
        self.cpu_s += max(0.0, self.process_cpu() - self.cpu_at_start)
        self.cpu_at_start = self.process_cpu()

    def start(self, timeout_s: float = 60) -> float:
        """Start it and wait until it answers; the seconds that took."""
        import httpx

        t = time.monotonic()
        with self.log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "saferlhf", "annotate", "serve", "--db", self.url,
                                          "--port", str(self.port), "--access_log", str(self.access_log),
                                          "--sqlite_synchronous", self.synchronous],
                                         stdout=out, stderr=subprocess.STDOUT, env=common.thread_env(1))
        with httpx.Client(base_url=self.base, timeout=1) as probe:  # one client: building one takes ~50 ms of CPU
            while time.monotonic() - t < timeout_s:
                if self.proc.poll() is not None:
                    raise SystemExit(f"annotate serve exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
                try:
                    if probe.get("/api/me").status_code == 401:
                        self.cpu_at_start = self.process_cpu()
                        return time.monotonic() - t
                except httpx.TransportError:
                    time.sleep(0.02)
        raise SystemExit(f"annotate serve did not answer within {timeout_s:g} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        self.add_cpu()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.add_cpu()
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- the annotators ---------------------------------------------------------------------------------------------
def random_label(rng: random.Random, task_id: str) -> dict[str, Any]:
    """A valid label body in the displayed order: ~30 % of responses unsafe (1-2 categories, a third of them given
    as BeaverTails slugs), ~10 % ties per question."""
    from saferlhf.data.schema import BEAVERTAILS_SLUGS

    slugs = sorted(BEAVERTAILS_SLUGS)
    categories, severity = [], []
    for _ in range(2):
        if rng.random() < 0.3:
            names = [BEAVERTAILS_SLUGS[s] if rng.random() < 0.67 else s for s in rng.sample(slugs, rng.randint(1, 2))]
            categories.append(names)
            severity.append(rng.randint(1, 3))
        else:
            categories.append([])
            severity.append(0)
    choice = lambda: "tie" if rng.random() < 0.1 else rng.randint(0, 1)  # noqa: E731
    return {"task_id": task_id, "helpful": choice(), "harmless": choice(), "categories": categories,
            "severity": severity}


class Annotator(threading.Thread):
    """One annotator: GET a task, POST a label, until ``target`` labels are acknowledged (or nothing is left, or
    the deadline passes). A request without an answer is sent again. Its ``httpx.Client`` is built here, before any
    thread starts: building one takes ~50 ms of CPU, which would otherwise be counted in the other annotators'
    first requests (all the clients share this process)."""

    def __init__(self, name: str, token: str, base: str, target: int, seed: int, t0: float, deadline: float,
                 think_s: float = 0.0):
        import httpx

        super().__init__(name=name, daemon=True)
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        self.think_s = think_s
        self.token, self.base, self.target, self.t0, self.deadline = token, base, target, t0, deadline
        self.rng = random.Random(f"{seed}:{name}")
        self.acked: dict[str, dict[str, Any]] = {}  # task_id -> the body whose storing the server acknowledged
        self.samples: list[tuple[str, float, float]] = []  # (endpoint, seconds since t0, latency ms)
        self.in_flight: str | None = None  # the endpoint of the request waiting for its answer, if any
        self.refused = 0  # attempts whose connection was refused (the server was down: nothing was sent)
        self.interrupted = Counter()  # per endpoint: requests sent whose answer never came (in flight at the kill)
        self.recovered = 0  # label POSTs whose 201 was lost, answered 409 "already labelled" when sent again
        self.errors: list[str] = []
        self.starved = False  # 204 before the target: nothing left for this annotator

    def request(self, client: Any, method: str, path: str, body: dict | None = None) -> tuple[Any, bool]:
        """(the response, whether an earlier attempt was sent and got no answer); (None, ...) at the deadline."""
        import httpx

        lost = False
        while time.monotonic() < self.deadline:
            t = time.perf_counter()
            try:
                self.in_flight = f"{method} {path}"
                resp = client.request(method, path, json=body)
            except httpx.ConnectError:
                self.refused += 1
                time.sleep(RETRY_SLEEP_S)
                continue
            except httpx.TransportError:
                self.interrupted[f"{method} {path}"] += 1
                lost = True
                time.sleep(RETRY_SLEEP_S)
                continue
            finally:
                self.in_flight = None
            self.samples.append((f"{method} {path}", t - self.t0, (time.perf_counter() - t) * 1000))
            return resp, lost
        return None, lost

    def run(self) -> None:
        try:
            self.label_until_done()
        except Exception as e:  # noqa: BLE001 - reported in the result, not lost in a thread
            self.errors.append(f"{type(e).__name__}: {e}"[:300])

    def label_until_done(self) -> None:
        with self.client as c:
            while len(self.acked) < self.target:
                resp, _ = self.request(c, "GET", "/api/tasks/next")
                if resp is None:
                    return
                if resp.status_code == 204:
                    self.starved = True
                    return
                if resp.status_code != 200:
                    self.errors.append(f"{NEXT}: {resp.status_code} {resp.text[:200]}")
                    return
                body = random_label(self.rng, resp.json()["task_id"])
                if self.think_s:
                    time.sleep(self.think_s)
                resp, lost = self.request(c, "POST", "/api/labels", body)
                if resp is None:
                    return
                if resp.status_code == 201:
                    self.acked[body["task_id"]] = body
                elif resp.status_code == 409 and lost:
                    self.acked[body["task_id"]] = body
                    self.recovered += 1
                else:
                    self.errors.append(f"{LABEL}: {resp.status_code} {resp.text[:200]}")
                    return


# ---- checks -----------------------------------------------------------------------------------------------------
def imported_order(body: dict[str, Any], swapped: bool) -> dict[str, Any]:
    """A label body (displayed order) as ``label_to_dict`` answers in the imported order (categories as sets)."""
    from saferlhf.annotate.labels import canonical_category

    flip = (lambda v: v if v == "tie" else 1 - v) if swapped else (lambda v: v)
    cats = [sorted({canonical_category(c) for c in names}) for names in body["categories"]]
    sev = list(body["severity"])
    if swapped:
        cats, sev = cats[::-1], sev[::-1]
    return {"better": flip(body["helpful"]), "safer": flip(body["harmless"]), "categories": cats, "severity": sev}


def check(rows: list[dict[str, Any]], clients: list[Annotator], overlap: int) -> dict[str, Any]:
    """Stored labels (raw export rows) against the acknowledged ones."""
    acked = {tid: (a.name, body) for a in clients for tid, body in a.acked.items()}
    by_task = Counter(r["task_id"] for r in rows)
    by_pair_annotator = Counter((r["pair"], r["annotator"]) for r in rows)
    by_pair = Counter(r["pair"] for r in rows)
    stored = {r["task_id"]: r for r in rows}
    mismatched = 0
    for tid, (name, body) in acked.items():
        r = stored.get(tid)
        if r is None:
            continue
        want = imported_order(body, r["swapped"])
        got = {"better": r["better"], "safer": r["safer"], "categories": [sorted(c) for c in r["categories"]],
               "severity": list(r["severity"])}
        mismatched += r["annotator"] != name or got != want
    return {"labels_acknowledged": len(acked), "labels_stored": len(rows),
            "lost": sum(tid not in stored for tid in acked),
            "duplicates": sum(n - 1 for n in by_pair_annotator.values() if n > 1),
            "duplicate_tasks": sum(n - 1 for n in by_task.values() if n > 1),
            "stored_not_acknowledged": sum(tid not in acked for tid in stored),
            "mismatched": mismatched, "pairs_over_overlap": sum(n > overlap for n in by_pair.values()),
            "pairs_labelled": len(by_pair)}


def percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    s = sorted(values)

    def q(p: float) -> float:
        k = (len(s) - 1) * p
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 2)

    return {"n": len(s), "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": round(s[-1], 2),
            "mean": round(sum(s) / len(s), 2)}


def server_latencies(access_log: Path) -> dict[str, Any]:
    """The server's own seconds per request (its access log: ``... METHOD PATH STATUS 0.012s``), in ms."""
    per: dict[str, list[float]] = {NEXT: [], LABEL: []}
    for line in access_log.read_text().splitlines() if access_log.exists() else []:
        parts = line.split()
        if len(parts) >= 6 and f"{parts[2]} {parts[3]}" in per and parts[-1].endswith("s"):
            per[f"{parts[2]} {parts[3]}"].append(float(parts[-1][:-1]) * 1000)
    return {"all": percentiles(per[NEXT] + per[LABEL]), **{k: percentiles(v) for k, v in per.items()}}


def versions() -> dict[str, str]:
    import platform
    import sqlite3
    from importlib.metadata import version

    out = {name: version(name) for name in ("fastapi", "uvicorn", "sqlalchemy", "httpx")}
    return out | {"sqlite": sqlite3.sqlite_version, "python": platform.python_version()}


def admin_request(base: str, token: str) -> dict[str, Any]:
    """``GET /api/admin/stats`` once the labels are in: its status, latency and the labels it counts."""
    import httpx

    t = time.perf_counter()
    resp = httpx.get(f"{base}/api/admin/stats", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    ms = round((time.perf_counter() - t) * 1000, 1)
    labels = resp.json().get("progress", {}).get("labels") if resp.status_code == 200 else None
    return {"status": resp.status_code, "latency_ms": ms, "labels": labels}


# ---- the run ----------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    log = folder / "commands.log"
    url = f"sqlite:///{folder / 'annotate.db'}"
    needed = -(-args.annotators * args.labels // args.overlap)
    n_pairs = write_pairs(folder / "pairs.jsonl", needed + max(2, needed // 20), args.seed)
    admin, tokens = add_users(url, args.annotators, log)
    saferlhf(["annotate", "import", str(folder / "pairs.jsonl"), "--overlap", str(args.overlap), "--gold_rate", "0",
              "--seed", str(args.seed), "--db", url], log)
    server = Server(url, free_port(), folder, args.sqlite_synchronous)
    first_start_s = server.start()
    clients = [Annotator(name, tok, server.base, args.labels, args.seed, 0.0, 0.0, args.think_ms / 1000)
               for name, tok in tokens.items()]
    t0 = time.monotonic()
    deadline = t0 + args.time_limit_s
    client_cpu_s = time.process_time()
    for c in clients:
        c.t0, c.deadline = t0, deadline
        c.start()
    total = args.annotators * args.labels
    kill_at = restart_s = reached = None
    in_flight: dict[str, int] = {}
    try:
        while any(c.is_alive() for c in clients):
            acked = sum(len(c.acked) for c in clients)
            if reached is None and args.kill_after > 0 and acked >= args.kill_after * total:
                reached = time.monotonic()
            # closed-loop clients fall into step (all GET, then all POST): wait for label POSTs in flight
            if kill_at is None and reached is not None and (
                    sum(c.in_flight == LABEL for c in clients) >= max(1, args.annotators // 2)
                    or time.monotonic() - reached > 2):
                in_flight = dict(Counter(c.in_flight for c in clients if c.in_flight))
                server.kill()
                kill_at = time.monotonic() - t0
                restart_s = server.start()
            time.sleep(0.002)
        wall = time.monotonic() - t0
        client_cpu_s = time.process_time() - client_cpu_s
        server.add_cpu()
        server_cpu_s, server.cpu_s = server.cpu_s, 0.0
        admin_stats = admin_request(server.base, admin)
    finally:
        server.stop()
    saferlhf(["annotate", "export", "--out", str(folder / "export" / "prefs.jsonl"), "--include_incomplete", "true",
              "--db", url], log)
    rows = [json.loads(x) for x in (folder / "export" / "prefs.labels.jsonl").read_text().splitlines()]
    result = check([r for r in rows if r.get("type") == "label"], clients, args.overlap)
    progress = json.loads((folder / "export" / "prefs.stats.json").read_text()).get("progress", {})
    result["open_tasks_left"] = progress.get("open_tasks")  # 0: every task whose answer was lost came back
    samples = [s for c in clients for s in c.samples]
    latency = {"all": percentiles([ms for _, _, ms in samples]),
               **{e: percentiles([ms for ep, _, ms in samples if ep == e]) for e in (NEXT, LABEL)}}
    if kill_at is not None:
        latency["after_restart"] = percentiles([ms for _, t, ms in samples if t >= kill_at])
    p99 = latency["all"].get("p99")
    complete = all(len(c.acked) == args.labels for c in clients)
    result |= {
        "targets": {"p99_latency_ms_le_200": p99 is not None and p99 <= 200, "no_label_lost": result["lost"] == 0,
                    "no_duplicate": result["duplicates"] == 0 and result["duplicate_tasks"] == 0},
        "p50_latency_ms": latency["all"].get("p50"), "p99_latency_ms": p99,
        "latency_ms": latency, "server_latency_ms": server_latencies(server.access_log),
        "requests": len(samples), "connections_refused": sum(c.refused for c in clients),
        "requests_interrupted": dict(sum((c.interrupted for c in clients), Counter())),
        "labels_recovered_409": sum(c.recovered for c in clients),
        "complete": complete, "server_log_tail": None if complete else server.log.read_text()[-3000:],
        "starved": [c.name for c in clients if c.starved], "errors": [e for c in clients for e in c.errors][:20],
        "timed_out": wall >= args.time_limit_s, "admin_stats": admin_stats,
        "kill_at_s": None if kill_at is None else round(kill_at, 2), "in_flight_at_kill": in_flight,
        "restart_s": None if restart_s is None else round(restart_s, 2),
        "first_start_s": round(first_start_s, 2), "wall_s": round(wall, 2),
        "labels_per_s": round(result["labels_acknowledged"] / wall, 1) if wall else None,
        "requests_per_s": round(len(samples) / wall, 1) if wall else None,
        # CPU per answered request: the server (both processes, start-ups included) and this process (the clients)
        "cpu_ms_per_request": {"server": round(1000 * server_cpu_s / len(samples), 2) if samples else None,
                               "clients": round(1000 * client_cpu_s / len(samples), 2) if samples else None},
        "settings": {"annotators": args.annotators, "labels": args.labels, "overlap": args.overlap,
                     "pairs": n_pairs, "kill_after": args.kill_after, "seed": args.seed,
                     "database": f"sqlite (WAL, synchronous={args.sqlite_synchronous.upper()})",
                     "think_ms": args.think_ms,
                     "clients": "one thread and one httpx.Client (keep-alive) per annotator, same process"},
    }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--labels", type=int, default=50, help="acknowledged labels each annotator collects")
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--kill_after", type=float, default=0.5,
                    help="SIGKILL and restart the server once this share of all the labels is acknowledged (0: never)")
    ap.add_argument("--think_ms", type=float, default=0,
                    help="pause between receiving a task and posting its label (0: a closed loop at full speed)")
    ap.add_argument("--sqlite_synchronous", choices=("full", "normal"), default="full",
                    help="the server's --sqlite_synchronous (either keeps every acknowledged label across a SIGKILL)")
    ap.add_argument("--time_limit_s", type=float, default=240, help="clients stop after this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (database, logs, export)")
    ap.add_argument("--out", default=str(common.RESULTS / "annotate.json"), help="result JSON ('' = do not write)")
    args = ap.parse_args()
    if args.annotators < 1 or args.labels < 1 or args.overlap < 1 or not 0 <= args.kill_after < 1:
        ap.error("--annotators, --labels and --overlap must be >= 1 and --kill_after in [0, 1)")
    load_before, started = os.getloadavg(), time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="bench_annotate_"))
    try:
        result = run(args, folder)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    result |= {"total_s": round(time.monotonic() - started, 1), "folder": str(folder) if args.keep else None,
               "machine": common.machine(), "versions": versions(),
               "load_avg_before": [round(x, 2) for x in load_before],
               "load_avg_after": [round(x, 2) for x in os.getloadavg()],
               "command": "python bench/bench_annotate.py " + " ".join(sys.argv[1:])}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
