"""`serve_process`: a real `saferlhf serve` on a free localhost port (used by the serve and LLM-judge tests)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_process(model, name: str = "tiny", fault: str = "", args: tuple[str, ...] = (), env: dict | None = None,
                  headers: dict | None = None):
    """A `saferlhf serve MODEL` subprocess (extra CLI ``args`` and ``env``); yields its base URL
    (http://127.0.0.1:PORT) once /v1/models answers (asked with ``headers``). Its output (the access log too) goes
    to a temporary file, not a pipe nobody reads, which would block the server once full."""
    httpx = pytest.importorskip("httpx", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    port = free_port()
    env = dict(os.environ, SAFERLHF_SERVE_FAULT=fault, SAFERLHF_NO_PROGRESS="1", **(env or {}))
    output = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([sys.executable, "-m", "saferlhf", "serve", str(model), "--port", str(port),
                             "--model_name", name, *args], env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/v1/models", timeout=1, headers=headers).status_code == 200:
                    break
            except httpx.HTTPError:
                if proc.poll() is not None:
                    output.seek(0)
                    pytest.fail(f"server exited: {output.read()}")
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        output.close()
