"""`saferlhf serve MODEL`: chat with a policy through any OpenAI client (`/v1/chat/completions`, `/v1/models`).

    pip install -e ".[serve]"
    saferlhf serve runs/demo/ppo_lag/actor --port 8000
    curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
        -d '{"messages": [{"role": "user", "content": "hi"}]}'

Messages are rendered with the model's own chat template (`saferlhf.data.formatting.format_messages`) and sampled
with the KV-cache `HFGenerator` (temperature 0 = greedy); ``finish_reason`` is "stop" when the model produced eos,
"length" when ``max_tokens`` cut it. One request generates at a time (one model). Binds 127.0.0.1 by default.
Malformed requests get a 4xx JSON error ``{"error": {"message", "type"}}``; an unexpected failure a 500 JSON
error that never carries the exception's text; the server keeps running. Streaming is not supported (``stream:
true`` is a 400). Numbers are strict (``max_tokens: true`` is a 400), text must be valid Unicode (no lone
surrogates), and prompt + ``max_tokens`` must fit the model's context.

Hostile clients (`saferlhf.serve.guards`): headers and then the body must each arrive within ``--read_timeout``
seconds (a slow body gets 408, slow headers a closed connection); ``--api_key_env NAME`` makes every request
carry ``Authorization: Bearer $NAME``; bound to loopback, only loopback Host headers are answered (421 otherwise,
against DNS rebinding) unless ``--allowed_hosts`` names more.

Fault injection for tests: ``SAFERLHF_SERVE_FAULT=5xx:N`` answers the first N chat requests with 503.
The module has no ``from __future__ import annotations``: FastAPI and pydantic read the request types of
the route, defined inside `build_app`, at definition time.
"""

import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from saferlhf.config import option
from saferlhf.errors import UserError
from saferlhf.serve.guards import allowed_hosts_for, guarded, header_deadline_protocol, is_loopback


@dataclass
class ServeConfig:
    model: str = option("", "HF causal LM folder or hub name", positional=True)
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    port: int = option(8000, "TCP port", ge=1, le=65535)
    model_name: str | None = option(None, "the model id clients use (default: the folder name)")
    max_tokens_limit: int = option(1024, "the largest max_tokens a request may ask for", ge=1)
    max_prompt_length: int = option(1024, "prompts are cut to their last N tokens", ge=1)
    seed: int = option(0, "seed of the sampling RNG at start")
    api_key_env: str | None = option(None, "environment variable holding the API key clients must send as "
                                           "'Authorization: Bearer KEY' (default: no key)")
    allowed_hosts: list[str] = option(factory=list, help="Host header names accepted besides the loopback ones "
                                                         "(localhost, 127.0.0.1, ::1)")
    read_timeout: float = option(10.0, "seconds a client has to send a request's headers, and again its body",
                                 gt=0)


def build_app(model: Any, tokenizer: Any, model_name: str, max_tokens_limit: int = 1024,
              max_prompt_length: int = 1024) -> Any:
    """The FastAPI application over one loaded model."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from jinja2 import TemplateError
    from pydantic import AfterValidator, BaseModel, Field
    from starlette.exceptions import HTTPException

    from saferlhf.data.formatting import format_messages
    from saferlhf.models.score import context_length
    from saferlhf.rollout import HFGenerator, SamplingSettings

    # strict: a JSON true is not the number 1, a string is not a number; text must be encodable
    Text = Annotated[str, Field(strict=True), AfterValidator(_unicode_text)]

    class Message(BaseModel):
        role: Text = Field(pattern="^(system|user|assistant)$")
        content: Text

    class ChatRequest(BaseModel):
        model: Text | None = None
        messages: list[Message] = Field(min_length=1)
        temperature: float = Field(1.0, ge=0.0, le=2.0, strict=True)
        top_p: float = Field(1.0, gt=0.0, le=1.0, strict=True)
        max_tokens: int = Field(128, ge=1, strict=True)
        n: int = Field(1, ge=1, le=8, strict=True)
        seed: int | None = Field(None, ge=0, lt=2**64, strict=True)  # torch.manual_seed's range
        stream: bool = Field(False, strict=True)

    app = FastAPI(title="saferlhf serve")
    lock = threading.Lock()
    faults = {"5xx": _fault_count()}
    context = context_length(model, default=2**31)

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

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

    def sample(ids: list[int], req: ChatRequest) -> Any:
        import torch

        settings = SamplingSettings(max_new_tokens=req.max_tokens, max_prompt_length=max(len(ids), 1),
                                    temperature=max(req.temperature, 1e-6), top_p=req.top_p,
                                    greedy=req.temperature == 0)
        with lock:
            if req.seed is not None:
                torch.manual_seed(req.seed)
            return HFGenerator(model, tokenizer, settings).sample_ids([ids] * req.n)

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        if faults["5xx"] > 0:
            faults["5xx"] -= 1
            return error(503, "injected fault (SAFERLHF_SERVE_FAULT)", "server_error")
        if req.stream:
            return error(400, "stream: streaming is not supported by saferlhf serve")
        if req.max_tokens > max_tokens_limit:
            return error(400, f"max_tokens: {req.max_tokens} is above this server's limit {max_tokens_limit}")
        if req.model not in (None, model_name):
            return error(404, f"model {req.model!r} is not served here (this server serves {model_name!r})",
                         "model_not_found")
        try:
            prompt = format_messages(tokenizer, [m.model_dump() for m in req.messages])
        except TemplateError as e:  # the template's own words, e.g. "roles must alternate user/assistant"
            return error(400, f"messages: the model's chat template rejects them: {e}")
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"][-max_prompt_length:]
        if len(ids) + req.max_tokens > context:
            return error(400, f"max_tokens: the prompt ({len(ids)} tokens) plus max_tokens ({req.max_tokens}) is "
                              f"beyond the model's context of {context} tokens; lower max_tokens or shorten messages")
        samples = sample(ids, req)
        choices = [{"index": i, "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop" if ended else "length"}
                   for i, (text, ended) in enumerate(zip(samples.responses, samples.ended))]
        completion = int(samples.response_mask.sum())
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name, "choices": choices,
                "usage": {"prompt_tokens": len(ids) * req.n, "completion_tokens": completion,
                          "total_tokens": len(ids) * req.n + completion}}

    return app


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
    from saferlhf.models.policy import load_policy
    from saferlhf.training import set_seed

    if not cfg.model:
        raise UserError("serve: give the model: saferlhf serve PATH")
    api_key = _api_key(cfg.api_key_env)
    check_model_path(cfg.model, "serve: model")
    set_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model)
    model.eval()
    name = cfg.model_name or Path(cfg.model).name
    app = build_app(model, tokenizer, name, cfg.max_tokens_limit, cfg.max_prompt_length)
    print(f"serve: {cfg.model} as {name!r} on http://{cfg.host}:{cfg.port}/v1", flush=True)
    if api_key is None and not is_loopback(cfg.host):
        print(f"serve: warning: {cfg.host} is not loopback and there is no --api_key_env: anyone who reaches "
              "the port can use the model", file=sys.stderr, flush=True)
    uvicorn.Server(server_config(app, cfg, api_key)).run()
    return 0


def server_config(app: Any, cfg: ServeConfig, api_key: str | None = None) -> Any:
    """The uvicorn config serving ``app`` behind the guards: Host check, key, header and body deadlines."""
    import uvicorn

    hosts = allowed_hosts_for(cfg.host, cfg.allowed_hosts)
    app = guarded(app, read_timeout=cfg.read_timeout, api_key=api_key, allowed_hosts=hosts)
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
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
