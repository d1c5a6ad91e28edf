"""A scripted OpenAI-compatible chat server in a thread: each POST /v1/chat/completions gets what ``answer(request,
n)`` returns (n counts the POSTs from 0): ``(status, body bytes)``, or ``("trickle", seconds)`` for a 200 whose body
arrives one byte every ``seconds``. GET /v1/models answers 200 (the clients' reachability check)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(text: str | None) -> bytes:
    """The body of a chat completion whose content is ``text`` (None: a null content)."""
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


@contextmanager
def judge_server(answer):
    """Yield the base URL (``http://127.0.0.1:PORT/v1``) of a server answering with ``answer``."""
    count = {"n": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            self._send(200, b'{"data": []}')

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with lock:
                n = count["n"]
                count["n"] += 1
            status, body = answer(request, n)
            if status == "trickle":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                try:
                    for _ in range(200):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(body)
                except OSError:
                    pass
                return
            self._send(status, body)

        def _send(self, status: int, body: bytes):
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
