"""The annotation tests' own machinery works for real: each backend of ``db_url`` is a fresh database that takes a
table, a PostgreSQL cluster that cannot be had fails (not skips) under SAFERLHF_REQUIRE_POSTGRES=1, the live server
serves a FastAPI app that Playwright opens in the system Chromium and then stops, a failing browser test leaves a
screenshot, and set-up / test.sh install and require PostgreSQL in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import serve_in_thread

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"


def clean_env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SAFERLHF_")} | extra


def fill_probe_table(url: str) -> tuple[str, list[tuple[int, str]]]:
    """(dialect, rows) after creating a table in a database that must not have had it."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(url)
    try:
        assert not sqlalchemy.inspect(engine).has_table("probe"), "the database is not fresh"
        with engine.begin() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar_one() == 1
            conn.execute(sqlalchemy.text("CREATE TABLE probe (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"))
            conn.execute(sqlalchemy.text("INSERT INTO probe (id, note) VALUES (1, :a), (2, :b)"),
                         {"a": "é <script>", "b": "two"})
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sqlalchemy.text("SELECT id, note FROM probe ORDER BY id"))]
        return engine.dialect.name, rows
    finally:
        engine.dispose()


def test_db_url_is_a_fresh_database_that_takes_a_table(db_url, request):
    dialect, rows = fill_probe_table(db_url)
    assert dialect == request.node.callspec.params["db_url"]
    assert rows == [(1, "é <script>"), (2, "two")]


def test_the_next_test_gets_another_fresh_database(db_url):
    assert fill_probe_table(db_url)[1][1] == (2, "two")  # no "probe" table left over from the test above


def run_pytest(node: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", node],
                          cwd=REPO, env=clean_env(**env), capture_output=True, text=True, timeout=300)


def test_a_missing_cluster_is_a_skip_or_under_require_postgres_a_failure(tmp_path):
    node = "tests/annotate/test_infra.py::test_db_url_is_a_fresh_database_that_takes_a_table[postgresql]"
    empty = tmp_path / "no-postgres"
    empty.mkdir()
    skipped = run_pytest(node, tmp_path, SAFERLHF_POSTGRES_BIN=str(empty))
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout
    assert "no PostgreSQL binaries" in skipped.stdout
    failed = run_pytest(node, tmp_path, SAFERLHF_POSTGRES_BIN=str(empty), SAFERLHF_REQUIRE_POSTGRES="1")
    assert failed.returncode == 1 and "1 error" in failed.stdout, failed.stdout
    assert "SAFERLHF_REQUIRE_POSTGRES=1: the PostgreSQL tests must run" in failed.stdout


def heading_app():
    fastapi = pytest.importorskip("fastapi")
    from fastapi.responses import HTMLResponse

    app = fastapi.FastAPI()

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return ("<!doctype html><title>infra</title><h1>Annotation infra</h1>"
                "<p id=js>no script</p><script>document.getElementById('js').textContent = 'script ran'</script>")

    @app.get("/api/ping")
    def ping() -> dict:
        return {"pong": True}

    return app


def test_live_server_page_opens_in_system_chromium(live_server, page, screenshots_dir):
    base = live_server(heading_app())
    assert base.startswith("http://127.0.0.1:")
    page.goto(base + "/")
    assert page.locator("h1").inner_text() == "Annotation infra"
    assert page.locator("#js").inner_text() == "script ran"
    assert page.evaluate("() => fetch('/api/ping').then(r => r.json())") == {"pong": True}
    shot = screenshots_dir / "infra_heading.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 1000
    assert "HeadlessChrome" in page.evaluate("navigator.userAgent")


def test_serve_in_thread_stops_the_server_on_exit():
    httpx = pytest.importorskip("httpx")
    with serve_in_thread(heading_app()) as base:
        assert httpx.get(base + "/api/ping", timeout=10).json() == {"pong": True}
    with pytest.raises(httpx.ConnectError):
        httpx.get(base + "/api/ping", timeout=5)


def test_a_failing_browser_test_leaves_a_screenshot(tmp_path, chromium_executable):
    """A throw-away test module that uses these fixtures (star import of this conftest) and fails."""
    pytest.importorskip("playwright.sync_api")
    (tmp_path / "conftest.py").write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
                                          "from annotate.conftest import *  # noqa: F401,F403\n")
    (tmp_path / "test_fails.py").write_text("def test_fails(page):\n"
                                            "    page.set_content('<h1>about to fail</h1>')\n"
                                            "    assert page.locator('h1').inner_text() == 'something else'\n")
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_fails.py"],
                         cwd=tmp_path, env=clean_env(SAFERLHF_TEST_ARTIFACTS=str(tmp_path / "art")),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "1 failed" in res.stdout, res.stdout + res.stderr
    shots = list((tmp_path / "art" / "annotate").glob("*FAILED.png"))
    assert [s.name for s in shots] == ["test_fails.py_test_fails-FAILED.png"]
    assert shots[0].stat().st_size > 1000


@pytest.fixture
def guard(tmp_path) -> Path:
    """Stand-ins first on PATH that fail (apt-get, pip, python3) or say root (id): a dry run must run none."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name, body in {"apt-get": "exit 1", "pip": "exit 1", "python3": "exit 1", "id": "echo 0"}.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("browser_env", ["1", "0"])
def test_setup_dry_run_installs_postgresql_only_for_ci(guard, browser_env):
    env = clean_env(SAFERLHF_SETUP_DRY_RUN="1", SAFERLHF_SETUP_BROWSER=browser_env,
                    PATH=f"{guard}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    apt = [line for line in res.stdout.splitlines() if line.startswith("+ apt-get install")]
    assert apt == (["+ apt-get install -y -qq chromium tmux postgresql"] if browser_env == "1" else [])
    assert 'pip install -q -e .[test]' in res.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("given, expected", [(None, "1"), ("0", "0")])
def test_test_sh_requires_postgres_where_initdb_exists(tmp_path, given, expected):
    """scripts/test.sh in a copy of the repository whose set-up does nothing and whose python only reports the
    variable; initdb is on PATH."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "test.sh", root / "scripts" / "test.sh")
    (root / "scripts" / "setup.sh").write_text("exit 0\n")
    venv = root / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "activate").write_text(f'PATH="{venv}:$PATH"\n')
    (venv / "python").write_text('#!/bin/sh\necho "require=${SAFERLHF_REQUIRE_POSTGRES:-unset}"\n')
    (venv / "initdb").write_text("#!/bin/sh\nexit 0\n")
    for exe in ("python", "initdb"):
        (venv / exe).chmod(0o755)
    env = clean_env(PATH=f"{venv}{os.pathsep}{os.environ['PATH']}")
    if given is not None:
        env["SAFERLHF_REQUIRE_POSTGRES"] = given
    res = subprocess.run(["bash", str(root / "scripts" / "test.sh")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"require={expected}"
