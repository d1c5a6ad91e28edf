"""`saferlhf serve`'s OpenAI features and limits, in-process over the guarded app (FastAPI's TestClient) and over
a real uvicorn server in a thread: streaming (server-sent events, also through the `openai` client when it is
installed), stop sequences, content parts, /health, the request-size and prompt-length limits, the access log
and the batching of concurrent requests."""

from __future__ import annotations

import json
import threading
import time

import pytest

httpx = pytest.importorskip("httpx", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

HI = [{"role": "user", "content": "how do I cook rice?"}]


@pytest.fixture(scope="module")
def policy(tiny_models):
    from saferlhf.models.policy import load_policy

    model, tokenizer = load_policy(tiny_models["llama"])  # 512 positions
    return model.eval(), tokenizer


class Served:
    """The guarded app over the tiny policy, with its access log lines."""

    def __init__(self, policy, max_bytes: int = 4 * 2**20, **build):
        from fastapi.testclient import TestClient

        from saferlhf.serve.app import build_app
        from saferlhf.serve.guards import allowed_hosts_for, guarded

        self.log: list[str] = []
        self.app = build_app(*policy, "tiny", **build)
        wrapped = guarded(self.app, read_timeout=5, allowed_hosts=allowed_hosts_for("127.0.0.1", []),
                          max_bytes=max_bytes, access_log=self.log.append)
        self.client = TestClient(wrapped, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)

    def chat(self, **body):
        body.setdefault("messages", HI)  # json.dumps escapes a lone surrogate as JSON's \ud800 (httpx refuses it)
        return self.client.post("/v1/chat/completions", content=json.dumps(body),
                                headers={"content-type": "application/json"})


@pytest.fixture(scope="module")
def served(policy):
    return Served(policy)


def events(response) -> list:
    """The SSE ``data:`` payloads of a response, JSON-decoded ("[DONE]" kept as the string)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in response.text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_stream_sends_openai_chunks_that_add_up_to_the_plain_answer(served):
    plain = served.chat(max_tokens=24, seed=7).json()["choices"][0]
    r = served.chat(max_tokens=24, seed=7, stream=True)
    assert r.status_code == 200
    chunks = events(r)
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[1:-1]) and len(deltas) > 1
    assert "".join(deltas) == plain["message"]["content"]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": plain["finish_reason"]}]


def test_stream_with_several_choices_and_usage(served):
    chunks = events(served.chat(max_tokens=6, seed=1, n=2, stream=True, stream_options={"include_usage": True}))
    assert chunks.pop() == "[DONE]"
    usage = chunks.pop()
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    roles = [c["choices"][0]["index"] for c in chunks if "role" in c["choices"][0]["delta"]]
    finished = sorted(c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"])
    assert roles == [0, 1] and finished == [0, 1]
    plain = served.chat(max_tokens=6, seed=1, n=2).json()
    for i in (0, 1):
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"][0]["index"] == i)
        assert text == plain["choices"][i]["message"]["content"]
    assert usage["usage"] == plain["usage"]


def test_stop_sequences_end_the_answer_before_them(served):
    full = served.chat(max_tokens=30, seed=5).json()["choices"][0]["message"]["content"]
    assert len(full) > 8, full
    for stop in (full[5:8], [full[5:8], "never produced"], ["never produced"]):
        first = full[5:8] if stop != ["never produced"] else None
        out = served.chat(max_tokens=30, seed=5, stop=stop).json()["choices"][0]
        if first is None:
            assert out["message"]["content"] == full and out["finish_reason"] == "length"
        else:
            assert out["message"]["content"] == full[:full.find(first)].strip() and out["finish_reason"] == "stop"
    streamed = events(served.chat(max_tokens=30, seed=5, stop=full[5:8], stream=True))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in streamed[:-1])
    assert text == full[:full.find(full[5:8])].strip() and streamed[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("body, field", [
    ({"stop": ""}, "stop"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": 5}, "stop"),
    ({"stop": ["ok", 3]}, "stop"), ({"stop": "x" * 1001}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": ["hi"]}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]}, "messages.0.content"),
])
def test_bad_new_fields_get_a_400_naming_the_field(served, body, field):
    r = served.chat(**body)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(f"{field}:"), r.text


def test_a_non_text_part_names_its_type(served):
    r = served.chat(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                           {"type": "image_url", "image_url": {"url": "x"}}]}])
    assert "part 1 has type 'image_url'" in r.json()["error"]["message"]


def test_content_as_text_parts_is_the_joined_text(served):
    parts = [{"type": "text", "text": "how do I cook"}, {"type": "text", "text": "rice?"}]
    as_parts = served.chat(messages=[{"role": "user", "content": parts}], max_tokens=8, temperature=0).json()
    as_text = served.chat(messages=[{"role": "user", "content": "how do I cook\nrice?"}], max_tokens=8,
                          temperature=0).json()
    assert as_parts["choices"] == as_text["choices"] and as_parts["usage"] == as_text["usage"]


def test_health_names_the_model_device_and_batches(served):
    r = served.client.get("/health")
    assert r.status_code == 200
    assert r.json() | {"requests": 0, "batches": 0, "largest_batch": 0} == {
        "status": "ok", "model": "tiny", "device": "cpu", "dtype": "float32", "waiting": 0, "requests": 0,
        "batches": 0, "largest_batch": 0}


def test_bodies_over_the_limit_get_413_before_they_are_parsed(policy):
    served = Served(policy, max_bytes=2000)
    big = b'{"messages": [' + b"x" * 3000  # not even JSON: a 413, not a 400, so it was never parsed
    r = served.client.post("/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "Content-Length 3014" in r.json()["error"]["message"]

    def chunked():  # no Content-Length: counted while it is read
        for _ in range(30):
            yield b"x" * 100

    r = served.client.post("/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["message"].startswith("body: larger than this server's limit")
    assert served.chat(max_tokens=2).status_code == 200  # under the limit: served


def test_a_prompt_longer_than_the_model_reads_is_refused_before_tokenising(policy):
    import copy

    model, tokenizer = policy
    counting = copy.deepcopy(tokenizer)
    calls = []
    original = type(counting).__call__

    class Counting(type(counting)):
        def __call__(self, text, *args, **kwargs):
            calls.append(len(text))
            return original(self, text, *args, **kwargs)

    counting.__class__ = Counting
    served = Served((model, counting))
    r = served.chat(messages=[{"role": "user", "content": "word " * 1000}])  # 5000 chars > 8 x 512 positions
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("messages: 5000 characters")
    assert calls == []
    assert served.chat(messages=[{"role": "user", "content": "word " * 100}], max_tokens=2).status_code == 200
    assert calls and max(calls) > 500


def test_the_access_log_has_one_line_per_request(policy):
    served = Served(policy)
    served.chat(max_tokens=3, temperature=0)
    served.chat(max_tokens=3, stream=True)
    served.chat(max_tokens=-1)
    served.client.get("/health")
    served.client.get("/v1/models", headers={"host": "evil.example"})
    assert len(served.log) == 5, served.log
    fields = [line.split() for line in served.log]
    chat = ["POST", "/v1/chat/completions"]
    assert [f[2:5] for f in fields] == [[*chat, "200"], [*chat, "200"], [*chat, "400"], ["GET", "/health", "200"],
                                        ["GET", "/v1/models", "421"]]
    prompt = served.chat(max_tokens=1).json()["usage"]["prompt_tokens"]
    assert fields[0][6] == f"tokens={prompt}+3" and fields[1][6].startswith(f"tokens={prompt}+")
    assert all(f[6] == "tokens=-" for f in fields[2:])
    assert all(f[5].endswith("s") and float(f[5][:-1]) >= 0 for f in fields)


@pytest.fixture(scope="module")
def live(policy):
    """A real uvicorn server (`server_config`) in a thread: 200 ms to collect a batch; yields (base URL, app)."""
    import uvicorn
    from serve_util import free_port

    from saferlhf.serve.app import ServeConfig, build_app, server_config

    cfg = ServeConfig(port=free_port())
    app = build_app(*policy, "tiny", batch_wait_ms=200, max_batch_size=8)
    lines: list[str] = []
    server = uvicorn.Server(server_config(app, cfg, access_log=lines.append))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{cfg.port}", app
    server.should_exit = True
    thread.join(10)


def test_concurrent_requests_are_generated_in_fewer_batches(live):
    base, app = live
    before = dict(app.state.batcher.stats)
    greedy_alone = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                              json={"messages": HI, "max_tokens": 6, "temperature": 0}).json()
    results: dict[int, dict] = {}

    def ask(i: int) -> None:
        body = {"messages": [{"role": "user", "content": f"how do I cook dish {i}?"}], "max_tokens": 4 + i,
                "temperature": 0.5 + 0.1 * i, "seed": i}
        if i == 0:
            body = {"messages": HI, "max_tokens": 6, "temperature": 0}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
        results[i] = r.json() if r.status_code == 200 else {"status": r.status_code}

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == list(range(6)) and all("choices" in r for r in results.values()), results
    stats = httpx.get(f"{base}/health").json()
    assert stats["requests"] - before["requests"] == 7
    assert stats["batches"] - before["batches"] < 7 and stats["largest_batch"] > 1
    assert results[0]["choices"] == greedy_alone["choices"]  # greedy: the same batched and alone


def test_the_openai_client_reads_the_stream(live):
    openai = pytest.importorskip("openai", reason="the openai package is not installed")
    base, _ = live
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
    plain = client.chat.completions.create(model="tiny", messages=HI, max_tokens=12, seed=3)
    stream = client.chat.completions.create(model="tiny", messages=HI, max_tokens=12, seed=3, stream=True,
                                            stop=["never produced"], stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_a_failure_inside_a_batch_is_a_500_or_a_stream_error_and_the_server_goes_on(policy, monkeypatch):
    import saferlhf.serve.batcher as batcher_module

    served = Served(policy)
    real = batcher_module.run_batch

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail /home/someone")

    monkeypatch.setattr(batcher_module, "run_batch", broken)
    r = served.chat(max_tokens=2)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error" and "secret" not in r.text
    streamed = events(served.chat(max_tokens=2, stream=True))
    assert streamed[-2]["error"]["type"] == "server_error" and streamed[-1] == "[DONE]"
    assert "secret" not in str(streamed)
    monkeypatch.setattr(batcher_module, "run_batch", real)
    assert served.chat(max_tokens=2).status_code == 200
