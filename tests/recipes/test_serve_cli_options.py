"""`saferlhf serve`'s new command-line options end to end (a real server process): --device / --dtype,
--max_request_bytes (a Content-Length over it is refused before the body is sent), --access_log FILE,
--max_batch_size / --batch_wait_ms (concurrent requests share batches, seen on /health); and `generate`'s
--device / --dtype."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import torch

httpx = pytest.importorskip("httpx", reason="the serve extra (fastapi, uvicorn, httpx) is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

HI = [{"role": "user", "content": "how do I cook rice?"}]


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    from serve_util import serve_process

    log = tmp_path_factory.mktemp("serve") / "access.log"
    args = ("--device", "cpu", "--dtype", "bfloat16", "--max_request_bytes", "3000", "--access_log", str(log),
            "--max_batch_size", "4", "--batch_wait_ms", "300")
    with serve_process(tiny_models["llama"], args=args) as base:
        yield base, log


def test_device_dtype_batching_and_health(server):
    base, _ = server
    health = httpx.get(f"{base}/health", timeout=10).json()
    assert (health["status"], health["model"], health["device"], health["dtype"]) == ("ok", "tiny", "cpu", "bfloat16")
    codes = []

    def ask(i: int) -> None:
        r = httpx.post(f"{base}/v1/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": f"dish {i}?"}], "max_tokens": 3, "seed": i})
        codes.append(r.status_code)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == [200] * 4
    after = httpx.get(f"{base}/health", timeout=10).json()
    assert after["requests"] - health["requests"] == 4
    assert after["batches"] - health["batches"] < 4 and 1 < after["largest_batch"] <= 4


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 60000000\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b" 413 " in head.split(b"\r\n")[0] and time.monotonic() - started < 5
    assert json.loads(body)["error"]["message"].startswith("body: Content-Length 60000000 is above")
    ok = httpx.post(f"{base}/v1/chat/completions", json={"messages": HI, "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200


def test_the_access_log_file_gets_a_line_per_request(server):
    base, log = server
    httpx.post(f"{base}/v1/chat/completions", json={"messages": HI, "max_tokens": 2, "temperature": 0}, timeout=60)
    httpx.get(f"{base}/v1/models", timeout=10)
    lines = log.read_text().splitlines()
    assert any(" POST /v1/chat/completions 200 " in line and "tokens=" in line and not line.endswith("tokens=-")
               for line in lines)
    assert lines[-1].split()[2:5] == ["GET", "/v1/models", "200"] and lines[-1].endswith("tokens=-")


@pytest.mark.parametrize("args, words", [
    (["--dtype", "float16", "--device", "cpu"], "dtype: float16 is not supported on the CPU"),
    (["--device", "tpu"], "device: 'tpu' is not one of"),
    (["--access_log", "/nonexistent-dir/x.log"], "--access_log /nonexistent-dir/x.log: cannot open it"),
])
def test_bad_options_are_one_clear_line(tiny_models, capsys, args, words):
    from saferlhf.cli import main

    assert main(["serve", str(tiny_models["llama"]), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_line(tiny_models, capsys):
    from saferlhf.cli import main

    assert main(["serve", str(tiny_models["llama"]), "--device", "cuda"]) == 2
    assert "device: cuda was asked for but torch sees no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16"])
def test_generate_takes_device_and_dtype(tiny_models, tmp_path, dtype, monkeypatch):
    from saferlhf.cli import main
    from saferlhf.models import policy as policy_module

    seen = {}
    load = policy_module.load_policy

    def spy(path, dtype=torch.float32, device=None, **kwargs):
        seen.update(dtype=dtype, device=device)
        return load(path, dtype=dtype, device=device, **kwargs)

    monkeypatch.setattr(policy_module, "load_policy", spy)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"how do I cook {t}?"}) + "\n" for t in ("rice", "tea")))
    out = tmp_path / "g.jsonl"
    assert main(["generate", "--model_path", str(tiny_models["llama"]), "--prompts", str(prompts), "--out", str(out),
                 "--sampling.max_new_tokens", "4", "--device", "cpu", "--dtype", dtype]) == 0
    assert len(out.read_text().splitlines()) == 2
    assert seen == {"device": "cpu", "dtype": torch.bfloat16 if dtype == "bfloat16" else torch.float32}


def test_generate_refuses_a_bad_device_or_dtype_before_loading(tiny_models, tmp_path, capsys):
    from saferlhf.cli import main

    base = ["generate", "--model_path", str(tiny_models["llama"]), "--out", str(tmp_path / "g.jsonl")]
    assert main([*base, "--dtype", "float16", "--device", "cpu"]) == 2
    assert "dtype: float16 is not supported on the CPU" in capsys.readouterr().err
    assert main([*base, "--device", "npu"]) == 2
    assert "device: 'npu' is not one of" in capsys.readouterr().err
    assert not (tmp_path / "g.jsonl").exists()
