"""Typed injectable dependencies: database session, API principals (Bearer) and web principals (cookie).

The JSON API only reads ``Authorization: Bearer``; the web pages only read the signed session cookie
and check a CSRF token on every form post. Keeping the two apart means no cookie ever authorizes an
API call, so the API needs no CSRF protection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Optional
from urllib.parse import urlsplit

from fastapi import Depends, Form, Header, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from rlhfkit.feedback import access, crud
from rlhfkit.feedback.crud import Principal
from rlhfkit.feedback.rules import MAX_ID
from rlhfkit.feedback.security import csrf_matches, hash_token, new_csrf_token
from rlhfkit.feedback.serving import AnnotationService
from rlhfkit.feedback.settings import FeedbackSettings
from rlhfkit.feedback.store import Store
from rlhfkit.feedback.tokens import TokenCache


def get_store(request: Request) -> Store:
    """The app's opened store."""
    return request.app.state.store


async def get_service(request: Request) -> AnnotationService:
    """The app's task-serving and answer-storing service (group-committed writes)."""
    return request.app.state.service


async def get_settings(request: Request) -> FeedbackSettings:
    """The app's settings."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session (one transaction) per request; write helpers in crud commit before returning."""
    with get_store(request).sessions() as session:
        yield session


IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="A database id (fits a 32-bit integer column).")]
SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[FeedbackSettings, Depends(get_settings)]
ServiceDep = Annotated[AnnotationService, Depends(get_service)]


def _lookup_principal(store: Store, token: str) -> Optional[Principal]:
    with store.read_session() as session:
        return crud.authenticate(session, token=token)


def bearer_token(authorization: Optional[str]) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive, RFC 7235), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def principal_for_token(request_state: Any, token: str) -> Optional[Principal]:
    """The principal of a Bearer token: from the app's TokenCache, else looked up (read-only, in a worker thread)."""
    cache: TokenCache = request_state.tokens
    digest = hash_token(token)
    principal = cache.get(digest)
    if principal is None:
        principal = await run_in_threadpool(_lookup_principal, request_state.store, token)
        if principal is not None:
            cache.put(digest, principal)
    return principal


async def api_principal(request: Request, authorization: Annotated[Optional[str], Header()] = None) -> Principal:
    """The caller of a JSON API route, from its Bearer token (401 if missing or unknown).

    Known tokens come from the app's TokenCache; others are looked up in a read-only transaction in a
    worker thread, so the event loop never waits on the database and no write lock is taken.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    token = bearer_token(authorization)
    if token is None:
        raise HTTPException(401, "missing Authorization: Bearer <token>", headers=challenge)
    principal = await principal_for_token(request.app.state, token)
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", headers=challenge)
    return principal


CallerDep = Annotated[Principal, Depends(api_principal)]


async def api_admin(caller: CallerDep) -> Principal:
    """Admin-only routes: 403 for annotators."""
    if not caller.is_admin:
        raise HTTPException(403, "admin token required")
    return caller


async def api_annotator(caller: CallerDep) -> Principal:
    """Annotator-only routes (being served and answering tasks): 403 for the admin."""
    if caller.is_admin:
        raise HTTPException(403, "annotator token required")
    return caller


AdminDep = Annotated[Principal, Depends(api_admin)]
CurrentAnnotator = Annotated[Principal, Depends(api_annotator)]


# ---------------------------------------------------------------- web pages

class LoginRequired(Exception):
    """Raised by page dependencies when no valid session exists (answered with a redirect)."""


def csrf_token_for(request: Request) -> str:
    """The session's CSRF token, created on first use."""
    token = request.session.get("csrf")
    if not token:
        token = new_csrf_token()
        request.session["csrf"] = token
    return token


def web_principal(request: Request) -> Principal:
    """The signed-in user of a page, from the server-side session the cookie names; else redirect to sign-in.

    The cookie only carries a random session id: logout, token revocation or rotation and a new
    session key delete the row, which ends the session whatever the browser kept.
    """
    sid = request.session.get("sid")
    if isinstance(sid, str):
        with get_store(request).read_session() as session:
            principal = access.web_session_principal(session, sid=sid)
        if principal is not None:
            return principal
    for key in ("sid", "role", "annotator_id"):
        request.session.pop(key, None)
    raise LoginRequired()


WebUser = Annotated[Principal, Depends(web_principal)]


async def web_admin(user: WebUser) -> Principal:
    """Admin pages: 403 for a signed-in annotator."""
    if not user.is_admin:
        raise HTTPException(403, "this page is for the admin")
    return user


async def web_annotator(user: WebUser) -> Principal:
    """Annotation pages: 403 for the admin (who is not an annotator)."""
    if user.is_admin:
        raise HTTPException(403, "sign in with an annotator token to answer tasks")
    return user


WebAdmin = Annotated[Principal, Depends(web_admin)]
WebAnnotator = Annotated[Principal, Depends(web_annotator)]


async def check_csrf(request: Request, csrf_token: Annotated[Optional[str], Form()] = None) -> None:
    """Reject a form post whose CSRF token or Origin does not match this session and host (403)."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise HTTPException(403, "cross-site form post refused (Origin mismatch)")
    elif origin == "null":
        raise HTTPException(403, "cross-site form post refused (opaque Origin)")
    if not csrf_matches(request.session.get("csrf"), csrf_token):
        raise HTTPException(403, "invalid or missing CSRF token; reload the page and try again")


CsrfDep = Annotated[None, Depends(check_csrf)]
