"""The annotation app's JSON API (FastAPI): ``create_app(db_url)`` returns the app; ``saferlhf annotate serve`` runs it.

Every request carries ``Authorization: Bearer TOKEN`` (``saferlhf annotate users add`` prints it once).

    GET  /api/me                       {"name", "role", "status", "lock_reason"}
    GET  /api/tasks/next               200 {"task_id", "prompt", "responses": [a, b], "qualification": bool} | 204
    POST /api/labels                   {"task_id", "helpful": 0|1|"tie", "harmless": 0|1|"tie",
                                        "categories": [[...], [...]], "severity": [s0, s1]} -> 201
    POST /api/tasks/{task_id}/skip     200 {"task_id", "state": "skipped"}
    GET  /api/admin/stats              progress, agreement per question, annotators, audits (admin)
    GET  /api/admin/audits             {"audits": [{"pair_id", "prompt", "response_0", "response_1", "labels",
                                        "majority"}]} (admin)
    POST /api/admin/audits/{pair_id}   a verdict {"helpful", "harmless", "categories", "severity"} in the
                                        IMPORTED order (response_0, response_1) -> 201 (admin)

``responses`` are in the displayed order (random per task, recorded); the indices of a label refer to that order and
the server stores them in the imported order. Categories: canonical names or BeaverTails slugs
(``saferlhf.data.schema``), [] = safe; severity 0 for a safe response, else 1-3. Errors are JSON
``{"error": {"message", "type", "field"?}}``: 401 no valid token (or a disabled user), 403 a role that may not (or a
locked annotator: the message says why), 404 no such task of yours / pair, 409 labelled, skipped or audited already,
422 a malformed body naming the field (also a missing or an unknown key). An annotator never sees another annotator's labels: every task lookup is by
(task_id, the caller). A 201 is sent only after the label is committed.

When ``saferlhf/annotate/app/web.py`` exists, ``create_app`` calls its ``register(app, db)`` to add the HTML pages.
"""

import json
from collections.abc import Callable
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session

from saferlhf.annotate.app import service
from saferlhf.annotate.app.db import DEFAULT_URL, Database, User, WouldWait, connect
from saferlhf.files import json_safe

LABEL_FIELDS = ("task_id", "helpful", "harmless", "categories", "severity")
VERDICT_FIELDS = ("helpful", "harmless", "categories", "severity")
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found", 409: "conflict",
               422: "invalid_request_error"}


class Unauthorized(service.ServiceError):
    status = 401


def create_app(db_url: str = DEFAULT_URL, *, qualification_threshold: float | None = None,
               database: Database | None = None, https_only: bool = False) -> FastAPI:
    """The API over the database at ``db_url`` (tables created when missing), or over ``database``. A
    ``qualification_threshold`` is stored as the database's setting (default 0.9 when none was ever set).
    ``https_only``: the browser session cookie is marked Secure (a server behind TLS, not on loopback)."""
    db = database or connect(db_url)
    with db.session() as s:
        if qualification_threshold is not None:
            service.set_setting(s, "qualification_threshold", repr(float(qualification_threshold)))
        service.warm_up(s)  # the first annotators after a (re)start do not wait for SQLAlchemy to compile
    app = FastAPI(title="saferlhf annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db = db
    app.state.db_limiter = anyio.CapacityLimiter(1) if db.dialect == "sqlite" else None  # see in_session
    app.add_exception_handler(service.ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    _routes(app)
    try:
        from saferlhf.annotate.app import web
    except ModuleNotFoundError as e:
        if e.name != "saferlhf.annotate.app.web":
            raise
    else:
        web.register(app, db, https_only=https_only)
    return app


# ---- errors -----------------------------------------------------------------------------------------------------
def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": ERROR_TYPES.get(status, "error")}
    if field:
        error["field"] = field
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _service_error(_request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, service.ServiceError)
    return error_response(e.status, str(e), getattr(e, "field", None))


def _validation_error(_request: Request, e: Exception) -> JSONResponse:
    assert isinstance(e, RequestValidationError)
    first = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "malformed request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query")] or ["body"]
    field = ".".join(loc)
    return error_response(422, f"{field}: {first.get('msg', 'invalid')}", field)


# ---- where a request's database work runs ----------------------------------------------------------------------
def authorised(session: Session, header: str, role: str | None) -> User:
    """The user of an ``Authorization: Bearer TOKEN`` header (``Unauthorized`` if none; ``Forbidden`` for another
    ``role`` than the one asked)."""
    scheme, _, token = header.partition(" ")
    user = service.authenticate(session, token.strip()) if scheme.lower() == "bearer" else None
    if user is None:
        raise Unauthorized("Authorization: missing, unknown or disabled token (send 'Authorization: Bearer TOKEN')")
    if role is not None:
        service.require_role(user, role)
    return user


async def in_session(request: Request, role: str | None, work: Callable[[Session, User], Any], *,
                     reads: bool = False) -> Any:
    """``work(session, user)`` for the request's user. The token is checked before ``work`` reads the body, so a
    401 or 403 comes before a 422.

    SQLite: a labelling request (not ``reads``) runs right here, on the event loop, if the write lock is free: its
    database work is 1-2 ms of CPU, the requests wait for the one writer anyway, and handing each to a worker thread
    cost more than the work (the two threads trading the GIL: ~1.5 ms of CPU per request, a third less throughput
    for 20 annotators in bench/bench_annotate.py). It never waits here: when another thread or process holds the
    write lock (``WouldWait``, nothing done yet) it goes to the ONE database thread, where requests queue in order.
    PostgreSQL (network round trips, row locks): that thread pool. ``reads`` (admin statistics, audit lists) run in
    worker threads beside it (WAL readers do not block the writer)."""
    db: Database = request.app.state.db
    header = request.headers.get("authorization", "")

    def run(nowait: bool = False) -> Any:
        with db.session() as session:
            session.info["nowait"] = nowait
            return work(session, authorised(session, header, role))

    if reads:
        return await anyio.to_thread.run_sync(run)
    if db.dialect == "sqlite":
        try:
            return run(nowait=True)
        except WouldWait:
            pass
    return await anyio.to_thread.run_sync(run, limiter=request.app.state.db_limiter)


def json_object(raw: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    """The body as a JSON object with exactly ``fields``; ``Invalid`` naming the first problem."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise service.Invalid("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise service.Invalid("body", f"expected a JSON object with {', '.join(fields)}")
    for name in fields:
        if name not in body:
            raise service.Invalid(name, "missing")
    extra = sorted(set(body) - set(fields))
    if extra:
        raise service.Invalid(extra[0][:40], f"unknown field (expected {', '.join(fields)})")
    return body


# ---- routes -----------------------------------------------------------------------------------------------------
def task_json(task: Any) -> dict[str, Any]:
    return {"task_id": task.task_id, "prompt": task.prompt, "responses": task.responses,
            "qualification": task.qualification}


def _routes(app: FastAPI) -> None:
    @app.get("/api/me", response_model=None)
    async def me(request: Request) -> JSONResponse:
        def work(_s: Session, user: User) -> dict[str, Any]:
            return {"name": user.name, "role": user.role, "status": user.status, "lock_reason": user.lock_reason}

        return JSONResponse(await in_session(request, None, work))

    @app.get("/api/tasks/next", response_model=None)
    async def next_task(request: Request) -> Response:
        def work(s: Session, user: User) -> dict[str, Any] | None:
            task = service.next_task(s, user)
            return None if task is None else task_json(task)

        task = await in_session(request, "annotator", work)
        return Response(status_code=204) if task is None else JSONResponse(task)

    @app.post("/api/labels", response_model=None)
    async def post_label(request: Request) -> JSONResponse:
        raw = await request.body()

        def work(s: Session, user: User) -> dict[str, Any]:
            body = json_object(raw, LABEL_FIELDS)
            service.submit_label(s, user, body["task_id"], body["helpful"], body["harmless"], body["categories"],
                                 body["severity"])
            return {"task_id": body["task_id"], "stored": True}

        return JSONResponse(await in_session(request, "annotator", work), status_code=201)

    @app.post("/api/tasks/{task_id}/skip", response_model=None)
    async def skip(request: Request, task_id: str) -> JSONResponse:
        def work(s: Session, user: User) -> dict[str, Any]:
            task = service.skip_task(s, user, task_id)
            return {"task_id": task.task_id, "state": task.state}

        return JSONResponse(await in_session(request, "annotator", work))

    @app.get("/api/admin/stats", response_model=None)
    async def admin_stats(request: Request) -> JSONResponse:
        return JSONResponse(json_safe(await in_session(request, "admin", lambda s, _u: service.stats(s), reads=True)))

    @app.get("/api/admin/audits", response_model=None)
    async def audits(request: Request) -> JSONResponse:
        queue = await in_session(request, "admin", lambda s, _u: service.audit_queue(s), reads=True)
        return JSONResponse({"audits": queue})

    @app.post("/api/admin/audits/{pair_id}", response_model=None)
    async def post_audit(request: Request, pair_id: int) -> JSONResponse:
        raw = await request.body()

        def work(s: Session, user: User) -> dict[str, Any]:
            body = json_object(raw, VERDICT_FIELDS)
            service.submit_audit(s, user, pair_id, body["helpful"], body["harmless"], body["categories"],
                                 body["severity"])
            return {"pair_id": pair_id, "stored": True}

        return JSONResponse(await in_session(request, "admin", work), status_code=201)


# ---- access log -------------------------------------------------------------------------------------------------
def AccessLog(app: Any, write: Callable[[str], None]) -> Any:  # noqa: N802 (a class before; same call)
    """One line per request once answered: time (UTC), client, method, path (no query string), status, seconds
    (`saferlhf.serve.guards.AccessLog` without its tokens field). Never a header or a body, so no token and no
    text of a label."""
    from saferlhf.serve.guards import AccessLog as GuardsAccessLog

    return GuardsAccessLog(app, write, tokens=False)
