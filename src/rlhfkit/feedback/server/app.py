"""FastAPI application factory: routers, signed sessions, security headers and error mapping."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rlhfkit.feedback import access, crud
from rlhfkit.feedback.security import load_or_create_secret_key
from rlhfkit.feedback.server.api.deps import LoginRequired, bearer_token, principal_for_token
from rlhfkit.feedback.server.api.errors import error_status
from rlhfkit.feedback.server.api.hot import API_HEADERS, HotRoutes
from rlhfkit.feedback.server.body_limit import BodyLimit
from rlhfkit.feedback.server.lifeline import exit_with_parent
from rlhfkit.feedback.server.api.routes import annotators, assignments, campaigns, health, progress, tokens
from rlhfkit.feedback.serving import AnnotationService
from rlhfkit.feedback.settings import FeedbackSettings
from rlhfkit.feedback.store import Store, StoreError, open_store
from rlhfkit.feedback.tokens import TokenCache

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                    "Referrer-Policy": "same-origin", "Cross-Origin-Opener-Policy": "same-origin"}


class SecurityHeaders:
    """Pure ASGI middleware adding security headers to every response (cheaper than BaseHTTPMiddleware).

    Pages and static files get the strict CSP and friends; JSON under /api/ gets only what a JSON
    answer needs (``API_HEADERS``: nosniff, no-store), since CSP, framing, referrer and opener
    policies govern documents a browser renders. The raw header pairs are built once; each response
    only gets the names it does not set itself.
    """

    _PAGE = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]
    _NO_STORE = (b"cache-control", b"no-store")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/api/"):
            extra = API_HEADERS
        elif path.startswith("/static/"):
            extra = self._PAGE
        else:
            extra = [*self._PAGE, self._NO_STORE]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(pair for pair in extra if pair[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class WebSessions:
    """Signed cookie sessions for the web pages only: the JSON API never reads a cookie (Bearer tokens
    only), so its requests skip cookie parsing and signing altogether."""

    def __init__(self, app: ASGIApp, **options: Any) -> None:
        self.app = app
        self.sessions = SessionMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
        else:
            await self.sessions(scope, receive, send)


class LazyPages:
    """Adds the web pages' routes on the first request outside /api/ and /static/.

    Why: the page modules (Jinja2, ~30 form routes that FastAPI analyses when they are declared) are
    ~0.2 s of a fresh process's start, and a restarted server must answer its API clients first. The
    first page request after a start pays that once; the API never does.
    """

    def __init__(self, app: ASGIApp, *, load: Callable[[], None]) -> None:
        self.app, self._load, self._loaded, self._lock = app, load, False, threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._loaded and scope["type"] == "http" and not scope["path"].startswith(("/api/", "/static/")):
            with self._lock:
                if not self._loaded:
                    self._load()
                    self._loaded = True
        await self.app(scope, receive, send)


def _include_pages(app: FastAPI) -> None:
    """Import the web page modules and add their routes (see LazyPages)."""
    from rlhfkit.feedback.server.web import admin, annotate, pages, tokens

    for module in (pages, annotate, admin, tokens):
        app.include_router(module.router)


def _error(request: Request, status: int, detail: object, headers: Optional[dict[str, str]] = None) -> Response:
    """JSON for the API, an HTML page for everything else."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)
    from rlhfkit.feedback.server.web.render import render

    return render(request, "error.html", status_code=status, status=status, detail=str(detail))


def _install_error_handlers(app: FastAPI) -> None:
    async def store_error(request: Request, exc: Exception) -> Response:
        status, headers = error_status(exc) or (500, None)
        return _error(request, status, str(exc), headers=headers)

    for error in (crud.NotFoundError, crud.ConflictError, crud.InvalidError, StoreError):
        app.add_exception_handler(error, store_error)

    @app.exception_handler(NotImplementedError)
    async def not_implemented(request: Request, exc: NotImplementedError) -> Response:
        return _error(request, 501, str(exc))

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(request, exc.status_code, exc.detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": [{k: e[k] for k in ("loc", "msg", "type")} for e in exc.errors()]}, status_code=422)
        fields = ", ".join(".".join(str(p) for p in e["loc"][1:]) + f": {e['msg']}" for e in exc.errors())
        from rlhfkit.feedback.server.web.render import render

        return render(request, "error.html", status_code=422, status=422, detail=f"invalid form: {fields}")


async def _is_admin(app: FastAPI, scope: Scope) -> bool:
    """Whether a request comes from the admin: a valid admin Bearer token (API) or admin web session (pages)."""
    if scope["path"].startswith("/api/"):
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        token = bearer_token(header)
        principal = None if token is None else await principal_for_token(app.state, token)
        return principal is not None and principal.is_admin
    sid = scope.get("session", {}).get("sid")
    if not isinstance(sid, str):
        return False

    def lookup() -> bool:
        with app.state.store.read_session() as session:
            principal = access.web_session_principal(session, sid=sid)
        return principal is not None and principal.is_admin

    return await run_in_threadpool(lookup)


def create_app(settings: Optional[FeedbackSettings] = None, *, store: Optional[Store] = None) -> FastAPI:
    """Build the annotation server for ``settings`` (opening the store unless one is given)."""
    settings = settings or FeedbackSettings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    owns_store = store is None
    store = store or open_store(settings.database_url, busy_timeout_ms=settings.busy_timeout_ms)
    admin_token = settings.configured_admin_token()
    if admin_token:
        with store.session() as session:
            crud.ensure_admin_token(session, token=admin_token, keep_others=settings.keep_admin_tokens)
    secret_key = load_or_create_secret_key(settings.secret_key_path)
    if settings.parent_pid is not None:
        exit_with_parent(settings.parent_pid)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owns_store:
            store.close()

    app = FastAPI(title="rlhfkit feedback", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/api/openapi.json")
    app.state.store = store
    app.state.settings = settings
    app.state.service = AnnotationService(store, assignment_timeout_s=settings.assignment_timeout_s,
                                          seed=settings.assignment_seed)
    app.state.tokens = TokenCache(ttl_s=settings.token_cache_s)

    app.add_middleware(LazyPages, load=lambda: _include_pages(app))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_body_bytes=settings.max_body_bytes, max_upload_bytes=settings.max_upload_bytes,
                       is_admin=lambda scope: _is_admin(app, scope))  # inside WebSessions: it reads the session
    app.add_middleware(WebSessions, secret_key=secret_key, session_cookie="rlhfkit_session",
                       max_age=settings.session_max_age_s, same_site="lax", https_only=settings.cookie_secure)
    app.add_middleware(HotRoutes, state=app.state)  # outermost: it sets API_HEADERS itself, needs no session
    _install_error_handlers(app)
    for module in (health, campaigns, annotators, assignments, progress, tokens):
        app.include_router(module.router, prefix="/api/v1")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
