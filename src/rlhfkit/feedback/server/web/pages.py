"""Sign-in, sign-out and the landing page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from rlhfkit.feedback import access, crud
from rlhfkit.feedback.security import new_csrf_token
from rlhfkit.feedback.server.api.deps import CsrfDep, SessionDep, SettingsDep
from rlhfkit.feedback.server.web.render import render

router = APIRouter(include_in_schema=False)


@router.get("/")
def index(request: Request) -> Response:
    """Send people where their role belongs."""
    role = request.session.get("role")
    return RedirectResponse("/admin" if role == "admin" else "/tasks" if role == "annotator" else "/login", status_code=303)


@router.get("/login")
def login_form(request: Request) -> Response:
    """The sign-in form (invite or admin token)."""
    return render(request, "login.html", error=None)


@router.post("/login")
def login(request: Request, session: SessionDep, settings: SettingsDep, _csrf: CsrfDep, token: Annotated[str, Form(max_length=200)] = "") -> Response:
    """Exchange a token for a signed session cookie (the token itself is never stored client-side)."""
    principal = crud.authenticate(session, token=token.strip()) if token.strip() else None
    if principal is None:
        return render(request, "login.html", error="That token is not valid.", status_code=401)
    old_sid = request.session.get("sid")
    if isinstance(old_sid, str):
        access.end_web_session(session, sid=old_sid)
    sid = access.open_web_session(session, principal=principal, max_age_s=settings.session_max_age_s)
    request.session.clear()
    request.session["csrf"] = new_csrf_token()
    request.session["sid"] = sid
    request.session["role"] = principal.role
    return RedirectResponse("/admin" if principal.is_admin else "/tasks", status_code=303)


@router.post("/logout")
def logout(request: Request, session: SessionDep, _csrf: CsrfDep) -> Response:
    """End the session on the server (a copy of the cookie no longer works) and forget it."""
    sid = request.session.get("sid")
    if isinstance(sid, str):
        access.end_web_session(session, sid=sid)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)
