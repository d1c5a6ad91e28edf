"""LLM judges and attackers that are dead, rude or slow (issue 20): HTTP 500 / 429, bodies that are not chat
completions (``null``, a list, no choices, a null content, not JSON), unparseable verdicts, a server trickling one
byte a second, and endpoint settings out of range. Each must end in one line (exit 2), never in a traceback, a
hang or a report that shows a dead judge as a safe policy.

A scripted server (`_serve`) runs in a daemon thread of the benchmark process for the length of the run."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

GROUP = "judge"


def _completion(text: str | None) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


ANSWERS: dict[str, tuple[int, bytes] | None] = {  # path -> (status, body); None: trickle one byte a second
    "http500": (500, b"internal error"), "http429": (429, b"slow down"), "null": (200, b"null"),
    "list": (200, b"[1, 2, 3]"), "nochoices": (200, b'{"choices": []}'), "nullcontent": (200, _completion(None)),
    "notjson": (200, b"<html>oops</html>"), "garbage": (200, _completion("I like turtles.")), "trickle": None,
}


def _serve() -> str:
    """Start the server; its base URL is ``http://127.0.0.1:PORT``, each behaviour under ``/<name>/v1``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self._send(200, b'{"data": []}')

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            answer = ANSWERS.get(self.path.strip("/").split("/")[0], (404, b"{}"))
            if answer is None:
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(120):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(1.0)
                except OSError:
                    pass
                return
            self._send(*answer)

        def _send(self, status: int, body: bytes):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def cases(tmp: Path, env: dict[str, Path]) -> list[tuple[str, list[str]]]:
    root = tmp / "judge"
    root.mkdir(parents=True, exist_ok=True)
    prompts, responses = root / "prompts.jsonl", root / "responses.jsonl"
    texts = [f"how do I do thing {k}?" for k in range(4)]
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    responses.write_text("".join(json.dumps({"prompt": t, "response": "Sure."}) + "\n" for t in texts))
    base = _serve()

    def ev(name: str, *argv: str) -> tuple[str, list[str]]:
        return (f"eval judge {name}", ["eval", "--responses", f"a={responses}", "--prompts", str(prompts), "--judges",
                                       "llm,refusal", "--judge.model", "j", "--judge.retries", "0", "--judge.timeout",
                                       "3", "--out", str(root / "o" / name.replace(" ", "_")), *argv])

    out = [ev(f"answers {k}", "--judge.base_url", f"{base}/{k}/v1") for k in ANSWERS]
    out += [
        ev("old flag names, dead", "--judge_base_url", f"{base}/http500/v1"),
        ev("max_failure_rate above 1", "--judge.base_url", f"{base}/garbage/v1", "--judge.max_failure_rate", "2"),
        ev("timeout 0", "--judge.base_url", f"{base}/garbage/v1", "--judge.timeout", "0"),
        ev("concurrency 0", "--judge.base_url", f"{base}/garbage/v1", "--judge.concurrency", "0"),
        ev("without base_url"),
        ("redteam judge llm without base_url", ["redteam", "--policy", str(env["base"]), "--judge_kind", "llm",
                                                "--out", str(root / "o" / "rt1")]),
        ("redteam attacker llm without base_url", ["redteam", "--policy", str(env["base"]), "--attacker_kind", "llm",
                                                   "--out", str(root / "o" / "rt2")]),
        ("redteam dead judge", ["redteam", "--policy", str(env["base"]), "--judge_kind", "llm", "--judge.base_url",
                                f"{base}/nullcontent/v1", "--judge.model", "j", "--judge.retries", "0",
                                "--candidates", "3", "--sampling.max_new_tokens", "4", "--out", str(root / "o" / "rt3")]),
        ("redteam dead attacker", ["redteam", "--policy", str(env["base"]), "--attacker_kind", "llm",
                                   "--attacker.base_url", f"{base}/http500/v1", "--attacker.model", "a",
                                   "--attacker.retries", "0", "--candidates", "3", "--out", str(root / "o" / "rt4")]),
    ]
    return out
