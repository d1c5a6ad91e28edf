"""`saferlhf serve` against hostile clients: bodies that used to crash a route into a 500 with the exception's
text, lax numbers, DNS rebinding (Host), missing keys, and clients that send headers or bodies slowly. Most run
in-process (FastAPI's TestClient over the guarded app); the slow-client checks run a real server."""

from __future__ import annotations

import json
import shlex
import socket
import threading
import time

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

KEY = "test-key-123"
AUTH = {"authorization": f"Bearer {KEY}"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def policy(tiny_models):
    from saferlhf.models.policy import load_policy

    model, tokenizer = load_policy(tiny_models["llama"])  # 512 positions
    return model.eval(), tokenizer


def client(app, host: str = "127.0.0.1:8000"):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=f"http://{host}", raise_server_exceptions=False)


@pytest.fixture(scope="module")
def guarded_app(policy):
    """What `saferlhf serve --api_key_env ...` serves on 127.0.0.1."""
    from saferlhf.serve.app import build_app
    from saferlhf.serve.guards import allowed_hosts_for, guarded

    return guarded(build_app(*policy, "tiny"), read_timeout=5, api_key=KEY,
                   allowed_hosts=allowed_hosts_for("127.0.0.1", ["my.lan"]))


def post_raw(app, body: bytes, headers: dict | None = None):
    headers = {"content-type": "application/json", **AUTH, **(headers or {})}
    return client(app).post("/v1/chat/completions", content=body, headers=headers)


@pytest.mark.parametrize("body, status, field", [
    ({"seed": 2**64}, 400, "seed"),
    ({"seed": -1}, 400, "seed"),
    ({"max_tokens": True}, 400, "max_tokens"),
    ({"max_tokens": 2.0}, 400, "max_tokens"),
    ({"n": True}, 400, "n"),
    ({"seed": False}, 400, "seed"),
    ({"temperature": True}, 400, "temperature"),
    ({"temperature": "0.5"}, 400, "temperature"),
    ({"top_p": True}, 400, "top_p"),
    ({"stream": 1}, 400, "stream"),
    ({"max_tokens": 600}, 400, "max_tokens"),  # 600 new tokens do not fit the tiny model's 512 positions
    ({"messages": [{"role": "user", "content": "hi " * 300}], "max_tokens": 400}, 400, "max_tokens"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
])
def test_hostile_fields_get_a_4xx_naming_the_field(guarded_app, body, status, field):
    r = post_raw(guarded_app, json.dumps({"messages": HI, **body}).encode())
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert message.startswith(f"{field}:") and "Traceback" not in message


@pytest.mark.parametrize("raw, field", [
    (b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages.0.content"),  # a lone surrogate
    (b'{"messages": [{"role": "user", "content": "a\\udfffb"}], "max_tokens": 2}', "messages.0.content"),
    (b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    (b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}', "body"),  # not UTF-8 at all
])
def test_text_that_is_not_unicode_gets_a_400_naming_the_field(guarded_app, raw, field):
    r = post_raw(guarded_app, raw)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(f"{field}:"), r.text


def test_the_edges_of_the_ranges_are_served(guarded_app):
    r = post_raw(guarded_app, json.dumps({"messages": HI, "seed": 2**64 - 1, "max_tokens": 2,
                                          "temperature": 1}).encode())
    assert r.status_code == 200, r.text


def test_an_unexpected_failure_is_a_500_without_the_exception_text(policy):
    from saferlhf.serve.app import build_app

    model, tokenizer = policy

    class Broken:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, *args, **kwargs):
            raise RuntimeError("secret internal detail /home/someone")

    r = client(build_app(model, Broken(), "tiny")).post("/v1/chat/completions", json={"messages": HI})
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "secret" not in r.text and "RuntimeError" not in r.text


def test_messages_the_chat_template_rejects_get_a_400(policy):
    import copy

    from saferlhf.serve.app import build_app

    model, tokenizer = policy
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = "{{ raise_exception('roles must alternate user/assistant') }}"
    r = client(build_app(model, strict, "tiny")).post("/v1/chat/completions", json={"messages": HI})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("messages:")
    assert "roles must alternate" in r.text


def test_the_curl_example_of_the_docstring_is_accepted(guarded_app):
    """Replays the module docstring's curl line as curl sends it: -d without a -H content-type is a form post."""
    import saferlhf.serve.app as serve_app

    lines = serve_app.__doc__.replace("\\\n", " ").splitlines()
    argv = shlex.split(next(line for line in lines if line.strip().startswith("curl ")))
    headers, data, url = {"content-type": "application/x-www-form-urlencoded"}, None, None
    for flag, value in zip(argv, argv[1:]):
        if flag == "-H":
            name, _, text = value.partition(":")
            headers[name.strip().lower()] = text.strip()
        elif flag == "-d":
            data = value
    url = next(a for a in argv[1:] if a.startswith(("localhost", "http")))
    host, _, path = url.removeprefix("http://").partition("/")
    r = client(guarded_app, host).post("/" + path, content=data.encode(), headers={**headers, **AUTH})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", f"Basic {KEY}", KEY, "Bearer "])
def test_a_request_without_the_key_gets_401(guarded_app, auth):
    headers = {} if auth is None else {"authorization": auth}
    r = client(guarded_app).get("/v1/models", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["message"].startswith("Authorization:")
    assert client(guarded_app).get("/v1/models", headers=AUTH).status_code == 200


@pytest.mark.parametrize("host, status", [
    ("localhost", 200), ("localhost:8000", 200), ("LocalHost:8000", 200), ("127.0.0.1", 200),
    ("127.0.0.1:8000", 200), ("[::1]:8000", 200), ("[::1]", 200), ("my.lan:8000", 200),
    ("evil.example", 421), ("evil.example:8000", 421), ("localhost.evil.example", 421),
    ("127.0.0.1.nip.io:8000", 421), ("", 421),
])
def test_only_allowed_host_headers_are_answered(guarded_app, host, status):
    r = client(guarded_app).get("/v1/models", headers={**AUTH, "host": host})
    assert r.status_code == status, r.text
    if status != 200:
        assert r.json()["error"]["message"].startswith("Host:")


def test_which_hosts_are_checked():
    from saferlhf.serve.guards import allowed_hosts_for

    assert "localhost" in allowed_hosts_for("127.0.0.1", []) and "::1" in allowed_hosts_for("::1", [])
    assert allowed_hosts_for("0.0.0.0", []) is None  # an open bind answers any Host (use --api_key_env there)
    assert "box.lan" in allowed_hosts_for("0.0.0.0", ["box.lan"])


def test_a_body_over_the_limit_gets_413(policy):
    from saferlhf.serve.app import build_app
    from saferlhf.serve.guards import BodyDeadline

    app = BodyDeadline(build_app(*policy, "tiny"), seconds=5, max_bytes=1000)
    r = client(app).post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 2000}]})
    assert r.status_code == 413 and r.json()["error"]["message"].startswith("body:")


def test_an_unset_key_variable_refuses_to_start(tiny_models, capsys, monkeypatch):
    from saferlhf.cli import main

    monkeypatch.setenv("SAFERLHF_TEST_EMPTY_KEY", "")
    for name in ("SAFERLHF_TEST_EMPTY_KEY", "SAFERLHF_TEST_NO_SUCH_KEY"):
        assert main(["serve", str(tiny_models["llama"]), "--api_key_env", name]) == 2
        err = capsys.readouterr().err
        assert f"{name} is unset or empty" in err and "Traceback" not in err


def _trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    for byte in data:
        if stop.wait(0.2):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


def _answer(sock: socket.socket) -> bytes:
    """What the server sent before closing (b"" when it closed without a word)."""
    out = b""
    sock.settimeout(10)
    try:
        while chunk := sock.recv(4096):
            out += chunk
    except ConnectionResetError:  # closed while the client was still sending
        pass
    return out


@pytest.fixture
def live_server(policy):
    """`saferlhf serve`'s uvicorn server (its config from `server_config`) in a thread, with 1 s read deadlines;
    yields its port."""
    import uvicorn
    from serve_util import free_port

    from saferlhf.serve.app import ServeConfig, build_app, server_config

    cfg = ServeConfig(port=free_port(), read_timeout=1.0)
    server = uvicorn.Server(server_config(build_app(*policy, "tiny"), cfg, api_key=KEY))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield cfg.port
    server.should_exit = True
    thread.join(10)


def test_slow_clients_get_408_or_are_closed_within_the_deadline_while_others_are_served(live_server):
    port, base = live_server, f"http://127.0.0.1:{live_server}"
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n").encode()
    slow_body, slow_head = socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port))
    stop = threading.Event()
    started = time.monotonic()
    slow_body.sendall(head)
    threads = [threading.Thread(target=_trickle, args=(s, data, stop), daemon=True)
               for s, data in ((slow_body, b'{"messages": ' + b" " * 300), (slow_head, head))]
    try:
        for t in threads:
            t.start()
        for _ in range(3):  # others are served while the slow ones trickle
            r = httpx.post(f"{base}/v1/chat/completions", json={"messages": HI, "max_tokens": 3}, headers=AUTH,
                           timeout=10)
            assert r.status_code == 200, r.text
        assert b" 408 " in _answer(slow_body).split(b"\r\n")[0]
        assert _answer(slow_head) == b""  # closed: its headers never completed
        assert time.monotonic() - started < 6  # 1 s deadlines, where the slow clients would trickle for 60 s
    finally:
        stop.set()
        slow_body.close()
        slow_head.close()
    assert httpx.get(f"{base}/v1/models", headers=AUTH).status_code == 200
