"""`saferlhf serve MODEL`: chat with a policy through any OpenAI client (`/v1/chat/completions`, `/v1/models`).

    pip install -e ".[serve]"
    saferlhf serve runs/demo/ppo_lag/actor --port 8000
    curl -s localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": "hi"}]}'

Messages are rendered with the model's own chat template (`saferlhf.data.formatting.format_messages`) and sampled
with the KV-cache `HFGenerator` (temperature 0 = greedy); ``finish_reason`` is "stop" when the model produced eos,
"length" when ``max_tokens`` cut it. One request generates at a time (one model). Binds 127.0.0.1 by default.
Malformed requests get a 4xx JSON error ``{"error": {"message", "type"}}``; an unexpected failure a 500 JSON
error; the server keeps running. Streaming is not supported (``stream: true`` is a 400).

Fault injection for tests: ``SAFERLHF_SERVE_FAULT=5xx:N`` answers the first N chat requests with 503.
The module has no ``from __future__ import annotations``: FastAPI and pydantic read the request types of
the route, defined inside `build_app`, at definition time.
"""

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saferlhf.config import option
from saferlhf.errors import UserError


@dataclass
class ServeConfig:
    model: str = option("", "HF causal LM folder or hub name", positional=True)
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    port: int = option(8000, "TCP port", ge=1, le=65535)
    model_name: str | None = option(None, "the model id clients use (default: the folder name)")
    max_tokens_limit: int = option(1024, "the largest max_tokens a request may ask for", ge=1)
    max_prompt_length: int = option(1024, "prompts are cut to their last N tokens", ge=1)
    seed: int = option(0, "seed of the sampling RNG at start")


def build_app(model: Any, tokenizer: Any, model_name: str, max_tokens_limit: int = 1024,
              max_prompt_length: int = 1024) -> Any:
    """The FastAPI application over one loaded model."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, Field

    from saferlhf.data.formatting import format_messages
    from saferlhf.rollout import HFGenerator, SamplingSettings

    class Message(BaseModel):
        role: str = Field(pattern="^(system|user|assistant)$")
        content: str

    class ChatRequest(BaseModel):
        model: str | None = None
        messages: list[Message] = Field(min_length=1)
        temperature: float = Field(1.0, ge=0.0, le=2.0)
        top_p: float = Field(1.0, gt=0.0, le=1.0)
        max_tokens: int = Field(128, ge=1)
        n: int = Field(1, ge=1, le=8)
        seed: int | None = None
        stream: bool = False

    app = FastAPI(title="saferlhf serve")
    lock = threading.Lock()
    faults = {"5xx": _fault_count()}

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(400, f"{where or 'body'}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"{type(exc).__name__}: {exc}", "server_error")

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "saferlhf"}]}

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        import torch

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
        prompt = format_messages(tokenizer, [m.model_dump() for m in req.messages])
        settings = SamplingSettings(max_new_tokens=req.max_tokens, max_prompt_length=max_prompt_length,
                                    temperature=max(req.temperature, 1e-6), top_p=req.top_p,
                                    greedy=req.temperature == 0)
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"][-max_prompt_length:]
        with lock:
            if req.seed is not None:
                torch.manual_seed(req.seed)
            samples = HFGenerator(model, tokenizer, settings).sample_ids([ids] * req.n)
        choices = [{"index": i, "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop" if ended else "length"}
                   for i, (text, ended) in enumerate(zip(samples.responses, samples.ended))]
        completion = int(samples.response_mask.sum())
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name, "choices": choices,
                "usage": {"prompt_tokens": len(ids) * req.n, "completion_tokens": completion,
                          "total_tokens": len(ids) * req.n + completion}}

    return app


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
    check_model_path(cfg.model, "serve: model")
    set_seed(cfg.seed)
    model, tokenizer = load_policy(cfg.model)
    model.eval()
    name = cfg.model_name or Path(cfg.model).name
    app = build_app(model, tokenizer, name, cfg.max_tokens_limit, cfg.max_prompt_length)
    print(f"serve: {cfg.model} as {name!r} on http://{cfg.host}:{cfg.port}/v1", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0
