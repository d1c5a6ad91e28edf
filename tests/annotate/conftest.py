"""Fixtures of the annotation app's tests: real databases, a live server and a real browser.

- ``db_url``: a fresh, empty database per test, once per backend: ``[sqlite]`` a file in tmp_path, ``[postgresql]``
  a new database in a throw-away cluster that the session starts on 127.0.0.1 (Debian's ``postgresql`` binaries;
  scripts/setup.sh installs them in CI) and deletes at the end. ``postgres_url`` is the PostgreSQL one alone.
  Without the binaries or psycopg the PostgreSQL half is skipped, unless SAFERLHF_REQUIRE_POSTGRES=1 (scripts/test.sh
  sets it where initdb exists): then it fails, so CI cannot skip it silently. SAFERLHF_POSTGRES_BIN=DIR picks the
  binaries' folder (default: initdb on PATH, then the newest /usr/lib/postgresql/<version>/bin).
- ``live_server``: ``base_url = live_server(app)`` serves an ASGI app with uvicorn in a thread on 127.0.0.1 and a
  free port until the test ends (Playwright's sync API cannot share a thread with a running asyncio loop).
- ``chromium_executable``, ``browser``, ``page``: Playwright driving the system Chromium (Playwright's own browser
  download is never used). A failing test that used ``page`` leaves ``<test>-FAILED.png`` in ``screenshots_dir``:
  tests/artifacts/annotate (gitignored), or $SAFERLHF_TEST_ARTIFACTS/annotate.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
CALL_REPORT = pytest.StashKey[pytest.TestReport]()


# ---------------------------------------------------------------------------------------------- PostgreSQL cluster
def postgres_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: $SAFERLHF_POSTGRES_BIN, else initdb's on PATH, else the newest
    /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH); None when there is none."""
    if os.environ.get("SAFERLHF_POSTGRES_BIN"):
        candidates = [Path(os.environ["SAFERLHF_POSTGRES_BIN"])]
    else:
        on_path = shutil.which("initdb")
        candidates = [Path(on_path).resolve().parent] if on_path else []
        versions = Path("/usr/lib/postgresql").glob("*/bin")
        candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1,
                             reverse=True)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class PostgresCluster:
    """A throw-away cluster in a temporary folder: trust authentication, superuser ``postgres``, TCP on 127.0.0.1
    and a free port, its unix socket in the folder, no fsync. As root it runs as the ``postgres`` system user
    (initdb refuses root)."""

    def __init__(self, bin_dir: Path, run_as: str | None):
        self.bin_dir, self.run_as = bin_dir, run_as
        # not under pytest's tmp folder: that one is 0700 root, and the postgres user must enter this one
        self.root = Path(tempfile.mkdtemp(prefix="saferlhf-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = 0
        if run_as:
            user = pwd.getpwnam(run_as)
            os.chown(self.root, user.pw_uid, user.pw_gid)

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self.run_as and shutil.which("runuser"):
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        elif self.run_as:
            cmd = ["su", "-s", "/bin/sh", self.run_as, "-c", shlex.join(cmd)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if res.returncode != 0:
            log = self.log.read_text()[-1500:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args[:2])} failed ({res.returncode}):\n"
                               f"{res.stdout[-1500:]}{res.stderr[-1500:]}{log}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")
        for attempt in range(3):  # another process may take the free port before the server binds it
            self.port = free_port()
            options = (f"-p {self.port} -k {shlex.quote(str(self.root))} -c listen_addresses=127.0.0.1"
                       " -c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)


def _postgres_unavailable(reason: str):
    """Skip, or fail where SAFERLHF_REQUIRE_POSTGRES=1 (CI with the binaries installed)."""
    if os.environ.get("SAFERLHF_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{reason} (SAFERLHF_REQUIRE_POSTGRES=1: the PostgreSQL tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throw-away cluster for the session (started on first use, ~2 s); deleted at the end."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _postgres_unavailable("psycopg is not installed (pip install -e '.[test]')")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        _postgres_unavailable("no PostgreSQL binaries (initdb, pg_ctl): CI installs Debian's postgresql")
    run_as = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _postgres_unavailable("running as root with no 'postgres' user to run the cluster (initdb refuses root)")
        run_as = "postgres"
    cluster = PostgresCluster(bin_dir, run_as)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        cluster.stop()
        _postgres_unavailable(f"the throw-away PostgreSQL cluster did not start: {e}")
    yield cluster
    cluster.stop()


_database_numbers = itertools.count()


@pytest.fixture
def postgres_url(request) -> Iterator[str]:
    """``postgresql+psycopg://...`` of a new, empty database in the session's cluster, dropped after the test."""
    cluster = request.getfixturevalue("postgres_cluster")
    name = f"t{next(_database_numbers)}_{re.sub(r'[^a-z0-9]+', '_', request.node.name.lower())}"[:63]
    cluster.execute(f'CREATE DATABASE "{name}"')
    yield cluster.url(name)
    cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # FORCE: a pool may still hold connections


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh database URL per test, the test running once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'annotate.db'}"
    return request.getfixturevalue("postgres_url")


# ---------------------------------------------------------------------------------------------- live server
@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ASGI ``app`` with uvicorn in a daemon thread on ``host`` and a free port; yield its base URL, then
    shut it down (the socket is bound before the thread starts, so no other process can take the port)."""
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server on {host}:{port} did not start (see the log above)")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(10)
        sock.close()


@pytest.fixture
def live_server() -> Iterator[Callable[..., str]]:
    """``base_url = live_server(app)``: serve ``app`` until the test ends (several apps may run at once)."""
    with contextlib.ExitStack() as stack:
        yield lambda app, host="127.0.0.1": stack.enter_context(serve_in_thread(app, host))


# ---------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    """Where browser tests save their PNGs: $SAFERLHF_TEST_ARTIFACTS/annotate, else tests/artifacts/annotate."""
    out = Path(os.environ.get("SAFERLHF_TEST_ARTIFACTS") or REPO / "tests" / "artifacts") / "annotate"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium binary (CI installs Debian's chromium)")


@pytest.fixture(scope="module")
def browser(chromium_executable):
    """A headless Chromium under Playwright's sync API, one per test module. Not per session: while Playwright
    runs, its event loop counts as running in the main thread, and `asyncio.run` in any later test would fail."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[test]')")
    playwright = sync_api.sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS)
    except BaseException:
        playwright.stop()
        raise
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep the test's own (call phase) report on the item, for ``page`` to see whether the test failed."""
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


@pytest.fixture
def page(browser, request, screenshots_dir):
    """A page in a fresh browser context (its own cookies) at 1280x900, 15 s timeouts; screenshot on failure."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    report = request.node.stash.get(CALL_REPORT, None)
    if report is not None and report.failed:
        shot = screenshots_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', request.node.nodeid)}-FAILED.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
        except Exception as e:  # the page may have crashed with the test: the failure itself is what counts
            warnings.warn(f"no failure screenshot for {request.node.nodeid}: {e}", stacklevel=1)
    context.close()
