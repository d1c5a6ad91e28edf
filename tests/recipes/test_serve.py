"""`saferlhf serve` as a real server on localhost (a subprocess, real HTTP): models, chat completions, 4xx JSON
errors for malformed requests, an injected 5xx, and the server still answering afterwards."""

from __future__ import annotations

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")


@pytest.fixture(scope="module")
def server(tiny_models):
    from serve_util import serve_process

    with serve_process(tiny_models["llama"], fault="5xx:1") as base:
        yield base


def chat(base, **body):
    body.setdefault("messages", [{"role": "user", "content": "how do I cook rice?"}])
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)


def test_models_and_a_completion_after_an_injected_5xx(server):
    assert httpx.get(f"{server}/v1/models").json()["data"][0]["id"] == "tiny"
    first = chat(server, max_tokens=5)
    assert first.status_code == 503 and first.json()["error"]["type"] == "server_error"  # SAFERLHF_SERVE_FAULT
    r = chat(server, max_tokens=5, seed=1, n=2)
    assert r.status_code == 200
    out = r.json()
    assert out["object"] == "chat.completion" and out["model"] == "tiny" and len(out["choices"]) == 2
    assert all(c["finish_reason"] in ("stop", "length") and isinstance(c["message"]["content"], str)
               for c in out["choices"])
    assert 0 < out["usage"]["completion_tokens"] <= 10
    # seeded sampling is repeatable; temperature 0 is greedy
    again = chat(server, max_tokens=5, seed=1, n=2).json()
    assert [c["message"] for c in again["choices"]] == [c["message"] for c in out["choices"]]
    g1, g2 = (chat(server, max_tokens=5, temperature=0).json() for _ in range(2))
    assert g1["choices"][0]["message"] == g2["choices"][0]["message"]


@pytest.mark.parametrize("body, status, words", [
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"temperature": 5}, 400, "temperature"),
    ({"max_tokens": 100000}, 400, "max_tokens"),
    ({"stop": ""}, 400, "stop"),
    ({"model": "gpt-9"}, 404, "not served"),
])
def test_malformed_requests_get_json_errors_and_the_server_survives(server, body, status, words):
    r = chat(server, **body)
    assert r.status_code == status and words in r.json()["error"]["message"]
    raw = httpx.post(f"{server}/v1/chat/completions", content=b"{not json", timeout=10,
                     headers={"content-type": "application/json"})
    assert raw.status_code == 400 and "error" in raw.json()
    assert httpx.get(f"{server}/v1/models").status_code == 200  # still serving


def test_serve_without_a_model_is_one_clear_line(tmp_path, capsys):
    from saferlhf.cli import main

    assert main(["serve", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "model path not found" in err and "Traceback" not in err
