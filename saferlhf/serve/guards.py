"""What stands between the network and `saferlhf serve`'s routes: plain ASGI wrappers, outermost first.

- `HostCheck`: only allowed Host headers (a DNS-rebinding page in a browser cannot reach a loopback server).
- `BearerAuth`: ``Authorization: Bearer KEY`` (constant-time compare) when the server has a key.
- `AccessLog` (outermost, so refused requests are logged too): one line per request.
- `BodyDeadline`: the whole body within ``seconds`` of the headers (else 408) and under ``max_bytes`` (else 413:
  at once from Content-Length, and while reading a body sent without one, e.g. chunked), before any JSON parsing.
- `header_deadline_protocol`: uvicorn's h11 protocol, closing a connection whose request headers are not in within
  ``seconds`` (slow-header clients); ASGI code never sees a request before its headers are complete.

Each answers with the server's JSON error, ``{"error": {"message", "type"}}``, naming the header or the body.
"""

import asyncio
import hmac
import ipaddress
import json
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
MAX_BODY_BYTES = 4 * 2**20
USAGE_KEY = "saferlhf.usage"  # scope entry where a route leaves {"prompt_tokens", "completion_tokens"} for the log


async def send_error(send: Any, status: int, message: str, kind: str = "invalid_request_error",
                     headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer with a JSON error and close the connection (the rest of the request is not read)."""
    body = json.dumps({"error": {"message": message, "type": kind}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": body})


def header(scope: dict, name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers", ()) if k.lower() == name), None)


def is_loopback(host: str) -> bool:
    """Whether a bind address only reaches this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name in a Host header, lowercased, without port or IPv6 brackets: ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostCheck:
    """Answers 421 to a request whose Host header is not one of ``allowed`` (names, any port)."""

    def __init__(self, app: Any, allowed: Iterable[str]):
        self.app, self.allowed = app, {host_name(h) for h in allowed}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = (header(scope, b"host") or b"").decode("latin-1")
            if host_name(given) not in self.allowed:
                return await send_error(send, 421, f"Host: {given!r} is not a host this server answers to "
                                                   "(it can be allowed with --allowed_hosts)")
        await self.app(scope, receive, send)


class BearerAuth:
    """Answers 401 to a request without ``Authorization: Bearer KEY``."""

    def __init__(self, app: Any, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scheme, _, token = (header(scope, b"authorization") or b"").partition(b" ")
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)):
                return await send_error(send, 401, "Authorization: missing or wrong key (send 'Bearer KEY')",
                                        "authentication_error", [(b"www-authenticate", b"Bearer")])
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def read_body(receive: Any, max_bytes: int) -> bytes:
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > max_bytes:
            raise _TooLarge
        more = message.get("more_body", False)
    return b"".join(chunks)


class BodyDeadline:
    """Reads the whole request body within ``seconds`` (else 408) and ``max_bytes`` (else 413), then hands the
    request on with the body replayed, so a slow client never holds a route or a worker thread. A Content-Length
    over ``max_bytes`` is refused before a byte of the body is read."""

    def __init__(self, app: Any, seconds: float, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.seconds, self.max_bytes = app, seconds, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = (header(scope, b"content-length") or b"").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await send_error(send, 413, f"body: Content-Length {int(declared)} is above this server's limit "
                                               f"of {self.max_bytes} bytes (--max_request_bytes)")
        try:
            body = await asyncio.wait_for(read_body(receive, self.max_bytes), self.seconds)
        except TimeoutError:
            return await send_error(send, 408, f"body: not received within {self.seconds:g} s")
        except _TooLarge:
            return await send_error(send, 413, f"body: larger than this server's limit of {self.max_bytes} bytes "
                                               "(--max_request_bytes)")
        except _Disconnected:
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class AccessLog:
    """Writes one line per HTTP request once it is answered: time (UTC), client, method, path (quoted, no query
    string), status, seconds, and tokens as prompt+completion ("-" where no model ran), e.g.
    ``2026-01-02T10:00:00Z 127.0.0.1 POST /v1/chat/completions 200 0.412s tokens=23+16``. ``tokens=False``: no
    tokens field (servers without a model, e.g. `saferlhf annotate serve`). Never a header or a body."""

    def __init__(self, app: Any, write: Callable[[str], None], *, tokens: bool = True):
        self.app, self.write, self.tokens = app, write, tokens

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.monotonic(), 0
        usage = scope.setdefault(USAGE_KEY, {})

        async def send_logged(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            tokens = (f"{usage['prompt_tokens']}+{usage['completion_tokens']}"
                      if "completion_tokens" in usage else "-")
            client = (scope.get("client") or ("-",))[0]
            self.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {client} {scope.get('method', '-')} "
                       f"{quote(scope.get('path', ''), safe='/:@-._~')} {status or 500} "
                       f"{time.monotonic() - started:.3f}s" + (f" tokens={tokens}" if self.tokens else ""))


def guarded(app: Any, *, read_timeout: float, api_key: str | None = None,
            allowed_hosts: Iterable[str] | None = None, max_bytes: int = MAX_BODY_BYTES,
            access_log: Callable[[str], None] | None = None) -> Any:
    """``app`` behind the body deadline and size limit, the key (if any), the Host check (if ``allowed_hosts`` is
    not None) and the access log (if ``access_log``, a function taking one line)."""
    app = BodyDeadline(app, read_timeout, max_bytes)
    if api_key:
        app = BearerAuth(app, api_key)
    if allowed_hosts is not None:
        app = HostCheck(app, allowed_hosts)
    if access_log is not None:
        app = AccessLog(app, access_log)
    return app


def allowed_hosts_for(bind: str, extra: Iterable[str]) -> list[str] | None:
    """The Host names a server bound to ``bind`` answers to: loopback names (and the bind address) when bound to
    loopback, plus ``extra``; None (any Host) for a non-loopback bind without ``extra``."""
    extra = list(extra)
    if not is_loopback(bind) and not extra:
        return None
    return [*LOOPBACK_NAMES, bind, *extra]


def header_deadline_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol class, closing a connection that has not sent a request's headers within ``seconds``
    of connecting or of the previous response (uvicorn itself waits forever for a slow client's headers)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadlineProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            self._arm_header_deadline()  # before super(): it may start a pipelined request, which must not expire
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            waiting_after = self.cycle  # a new request makes a new cycle: then the headers came in time

            def expire() -> None:
                if self.cycle is waiting_after and not self.transport.is_closing():
                    self.transport.close()

            self._header_timer = self.loop.call_later(seconds, expire)

    return HeaderDeadlineProtocol
