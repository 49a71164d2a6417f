"""Admin page for tokens: list admin and annotator tokens, revoke and rotate them (POST forms with CSRF)."""

from __future__ import annotations

from typing import Any, Optional

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from rlhfkit.feedback import access
from rlhfkit.feedback.server.api.deps import CsrfDep, IdPath, SessionDep, WebAdmin
from rlhfkit.feedback.server.web.render import render

router = APIRouter(prefix="/admin/tokens", include_in_schema=False)


TIMES = ("created_at", "expires_at", "revoked_at")


def minutes(iso: Optional[str]) -> Optional[str]:
    """An ISO UTC timestamp as shown on the page: ``2026-12-05 14:24 UTC`` (None stays None)."""
    return None if iso is None else f"{iso[:10]} {iso[11:16]} UTC"


def _page(request: Request, session: SessionDep, admin: WebAdmin, *, issued: Optional[dict[str, Any]] = None,
          status_code: int = 200) -> Response:
    tokens = {group: [{k: minutes(v) if k in TIMES else v for k, v in row.items()} for row in rows]
              for group, rows in access.list_tokens(session).items()}
    return render(request, "admin_tokens.html", user=admin, tokens=tokens, issued=issued, status_code=status_code)


@router.get("")
def tokens_page(request: Request, session: SessionDep, admin: WebAdmin) -> Response:
    """Every admin and annotator token's label, creation, expiry and state, with revoke and rotate buttons."""
    return _page(request, session, admin)


@router.post("/admin/{tid}/revoke")
def revoke_admin(tid: IdPath, session: SessionDep, admin: WebAdmin, _csrf: CsrfDep) -> Response:
    """Revoke an admin token (its web sessions end; revoking your own signs you out)."""
    access.revoke_admin_token(session, token_id=tid)
    return RedirectResponse("/admin/tokens", status_code=303)


@router.post("/admin/{tid}/rotate")
def rotate_admin(tid: IdPath, request: Request, session: SessionDep, admin: WebAdmin, _csrf: CsrfDep) -> Response:
    """Replace an admin token; the new one is shown on this page once."""
    token, plain = access.rotate_admin_token(session, token_id=tid)
    own = admin.admin_token_id == tid
    return _page(request, session, admin, status_code=201,
                 issued={"what": f"admin token {token.label or token.id}", "token": plain, "own": own})


@router.post("/annotators/{aid}/revoke")
def revoke_annotator(aid: IdPath, session: SessionDep, admin: WebAdmin, _csrf: CsrfDep) -> Response:
    """Deactivate an annotator's token and end their web sessions (their answers stay)."""
    access.revoke_annotator(session, annotator_id=aid)
    return RedirectResponse("/admin/tokens", status_code=303)


@router.post("/annotators/{aid}/rotate")
def rotate_annotator(aid: IdPath, request: Request, session: SessionDep, admin: WebAdmin, _csrf: CsrfDep) -> Response:
    """Give an annotator a new token (the old one stops working); shown on this page once."""
    annotator, plain = access.rotate_annotator(session, annotator_id=aid)
    return _page(request, session, admin, status_code=201,
                 issued={"what": f"annotator {annotator.name}", "token": plain, "own": False})
