"""`saferlhf serve MODEL`: chat with a policy through any OpenAI client (`/v1/chat/completions`, `/v1/models`).

    pip install -e ".[serve]"
    saferlhf serve runs/demo/ppo_lag/actor --port 8000
    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "hi"}]}'

Messages are rendered with the model's own chat template (`saferlhf.data.formatting.format_messages`); a message's
``content`` is a string or a list of text parts (``[{"type": "text", "text": ...}]``, joined by newlines).
Temperature 0 is greedy; ``finish_reason`` is "stop" when the model produced eos or a ``stop`` string (not
returned), "length" when ``max_tokens`` cut it. ``stream: true`` answers with server-sent events in OpenAI's
``chat.completion.chunk`` format (a role chunk per choice, content deltas, a chunk with the finish_reason, with
``stream_options.include_usage`` a usage chunk, then ``data: [DONE]``). Concurrent requests are generated
together (`saferlhf.serve.batcher`: ``--max_batch_size`` responses, collected for ``--batch_wait_ms``), each
with its own sampling settings; a seeded request gives the same answer alone or batched. ``/health`` answers
200 with the model's name and the batcher's counts. ``--device`` / ``--dtype``: auto is cuda in bfloat16 when a
GPU is visible, else cpu in float32. Binds 127.0.0.1 by default.

Malformed requests get a 4xx JSON error ``{"error": {"message", "type"}}`` whose message starts with the field;
an unexpected failure a 500 JSON error that never carries the exception's text; the server keeps running.
Numbers are strict (``max_tokens: true`` is a 400), text must be valid Unicode (no lone surrogates), and
prompt + ``max_tokens`` must fit the model's context. Sizes are checked before work is spent on them: a body
over ``--max_request_bytes`` is a 413 (from Content-Length, or while a chunked body is read; before JSON
parsing), and messages longer than 8 characters per position of the model are a 400 before tokenising.

Hostile clients (`saferlhf.serve.guards`): headers and then the body must each arrive within ``--read_timeout``
seconds (a slow body gets 408, slow headers a closed connection); ``--api_key_env NAME`` makes every request
carry ``Authorization: Bearer $NAME``; bound to loopback, only loopback Host headers are answered (421 otherwise,
against DNS rebinding) unless ``--allowed_hosts`` names more. Every request is logged as one line (method, path,
status, seconds, tokens) to stderr or ``--access_log FILE``.

Fault injection for tests: ``SAFERLHF_SERVE_FAULT=5xx:N`` answers the first N chat requests with 503.
The module has no ``from __future__ import annotations``: FastAPI and pydantic read the request types of
the route, defined inside `build_app`, at definition time.
"""

import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

from saferlhf.config import option
from saferlhf.errors import UserError
from saferlhf.models.placement import DEVICE_HELP, DTYPE_HELP, Device, DType
from saferlhf.serve.guards import (MAX_BODY_BYTES, USAGE_KEY, allowed_hosts_for, guarded, header_deadline_protocol,
                                   is_loopback)

CHARS_PER_POSITION = 8  # messages longer than this many characters per model position are refused untokenised
MAX_STOPS, MAX_STOP_CHARS = 4, 1000


@dataclass
class ServeConfig:
    model: str = option("", "HF causal LM folder or hub name", positional=True)
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    port: int = option(8000, "TCP port", ge=1, le=65535)
    model_name: str | None = option(None, "the model id clients use (default: the folder name)")
    device: Device = option("auto", DEVICE_HELP)
    dtype: DType = option("auto", DTYPE_HELP)
    max_tokens_limit: int = option(1024, "the largest max_tokens a request may ask for", ge=1)
    max_prompt_length: int = option(1024, "prompts are cut to their last N tokens", ge=1)
    max_request_bytes: int = option(MAX_BODY_BYTES, "larger request bodies get a 413, before they are read whole",
                                    ge=1)
    max_batch_size: int = option(8, "responses generated together (concurrent requests share a batch)", ge=1)
    batch_wait_ms: float = option(5.0, "how long the first request of a batch waits for others to join", ge=0)
    seed: int = option(0, "seed of the sampling RNG at start (requests without a seed draw from it)")
    api_key_env: str | None = option(None, "environment variable holding the API key clients must send as "
                                           "'Authorization: Bearer KEY' (default: no key)")
    allowed_hosts: list[str] = option(factory=list, help="Host header names accepted besides the loopback ones "
                                                         "(localhost, 127.0.0.1, ::1)")
    read_timeout: float = option(10.0, "seconds a client has to send a request's headers, and again its body",
                                 gt=0)
    access_log: str | None = option(None, "append one line per request to this file (default: stderr)")


def build_app(model: Any, tokenizer: Any, model_name: str, max_tokens_limit: int = 1024,
              max_prompt_length: int = 1024, *, max_batch_size: int = 8, batch_wait_ms: float = 5.0,
              seed: int = 0) -> Any:
    """The FastAPI application over one loaded model; ``app.state.batcher`` is its `Batcher`."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from jinja2 import TemplateError
    from pydantic import AfterValidator, BaseModel, Field, PlainValidator
    from starlette.exceptions import HTTPException

    from saferlhf.data.formatting import format_messages
    from saferlhf.models.hf import position_limit
    from saferlhf.serve.batcher import Batcher, Job

    # strict: a JSON true is not the number 1, a string is not a number; text must be encodable
    Text = Annotated[str, Field(strict=True), AfterValidator(_unicode_text)]

    class Message(BaseModel):
        role: Text = Field(pattern="^(system|user|assistant)$")
        content: Annotated[Any, PlainValidator(_content_text)]

    class StreamOptions(BaseModel):
        include_usage: bool = Field(False, strict=True)

    class ChatRequest(BaseModel):
        model: Text | None = None
        messages: list[Message] = Field(min_length=1)
        temperature: float = Field(1.0, ge=0.0, le=2.0, strict=True)
        top_p: float = Field(1.0, gt=0.0, le=1.0, strict=True)
        max_tokens: int = Field(128, ge=1, strict=True)
        n: int = Field(1, ge=1, le=8, strict=True)
        seed: int | None = Field(None, ge=0, lt=2**64, strict=True)  # torch's seed range
        stop: Annotated[Any, PlainValidator(_stop_strings)] = None
        stream: bool = Field(False, strict=True)
        stream_options: StreamOptions | None = None

    app = FastAPI(title="saferlhf serve")
    batcher = app.state.batcher = Batcher(model, tokenizer, max_batch_size, batch_wait_ms, seed)
    faults = {"5xx": _fault_count()}
    found = position_limit(model)
    context = found[1] if found else 2**31
    char_limit = CHARS_PER_POSITION * (found[1] if found else max_prompt_length + max_tokens_limit)
    param = next(model.parameters())

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return error(400, f"{where or 'body'}: {message}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, f"body: {exc.detail}" if exc.status_code == 400 else str(exc.detail))

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        # the traceback goes to the server's log (Starlette re-raises to uvicorn), never to the client
        return error(500, "internal server error (the server's log has the details)", "server_error")

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "saferlhf"}]}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name, "device": str(param.device),
                "dtype": str(param.dtype).removeprefix("torch."), "waiting": batcher.queue.qsize(), **batcher.stats}

    def prompt_ids(req: ChatRequest) -> list[int] | JSONResponse:
        """The request's prompt tokens, or the 4xx that refuses it (checked cheapest first)."""
        if req.max_tokens > max_tokens_limit:
            return error(400, f"max_tokens: {req.max_tokens} is above this server's limit {max_tokens_limit}")
        if req.model not in (None, model_name):
            return error(404, f"model {req.model!r} is not served here (this server serves {model_name!r})",
                         "model_not_found")
        if req.stream_options is not None and not req.stream:
            return error(400, "stream_options: only allowed with stream: true")
        chars = sum(len(m.content) for m in req.messages)
        if chars > char_limit:  # before the tokenizer spends seconds and gigabytes on a huge string
            return error(400, f"messages: {chars} characters is more than this server reads ({CHARS_PER_POSITION} "
                              f"per position of the model: {char_limit}); shorten them")
        try:
            prompt = format_messages(tokenizer, [m.model_dump() for m in req.messages])
        except TemplateError as e:  # the template's own words, e.g. "roles must alternate user/assistant"
            return error(400, f"messages: the model's chat template rejects them: {e}")
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"][-max_prompt_length:]
        if len(ids) + req.max_tokens > context:
            return error(400, f"max_tokens: the prompt ({len(ids)} tokens) plus max_tokens ({req.max_tokens}) is "
                              f"beyond the model's context of {context} tokens; lower max_tokens or shorten messages")
        return ids

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest, request: Request):
        if faults["5xx"] > 0:
            faults["5xx"] -= 1
            return error(503, "injected fault (SAFERLHF_SERVE_FAULT)", "server_error")
        ids = prompt_ids(req)
        if isinstance(ids, JSONResponse):
            return ids
        usage = request.scope.setdefault(USAGE_KEY, {})
        usage["prompt_tokens"] = len(ids) * req.n
        job = Job(ids, req.max_tokens, req.temperature, req.top_p, req.n, req.seed, tuple(req.stop or ()),
                  stream=req.stream)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model_name}
        if req.stream:
            include_usage = req.stream_options is not None and req.stream_options.include_usage
            return StreamingResponse(_sse(batcher, job, head, usage, include_usage), media_type="text/event-stream",
                                     headers={"cache-control": "no-cache"})
        done = batcher.submit(job).wait()
        usage["completion_tokens"] = done.completion_tokens
        choices = [{"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
                   for i, c in enumerate(done.choices)]
        return {**head, "object": "chat.completion", "choices": choices, "usage": _usage(usage)}

    return app


def _usage(usage: dict) -> dict:
    return {"prompt_tokens": usage["prompt_tokens"], "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}


async def _sse(batcher: Any, job: Any, head: dict, usage: dict, include_usage: bool):
    """The server-sent events of a streamed completion; submits ``job`` once the response has started."""
    import asyncio

    from saferlhf.serve.batcher import Delta, Done, Failed, Finish

    loop, inbox = asyncio.get_running_loop(), asyncio.Queue()
    job.emit = lambda event: loop.call_soon_threadsafe(inbox.put_nowait, event)

    def chunk(choices: list, **extra: Any) -> str:
        return "data: " + json.dumps({**head, "object": "chat.completion.chunk", "choices": choices, **extra}) + "\n\n"

    try:
        for i in range(job.n):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        batcher.submit(job)
        while True:
            event = await inbox.get()
            if isinstance(event, Delta):
                yield chunk([{"index": event.index, "delta": {"content": event.text}, "finish_reason": None}])
            elif isinstance(event, Finish):
                yield chunk([{"index": event.index, "delta": {}, "finish_reason": event.reason}])
            elif isinstance(event, Done):
                usage["completion_tokens"] = event.completion_tokens
                if include_usage:
                    yield chunk([], usage=_usage(usage))
                break
            elif isinstance(event, Failed):  # the status line has gone out: an error event, as OpenAI sends
                yield "data: " + json.dumps({"error": {"message": "internal server error (the server's log has "
                                                                  "the details)", "type": "server_error"}}) + "\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled = True  # a client that went away stops its rows at the next step


def _content_text(value: Any) -> str:
    """A message's content as one string: a string, or a list of text parts joined by newlines."""
    if isinstance(value, str):
        return _unicode_text(value)
    if not isinstance(value, list):
        raise ValueError("must be a string or a list of text parts ([{'type': 'text', 'text': ...}])")
    texts = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind != "text":
            raise ValueError(f"part {i} has type {kind!r}; only text parts ({{'type': 'text', 'text': ...}}) are "
                             "supported")
        if not isinstance(part.get("text"), str):
            raise ValueError(f"part {i}: 'text' must be a string")
        texts.append(_unicode_text(part["text"]))
    return "\n".join(texts)


def _stop_strings(value: Any) -> list[str]:
    """``stop`` as a list: one string or up to 4, each non-empty and at most 1000 characters."""
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ValueError("must be a string or a list of strings")
    if len(stops) > MAX_STOPS:
        raise ValueError(f"at most {MAX_STOPS} stop sequences ({len(stops)} given)")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise ValueError(f"each stop sequence has 1 to {MAX_STOP_CHARS} characters")
    return [_unicode_text(s) for s in stops]


def _unicode_text(text: str) -> str:
    """``text`` if it can be encoded (JSON's ``\\ud800`` escape gives a lone surrogate, which tokenizers reject)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate such as \\ud800)") from None
    return text


def _fault_count() -> int:
    spec = os.environ.get("SAFERLHF_SERVE_FAULT", "")
    kind, _, n = spec.partition(":")
    return int(n) if kind == "5xx" and n.isdigit() else 0


def run(cfg: ServeConfig) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise UserError(f"serve: {e.name} is not installed", hint='pip install -e ".[serve]" (fastapi, uvicorn)') from e
    from saferlhf.models.hf import check_model_path
    from saferlhf.models.placement import resolve_placement
    from saferlhf.models.policy import load_policy
    from saferlhf.training import set_seed

    if not cfg.model:
        raise UserError("serve: give the model: saferlhf serve PATH")
    api_key = _api_key(cfg.api_key_env)
    device, dtype = resolve_placement(cfg.device, cfg.dtype, "serve: ")
    check_model_path(cfg.model, "serve: model")
    log = access_log_writer(cfg.access_log)
    set_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model, dtype=dtype, device=device)
    model.eval()
    name = cfg.model_name or Path(cfg.model).name
    app = build_app(model, tokenizer, name, cfg.max_tokens_limit, cfg.max_prompt_length,
                    max_batch_size=cfg.max_batch_size, batch_wait_ms=cfg.batch_wait_ms, seed=cfg.seed)
    print(f"serve: {cfg.model} as {name!r} on {device} in {str(dtype).removeprefix('torch.')} at "
          f"http://{cfg.host}:{cfg.port}/v1", flush=True)
    if api_key is None and not is_loopback(cfg.host):
        print(f"serve: warning: {cfg.host} is not loopback and there is no --api_key_env: anyone who reaches "
              "the port can use the model", file=sys.stderr, flush=True)
    uvicorn.Server(server_config(app, cfg, api_key, log)).run()
    return 0


def access_log_writer(path: str | None) -> Callable[[str], None]:
    """A function writing one access-log line: to stderr, or appended to the file ``path`` (line-buffered)."""
    if path is None:
        return lambda line: print(line, file=sys.stderr, flush=True)
    try:
        out = open(Path(path).expanduser(), "a", buffering=1, encoding="utf-8")
    except OSError as e:
        raise UserError(f"serve: --access_log {path}: cannot open it for appending ({e.strerror})") from None
    return lambda line: out.write(line + "\n")


def server_config(app: Any, cfg: ServeConfig, api_key: str | None = None,
                  access_log: Callable[[str], None] | None = None) -> Any:
    """The uvicorn config serving ``app`` behind the guards: access log (if given), Host check, key, header and
    body deadlines, body size limit."""
    import uvicorn

    hosts = allowed_hosts_for(cfg.host, cfg.allowed_hosts)
    app = guarded(app, read_timeout=cfg.read_timeout, api_key=api_key, allowed_hosts=hosts,
                  max_bytes=cfg.max_request_bytes, access_log=access_log)
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                          http=header_deadline_protocol(cfg.read_timeout), timeout_keep_alive=5,
                          h11_max_incomplete_event_size=16 * 1024)


def _api_key(env: str | None) -> str | None:
    """The key in environment variable ``env`` (None: no key); an unset or empty variable is a user error."""
    if env is None:
        return None
    key = os.environ.get(env, "")
    if not key.strip():
        raise UserError(f"serve: --api_key_env {env}: the environment variable {env} is unset or empty",
                        hint=f"export {env}=... (a long random key) and start the server again")
    return key
