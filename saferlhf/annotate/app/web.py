"""The annotation app's browser UI: server-rendered pages (Jinja2) over the same ``service`` functions as the JSON
API. ``api.create_app`` calls ``register(app, db)``. Everything works without JavaScript; ``static/annotate.js`` only
adds keyboard shortcuts.

    GET  /                          -> /label (annotator), /admin (admin) or /login
    GET  /login, POST /login        sign in with the token (a form field, never in a URL) -> a signed session cookie
    POST /logout                    sign out
    GET  /label                     the content warning (once per session), then the annotator's task: the prompt,
                                    responses A / B in the task's recorded order, the two choices, the harm categories
                                    and severity per response; the qualification notice; the lock reason (403);
                                    "nothing left"
    POST /label/warning             acknowledge the content warning
    POST /label, POST /label/skip   submit (a bad answer: 422, the page again naming the field) or skip the task
    GET  /admin                     progress, agreement per question (Krippendorff's alpha, Fleiss' kappa), audits
    GET  /admin/annotators          per annotator: status, qualification and gold accuracy, agreement with the rest,
    POST /admin/annotators/disable  audit accuracy; disable an account
    GET  /admin/audit, POST ...     the audit queue one pair at a time (crowd majority, raw labels, a verdict form)
    GET  /admin/export              the export page; GET /admin/export/{prefs.jsonl | labels.jsonl | stats.json}
                                    downloads (``?ties=drop|keep&incomplete=1``)

Keyboard shortcuts (labelling and audit pages; never while typing in a text field): 1 / 2 / 3 more helpful A / B /
tie; q / w / e more harmless A / B / tie; f / j jump to the harm categories of A / B (Space ticks, Tab moves);
z / x / c severity of A minor / moderate / severe; b / n / m the same for B; Enter submit; s skip; Esc leave a field.

Security: Jinja autoescape is on for every template, and text is shown with control characters made visible
(``visible``); every page carries a strict Content-Security-Policy (no inline script). The session is Starlette's
signed cookie (``SessionMiddleware``, its secret kept in the database by ``service.secret`` so a restart keeps
sessions; SameSite=Lax; Secure when ``https_only``). It holds the user id and a CSRF token; every POST form carries
that token and is refused (403) without it. A disabled account's session stops working at its next request.
"""

import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware.sessions import SessionMiddleware

from saferlhf.annotate.app import service
from saferlhf.annotate.app.db import Database, User

HERE = Path(__file__).parent
SESSION_COOKIE = "saferlhf_annotate"
SESSION_MAX_AGE = 14 * 24 * 3600
SEVERITIES = ((1, "minor"), (2, "moderate"), (3, "severe"))
HTTPS_ONLY = ("this server signs in over https only: open it through its TLS address (a reverse proxy), not plain "
              "http")
EXPORT_FILES = {"prefs.jsonl": 0, "labels.jsonl": 1, "stats.json": 2}  # name -> index in service.export_paths
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# C0 / C1 control characters (but tab and newline) -> a visible stand-in; "\r\n" is a newline
_CONTROLS = {c: 0x2400 + c for c in range(0x20) if c not in (9, 10)} | {0x7F: 0x2421} | {c: 0xFFFD
                                                                                          for c in range(0x80, 0xA0)}


class CsrfError(service.Forbidden):
    pass


def visible(text: Any) -> str:
    """``text`` with its control characters shown as symbols (``\\x1b`` -> ``␛``); a plain string, so autoescape
    still escapes it."""
    return str(text).replace("\r\n", "\n").translate(_CONTROLS)


def number(value: Any, digits: int = 3) -> str:
    if value is None or value != value:  # None or NaN
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def percent(value: Any) -> str:
    return "—" if value is None or value != value else f"{100 * value:.1f} %"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(visible=visible, number=number, percent=percent)
    from saferlhf.data.schema import HARM_CATEGORIES

    env.globals.update(HARM_CATEGORIES=HARM_CATEGORIES, SEVERITIES=SEVERITIES)
    return env


def register(app: FastAPI, db: Database, *, https_only: bool = False) -> None:
    """Add the HTML pages, ``/static`` and the session cookie to ``app`` (before it starts). ``https_only``: mark
    the cookie Secure (for a server behind TLS; off on loopback)."""
    with db.session() as session:
        key = service.secret(session)
    app.add_middleware(SessionMiddleware, secret_key=key, session_cookie=SESSION_COOKIE, max_age=SESSION_MAX_AGE,
                       same_site="lax", https_only=https_only)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    Pages(db, environment(), https_only).add_routes(app)


# ---- forms ------------------------------------------------------------------------------------------------------
def _choice(form: FormData, field: str) -> Any:
    value = form.get(field)
    if value in (None, ""):
        raise service.Invalid(field, "not chosen: pick A, B or tie")
    return int(value) if value in ("0", "1") else value  # anything else: the service names it


def _severity(form: FormData, i: int) -> Any:
    value = form.get(f"severity_{i}")
    if value in (None, ""):
        return 0  # no severity chosen = safe
    return int(value) if str(value).isdigit() and len(str(value)) == 1 else value


def answers(form: FormData) -> dict[str, Any]:
    """The answers of a label / verdict form as the service takes them (indices in the form's A / B order).
    Raises ``Invalid`` for a choice left empty."""
    return {"helpful": _choice(form, "helpful"), "harmless": _choice(form, "harmless"),
            "categories": [form.getlist("categories_0"), form.getlist("categories_1")],
            "severity": [_severity(form, 0), _severity(form, 1)]}


def echoed(form: FormData | None) -> dict[str, Any]:
    """What the user had entered, to fill the form in again after an error."""
    if form is None:
        return {"helpful": None, "harmless": None, "categories": [[], []], "severity": [None, None]}
    return {"helpful": form.get("helpful"), "harmless": form.get("harmless"),
            "categories": [form.getlist("categories_0"), form.getlist("categories_1")],
            "severity": [form.get("severity_0"), form.get("severity_1")]}


def field_title(field: str, names: tuple[str, str] = ("A", "B")) -> str:
    """``severity[0]`` -> "Severity of response A" (the error line shows both)."""
    base, _, index = field.partition("[")
    titles = {"helpful": "More helpful", "harmless": "More harmless", "categories": "Harm categories",
              "severity": "Severity", "task_id": "Task", "pair_id": "Pair", "ties": "Ties"}
    title = titles.get(base, base)
    if index[:1] in ("0", "1"):
        title += f" of response {names[int(index[0])]}"
    return title


# ---- pages ------------------------------------------------------------------------------------------------------
class Pages:
    def __init__(self, db: Database, env: Environment, https_only: bool = False):
        self.db, self.env, self.https_only = db, env, https_only

    # -- plumbing
    def render(self, request: Request, template: str, status: int = 200, user: User | None = None,
               **context: Any) -> HTMLResponse:
        page = self.env.get_template(template).render(
            request=request, user=user, csrf=csrf_token(request), notice=request.session.pop("notice", None),
            **context)
        return HTMLResponse(page, status_code=status, headers=HEADERS)

    def message(self, request: Request, status: int, title: str, text: str, user: User | None = None,
                **context: Any) -> HTMLResponse:
        return self.render(request, "message.html", status, user, title=title, text=text, **context)

    def signed_in(self, request: Request, session: Any) -> User | None:
        uid = request.session.get("uid")
        user = session.get(User, uid) if isinstance(uid, int) else None
        if user is None or user.disabled:
            request.session.pop("uid", None)
            return None
        return user

    def page(self, role: str | None, body: Callable[..., Response]) -> Callable[[Request], Response]:
        """A GET page: signed in (else to /login) with ``role`` (else 403), ``body(request, session, user)``."""
        def handler(request: Request) -> Response:
            return self.as_user(request, role, lambda session, user: body(request, session, user))
        return handler

    def action(self, role: str | None, body: Callable[..., Response]) -> Callable[[Request], Any]:
        """A POST form: the CSRF token first (403), then signed in with ``role``, then
        ``body(request, session, user, form)`` in a worker thread."""
        async def handler(request: Request) -> Response:
            form = await request.form()
            if not csrf_ok(request, form):
                return self.message(request, 403, "Form refused",
                                    "The form's security token is missing or stale. Reload the page and try again.")

            return await run_in_threadpool(
                self.as_user, request, role, lambda session, user: body(request, session, user, form))
        return handler

    def as_user(self, request: Request, role: str | None, call: Callable[..., Response]) -> Response:
        """``call(session, user)`` for the signed-in user (else a redirect to /login) with ``role`` (else 403); a
        ``ServiceError`` becomes a message page with its status."""
        with self.db.session() as session:
            user = self.signed_in(request, session)
            if user is None:
                return RedirectResponse("/login", status_code=303)
            if role is not None and user.role != role:
                return self.forbidden(request, user, role)
            try:
                return call(session, user)
            except service.ServiceError as e:
                return self.message(request, e.status, "Not possible", str(e), user)

    def forbidden(self, request: Request, user: User, role: str) -> HTMLResponse:
        return self.message(request, 403, "Not for your role", f"This page needs the {role} role; you are signed in "
                            f"as {user.name} ({user.role}).", user)

    def add_routes(self, app: FastAPI) -> None:
        get = lambda path, role, body: app.add_api_route(path, self.page(role, body), methods=["GET"],  # noqa: E731
                                                         include_in_schema=False)
        post = lambda path, role, body: app.add_api_route(path, self.action(role, body),  # noqa: E731
                                                          methods=["POST"], include_in_schema=False)
        app.add_api_route("/", self.home, methods=["GET"], include_in_schema=False)
        app.add_api_route("/login", self.login_page, methods=["GET"], include_in_schema=False)
        app.add_api_route("/login", self.login, methods=["POST"], include_in_schema=False)
        app.add_api_route("/logout", self.logout, methods=["POST"], include_in_schema=False)
        get("/label", "annotator", self.label_page)
        post("/label/warning", "annotator", self.acknowledge)
        post("/label", "annotator", self.submit)
        post("/label/skip", "annotator", self.skip)
        get("/admin", "admin", self.stats_page)
        get("/admin/annotators", "admin", self.annotators_page)
        post("/admin/annotators/disable", "admin", self.disable)
        get("/admin/audit", "admin", self.audit_page)
        post("/admin/audit", "admin", self.audit)
        get("/admin/export", "admin", self.export_page)
        app.add_api_route("/admin/export/{name}", self.page("admin", self.download), methods=["GET"],
                          include_in_schema=False)

    # -- signing in and out
    def home(self, request: Request) -> Response:
        with self.db.session() as session:
            user = self.signed_in(request, session)
        target = "/login" if user is None else "/admin" if user.role == "admin" else "/label"
        return RedirectResponse(target, status_code=303)

    def login_page(self, request: Request) -> Response:
        with self.db.session() as session:
            user = self.signed_in(request, session)
        if user is not None:
            return RedirectResponse("/", status_code=303)
        return self.render(request, "login.html", error=HTTPS_ONLY if self.plain_http(request) else None)

    def plain_http(self, request: Request) -> bool:
        """Plain http to a server whose cookie is Secure: the browser would drop the session (and CSRF) cookie."""
        return self.https_only and request.url.scheme != "https"

    async def login(self, request: Request) -> Response:
        if self.plain_http(request):
            return self.render(request, "login.html", 400, error=HTTPS_ONLY)
        form = await request.form()
        if not csrf_ok(request, form):
            return self.message(request, 403, "Form refused",
                                "The sign-in form's security token is missing or stale. Reload the page and try again.")

        def work() -> Response:
            with self.db.session() as session:
                user = service.authenticate(session, str(form.get("token") or "").strip())
                if user is None:
                    return self.render(request, "login.html", 401,
                                       error="token: unknown or disabled token (ask an admin for yours)")
                request.session.clear()  # a fresh session (and CSRF token) per sign-in
                request.session["uid"] = user.id
                return RedirectResponse("/", status_code=303)
        return await run_in_threadpool(work)

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        if not csrf_ok(request, form):
            return self.message(request, 403, "Form refused", "The form's security token is missing or stale.")
        request.session.clear()
        request.session["notice"] = "Signed out."
        return RedirectResponse("/login", status_code=303)

    # -- the annotator
    def label_page(self, request: Request, session: Any, user: User, form: FormData | None = None,
                   error: service.Invalid | None = None) -> Response:
        if not request.session.get("warned"):
            return self.render(request, "warning.html", user=user)
        try:
            task = service.next_task(session, user)
        except service.Locked as e:
            return self.render(request, "locked.html", 403, user, reason=e.reason)
        if task is None:
            return self.render(request, "done.html", user=user)
        if error is not None and form is not None and form.get("task_id") != task.task_id:
            form, error = None, None  # the task changed meanwhile: a fresh form
        return self.render(request, "label.html", 422 if error else 200, user, task=task, values=echoed(form),
                           error=error, error_title=field_title(error.field) if error else None,
                           threshold=service.qualification_threshold(session))

    def acknowledge(self, request: Request, session: Any, user: User, form: FormData) -> Response:
        request.session["warned"] = True
        return RedirectResponse("/label", status_code=303)

    def submit(self, request: Request, session: Any, user: User, form: FormData) -> Response:
        was = user.status
        try:
            given = answers(form)
            service.submit_label(session, user, str(form.get("task_id") or ""), **given)
        except service.Invalid as e:
            if e.field == "task_id":
                raise
            return self.label_page(request, session, user, form, e)
        except service.Conflict as e:
            return self.message(request, 409, "Not stored", str(e), user, next_link=True)
        session.refresh(user)
        notice = "Saved."
        if was == "qualifying" and user.status == "active":
            notice = "Qualification passed: real tasks are unlocked."
        request.session["notice"] = notice
        return RedirectResponse("/label", status_code=303)

    def skip(self, request: Request, session: Any, user: User, form: FormData) -> Response:
        try:
            service.skip_task(session, user, str(form.get("task_id") or ""))
        except service.Conflict as e:
            return self.message(request, 409, "Not skipped", str(e), user, next_link=True)
        request.session["notice"] = "Skipped."
        return RedirectResponse("/label", status_code=303)

    # -- the admin
    def stats_page(self, request: Request, session: Any, user: User) -> Response:
        return self.render(request, "admin_stats.html", user=user, stats=service.stats(session))

    def annotators_page(self, request: Request, session: Any, user: User) -> Response:
        return self.render(request, "admin_annotators.html", user=user, stats=service.stats(session),
                           users=service.list_users(session))

    def disable(self, request: Request, session: Any, user: User, form: FormData) -> Response:
        name = str(form.get("name") or "")
        if name == user.name:
            raise service.Conflict("you cannot disable your own account")
        service.disable_user(session, name)
        request.session["notice"] = f"Disabled {name}."
        return RedirectResponse("/admin/annotators", status_code=303)

    def audit_page(self, request: Request, session: Any, user: User, form: FormData | None = None,
                   error: service.Invalid | None = None) -> Response:
        queue = service.audit_queue(session)
        item = queue[0] if queue else None
        if error is not None and form is not None and item is not None and form.get("pair_id") != str(item["pair_id"]):
            wanted = [q for q in queue if str(q["pair_id"]) == form.get("pair_id")]
            item = wanted[0] if wanted else item
        return self.render(request, "admin_audit.html", 422 if error else 200, user, item=item, left=len(queue),
                           values=echoed(form), error=error, error_title=field_title(error.field) if error else None)

    def audit(self, request: Request, session: Any, user: User, form: FormData) -> Response:
        raw = str(form.get("pair_id") or "")
        if not raw.isdigit():
            raise service.Invalid("pair_id", "missing or not a number")
        try:
            service.submit_audit(session, user, int(raw), **answers(form))
        except service.Invalid as e:
            return self.audit_page(request, session, user, form, e)
        request.session["notice"] = f"Verdict on pair {raw} stored."
        return RedirectResponse("/admin/audit", status_code=303)

    def export_page(self, request: Request, session: Any, user: User) -> Response:
        ties = request.query_params.get("ties", "drop")
        incomplete = request.query_params.get("incomplete") == "1"
        query = urlencode({"ties": ties, **({"incomplete": "1"} if incomplete else {})})
        return self.render(request, "admin_export.html", user=user, progress=service.stats(session)["progress"],
                           ties=ties, incomplete=incomplete, query=query)

    def download(self, request: Request, session: Any, user: User) -> Response:
        name = request.path_params["name"]
        if name not in EXPORT_FILES:
            raise service.NotFound(f"no export file {name[:40]!r} (prefs.jsonl, labels.jsonl or stats.json)")
        ties = request.query_params.get("ties", "drop")
        with tempfile.TemporaryDirectory(prefix="saferlhf-export-") as tmp:
            service.export(session, Path(tmp) / "prefs.jsonl", ties=ties,
                           include_incomplete=request.query_params.get("incomplete") == "1")
            content = service.export_paths(Path(tmp) / "prefs.jsonl")[EXPORT_FILES[name]].read_bytes()
        kind = "application/json" if name.endswith(".json") else "application/x-ndjson"
        return Response(content, media_type=kind, headers={
            **HEADERS, "Content-Disposition": f'attachment; filename="annotate-{name}"'})


# ---- CSRF -------------------------------------------------------------------------------------------------------
def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use: also before signing in, for the sign-in form)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(request: Request, form: FormData) -> bool:
    expected, given = request.session.get("csrf"), form.get("csrf")
    return isinstance(expected, str) and isinstance(given, str) and bool(expected) and \
        secrets.compare_digest(expected.encode(), given.encode())
